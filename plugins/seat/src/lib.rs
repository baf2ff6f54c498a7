//! The `seat` plugin: the mic seats of a room.
//!
//! Rules it holds (all actions come from the app backend; `lock_seat` and
//! `unlock_seat` also from clients):
//! - `up`: the user must be a member of `channel_name` (else not-allowed).
//!   With `seat_id`, that seat must exist, 1..N (else rejected), and be
//!   free (else conflict; being on it already is a conflict too). Without,
//!   the lowest free seat is taken (none free: conflict). A user seated
//!   elsewhere in the room moves: `down` for the old seat, then `up`.
//!   The profile fields the request leaves out come from the profile the
//!   app backend stored (contract 1.1), if any.
//! - `down`: the user must hold a seat in `channel_name` (else
//!   not-allowed); the seat is freed and the room gets `down`.
//! - `lock_seat` / `unlock_seat` (extensions): an unoccupied seat is locked
//!   (status 2) or freed (status 0), microphone closed, without any
//!   notification; an occupied seat is a conflict. From a client, only the
//!   room's owner or an admin (room attributes `owner`, `admins`) may do
//!   it (else not-allowed); from the app backend anyone it names.
//!
//! Notifications go to the room; their subject is the user who moved.
//! Seat ids run 1..N and a seat's `rank` is its id.

use chorus_plugin_sdk::Source::{Client, Server};
use chorus_plugin_sdk::event::{acting, event_user};
use chorus_plugin_sdk::notifications as notification;
use chorus_plugin_sdk::profile;
use chorus_plugin_sdk::reply::{notify_room, reply};
use chorus_plugin_sdk::roles::Roles;
use chorus_plugin_sdk::rules::member_of;
use chorus_plugin_sdk::{
    ChannelName, Effect, Error, Event, FreeSeat, Payload, Profile, Reply, Router, Seat, SetSeat,
    Source, TakeSeat, payload, room_state,
};
use serde::Deserialize;
use serde_json::json;

/// Seat status: free.
const FREE: u8 = 0;
/// Seat status: occupied.
const OCCUPIED: u8 = 1;
/// Seat status: locked.
const LOCKED: u8 = 2;

/// The plugin's actions.
fn router() -> Router {
    Router::new("seat", env!("CARGO_PKG_VERSION"))
        .action("up", &[Server], up)
        .action("down", &[Server], down)
        .action("lock_seat", &[Server, Client], |event| {
            set_seat(event, LOCKED)
        })
        .action("unlock_seat", &[Server, Client], |event| {
            set_seat(event, FREE)
        })
}

chorus_plugin_sdk::plugin!(Component, router());

/// The payload of `up` (PROTOCOL section 6; without `seat_id` the lowest
/// free seat); its profile fields are read by [`Profile`].
#[derive(Deserialize)]
struct Up {
    user_id: Option<u64>,
    channel_name: ChannelName,
    seat_id: Option<u64>,
}

/// The payload of `down`.
#[derive(Deserialize)]
struct Down {
    user_id: Option<u64>,
    channel_name: ChannelName,
}

/// The payload of `lock_seat` and `unlock_seat`.
#[derive(Deserialize)]
struct SetSeatRequest {
    channel_name: ChannelName,
    seat_id: u64,
}

/// `up`: take a seat, moving from the one held in the room if any.
fn up(event: &Event) -> Result<Reply, Error> {
    let payload = &Payload::parse(&event.payload)?;
    let request: Up = payload.to()?;
    let user_id = acting(event, request.user_id)?;
    let channel_name = String::from(request.channel_name);
    let requested = request.seat_id;
    let profile = Profile::required(&profile::with_stored(event, payload, user_id))?;
    let membership = member_of(user_id, &channel_name)?;
    let seats = room_state::room_seats(&channel_name);
    let seat_id = choose_seat(&seats, requested, membership.seat_id)?;
    let mut effects = Vec::with_capacity(3);
    if let Some(old) = membership.seat_id {
        let down = notification::down(user_id, &membership, old);
        effects.push(notify_room(&channel_name, &down, Some(user_id)));
    }
    effects.push(Effect::TakeSeat(TakeSeat {
        channel_name: channel_name.clone(),
        seat_id,
        user_id,
    }));
    let up = notification::up(user_id, &membership, seat_id, &profile);
    effects.push(notify_room(&channel_name, &up, Some(user_id)));
    let result = json!({
        "channel_name": channel_name,
        "seat_id": seat_id,
        "previous_seat_id": membership.seat_id,
    });
    Ok(reply(result, effects))
}

