//! Events to the app backend (issue 16; README, "Webhooks"): what changed
//! in rooms, seats, calls and sessions, recorded before the action that
//! caused it is answered, then POSTed, signed and batched, to each
//! `[[webhooks]]` endpoint, in order, retried until it answers 2xx or the
//! event passes `max_age`.
//!
//! - [`event`]: the event model; [`Cause`] (the `reason` of exits), set
//!   by the disconnect flow with [`with_cause`].
//! - [`recorded`]: [`RecordingStore`], the store every part of the node
//!   uses when webhooks are on: each applied batch's facts (reported by
//!   the store itself, `Store::apply_reported`) become events before the
//!   batch's caller gets its answer, so no caller can forget one.
//! - [`outbox`]: where events wait (redb on disk, memory, or a Redis
//!   stream with several nodes).
//! - [`sender`]: one delivery task per endpoint.
//!
//! Layer: above `store`, below `cluster`; `app` and `session` call it.

pub mod event;
pub mod outbox;
pub mod recorded;
pub mod sender;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use event::{Cause, DisconnectReason, Event, current_cause, with_cause};
pub use outbox::{Outbox, OutboxError};
pub use recorded::RecordingStore;
pub use sender::EndpointState;

use crate::config::{Config, OutboxKind};
use crate::store::redis::RedisLink;
use crate::store::{Fact, FactKind, Store};

/// A plugin event's name or body is not acceptable.
#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    /// The name is empty, longer than 64 bytes, or not `[a-z0-9_.-]`.
    #[error("event name must be 1 to 64 characters of [a-z0-9_.-]")]
    BadName,
    /// The body is not JSON.
    #[error("event body is not JSON: {0}")]
    BadBody(String),
    /// It could not be recorded.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
}

/// The webhooks of a node: the outbox, the endpoints and their tasks, and
/// the rooms waiting to be reported vacated.
pub struct Webhooks {
    /// `server.node_id`, the `node` of every event.
    node: String,
    /// Where events wait.
    outbox: Arc<dyn Outbox>,
    /// Each `[[webhooks]]` endpoint.
    endpoints: Vec<Arc<EndpointState>>,
    /// Woken after every append, so idle senders look again at once.
    appended: Arc<Notify>,
    /// `events.vacated_delay`.
    vacated_delay: Duration,
    /// Rooms emptied and not yet reported: channel -> the pending
    /// report's number and its `room_seq`. Entering again removes the
    /// entry, which cancels the report and the new `room.occupied`.
    vacancies: Mutex<HashMap<String, (u64, u64)>>,
    /// Numbers the pending reports.
    vacancy_ids: AtomicU64,
    /// The node's shutdown tree, once started.
    tasks: OnceLock<(CancellationToken, TaskTracker)>,
    /// How long a standby sender waits before trying the lease again.
    standby_poll: Duration,
}

impl Webhooks {
    /// The webhooks `config` asks for, `None` without `[[webhooks]]` (then
    /// nothing is recorded). `redis` is the store's link with several
    /// nodes: events then live in a Redis stream; otherwise in redb under
    /// `server.data_dir`, or memory with `events.outbox = "memory"`.
    pub async fn open(
        config: &Config,
        redis: Option<RedisLink>,
    ) -> Result<Option<Arc<Self>>, OutboxError> {
        if config.webhooks.is_empty() {
            return Ok(None);
        }
        let names: Vec<String> = config.webhooks.iter().map(|w| w.name.clone()).collect();
        let appended = Arc::new(Notify::new());
        let retention = config
            .webhooks
            .iter()
            .map(|w| w.max_age)
            .max()
            .unwrap_or_default();
        let outbox: Arc<dyn Outbox> = match (redis, config.events.outbox) {
            (Some(link), _) => Arc::new(
                outbox::RedisOutbox::open(
                    link,
                    &config.node_id(),
                    &names,
                    config.store.lease_ttl,
                    retention,
                    Arc::clone(&appended),
                )
                .await?,
            ),
            (None, OutboxKind::Memory) => {
                Arc::new(outbox::LocalOutbox::memory(&names, Arc::clone(&appended)))
            }
            (None, OutboxKind::Disk) => {
                let dir = config.data_dir();
                // Owner-only, like the rest of the data folder: the outbox
                // holds who was where.
                crate::revocations::create_data_dir(&dir).map_err(|e| {
                    let why = match e {
                        crate::revocations::RevocationError::Io { source, .. } => source.to_string(),
                        other => other.to_string(),
                    };
                    OutboxError(format!(
                        "webhooks outbox: cannot create the data folder {} (server.data_dir): {why}",
                        dir.display()
                    ))
                })?;
                let local = outbox::LocalOutbox::open(&dir, &names, Arc::clone(&appended)).await?;
                // A run that ended without a graceful stop (kill -9, a
                // crash) left users in sessions, rooms, seats and calls
                // that died with it: report their exits before serving.
                let lost = outbox::exits_of_lost_run(
                    &local.left_live().await?,
                    &config.node_id(),
                    crate::store::unix_ms(),
                );
                if !lost.is_empty() {
                    tracing::warn!(
                        events = lost.len(),
                        "the last run ended without a graceful stop: recording its users' exits"
                    );
                    local.append(&lost).await?;
                }
                Arc::new(local)
            }
        };
        Ok(Some(Arc::new(Self {
            node: config.node_id(),
            outbox,
            endpoints: config
                .webhooks
                .iter()
                .map(|w| Arc::new(EndpointState::new(w.clone())))
                .collect(),
            appended,
            vacated_delay: config.events.vacated_delay,
            vacancies: Mutex::default(),
            vacancy_ids: AtomicU64::new(0),
            tasks: OnceLock::new(),
            standby_poll: config.store.lease_interval,
        })))
    }

