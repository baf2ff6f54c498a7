//! Turning what a plugin returned into what the caller applies: WIT
//! effects into [`StateChange`]s and [`Notification`]s, WIT errors into
//! [`CallError`]s.
//!
//! A reply is converted whole or not at all: one malformed effect fails
//! the call ([`FailureKind::MalformedEffect`]), so nothing of it is applied.

use serde_json::{Map, Value};

use super::bindings::types::{self, Effect};
use super::error::{CallError, Failure, FailureKind};
use super::{Notification, Reply, Target};
use crate::config::DeliveryMode;
use crate::store::StateChange;

/// Converts a successful WIT reply of plugin `plugin` at `version`.
pub(crate) fn convert_reply(
    plugin: &str,
    version: &str,
    reply: types::Reply,
) -> Result<Reply, Failure> {
    let result = serde_json::from_str(&reply.output)
        .map_err(|e| malformed(format!("result is not JSON: {e}")))?;
    let mut out = Reply {
        result,
        changes: Vec::new(),
        notifications: Vec::new(),
        plugin: plugin.to_string(),
        version: version.to_string(),
    };
    for (index, effect) in reply.effects.into_iter().enumerate() {
        match convert_effect(plugin, effect)
            .map_err(|e| malformed(format!("effect {index}: {e}")))?
        {
            Converted::Change(change) => out.changes.push(change),
            Converted::Notify(notification) => out.notifications.push(notification),
        }
    }
    Ok(out)
}

/// One converted effect.
enum Converted {
    Change(StateChange),
    Notify(Notification),
}

/// Converts a WIT error (the plugin said no) into its [`CallError`].
pub(crate) fn convert_error(error: types::Error) -> CallError {
    match error {
        types::Error::Rejected(reason) => CallError::Rejected(reason),
        types::Error::Conflict(reason) => CallError::Conflict(reason),
        types::Error::NotAllowed(reason) => CallError::NotAllowed(reason),
        types::Error::Invalid(reason) => CallError::Invalid(reason),
        types::Error::Missing(reason) => CallError::Missing(reason),
    }
}

fn malformed(detail: String) -> Failure {
    Failure::new(FailureKind::MalformedEffect, detail)
}

/// One effect; `KvSet` and `KvDelete` get the plugin's name, so a plugin
/// only ever writes its own key-value space.
fn convert_effect(plugin: &str, effect: Effect) -> Result<Converted, String> {
    let change = match effect {
        Effect::JoinRoom(j) => StateChange::JoinRoom {
            user_id: j.user_id,
            channel_name: j.channel_name,
            room_id: j.room_id,
        },
        Effect::LeaveRoom(l) => StateChange::LeaveRoom {
            user_id: l.user_id,
            channel_name: l.channel_name,
        },
        Effect::TakeSeat(t) => StateChange::TakeSeat {
            channel_name: t.channel_name,
            seat_id: t.seat_id,
            user_id: t.user_id,
        },
        Effect::FreeSeat(f) => StateChange::FreeSeat {
            channel_name: f.channel_name,
            user_id: f.user_id,
        },
        Effect::SetSeat(s) => StateChange::SetSeat {
            channel_name: s.channel_name,
            seat_id: s.seat_id,
            status: s.status,
            microphone: s.microphone,
        },
        Effect::StartCall(c) => StateChange::StartCall {
            user_id: c.user_id,
            receiver_id: c.receiver_id,
            channel_name: c.channel_name,
        },
        Effect::EndCall(user_id) => StateChange::EndCall { user_id },
        Effect::KvSet(entry) => StateChange::KvSet {
            plugin: plugin.to_string(),
            key: entry.key,
            value: entry.value,
        },
        Effect::KvDelete(key) => StateChange::KvDelete {
            plugin: plugin.to_string(),
            key,
        },
        Effect::KvPut(put) => StateChange::KvPut {
            plugin: plugin.to_string(),
            key: put.key,
            value: put.value,
            if_version: put.if_version,
            ttl_ms: put.ttl_ms,
        },
        Effect::KvIncr(incr) => StateChange::KvIncr {
            plugin: plugin.to_string(),
            key: incr.key,
            delta: incr.delta,
            ttl_ms: incr.ttl_ms,
        },
        Effect::Notify(notification) => {
            return convert_notification(notification, None).map(Converted::Notify);
        }
        Effect::NotifyVia(routed) => {
            let delivery = match routed.delivery {
                types::Delivery::Configured => None,
                types::Delivery::Broadcast => Some(DeliveryMode::Broadcast),
                types::Delivery::Relay => Some(DeliveryMode::Relay),
            };
            return convert_notification(routed.notification, delivery).map(Converted::Notify);
        }
    };
    Ok(Converted::Change(change))
}

/// A notification, its body checked to be a JSON object with a string
/// `action`; `delivery` is the plugin's choice for a room target.
fn convert_notification(
    notification: types::Notification,
    delivery: Option<DeliveryMode>,
) -> Result<Notification, String> {
    let body: Map<String, Value> = match serde_json::from_str(&notification.body) {
        Ok(Value::Object(body)) => body,
        Ok(_) => return Err("notification body is not a JSON object".into()),
        Err(e) => return Err(format!("notification body is not JSON: {e}")),
    };
    if !body.get("action").is_some_and(Value::is_string) {
        return Err("notification body has no string `action`".into());
    }
    let target = match notification.target {
        types::Target::User(user_id) => Target::User(user_id),
        types::Target::Room(channel_name) => Target::Room(channel_name),
        types::Target::Everyone => Target::Everyone,
    };
    Ok(Notification {
        target,
        body,
        subject: notification.subject,
        delivery,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notify(body: &str) -> Effect {
        Effect::Notify(types::Notification {
            target: types::Target::Room("r".into()),
            body: body.into(),
            subject: Some(7),
        })
    }

    fn reply(result: &str, effects: Vec<Effect>) -> types::Reply {
        types::Reply {
            output: result.into(),
            effects,
        }
    }

    #[test]
    fn converts_changes_and_notifications_in_order() {
        let effects = vec![
            Effect::KvSet(types::KvEntry {
                key: "k".into(),
                value: "1".into(),
            }),
            notify(r#"{"action":"up","x":1}"#),
            Effect::EndCall(9),
        ];
        let out = convert_reply("seat", "1.0.0", reply("{}", effects)).expect("a valid reply");
        assert_eq!(
            out.changes,
            vec![
                StateChange::KvSet {
                    plugin: "seat".into(),
                    key: "k".into(),
                    value: "1".into()
                },
                StateChange::EndCall { user_id: 9 },
            ]
        );
        assert_eq!(out.notifications.len(), 1);
        assert_eq!(out.notifications[0].action(), "up");
        assert_eq!(out.notifications[0].target, Target::Room("r".into()));
        assert_eq!(out.notifications[0].subject, Some(7));
        assert_eq!(
            (out.plugin.as_str(), out.version.as_str()),
            ("seat", "1.0.0")
        );
    }

    #[test]
    fn a_malformed_notification_fails_the_whole_reply() {
        for body in ["not json", "[1]", r#"{"x":1}"#, r#"{"action":3}"#] {
            let failure = convert_reply("p", "1", reply("{}", vec![notify(body)])).expect_err(body);
            assert_eq!(failure.kind, FailureKind::MalformedEffect, "{body}");
        }
    }

    #[test]
    fn a_result_that_is_not_json_fails() {
        let failure = convert_reply("p", "1", reply("{oops", vec![])).expect_err("bad result");
        assert_eq!(failure.kind, FailureKind::MalformedEffect);
    }
}