/// `down`: free the seat the user holds in the room.
fn down(event: &Event) -> Result<Reply, Error> {
    let request: Down = payload::parse(&event.payload)?;
    let user_id = acting(event, request.user_id)?;
    let channel_name = String::from(request.channel_name);
    let membership = member_of(user_id, &channel_name)?;
    let seat_id = membership.seat_id.ok_or_else(|| {
        Error::NotAllowed(format!("user {user_id} holds no seat in `{channel_name}`"))
    })?;
    let down = notification::down(user_id, &membership, seat_id);
    let effects = vec![
        Effect::FreeSeat(FreeSeat {
            channel_name: channel_name.clone(),
            user_id,
        }),
        notify_room(&channel_name, &down, Some(user_id)),
    ];
    Ok(reply(
        json!({"channel_name": channel_name, "seat_id": seat_id}),
        effects,
    ))
}

/// `lock_seat` / `unlock_seat`: set an unoccupied seat's status; a client
/// must manage the room.
fn set_seat(event: &Event, status: u8) -> Result<Reply, Error> {
    let SetSeatRequest {
        channel_name,
        seat_id: requested,
    } = payload::parse(&event.payload)?;
    let channel_name = String::from(channel_name);
    if matches!(event.source, Source::Client) {
        let user_id = event_user(event)?;
        if !Roles::of(&channel_name).manages(user_id) {
            return Err(Error::NotAllowed(format!(
                "user {user_id} is neither the owner nor an admin of `{channel_name}`"
            )));
        }
    }
    let seats = room_state::room_seats(&channel_name);
    let seat = existing_seat(&seats, requested)?;
    if seat.user_id.is_some() || seat.status == OCCUPIED {
        return Err(Error::Conflict(format!("seat {} is occupied", seat.id)));
    }
    let effect = Effect::SetSeat(SetSeat {
        channel_name: channel_name.clone(),
        seat_id: seat.id,
        status,
        microphone: 0,
    });
    let result = json!({"channel_name": channel_name, "seat_id": seat.id, "status": status});
    Ok(reply(result, vec![effect]))
}

/// The seat to take: the requested one if it is free, else the lowest free
/// one; `current` is the seat the user already holds in the room.
fn choose_seat(seats: &[Seat], requested: Option<u64>, current: Option<u32>) -> Result<u32, Error> {
    let Some(requested) = requested else {
        return seats
            .iter()
            .find(|seat| is_free(seat))
            .map(|seat| seat.id)
            .ok_or_else(|| Error::Conflict("no seat is free".into()));
    };
    let seat = existing_seat(seats, requested)?;
    if current == Some(seat.id) {
        return Err(Error::Conflict(format!(
            "the user is already on seat {}",
            seat.id
        )));
    }
    if !is_free(seat) {
        let state = if seat.status == LOCKED {
            "locked"
        } else {
            "taken"
        };
        return Err(Error::Conflict(format!("seat {} is {state}", seat.id)));
    }
    Ok(seat.id)
}

/// The seat with id `requested`, which must be within 1..N.
fn existing_seat(seats: &[Seat], requested: u64) -> Result<&Seat, Error> {
    seats
        .iter()
        .find(|seat| u64::from(seat.id) == requested)
        .filter(|_| (1..=seats.len() as u64).contains(&requested))
        .ok_or_else(|| {
            Error::Rejected(format!(
                "seat {requested} does not exist: the room has seats 1 to {}",
                seats.len()
            ))
        })
}

