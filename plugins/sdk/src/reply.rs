//! Building a [`Reply`] and its effects from anything that serializes to
//! JSON: a `serde_json` [`Value`](serde_json::Value) (what `json!` builds),
//! or a `#[derive(Serialize)]` struct, which is written straight to JSON
//! text without building a map first (issue 20 item 1: for `send_gift`
//! the maps cost more than writing the text). A struct serializes its
//! fields in declaration order, so it keeps the seed's field order as
//! `serde_json`'s `preserve_order` does for a `Value`.
//!
//! A value whose serialization fails (a map with non-string keys; a
//! `Serialize` impl that errs) becomes an empty text, which the host
//! refuses as malformed (2002, nothing applied).

use serde::Serialize;

use crate::{
    AppEvent, Delivery, Effect, Notification, Reply, RoutedNotification, SetTimer, Target,
};

/// A successful reply: `result` (a JSON object, the WIT's `output`) goes
/// back to the caller as `result`;
/// `effects` are applied by the host (state changes first, as one atomic
/// batch, then notifications in list order).
pub fn reply(result: impl Serialize, effects: Vec<Effect>) -> Reply {
    Reply {
        output: text(&result),
        effects,
    }
}

/// A `notify` effect delivering `body` (a JSON object in the seed's shape,
/// with its `action`) to `target`; `subject` is the user it is about.
pub fn notify(target: Target, body: &(impl Serialize + ?Sized), subject: Option<u64>) -> Effect {
    Effect::Notify(Notification {
        target,
        body: text(body),
        subject,
    })
}

/// A `notify` effect to the members of the room `channel_name`.
pub fn notify_room(
    channel_name: &str,
    body: &(impl Serialize + ?Sized),
    subject: Option<u64>,
) -> Effect {
    notify(Target::Room(channel_name.to_string()), body, subject)
}

/// A `notify` effect to one user.
pub fn notify_user(user_id: u64, body: &(impl Serialize + ?Sized), subject: Option<u64>) -> Effect {
    notify(Target::User(user_id), body, subject)
}

/// A `notify-via` effect (contract 1.1): `body` to the members of the room
/// `channel_name` by `delivery` (`Broadcast`, `Relay`, or `Configured` for
/// the mode the operator set for its action).
pub fn notify_room_via(
    channel_name: &str,
    body: &(impl Serialize + ?Sized),
    subject: Option<u64>,
    delivery: Delivery,
) -> Effect {
    Effect::NotifyVia(RoutedNotification {
        notification: Notification {
            target: Target::Room(channel_name.to_string()),
            body: text(body),
            subject,
        },
        delivery,
    })
}

/// A `set-timer` effect (contract 1.1): in `delay_ms` (100 ..= 86400000)
/// this plugin gets the system event `timer` with `key` and `payload`
/// (see [`crate::event::timer_event`]); a pending timer of the same key is
/// replaced. `channel_name` ties it to a room (its bound and its lock).
/// The plugin must be granted `timers` in its `<name>.toml`.
pub fn set_timer(
    key: &str,
    delay_ms: i64,
    payload: &(impl Serialize + ?Sized),
    channel_name: Option<&str>,
) -> Effect {
    Effect::SetTimer(SetTimer {
        key: key.to_string(),
        delay_ms,
        payload: text(payload),
        channel_name: channel_name.map(str::to_string),
    })
}

/// A `cancel-timer` effect (contract 1.1): the pending timer `key` of this
/// plugin, if any, never fires.
pub fn cancel_timer(key: &str) -> Effect {
    Effect::CancelTimer(key.to_string())
}

/// An `emit` effect (contract 1.2): the application event `name`
/// (`[a-z][a-z0-9_.]*`, at most 64 bytes, e.g. `gift.sent`) with `body`
/// (a JSON object of at most 4096 bytes once serialized) for the app
/// backend's webhooks, handed on after the reply's batch applied. A name
/// or body outside those bounds fails the call (2002). The plugin must be
/// granted `events` in its `<name>.toml`.
pub fn emit(name: &str, body: &(impl Serialize + ?Sized)) -> Effect {
    Effect::Emit(AppEvent {
        name: name.to_string(),
        body: text(body),
    })
}

/// The error code the host answers for a plugin's error (PROTOCOL section
/// 7): `invalid` 1001, `missing` 1002, `rejected` 2001, `conflict` 2003,
/// `not-allowed` 2004.
pub fn code(error: &crate::Error) -> u16 {
    match error {
        crate::Error::Invalid(_) => 1001,
        crate::Error::Missing(_) => 1002,
        crate::Error::Rejected(_) => 2001,
        crate::Error::Conflict(_) => 2003,
        crate::Error::NotAllowed(_) => 2004,
    }
}

/// `value` as JSON text, or empty when it does not serialize (see the
/// module's docs). `serde_json::to_string` writes into one buffer;
/// `Value::to_string` (its `Display`) went through the formatter one
/// token at a time, which was a tenth of a `send_gift` call (issue 20
/// item 1). A `Value` always serializes: its keys are strings.
fn text(value: &(impl Serialize + ?Sized)) -> String {
    serde_json::to_string(value).unwrap_or_default()
}
