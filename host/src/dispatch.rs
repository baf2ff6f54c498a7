//! Running an action: route it to its plugin, apply the reply's state
//! changes as one batch, then deliver its notifications and hand on the
//! application events it emitted (contract 1.2 `emit`,
//! [`Dispatcher::hand_on_events`]).
//!
//! Events of one room are serialized by a per-room lock held across the
//! plugin call, the batch and the hand-off to delivery, so notifications
//! leave in the order the state changed, and a plugin's reads are not
//! invalidated by a concurrent call of the same room on this node. The
//! store's batch conditions (a seat must be free, …) still decide between
//! nodes.
//!
//! Layer: above `plugin`, `store` and `delivery`; below `app`, `session`
//! and `http`, which call [`Dispatcher::run_action`] and
//! [`Dispatcher::raise`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};
use tracing::Instrument;

use crate::bounds::Bounds;
use crate::config::ActionRule;
use crate::delivery::{Delivery, Outgoing};
use crate::ids::IdGen;
use crate::plugin::{AppEvent, CallError, Event, LoadedPlugin, PluginHost, Reply, Source, Target};
use crate::store::{ApplyError, DueTimer, LogEntry, Position, StateChange, Store, StoreError};
use chorus_protocol::codes::ErrorCode;

/// Who and where an action is about, for the events its plugin emits: the
/// event's user (a client's connection, a system event's subject), else
/// the payload's `user_id` (the app backend's), else the subject of the
/// reply's first notification; and the payload's `channel_name`.
#[derive(Debug, Clone, Default)]
struct Subject {
    user_id: Option<u64>,
    channel_name: Option<String>,
}

/// The [`Subject`] of `event`.
fn subject_of(event: &Event) -> Subject {
    Subject {
        user_id: event
            .user_id
            .or_else(|| event.payload.get("user_id").and_then(Value::as_u64)),
        channel_name: event
            .payload
            .get("channel_name")
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty())
            .map(str::to_string),
    }
}

/// What a successful action returns.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    /// The ids of the notifications it produced.
    pub msg_ids: Vec<String>,
    /// The plugin's result object.
    pub result: Value,
    /// The callers of the calls the action started (`start-call`
    /// effects applied), for the ring timeout (`app::calls`).
    #[serde(skip)]
    pub calls_started: Vec<u64>,
}

/// Why an action failed; nothing of it was applied.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code:?}: {reason}")]
pub struct ActionError {
    /// The protocol error code.
    pub code: ErrorCode,
    /// Shown to the caller; never holds a plugin's internals.
    pub reason: String,
}

impl ActionError {
    /// An error with a code and reason.
    pub fn new(code: ErrorCode, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }
}

impl From<CallError> for ActionError {
    /// The code is the plugin error's own ([`CallError::error_code`]); a
    /// broken plugin's details are logged by the runtime, never shown.
    fn from(e: CallError) -> Self {
        let reason = match &e {
            // An import could not read the state (Redis down, paused or
            // slow): the store failed, not the plugin.
            CallError::Failed(f) if f.kind == crate::plugin::FailureKind::Store => {
                "state store unavailable; nothing was applied".to_string()
            }
            CallError::Failed(f) => match &f.public {
                Some(public) => {
                    format!("the action's plugin failed: {public}; nothing was applied")
                }
                None => "the action's plugin failed; nothing was applied".to_string(),
            },
            refusal => refusal.public_reason().to_string(),
        };
        Self::new(e.error_code(), reason)
    }
}

impl From<ApplyError> for ActionError {
    fn from(e: ApplyError) -> Self {
        match e {
            ApplyError::Conflict(r) => Self::new(ErrorCode::Conflict, r),
            ApplyError::NotAllowed(r) => Self::new(ErrorCode::NotAllowed, r),
            ApplyError::Invalid(r) => {
                tracing::warn!(reason = r, "plugin returned an invalid state change");
                Self::new(
                    ErrorCode::PluginFailed,
                    "the action's plugin failed; nothing was applied",
                )
            }
            ApplyError::UserBack(user) => Self::new(
                ErrorCode::Conflict,
                format!("user {user} is connected again"),
            ),
            ApplyError::Stale(r) => Self::new(
                ErrorCode::Conflict,
                format!(
                    "state changed concurrently too many times in a row (plugins.stale_retries): {r}"
                ),
            ),
            ApplyError::Store(e) if e.outcome_unknown() => {
                tracing::error!(error = %e, "state store did not confirm a batch; it may have been applied");
                metrics::counter!("chorus_store_outcome_unknown_total").increment(1);
                Self::new(
                    ErrorCode::OutcomeUnknown,
                    "the state store did not confirm the change in time; it may have been applied: read the state before retrying",
                )
            }
            ApplyError::Store(e) => e.into(),
        }
    }
}

