//! The shared store of several nodes: rooms, seats, calls, presence,
//! plugin key-value data, room attributes (`P attrs:<channel>`, see
//! `lua/apply.lua`) and profiles (`P profile:<user>`, a JSON string with
//! its expiry) in Redis (`store.url = "redis://…"`).
//!
//! Every key starts with `store.prefix` (default `chorus:`), so several
//! deployments, or several tests, can share one Redis. Reads are single
//! commands or one small script; [`Store::apply`] is one Lua script
//! (`lua/apply.lua`) that runs the batch on tables loaded from Redis with
//! exactly the rules of [`MemoryStore`](super::memory::MemoryStore) and
//! writes only when every change passed. Redis runs one script at a time,
//! so a batch is atomic across nodes: of two `up` for one seat on two
//! nodes, exactly one wins.
//!
//! Redis is the source of truth: a batch is acknowledged only after Redis
//! answered it, and nothing is cached here. When Redis cannot be reached,
//! every call fails with a [`StoreError`] (the host answers 2002 / 503) and
//! the [`ConnectionManager`] reconnects in the background by itself.
//!
//! The keys are computed inside the scripts from the prefix, so this needs
//! one Redis primary (optionally with replicas or Sentinel), not a sharded
//! Redis Cluster.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Script};
use serde_json::{Value, json};

use super::history::replay_from;
use super::{
    Applied, ApplyError, AttrLimits, Call, DueTimer, Fact, FactKind, HistoryLimits, KvRecord,
    LogEntry, MAX_KV_LIST, Membership, Position, Replay, RoomAttrs, RoomSnapshot, RoomView, Seat,
    Stamped, StateChange, Store, StoreError, Stream, check_attr_changes,
};

/// How long one Redis command may take before it fails. Generous next to
/// Redis's sub-millisecond answers, short enough that a dead Redis turns
/// into a clear error quickly.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A connection to one Redis, shared by the [`RedisStore`] and the cluster
/// bus (`crate::cluster`). Cheap to clone.
#[derive(Clone)]
pub struct RedisLink {
    /// Opens the extra connections pub/sub needs.
    client: Client,
    /// The multiplexed connection every command goes through; reconnects
    /// by itself after Redis comes back.
    conn: ConnectionManager,
    /// Put before every key and channel name.
    prefix: Arc<str>,
    /// Set by [`RedisLink::sever`]: every later call fails, as if the
    /// process had died (tests simulate a SIGKILL with it).
    severed: Arc<AtomicBool>,
}

impl std::fmt::Debug for RedisLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLink")
            .field("prefix", &self.prefix)
            .field("severed", &self.is_severed())
            .finish()
    }
}

impl RedisLink {
    /// Connects to `url` (`redis://host:port/db`). Fails when Redis cannot
    /// be reached now; once connected, reconnection is automatic.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, StoreError> {
        let client = Client::open(url).map_err(|e| StoreError::BadUrl(Arc::new(e)))?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            // Few, short retries: a command during an outage should fail
            // within seconds, and the next one tries again anyway.
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(|e| StoreError::Connect {
                url: url.to_string(),
                source: Arc::new(e),
            })?;
        Ok(Self {
            client,
            conn,
            prefix: Arc::from(prefix),
            severed: Arc::new(AtomicBool::new(false)),
        })
    }

    /// `prefix + name`.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A handle on the shared connection, unless the link was severed.
    pub fn conn(&self) -> Result<ConnectionManager, StoreError> {
        if self.is_severed() {
            return Err(StoreError::Severed);
        }
        Ok(self.conn.clone())
    }

    /// The client, to open a pub/sub connection.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Makes every later call fail, as if this process had died.
    pub fn sever(&self) {
        self.severed.store(true, Ordering::SeqCst);
    }

    /// Whether [`RedisLink::sever`] was called.
    pub fn is_severed(&self) -> bool {
        self.severed.load(Ordering::SeqCst)
    }

    /// Runs one command, mapping errors to [`StoreError`].
    pub async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        let mut conn = self.conn()?;
        Ok(cmd.query_async(&mut conn).await?)
    }

    /// Runs one pipeline, mapping errors to [`StoreError`].
    pub async fn query_pipe<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn()?;
        Ok(pipe.query_async(&mut conn).await?)
    }
}

