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

// redb's own error is large (160 bytes); these results only carry it from
// the database to the `OutboxError` it becomes, as redb's examples do.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use redb::{ReadableTable, TableDefinition};
use tokio::sync::{Notify, mpsc, oneshot};

use super::event::Event;
use crate::store::redis::RedisLink;

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

/// Events by sequence: 8 bytes of `ts_ms` (big-endian), then the JSON.
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// Endpoint -> the last sequence number it acknowledged.
const CURSORS: TableDefinition<&str, u64> = TableDefinition::new("cursors");

/// The file of the disk outbox under `server.data_dir`.
pub const OUTBOX_FILE: &str = "webhooks.redb";

/// The most operations one group commit takes; the rest wait for the next.
const GROUP_MAX: usize = 1024;

/// A write for the writer thread.
enum WriteOp {
    /// Append these `(ts_ms, json)`; answer when committed.
    Append(Vec<(u64, String)>, oneshot::Sender<Result<(), OutboxError>>),
    /// Set an endpoint's cursor.
    Cursor(String, u64, oneshot::Sender<Result<(), OutboxError>>),
    /// Delete events recorded before this time (unix ms).
    Prune(u64),
}

/// An endpoint's place in a local outbox.
#[derive(Debug, Clone, Copy, Default)]
struct Place {
    /// The last sequence number it acknowledged (durable on disk).
    acked: u64,
    /// The last one it was handed (in memory only).
    handed: u64,
}

/// The single-node outbox: redb on disk, or memory.
pub struct LocalOutbox {
    /// Disk: the database (reads) and the writer thread's queue.
    disk: Option<(Arc<redb::Database>, mpsc::Sender<WriteOp>)>,
    /// Memory: every kept entry `(seq, ts_ms, json)`, oldest first.
    memory: Mutex<std::collections::VecDeque<(u64, u64, String)>>,
    /// The last sequence number handed out (memory) or committed (disk).
    last: Arc<std::sync::atomic::AtomicU64>,
    /// Each endpoint's place.
    places: Mutex<HashMap<String, Place>>,
    /// Woken after every append.
    appended: Arc<Notify>,
}

impl LocalOutbox {
    /// A memory outbox for `endpoints`, each starting at the first event.
    pub fn memory(endpoints: &[String], appended: Arc<Notify>) -> Self {
        Self {
            disk: None,
            memory: Mutex::default(),
            last: Arc::default(),
            places: Mutex::new(
                endpoints
                    .iter()
                    .map(|e| (e.clone(), Place::default()))
                    .collect(),
            ),
            appended,
        }
    }

    /// Opens (creating it if needed) the disk outbox in `dir`. An endpoint
    /// seen for the first time starts after the events already kept.
    /// Retries for up to 5 s while a previous process of the same node
    /// still holds the file.
    pub async fn open(
        dir: &Path,
        endpoints: &[String],
        appended: Arc<Notify>,
    ) -> Result<Self, OutboxError> {
        let path = dir.join(OUTBOX_FILE);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let db = loop {
            let path = path.clone();
            let opened = tokio::task::spawn_blocking(move || redb::Database::create(path))
                .await
                .map_err(|e| OutboxError(format!("outbox open: {e}")))?;
            match opened {
                Ok(db) => break db,
                Err(redb::DatabaseError::DatabaseAlreadyOpen)
                    if std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => return Err(redb::Error::from(e).into()),
            }
        };
        let db = Arc::new(db);
        let names = endpoints.to_vec();
        let db2 = Arc::clone(&db);
        let (last, places) = tokio::task::spawn_blocking(move || init_disk(&db2, &names))
            .await
            .map_err(|e| OutboxError(format!("outbox open: {e}")))??;
        let last = Arc::new(std::sync::atomic::AtomicU64::new(last));
        let (tx, rx) = mpsc::channel(4096);
        let writer = Writer {
            db: Arc::clone(&db),
            next: last.load(std::sync::atomic::Ordering::SeqCst) + 1,
            last: Arc::clone(&last),
            appended: Arc::clone(&appended),
        };
        std::thread::Builder::new()
            .name("chorus-outbox".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| OutboxError(format!("outbox writer: {e}")))?;
        Ok(Self {
            disk: Some((db, tx)),
            memory: Mutex::default(),
            last,
            places: Mutex::new(places),
            appended,
        })
    }

