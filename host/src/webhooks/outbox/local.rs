//! [`LocalOutbox`]: one node's outbox, redb on disk or memory.

// redb's own error is large (160 bytes); these results only carry it from
// the database to the `OutboxError` it becomes, as redb's examples do.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use redb::{ReadableTable, TableDefinition};
use tokio::sync::{Notify, mpsc, oneshot};

use super::{Entry, Key, Outbox, OutboxError};
use crate::webhooks::event::Event;

/// Events by sequence: 8 bytes of `ts_ms` (big-endian), then the JSON.
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// Endpoint -> the last sequence number it acknowledged.
const CURSORS: TableDefinition<&str, u64> = TableDefinition::new("cursors");
/// `"last"` -> the last sequence number ever handed out, written with every
/// append: once every event was delivered and pruned, the next start must
/// not number from 1 again, below the endpoints' cursors (their readers
/// would skip every new event until the numbers passed them: found in
/// review).
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Who is where by the events recorded so far, so that the next start can
/// report the exits a crash (kill -9) never recorded: `u:<user>` a
/// session (value empty), `m:<user>` a room member (the channel),
/// `s:<user>` a seat (`<seat>\t<channel>`), `c:<caller>` a call
/// (`<callee>\t<channel>`). Changed in the same transaction as the events.
const LIVE: TableDefinition<&str, &str> = TableDefinition::new("live");

/// One change of [`LIVE`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum LiveChange {
    Put(String, String),
    Del(String),
}

/// What `event` changes of [`LIVE`].
fn live_changes(event: &Event) -> Vec<LiveChange> {
    use crate::webhooks::event::*;
    let (Some(user), channel) = (
        event.user_id,
        event.channel_name.clone().unwrap_or_default(),
    ) else {
        return Vec::new();
    };
    let put = |kind: &str, value: String| vec![LiveChange::Put(format!("{kind}:{user}"), value)];
    let del = |kind: &str| vec![LiveChange::Del(format!("{kind}:{user}"))];
    match event.event.as_str() {
        SESSION_CONNECTED => put("u", String::new()),
        SESSION_DISCONNECTED => del("u"),
        ROOM_ENTERED => put("m", channel),
        ROOM_EXITED => del("m"),
        SEAT_TAKEN => put("s", format!("{}\t{channel}", event.seat_id.unwrap_or(0))),
        SEAT_FREED => del("s"),
        CALL_STARTED => put(
            "c",
            format!("{}\t{channel}", event.receiver_id.unwrap_or(0)),
        ),
        CALL_ENDED => {
            let mut changes = del("c");
            if let Some(peer) = event.peer_id {
                changes.push(LiveChange::Del(format!("c:{peer}")));
            }
            changes
        }
        _ => Vec::new(),
    }
}

/// The events a run that ended without recording them owed the app
/// backend, from what [`LIVE`] still holds: per user, the seat freed, the
/// call ended, the room left (reason `disconnect`), then the session gone
/// (reason `server_lost`). A room's events are numbered just below
/// `now_ms` × 1000, where this run's numbers start, so they sort after
/// the lost run's and before this one's.
pub(crate) fn exits_of_lost_run(live: &[(String, String)], node: &str, now_ms: u64) -> Vec<Event> {
    use crate::webhooks::event::*;
    use std::collections::BTreeMap;
    let mut users: BTreeMap<u64, [Option<&str>; 4]> = BTreeMap::new();
    for (key, value) in live {
        let Some((kind, user)) = key.split_once(':') else {
            continue;
        };
        let Ok(user) = user.parse::<u64>() else {
            continue;
        };
        let slot = match kind {
            "s" => 0,
            "c" => 1,
            "m" => 2,
            "u" => 3,
            _ => continue,
        };
        users.entry(user).or_default()[slot] = Some(value.as_str());
    }
    let mut events = Vec::new();
    for (user, [seat, call, member, session]) in users {
        let event = |name: &str, channel: Option<&str>| {
            let mut e = Event::new(name, node);
            e.user_id = Some(user);
            e.channel_name = channel.filter(|c| !c.is_empty()).map(str::to_string);
            e.reason = Some("disconnect".into());
            e
        };
        if let Some((seat, channel)) = seat.and_then(|v| v.split_once('\t')) {
            let mut e = event(SEAT_FREED, Some(channel));
            e.seat_id = seat.parse().ok();
            events.push(e);
        }
        if let Some((peer, channel)) = call.and_then(|v| v.split_once('\t')) {
            let mut e = event(CALL_ENDED, Some(channel));
            e.peer_id = peer.parse().ok();
            events.push(e);
        }
        if let Some(channel) = member {
            events.push(event(ROOM_EXITED, Some(channel)));
        }
        if session.is_some() {
            let mut e = event(SESSION_DISCONNECTED, None);
            e.reason = Some(DisconnectReason::ServerLost.as_str().into());
            events.push(e);
        }
    }
    let base = now_ms.saturating_mul(1000);
    let mut per_room: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    for e in &events {
        if let Some(c) = &e.channel_name {
            *per_room.entry(c.clone()).or_default() += 1;
        }
    }
    let mut seen: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    for e in &mut events {
        if let Some(c) = &e.channel_name {
            let i = seen.entry(c.clone()).or_default();
            *i += 1;
            e.room_seq = Some(base - per_room[c] - 1 + *i);
        }
    }
    events
}

