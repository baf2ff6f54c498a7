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

use chorus_plugin_sdk::event::{acting_user, action, description, event_user, unknown_action};
use chorus_plugin_sdk::profile;
use chorus_plugin_sdk::reply::{notify_room, reply};
use chorus_plugin_sdk::{
    Config, Description, Effect, Error, Event, Guest, JoinRoom, LeaveRoom, Membership, Payload,
    Profile, Reply, Source, clock, room_state,
};
use serde_json::{Value, json};

/// The plugin's `handler` export.
struct Component;

impl Guest for Component {
    fn describe() -> Description {
        description(
            "room",
            env!("CARGO_PKG_VERSION"),
            vec![
                action("enter_room", &[Source::Server]),
                action("exit_room", &[Source::Server]),
                action("disconnected", &[Source::System]),
            ],
        )
    }

    fn handle(event: Event) -> Result<Reply, Error> {
        match event.action.as_str() {
            "enter_room" => enter_room(&event),
            "exit_room" => exit_room(&event),
            "disconnected" => disconnected(&event),
            _ => Err(unknown_action(&event)),
        }
    }
}

chorus_plugin_sdk::export!(Component);

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
        let profile = Profile::required(payload)?;
        let i_segment = payload.string("i_segment")?;
        let i_segment_text = payload
            .opt_string("i_segment_text")?
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
            channel_name: payload.channel_name()?,
            room_id: payload.u64("room_id")?,
            profile,
            i_segment,
            i_segment_text,
            car,
        })
    }

    /// The `enter_room` notification, in the seed's field order.
    fn notification(&self) -> Value {
        let mut body = json!({"action": "enter_room", "user_id": self.user_id});
        if let Value::Object(object) = &mut body {
            self.profile.write_to(object);
            object.insert("channel_name".into(), self.channel_name.clone().into());
            object.insert("i_segment".into(), self.i_segment.clone().into());
            object.insert("i_segment_text".into(), self.i_segment_text.clone().into());
            object.insert("user_car_gift".into(), self.car.clone());
        }
        body
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
    let payload = Payload::parse(&event.payload)?;
    let user_id = acting_user(event, &payload)?;
    let channel_name = payload.channel_name()?;
    let membership = room_state::membership_of(user_id)
        .filter(|membership| membership.channel_name == channel_name)
        .ok_or_else(|| Error::NotAllowed(format!("user {user_id} is not in `{channel_name}`")))?;
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

/// The `exit_room` notification about `user_id` leaving the room of
/// `membership`: `room_seat` is their seat as freed, or `null`.
fn exit_notification(user_id: u64, membership: &Membership) -> Value {
    let room_seat = match membership.seat_id {
        Some(id) => json!({"id": id, "status": 0, "microphone": 0}),
        None => Value::Null,
    };
    json!({
        "action": "exit_room",
        "user_id": user_id,
        "channel_name": membership.channel_name,
        "room_seat": room_seat,
    })
}