    fn place(&self, endpoint: &str) -> Place {
        let places = self.places.lock().unwrap_or_else(|p| p.into_inner());
        places.get(endpoint).copied().unwrap_or_default()
    }

    fn set_place(&self, endpoint: &str, place: Place) {
        let mut places = self.places.lock().unwrap_or_else(|p| p.into_inner());
        places.insert(endpoint.to_string(), place);
    }

    /// Runs `work` on the database off the runtime's threads.
    async fn read<T: Send + 'static>(
        &self,
        work: impl FnOnce(&redb::Database) -> Result<T, redb::Error> + Send + 'static,
    ) -> Result<T, OutboxError> {
        let Some((db, _)) = &self.disk else {
            return Err(OutboxError("not a disk outbox".into()));
        };
        let db = Arc::clone(db);
        tokio::task::spawn_blocking(move || work(&db))
            .await
            .map_err(|e| OutboxError(format!("outbox read: {e}")))?
            .map_err(OutboxError::from)
    }

    async fn write(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<(), OutboxError>>) -> WriteOp,
    ) -> Result<(), OutboxError> {
        let Some((_, tx)) = &self.disk else {
            return Ok(());
        };
        let (done, answer) = oneshot::channel();
        tx.send(op(done))
            .await
            .map_err(|_| OutboxError("outbox writer stopped".into()))?;
        answer
            .await
            .map_err(|_| OutboxError("outbox writer stopped".into()))?
    }

    /// The memory outbox's entries after `after`, at most `max`.
    fn memory_after(&self, after: u64, max: usize) -> Vec<(u64, String)> {
        let memory = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        let start = memory.partition_point(|(seq, _, _)| *seq <= after);
        memory
            .range(start..)
            .take(max)
            .map(|(seq, _, json)| (*seq, json.clone()))
            .collect()
    }
}

/// Reads the last sequence number and every endpoint's cursor, writing
/// one for an endpoint seen for the first time.
fn init_disk(
    db: &redb::Database,
    endpoints: &[String],
) -> Result<(u64, HashMap<String, Place>), OutboxError> {
    let txn = db.begin_write().map_err(redb::Error::from)?;
    let mut places = HashMap::new();
    let last;
    {
        let events = txn.open_table(EVENTS).map_err(redb::Error::from)?;
        last = events
            .last()
            .map_err(redb::Error::from)?
            .map(|(k, _)| k.value())
            .unwrap_or(0);
        let mut cursors = txn.open_table(CURSORS).map_err(redb::Error::from)?;
        for name in endpoints {
            let acked = match cursors.get(name.as_str()).map_err(redb::Error::from)? {
                Some(v) => v.value(),
                None => last,
            };
            cursors
                .insert(name.as_str(), acked)
                .map_err(redb::Error::from)?;
            places.insert(
                name.clone(),
                Place {
                    acked,
                    handed: acked,
                },
            );
        }
    }
    txn.commit().map_err(redb::Error::from)?;
    Ok((last, places))
}

/// The disk outbox's one writer.
struct Writer {
    db: Arc<redb::Database>,
    /// The next sequence number.
    next: u64,
    /// Published after each commit, for depth.
    last: Arc<std::sync::atomic::AtomicU64>,
    appended: Arc<Notify>,
}

impl Writer {
    /// Takes whatever is queued (up to [`GROUP_MAX`]) into one
    /// transaction, commits it (fsync), answers every caller; until every
    /// sender is gone.
    fn run(mut self, mut rx: mpsc::Receiver<WriteOp>) {
        while let Some(first) = rx.blocking_recv() {
            let mut ops = vec![first];
            while ops.len() < GROUP_MAX {
                match rx.try_recv() {
                    Ok(op) => ops.push(op),
                    Err(_) => break,
                }
            }
            let next = self.next;
            let outcome = self.commit(&ops).map_err(OutboxError::from);
            if outcome.is_err() {
                // Nothing was written: the numbers are handed out again.
                self.next = next;
            }
            let mut appended = false;
            for op in ops {
                match op {
                    WriteOp::Append(_, done) | WriteOp::Cursor(_, _, done) => {
                        appended = true;
                        let _ = done.send(outcome.clone());
                    }
                    WriteOp::Prune(_) => {}
                }
            }
            if appended && outcome.is_ok() {
                self.last
                    .store(self.next - 1, std::sync::atomic::Ordering::SeqCst);
                self.appended.notify_waiters();
            }
        }
    }

