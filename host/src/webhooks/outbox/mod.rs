//! Where events wait for their endpoints: recorded before the action that
//! caused them is answered, kept until every endpoint had them (and for
//! replay, up to the longest `max_age`).
//!
//! - [`LocalOutbox`] on one node: an embedded database (redb) under
//!   `server.data_dir` (`events.outbox = "disk"`, the default), or memory
//!   when the operator says so. One writer thread commits appends in
//!   groups: every caller waiting meanwhile shares one transaction and one
//!   fsync, so an action pays about one commit, not one per event.
//! - [`RedisOutbox`] with several nodes: one Redis stream, a consumer
//!   group per endpoint, entries acknowledged (`XACK`) after a 2xx; one
//!   node at a time delivers for an endpoint (a lease), and a node that
//!   takes the lease over claims what the previous one had read and not
//!   acknowledged (`XAUTOCLAIM`): at least once, in order.

mod local;
mod redis;

pub(crate) use local::exits_of_lost_run;
pub use local::{LocalOutbox, OUTBOX_FILE};
pub use redis::RedisOutbox;

use async_trait::async_trait;

use super::event::Event;

/// The outbox failed; the message says where.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct OutboxError(pub String);

impl From<redb::Error> for OutboxError {
    fn from(e: redb::Error) -> Self {
        OutboxError(format!("outbox database: {e}"))
    }
}

impl From<crate::store::StoreError> for OutboxError {
    fn from(e: crate::store::StoreError) -> Self {
        OutboxError(format!("outbox stream: {e}"))
    }
}

/// Where an entry is in its outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// A local outbox's sequence number (from 1).
    Seq(u64),
    /// A Redis stream entry id.
    Stream(String),
}

/// One recorded event as read back.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its place.
    pub key: Key,
    /// The event.
    pub event: Event,
    /// The event's JSON text, as recorded.
    pub json: String,
}

/// The operations every outbox has. `endpoint` is a `[[webhooks]]` name.
#[async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Records `events`, durably for the disk and Redis outboxes, before
    /// returning.
    async fn append(&self, events: &[Event]) -> Result<(), OutboxError>;
    /// The next entries (at most `max`) the endpoint has not been handed
    /// since its last [`Outbox::ack`] or [`Outbox::rewind`].
    async fn next(&self, endpoint: &str, max: usize) -> Result<Vec<Entry>, OutboxError>;
    /// The endpoint had `entries` (the oldest handed out, in order).
    async fn ack(&self, endpoint: &str, entries: &[Entry]) -> Result<(), OutboxError>;
    /// The endpoint gets again every kept event recorded at or after
    /// `since_ms` (unix ms); what was handed out and not acknowledged is
    /// forgotten.
    async fn rewind(&self, endpoint: &str, since_ms: u64) -> Result<(), OutboxError>;
    /// Events recorded and not yet acknowledged by the endpoint (all
    /// events, before its `events` filter).
    async fn depth(&self, endpoint: &str) -> Result<u64, OutboxError>;
    /// Whether this node delivers for the endpoint now. Always true on
    /// one node; with Redis, whether it holds the endpoint's lease
    /// (taken or renewed by this call).
    async fn lead(&self, _endpoint: &str) -> Result<bool, OutboxError> {
        Ok(true)
    }
    /// Forgets events recorded before `before_ms` (unix ms).
    async fn prune(&self, before_ms: u64) -> Result<(), OutboxError>;
    /// Why the last write failed, while writes fail (the disk outbox:
    /// `None` again after the next good commit); shown in `GET
    /// /admin/webhooks` and `/readyz`.
    fn write_error(&self) -> Option<String> {
        None
    }
    /// Whether pending vacancies live in the outbox's store (Redis: `P
    /// vacancy:<channel>`, set by the batch's script) rather than in the
    /// node's memory.
    fn shares_vacancies(&self) -> bool {
        false
    }
    /// Records `event` (the room's `room.vacated`, numbered `room_seq`)
    /// if the room's vacancy is still the one of that number; whether it
    /// was. Only called when [`Outbox::shares_vacancies`].
    async fn report_vacancy(
        &self,
        _channel: &str,
        _room_seq: u64,
        event: &Event,
    ) -> Result<bool, OutboxError> {
        self.append(std::slice::from_ref(event)).await?;
        Ok(true)
    }
}
