//! The `call` plugin: 1:1 calls, so that a user who drops out of a call is
//! hung up on, and nobody is held in a call they are not part of.
//!
//! Rules it holds (`call_start`, `call_answer` and `hang_up` come from
//! clients and the app backend; from a client the user is the connection's
//! own):
//! - `call_start`: records a call between `user_id` (the caller) and
//!   `receiver_id` (the callee). A call with oneself is rejected (2001); a
//!   caller already in a call is a conflict (2003). From a client, the
//!   caller must be a member of `channel_name` (2004), and a callee who is
//!   not a member of it, or is already in a call or ringing, gets one and
//!   the same refusal: not-allowed (2004) "user N cannot be called now",
//!   so a caller never learns whether someone else is in a call. The call
//!   then rings: the host raises `call_ring_timeout` after
//!   `calls.ring_timeout`, and a call still unanswered then ends with
//!   `hang_up` to both users. From the app backend, the call is recorded
//!   as answered, wherever the users are (the backend's own policy); a
//!   busy user is a conflict (2003). No notification: the call itself
//!   runs over the voice provider.
//! - `call_answer` (an extension): the callee (`user_id`) answers the call
//!   ringing from `receiver_id`; anything else is not-allowed (2004). No
//!   notification.
//! - `hang_up`: ends the user's call, which must be with `receiver_id`
//!   (else not-allowed, 2004, and nothing changes), and sends `hang_up` to
//!   that peer. Hanging up on oneself is rejected.
//! - `call_ring_timeout` (system, raised by the host about the caller with
//!   `call_start`'s result as payload): if that very call is still
//!   ringing, it ends, and each user gets `hang_up` naming the other as
//!   `user_id`, with `"reason":"no_answer"`.
//! - `disconnected` (system): a user in a call is hung up on: the call ends
//!   and the peer gets `hang_up` with `user_id` = the disconnected user and
//!   `receiver_id` = the peer.
//!
//! A ringing call is the KV key `ringing:<callee>` = `<caller>:<ring_id>`
//! (`ring_id` being the caller's `call_start` time in ms), kept at most
//! [`RINGING_TTL_MS`]; answering or ending the call deletes it.
//!
//! The subject of `hang_up` is the user hanging up.

use chorus_plugin_sdk::Source::{Client, Server, System};
use chorus_plugin_sdk::event::{acting, event_user};
use chorus_plugin_sdk::notifications::{hang_up as hang_up_notification, hang_up_because};
use chorus_plugin_sdk::reply::{notify_user, reply};
use chorus_plugin_sdk::rules::in_room;
use chorus_plugin_sdk::{
    ChannelName, Effect, Error, Event, KvPut, Reply, Router, Source, StartCall, clock, kv, payload,
    room_state,
};
use serde::Deserialize;
use serde_json::json;

/// How long a `ringing:` record may outlive a lost timer (a node stopped
/// before the ring timeout fired): an hour, far beyond any ring timeout.
const RINGING_TTL_MS: u64 = 3_600_000;

/// The plugin's actions.
fn router() -> Router {
    Router::new("call", env!("CARGO_PKG_VERSION"))
        .action("call_start", &[Client, Server], call_start)
        .action("call_answer", &[Client, Server], call_answer)
        .action("hang_up", &[Client, Server], hang_up)
        .action("call_ring_timeout", &[System], ring_timeout)
        .action("disconnected", &[System], disconnected)
}

chorus_plugin_sdk::plugin!(Component, router());

/// The payload of a `call_start`, `call_answer` or `hang_up` (PROTOCOL
/// section 7): `user_id` from the app backend only.
#[derive(Deserialize)]
struct CallPayload {
    user_id: Option<u64>,
    receiver_id: u64,
    channel_name: ChannelName,
}

/// The two users and the channel of a call request.
struct CallRequest {
    user_id: u64,
    receiver_id: u64,
    channel_name: String,
}

impl CallRequest {
    /// Reads the request; a call with oneself is rejected.
    fn read(event: &Event) -> Result<Self, Error> {
        let payload: CallPayload = payload::parse(&event.payload)?;
        let request = Self {
            user_id: acting(event, payload.user_id)?,
            receiver_id: payload.receiver_id,
            channel_name: payload.channel_name.into(),
        };
        if request.user_id == request.receiver_id {
            return Err(Error::Rejected("`receiver_id` is the user themself".into()));
        }
        Ok(request)
    }
}

/// The payload of the host's `call_ring_timeout` event (the caller is the
/// event's user).
#[derive(Deserialize)]
struct RingTimeout {
    receiver_id: u64,
    ring_id: u64,
}

