//! The `room` plugin: who is in which room.
//!
//! Rules it holds:
//! - `enter_room` (app backend): the user joins `channel_name`. A user in
//!   another room leaves it first (the host moves them with one `join-room`
//!   effect) and that room gets `exit_room` about them, with the seat they
//!   had there as freed, or `null`. The new room gets `enter_room` with the
//!   user's profile, segment and the car to show (see [`car`]). Entering the
//!   room one is already in keeps the seat and announces the user again.
//! - `exit_room` (app backend): a member leaves; its seat is freed; the room
//!   gets `exit_room`. A user who is not a member of that room: not-allowed.
//! - `disconnected` (system): a user in a room leaves it exactly as with
//!   `exit_room`; a user in no room changes nothing.
//!
//! Every notification's subject is the entering or leaving user. The
//! profile fields of `enter_room` (`nickname`, `sex`, the avatars,
//! `i_segment`, `i_segment_text`, `cars`) that the request leaves out come
//! from the profile the app backend stored (contract 1.1), if any.

mod car;
mod segment;

use chorus_plugin_sdk::Source::{Server, System};
use chorus_plugin_sdk::event::{acting, acting_user, event_user};
use chorus_plugin_sdk::notifications::{self, exit_room as exit_notification};
use chorus_plugin_sdk::profile;
use chorus_plugin_sdk::reply::{notify_room, reply};
use chorus_plugin_sdk::rules::member_of;
use chorus_plugin_sdk::{
    ChannelName, Config, Effect, Error, Event, JoinRoom, LeaveRoom, Membership, Payload, Profile,
    Reply, Router, clock, payload, room_state,
};
use serde::Deserialize;
use serde_json::{Value, json};

/// The plugin's actions.
fn router() -> Router {
    Router::new("room", env!("CARGO_PKG_VERSION"))
        .action("enter_room", &[Server], enter_room)
        .action("exit_room", &[Server], exit_room)
        .action("disconnected", &[System], disconnected)
}

chorus_plugin_sdk::plugin!(Component, router());

/// `enter_room`'s own fields (PROTOCOL section 6), read after the stored
/// profile filled the request (`i_segment` may come from it); the profile
/// fields are read by [`Profile`], and `cars`, shown as they were sent, by
/// [`car`].
#[derive(Deserialize)]
struct EnterRoomPayload {
    channel_name: ChannelName,
    room_id: u64,
    i_segment: String,
    i_segment_text: Option<String>,
}

/// `exit_room`'s payload.
#[derive(Deserialize)]
struct ExitRoom {
    user_id: Option<u64>,
    channel_name: ChannelName,
}

/// A validated `enter_room` request.
struct EnterRoom {
    user_id: u64,
    channel_name: String,
    room_id: u64,
    profile: Profile,
    i_segment: String,
    i_segment_text: String,
    /// The car to show, already completed with its notice, or `null`.
    car: Value,
}

impl EnterRoom {
    /// Reads and checks the request; only malformed fields fail it.
    fn read(event: &Event, payload: &Payload) -> Result<Self, Error> {
        let user_id = acting_user(event, payload)?;
        let payload = &profile::with_stored(event, payload, user_id);
        let request: EnterRoomPayload = payload.to()?;
        let profile = Profile::required(payload)?;
        let i_segment = request.i_segment;
        let i_segment_text = request
            .i_segment_text
            .filter(|text| !text.is_empty())
            .unwrap_or_else(|| segment::default_text(&i_segment).to_string());
        let cars = payload.opt_objects("cars")?.unwrap_or_default();
        let template = Config::load().string("car_notice_template", car::DEFAULT_NOTICE_TEMPLATE);
        let car = match car::choose(&cars, clock::now_ms())? {
            Some(chosen) => car::present(chosen, &profile.nickname, &template)?,
            None => Value::Null,
        };
        Ok(Self {
            user_id,
            channel_name: request.channel_name.into(),
            room_id: request.room_id,
            profile,
            i_segment,
            i_segment_text,
            car,
        })
    }

    /// The `enter_room` notification, in the seed's field order.
    fn notification(&self) -> Value {
        notifications::enter_room(
            self.user_id,
            &self.profile,
            &self.channel_name,
            &self.i_segment,
            &self.i_segment_text,
            self.car.clone(),
        )
    }
}