    /// Starts one delivery task per endpoint and the pruning task, on the
    /// node's tracker until `shutdown`.
    pub fn start(self: &Arc<Self>, shutdown: &CancellationToken, tracker: &TaskTracker) {
        let _ = self.tasks.set((shutdown.clone(), tracker.clone()));
        let client = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        for endpoint in &self.endpoints {
            let sender = sender::Sender {
                endpoint: Arc::clone(endpoint),
                outbox: Arc::clone(&self.outbox),
                client: client.clone(),
                appended: Arc::clone(&self.appended),
                shutdown: shutdown.clone(),
                standby_poll: self.standby_poll,
            };
            tracker.spawn(sender.run());
        }
        let retention = self
            .endpoints
            .iter()
            .map(|e| e.config.max_age)
            .max()
            .unwrap_or_default();
        let outbox = Arc::clone(&self.outbox);
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                    _ = shutdown.cancelled() => return,
                }
                let before = crate::store::unix_ms().saturating_sub(retention.as_millis() as u64);
                if let Err(e) = outbox.prune(before).await {
                    tracing::warn!(error = %e, "webhook outbox not pruned");
                }
            }
        });
    }

    /// A new event named `name` from this node.
    pub fn event(&self, name: &str) -> Event {
        Event::new(name, &self.node)
    }

    /// Records `events` (durably, unless the outbox is memory).
    pub async fn record(&self, events: &[Event]) -> Result<(), OutboxError> {
        if events.is_empty() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let outcome = self.outbox.append(events).await;
        metrics::histogram!("chorus_webhook_record_seconds")
            .record(started.elapsed().as_secs_f64());
        outcome
    }

    /// Records the events of an applied batch's `facts`, with the cause in
    /// force on this task. An emptied room is reported after
    /// `events.vacated_delay` if nobody entered meanwhile (checked on
    /// `store`); a room occupied again before that is not reported at all.
    pub async fn record_facts(
        self: &Arc<Self>,
        facts: &[Fact],
        store: &Arc<dyn Store>,
    ) -> Result<(), OutboxError> {
        if facts.is_empty() {
            return Ok(());
        }
        let cause = current_cause();
        let mut events = Vec::with_capacity(facts.len());
        for fact in facts {
            match fact.kind {
                FactKind::Vacated if !self.vacated_delay.is_zero() => {
                    self.schedule_vacancy(fact, Arc::clone(store));
                }
                FactKind::Occupied if self.cancel_vacancy(&fact.channel_name) => {}
                _ => events.push(Event::of_fact(fact, cause, &self.node)),
            }
        }
        self.record(&events).await
    }

    /// Whether an emptied room is reported after a delay
    /// (`events.vacated_delay` is not zero).
    pub fn delays_vacancy(&self) -> bool {
        !self.vacated_delay.is_zero()
    }

    /// Reports `fact`'s room vacated after the delay unless it was
    /// occupied again: in this node's memory on one node; with Redis the
    /// batch's script left the vacancy pending in Redis, where an entry on
    /// any node cancels it.
    fn schedule_vacancy(self: &Arc<Self>, fact: &Fact, store: Arc<dyn Store>) {
        if self.outbox.shares_vacancies() {
            let hooks = Arc::clone(self);
            let fact = fact.clone();
            let work = async move {
                tokio::time::sleep(hooks.vacated_delay).await;
                let event = Event::of_fact(&fact, Cause::Action, &hooks.node);
                let reported = hooks
                    .outbox
                    .report_vacancy(&fact.channel_name, fact.room_seq, &event)
                    .await;
                if let Err(e) = reported {
                    tracing::warn!(channel = fact.channel_name, error = %e, "room.vacated not recorded");
                }
            };
            return self.spawn(work);
        }
        let id = self.vacancy_ids.fetch_add(1, Ordering::Relaxed);
        let channel = fact.channel_name.clone();
        self.vacancies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(channel.clone(), (id, fact.room_seq));
        let hooks = Arc::clone(self);
        let fact = fact.clone();
        let work = async move {
            tokio::time::sleep(hooks.vacated_delay).await;
            let still = {
                let mut pending = hooks.vacancies.lock().unwrap_or_else(|p| p.into_inner());
                let mine = pending.get(&channel).is_some_and(|(i, _)| *i == id);
                if mine {
                    pending.remove(&channel);
                }
                mine
            };
            // Another node may have filled the room meanwhile.
            if !still || matches!(store.room(&channel).await, Ok(Some(_))) {
                return;
            }
            let event = Event::of_fact(&fact, Cause::Action, &hooks.node);
            if let Err(e) = hooks.record(&[event]).await {
                tracing::warn!(channel, error = %e, "room.vacated not recorded");
            }
        };
        self.spawn(work);
    }

    /// Runs `work` on the node's tracker until shutdown (on the runtime
    /// before the node started).
    fn spawn(&self, work: impl std::future::Future<Output = ()> + Send + 'static) {
        match self.tasks.get() {
            Some((shutdown, tracker)) => {
                let shutdown = shutdown.clone();
                tracker.spawn(async move {
                    tokio::select! {
                        _ = work => {}
                        _ = shutdown.cancelled() => {}
                    }
                });
            }
            None => {
                tokio::spawn(work);
            }
        }
    }

    /// Cancels a pending vacancy report of `channel`; whether there was one.
    fn cancel_vacancy(&self, channel: &str) -> bool {
        self.vacancies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(channel)
            .is_some()
    }

    /// Records `session.connected` for `user_id`.
    pub async fn session_connected(&self, user_id: u64) -> Result<(), OutboxError> {
        let mut event = self.event(event::SESSION_CONNECTED);
        event.user_id = Some(user_id);
        self.record(&[event]).await
    }

    /// Records `session.disconnected` for `user_id` with `reason`.
    pub async fn session_disconnected(
        &self,
        user_id: u64,
        reason: DisconnectReason,
    ) -> Result<(), OutboxError> {
        let mut event = self.event(event::SESSION_DISCONNECTED);
        event.user_id = Some(user_id);
        event.reason = Some(reason.as_str().to_string());
        self.record(&[event]).await
    }

    /// Records an event a plugin emitted (contract 1.2 `emit(name,
    /// body-json)`), for the dispatcher to call before it answers the
    /// action: `plugin.<plugin>.<name>`, its body (JSON text) under
    /// `data`, with the action's subject `user_id` and room
    /// `channel_name` when it has them (no `room_seq`: it is no room
    /// change). Errors: [`EmitError::BadName`] unless `name` is 1 to 64
    /// characters of `[a-z0-9_.-]`; [`EmitError::BadBody`] unless the body
    /// parses as JSON; [`EmitError::Outbox`] when it could not be recorded.
    pub async fn record_plugin_event(
        &self,
        plugin: &str,
        name: &str,
        user_id: Option<u64>,
        channel_name: Option<&str>,
        body_json: &str,
    ) -> Result<(), EmitError> {
        let name_ok = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
        if !name_ok {
            return Err(EmitError::BadName);
        }
        let data: Value =
            serde_json::from_str(body_json).map_err(|e| EmitError::BadBody(e.to_string()))?;
        let mut event = self.event(&format!("plugin.{plugin}.{name}"));
        event.user_id = user_id;
        event.channel_name = channel_name.map(str::to_string);
        event.data = Some(data);
        Ok(self.record(&[event]).await?)
    }

    /// Why the outbox's last write failed, while its writes fail (the
    /// disk outbox; `GET /admin/webhooks` `outbox_error`, and `/readyz`
    /// says not ready: every state change is answered 2005 meanwhile).
    pub fn outbox_error(&self) -> Option<String> {
        self.outbox.write_error()
    }

    /// Every endpoint's status (`GET /admin/webhooks`).
    pub fn statuses(&self) -> Vec<Value> {
        self.endpoints.iter().map(|e| e.to_json()).collect()
    }

    /// Sends the endpoint `name` again everything kept from `since_ms`
    /// (unix ms) on; false when no endpoint has that name.
    pub fn replay(&self, name: &str, since_ms: u64) -> bool {
        match self.endpoints.iter().find(|e| e.config.name == name) {
            Some(endpoint) => {
                endpoint.replay(since_ms);
                true
            }
            None => false,
        }
    }
}