    fn commit(&mut self, ops: &[WriteOp]) -> Result<(), redb::Error> {
        let txn = self.db.begin_write()?;
        {
            let mut events = txn.open_table(EVENTS)?;
            let mut cursors = txn.open_table(CURSORS)?;
            for op in ops {
                match op {
                    WriteOp::Append(batch, _) => {
                        for (ts, json) in batch {
                            let mut value = Vec::with_capacity(8 + json.len());
                            value.extend_from_slice(&ts.to_be_bytes());
                            value.extend_from_slice(json.as_bytes());
                            events.insert(self.next, value.as_slice())?;
                            self.next += 1;
                        }
                    }
                    WriteOp::Cursor(name, seq, _) => {
                        cursors.insert(name.as_str(), *seq)?;
                    }
                    WriteOp::Prune(before) => {
                        let old: Vec<u64> = events
                            .iter()?
                            .map_while(|row| {
                                let (k, v) = row.ok()?;
                                (ts_of(v.value()) < *before).then(|| k.value())
                            })
                            .collect();
                        for key in old {
                            events.remove(key)?;
                        }
                    }
                }
            }
        }
        txn.commit()?;
        Ok(())
    }
}

/// The recording time of a stored value.
fn ts_of(value: &[u8]) -> u64 {
    value
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

/// The entry of a stored `(seq, json)`; `None` for a value that does not
/// parse (skipped, logged).
fn entry_of(seq: u64, json: String) -> Option<Entry> {
    match serde_json::from_str(&json) {
        Ok(event) => Some(Entry {
            key: Key::Seq(seq),
            event,
            json,
        }),
        Err(e) => {
            tracing::error!(seq, error = %e, "an outbox entry does not parse; skipped");
            None
        }
    }
}

#[async_trait]
impl Outbox for LocalOutbox {
    async fn append(&self, events: &[Event]) -> Result<(), OutboxError> {
        let batch: Vec<(u64, String)> = events
            .iter()
            .map(|e| Ok((e.ts_ms, serde_json::to_string(e)?)))
            .collect::<Result<_, serde_json::Error>>()
            .map_err(|e| OutboxError(format!("event: {e}")))?;
        if self.disk.is_some() {
            return self.write(|done| WriteOp::Append(batch, done)).await;
        }
        {
            let mut memory = self.memory.lock().unwrap_or_else(|p| p.into_inner());
            for (ts, json) in batch {
                let seq = self.last.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                memory.push_back((seq, ts, json));
            }
        }
        self.appended.notify_waiters();
        Ok(())
    }

    async fn next(&self, endpoint: &str, max: usize) -> Result<Vec<Entry>, OutboxError> {
        let place = self.place(endpoint);
        let rows = if self.disk.is_some() {
            let after = place.handed;
            self.read(move |db| {
                let txn = db.begin_read()?;
                let table = txn.open_table(EVENTS)?;
                let mut rows = Vec::new();
                for row in table.range(after + 1..)?.take(max) {
                    let (k, v) = row?;
                    let json = String::from_utf8_lossy(&v.value()[8..]).into_owned();
                    rows.push((k.value(), json));
                }
                Ok(rows)
            })
            .await?
        } else {
            self.memory_after(place.handed, max)
        };
        if let Some((seq, _)) = rows.last() {
            self.set_place(
                endpoint,
                Place {
                    handed: *seq,
                    ..place
                },
            );
        }
        Ok(rows
            .into_iter()
            .filter_map(|(s, j)| entry_of(s, j))
            .collect())
    }

    async fn ack(&self, endpoint: &str, entries: &[Entry]) -> Result<(), OutboxError> {
        let Some(Key::Seq(seq)) = entries.last().map(|e| e.key.clone()) else {
            return Ok(());
        };
        let name = endpoint.to_string();
        self.write(|done| WriteOp::Cursor(name, seq, done)).await?;
        let place = self.place(endpoint);
        self.set_place(
            endpoint,
            Place {
                acked: seq,
                handed: place.handed.max(seq),
            },
        );
        Ok(())
    }

    async fn rewind(&self, endpoint: &str, since_ms: u64) -> Result<(), OutboxError> {
        let first = if self.disk.is_some() {
            self.read(move |db| {
                let txn = db.begin_read()?;
                let table = txn.open_table(EVENTS)?;
                for row in table.iter()? {
                    let (k, v) = row?;
                    if ts_of(v.value()) >= since_ms {
                        return Ok(Some(k.value()));
                    }
                }
                Ok(None)
            })
            .await?
        } else {
            let memory = self.memory.lock().unwrap_or_else(|p| p.into_inner());
            memory
                .iter()
                .find(|(_, ts, _)| *ts >= since_ms)
                .map(|(s, _, _)| *s)
        };
        let last = self.last.load(std::sync::atomic::Ordering::SeqCst);
        let cursor = first.map_or(last, |s| s - 1);
        let name = endpoint.to_string();
        self.write(|done| WriteOp::Cursor(name, cursor, done))
            .await?;
        self.set_place(
            endpoint,
            Place {
                acked: cursor,
                handed: cursor,
            },
        );
        Ok(())
    }

    async fn depth(&self, endpoint: &str) -> Result<u64, OutboxError> {
        let last = self.last.load(std::sync::atomic::Ordering::SeqCst);
        Ok(last.saturating_sub(self.place(endpoint).acked))
    }

    async fn prune(&self, before_ms: u64) -> Result<(), OutboxError> {
        if let Some((_, tx)) = &self.disk {
            tx.send(WriteOp::Prune(before_ms))
                .await
                .map_err(|_| OutboxError("outbox writer stopped".into()))?;
            return Ok(());
        }
        let lowest = {
            let places = self.places.lock().unwrap_or_else(|p| p.into_inner());
            places.values().map(|p| p.handed).min().unwrap_or(0)
        };
        let mut memory = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        // In memory an entry goes once it is old enough and every endpoint
        // was handed it, so memory stays bounded by the slowest endpoint.
        while memory
            .front()
            .is_some_and(|(seq, ts, _)| *ts < before_ms && *seq <= lowest)
        {
            memory.pop_front();
        }
        Ok(())
    }
}

/// How the Redis outbox reads an endpoint: first the entries this node
/// was handed and never acknowledged (after a takeover, those it
/// claimed), then new ones.
#[derive(Debug, Clone)]
struct Reading {
    /// Reading this consumer's pending entries, after this id.
    pending_after: Option<String>,
}

/// The several-node outbox: one Redis stream under `store.prefix`.
pub struct RedisOutbox {
    link: RedisLink,
    /// `P webhooks:events`.
    stream: String,
    /// This node's consumer name (`server.node_id`).
    consumer: String,
    /// Lease of an endpoint's delivery, in ms (`store.lease_ttl`).
    lease_ms: u64,
    /// Trim threshold: entries older than this many ms go on append.
    retention_ms: u64,
    /// Per endpoint, how it is being read.
    reading: Mutex<HashMap<String, Reading>>,
    /// Woken after every append of this node.
    appended: Arc<Notify>,
}

/// Reports a vacancy still pending with this number: `KEYS[1]` the
/// vacancy key, `KEYS[2]` the stream, `ARGV[1]` the room_seq, `ARGV[2]`
/// the event; 1 when appended.
const VACANCY_LUA: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('XADD', KEYS[2], '*', 'e', ARGV[2])
return 1
";

/// Takes or renews a lease: 1 renewed, 2 taken, 0 held by another.
const LEASE_LUA: &str = r"
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if not v then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 2 end
return 0
";

impl RedisOutbox {
    /// The outbox on `link`, creating each endpoint's consumer group (at
    /// the stream's end, so a new endpoint starts with new events).
    pub async fn open(
        link: RedisLink,
        consumer: &str,
        endpoints: &[String],
        lease: std::time::Duration,
        retention: std::time::Duration,
        appended: Arc<Notify>,
    ) -> Result<Self, OutboxError> {
        let stream = link.key(crate::store::redis::EVENT_STREAM);
        for name in endpoints {
            let created: Result<(), _> = link
                .query(
                    redis::cmd("XGROUP")
                        .arg("CREATE")
                        .arg(&stream)
                        .arg(name)
                        .arg("$")
                        .arg("MKSTREAM"),
                )
                .await;
            if let Err(e) = created
                && !e.to_string().contains("BUSYGROUP")
            {
                return Err(e.into());
            }
        }
        Ok(Self {
            link,
            stream,
            consumer: consumer.to_string(),
            lease_ms: lease.as_millis().max(1) as u64,
            retention_ms: retention.as_millis() as u64,
            reading: Mutex::default(),
            appended,
        })
    }

    /// Claims every entry of the endpoint's group pending with any
    /// consumer, so this node reads them again first.
    async fn claim_all(&self, endpoint: &str) -> Result<(), OutboxError> {
        let mut cursor = "0-0".to_string();
        for _ in 0..10_000 {
            let answer: redis::Value = self
                .link
                .query(
                    redis::cmd("XAUTOCLAIM")
                        .arg(&self.stream)
                        .arg(endpoint)
                        .arg(&self.consumer)
                        .arg(0)
                        .arg(&cursor)
                        .arg("COUNT")
                        .arg(500)
                        .arg("JUSTID"),
                )
                .await?;
            let next = match &answer {
                redis::Value::Array(parts) => parts.first().and_then(value_string),
                _ => None,
            };
            match next {
                Some(n) if n != "0-0" => cursor = n,
                _ => break,
            }
        }
        Ok(())
    }

    fn reading(&self, endpoint: &str) -> Reading {
        let reading = self.reading.lock().unwrap_or_else(|p| p.into_inner());
        reading.get(endpoint).cloned().unwrap_or(Reading {
            pending_after: Some("0".into()),
        })
    }

    fn set_reading(&self, endpoint: &str, r: Reading) {
        let mut reading = self.reading.lock().unwrap_or_else(|p| p.into_inner());
        reading.insert(endpoint.to_string(), r);
    }

    /// `XREADGROUP … STREAMS <stream> <from>`: entries as (id, json).
    async fn read_group(
        &self,
        endpoint: &str,
        max: usize,
        from: &str,
    ) -> Result<Vec<(String, String)>, OutboxError> {
        let answer: redis::Value = self
            .link
            .query(
                redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(endpoint)
                    .arg(&self.consumer)
                    .arg("COUNT")
                    .arg(max)
                    .arg("STREAMS")
                    .arg(&self.stream)
                    .arg(from),
            )
            .await?;
        Ok(stream_entries(&answer))
    }
}

/// A bulk or simple string value as text.
fn value_string(v: &redis::Value) -> Option<String> {
    match v {
        redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        redis::Value::SimpleString(s) => Some(s.clone()),
        redis::Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// The `(id, e)` pairs of an `XREADGROUP` answer (RESP2 arrays or RESP3
/// maps), in order; entries whose fields are gone (deleted) are skipped.
fn stream_entries(answer: &redis::Value) -> Vec<(String, String)> {
    let streams: Vec<&redis::Value> = match answer {
        redis::Value::Array(items) => items
            .iter()
            .filter_map(|s| match s {
                redis::Value::Array(pair) => pair.get(1),
                _ => None,
            })
            .collect(),
        redis::Value::Map(pairs) => pairs.iter().map(|(_, v)| v).collect(),
        _ => Vec::new(),
    };
    let mut out = Vec::new();
    for entries in streams {
        let redis::Value::Array(entries) = entries else {
            continue;
        };
        for entry in entries {
            let redis::Value::Array(parts) = entry else {
                continue;
            };
            let (Some(id), Some(redis::Value::Array(fields))) =
                (parts.first().and_then(value_string), parts.get(1))
            else {
                continue;
            };
            if let Some(json) = fields.get(1).and_then(value_string) {
                out.push((id, json));
            }
        }
    }
    out
}

/// A field of `XINFO GROUPS` for one group, as a number.
fn group_field(group: &redis::Value, field: &str) -> Option<u64> {
    let pairs: Vec<(&redis::Value, &redis::Value)> = match group {
        redis::Value::Array(items) => items
            .chunks(2)
            .filter_map(|c| Some((c.first()?, c.get(1)?)))
            .collect(),
        redis::Value::Map(pairs) => pairs.iter().map(|(k, v)| (k, v)).collect(),
        _ => return None,
    };
    pairs
        .into_iter()
        .find(|(k, _)| value_string(k).as_deref() == Some(field))
        .and_then(|(_, v)| value_string(v)?.parse().ok())
}

#[async_trait]
impl Outbox for RedisOutbox {
    async fn append(&self, events: &[Event]) -> Result<(), OutboxError> {
        let cutoff = crate::store::unix_ms().saturating_sub(self.retention_ms);
        let mut pipe = redis::pipe();
        for event in events {
            let json =
                serde_json::to_string(event).map_err(|e| OutboxError(format!("event: {e}")))?;
            pipe.cmd("XADD")
                .arg(&self.stream)
                .arg("MINID")
                .arg("~")
                .arg(format!("{cutoff}-0"))
                .arg("*")
                .arg("e")
                .arg(json)
                .ignore();
        }
        self.link.query_pipe::<()>(&pipe).await?;
        self.appended.notify_waiters();
        Ok(())
    }

    async fn next(&self, endpoint: &str, max: usize) -> Result<Vec<Entry>, OutboxError> {
        let reading = self.reading(endpoint);
        let rows = match &reading.pending_after {
            Some(after) => {
                let rows = self.read_group(endpoint, max, after).await?;
                match rows.last() {
                    Some((id, _)) => {
                        self.set_reading(
                            endpoint,
                            Reading {
                                pending_after: Some(id.clone()),
                            },
                        );
                        rows
                    }
                    None => {
                        self.set_reading(
                            endpoint,
                            Reading {
                                pending_after: None,
                            },
                        );
                        self.read_group(endpoint, max, ">").await?
                    }
                }
            }
            None => self.read_group(endpoint, max, ">").await?,
        };
        Ok(rows
            .into_iter()
            .filter_map(|(id, json)| match serde_json::from_str(&json) {
                Ok(event) => Some(Entry {
                    key: Key::Stream(id),
                    event,
                    json,
                }),
                Err(e) => {
                    tracing::error!(id, error = %e, "a stream entry does not parse; skipped");
                    None
                }
            })
            .collect())
    }

    async fn ack(&self, endpoint: &str, entries: &[Entry]) -> Result<(), OutboxError> {
        let ids: Vec<&str> = entries
            .iter()
            .filter_map(|e| match &e.key {
                Key::Stream(id) => Some(id.as_str()),
                Key::Seq(_) => None,
            })
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        self.link
            .query::<()>(redis::cmd("XACK").arg(&self.stream).arg(endpoint).arg(ids))
            .await?;
        Ok(())
    }

    async fn rewind(&self, endpoint: &str, since_ms: u64) -> Result<(), OutboxError> {
        // The group's last-delivered id just before `since_ms`: new reads
        // (`>`) start at the first entry recorded at or after it.
        let id = if since_ms == 0 {
            "0-0".to_string()
        } else {
            format!("{}-0", since_ms - 1)
        };
        self.link
            .query::<()>(
                redis::cmd("XGROUP")
                    .arg("SETID")
                    .arg(&self.stream)
                    .arg(endpoint)
                    .arg(id),
            )
            .await?;
        self.set_reading(
            endpoint,
            Reading {
                pending_after: None,
            },
        );
        Ok(())
    }

    async fn depth(&self, endpoint: &str) -> Result<u64, OutboxError> {
        let answer: redis::Value = self
            .link
            .query(redis::cmd("XINFO").arg("GROUPS").arg(&self.stream))
            .await?;
        let redis::Value::Array(groups) = answer else {
            return Ok(0);
        };
        for group in &groups {
            let name = match group {
                redis::Value::Array(items) => items
                    .chunks(2)
                    .find(|c| c.first().and_then(value_string).as_deref() == Some("name"))
                    .and_then(|c| c.get(1).and_then(value_string)),
                redis::Value::Map(pairs) => pairs
                    .iter()
                    .find(|(k, _)| value_string(k).as_deref() == Some("name"))
                    .and_then(|(_, v)| value_string(v)),
                _ => None,
            };
            if name.as_deref() == Some(endpoint) {
                let pending = group_field(group, "pending").unwrap_or(0);
                let lag = group_field(group, "lag").unwrap_or(0);
                return Ok(pending + lag);
            }
        }
        Ok(0)
    }

    async fn lead(&self, endpoint: &str) -> Result<bool, OutboxError> {
        let key = self.link.key(&format!("webhooks:lease:{endpoint}"));
        let held: i64 = self
            .link
            .query(
                redis::cmd("EVAL")
                    .arg(LEASE_LUA)
                    .arg(1)
                    .arg(key)
                    .arg(&self.consumer)
                    .arg(self.lease_ms),
            )
            .await?;
        if held == 2 {
            // A new term: what any earlier holder read and did not
            // acknowledge is this node's now, read first, in order.
            self.claim_all(endpoint).await?;
            self.set_reading(
                endpoint,
                Reading {
                    pending_after: Some("0".into()),
                },
            );
        }
        Ok(held != 0)
    }

    async fn prune(&self, _before_ms: u64) -> Result<(), OutboxError> {
        // Trimmed on every append (`XADD … MINID ~`).
        Ok(())
    }

    fn shares_vacancies(&self) -> bool {
        true
    }

    async fn report_vacancy(
        &self,
        channel: &str,
        room_seq: u64,
        event: &Event,
    ) -> Result<bool, OutboxError> {
        let json = serde_json::to_string(event).map_err(|e| OutboxError(format!("event: {e}")))?;
        let appended: i64 = self
            .link
            .query(
                redis::cmd("EVAL")
                    .arg(VACANCY_LUA)
                    .arg(2)
                    .arg(self.link.key(&format!("vacancy:{channel}")))
                    .arg(&self.stream)
                    .arg(room_seq)
                    .arg(json),
            )
            .await?;
        if appended == 1 {
            self.appended.notify_waiters();
        }
        Ok(appended == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u64) -> Event {
        let mut e = Event::new("room.entered", "n1");
        e.user_id = Some(n);
        e
    }

    /// Appends survive reopening; a cursor written by an ack is where a
    /// reopened outbox resumes; a rewind hands out again.
    #[tokio::test]
    async fn the_disk_outbox_keeps_events_and_cursors_across_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["a".to_string()];
        let outbox = LocalOutbox::open(dir.path(), &names, Arc::default())
            .await
            .unwrap();
        outbox.append(&[event(1), event(2)]).await.unwrap();
        outbox.append(&[event(3)]).await.unwrap();
        let got = outbox.next("a", 2).await.unwrap();
        assert_eq!(
            got.iter().map(|e| e.event.user_id).collect::<Vec<_>>(),
            [Some(1), Some(2)]
        );
        outbox.ack("a", &got[..1]).await.unwrap();
        assert_eq!(outbox.depth("a").await.unwrap(), 2);
        drop(outbox);
        let outbox = LocalOutbox::open(dir.path(), &names, Arc::default())
            .await
            .unwrap();
        let got = outbox.next("a", 10).await.unwrap();
        assert_eq!(
            got.iter().map(|e| e.event.user_id).collect::<Vec<_>>(),
            [Some(2), Some(3)]
        );
        assert!(outbox.next("a", 10).await.unwrap().is_empty());
        outbox.rewind("a", 0).await.unwrap();
        assert_eq!(outbox.next("a", 10).await.unwrap().len(), 3);
    }
}
