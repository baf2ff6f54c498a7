//! The shared state of rooms, seats, calls, presence, plugin key-value
//! data, room attributes and user profiles, behind the [`Store`] trait.
//!
//! The host owns this state; plugins read it through the `room-state` and
//! `kv` imports and change it only through effects, which the host turns
//! into one [`Store::apply`] batch. One node keeps it in memory
//! ([`memory::MemoryStore`]); several nodes share it through Redis
//! ([`redis::RedisStore`]) behind the same trait.

pub mod history;
pub mod memory;
pub mod redis;

use std::sync::Arc;

use async_trait::async_trait;

pub use history::{HistoryLimits, LogEntry, Position, Replay, Stamped, Stream};

/// A user's place in a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// The room's channel name.
    pub channel_name: String,
    /// The app backend's numeric id of the room.
    pub room_id: u64,
    /// The seat the user holds in that room.
    pub seat_id: Option<u32>,
}

/// Seat status values of the protocol.
pub mod seat_status {
    /// Nobody sits here.
    pub const FREE: u8 = 0;
    /// A user sits here.
    pub const OCCUPIED: u8 = 1;
    /// Nobody may take it.
    pub const LOCKED: u8 = 2;
}

/// One mic seat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seat {
    /// 1..N; also the seat's rank.
    pub id: u32,
    /// The seated user.
    pub user_id: Option<u64>,
    /// See [`seat_status`].
    pub status: u8,
    /// 1 open, 0 closed.
    pub microphone: u8,
}

impl Seat {
    /// A free seat with a closed microphone.
    pub fn free(id: u32) -> Self {
        Self {
            id,
            user_id: None,
            status: seat_status::FREE,
            microphone: 0,
        }
    }
}

/// A 1:1 call as seen by one of its users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The other user.
    pub peer_id: u64,
    /// The room channel the call belongs to.
    pub channel_name: String,
}

/// A room as the server API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomView {
    /// The app backend's id of the room.
    pub room_id: u64,
    /// Members in join order.
    pub members: Vec<u64>,
    /// All seats in id order.
    pub seats: Vec<Seat>,
}

/// A room as one `room_state` frame shows it (issue 17), read in one
/// atomic step with the room stream's position, so the notifications
/// after `at.seq` are exactly those that follow the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomSnapshot {
    /// Id, members (in join order, at most the limit asked for) and every
    /// seat.
    pub view: RoomView,
    /// How many members the room has (all of them).
    pub member_count: usize,
    /// The room's attributes.
    pub attrs: RoomAttrs,
    /// The room stream's position at the snapshot.
    pub at: Position,
}

/// What a fact says changed (issue 16): one per room, seat or call
/// change a batch actually made, so the webhook events follow the state
/// rather than the effects a plugin asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FactKind {
    /// `user_id` entered `channel_name` (`room_id`).
    Entered,
    /// `user_id` left `channel_name` (a leave, or the implicit leave of a
    /// join to another room).
    Exited,
    /// `user_id` took `seat_id`.
    SeatTaken,
    /// `seat_id`, held by `user_id`, became free (a seat change, a leave).
    SeatFreed,
    /// `user_id` called `peer_id` in `channel_name`.
    CallStarted,
    /// The call of `user_id` with `peer_id` ended.
    CallEnded,
    /// `channel_name` had nobody and now has its first member.
    Occupied,
    /// The last member left `channel_name`.
    Vacated,
}

/// One change a batch made, reported by [`Store::apply_reported`] in the
/// order it happened, numbered per room in the same atomic step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fact {
    /// What changed.
    pub kind: FactKind,
    /// The room concerned (a call's room for call facts).
    pub channel_name: String,
    /// The user concerned (`None` for [`FactKind::Occupied`] and
    /// [`FactKind::Vacated`]).
    pub user_id: Option<u64>,
    /// The seat (seat facts).
    pub seat_id: Option<u32>,
    /// The other user of a call (call facts).
    pub peer_id: Option<u64>,
    /// The app backend's id of the room ([`FactKind::Entered`],
    /// [`FactKind::Occupied`]).
    pub room_id: Option<u64>,
    /// The room's sequence number of this fact: increasing within a room,
    /// so a receiver can order a room's events. `MemoryStore` starts each
    /// room at its start time in ms times 1000 (so a restarted node keeps
    /// increasing); `RedisStore` counts from 1 per room, kept in Redis.
    pub room_seq: u64,
}