/// The scripts, hashed once per process (`EVALSHA`, loaded again by the
/// client after a Redis restart emptied the script cache).
struct Scripts {
    apply: Script,
    presence: Script,
    membership: Script,
    timers: Script,
    history: Script,
}

fn scripts() -> &'static Scripts {
    static SCRIPTS: std::sync::OnceLock<Scripts> = std::sync::OnceLock::new();
    SCRIPTS.get_or_init(|| Scripts {
        apply: Script::new(include_str!("lua/apply.lua")),
        presence: Script::new(include_str!("lua/presence.lua")),
        membership: Script::new(include_str!("lua/membership.lua")),
        timers: Script::new(include_str!("lua/timers.lua")),
        history: Script::new(include_str!("lua/history.lua")),
    })
}

/// The [`Store`] of several nodes sharing one Redis.
#[derive(Debug, Clone)]
pub struct RedisStore {
    /// The connection and key prefix.
    link: RedisLink,
    /// Seats of a room created by this node (`rooms.seats`); a room keeps
    /// the count it was created with.
    seats_per_room: u32,
    /// Bounds and idle expiry of room attributes (`[rooms.attributes]`).
    attr_limits: AttrLimits,
    /// Bounds of each stream's history (`[recovery]`).
    history_limits: HistoryLimits,
    /// Where a batch's webhook events go, in the batch's own script
    /// (issue 16); `None` without `[[webhooks]]`.
    events: Option<EventStream>,
}

/// The Redis stream of webhook events (under `store.prefix`), which
/// `webhooks::outbox::RedisOutbox` reads.
pub const EVENT_STREAM: &str = "webhooks:events";

/// How a batch's script appends its events.
#[derive(Debug, Clone)]
struct EventStream {
    /// `server.node_id`, the events' `node`.
    node: String,
    /// Entries older than this (ms) are trimmed on append.
    retention_ms: u64,
    /// `events.vacated_delay` in ms (0: `room.vacated` at once).
    vacated_delay_ms: u64,
}

impl RedisStore {
    /// Connects to `url`; keys start with `prefix`.
    pub async fn connect(url: &str, prefix: &str, seats_per_room: u32) -> Result<Self, StoreError> {
        Ok(Self {
            link: RedisLink::connect(url, prefix).await?,
            seats_per_room,
            attr_limits: AttrLimits::default(),
            history_limits: HistoryLimits::default(),
            events: None,
        })
    }

    /// The same store appending the webhook events of each batch's facts
    /// to [`EVENT_STREAM`] in the batch's own script, as from `node`,
    /// trimming entries older than `retention`. An emptied room is left
    /// pending under `P vacancy:<channel>` for `vacated_delay` (the node
    /// reports it, `webhooks::outbox::RedisOutbox::report_vacancy`); an
    /// entry meanwhile deletes it and sends no `room.occupied`.
    pub fn with_event_stream(
        mut self,
        node: &str,
        retention: std::time::Duration,
        vacated_delay: std::time::Duration,
    ) -> Self {
        self.events = Some(EventStream {
            node: node.to_string(),
            retention_ms: u64::try_from(retention.as_millis()).unwrap_or(u64::MAX),
            vacated_delay_ms: u64::try_from(vacated_delay.as_millis()).unwrap_or(u64::MAX),
        });
        self
    }

    /// The same store with these history bounds (`[recovery]`).
    pub fn with_history_limits(mut self, limits: HistoryLimits) -> Self {
        self.history_limits = limits;
        self
    }