impl From<StoreError> for ActionError {
    /// PROTOCOL section 4 has no code of its own for a store outage; 2002
    /// ("nothing was applied", HTTP 503) is the one that says what
    /// happened, with a reason that names the store, never the plugin.
    /// The cause is logged, never shown.
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "state store unavailable");
        Self::new(
            ErrorCode::PluginFailed,
            "state store unavailable; nothing was applied",
        )
    }
}

/// Why a call and its batch did not apply, before it becomes an
/// [`ActionError`]: a timer whose call never ran is put back.
#[derive(Debug)]
enum Refusal {
    /// The plugin call failed or refused.
    Call(CallError),
    /// The batch was refused.
    Apply(ApplyError),
}

impl Refusal {
    /// Whether the plugin never ran (see [`crate::plugin::FailureKind::never_ran`]).
    fn never_ran(&self) -> bool {
        matches!(self, Refusal::Call(CallError::Failed(f)) if f.kind.never_ran())
    }
}

impl From<Refusal> for ActionError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Call(e) => e.into(),
            Refusal::Apply(e) => e.into(),
        }
    }
}

/// One async mutex per room with work in flight; entries are dropped when
/// no one holds or waits for them, so the map stays as small as the set of
/// busy rooms.
#[derive(Debug, Default)]
pub struct RoomLocks {
    /// channel -> its lock.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl RoomLocks {
    /// Holds the room's lock until the guard drops.
    pub async fn lock(&self, channel: &str) -> RoomGuard<'_> {
        let lock = {
            let mut map = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(map.entry(channel.to_string()).or_default())
        };
        let guard = Arc::clone(&lock).lock_owned().await;
        RoomGuard {
            locks: self,
            channel: channel.to_string(),
            lock,
            guard: Some(guard),
        }
    }
}

/// Releases a room lock and forgets it when it was the last user.
pub struct RoomGuard<'a> {
    locks: &'a RoomLocks,
    channel: String,
    lock: Arc<tokio::sync::Mutex<()>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for RoomGuard<'_> {
    fn drop(&mut self) {
        self.guard.take();
        let mut map = self.locks.locks.lock().unwrap_or_else(|p| p.into_inner());
        // Two references remain when nobody else holds or waits: the map's
        // and ours.
        if Arc::strong_count(&self.lock) == 2 {
            map.remove(&self.channel);
        }
    }
}

/// Runs actions and system events: route, per-room lock, plugin call,
/// one atomic batch, then delivery in order.
pub struct Dispatcher {
    /// The loaded plugins.
    plugins: Arc<PluginHost>,
    /// Where the batches are applied.
    store: Arc<dyn Store>,
    /// Where the notifications go.
    delivery: Arc<Delivery>,
    /// Per-room ordering of actions on this node.
    room_locks: RoomLocks,
    /// Mints the `msg_id` of each notification.
    ids: Arc<IdGen>,
    /// The operator's `[actions.<name>]` rules, applied before routing.
    rules: HashMap<String, ActionRule>,
    /// The most bytes of each string field, checked before any plugin.
    bounds: Bounds,
    /// Re-runs of a stale batch before 2003 (`plugins.stale_retries`).
    stale_retries: u32,
    /// Woken when a batch scheduled a timer, so the timer task
    /// (`app::timers`) looks again at the earliest due time.
    timers_changed: Arc<tokio::sync::Notify>,
    /// Most members listed in a `room_state` (`recovery.snapshot_members`).
    snapshot_members: usize,
    /// Events to the app backend, for the events plugins emit
    /// ([`crate::webhooks::Webhooks::record_plugin_event`]).
    webhooks: Option<Arc<crate::webhooks::Webhooks>>,
    /// System events' plugin calls running now ([`SYSTEM_EVENTS_AT_ONCE`]).
    system_slots: tokio::sync::Semaphore,
}

/// The system event a due timer is delivered as (contract 1.1).
pub const TIMER_EVENT: &str = "timer";

