//! [`RecordingStore`]: the node's store when webhooks are on. Every
//! applied batch's facts become events, recorded before the batch's
//! caller (the dispatcher, the disconnect flow, the server API) gets its
//! answer, whoever the caller is.

use std::sync::Arc;

use async_trait::async_trait;

use super::Webhooks;
use crate::store::{
    Applied, ApplyError, Call, DueTimer, KvRecord, LogEntry, Membership, Position, Replay,
    RoomAttrs, RoomSnapshot, RoomView, Seat, StateChange, Store, StoreError, Stream,
};

/// A store that records the events of what each batch changed.
pub struct RecordingStore {
    /// The real store.
    inner: Arc<dyn Store>,
    /// Where events go.
    hooks: Arc<Webhooks>,
}

impl RecordingStore {
    /// `inner`, recording into `hooks`.
    pub fn new(inner: Arc<dyn Store>, hooks: Arc<Webhooks>) -> Self {
        Self { inner, hooks }
    }
}

#[async_trait]
impl Store for RecordingStore {
    async fn membership_of(&self, user_id: u64) -> Result<Option<Membership>, StoreError> {
        self.inner.membership_of(user_id).await
    }
    async fn room_members(&self, channel_name: &str) -> Result<Vec<u64>, StoreError> {
        self.inner.room_members(channel_name).await
    }
    async fn room_seats(&self, channel_name: &str) -> Result<Vec<Seat>, StoreError> {
        self.inner.room_seats(channel_name).await
    }
    async fn room(&self, channel_name: &str) -> Result<Option<RoomView>, StoreError> {
        self.inner.room(channel_name).await
    }
    async fn call_of(&self, user_id: u64) -> Result<Option<Call>, StoreError> {
        self.inner.call_of(user_id).await
    }
    async fn kv_get(&self, plugin: &str, key: &str) -> Result<Option<String>, StoreError> {
        self.inner.kv_get(plugin, key).await
    }
    async fn kv_entry(&self, plugin: &str, key: &str) -> Result<Option<KvRecord>, StoreError> {
        self.inner.kv_entry(plugin, key).await
    }
    async fn kv_list(
        &self,
        plugin: &str,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.inner.kv_list(plugin, prefix, limit).await
    }
    /// The batch, then its events. When the events cannot be recorded the
    /// batch still stands: the error says the outcome is unknown (2005)
    /// rather than that nothing was applied.
    async fn apply_reported(
        &self,
        changes: &[StateChange],
        log: &[LogEntry],
    ) -> Result<Applied, ApplyError> {
        let applied = self.inner.apply_reported(changes, log).await?;
        // Recorded by the store in the batch's own step, but for an
        // emptied room, whose report waits for the vacancy delay here.
        let rest: Vec<crate::store::Fact>;
        let facts = if applied.recorded {
            rest = applied
                .facts
                .iter()
                .filter(|f| {
                    f.kind == crate::store::FactKind::Vacated && self.hooks.delays_vacancy()
                })
                .cloned()
                .collect();
            &rest
        } else {
            &applied.facts
        };
        if let Err(e) = self.hooks.record_facts(facts, &self.inner).await {
            tracing::error!(error = %e, "a batch applied but its webhook events were not recorded");
            metrics::counter!("chorus_webhook_record_failed_total").increment(1);
            return Err(ApplyError::Store(StoreError::Outbox(e.to_string())));
        }
        Ok(applied)
    }
    async fn history_since(&self, stream: &Stream, from: &Position) -> Result<Replay, StoreError> {
        self.inner.history_since(stream, from).await
    }
    async fn room_snapshot(
        &self,
        channel_name: &str,
        member_limit: usize,
    ) -> Result<Option<RoomSnapshot>, StoreError> {
        self.inner.room_snapshot(channel_name, member_limit).await
    }
    async fn room_attrs(&self, channel_name: &str) -> Result<RoomAttrs, StoreError> {
        self.inner.room_attrs(channel_name).await
    }
    async fn profile(&self, user_id: u64) -> Result<Option<String>, StoreError> {
        self.inner.profile(user_id).await
    }
    async fn set_profile(
        &self,
        user_id: u64,
        profile: Option<&str>,
        ttl_s: u64,
    ) -> Result<(), StoreError> {
        self.inner.set_profile(user_id, profile, ttl_s).await
    }
    async fn claim_due_timers(&self, limit: usize) -> Result<Vec<DueTimer>, StoreError> {
        self.inner.claim_due_timers(limit).await
    }
    async fn next_timer_due(&self) -> Result<Option<u64>, StoreError> {
        self.inner.next_timer_due().await
    }
    async fn requeue_timer(&self, timer: &DueTimer, delay_ms: u64) -> Result<bool, StoreError> {
        self.inner.requeue_timer(timer, delay_ms).await
    }
    async fn set_online(&self, user_id: u64, node: &str) -> Result<Option<String>, StoreError> {
        self.inner.set_online(user_id, node).await
    }
    async fn set_offline(&self, user_id: u64, node: &str) -> Result<(), StoreError> {
        self.inner.set_offline(user_id, node).await
    }
    async fn node_of(&self, user_id: u64) -> Result<Option<String>, StoreError> {
        self.inner.node_of(user_id).await
    }
    async fn nodes_of(&self, users: &[u64]) -> Result<Vec<Option<String>>, StoreError> {
        self.inner.nodes_of(users).await
    }
}