/// Whether a seat can be taken: free and nobody on it.
fn is_free(seat: &Seat) -> bool {
    seat.status == FREE && seat.user_id.is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chorus_plugin_sdk::testing::FakeHost;
    use serde_json::Value;

    fn up_payload(user: u64, seat: Option<u32>) -> Value {
        json!({"user_id": user, "channel_name": "r1", "seat_id": seat, "nickname": "n",
            "sex": 2, "avatar_url": "a", "avatar_small_url": "s"})
    }

    #[test]
    fn up_then_move_sends_down_then_up_in_the_seed_shape() {
        let mut host = FakeHost::new().member(1, "r1", 88);
        let first = host.server::<Component>("up", up_payload(1, Some(3)));
        assert_eq!(
            first.bodies(),
            vec![
                json!({"action": "up", "channel_name": "r1", "room_seat": {"user_id": 1, "id": 3,
                "sex": 2, "avatar_url": "a", "avatar_small_url": "s", "nickname": "n",
                "status": 1, "microphone": 1, "rank": 3, "room_id": 88}})
            ]
        );
        assert_eq!(host.seat_of(1), Some(3));
        let moved = host.server::<Component>("up", up_payload(1, None));
        let bodies = moved.bodies();
        assert_eq!(bodies[0]["action"], "down");
        assert_eq!(bodies[0]["user_id"], 1);
        assert_eq!(bodies[1]["room_seat"]["id"], 1);
        assert_eq!(host.seat_of(1), Some(1));
        let down = host.server::<Component>("down", json!({"user_id": 1, "channel_name": "r1"}));
        assert_eq!(down.output()["seat_id"], 1);
        assert_eq!(host.seat_of(1), None);
    }

    #[test]
    fn seat_rules_answer_their_codes() {
        let mut host = FakeHost::new()
            .member(1, "r1", 88)
            .member(2, "r1", 88)
            .seated(2, "r1", 1)
            .locked("r1", 2)
            .attribute("r1", "owner", "2");
        assert_eq!(
            host.server::<Component>("up", up_payload(1, Some(1)))
                .code(),
            2003
        );
        assert_eq!(
            host.server::<Component>("up", up_payload(1, Some(2)))
                .code(),
            2003
        );
        assert_eq!(
            host.server::<Component>("up", up_payload(1, Some(10)))
                .code(),
            2001
        );
        assert_eq!(
            host.server::<Component>("up", up_payload(5, None)).code(),
            2004
        );
        let not_seated =
            host.server::<Component>("down", json!({"user_id": 1, "channel_name": "r1"}));
        assert_eq!(not_seated.code(), 2004);
        // Only the owner or an admin locks from a client.
        let lock = json!({"channel_name": "r1", "seat_id": 4});
        assert_eq!(
            host.client::<Component>(1, "lock_seat", lock.clone())
                .code(),
            2004
        );
        assert!(
            host.client::<Component>(2, "lock_seat", lock)
                .result
                .is_ok()
        );
        assert_eq!(host.seats("r1")[3].status, LOCKED);
        let occupied = json!({"channel_name": "r1", "seat_id": 1});
        assert_eq!(
            host.client::<Component>(2, "lock_seat", occupied).code(),
            2003
        );
    }

    fn seats(states: &[(u8, Option<u64>)]) -> Vec<Seat> {
        (1..)
            .zip(states)
            .map(|(id, &(status, user_id))| Seat {
                id,
                user_id,
                status,
                microphone: 0,
            })
            .collect()
    }

    #[test]
    fn takes_the_lowest_free_seat() {
        let room = seats(&[(1, Some(7)), (2, None), (0, None), (0, None)]);
        assert_eq!(choose_seat(&room, None, None).unwrap(), 3);
        let full = seats(&[(1, Some(7)), (2, None)]);
        assert!(matches!(
            choose_seat(&full, None, None),
            Err(Error::Conflict(_))
        ));
    }

    #[test]
    fn checks_a_requested_seat() {
        let room = seats(&[(1, Some(7)), (2, None), (0, None)]);
        assert_eq!(choose_seat(&room, Some(3), Some(1)).unwrap(), 3);
        assert!(matches!(
            choose_seat(&room, Some(0), None),
            Err(Error::Rejected(_))
        ));
        assert!(matches!(
            choose_seat(&room, Some(4), None),
            Err(Error::Rejected(_))
        ));
        assert!(matches!(
            choose_seat(&room, Some(1), None),
            Err(Error::Conflict(_))
        ));
        assert!(matches!(
            choose_seat(&room, Some(2), None),
            Err(Error::Conflict(_))
        ));
        assert!(matches!(
            choose_seat(&room, Some(1), Some(1)),
            Err(Error::Conflict(_))
        ));
    }
}