impl Dispatcher {
    /// A dispatcher over these parts, applying `rules` (`[actions]`) and
    /// `bounds` (`limits.fields`, `limits.string_bytes`).
    pub fn new(
        plugins: Arc<PluginHost>,
        store: Arc<dyn Store>,
        delivery: Arc<Delivery>,
        ids: Arc<IdGen>,
        rules: HashMap<String, ActionRule>,
        bounds: Bounds,
        stale_retries: u32,
    ) -> Self {
        Self {
            plugins,
            store,
            delivery,
            room_locks: RoomLocks::default(),
            ids,
            rules,
            bounds,
            stale_retries,
            timers_changed: Arc::new(tokio::sync::Notify::new()),
            snapshot_members: crate::config::RecoveryConfig::default().snapshot_members,
            webhooks: None,
            system_slots: tokio::sync::Semaphore::new(SYSTEM_EVENTS_AT_ONCE),
        }
    }

    /// The bound on system events' store work at once
    /// ([`SYSTEM_EVENTS_AT_ONCE`] permits).
    pub fn system_slots(&self) -> &tokio::sync::Semaphore {
        &self.system_slots
    }

    /// Takes the lock of room `channel` on this node, as an action in it
    /// would. For tests: holding it stops a disconnect of one of its
    /// members right before its plugin calls.
    pub async fn lock_room(&self, channel: &str) -> RoomGuard<'_> {
        self.room_locks.lock(channel).await
    }

    /// The same dispatcher recording plugin-emitted events into `webhooks`.
    pub fn with_webhooks(mut self, webhooks: Option<Arc<crate::webhooks::Webhooks>>) -> Self {
        self.webhooks = webhooks;
        self
    }

    /// The webhooks, when on: a plugin's `emit` effect (contract 1.2) is
    /// recorded with [`crate::webhooks::Webhooks::record_plugin_event`]
    /// before the action is answered.
    pub fn webhooks(&self) -> Option<&Arc<crate::webhooks::Webhooks>> {
        self.webhooks.as_ref()
    }

    /// The same dispatcher listing at most `limit` members in a
    /// `room_state` (`recovery.snapshot_members`).
    pub fn with_snapshot_members(mut self, limit: usize) -> Self {
        self.snapshot_members = limit;
        self
    }

    /// The room locks of this node: a resume reads its snapshot under the
    /// room's lock, so no notification of the room is between stamped and
    /// queued meanwhile.
    pub fn room_locks(&self) -> &RoomLocks {
        &self.room_locks
    }

    /// The string bounds in force, for requests that reach no plugin (a
    /// kick's reason).
    pub fn bounds(&self) -> &Bounds {
        &self.bounds
    }

    /// The plugin serving `action` from `source`, unless no plugin
    /// declares that source or the operator's rule for the action does
    /// not list it: both are the same 1007, so a client cannot tell a
    /// narrowed action from an absent one.
    fn route(&self, action: &str, source: Source) -> Result<Arc<LoadedPlugin>, ActionError> {
        let narrowed = self
            .rules
            .get(action)
            .is_some_and(|rule| !rule.allows(source.as_str()));
        let plugin = if narrowed {
            None
        } else {
            self.plugins.route(action, source)
        };
        plugin.ok_or_else(|| {
            ActionError::new(ErrorCode::UnknownAction, format!("unknown action {action}"))
        })
    }

    /// Notified whenever a batch scheduled a timer.
    pub fn timers_changed(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.timers_changed)
    }

    /// Runs `action` from `source`. `user_id` is the subject for client
    /// and system events. Errors: 1007 when no plugin serves the action
    /// from this source (or `[actions]` does not allow it); 1001 when a
    /// string is over its bound (`bounds`); the plugin's own refusals (1001, 1002, 2001,
    /// 2003, 2004); 2002 when the plugin broke or the store is down.
    /// Nothing is applied on any error.
    pub async fn run_action(
        &self,
        source: Source,
        user_id: Option<u64>,
        action: &str,
        payload: Map<String, Value>,
    ) -> Result<Outcome, ActionError> {
        let span = tracing::info_span!(
            "chorus.dispatch.action",
            action,
            source = source.as_str(),
            user_id,
            channel_name = tracing::field::Empty,
            plugin = tracing::field::Empty,
            plugin_version = tracing::field::Empty,
        );
        self.run_action_in(source, user_id, action, payload)
            .instrument(span)
            .await
    }

    async fn run_action_in(
        &self,
        source: Source,
        user_id: Option<u64>,
        action: &str,
        payload: Map<String, Value>,
    ) -> Result<Outcome, ActionError> {
        // Every string bounded before a plugin sees it (issue 21), the
        // action's own name before it is routed.
        self.bounds
            .check_field("action", action)
            .map_err(|e| ActionError::new(ErrorCode::MalformedFrame, e.0))?;
        let plugin = self.route(action, source)?;
        self.bounds
            .check(&payload)
            .map_err(|e| ActionError::new(ErrorCode::MalformedFrame, e.0))?;
        let span = tracing::Span::current();
        span.record("plugin", plugin.name());
        span.record("plugin_version", plugin.version());
        let channel = self.lock_key(user_id, &payload).await;
        if let Some(c) = &channel {
            span.record("channel_name", c.as_str());
        }
        let _room = match &channel {
            Some(c) => Some(self.room_locks.lock(c).await),
            None => None,
        };
        let event = Event {
            action: action.to_string(),
            source,
            user_id,
            payload,
        };
        self.call_and_commit(&plugin, event).await
    }

    /// Calls the plugin and commits its reply; a batch refused as stale (a
    /// `kv-put` whose version another call changed meanwhile) re-runs the
    /// whole call on fresh state, at most `plugins.stale_retries` times, then
    /// fails with 2003. Nothing of a stale attempt was applied.
    async fn call_and_commit(
        &self,
        plugin: &Arc<LoadedPlugin>,
        event: Event,
    ) -> Result<Outcome, ActionError> {
        self.try_call_and_commit(plugin, event, None)
            .await
            .map_err(ActionError::from)
    }

    /// [`Dispatcher::call_and_commit`], keeping apart why it failed;
    /// `condition` (a [`StateChange::UserOffline`]) goes first in the
    /// reply's batch, so the batch applies only if it holds.
    async fn try_call_and_commit(
        &self,
        plugin: &Arc<LoadedPlugin>,
        event: Event,
        condition: Option<&StateChange>,
    ) -> Result<Outcome, Refusal> {
        let mut attempt = 0;
        loop {
            let mut reply = self
                .call(plugin, event.clone())
                .await
                .map_err(Refusal::Call)?;
            if let Some(condition) = condition {
                reply.changes.insert(0, condition.clone());
            }
            let result = reply.result.clone();
            let calls_started = reply
                .changes
                .iter()
                .filter_map(|change| match change {
                    StateChange::StartCall { user_id, .. } => Some(*user_id),
                    _ => None,
                })
                .collect();
            match self.commit(reply, &event).await {
                Ok(msg_ids) => {
                    return Ok(Outcome {
                        msg_ids,
                        result,
                        calls_started,
                    });
                }
                Err(ApplyError::Stale(reason)) if attempt < self.stale_retries => {
                    attempt += 1;
                    metrics::counter!("chorus_plugin_stale_reruns_total", "plugin" => plugin.name().to_string())
                        .increment(1);
                    tracing::debug!(attempt, reason, "stale batch; re-running the call");
                    // Jittered back-off (1..=4 ms per attempt) so writers
                    // that collided do not collide again in lockstep.
                    let jitter = rand::random_range(1..=4u64);
                    tokio::time::sleep(std::time::Duration::from_millis(
                        jitter * u64::from(attempt),
                    ))
                    .await;
                }
                Err(e) => return Err(Refusal::Apply(e)),
            }
        }
    }

    /// One plugin call in its own span.
    async fn call(&self, plugin: &Arc<LoadedPlugin>, event: Event) -> Result<Reply, CallError> {
        let span = tracing::info_span!(
            "chorus.plugin.call",
            plugin = plugin.name(),
            plugin_version = plugin.version(),
            action = event.action.as_str(),
        );
        self.plugins.call(plugin, event).instrument(span).await
    }

    /// Applies a reply's state changes as one batch, then delivers its
    /// notifications in order (each under a new `msg_id`); the ids, in
    /// order. A refused batch delivers nothing and emits nothing. A
    /// delivery that fails after the batch applied is logged: the state
    /// changed and is not undone. The reply's application events are
    /// handed on last ([`Dispatcher::hand_on_events`]).
    ///
    /// Room and point-to-point notifications are logged in their stream's
    /// history in the same atomic step as the batch (issue 17), which
    /// stamps each with its `epoch` and `seq`; a user who joined a room
    /// gets a `room_state` frame after them.
    async fn commit(&self, reply: Reply, event: &Event) -> Result<Vec<String>, ApplyError> {
        let changes = reply.changes.len();
        // Only a reply that emits needs its subject (not every call).
        let subject = (!reply.events.is_empty()).then(|| {
            let mut subject = subject_of(event);
            // A request that names no user (the app backend's gift names
            // its sender inside `gift`): the user the plugin's first
            // notification is about.
            if subject.user_id.is_none() {
                subject.user_id = reply.notifications.iter().find_map(|n| n.subject);
            }
            subject
        });
        let outgoing: Vec<Outgoing> = reply
            .notifications
            .into_iter()
            .map(|n| {
                let mut out = Outgoing::prepare(n, &self.ids.msg_id());
                // Marked before it is logged: a resume does not replay
                // what only a delegate got live.
                if self.delivery.relays(&out) {
                    crate::delivery::mark_relayed(&mut out.frame);
                }
                out
            })
            .collect();
        let mut logged = Vec::new();
        let log: Vec<LogEntry> = outgoing
            .iter()
            .enumerate()
            .filter_map(|(i, out)| {
                let stream = out.stream()?;
                logged.push(i);
                Some(LogEntry {
                    stream,
                    frame: out.frame.clone(),
                })
            })
            .collect();
        let stamps = self
            .store
            .apply_logged(&reply.changes, &log)
            .instrument(tracing::info_span!("chorus.store.apply", changes))
            .await?;
        let scheduled = reply
            .changes
            .iter()
            .filter(|c| matches!(c, StateChange::SetTimer { .. }))
            .count();
        if scheduled > 0 {
            metrics::counter!("chorus_timers_scheduled_total", "plugin" => reply.plugin.clone())
                .increment(scheduled as u64);
            self.timers_changed.notify_one();
        }
        let mut outgoing = outgoing;
        for (i, stamped) in logged.into_iter().zip(stamps) {
            outgoing[i].frame = stamped.frame;
        }
        let mut msg_ids = Vec::with_capacity(outgoing.len());
        for out in outgoing {
            let msg_id = out.msg_id.clone();
            if let Err(e) = self.delivery.deliver_outgoing(out).await {
                tracing::error!(error = %e, msg_id, "delivery failed after the state changed");
            }
            msg_ids.push(msg_id);
        }
        let mut attrs_changed: Vec<&str> = Vec::new();
        for change in &reply.changes {
            if let StateChange::SetRoomAttr { channel_name, .. }
            | StateChange::ClearRoomAttrs { channel_name, .. } = change
                && !attrs_changed.contains(&channel_name.as_str())
            {
                attrs_changed.push(channel_name);
            }
        }
        for channel in attrs_changed {
            self.announce_room_attrs(channel).await;
        }
        self.send_room_states(&reply.changes).await;
        if let Some(subject) = subject {
            self.hand_on_events(&reply.plugin, reply.events, subject)
                .await?;
        }
        Ok(msg_ids)
    }

    /// THE place where a plugin's application events (contract 1.2
    /// `emit`) leave the dispatcher, once per committed reply that emits, after its
    /// batch applied and its notifications went out, and before the
    /// action is answered; a refused or stale batch never gets here, so a
    /// re-run call emits once. Each is counted
    /// (`chorus_plugin_events_emitted_total{plugin}`) and, with
    /// `[[webhooks]]` configured, recorded in the outbox as
    /// `plugin.<plugin>.<name>` (issue 16) with the action's subject. An
    /// event that could not be recorded makes the answer 2005: the batch
    /// stands, the event may be lost (`chorus_webhook_record_failed_total`
    /// counts it like a state change's).
    async fn hand_on_events(
        &self,
        plugin: &str,
        events: Vec<AppEvent>,
        subject: Subject,
    ) -> Result<(), ApplyError> {
        metrics::counter!("chorus_plugin_events_emitted_total", "plugin" => plugin.to_string())
            .increment(events.len() as u64);
        let Some(webhooks) = &self.webhooks else {
            for event in events {
                tracing::debug!(plugin, event = %event.name, "plugin emitted an application event; no [[webhooks]] to send it to");
            }
            return Ok(());
        };
        for event in events {
            let recorded = webhooks
                .record_plugin_event(
                    plugin,
                    &event.name,
                    subject.user_id,
                    subject.channel_name.as_deref(),
                    event.body.as_str(),
                )
                .await;
            if let Err(e) = recorded {
                tracing::error!(plugin, event = %event.name, error = %e, "an emitted event was not recorded after the batch applied");
                metrics::counter!("chorus_webhook_record_failed_total").increment(1);
                return Err(ApplyError::Store(StoreError::Outbox(e.to_string())));
            }
        }
        Ok(())
    }

    /// Tells a room's members its attributes changed (issue 17): one
    /// `room_attributes` frame, `{"action":"room_attributes",
    /// "channel_name","version","attributes":{…},"msg_id","epoch","seq"}`,
    /// logged in the room's history and broadcast whatever the delivery
    /// mode. It carries the whole set as read after the write, so a client
    /// keeps the one with the highest `version`. The caller holds the
    /// room's lock. A store failure is logged: the write stays.
    pub async fn announce_room_attrs(&self, channel: &str) {
        let attrs = match self.store.room_attrs(channel).await {
            Ok(attrs) => attrs,
            Err(e) => {
                tracing::warn!(error = %e, channel, "room_attributes not sent");
                return;
            }
        };
        let entries: Map<String, Value> = attrs
            .entries
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        let mut body = Map::new();
        body.insert("action".into(), Value::from(ROOM_ATTRIBUTES));
        body.insert("channel_name".into(), Value::from(channel));
        body.insert("version".into(), Value::from(attrs.version));
        body.insert("attributes".into(), Value::Object(entries));
        let notification = crate::plugin::Notification {
            target: Target::Room(channel.to_string()),
            body: crate::plugin::Body::from_map(body),
            subject: None,
            delivery: Some(crate::config::DeliveryMode::Broadcast),
        };
        let mut out = Outgoing::prepare(notification, &self.ids.msg_id());
        let entry = LogEntry {
            stream: crate::store::Stream::Room(channel.to_string()),
            frame: out.frame.clone(),
        };
        match self.store.apply_logged(&[], &[entry]).await {
            Ok(mut stamps) => {
                if let Some(stamped) = stamps.pop() {
                    out.frame = stamped.frame;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, channel, "room_attributes not logged");
                return;
            }
        }
        if let Err(e) = self.delivery.deliver_outgoing(out).await {
            tracing::warn!(error = %e, channel, "room_attributes not delivered");
        }
    }

    /// Sends `room_state` to each user a batch made join a room (issue
    /// 17), after the batch's notifications: the snapshot is read after
    /// they were logged, so its `seq` is at or past theirs and the client
    /// applies only room notifications with a greater `seq`.
    async fn send_room_states(&self, changes: &[StateChange]) {
        for change in changes {
            let StateChange::JoinRoom {
                user_id,
                channel_name,
                ..
            } = change
            else {
                continue;
            };
            let frame = match room_state_frame(
                self.store.as_ref(),
                channel_name,
                *user_id,
                self.snapshot_members,
            )
            .await
            {
                Ok(Some((frame, _))) => frame,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, user_id, "room_state not sent");
                    continue;
                }
            };
            let out = Outgoing {
                target: Target::User(*user_id),
                action: ROOM_STATE.to_string(),
                subject: None,
                delivery: None,
                msg_id: self.ids.msg_id(),
                frame,
            };
            if let Err(e) = self.delivery.deliver_outgoing(out).await {
                tracing::warn!(error = %e, user_id, "room_state not delivered");
            }
        }
    }

    /// The room whose lock an event takes: the payload's channel, else the
    /// subject's current room.
    async fn lock_key(&self, user_id: Option<u64>, payload: &Map<String, Value>) -> Option<String> {
        match payload.get("channel_name").and_then(Value::as_str) {
            Some(c) if !c.is_empty() => Some(c.to_string()),
            _ => {
                let user = user_id?;
                self.store
                    .membership_of(user)
                    .await
                    .ok()
                    .flatten()
                    .map(|m| m.channel_name)
            }
        }
    }

    /// Raises a system event about `user_id` for every plugin that
    /// subscribes to it (PROTOCOL section 10); one failing plugin does not
    /// keep the others from running.
    pub async fn raise(&self, event: &str, user_id: u64) {
        self.raise_with(event, user_id, Map::new()).await
    }

    /// [`Dispatcher::raise`] with more fields in the event's payload
    /// (`user_id` is always the subject's).
    pub async fn raise_with(&self, event: &str, user_id: u64, fields: Map<String, Value>) {
        let span = tracing::info_span!("chorus.dispatch.system", event, user_id);
        self.raise_in(event, user_id, fields, false)
            .instrument(span)
            .await;
    }

    /// [`Dispatcher::raise`] for a user who may be coming back (a grace
    /// that ended, a dead node's user): each plugin's batch carries the
    /// condition [`StateChange::UserOffline`], so it applies only while the
    /// user is connected nowhere, in the same atomic step, whichever node
    /// the user came back to. Stops at the first batch refused for that
    /// (false); what earlier plugins did stands. True when every
    /// subscriber ran (or failed on its own).
    pub async fn raise_while_offline(&self, event: &str, user_id: u64) -> bool {
        let span = tracing::info_span!("chorus.dispatch.system", event, user_id);
        self.raise_in(event, user_id, Map::new(), true)
            .instrument(span)
            .await
    }

    async fn raise_in(
        &self,
        event: &str,
        user_id: u64,
        fields: Map<String, Value>,
        while_offline: bool,
    ) -> bool {
        let condition = while_offline.then_some(StateChange::UserOffline { user_id });
        for plugin in self.plugins.subscribers(event) {
            let mut payload = fields.clone();
            payload.insert("user_id".into(), Value::from(user_id));
            let channel = {
                let _slot = self.system_slots.acquire().await;
                self.lock_key(Some(user_id), &payload).await
            };
            let _room = match &channel {
                Some(c) => Some(self.room_locks.lock(c).await),
                None => None,
            };
            // Taken after the room's lock: a flow waiting for a busy room
            // holds no slot that other rooms' flows could use.
            let _slot = self.system_slots.acquire().await;
            let call = Event {
                action: event.to_string(),
                source: Source::System,
                user_id: Some(user_id),
                payload,
            };
            match self
                .try_call_and_commit(&plugin, call, condition.as_ref())
                .await
            {
                Ok(_) => {}
                Err(Refusal::Apply(ApplyError::UserBack(_))) => return false,
                Err(refusal) => {
                    let e = ActionError::from(refusal);
                    tracing::warn!(event, user_id, plugin = plugin.name(), error = %e, "system event failed");
                }
            }
        }
        true
    }
}

