//! The frozen `chorus:plugin@1.1.0` world (`wit/v1.1/`): its bindings, its
//! imports (each delegating to the current world's implementation), and
//! the conversions between its values and the current ones.
//!
//! A 1.1 plugin sees exactly the 1.1 behaviour: every 1.1 item exists
//! unchanged in 1.2, so its effects map one to one; it has no `metrics`
//! import and cannot name `emit`.

use super::super::bindings::{chorus as now, types};
use super::super::view::PluginView;

/// The bindings of `chorus:plugin@1.1.0`.
pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit/v1.1",
        world: "plugin",
        imports: { default: async | trappable },
        exports: { default: async },
    });
}

use bindings::chorus::plugin as old;

impl old::types::Host for PluginView {}

impl old::room_state::Host for PluginView {
    async fn membership_of(
        &mut self,
        user_id: u64,
    ) -> wasmtime::Result<Option<old::types::Membership>> {
        let found = now::plugin::room_state::Host::membership_of(self, user_id).await?;
        Ok(found.map(|m| old::types::Membership {
            channel_name: m.channel_name,
            room_id: m.room_id,
            seat_id: m.seat_id,
        }))
    }

    async fn room_members(&mut self, channel_name: String) -> wasmtime::Result<Vec<u64>> {
        now::plugin::room_state::Host::room_members(self, channel_name).await
    }

    async fn room_seats(
        &mut self,
        channel_name: String,
    ) -> wasmtime::Result<Vec<old::types::Seat>> {
        let seats = now::plugin::room_state::Host::room_seats(self, channel_name).await?;
        Ok(seats
            .into_iter()
            .map(|s| old::types::Seat {
                id: s.id,
                user_id: s.user_id,
                status: s.status,
                microphone: s.microphone,
            })
            .collect())
    }

    async fn call_of(&mut self, user_id: u64) -> wasmtime::Result<Option<old::types::Call>> {
        let found = now::plugin::room_state::Host::call_of(self, user_id).await?;
        Ok(found.map(|c| old::types::Call {
            peer_id: c.peer_id,
            channel_name: c.channel_name,
        }))
    }

    async fn is_online(&mut self, user_id: u64) -> wasmtime::Result<bool> {
        now::plugin::room_state::Host::is_online(self, user_id).await
    }

    async fn room_attributes(
        &mut self,
        channel_name: String,
    ) -> wasmtime::Result<old::types::Attributes> {
        let a = now::plugin::room_state::Host::room_attributes(self, channel_name).await?;
        Ok(old::types::Attributes {
            version: a.version,
            entries: a.entries,
        })
    }
}

impl old::profiles::Host for PluginView {
    async fn get(&mut self, user_id: u64) -> wasmtime::Result<Option<String>> {
        now::plugin::profiles::Host::get(self, user_id).await
    }
}

impl old::kv::Host for PluginView {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        now::plugin::kv::Host::get(self, key).await
    }

    async fn entry(&mut self, key: String) -> wasmtime::Result<Option<old::kv::Versioned>> {
        let found = now::plugin::kv::Host::entry(self, key).await?;
        Ok(found.map(|v| old::kv::Versioned {
            value: v.value,
            version: v.version,
        }))
    }

    async fn keys(&mut self, prefix: String, limit: u32) -> wasmtime::Result<Vec<String>> {
        now::plugin::kv::Host::keys(self, prefix, limit).await
    }
}

impl old::config::Host for PluginView {
    async fn get(&mut self) -> wasmtime::Result<String> {
        now::plugin::config::Host::get(self).await
    }
}

impl old::clock::Host for PluginView {
    async fn now_ms(&mut self) -> wasmtime::Result<u64> {
        now::plugin::clock::Host::now_ms(self).await
    }
}

impl old::log::Host for PluginView {
    async fn log(&mut self, level: old::log::Level, message: String) -> wasmtime::Result<()> {
        use now::plugin::log::Level;
        let level = match level {
            old::log::Level::Trace => Level::Trace,
            old::log::Level::Debug => Level::Debug,
            old::log::Level::Info => Level::Info,
            old::log::Level::Warn => Level::Warn,
            old::log::Level::Error => Level::Error,
        };
        now::plugin::log::Host::log(self, level, message).await
    }
}

fn source_to_old(source: types::Source) -> old::types::Source {
    match source {
        types::Source::Client => old::types::Source::Client,
        types::Source::Server => old::types::Source::Server,
        types::Source::System => old::types::Source::System,
    }
}

fn source_from_old(source: old::types::Source) -> types::Source {
    match source {
        old::types::Source::Client => types::Source::Client,
        old::types::Source::Server => types::Source::Server,
        old::types::Source::System => types::Source::System,
    }
}