/// `call_start`: record the call if both users may have it.
fn call_start(event: &Event) -> Result<Reply, Error> {
    let request = CallRequest::read(event)?;
    if room_state::call_of(request.user_id).is_some() {
        return Err(Error::Conflict("you are already in a call".into()));
    }
    let mut result = json!({
        "user_id": request.user_id,
        "receiver_id": request.receiver_id,
        "channel_name": request.channel_name,
    });
    let mut effects = vec![Effect::StartCall(StartCall {
        user_id: request.user_id,
        receiver_id: request.receiver_id,
        channel_name: request.channel_name.clone(),
    })];
    if event.source == Source::Client {
        check_client_call(&request)?;
        let ring_id = clock::now_ms();
        result["ring_id"] = ring_id.into();
        effects.push(Effect::KvPut(KvPut {
            key: ringing_key(request.receiver_id),
            value: ringing_value(request.user_id, ring_id),
            if_version: None,
            ttl_ms: Some(RINGING_TTL_MS),
        }));
    } else if room_state::call_of(request.receiver_id).is_some() {
        let receiver = request.receiver_id;
        return Err(Error::Conflict(format!(
            "user {receiver} is already in a call"
        )));
    }
    Ok(reply(result, effects))
}

/// A client's call: the caller in the room, and a callee who can take it,
/// with one refusal for every reason on the callee's side.
fn check_client_call(request: &CallRequest) -> Result<(), Error> {
    let channel = request.channel_name.as_str();
    if !in_room(request.user_id, channel) {
        return Err(Error::NotAllowed(format!("you are not in `{channel}`")));
    }
    let callee = request.receiver_id;
    let available = in_room(callee, channel)
        && room_state::call_of(callee).is_none()
        && kv::get(&ringing_key(callee)).is_none();
    if !available {
        return Err(Error::NotAllowed(format!(
            "user {callee} cannot be called now"
        )));
    }
    Ok(())
}

/// `call_answer`: the callee takes the call ringing from `receiver_id`.
fn call_answer(event: &Event) -> Result<Reply, Error> {
    let request = CallRequest::read(event)?;
    let ringing = kv::get(&ringing_key(request.user_id));
    let from_caller = ringing
        .as_deref()
        .and_then(ringing_caller)
        .is_some_and(|caller| caller == request.receiver_id);
    let in_call = room_state::call_of(request.user_id)
        .is_some_and(|call| call.peer_id == request.receiver_id);
    if !(from_caller && in_call) {
        let caller = request.receiver_id;
        return Err(Error::NotAllowed(format!(
            "no call from user {caller} is ringing for you"
        )));
    }
    let effects = vec![Effect::KvDelete(ringing_key(request.user_id))];
    Ok(reply(
        json!({"answered": true, "receiver_id": request.receiver_id}),
        effects,
    ))
}

/// `hang_up`: end the user's call with `receiver_id` and tell them.
fn hang_up(event: &Event) -> Result<Reply, Error> {
    let request = CallRequest::read(event)?;
    match room_state::call_of(request.user_id) {
        Some(call) if call.peer_id == request.receiver_id => {
            Ok(end_call(request.user_id, call.peer_id, &call.channel_name))
        }
        _ => {
            let peer = request.receiver_id;
            Err(Error::NotAllowed(format!(
                "you are not in a call with user {peer}"
            )))
        }
    }
}

/// `call_ring_timeout`: end the call the event names if it still rings.
fn ring_timeout(event: &Event) -> Result<Reply, Error> {
    let caller = event_user(event)?;
    let RingTimeout {
        receiver_id: callee,
        ring_id,
    } = payload::parse(&event.payload)?;
    let still_ringing =
        kv::get(&ringing_key(callee)).is_some_and(|value| value == ringing_value(caller, ring_id));
    let call = room_state::call_of(caller).filter(|call| call.peer_id == callee);
    let (true, Some(call)) = (still_ringing, call) else {
        return Ok(reply(json!({"ended": false}), Vec::new()));
    };
    let to_callee = hang_up_because(caller, callee, &call.channel_name, "no_answer");
    let to_caller = hang_up_because(callee, caller, &call.channel_name, "no_answer");
    let effects = vec![
        Effect::EndCall(caller),
        Effect::KvDelete(ringing_key(callee)),
        notify_user(callee, &to_callee, Some(caller)),
        notify_user(caller, &to_caller, Some(callee)),
    ];
    Ok(reply(json!({"ended": true}), effects))
}