impl Fact {
    /// A fact with no seq yet (the store numbers it once the batch passed).
    pub fn new(kind: FactKind, channel_name: &str) -> Self {
        Self {
            kind,
            channel_name: channel_name.to_string(),
            user_id: None,
            seat_id: None,
            peer_id: None,
            room_id: None,
            room_seq: 0,
        }
    }

    /// The same fact about `user_id`.
    pub fn user(mut self, user_id: u64) -> Self {
        self.user_id = Some(user_id);
        self
    }

    /// The same fact about `seat_id`.
    pub fn seat(mut self, seat_id: u32) -> Self {
        self.seat_id = Some(seat_id);
        self
    }

    /// The same fact with the call's other user.
    pub fn peer(mut self, peer_id: u64) -> Self {
        self.peer_id = Some(peer_id);
        self
    }

    /// The same fact with the room's id.
    pub fn room(mut self, room_id: u64) -> Self {
        self.room_id = Some(room_id);
        self
    }
}

/// What made a room, seat or call change: the `reason` of `room.exited`,
/// `seat.freed` and `call.ended`. Set for a stretch of work with
/// [`with_cause`]; anything else is an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// An action (client, server API, timer, plugin): `"action"`.
    Action,
    /// The disconnect flow of a user who left without a kick:
    /// `"disconnect"`.
    Disconnect,
    /// The disconnect flow of a kicked user: `"kick"`.
    Kick,
}

impl Cause {
    /// The `reason` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Action => "action",
            Cause::Disconnect => "disconnect",
            Cause::Kick => "kick",
        }
    }
}

tokio::task_local! {
    /// The cause of the changes the current task applies.
    static CAUSE: Cause;
}

/// Runs `work` with `cause` as the reason of every change it applies
/// (through any store call on this task).
pub async fn with_cause<F: std::future::Future>(cause: Cause, work: F) -> F::Output {
    CAUSE.scope(cause, work).await
}

/// The cause in force on this task ([`Cause::Action`] outside
/// [`with_cause`]).
pub fn current_cause() -> Cause {
    CAUSE.try_with(|c| *c).unwrap_or(Cause::Action)
}

/// What an applied batch produced: the stamped frames of its logged
/// notifications and the facts of what it changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// The logged notifications, stamped, in order.
    pub stamps: Vec<Stamped>,
    /// The room, seat and call changes, in the order they happened.
    pub facts: Vec<Fact>,
    /// The store itself recorded the webhook events of every fact but
    /// [`FactKind::Occupied`] and [`FactKind::Vacated`] in the same atomic
    /// step as the batch (`RedisStore` with an event stream): the caller
    /// records only those two (they wait for `events.vacated_delay`).
    pub recorded: bool,
}