/// Most steps of system events (`disconnected`, the ring timeout) that
/// use the store running at once on a node: a plugin call (its slot taken
/// after its room's lock, so a flow waiting for a busy room holds none),
/// and, in a disconnect, each of its reads and writes around the calls
/// ([`Dispatcher::system_slots`]). The rest wait their turn, in order.
/// Measured in the reconnect storm (issue 20 item 4): 19,000 users
/// dropping at once on Redis ran 19,000 disconnects at once, whose store
/// reads queued past the plugins' 50 ms deadline, and 10,922 users were
/// removed from their rooms without an `exit_room` (3 runs); bounding only
/// the plugin calls still let the disconnects' own reads flood Redis (313
/// calls past their deadline in 2 runs); see BENCHMARKS.md.
pub const SYSTEM_EVENTS_AT_ONCE: usize = 32;

impl Dispatcher {
    /// Fires a claimed timer (contract 1.1): the `timer` system event,
    /// handled by the version of its plugin live now, under its room's
    /// lock, through the same call path as any event (deadline, breaker,
    /// stale re-runs, one batch, delivery). A timer whose plugin is gone,
    /// or no longer lists `timer`, is dropped and counted. It was claimed
    /// already: it does not fire again, unless its call never ran (the
    /// plugin overloaded, its breaker open, no instance free): then it is
    /// put back ([`Store::requeue_timer`]) to be claimed again after a
    /// back-off, at most [`TIMER_RETRIES`] times.
    pub async fn fire_timer(&self, timer: DueTimer) {
        let span = tracing::info_span!(
            "chorus.dispatch.timer",
            plugin = timer.plugin.as_str(),
            key = timer.key.as_str(),
            channel_name = timer.channel_name.as_deref(),
            plugin_version = tracing::field::Empty,
        );
        self.fire_timer_in(timer).instrument(span).await
    }