/// The file of the disk outbox under `server.data_dir`.
pub const OUTBOX_FILE: &str = "webhooks.redb";

/// The most operations one group commit takes; the rest wait for the next.
const GROUP_MAX: usize = 1024;

/// A write for the writer thread.
enum WriteOp {
    /// Append these `(ts_ms, json)`, apply these changes to [`LIVE`];
    /// answer when committed.
    Append(
        Vec<(u64, String)>,
        Vec<LiveChange>,
        oneshot::Sender<Result<(), OutboxError>>,
    ),
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

/// The open database, shared by the readers and the writer; empty while
/// the writer reopens it after an I/O error.
type Slot = Arc<std::sync::RwLock<Option<Arc<redb::Database>>>>;

/// Opens the database again (the file, or a test's backend).
type Opener = Arc<dyn Fn() -> Result<redb::Database, redb::DatabaseError> + Send + Sync>;

/// The single-node outbox: redb on disk, or memory.
pub struct LocalOutbox {
    /// Disk: the database (reads) and the writer thread's queue.
    disk: Option<(Slot, mpsc::Sender<WriteOp>)>,
    /// Why the last commit failed, while commits fail.
    write_error: Arc<Mutex<Option<String>>>,
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
            write_error: Arc::default(),
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

    /// What [`LIVE`] holds: who the events recorded so far leave in a
    /// session, room, seat or call (empty for the memory outbox).
    pub async fn left_live(&self) -> Result<Vec<(String, String)>, OutboxError> {
        if self.disk.is_none() {
            return Ok(Vec::new());
        }
        self.read(|db| {
            let txn = db.begin_read()?;
            let table = match txn.open_table(LIVE) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(e.into()),
            };
            let mut rows = Vec::new();
            for row in table.iter()? {
                let (k, v) = row?;
                rows.push((k.value().to_string(), v.value().to_string()));
            }
            Ok(rows)
        })
        .await
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
        let opener: Opener = Arc::new(move || redb::Database::create(&path));
        Self::open_with(opener, endpoints, appended).await
    }

