//! Building a [`Reply`] and its effects from `serde_json` values.

use serde_json::Value;

use crate::{Delivery, Effect, Notification, Reply, RoutedNotification, Target};

/// A successful reply: `result` (a JSON object, the WIT's `output`) goes
/// back to the caller as `result`;
/// `effects` are applied by the host (state changes first, as one atomic
/// batch, then notifications in list order).
pub fn reply(result: Value, effects: Vec<Effect>) -> Reply {
    Reply {
        output: result.to_string(),
        effects,
    }
}

/// A `notify` effect delivering `body` (a JSON object in the seed's shape,
/// with its `action`) to `target`; `subject` is the user it is about.
pub fn notify(target: Target, body: &Value, subject: Option<u64>) -> Effect {
    Effect::Notify(Notification {
        target,
        body: body.to_string(),
        subject,
    })
}

/// A `notify` effect to the members of the room `channel_name`.
pub fn notify_room(channel_name: &str, body: &Value, subject: Option<u64>) -> Effect {
    notify(Target::Room(channel_name.to_string()), body, subject)
}

/// A `notify` effect to one user.
pub fn notify_user(user_id: u64, body: &Value, subject: Option<u64>) -> Effect {
    notify(Target::User(user_id), body, subject)
}

/// A `notify-via` effect (contract 1.1): `body` to the members of the room
/// `channel_name` by `delivery` (`Broadcast`, `Relay`, or `Configured` for
/// the mode the operator set for its action).
pub fn notify_room_via(
    channel_name: &str,
    body: &Value,
    subject: Option<u64>,
    delivery: Delivery,
) -> Effect {
    Effect::NotifyVia(RoutedNotification {
        notification: Notification {
            target: Target::Room(channel_name.to_string()),
            body: body.to_string(),
            subject,
        },
        delivery,
    })
}