    /// The same store with these room attribute bounds.
    pub fn with_attr_limits(mut self, limits: AttrLimits) -> Self {
        self.attr_limits = limits;
        self
    }

    /// The shared connection, for the cluster bus.
    pub fn link(&self) -> RedisLink {
        self.link.clone()
    }

    async fn script<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        args: &[&str],
    ) -> Result<T, StoreError> {
        let mut conn = self.link.conn()?;
        let mut invocation = script.prepare_invoke();
        invocation.arg(self.link.prefix());
        for arg in args {
            invocation.arg(*arg);
        }
        invocation
            .invoke_async(&mut conn)
            .await
            .map_err(StoreError::from)
    }

    async fn room_hash(&self, channel: &str) -> Result<HashMap<String, String>, StoreError> {
        let key = self.link.key(&format!("room:{channel}"));
        self.link.query(redis::cmd("HGETALL").arg(key)).await
    }

    fn free_seats(&self) -> Vec<Seat> {
        (1..=self.seats_per_room).map(Seat::free).collect()
    }
}

/// A room's hash as (room_id, seats in id order); `None` for no room.
fn parse_room(hash: &HashMap<String, String>) -> Option<(u64, Vec<Seat>)> {
    let room_id = hash.get("room_id")?.parse().ok()?;
    let count: u32 = hash.get("seats")?.parse().ok()?;
    let seats = (1..=count)
        .map(|id| {
            hash.get(&format!("s:{id}"))
                .and_then(|v| parse_seat(id, v))
                .unwrap_or_else(|| Seat::free(id))
        })
        .collect();
    Some((room_id, seats))
}

/// `"status,microphone,user"` (user empty for none).
fn parse_seat(id: u32, value: &str) -> Option<Seat> {
    let mut parts = value.splitn(3, ',');
    let status = parts.next()?.parse().ok()?;
    let microphone = parts.next()?.parse().ok()?;
    let user_id = match parts.next()? {
        "" => None,
        u => Some(u.parse().ok()?),
    };
    Some(Seat {
        id,
        user_id,
        status,
        microphone,
    })
}

/// A change as the apply script reads it. Ids travel as strings: Lua
/// numbers are doubles and would round user ids above 2^53.
fn encode_change(change: &StateChange) -> Value {
    match change {
        StateChange::JoinRoom {
            user_id,
            channel_name,
            room_id,
        } => {
            json!({"op": "join", "user": user_id.to_string(), "channel": channel_name, "room_id": room_id.to_string()})
        }
        StateChange::LeaveRoom {
            user_id,
            channel_name,
        } => json!({"op": "leave", "user": user_id.to_string(), "channel": channel_name}),
        StateChange::TakeSeat {
            channel_name,
            seat_id,
            user_id,
        } => {
            json!({"op": "take_seat", "user": user_id.to_string(), "channel": channel_name, "seat": seat_id})
        }
        StateChange::FreeSeat {
            channel_name,
            user_id,
        } => json!({"op": "free_seat", "user": user_id.to_string(), "channel": channel_name}),
        StateChange::SetSeat {
            channel_name,
            seat_id,
            status,
            microphone,
        } => {
            json!({"op": "set_seat", "channel": channel_name, "seat": seat_id, "status": status, "mic": microphone})
        }
        StateChange::StartCall {
            user_id,
            receiver_id,
            channel_name,
        } => {
            json!({"op": "start_call", "user": user_id.to_string(), "receiver": receiver_id.to_string(), "channel": channel_name})
        }
        StateChange::EndCall { user_id } => json!({"op": "end_call", "user": user_id.to_string()}),
        StateChange::UserOffline { user_id } => {
            json!({"op": "user_offline", "user": user_id.to_string()})
        }
        StateChange::KvSet { plugin, key, value } => {
            json!({"op": "kv_set", "plugin": plugin, "key": key, "value": value})
        }
        StateChange::KvDelete { plugin, key } => {
            json!({"op": "kv_delete", "plugin": plugin, "key": key})
        }
        StateChange::KvPut {
            plugin,
            key,
            value,
            if_version,
            ttl_ms,
        } => json!({
            "op": "kv_put", "plugin": plugin, "key": key, "value": value,
            "if_version": if_version.map(|v| v.to_string()), "ttl": ttl_ms,
        }),
        StateChange::KvIncr {
            plugin,
            key,
            delta,
            ttl_ms,
        } => json!({
            "op": "kv_incr", "plugin": plugin, "key": key,
            "delta": delta.to_string(), "ttl": ttl_ms,
        }),
        StateChange::SetRoomAttr {
            channel_name,
            key,
            value,
            if_version,
        } => json!({
            "op": "set_attr", "channel": channel_name, "key": key, "value": value,
            "if_version": if_version.map(|v| v.to_string()),
        }),
        StateChange::ClearRoomAttrs {
            channel_name,
            if_version,
        } => json!({
            "op": "clear_attrs", "channel": channel_name,
            "if_version": if_version.map(|v| v.to_string()),
        }),
        StateChange::SetTimer {
            plugin,
            key,
            delay_ms,
            payload,
            channel_name,
            bounds,
        } => json!({
            "op": "set_timer", "plugin": plugin, "key": key, "delay": delay_ms,
            "payload": payload, "channel": channel_name,
            "max_plugin": bounds.per_plugin, "max_room": bounds.per_room,
        }),
        StateChange::CancelTimer { plugin, key } => {
            json!({"op": "cancel_timer", "plugin": plugin, "key": key})
        }
    }
}