/// `disconnected`: hang up the call the user was in, if any.
fn disconnected(event: &Event) -> Result<Reply, Error> {
    let user_id = event_user(event)?;
    Ok(match room_state::call_of(user_id) {
        Some(call) => end_call(user_id, call.peer_id, &call.channel_name),
        None => reply(json!({"receiver_id": null}), Vec::new()),
    })
}

/// The reply ending `user_id`'s call with `hang_up` sent to `receiver_id`;
/// a ringing record of either user goes with it.
fn end_call(user_id: u64, receiver_id: u64, channel_name: &str) -> Reply {
    let body = hang_up_notification(user_id, receiver_id, channel_name);
    let effects = vec![
        Effect::EndCall(user_id),
        Effect::KvDelete(ringing_key(receiver_id)),
        Effect::KvDelete(ringing_key(user_id)),
        notify_user(receiver_id, &body, Some(user_id)),
    ];
    let result = json!({"receiver_id": receiver_id, "channel_name": channel_name});
    reply(result, effects)
}

/// The KV key of a call ringing for `callee`.
fn ringing_key(callee: u64) -> String {
    format!("ringing:{callee}")
}

/// The value of a ringing record: who calls, and which call.
fn ringing_value(caller: u64, ring_id: u64) -> String {
    format!("{caller}:{ring_id}")
}

/// The caller of a ringing record.
fn ringing_caller(value: &str) -> Option<u64> {
    value.split_once(':')?.0.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chorus_plugin_sdk::Target;
    use chorus_plugin_sdk::testing::FakeHost;
    use serde_json::Value;

    fn room() -> FakeHost {
        FakeHost::new()
            .member(1, "r1", 88)
            .member(2, "r1", 88)
            .member(3, "r1", 88)
    }

    fn start(host: &mut FakeHost, caller: u64, callee: u64) -> Value {
        let done = host.client::<Component>(
            caller,
            "call_start",
            json!({"receiver_id": callee, "channel_name": "r1"}),
        );
        done.output()
    }

    #[test]
    fn a_client_call_rings_then_is_answered_then_hung_up() {
        let mut host = room();
        let started = start(&mut host, 1, 2);
        assert_eq!(started["ring_id"], host.now_ms());
        assert_eq!(host.call(1).map(|c| c.peer_id), Some(2));
        // Ringing: a third caller gets the one refusal.
        let busy = host.client::<Component>(
            3,
            "call_start",
            json!({"receiver_id": 2, "channel_name": "r1"}),
        );
        assert_eq!(busy.code(), 2004);
        let answered = host.client::<Component>(
            2,
            "call_answer",
            json!({"receiver_id": 1, "channel_name": "r1"}),
        );
        assert_eq!(answered.output()["answered"], true);
        // Answered: the ring timeout ends nothing.
        let late = host.system::<Component>("call_ring_timeout", Some(1), started);
        assert_eq!(late.output()["ended"], false);
        let hung = host.client::<Component>(
            2,
            "hang_up",
            json!({"receiver_id": 1, "channel_name": "r1"}),
        );
        let sent = hung.notifications();
        assert_eq!(sent[0].target, Target::User(1));
        assert_eq!(
            sent[0].body,
            json!({"action": "hang_up", "user_id": 2, "receiver_id": 1, "channel_name": "r1"})
        );
        assert_eq!(host.call(1), None);
    }

    #[test]
    fn an_unanswered_call_ends_with_no_answer_to_both() {
        let mut host = room();
        let started = start(&mut host, 1, 2);
        let done = host.system::<Component>("call_ring_timeout", Some(1), started);
        let bodies = done.bodies();
        assert_eq!(bodies.len(), 2);
        assert!(bodies.iter().all(|b| b["reason"] == "no_answer"));
        assert_eq!(host.call(2), None);
    }

    #[test]
    fn disconnecting_hangs_up_on_the_peer_and_rules_answer_their_codes() {
        let mut host = room().in_call(1, 2, "r1");
        let self_call = host.client::<Component>(
            3,
            "call_start",
            json!({"receiver_id": 3, "channel_name": "r1"}),
        );
        assert_eq!(self_call.code(), 2001);
        let in_call = host.server::<Component>(
            "call_start",
            json!({"user_id": 1, "receiver_id": 3, "channel_name": "r1"}),
        );
        assert_eq!(in_call.code(), 2003);
        let wrong_peer = host.client::<Component>(
            1,
            "hang_up",
            json!({"receiver_id": 3, "channel_name": "r1"}),
        );
        assert_eq!(wrong_peer.code(), 2004);
        let gone = host.system::<Component>("disconnected", Some(1), json!({}));
        assert_eq!(gone.notifications()[0].target, Target::User(2));
        assert_eq!(host.call(2), None);
    }
}
