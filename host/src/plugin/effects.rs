//! Turning what a plugin returned into what the caller applies: WIT
//! effects into [`StateChange`]s, [`Notification`]s and [`AppEvent`]s,
//! WIT errors into [`CallError`]s.
//!
//! A reply is converted whole or not at all: one malformed effect fails
//! the call ([`FailureKind::MalformedEffect`]), so nothing of it is applied.

use serde_json::Value;

use super::bindings::types::{self, Effect};
use super::body::{Body, BodyError};
use super::error::{CallError, Failure, FailureKind};
use super::grants::{EffectGroup, Grants};
use super::{AppEvent, Notification, Reply, Target};
use crate::config::DeliveryMode;
use crate::store::{
    MAX_CHANNEL_NAME_BYTES, MAX_TIMER_DELAY_MS, MIN_TIMER_DELAY_MS, StateChange, TimerBounds,
};

/// What the host allows one plugin's replies beyond the contract's
/// shapes: its grants and the timer bounds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy<'a> {
    /// The plugin's `[grants]`.
    pub(crate) grants: &'a Grants,
    /// `plugins.max_timers_per_plugin` / `_per_room`.
    pub(crate) timer_bounds: TimerBounds,
}

/// Converts a successful WIT reply of plugin `plugin` at `version`.
pub(crate) fn convert_reply(
    plugin: &str,
    version: &str,
    reply: types::Reply,
    policy: Policy<'_>,
) -> Result<Reply, Failure> {
    let result = serde_json::from_str(&reply.output)
        .map_err(|e| malformed(format!("result is not JSON: {e}")))?;
    let mut out = Reply {
        result,
        changes: Vec::new(),
        notifications: Vec::new(),
        events: Vec::new(),
        plugin: plugin.to_string(),
        version: version.to_string(),
    };
    for (index, effect) in reply.effects.into_iter().enumerate() {
        if let Some(group) = group_of(&effect)
            && !policy.grants.effect(group)
        {
            return Err(ungranted(plugin, "effects", group.as_str()));
        }
        check_timer(&effect).map_err(|e| {
            Failure::shown(FailureKind::MalformedEffect, format!("effect {index}: {e}"))
        })?;
        match convert_effect(plugin, effect, policy.timer_bounds)
            .map_err(|e| malformed(format!("effect {index}: {e}")))?
        {
            Converted::Change(change) => out.changes.push(change),
            Converted::Notify(notification) => out.notifications.push(notification),
            Converted::Emit(event) => {
                if out.events.len() == MAX_EVENTS_PER_REPLY {
                    return Err(malformed(format!(
                        "effect {index}: more than {MAX_EVENTS_PER_REPLY} emitted events in one reply"
                    )));
                }
                out.events.push(event);
            }
        }
    }
    Ok(out)
}