/// A timer as the claim script returns it (`lua/timers.lua`).
#[derive(serde::Deserialize)]
struct ClaimedTimer {
    p: String,
    k: String,
    payload: String,
    #[serde(default)]
    ch: Option<String>,
    due: String,
    /// Times it was put back; absent before the first.
    #[serde(default)]
    a: u32,
}

impl ClaimedTimer {
    fn into_due(self) -> Result<DueTimer, StoreError> {
        let due_ms = self
            .due
            .parse()
            .map_err(|_| StoreError::Script(format!("timer due time {:?}", self.due)))?;
        Ok(DueTimer {
            plugin: self.p,
            key: self.k,
            payload: self.payload,
            channel_name: self.ch,
            due_ms,
            attempt: self.a,
        })
    }
}

/// The apply script's answer as a result: on success, the stamped frames
/// (`ok` then one triple epoch, seq, frame per logged notification).
fn apply_outcome(answer: Vec<String>) -> Result<Applied, ApplyError> {
    let kind = answer.first().map(String::as_str).unwrap_or_default();
    let reason = answer.get(1).cloned().unwrap_or_default();
    match kind {
        "ok" => {
            let count: usize = reason.parse().map_err(|_| script_error("a fact count"))?;
            let end = 2 + count * 7;
            let facts_part = answer
                .get(2..end)
                .ok_or_else(|| script_error("its facts"))?;
            let facts = facts_part
                .chunks(7)
                .map(parse_fact)
                .collect::<Option<Vec<Fact>>>()
                .ok_or_else(|| script_error("a well-formed fact"))?;
            let stamps = answer[end..]
                .chunks(3)
                .map(|t| match t {
                    [epoch, seq, frame] => Ok(Stamped {
                        at: Position {
                            epoch: epoch.clone(),
                            seq: seq.parse().map_err(|_| script_error("a seq"))?,
                        },
                        frame: frame.clone(),
                    }),
                    _ => Err(script_error("a stamp triple")),
                })
                .collect::<Result<Vec<Stamped>, ApplyError>>()?;
            Ok(Applied {
                stamps,
                facts,
                recorded: false,
            })
        }
        "conflict" => Err(ApplyError::Conflict(reason)),
        "not_allowed" => Err(ApplyError::NotAllowed(reason)),
        "invalid" => Err(ApplyError::Invalid(reason)),
        "stale" => Err(ApplyError::Stale(reason)),
        "back" => Err(ApplyError::UserBack(reason.parse().unwrap_or_default())),
        other => Err(ApplyError::Store(StoreError::Script(format!(
            "apply answered {other:?}"
        )))),
    }
}