/// `enter_room`: join (moving out of another room), then announce.
fn enter_room(event: &Event) -> Result<Reply, Error> {
    let payload = Payload::parse(&event.payload)?;
    let request = EnterRoom::read(event, &payload)?;
    let user_id = request.user_id;
    let previous = room_state::membership_of(user_id)
        .filter(|membership| membership.channel_name != request.channel_name);
    let mut effects = vec![Effect::JoinRoom(JoinRoom {
        user_id,
        channel_name: request.channel_name.clone(),
        room_id: request.room_id,
    })];
    if let Some(old) = &previous {
        effects.push(notify_room(
            &old.channel_name,
            &exit_notification(user_id, old),
            Some(user_id),
        ));
    }
    effects.push(notify_room(
        &request.channel_name,
        &request.notification(),
        Some(user_id),
    ));
    let result = json!({
        "channel_name": request.channel_name,
        "previous_channel_name": previous.map(|old| old.channel_name),
        "car": request.car,
    });
    Ok(reply(result, effects))
}

/// `exit_room`: a member of `channel_name` leaves it.
fn exit_room(event: &Event) -> Result<Reply, Error> {
    let request: ExitRoom = payload::parse(&event.payload)?;
    let user_id = acting(event, request.user_id)?;
    let channel_name = String::from(request.channel_name);
    let membership = member_of(user_id, &channel_name)?;
    Ok(leave(user_id, &membership))
}

/// `disconnected`: the user leaves the room they are in, if any.
fn disconnected(event: &Event) -> Result<Reply, Error> {
    let user_id = event_user(event)?;
    Ok(match room_state::membership_of(user_id) {
        Some(membership) => leave(user_id, &membership),
        None => reply(json!({"channel_name": null}), Vec::new()),
    })
}

/// The reply that takes `user_id` out of the room of `membership`.
fn leave(user_id: u64, membership: &Membership) -> Reply {
    let effects = vec![
        Effect::LeaveRoom(LeaveRoom {
            user_id,
            channel_name: membership.channel_name.clone(),
        }),
        notify_room(
            &membership.channel_name,
            &exit_notification(user_id, membership),
            Some(user_id),
        ),
    ];
    let result = json!({
        "channel_name": membership.channel_name,
        "seat_id": membership.seat_id,
    });
    reply(result, effects)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chorus_plugin_sdk::Target;
    use chorus_plugin_sdk::testing::FakeHost;

    fn enter(host: &mut FakeHost, user: u64, channel: &str) -> chorus_plugin_sdk::testing::Handled {
        host.server::<Component>(
            "enter_room",
            json!({"user_id": user, "channel_name": channel, "room_id": 88, "nickname": "n",
                "sex": 1, "avatar_url": "", "avatar_small_url": "", "i_segment": "VIP"}),
        )
    }

    #[test]
    fn entering_announces_the_user_in_the_seed_shape() {
        let mut host = FakeHost::new();
        let done = enter(&mut host, 1, "r1");
        assert_eq!(host.members("r1"), vec![1]);
        let sent = done.notifications();
        assert_eq!(sent[0].target, Target::Room("r1".into()));
        assert_eq!(
            sent[0].body,
            json!({"action": "enter_room", "user_id": 1, "nickname": "n", "sex": 1,
                "avatar_url": "", "avatar_small_url": "", "channel_name": "r1",
                "i_segment": "VIP", "i_segment_text": "VIP", "user_car_gift": null})
        );
    }

    #[test]
    fn moving_rooms_frees_the_seat_and_says_exit_room_there() {
        let mut host = FakeHost::new().member(1, "r1", 88).seated(1, "r1", 3);
        let done = enter(&mut host, 1, "r2");
        let bodies = done.bodies();
        assert_eq!(
            bodies[0],
            json!({"action": "exit_room", "user_id": 1, "channel_name": "r1",
                "room_seat": {"id": 3, "status": 0, "microphone": 0}})
        );
        assert_eq!(bodies[1]["action"], "enter_room");
        assert_eq!(done.output()["previous_channel_name"], "r1");
        assert_eq!(
            host.membership(1).map(|m| m.channel_name),
            Some("r2".into())
        );
    }

    #[test]
    fn exit_needs_membership_and_disconnected_leaves_quietly_when_in_no_room() {
        let mut host = FakeHost::new().member(1, "r1", 88);
        let outsider =
            host.server::<Component>("exit_room", json!({"user_id": 2, "channel_name": "r1"}));
        assert_eq!(outsider.code(), 2004);
        let gone = host.system::<Component>("disconnected", Some(1), json!({}));
        assert_eq!(gone.bodies()[0]["room_seat"], Value::Null);
        assert!(host.members("r1").is_empty());
        let again = host.system::<Component>("disconnected", Some(1), json!({}));
        assert!(again.effects().is_empty());
    }
}