    /// [`LocalOutbox::open`] on whatever `opener` opens (tests: a backend
    /// that can be made to fail).
    async fn open_with(
        opener: Opener,
        endpoints: &[String],
        appended: Arc<Notify>,
    ) -> Result<Self, OutboxError> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let db = loop {
            let open = Arc::clone(&opener);
            let opened = tokio::task::spawn_blocking(move || open())
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
        let slot: Slot = Arc::new(std::sync::RwLock::new(Some(db)));
        let write_error: Arc<Mutex<Option<String>>> = Arc::default();
        let writer = Writer {
            slot: Arc::clone(&slot),
            opener,
            write_error: Arc::clone(&write_error),
            next: last.load(std::sync::atomic::Ordering::SeqCst) + 1,
            last: Arc::clone(&last),
            appended: Arc::clone(&appended),
        };
        std::thread::Builder::new()
            .name("chorus-outbox".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| OutboxError(format!("outbox writer: {e}")))?;
        Ok(Self {
            disk: Some((slot, tx)),
            write_error,
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
        let Some((slot, _)) = &self.disk else {
            return Err(OutboxError("not a disk outbox".into()));
        };
        let db = slot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| OutboxError("the outbox is being reopened after an I/O error".into()))?;
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
        let stored_last = events
            .last()
            .map_err(redb::Error::from)?
            .map(|(k, _)| k.value())
            .unwrap_or(0);
        let meta = txn.open_table(META).map_err(redb::Error::from)?;
        let high_water = meta
            .get("last")
            .map_err(redb::Error::from)?
            .map(|v| v.value())
            .unwrap_or(0);
        let mut cursors = txn.open_table(CURSORS).map_err(redb::Error::from)?;
        // Every cursor too (an outbox written before `meta` existed, or an
        // endpoint since removed from the configuration).
        let mut furthest_cursor = 0;
        for row in cursors.iter().map_err(redb::Error::from)? {
            let (_, acked) = row.map_err(redb::Error::from)?;
            furthest_cursor = furthest_cursor.max(acked.value());
        }
        last = stored_last.max(high_water).max(furthest_cursor);
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
    /// The database, shared with the readers.
    slot: Slot,
    /// Opens it again after an I/O error.
    opener: Opener,
    /// Why the last commit failed, while commits fail.
    write_error: Arc<Mutex<Option<String>>>,
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
            let committed = self.commit(&ops);
            if let Err(e) = &committed {
                // Nothing was written: the numbers are handed out again.
                self.next = next;
                *self.write_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                // After an I/O error redb refuses every later transaction
                // ("Previous I/O error occurred. Please close and re-open
                // the database"): a full disk freed again would leave the
                // outbox wedged until a restart (found in review).
                if matches!(e, redb::Error::Io(_) | redb::Error::PreviousIo) {
                    if let Err(e) = self.reopen() {
                        tracing::error!(error = %e, "webhooks outbox: reopening after an I/O error failed; trying again with the next write");
                    } else {
                        tracing::warn!("webhooks outbox: reopened after an I/O error");
                    }
                }
            } else {
                *self.write_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
            }
            let outcome = committed.map_err(OutboxError::from);
            // Published before anyone is answered: a caller that reads the
            // depth right after its append sees its own events.
            if outcome.is_ok() && self.next != next {
                self.last
                    .store(self.next - 1, std::sync::atomic::Ordering::SeqCst);
            }
            let mut appended = false;
            for op in ops {
                match op {
                    WriteOp::Append(_, _, done) | WriteOp::Cursor(_, _, done) => {
                        appended = true;
                        let _ = done.send(outcome.clone());
                    }
                    WriteOp::Prune(_) => {}
                }
            }
            if appended && outcome.is_ok() {
                self.appended.notify_waiters();
            }
        }
    }

    /// Closes the database (once the readers let go of it, at most 5 s)
    /// and opens it again, which recovers it from the last good commit.
    fn reopen(&mut self) -> Result<(), redb::Error> {
        let mut slot = self.slot.write().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = slot.take() {
            // A reader holds the handle only for one read.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while Arc::strong_count(&old) > 1 && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            drop(old);
        }
        *slot = Some(Arc::new((self.opener)()?));
        Ok(())
    }

    /// The open database, reopening it first if an earlier reopen failed.
    fn db(&mut self) -> Result<Arc<redb::Database>, redb::Error> {
        let current = self.slot.read().unwrap_or_else(|p| p.into_inner()).clone();
        match current {
            Some(db) => Ok(db),
            None => {
                self.reopen()?;
                Ok(self
                    .slot
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
                    .expect("just reopened"))
            }
        }
    }