/// One state change; a batch of them is applied atomically.
///
/// Field meanings are the same in every variant: `user_id` the user
/// concerned, `channel_name` the room, `seat_id` a seat id (1..N).
///
/// Serialized (for `chorus plugin run` and the admin API's shadow samples)
/// as `{"change": "<variant in snake_case>", <its fields>}`.
#[allow(missing_docs)] // the fields are documented once, above
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum StateChange {
    /// Join a room, leaving (and freeing the seat in) any other room first.
    JoinRoom {
        user_id: u64,
        channel_name: String,
        room_id: u64,
    },
    /// Leave a room, freeing the seat. Requires membership.
    LeaveRoom { user_id: u64, channel_name: String },
    /// Take a seat (freeing any other seat of the user in that room).
    /// Requires membership and a free seat.
    TakeSeat {
        channel_name: String,
        seat_id: u32,
        user_id: u64,
    },
    /// Free the user's seat. Requires a seat.
    FreeSeat { channel_name: String, user_id: u64 },
    /// Lock (status 2), unlock (0) or mute an unoccupied seat.
    SetSeat {
        channel_name: String,
        seat_id: u32,
        status: u8,
        microphone: u8,
    },
    /// Record a call between two users.
    StartCall {
        user_id: u64,
        receiver_id: u64,
        channel_name: String,
    },
    /// End the user's call, if any.
    EndCall { user_id: u64 },
    /// Write a key of a plugin's key-value space.
    KvSet {
        plugin: String,
        key: String,
        value: String,
    },
    /// Delete a key of a plugin's key-value space.
    KvDelete { plugin: String, key: String },
    /// Write a key (contract 1.1 `kv-put`): refused with
    /// [`ApplyError::Stale`] unless the key is still at `if_version` (0: the
    /// key must be absent or expired); `ttl_ms` (1 ms ..= [`MAX_KV_TTL_MS`])
    /// makes it expire, `None` keeps it until written or deleted. The new
    /// version is the plugin's next version number.
    KvPut {
        plugin: String,
        key: String,
        value: String,
        if_version: Option<u64>,
        ttl_ms: Option<u64>,
    },
    /// Add `delta` to the decimal integer at a key (contract 1.1
    /// `kv-incr`; absent or expired counts as 0); never stale. `ttl_ms`
    /// sets a new expiry; `None` keeps the key's expiry (none for a new
    /// key). Refused with [`ApplyError::Conflict`] when the value is no
    /// integer or a magnitude passes [`MAX_KV_INT`].
    KvIncr {
        plugin: String,
        key: String,
        delta: i64,
        ttl_ms: Option<u64>,
    },
    /// Sets (`value` some) or deletes (`value` none) one attribute of a
    /// room (contract 1.1 `set-room-attr`, `POST
    /// /api/v1/rooms/attributes`). Refused with [`ApplyError::Stale`]
    /// unless the room's attributes are at `if_version` when the batch
    /// starts (0: the room has none); with [`ApplyError::Conflict`] when a
    /// new key would pass [`AttrLimits::max_keys`]; with
    /// [`ApplyError::Invalid`] when [`check_room_attr`] refuses it.
    SetRoomAttr {
        channel_name: String,
        key: String,
        value: Option<String>,
        if_version: Option<u64>,
    },
    /// Deletes every attribute of a room (`"clear": true` of the server
    /// API), with the same condition as [`StateChange::SetRoomAttr`].
    ClearRoomAttrs {
        channel_name: String,
        if_version: Option<u64>,
    },
    /// Schedule a plugin's timer (contract 1.1 `set-timer`), due
    /// `delay_ms` ([`MIN_TIMER_DELAY_MS`] ..= [`MAX_TIMER_DELAY_MS`], else
    /// [`ApplyError::Invalid`]) after the batch applies. A pending timer of
    /// the same plugin and key is replaced. Refused with
    /// [`ApplyError::Conflict`] when the plugin would then have more than
    /// `bounds.per_plugin` pending timers, or the room (`channel_name`)
    /// more than `bounds.per_room`.
    SetTimer {
        plugin: String,
        key: String,
        delay_ms: u64,
        /// Handed back when it fires (JSON text).
        payload: String,
        channel_name: Option<String>,
        /// The node's bounds, not the plugin's: left out when serialized.
        #[serde(skip)]
        bounds: TimerBounds,
    },
    /// Cancel a plugin's pending timer (contract 1.1 `cancel-timer`); no
    /// timer: nothing happens.
    CancelTimer { plugin: String, key: String },
    /// A condition, changing nothing: the batch is refused with
    /// [`ApplyError::UserBack`] if the user is connected on any node now
    /// (presence). The host puts it first in the batches of a disconnect
    /// that may race the user's return (a grace that ended, a dead node's
    /// users), so the check and the changes are one atomic step on either
    /// store, whichever node the user came back to.
    UserOffline { user_id: u64 },
}

/// The shortest timer delay: 100 ms.
pub const MIN_TIMER_DELAY_MS: u64 = 100;
/// The longest timer delay: 24 h, in milliseconds.
pub const MAX_TIMER_DELAY_MS: u64 = 24 * 3600 * 1000;

/// How many timers may be pending at once (`plugins.max_timers_per_plugin`
/// and `plugins.max_timers_per_room`), carried by each
/// [`StateChange::SetTimer`] so both stores check the same numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerBounds {
    /// Pending timers of one plugin, all rooms together.
    pub per_plugin: u32,
    /// Pending timers that name one room, all plugins together.
    pub per_room: u32,
}

