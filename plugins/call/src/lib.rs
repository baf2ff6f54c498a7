//! The `call` plugin: 1:1 calls, so that a user who drops out of a call is
//! hung up on.
//!
//! Rules it holds (`call_start` and `hang_up` come from clients and the app
//! backend; from a client the user is the connection's own):
//! - `call_start`: records a call between `user_id` and `receiver_id`. A
//!   call with oneself is rejected; either user already in a call is a
//!   conflict. No notification: the call itself runs over the voice
//!   provider.
//! - `hang_up`: ends the user's call and sends `hang_up` to `receiver_id`
//!   only. Hanging up on oneself is rejected.
//! - `disconnected` (system): a user in a call is hung up on: the call ends
//!   and the peer gets `hang_up` with `user_id` = the disconnected user and
//!   `receiver_id` = the peer.
//!
//! The subject of `hang_up` is the user hanging up.

use chorus_plugin_sdk::event::{acting_user, action, description, event_user, unknown_action};
use chorus_plugin_sdk::reply::{notify_user, reply};
use chorus_plugin_sdk::{
    Description, Effect, Error, Event, Guest, Payload, Reply, Source, StartCall, room_state,
};
use serde_json::{Value, json};

/// The plugin's `handler` export.
struct Component;

impl Guest for Component {
    fn describe() -> Description {
        description(
            "call",
            env!("CARGO_PKG_VERSION"),
            vec![
                action("call_start", &[Source::Client, Source::Server]),
                action("hang_up", &[Source::Client, Source::Server]),
                action("disconnected", &[Source::System]),
            ],
        )
    }

    fn handle(event: Event) -> Result<Reply, Error> {
        match event.action.as_str() {
            "call_start" => call_start(&event),
            "hang_up" => hang_up(&event),
            "disconnected" => disconnected(&event),
            _ => Err(unknown_action(&event)),
        }
    }
}

chorus_plugin_sdk::export!(Component);

/// The two users and the channel of a `call_start` or `hang_up`.
struct CallRequest {
    user_id: u64,
    receiver_id: u64,
    channel_name: String,
}

impl CallRequest {
    /// Reads the request; a call with oneself is rejected.
    fn read(event: &Event) -> Result<Self, Error> {
        let payload = Payload::parse(&event.payload)?;
        let request = Self {
            user_id: acting_user(event, &payload)?,
            receiver_id: payload.u64("receiver_id")?,
            channel_name: payload.channel_name()?,
        };
        if request.user_id == request.receiver_id {
            return Err(Error::Rejected("`receiver_id` is the user themself".into()));
        }
        Ok(request)
    }
}

/// `call_start`: record the call if neither user is in one.
fn call_start(event: &Event) -> Result<Reply, Error> {
    let request = CallRequest::read(event)?;
    for user in [request.user_id, request.receiver_id] {
        if room_state::call_of(user).is_some() {
            return Err(Error::Conflict(format!("user {user} is already in a call")));
        }
    }
    let result = json!({
        "user_id": request.user_id,
        "receiver_id": request.receiver_id,
        "channel_name": request.channel_name,
    });
    let effect = Effect::StartCall(StartCall {
        user_id: request.user_id,
        receiver_id: request.receiver_id,
        channel_name: request.channel_name,
    });
    Ok(reply(result, vec![effect]))
}

/// `hang_up`: end the user's call and tell the receiver.
fn hang_up(event: &Event) -> Result<Reply, Error> {
    let request = CallRequest::read(event)?;
    Ok(end_call(
        request.user_id,
        request.receiver_id,
        &request.channel_name,
    ))
}

/// `disconnected`: hang up the call the user was in, if any.
fn disconnected(event: &Event) -> Result<Reply, Error> {
    let user_id = event_user(event)?;
    Ok(match room_state::call_of(user_id) {
        Some(call) => end_call(user_id, call.peer_id, &call.channel_name),
        None => reply(json!({"receiver_id": null}), Vec::new()),
    })
}

/// The reply ending `user_id`'s call with `hang_up` sent to `receiver_id`.
fn end_call(user_id: u64, receiver_id: u64, channel_name: &str) -> Reply {
    let body = hang_up_notification(user_id, receiver_id, channel_name);
    let effects = vec![
        Effect::EndCall(user_id),
        notify_user(receiver_id, &body, Some(user_id)),
    ];
    let result = json!({"receiver_id": receiver_id, "channel_name": channel_name});
    reply(result, effects)
}

/// The seed's `hang_up` notification.
fn hang_up_notification(user_id: u64, receiver_id: u64, channel_name: &str) -> Value {
    json!({
        "action": "hang_up",
        "user_id": user_id,
        "receiver_id": receiver_id,
        "channel_name": channel_name,
    })
}