/// The 1.1 event for a current one (the same fields).
pub(crate) fn event(event: &types::Event) -> old::types::Event {
    old::types::Event {
        action: event.action.clone(),
        source: source_to_old(event.source),
        user_id: event.user_id,
        payload: event.payload.clone(),
    }
}

/// A 1.1 description in the current types.
pub(crate) fn description(described: old::types::Description) -> types::Description {
    types::Description {
        name: described.name,
        version: described.version,
        actions: described
            .actions
            .into_iter()
            .map(|a| types::ActionSpec {
                name: a.name,
                sources: a.sources.into_iter().map(source_from_old).collect(),
            })
            .collect(),
    }
}

/// A 1.1 error in the current types.
pub(crate) fn error(error: old::types::Error) -> types::Error {
    match error {
        old::types::Error::Rejected(r) => types::Error::Rejected(r),
        old::types::Error::Conflict(r) => types::Error::Conflict(r),
        old::types::Error::NotAllowed(r) => types::Error::NotAllowed(r),
        old::types::Error::Invalid(r) => types::Error::Invalid(r),
        old::types::Error::Missing(r) => types::Error::Missing(r),
    }
}

/// A 1.1 reply in the current types: every 1.1 effect has its 1.2 twin.
pub(crate) fn reply(reply: old::types::Reply) -> types::Reply {
    types::Reply {
        output: reply.output,
        effects: reply.effects.into_iter().map(effect).collect(),
    }
}

fn notification(n: old::types::Notification) -> types::Notification {
    types::Notification {
        target: match n.target {
            old::types::Target::User(id) => types::Target::User(id),
            old::types::Target::Room(channel) => types::Target::Room(channel),
            old::types::Target::Everyone => types::Target::Everyone,
        },
        body: n.body,
        subject: n.subject,
    }
}

fn effect(effect: old::types::Effect) -> types::Effect {
    use old::types::Effect as Old;
    use types::Effect as New;
    match effect {
        Old::JoinRoom(j) => New::JoinRoom(types::JoinRoom {
            user_id: j.user_id,
            channel_name: j.channel_name,
            room_id: j.room_id,
        }),
        Old::LeaveRoom(l) => New::LeaveRoom(types::LeaveRoom {
            user_id: l.user_id,
            channel_name: l.channel_name,
        }),
        Old::TakeSeat(t) => New::TakeSeat(types::TakeSeat {
            channel_name: t.channel_name,
            seat_id: t.seat_id,
            user_id: t.user_id,
        }),
        Old::FreeSeat(f) => New::FreeSeat(types::FreeSeat {
            channel_name: f.channel_name,
            user_id: f.user_id,
        }),
        Old::SetSeat(s) => New::SetSeat(types::SetSeat {
            channel_name: s.channel_name,
            seat_id: s.seat_id,
            status: s.status,
            microphone: s.microphone,
        }),
        Old::StartCall(c) => New::StartCall(types::StartCall {
            user_id: c.user_id,
            receiver_id: c.receiver_id,
            channel_name: c.channel_name,
        }),
        Old::EndCall(user_id) => New::EndCall(user_id),
        Old::KvSet(e) => New::KvSet(types::KvEntry {
            key: e.key,
            value: e.value,
        }),
        Old::KvDelete(key) => New::KvDelete(key),
        Old::KvPut(p) => New::KvPut(types::KvPut {
            key: p.key,
            value: p.value,
            if_version: p.if_version,
            ttl_ms: p.ttl_ms,
        }),
        Old::KvIncr(i) => New::KvIncr(types::KvIncr {
            key: i.key,
            delta: i.delta,
            ttl_ms: i.ttl_ms,
        }),
        Old::Notify(n) => New::Notify(notification(n)),
        Old::NotifyVia(r) => New::NotifyVia(types::RoutedNotification {
            notification: notification(r.notification),
            delivery: match r.delivery {
                old::types::Delivery::Configured => types::Delivery::Configured,
                old::types::Delivery::Broadcast => types::Delivery::Broadcast,
                old::types::Delivery::Relay => types::Delivery::Relay,
            },
        }),
        Old::SetTimer(t) => New::SetTimer(types::SetTimer {
            key: t.key,
            delay_ms: t.delay_ms,
            payload: t.payload,
            channel_name: t.channel_name,
        }),
        Old::CancelTimer(key) => New::CancelTimer(key),
        Old::SetRoomAttr(a) => New::SetRoomAttr(types::SetRoomAttr {
            channel_name: a.channel_name,
            key: a.key,
            value: a.value,
            if_version: a.if_version,
        }),
    }
}