/// A timer claimed by [`Store::claim_due_timers`]: it is no longer pending
/// anywhere, and this node is the one that fires it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueTimer {
    /// The plugin that set it.
    pub plugin: String,
    /// Its key.
    pub key: String,
    /// The payload it was set with (JSON text).
    pub payload: String,
    /// The room it belongs to.
    pub channel_name: Option<String>,
    /// Unix ms it was due (when it was set to fire; a timer put back by
    /// [`Store::requeue_timer`] keeps its first due time).
    pub due_ms: u64,
    /// How many times it was put back before this claim (0: its first).
    pub attempt: u32,
}

/// Checks a timer delay: [`MIN_TIMER_DELAY_MS`] ..= [`MAX_TIMER_DELAY_MS`].
pub fn check_timer_delay(delay_ms: u64) -> Result<(), ApplyError> {
    if (MIN_TIMER_DELAY_MS..=MAX_TIMER_DELAY_MS).contains(&delay_ms) {
        Ok(())
    } else {
        Err(ApplyError::Invalid(format!(
            "timer delay {delay_ms} ms is outside {MIN_TIMER_DELAY_MS} ..= {MAX_TIMER_DELAY_MS} ms"
        )))
    }
}

/// The longest TTL a KV write may carry: 30 days, in milliseconds.
pub const MAX_KV_TTL_MS: u64 = 30 * 24 * 3600 * 1000;

/// The largest magnitude a `kv-incr` counter, its delta and its sum may
/// have: 2^53 - 1, what a JSON number (and the Redis script) carries exactly.
pub const MAX_KV_INT: i64 = (1 << 53) - 1;

/// The most keys one [`Store::kv_list`] returns.
pub const MAX_KV_LIST: usize = 1000;

/// A KV entry as read, with its version (contract 1.1 `kv.entry`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvRecord {
    /// The value.
    pub value: String,
    /// Changes on every write of the key; a condition names it. Numbers
    /// come from one counter per plugin, so they never repeat while the
    /// key exists. An entry written before contract 1.1 has version 0.
    pub version: u64,
}

/// A room's attributes as read (contract 1.1 `room-state.room-attributes`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomAttrs {
    /// Changes on every batch that writes the room's attributes; 0 when the
    /// room has none. Numbers come from one counter per store, so a version
    /// never comes back while the room has attributes.
    pub version: u64,
    /// The attributes, by key in byte order.
    pub entries: Vec<(String, String)>,
}

impl RoomAttrs {
    /// The value at `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The bounds of room attributes (`[rooms.attributes]`) and how long they
/// outlive the room's last member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttrLimits {
    /// Attributes one room may hold (default 32).
    pub max_keys: usize,
    /// Longest key, in bytes (default 64); keys are never empty.
    pub max_key_bytes: usize,
    /// Longest value, in bytes (default 1024).
    pub max_value_bytes: usize,
    /// Attributes of a room nobody is in expire this long (milliseconds)
    /// after the later of their last write and the last member leaving
    /// (default 7 days); while anyone is in the room they never expire.
    pub idle_ttl_ms: u64,
}