/// One converted effect.
enum Converted {
    Change(StateChange),
    Notify(Notification),
    Emit(AppEvent),
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

/// A use of something the plugin is not granted: shown to the caller
/// (it names the operator's configuration, not the plugin's internals),
/// logged by the caller, and counted here.
/// `kind` is `effects` or `imports`, the list of `[grants]` that lacks
/// `grant`.
pub(crate) fn ungranted(plugin: &str, kind: &'static str, grant: &'static str) -> Failure {
    metrics::counter!("chorus_plugin_ungranted_total", "plugin" => plugin.to_string(), "kind" => kind, "grant" => grant)
        .increment(1);
    Failure::shown(
        FailureKind::Ungranted,
        format!(
            "plugin `{plugin}` is not granted `{grant}` (`{kind}` of [grants] in {plugin}.toml)"
        ),
    )
}

/// The grant an effect needs; `None` for notifications to a user or a
/// room, which need none.
fn group_of(effect: &Effect) -> Option<EffectGroup> {
    Some(match effect {
        Effect::JoinRoom(_)
        | Effect::LeaveRoom(_)
        | Effect::TakeSeat(_)
        | Effect::FreeSeat(_)
        | Effect::SetSeat(_) => EffectGroup::Seats,
        Effect::StartCall(_) | Effect::EndCall(_) => EffectGroup::Calls,
        Effect::KvSet(_) | Effect::KvDelete(_) | Effect::KvPut(_) | Effect::KvIncr(_) => {
            EffectGroup::Kv
        }
        Effect::SetTimer(_) | Effect::CancelTimer(_) => EffectGroup::Timers,
        Effect::SetRoomAttr(_) => EffectGroup::RoomAttributes,
        Effect::Emit(_) => EffectGroup::Events,
        Effect::Notify(types::Notification {
            target: types::Target::Everyone,
            ..
        })
        | Effect::NotifyVia(types::RoutedNotification {
            notification:
                types::Notification {
                    target: types::Target::Everyone,
                    ..
                },
            ..
        }) => EffectGroup::NotifyEveryone,
        Effect::Notify(_) | Effect::NotifyVia(_) => return None,
    })
}

/// The longest timer key, in bytes.
const MAX_TIMER_KEY_BYTES: usize = 256;
/// The largest timer payload, in bytes.
const MAX_TIMER_PAYLOAD_BYTES: usize = 64 * 1024;

/// Checks a `set-timer` against the contract's bounds (delay 100 ms ..=
/// 24 h, key 1 ..= 256 bytes, payload JSON of at most 64 KiB): an effect
/// outside them fails the call with 2002 and a reason the caller sees.
fn check_timer(effect: &Effect) -> Result<(), String> {
    let key = match effect {
        Effect::SetTimer(timer) => {
            let delay = timer.delay_ms;
            let range = i64::try_from(MIN_TIMER_DELAY_MS).unwrap_or(i64::MAX)
                ..=i64::try_from(MAX_TIMER_DELAY_MS).unwrap_or(i64::MAX);
            if !range.contains(&delay) {
                return Err(format!(
                    "timer delay {delay} ms is outside {MIN_TIMER_DELAY_MS} ..= {MAX_TIMER_DELAY_MS} ms (100 ms to 24 h)"
                ));
            }
            if timer.payload.len() > MAX_TIMER_PAYLOAD_BYTES {
                return Err(format!(
                    "timer payload is longer than {MAX_TIMER_PAYLOAD_BYTES} bytes"
                ));
            }
            if serde_json::from_str::<Value>(&timer.payload).is_err() {
                return Err("timer payload is not JSON".into());
            }
            if let Some(channel_name) = &timer.channel_name {
                check_channel_name(channel_name)?;
            }
            &timer.key
        }
        Effect::CancelTimer(key) => key,
        _ => return Ok(()),
    };
    if key.is_empty() || key.len() > MAX_TIMER_KEY_BYTES {
        return Err(format!(
            "timer key must be 1 ..= {MAX_TIMER_KEY_BYTES} bytes"
        ));
    }
    Ok(())
}

/// The largest seat `status` (PROTOCOL section 7: 0 free, 1 occupied,
/// 2 locked).
const MAX_SEAT_STATUS: u8 = 2;
/// The largest seat `microphone` (1 open, 0 closed).
const MAX_MICROPHONE: u8 = 1;

/// Checks what the contract fixes of an effect's values, so that a plugin
/// cannot put into shared state what no client may see (a seat status 7,
/// an empty room name): such an effect is malformed.
fn check_effect(effect: &Effect) -> Result<(), String> {
    let channel_name = match effect {
        Effect::JoinRoom(j) => &j.channel_name,
        Effect::LeaveRoom(l) => &l.channel_name,
        Effect::TakeSeat(t) => &t.channel_name,
        Effect::FreeSeat(f) => &f.channel_name,
        Effect::SetSeat(s) => &s.channel_name,
        Effect::StartCall(c) => &c.channel_name,
        Effect::SetRoomAttr(a) => &a.channel_name,
        Effect::Notify(types::Notification {
            target: types::Target::Room(channel_name),
            ..
        }) => channel_name,
        Effect::NotifyVia(types::RoutedNotification {
            notification:
                types::Notification {
                    target: types::Target::Room(channel_name),
                    ..
                },
            ..
        }) => channel_name,
        Effect::EndCall(_)
        | Effect::KvSet(_)
        | Effect::KvPut(_)
        | Effect::KvIncr(_)
        | Effect::KvDelete(_)
        | Effect::Notify(_)
        | Effect::NotifyVia(_)
        | Effect::SetTimer(_)
        | Effect::CancelTimer(_)
        | Effect::Emit(_) => {
            return Ok(());
        }
    };
    check_channel_name(channel_name)?;
    if let Effect::SetSeat(seat) = effect {
        if seat.status > MAX_SEAT_STATUS {
            return Err(format!("seat status {} is not 0, 1 or 2", seat.status));
        }
        if seat.microphone > MAX_MICROPHONE {
            return Err(format!("seat microphone {} is not 0 or 1", seat.microphone));
        }
    }
    Ok(())
}

/// A room name is 1 to 128 bytes.
fn check_channel_name(channel_name: &str) -> Result<(), String> {
    if channel_name.is_empty() {
        return Err("empty channel_name".into());
    }
    if channel_name.len() > MAX_CHANNEL_NAME_BYTES {
        return Err(format!(
            "channel_name is longer than {MAX_CHANNEL_NAME_BYTES} bytes"
        ));
    }
    Ok(())
}

/// One effect; `KvSet` and `KvDelete` get the plugin's name, so a plugin
/// only ever writes its own key-value space.
fn convert_effect(
    plugin: &str,
    effect: Effect,
    timer_bounds: TimerBounds,
) -> Result<Converted, String> {
    check_effect(&effect)?;
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
        Effect::SetTimer(timer) => StateChange::SetTimer {
            plugin: plugin.to_string(),
            key: timer.key,
            // Checked by `check_timer` to be 100 ..= 86400000.
            delay_ms: u64::try_from(timer.delay_ms).unwrap_or_default(),
            payload: timer.payload,
            channel_name: timer.channel_name,
            bounds: timer_bounds,
        },
        Effect::CancelTimer(key) => StateChange::CancelTimer {
            plugin: plugin.to_string(),
            key,
        },
        Effect::Notify(notification) => {
            return convert_notification(notification, None).map(Converted::Notify);
        }
        // Key and value bounds are the store's (`[rooms.attributes]`):
        // one over them refuses the batch as invalid, a plugin bug (2002).
        Effect::SetRoomAttr(attr) => StateChange::SetRoomAttr {
            channel_name: attr.channel_name,
            key: attr.key,
            value: attr.value,
            if_version: attr.if_version,
        },
        Effect::Emit(event) => return convert_app_event(event).map(Converted::Emit),
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

/// The most application events one reply may emit: each is written to
/// the webhooks outbox before the action is answered, so a reply of
/// thousands held its room for seconds (found in review).
pub(crate) const MAX_EVENTS_PER_REPLY: usize = 16;
/// The longest application event name, in bytes.
const MAX_EVENT_NAME_BYTES: usize = 64;
/// The largest application event body, in bytes (as the plugin wrote it).
const MAX_EVENT_BODY_BYTES: usize = 4096;

/// An `emit`, its name checked to be `[a-z][a-z0-9_.]*` of 1 to 64 bytes
/// and its body a JSON object of at most 4096 bytes.
fn convert_app_event(event: types::AppEvent) -> Result<AppEvent, String> {
    let mut bytes = event.name.bytes();
    let name_ok = event.name.len() <= MAX_EVENT_NAME_BYTES
        && bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.');
    if !name_ok {
        return Err(format!(
            "event name {:?} is not [a-z][a-z0-9_.]* of at most {MAX_EVENT_NAME_BYTES} bytes",
            event.name
        ));
    }
    if event.body.len() > MAX_EVENT_BODY_BYTES {
        return Err(format!(
            "event body is longer than {MAX_EVENT_BODY_BYTES} bytes"
        ));
    }
    match Body::parse_event(event.body) {
        Ok(body) => Ok(AppEvent {
            name: event.name,
            body,
        }),
        Err(BodyError::NotObject) => Err("event body is not a JSON object".into()),
        Err(BodyError::NotJson(e)) => Err(format!("event body is not JSON: {e}")),
    }
}

/// A notification, its body checked to be a JSON object with a string
/// `action`; `delivery` is the plugin's choice for a room target.
fn convert_notification(
    notification: types::Notification,
    delivery: Option<DeliveryMode>,
) -> Result<Notification, String> {
    let body = match Body::parse(notification.body) {
        Ok(body) => body,
        Err(BodyError::NotObject) => return Err("notification body is not a JSON object".into()),
        Err(BodyError::NotJson(e)) => return Err(format!("notification body is not JSON: {e}")),
    };
    if body.action().is_none() {
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

    fn policy() -> Policy<'static> {
        static GRANTS: std::sync::LazyLock<Grants> = std::sync::LazyLock::new(Grants::legacy);
        Policy {
            grants: &GRANTS,
            timer_bounds: TimerBounds {
                per_plugin: 10,
                per_room: 10,
            },
        }
    }

    /// Contract 1.1 bounds: a timer delay outside 100 ms ..= 24 h fails
    /// with a reason the caller sees; an ungranted group names its grant.
    #[test]
    fn timers_out_of_bounds_and_ungranted_effects_fail_with_a_shown_reason() {
        let timer = |delay_ms| {
            Effect::SetTimer(types::SetTimer {
                key: "k".into(),
                delay_ms,
                payload: "{}".into(),
                channel_name: None,
            })
        };
        let granted = Grants::from_config(r#"{"grants":{"effects":["timers"]}}"#).unwrap();
        let with = Policy {
            grants: &granted,
            ..policy()
        };
        for delay in [0, -5, 99, 86_400_001] {
            let failure = convert_reply("p", "1", reply("{}", vec![timer(delay)]), with)
                .expect_err("out of range");
            assert_eq!(failure.kind, FailureKind::MalformedEffect);
            assert!(failure.public.unwrap().contains("outside 100"), "{delay}");
        }
        let ok = convert_reply(
            "p",
            "1",
            reply("{}", vec![timer(100), timer(86_400_000)]),
            with,
        );
        assert_eq!(ok.expect("in range").changes.len(), 2);
        // The 1.0 default does not grant timers.
        let failure = convert_reply("p", "1", reply("{}", vec![timer(500)]), policy())
            .expect_err("ungranted");
        assert_eq!(failure.kind, FailureKind::Ungranted);
        assert!(failure.public.unwrap().contains("timers"));
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
        let out =
            convert_reply("seat", "1.0.0", reply("{}", effects), policy()).expect("a valid reply");
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
            let failure =
                convert_reply("p", "1", reply("{}", vec![notify(body)]), policy()).expect_err(body);
            assert_eq!(failure.kind, FailureKind::MalformedEffect, "{body}");
        }
    }

    /// Regression (issue 19, item 6): effects whose values the contract
    /// excludes (a seat status 7, microphone 2, an empty or 129-byte room
    /// name) were turned into state changes; they are malformed.
    #[test]
    fn effects_outside_the_contract_are_malformed() {
        let set_seat = |status, microphone| {
            Effect::SetSeat(types::SetSeat {
                channel_name: "r".into(),
                seat_id: 1,
                status,
                microphone,
            })
        };
        let leave = |channel_name: String| {
            Effect::LeaveRoom(types::LeaveRoom {
                user_id: 1,
                channel_name,
            })
        };
        for effect in [
            set_seat(3, 0),
            set_seat(0, 2),
            leave(String::new()),
            leave("r".repeat(129)),
            Effect::Notify(types::Notification {
                target: types::Target::Room(String::new()),
                body: r#"{"action":"x"}"#.into(),
                subject: None,
            }),
        ] {
            let failure =
                convert_reply("p", "1", reply("{}", vec![effect]), policy()).expect_err("refused");
            assert_eq!(failure.kind, FailureKind::MalformedEffect);
        }
        let ok = convert_reply(
            "p",
            "1",
            reply("{}", vec![set_seat(2, 1), leave("r".repeat(128))]),
            policy(),
        );
        assert_eq!(ok.expect("within the contract").changes.len(), 2);
    }

    /// Contract 1.2 `emit`: a name or body outside the bounds fails the
    /// whole reply as malformed; it needs the `events` grant (in the
    /// default, not in a `[grants]` table that omits it); a good one is
    /// carried in order.
    #[test]
    fn emitted_events_are_checked_granted_and_carried() {
        let emit = |name: &str, body: &str| {
            Effect::Emit(types::AppEvent {
                name: name.into(),
                body: body.into(),
            })
        };
        let granted = Grants::from_config(r#"{"grants":{"effects":["events"]}}"#).unwrap();
        let with = Policy {
            grants: &granted,
            ..policy()
        };
        let big = format!(r#"{{"x":"{}"}}"#, "a".repeat(4096));
        for (name, body) in [
            ("Gift.sent", "{}"),
            ("", "{}"),
            ("1gift", "{}"),
            ("gift-sent", "{}"),
            (&*"a".repeat(65), "{}"),
            ("gift.sent", "[1]"),
            ("gift.sent", "not json"),
            ("gift.sent", &*big),
        ] {
            let failure =
                convert_reply("p", "1", reply("{}", vec![emit(name, body)]), with).expect_err(name);
            assert_eq!(failure.kind, FailureKind::MalformedEffect, "{name} {body}");
        }
        let out = convert_reply(
            "p",
            "1",
            reply(
                "{}",
                vec![
                    emit("gift.sent", r#"{"num":2}"#),
                    notify(r#"{"action":"up"}"#),
                    emit(&"a".repeat(64), "{}"),
                ],
            ),
            with,
        )
        .expect("valid events");
        assert_eq!(out.events.len(), 2);
        assert_eq!(out.events[0].name, "gift.sent");
        // At most MAX_EVENTS_PER_REPLY in one reply (review: 6,000 held a
        // room for seconds while each was written to the outbox).
        let many = |n: usize| reply("{}", (0..n).map(|_| emit("e", "{}")).collect());
        assert!(convert_reply("p", "1", many(MAX_EVENTS_PER_REPLY), with).is_ok());
        let failure = convert_reply("p", "1", many(MAX_EVENTS_PER_REPLY + 1), with)
            .expect_err("one too many");
        assert_eq!(failure.kind, FailureKind::MalformedEffect);
        assert_eq!(out.events[0].body.to_map()["num"], 2);
        assert_eq!(out.notifications.len(), 1);
        assert!(convert_reply("p", "1", reply("{}", vec![emit("a", "{}")]), policy()).is_ok());
        let without = Grants::from_config(r#"{"grants":{"effects":["kv"]}}"#).unwrap();
        let without = Policy {
            grants: &without,
            ..policy()
        };
        let failure = convert_reply("p", "1", reply("{}", vec![emit("a", "{}")]), without)
            .expect_err("ungranted");
        assert_eq!(failure.kind, FailureKind::Ungranted);
        assert!(failure.public.unwrap().contains("events"));
    }

    #[test]
    fn a_result_that_is_not_json_fails() {
        let failure =
            convert_reply("p", "1", reply("{oops", vec![]), policy()).expect_err("bad result");
        assert_eq!(failure.kind, FailureKind::MalformedEffect);
    }

    mod properties {
        //! Property (issue 19, item 2): any reply a plugin can return
        //! converts whole or fails as a malformed effect, never panics,
        //! and what converts stays within the contract.

        use proptest::prelude::*;

        use super::*;

        fn text() -> impl Strategy<Value = String> {
            prop_oneof![
                3 => "[a-z_0-9]{1,10}",
                1 => ".{0,140}",
                1 => Just(String::new()),
                1 => "r{120,140}",
            ]
        }

        fn body() -> impl Strategy<Value = String> {
            prop_oneof![
                r#"\{"action":"[a-z_]{0,8}"(,"x":[0-9]{1,3})?\}"#,
                ".{0,40}",
                Just("{\"action\":7}".to_owned()),
                Just("[]".to_owned()),
                Just("{}".to_owned()),
            ]
        }

        fn target() -> impl Strategy<Value = types::Target> {
            prop_oneof![
                any::<u64>().prop_map(types::Target::User),
                text().prop_map(types::Target::Room),
                Just(types::Target::Everyone),
            ]
        }

        fn effect() -> impl Strategy<Value = Effect> {
            prop_oneof![
                (any::<u64>(), text(), any::<u64>()).prop_map(
                    |(user_id, channel_name, room_id)| {
                        Effect::JoinRoom(types::JoinRoom {
                            user_id,
                            channel_name,
                            room_id,
                        })
                    }
                ),
                (any::<u64>(), text()).prop_map(|(user_id, channel_name)| {
                    Effect::LeaveRoom(types::LeaveRoom {
                        user_id,
                        channel_name,
                    })
                }),
                (text(), any::<u32>(), any::<u64>()).prop_map(
                    |(channel_name, seat_id, user_id)| {
                        Effect::TakeSeat(types::TakeSeat {
                            channel_name,
                            seat_id,
                            user_id,
                        })
                    }
                ),
                (text(), any::<u64>()).prop_map(|(channel_name, user_id)| {
                    Effect::FreeSeat(types::FreeSeat {
                        channel_name,
                        user_id,
                    })
                }),
                (text(), any::<u32>(), any::<u8>(), any::<u8>()).prop_map(
                    |(channel_name, seat_id, status, microphone)| {
                        Effect::SetSeat(types::SetSeat {
                            channel_name,
                            seat_id,
                            status,
                            microphone,
                        })
                    }
                ),
                (any::<u64>(), any::<u64>(), text()).prop_map(
                    |(user_id, receiver_id, channel_name)| {
                        Effect::StartCall(types::StartCall {
                            user_id,
                            receiver_id,
                            channel_name,
                        })
                    }
                ),
                any::<u64>().prop_map(Effect::EndCall),
                (text(), text())
                    .prop_map(|(key, value)| Effect::KvSet(types::KvEntry { key, value })),
                text().prop_map(Effect::KvDelete),
                (target(), body(), any::<Option<u64>>()).prop_map(|(target, body, subject)| {
                    Effect::Notify(types::Notification {
                        target,
                        body,
                        subject,
                    })
                }),
            ]
        }

        fn channel_ok(name: &str) -> bool {
            !name.is_empty() && name.len() <= 128
        }

        proptest! {
            #![proptest_config(ProptestConfig {
                cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(512),
                failure_persistence: None,
                ..ProptestConfig::default()
            })]

            #[test]
            fn any_reply_converts_whole_or_is_malformed(
                output in prop_oneof![Just("{}".to_owned()), Just("null".to_owned()), ".{0,20}"],
                effects in prop::collection::vec(effect(), 0..8),
            ) {
                let count = effects.len();
                match convert_reply("p", "1.0.0", reply(&output, effects), policy()) {
                    Ok(out) => {
                        prop_assert_eq!(out.changes.len() + out.notifications.len(), count);
                        for change in &out.changes {
                            match change {
                                StateChange::JoinRoom { channel_name, .. }
                                | StateChange::LeaveRoom { channel_name, .. }
                                | StateChange::TakeSeat { channel_name, .. }
                                | StateChange::FreeSeat { channel_name, .. }
                                | StateChange::StartCall { channel_name, .. } => {
                                    prop_assert!(channel_ok(channel_name));
                                }
                                StateChange::SetSeat { channel_name, status, microphone, .. } => {
                                    prop_assert!(channel_ok(channel_name));
                                    prop_assert!(*status <= 2 && *microphone <= 1);
                                }
                                StateChange::KvSet { plugin, .. } | StateChange::KvDelete { plugin, .. } => {
                                    prop_assert_eq!(plugin, "p");
                                }
                                _ => {}
                            }
                        }
                        for notification in &out.notifications {
                            prop_assert!(notification.body.action().is_some());
                            if let Target::Room(channel_name) = &notification.target {
                                prop_assert!(channel_ok(channel_name));
                            }
                        }
                    }
                    Err(failure) => prop_assert_eq!(failure.kind, FailureKind::MalformedEffect),
                }
            }
        }
    }
}