    async fn fire_timer_in(&self, timer: DueTimer) {
        let lateness_ms = crate::store::unix_ms().saturating_sub(timer.due_ms);
        metrics::histogram!("chorus_timer_lateness_seconds").record(lateness_ms as f64 / 1000.0);
        let dropped = |reason: &'static str| {
            metrics::counter!("chorus_timers_dropped_total", "plugin" => timer.plugin.clone(), "reason" => reason)
                .increment(1);
            tracing::warn!(reason, "timer dropped");
        };
        let Some(plugin) = self.plugins.active(&timer.plugin) else {
            return dropped("plugin_missing");
        };
        if !plugin.accepts(TIMER_EVENT, Source::System) {
            return dropped("not_subscribed");
        }
        tracing::Span::current().record("plugin_version", plugin.version());
        let mut payload = Map::new();
        payload.insert("key".into(), Value::from(timer.key.clone()));
        // Checked to be JSON when it was set; text that is not (a store
        // edited by hand) is handed over as a string.
        let value = serde_json::from_str(&timer.payload)
            .unwrap_or_else(|_| Value::String(timer.payload.clone()));
        payload.insert("payload".into(), value);
        payload.insert(
            "channel_name".into(),
            timer.channel_name.clone().map_or(Value::Null, Value::from),
        );
        payload.insert("due_ms".into(), Value::from(timer.due_ms));
        let _room = match &timer.channel_name {
            Some(c) => Some(self.room_locks.lock(c).await),
            None => None,
        };
        let event = Event {
            action: TIMER_EVENT.to_string(),
            source: Source::System,
            user_id: None,
            payload,
        };
        let outcome = match self.try_call_and_commit(&plugin, event, None).await {
            Ok(_) => "ok",
            Err(refusal) if refusal.never_ran() && timer.attempt < TIMER_RETRIES => {
                return self.requeue(&timer).await;
            }
            Err(refusal) => {
                tracing::warn!(error = %ActionError::from(refusal), attempt = timer.attempt, "timer event failed");
                "failed"
            }
        };
        metrics::counter!("chorus_timers_fired_total", "plugin" => timer.plugin.clone(), "outcome" => outcome)
            .increment(1);
    }

    /// Puts back a timer whose call never ran (the plugin overloaded, its
    /// breaker open, no instance free), due again after a back-off that
    /// doubles with each attempt ([`TIMER_RETRY_BASE`]), with jitter so
    /// timers put back together do not come due together again.
    async fn requeue(&self, timer: &DueTimer) {
        let base = TIMER_RETRY_BASE.as_millis() as u64 * (1u64 << timer.attempt.min(16));
        let delay_ms = base + rand::random_range(0..=base / 2);
        let plugin = timer.plugin.clone();
        match self.store.requeue_timer(timer, delay_ms).await {
            Ok(put_back) => {
                metrics::counter!("chorus_timers_retried_total", "plugin" => plugin).increment(1);
                tracing::debug!(
                    attempt = timer.attempt + 1,
                    delay_ms,
                    put_back,
                    "timer call did not run; retrying"
                );
                if put_back {
                    self.timers_changed.notify_one();
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "timer call did not run and cannot be put back; dropped");
                metrics::counter!("chorus_timers_fired_total", "plugin" => plugin, "outcome" => "failed")
                    .increment(1);
            }
        }
    }
}