impl AttrLimits {
    /// The limits `[rooms.attributes]` sets.
    pub fn from_config(config: &crate::config::AttributesConfig) -> Self {
        Self {
            max_keys: config.max_keys,
            max_key_bytes: config.max_key_bytes,
            max_value_bytes: config.max_value_bytes,
            idle_ttl_ms: u64::try_from(config.idle_ttl.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

impl Default for AttrLimits {
    /// The configuration's defaults (32 keys, 64-byte keys, 1024-byte
    /// values, 7 days).
    fn default() -> Self {
        Self::from_config(&crate::config::AttributesConfig::default())
    }
}

/// The attribute naming the room's owner: one user id in decimal.
pub const ATTR_OWNER: &str = "owner";
/// The attribute naming the room's admins: user ids in decimal separated
/// by commas, without spaces (`"1233,1234"`); empty for none.
pub const ATTR_ADMINS: &str = "admins";

/// Checks one attribute write against `limits` and the shapes of the
/// roles: a key of 1 to `max_key_bytes` bytes; a value of at most
/// `max_value_bytes` bytes; `owner` a user id in decimal; `admins` empty
/// or user ids in decimal separated by commas. The reason names the key.
pub fn check_room_attr(limits: &AttrLimits, key: &str, value: Option<&str>) -> Result<(), String> {
    if key.is_empty() {
        return Err("an attribute key must not be empty".into());
    }
    if key.len() > limits.max_key_bytes {
        return Err(format!(
            "attribute key `{}…` is longer than {} bytes",
            key.chars().take(16).collect::<String>(),
            limits.max_key_bytes
        ));
    }
    let Some(value) = value else {
        return Ok(());
    };
    if value.len() > limits.max_value_bytes {
        return Err(format!(
            "attribute `{key}` is longer than {} bytes",
            limits.max_value_bytes
        ));
    }
    let is_id = |s: &str| {
        !s.is_empty()
            && s.len() <= 20
            && s.bytes().all(|b| b.is_ascii_digit())
            && s.parse::<u64>().is_ok()
    };
    match key {
        ATTR_OWNER if !is_id(value) => Err(format!(
            "attribute `{ATTR_OWNER}` must be a user id in decimal"
        )),
        ATTR_ADMINS if !value.is_empty() && !value.split(',').all(is_id) => Err(format!(
            "attribute `{ATTR_ADMINS}` must be user ids in decimal separated by commas"
        )),
        _ => Ok(()),
    }
}

/// Checks every attribute change of a batch before any change runs, so
/// both stores refuse a malformed one the same way whatever precedes it.
pub(crate) fn check_attr_changes(
    limits: &AttrLimits,
    changes: &[StateChange],
) -> Result<(), ApplyError> {
    for change in changes {
        let result = match change {
            StateChange::SetRoomAttr {
                channel_name,
                key,
                value,
                ..
            } => check_channel(channel_name)
                .and_then(|()| check_room_attr(limits, key, value.as_deref())),
            StateChange::ClearRoomAttrs { channel_name, .. } => check_channel(channel_name),
            _ => Ok(()),
        };
        result.map_err(ApplyError::Invalid)?;
    }
    Ok(())
}

/// The longest `channel_name`, in bytes (PROTOCOL section 0).
pub const MAX_CHANNEL_NAME_BYTES: usize = 128;

/// A room name of attributes: 1 to [`MAX_CHANNEL_NAME_BYTES`] bytes.
fn check_channel(channel_name: &str) -> Result<(), String> {
    if channel_name.is_empty() || channel_name.len() > MAX_CHANNEL_NAME_BYTES {
        return Err(format!(
            "channel_name must be 1 to {MAX_CHANNEL_NAME_BYTES} bytes"
        ));
    }
    Ok(())
}

/// The longest time a profile is kept: 365 days, in seconds. A profile
/// given with a session lives as long as the session, within this bound.
pub const MAX_PROFILE_TTL_S: u64 = 365 * 24 * 3600;

/// Checks a KV TTL: 1 ms ..= [`MAX_KV_TTL_MS`].
pub fn check_kv_ttl(ttl_ms: Option<u64>) -> Result<(), ApplyError> {
    match ttl_ms {
        Some(0) => Err(ApplyError::Invalid("kv ttl must be at least 1 ms".into())),
        Some(t) if t > MAX_KV_TTL_MS => Err(ApplyError::Invalid(format!(
            "kv ttl is over the maximum {MAX_KV_TTL_MS} ms (30 days)"
        ))),
        _ => Ok(()),
    }
}

/// Why a batch was refused; nothing of it was applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// The state conflicts with the change (error 2003).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The user may not do this (error 2004).
    #[error("not allowed: {0}")]
    NotAllowed(String),
    /// The change itself is malformed (error 1001).
    #[error("invalid change: {0}")]
    Invalid(String),
    /// A KV entry is no longer at the version a `kv-put` named: another
    /// call wrote it since this call read it. The dispatcher re-runs the
    /// call on fresh state (`plugins.kv_retries` times, then 2003).
    #[error("stale: {0}")]
    Stale(String),
    /// A [`StateChange::UserOffline`] condition failed: the user is
    /// connected again, so the disconnect's batch was not applied.
    #[error("user {0} is connected again")]
    UserBack(u64),
    /// The store could not be reached.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The store could not answer. The Redis error, where there is one, is
/// kept as the source; callers answer clients 2002 ("state store
/// unavailable; nothing was applied") or, for a write whose outcome is
/// unknown ([`StoreError::outcome_unknown`]), 2005, and log the cause.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// `store.url` is not a Redis URL the client understands.
    #[error("bad store.url: {0}")]
    BadUrl(#[source] Arc<::redis::RedisError>),
    /// Redis could not be reached at start.
    #[error("cannot reach Redis at {url}: {source}")]
    Connect {
        /// `store.url`.
        url: String,
        /// Why.
        #[source]
        source: Arc<::redis::RedisError>,
    },
    /// A command failed (connection lost, timeout, Redis error reply).
    #[error("redis: {0}")]
    Redis(#[source] Arc<::redis::RedisError>),
    /// A connection attempt took too long.
    #[error("redis: {0} timed out")]
    Timeout(&'static str),
    /// A script answered something it never answers.
    #[error("unexpected answer from a store script: {0:?}")]
    Script(String),
    /// The node's Redis link was cut on purpose (tests that kill a node).
    #[error("this node's Redis link was severed")]
    Severed,
    /// The batch applied but its webhook events could not be recorded
    /// (the outbox's disk or stream failed): answered 2005, since the
    /// change itself stands.
    #[error("webhook outbox: {0}")]
    Outbox(String),
}

impl StoreError {
    /// Whether a write that failed with this error may still have been
    /// applied: the command was sent and its answer never came (the
    /// answer timed out, or the connection failed while it was in
    /// flight), or a script answered something unexpected after it ran.
    /// False when the command cannot have run: Redis refused the
    /// connection, answered with an error reply, the link was severed, or
    /// no connection was ever made. Such a write is answered 2005, never
    /// 2002 ("nothing was applied"): with a Redis paused past the answer
    /// timeout (`CLIENT PAUSE`, a long fork) the timed-out connection is
    /// dropped and the held write usually discarded, but one Redis had
    /// already started is applied (`tests/it/faults.rs`).
    pub fn outcome_unknown(&self) -> bool {
        match self {
            // An error reply, a parse or client error, a refused
            // connection: Redis did not run it, or the request never left.
            // Any other I/O error (a timeout, a reset, a connection closed
            // with requests in flight, which redis-rs reports as a broken
            // pipe) may have come after Redis ran it.
            StoreError::Redis(e) => {
                e.kind() == ::redis::ErrorKind::Io && !e.is_connection_refusal()
            }
            StoreError::Script(_) | StoreError::Outbox(_) => true,
            StoreError::BadUrl(_)
            | StoreError::Connect { .. }
            | StoreError::Timeout(_)
            | StoreError::Severed => false,
        }
    }
}

impl From<::redis::RedisError> for StoreError {
    fn from(e: ::redis::RedisError) -> Self {
        StoreError::Redis(Arc::new(e))
    }
}

/// Two store errors are equal when they say the same (Redis errors have no
/// equality of their own); used to compare two stores' answers in tests.
impl PartialEq for StoreError {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

impl Eq for StoreError {}

/// Unix time in milliseconds (KV expiry of the memory store).
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

/// The shared state. Every method is a short critical section; none holds
/// a lock across an await.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The room the user is in.
    async fn membership_of(&self, user_id: u64) -> Result<Option<Membership>, StoreError>;
    /// Members of a room in join order (empty for a room nobody is in).
    async fn room_members(&self, channel_name: &str) -> Result<Vec<u64>, StoreError>;
    /// All seats of a room in id order.
    async fn room_seats(&self, channel_name: &str) -> Result<Vec<Seat>, StoreError>;
    /// The room as a whole, or `None` when nobody is in it.
    async fn room(&self, channel_name: &str) -> Result<Option<RoomView>, StoreError>;
    /// The call the user is in.
    async fn call_of(&self, user_id: u64) -> Result<Option<Call>, StoreError>;
    /// A key of a plugin's key-value space (`None` when absent or
    /// expired).
    async fn kv_get(&self, plugin: &str, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self.kv_entry(plugin, key).await?.map(|r| r.value))
    }
    /// A key with its version (`None` when absent or expired).
    async fn kv_entry(&self, plugin: &str, key: &str) -> Result<Option<KvRecord>, StoreError>;
    /// The plugin's live keys starting with `prefix`, in byte order, at
    /// most `limit` (itself capped at [`MAX_KV_LIST`]).
    async fn kv_list(
        &self,
        plugin: &str,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError>;
    /// Applies a batch atomically: every condition is checked first, and
    /// either every change is applied or none is.
    async fn apply(&self, changes: &[StateChange]) -> Result<(), ApplyError> {
        self.apply_logged(changes, &[]).await.map(drop)
    }
    /// [`Store::apply`], and in the same atomic step logs each of `log`
    /// in its stream's history (`recovery.history_size`,
    /// `recovery.history_ttl`) under the stream's next `seq`; the stamped
    /// frames, in `log`'s order. A refused batch logs nothing. `log` may be
    /// non-empty with no change (a gift changes no state).
    async fn apply_logged(
        &self,
        changes: &[StateChange],
        log: &[LogEntry],
    ) -> Result<Vec<Stamped>, ApplyError> {
        self.apply_reported(changes, log).await.map(|a| a.stamps)
    }
    /// [`Store::apply_logged`], also reporting every room, seat and call
    /// change the batch made ([`Fact`]), numbered per room in the same
    /// atomic step, so events follow the state itself (issue 16).
    async fn apply_reported(
        &self,
        changes: &[StateChange],
        log: &[LogEntry],
    ) -> Result<Applied, ApplyError>;
    /// What `stream` holds after `from` ([`Replay::Recovered`], in order),
    /// or [`Replay::Lost`] when its history cannot fill the gap (another
    /// epoch, a `seq` ahead of the stream, older than the history).
    async fn history_since(&self, stream: &Stream, from: &Position) -> Result<Replay, StoreError>;
    /// The room with its attributes and its stream's position, in one
    /// atomic step; at most `member_limit` members are listed. `None` when
    /// nobody is in the room.
    async fn room_snapshot(
        &self,
        channel_name: &str,
        member_limit: usize,
    ) -> Result<Option<RoomSnapshot>, StoreError>;
    /// A room's attributes (version 0 and none when it has none).
    async fn room_attrs(&self, channel_name: &str) -> Result<RoomAttrs, StoreError>;
    /// The user's profile as the app backend gave it (a JSON object's
    /// text), `None` when absent or expired.
    async fn profile(&self, user_id: u64) -> Result<Option<String>, StoreError>;
    /// Stores (`Some`) or deletes (`None`) the user's profile; a stored
    /// profile expires `ttl_s` seconds later (1 ..= [`MAX_PROFILE_TTL_S`],
    /// checked by the caller).
    async fn set_profile(
        &self,
        user_id: u64,
        profile: Option<&str>,
        ttl_s: u64,
    ) -> Result<(), StoreError>;
    /// Claims at most `limit` timers due now (earliest first): each is
    /// removed from the pending set atomically, so of several nodes
    /// claiming at once exactly one gets a given timer.
    async fn claim_due_timers(&self, limit: usize) -> Result<Vec<DueTimer>, StoreError>;
    /// When the earliest pending timer is due (unix ms), if any.
    async fn next_timer_due(&self) -> Result<Option<u64>, StoreError>;
    /// Puts a claimed timer whose event could not run back, pending again
    /// and due `delay_ms` from now as attempt `timer.attempt + 1`, for any
    /// node to claim; unless its plugin set the same key again since the
    /// claim: that newer timer wins and `false` is returned. The bounds are
    /// not checked again (the timer was counted when it was set).
    async fn requeue_timer(&self, timer: &DueTimer, delay_ms: u64) -> Result<bool, StoreError>;
    /// Records that the user is connected on `node`; returns the node the
    /// user was connected to before, if any.
    async fn set_online(&self, user_id: u64, node: &str) -> Result<Option<String>, StoreError>;
    /// Records that the user is no longer connected (if still on `node`).
    async fn set_offline(&self, user_id: u64, node: &str) -> Result<(), StoreError>;
    /// The node the user is connected to, if any.
    async fn node_of(&self, user_id: u64) -> Result<Option<String>, StoreError>;
    /// The node of each user, in order (one round trip where the store
    /// allows it).
    async fn nodes_of(&self, users: &[u64]) -> Result<Vec<Option<String>>, StoreError> {
        let mut nodes = Vec::with_capacity(users.len());
        for user in users {
            nodes.push(self.node_of(*user).await?);
        }
        Ok(nodes)
    }
}