/// One fact of `lua/apply.lua`: kind, channel, user, seat, peer, room id
/// (`''` for none) and room seq.
fn parse_fact(t: &[String]) -> Option<Fact> {
    let [kind, channel, user, seat, peer, room_id, seq] = t else {
        return None;
    };
    let kind = match kind.as_str() {
        "entered" => FactKind::Entered,
        "exited" => FactKind::Exited,
        "seat_taken" => FactKind::SeatTaken,
        "seat_freed" => FactKind::SeatFreed,
        "call_started" => FactKind::CallStarted,
        "call_ended" => FactKind::CallEnded,
        "occupied" => FactKind::Occupied,
        "vacated" => FactKind::Vacated,
        _ => return None,
    };
    fn opt<T: std::str::FromStr>(s: &str) -> Option<Option<T>> {
        if s.is_empty() {
            Some(None)
        } else {
            s.parse().ok().map(Some)
        }
    }
    Some(Fact {
        kind,
        channel_name: channel.clone(),
        user_id: opt(user)?,
        seat_id: opt(seat)?,
        peer_id: opt(peer)?,
        room_id: opt(room_id)?,
        room_seq: seq.parse().ok()?,
    })
}

fn script_error(what: &str) -> ApplyError {
    ApplyError::Store(StoreError::Script(format!("apply answered without {what}")))
}

/// The snapshot mode of `lua/history.lua` as a [`RoomSnapshot`].
fn parse_snapshot(answer: &[String]) -> Result<Option<RoomSnapshot>, &'static str> {
    if answer.first().map(String::as_str) == Some("none") {
        return Ok(None);
    }
    let mut it = answer.iter();
    let mut next = || it.next().ok_or("too short");
    let epoch = next()?.clone();
    let seq = next()?.parse().map_err(|_| "seq")?;
    let fields: usize = next()?.parse().map_err(|_| "room fields")?;
    let mut hash = HashMap::new();
    for _ in 0..fields {
        let field = next()?.clone();
        hash.insert(field, next()?.clone());
    }
    let member_count = next()?.parse().map_err(|_| "member count")?;
    let listed: usize = next()?.parse().map_err(|_| "members")?;
    let mut members = Vec::with_capacity(listed);
    for _ in 0..listed {
        members.push(next()?.parse().map_err(|_| "member id")?);
    }
    let mut attrs = RoomAttrs::default();
    while let Ok(field) = next() {
        let value = next()?;
        if field.is_empty() {
            attrs.version = value.parse().unwrap_or(0);
        } else {
            attrs.entries.push((field.clone(), value.clone()));
        }
    }
    attrs.entries.sort_unstable();
    let (room_id, seats) = parse_room(&hash).ok_or("room hash")?;
    Ok(Some(RoomSnapshot {
        view: RoomView {
            room_id,
            members,
            seats,
        },
        member_count,
        attrs,
        at: Position { epoch, seq },
    }))
}

#[async_trait]
impl Store for RedisStore {
    async fn membership_of(&self, user_id: u64) -> Result<Option<Membership>, StoreError> {
        let user = user_id.to_string();
        let found: Option<(String, HashMap<String, String>)> =
            self.script(&scripts().membership, &[&user]).await?;
        let Some((channel_name, hash)) = found else {
            return Ok(None);
        };
        let Some((room_id, seats)) = parse_room(&hash) else {
            return Ok(None);
        };
        let seat_id = seats
            .iter()
            .find(|s| s.user_id == Some(user_id))
            .map(|s| s.id);
        Ok(Some(Membership {
            channel_name,
            room_id,
            seat_id,
        }))
    }