/// The action of the frame that tells members a room's attributes changed
/// (issue 17).
pub const ROOM_ATTRIBUTES: &str = "room_attributes";

/// The action of the room snapshot frame (issue 17).
pub const ROOM_STATE: &str = "room_state";

/// The `room_state` frame of `channel_name` as `user_id` sees it (README,
/// "Recovery after a dropped link"): `channel_name`, `room_id`, `epoch`
/// and `seq` (the room stream's position at the snapshot), `members` (in
/// join order, at most `member_limit`), `member_count`, `seats` (as `GET
/// /api/v1/rooms/{channel}`), `own_seat_id` (integer or null), `call`
/// (`{"peer_id","channel_name"}` or null), `attributes` (object) and
/// `attributes_version`; with the room stream's position it was read at.
/// `None` when nobody is in the room.
pub async fn room_state_frame(
    store: &dyn Store,
    channel_name: &str,
    user_id: u64,
    member_limit: usize,
) -> Result<Option<(String, Position)>, StoreError> {
    let Some(snapshot) = store.room_snapshot(channel_name, member_limit).await? else {
        return Ok(None);
    };
    let call = store.call_of(user_id).await?;
    let seats: Vec<Value> = snapshot
        .view
        .seats
        .iter()
        .map(|s| {
            serde_json::json!({
                "id": s.id, "user_id": s.user_id, "status": s.status,
                "microphone": s.microphone, "rank": s.id,
            })
        })
        .collect();
    let own_seat = snapshot
        .view
        .seats
        .iter()
        .find(|s| s.user_id == Some(user_id))
        .map(|s| s.id);
    let attributes: Map<String, Value> = snapshot
        .attrs
        .entries
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    let at = snapshot.at.clone();
    let frame = serde_json::json!({
        "action": ROOM_STATE,
        "channel_name": channel_name,
        "room_id": snapshot.view.room_id,
        "epoch": snapshot.at.epoch,
        "seq": snapshot.at.seq,
        "members": snapshot.view.members,
        "member_count": snapshot.member_count,
        "seats": seats,
        "own_seat_id": own_seat,
        "call": call.map(|c| serde_json::json!({"peer_id": c.peer_id, "channel_name": c.channel_name})),
        "attributes": attributes,
        "attributes_version": snapshot.attrs.version,
    });
    Ok(Some((frame.to_string(), at)))
}

/// How many times a timer whose call never ran (see
/// [`crate::plugin::FailureKind::never_ran`]) is put back before it counts as failed.
pub const TIMER_RETRIES: u32 = 8;

/// The first retry's delay; each next one doubles (200 ms, 400 ms, …,
/// 25.6 s: about 51 s in all, plus up to half again of jitter, longer than
/// the default breaker cooldown of 30 s).
pub const TIMER_RETRY_BASE: std::time::Duration = std::time::Duration::from_millis(200);