    fn commit(&mut self, ops: &[WriteOp]) -> Result<(), redb::Error> {
        let db = self.db()?;
        let txn = db.begin_write()?;
        {
            let mut events = txn.open_table(EVENTS)?;
            let mut cursors = txn.open_table(CURSORS)?;
            let mut meta = txn.open_table(META)?;
            let mut live = txn.open_table(LIVE)?;
            let first = self.next;
            for op in ops {
                match op {
                    WriteOp::Append(batch, changes, _) => {
                        for change in changes {
                            match change {
                                LiveChange::Put(k, v) => {
                                    live.insert(k.as_str(), v.as_str())?;
                                }
                                LiveChange::Del(k) => {
                                    live.remove(k.as_str())?;
                                }
                            }
                        }
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
            if self.next != first {
                meta.insert("last", self.next - 1)?;
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
            let live = events.iter().flat_map(live_changes).collect();
            return self.write(|done| WriteOp::Append(batch, live, done)).await;
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
        // Only ever back: a cursor moved past events not yet acknowledged
        // would skip them (a `since` after the oldest undelivered event,
        // or in the future: found in review).
        let cursor = first
            .map_or(last, |s| s - 1)
            .min(self.place(endpoint).acked);
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

    fn write_error(&self) -> Option<String> {
        self.write_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
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

#[cfg(test)]
mod numbering_tests {
    use super::*;

    fn event(n: u64) -> Event {
        let mut e = Event::new("room.entered", "n1");
        e.user_id = Some(n);
        e
    }

    /// Review of issue 16: every event delivered, then pruned, then a
    /// restart: new events must be numbered past the endpoint's cursor, or
    /// its reader skips them (29 events were lost that way).
    #[tokio::test]
    async fn numbers_never_go_back_after_everything_was_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["a".to_string()];
        let outbox = LocalOutbox::open(dir.path(), &names, Arc::default())
            .await
            .unwrap();
        outbox
            .append(&[event(1), event(2), event(3)])
            .await
            .unwrap();
        let got = outbox.next("a", 10).await.unwrap();
        outbox.ack("a", &got).await.unwrap();
        outbox.prune(u64::MAX).await.unwrap();
        // The prune is applied by the writer with the next operation.
        outbox.append(&[]).await.unwrap();
        drop(outbox);
        let outbox = LocalOutbox::open(dir.path(), &names, Arc::default())
            .await
            .unwrap();
        outbox.append(&[event(4)]).await.unwrap();
        let got = outbox.next("a", 10).await.unwrap();
        assert_eq!(
            got.iter().map(|e| e.event.user_id).collect::<Vec<_>>(),
            [Some(4)]
        );
        assert_eq!(outbox.depth("a").await.unwrap(), 1);
    }
}

#[cfg(test)]
mod io_error_tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A storage that can be made to fail every write, as a full disk
    /// does; what it holds survives reopening.
    #[derive(Debug, Clone, Default)]
    struct FlakyDisk {
        data: Arc<Mutex<Vec<u8>>>,
        full: Arc<AtomicBool>,
    }

    impl FlakyDisk {
        fn check(&self) -> std::io::Result<()> {
            if self.full.load(Ordering::SeqCst) {
                return Err(std::io::Error::other("No space left on device"));
            }
            Ok(())
        }
    }

    impl redb::StorageBackend for FlakyDisk {
        fn len(&self) -> std::io::Result<u64> {
            Ok(self.data.lock().unwrap().len() as u64)
        }
        fn read(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
            let data = self.data.lock().unwrap();
            let start = offset as usize;
            Ok(data[start..start + len].to_vec())
        }
        fn set_len(&self, len: u64) -> std::io::Result<()> {
            self.check()?;
            self.data.lock().unwrap().resize(len as usize, 0);
            Ok(())
        }
        fn sync_data(&self, _eventual: bool) -> std::io::Result<()> {
            self.check()
        }
        fn write(&self, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
            self.check()?;
            let mut data = self.data.lock().unwrap();
            let start = offset as usize;
            data[start..start + bytes.len()].copy_from_slice(bytes);
            Ok(())
        }
    }

    fn event(n: u64) -> Event {
        let mut e = Event::new("room.entered", "n1");
        e.user_id = Some(n);
        e
    }

    /// Review of issue 16: once a write failed (a full disk), redb refused
    /// every later one until the process restarted. Now the writer reopens
    /// the database: the failed append is refused, the error shows, and
    /// once the disk has room again the next append works, with nothing
    /// recorded before lost.
    #[tokio::test]
    async fn a_full_disk_freed_again_needs_no_restart() {
        let disk = FlakyDisk::default();
        let backend = disk.clone();
        let opener: Opener =
            Arc::new(move || redb::Builder::new().create_with_backend(backend.clone()));
        let names = vec!["a".to_string()];
        let outbox = LocalOutbox::open_with(opener, &names, Arc::default())
            .await
            .unwrap();
        outbox.append(&[event(1)]).await.unwrap();
        disk.full.store(true, Ordering::SeqCst);
        assert!(outbox.append(&[event(2)]).await.is_err());
        assert!(outbox.write_error().is_some());
        assert!(outbox.append(&[event(3)]).await.is_err(), "still full");
        disk.full.store(false, Ordering::SeqCst);
        outbox
            .append(&[event(4)])
            .await
            .expect("writes again, no restart");
        assert_eq!(outbox.write_error(), None);
        let got = outbox.next("a", 10).await.unwrap();
        assert_eq!(
            got.iter().map(|e| e.event.user_id).collect::<Vec<_>>(),
            [Some(1), Some(4)]
        );
    }
}