    async fn room_members(&self, channel_name: &str) -> Result<Vec<u64>, StoreError> {
        let key = self.link.key(&format!("members:{channel_name}"));
        self.link
            .query(redis::cmd("ZRANGE").arg(key).arg(0).arg(-1))
            .await
    }

    async fn room_seats(&self, channel_name: &str) -> Result<Vec<Seat>, StoreError> {
        let hash = self.room_hash(channel_name).await?;
        Ok(parse_room(&hash)
            .map(|(_, seats)| seats)
            .unwrap_or_else(|| self.free_seats()))
    }

    async fn room(&self, channel_name: &str) -> Result<Option<RoomView>, StoreError> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HGETALL")
            .arg(self.link.key(&format!("room:{channel_name}")))
            .cmd("ZRANGE")
            .arg(self.link.key(&format!("members:{channel_name}")))
            .arg(0)
            .arg(-1);
        let (hash, members): (HashMap<String, String>, Vec<u64>) =
            self.link.query_pipe(&pipe).await?;
        Ok(parse_room(&hash).map(|(room_id, seats)| RoomView {
            room_id,
            members,
            seats,
        }))
    }

    async fn call_of(&self, user_id: u64) -> Result<Option<Call>, StoreError> {
        let key = self.link.key(&format!("call:{user_id}"));
        let (peer, channel): (Option<u64>, Option<String>) = self
            .link
            .query(redis::cmd("HMGET").arg(key).arg("peer").arg("channel"))
            .await?;
        Ok(peer.map(|peer_id| Call {
            peer_id,
            channel_name: channel.unwrap_or_default(),
        }))
    }

    async fn kv_entry(&self, plugin: &str, key: &str) -> Result<Option<KvRecord>, StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("HGET")
            .arg(self.link.key(&format!("kv:{plugin}")))
            .arg(key)
            .cmd("HGET")
            .arg(self.link.key(&format!("kvver:{plugin}")))
            .arg(key)
            .cmd("HGET")
            .arg(self.link.key(&format!("kvexp:{plugin}")))
            .arg(key)
            .cmd("TIME");
        let (value, version, expires_at, time): (
            Option<String>,
            Option<u64>,
            Option<u64>,
            (u64, u64),
        ) = self.link.query_pipe(&pipe).await?;
        let now = time.0 * 1000 + time.1 / 1000;
        if expires_at.is_some_and(|at| at <= now) {
            return Ok(None);
        }
        Ok(value.map(|value| KvRecord {
            value,
            version: version.unwrap_or(0),
        }))
    }

    async fn kv_list(
        &self,
        plugin: &str,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        // O(keys of the plugin) per call; the answer is bounded.
        let mut pipe = redis::pipe();
        pipe.cmd("HKEYS")
            .arg(self.link.key(&format!("kv:{plugin}")))
            .cmd("HGETALL")
            .arg(self.link.key(&format!("kvexp:{plugin}")))
            .cmd("TIME");
        let (mut keys, expiries, time): (Vec<String>, HashMap<String, u64>, (u64, u64)) =
            self.link.query_pipe(&pipe).await?;
        let now = time.0 * 1000 + time.1 / 1000;
        keys.retain(|k| k.starts_with(prefix) && expiries.get(k).is_none_or(|at| *at > now));
        keys.sort_unstable();
        keys.truncate(limit.min(MAX_KV_LIST));
        Ok(keys)
    }

    async fn apply_reported(
        &self,
        changes: &[StateChange],
        log: &[LogEntry],
    ) -> Result<Applied, ApplyError> {
        if changes.is_empty() && log.is_empty() {
            return Ok(Applied::default());
        }
        check_attr_changes(&self.attr_limits, changes)?;
        let batch = Value::Array(changes.iter().map(encode_change).collect()).to_string();
        let seats = self.seats_per_room.to_string();
        let max_attrs = self.attr_limits.max_keys.to_string();
        let attr_ttl = self.attr_limits.idle_ttl_ms.max(1).to_string();
        let entries: Vec<Value> = log
            .iter()
            .map(|e| json!({"s": e.stream.key(), "f": e.frame}))
            .collect();
        let log_json = Value::Array(entries).to_string();
        let size = self.history_limits.size.to_string();
        let ttl = self.history_limits.ttl_ms.max(1).to_string();
        let position_ttl = self.history_limits.position_ttl_ms().to_string();
        let (stream, node, min_id, vacancy) = match &self.events {
            Some(events) => (
                self.link.key(EVENT_STREAM),
                events.node.clone(),
                format!("{}-0", super::unix_ms().saturating_sub(events.retention_ms)),
                events.vacated_delay_ms.to_string(),
            ),
            None => (String::new(), String::new(), String::new(), "0".to_string()),
        };
        let cause = super::current_cause().as_str();
        let args = [
            seats.as_str(),
            &batch,
            &max_attrs,
            &attr_ttl,
            &log_json,
            &size,
            &ttl,
            &position_ttl,
            &stream,
            &node,
            cause,
            &min_id,
            &vacancy,
        ];
        let answer: Vec<String> = self.script(&scripts().apply, &args).await?;
        let mut applied = apply_outcome(answer)?;
        applied.recorded = self.events.is_some();
        Ok(applied)
    }

    async fn history_since(&self, stream: &Stream, from: &Position) -> Result<Replay, StoreError> {
        let key = stream.key();
        let ttl_ms = self.history_limits.ttl_ms.max(1);
        let position_ttl = self.history_limits.position_ttl_ms().to_string();
        let answer: Vec<String> = self
            .script(&scripts().history, &["since", &key, &position_ttl])
            .await?;
        let [epoch, seq, entries @ ..] = answer.as_slice() else {
            return Err(StoreError::Script("history answered too little".into()));
        };
        let at = Position {
            epoch: epoch.clone(),
            seq: seq
                .parse()
                .map_err(|_| StoreError::Script("history seq".into()))?,
        };
        let now = super::unix_ms();
        let parsed = entries.iter().filter_map(|e| {
            let mut parts = e.splitn(3, ' ');
            let seq: u64 = parts.next()?.parse().ok()?;
            let logged: u64 = parts.next()?.parse().ok()?;
            let frame = parts.next()?;
            (now.saturating_sub(logged) < ttl_ms).then_some((seq, frame))
        });
        Ok(replay_from(&at, from, parsed))
    }

    async fn room_snapshot(
        &self,
        channel_name: &str,
        member_limit: usize,
    ) -> Result<Option<RoomSnapshot>, StoreError> {
        let key = Stream::Room(channel_name.to_string()).key();
        let position_ttl = self.history_limits.position_ttl_ms().to_string();
        let limit = member_limit.to_string();
        let args = [
            "snapshot",
            key.as_str(),
            &position_ttl,
            channel_name,
            &limit,
        ];
        let answer: Vec<String> = self.script(&scripts().history, &args).await?;
        parse_snapshot(&answer).map_err(|what| StoreError::Script(format!("snapshot: {what}")))
    }

    async fn room_attrs(&self, channel_name: &str) -> Result<RoomAttrs, StoreError> {
        let key = self.link.key(&format!("attrs:{channel_name}"));
        let hash: HashMap<String, String> = self.link.query(redis::cmd("HGETALL").arg(key)).await?;
        let mut attrs = RoomAttrs::default();
        for (field, value) in hash {
            if field.is_empty() {
                attrs.version = value.parse().unwrap_or(0);
            } else {
                attrs.entries.push((field, value));
            }
        }
        attrs.entries.sort_unstable();
        Ok(attrs)
    }

    async fn profile(&self, user_id: u64) -> Result<Option<String>, StoreError> {
        let key = self.link.key(&format!("profile:{user_id}"));
        self.link.query(redis::cmd("GET").arg(key)).await
    }

    async fn set_profile(
        &self,
        user_id: u64,
        profile: Option<&str>,
        ttl_s: u64,
    ) -> Result<(), StoreError> {
        let key = self.link.key(&format!("profile:{user_id}"));
        match profile {
            Some(json) => {
                let ttl = ttl_s.max(1);
                self.link
                    .query(redis::cmd("SET").arg(key).arg(json).arg("EX").arg(ttl))
                    .await
            }
            None => self.link.query(redis::cmd("DEL").arg(key)).await,
        }
    }

    async fn claim_due_timers(&self, limit: usize) -> Result<Vec<DueTimer>, StoreError> {
        let limit = limit.to_string();
        let claimed: Vec<String> = self.script(&scripts().timers, &["claim", &limit]).await?;
        claimed
            .iter()
            .map(|text| {
                serde_json::from_str::<ClaimedTimer>(text)
                    .map_err(|e| StoreError::Script(format!("claimed timer {text:?}: {e}")))?
                    .into_due()
            })
            .collect()
    }

    async fn next_timer_due(&self) -> Result<Option<u64>, StoreError> {
        let key = self.link.key("timers");
        let first: Vec<(String, f64)> = self
            .link
            .query(
                redis::cmd("ZRANGE")
                    .arg(key)
                    .arg(0)
                    .arg(0)
                    .arg("WITHSCORES"),
            )
            .await?;
        // Scores are unix ms (below 2^53): exact as doubles.
        Ok(first.first().map(|(_, due)| *due as u64))
    }

    async fn requeue_timer(&self, timer: &DueTimer, delay_ms: u64) -> Result<bool, StoreError> {
        let data = json!({
            "p": timer.plugin,
            "k": timer.key,
            "payload": timer.payload,
            "ch": timer.channel_name,
            "due": timer.due_ms.to_string(),
            "a": timer.attempt.saturating_add(1),
        })
        .to_string();
        let delay = delay_ms.to_string();
        let put: i64 = self
            .script(&scripts().timers, &["requeue", &data, &delay])
            .await?;
        Ok(put == 1)
    }

    async fn set_online(&self, user_id: u64, node: &str) -> Result<Option<String>, StoreError> {
        let user = user_id.to_string();
        self.script(&scripts().presence, &["online", &user, node])
            .await
    }

    async fn set_offline(&self, user_id: u64, node: &str) -> Result<(), StoreError> {
        let user = user_id.to_string();
        let _: Option<String> = self
            .script(&scripts().presence, &["offline", &user, node])
            .await?;
        Ok(())
    }

    async fn node_of(&self, user_id: u64) -> Result<Option<String>, StoreError> {
        let key = self.link.key(&format!("presence:{user_id}"));
        self.link.query(redis::cmd("GET").arg(key)).await
    }

    async fn nodes_of(&self, users: &[u64]) -> Result<Vec<Option<String>>, StoreError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("MGET");
        for user in users {
            cmd.arg(self.link.key(&format!("presence:{user}")));
        }
        self.link.query(&cmd).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::seat_status;

    #[test]
    fn seats_parse_from_the_room_hash() {
        let hash: HashMap<String, String> = [
            ("room_id", "88"),
            ("seats", "3"),
            ("s:2", "1,1,1233"),
            ("s:3", "2,0,"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let (room_id, seats) = parse_room(&hash).expect("a room");
        assert_eq!(room_id, 88);
        assert_eq!(seats[0], Seat::free(1));
        assert_eq!(seats[1].user_id, Some(1233));
        assert_eq!(seats[1].status, seat_status::OCCUPIED);
        assert_eq!(seats[2].status, seat_status::LOCKED);
        assert_eq!(seats[2].user_id, None);
    }
}
