//! The single-node store: everything in one process, behind one mutex.
//!
//! Every method is a short synchronous critical section (no await inside),
//! so a `std::sync::Mutex` is the right lock: contention is a few hundred
//! nanoseconds, and a batch is atomic simply by holding the lock while it
//! checks and applies.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Mutex;

use async_trait::async_trait;

use super::history::MemoryHistory;
use super::{
    Applied, ApplyError, AttrLimits, Call, DueTimer, Fact, FactKind, HistoryLimits, KvRecord,
    LogEntry, MAX_KV_INT, MAX_KV_LIST, Membership, Position, Replay, RoomAttrs, RoomSnapshot,
    RoomView, Seat, StateChange, Store, StoreError, Stream, TimerBounds, check_attr_changes,
    check_kv_ttl, check_timer_delay, seat_status, unix_ms,
};

/// One KV entry: value, version, and expiry (unix ms).
#[derive(Debug, Clone)]
struct KvValue {
    value: String,
    version: u64,
    expires_at: Option<u64>,
}

impl KvValue {
    fn live(&self, now: u64) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }
}

/// One room's attributes: entries, version, expiry (unix ms).
#[derive(Debug, Clone, Default)]
struct Attrs {
    entries: BTreeMap<String, String>,
    version: u64,
    expires_at: Option<u64>,
}

impl Attrs {
    fn live(&self, now: u64) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }
}

/// A stored profile and its expiry (unix ms).
#[derive(Debug, Clone)]
struct StoredProfile {
    json: String,
    expires_at: u64,
}

/// One room's state.
#[derive(Debug, Clone)]
struct Room {
    room_id: u64,
    /// Members in join order.
    members: Vec<u64>,
    /// Seats 1..N, index = id - 1.
    seats: Vec<Seat>,
}

/// How often a batch sweeps expired KV entries and idle room attributes
/// out of memory. An expired entry already reads as absent (version 0)
/// and is replaced on its next write, so the sweep changes no answer; it
/// only keeps a long-lived node from holding every per-day counter and
/// every closed invitation it ever wrote.
const SWEEP_EVERY_MS: u64 = 10_000;

/// Everything the store holds.
#[derive(Debug, Default)]
struct State {
    rooms: HashMap<String, Room>,
    /// user -> channel of the room the user is in.
    member_of: HashMap<u64, String>,
    /// user -> call; both users of a call have an entry.
    calls: HashMap<u64, Call>,
    /// (plugin, key) -> value, version, expiry.
    kv: BTreeMap<(String, String), KvValue>,
    /// plugin -> its last KV version number.
    kv_versions: HashMap<String, u64>,
    /// user -> node holding the user's connection.
    presence: HashMap<u64, String>,
    /// channel -> the room's attributes; kept when the room empties (see
    /// [`AttrLimits::idle_ttl_ms`]).
    attrs: HashMap<String, Attrs>,
    /// The last attributes version number handed out.
    attr_seq: u64,
    /// Rooms whose attributes the running batch wrote, in the order first
    /// written: versions are handed out in that order, as the Redis script
    /// does (scratch only).
    attrs_dirty: Vec<String>,
    /// Rooms whose attributes' expiry the running batch must settle:
    /// written, joined or left (scratch only).
    attrs_settle: BTreeSet<String>,
    /// When (unix ms) the next batch sweeps expired KV entries and idle
    /// room attributes out of memory ([`SWEEP_EVERY_MS`]).
    sweep_at_ms: u64,
    /// Pending plugin timers (contract 1.1). Not part of a batch's scratch
    /// copy: a [`TimerPlanner`] checks a batch's timer changes against it,
    /// and [`Timers::commit`] writes them once the whole batch passed.
    timers: Timers,
    /// Every stream's recent notifications (issue 17), under the same
    /// lock as the state, so a batch and its notifications are logged in
    /// one step and a snapshot reads both at one instant.
    history: MemoryHistory,
    /// What the running batch changed, in order, not yet numbered
    /// (scratch only; issue 16).
    facts: Vec<Fact>,
    /// channel -> the room's last fact number and when it was last used
    /// (unix ms). Swept after [`ROOM_SEQ_IDLE_MS`] without a fact, so rooms
    /// that come and go (a channel per call) do not pile up; a swept room
    /// goes on from a higher number ([`next_room_seq_base`]), never lower.
    room_seqs: HashMap<String, (u64, u64)>,
}

/// How long a room's fact counter outlives its last fact: 24 h, the
/// default `max_age` of a webhook event (an event older than that is gone
/// from every outbox anyway). Both stores use it.
pub const ROOM_SEQ_IDLE_MS: u64 = 24 * 3600 * 1000;

/// Where a room's fact numbers start when it has no counter (new, or
/// swept after [`ROOM_SEQ_IDLE_MS`]): the time in ms times 1000 (and no
/// lower than the store's own start), so the numbers of a room only grow,
/// across restarts and sweeps, while it averages under 1,000 facts a
/// millisecond. The Redis store's `apply.lua` starts a counter the same
/// way.
fn next_room_seq_base(store_base: u64, now_ms: u64) -> u64 {
    store_base.max(now_ms.saturating_mul(1000))
}

impl State {
    /// The attributes of `channel_name` as they read at `now` (empty,
    /// version 0, once idle past their TTL or never set).
    fn live_attrs(&self, channel_name: &str, now: u64) -> RoomAttrs {
        self.attrs
            .get(channel_name)
            .filter(|a| a.live(now))
            .map(|a| RoomAttrs {
                version: a.version,
                entries: a
                    .entries
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            })
            .unwrap_or_default()
    }
}

/// One pending timer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PendingTimer {
    /// When it fires next (the index's order).
    due_ms: u64,
    /// When it was first due; differs from `due_ms` once put back.
    first_due_ms: u64,
    /// Times it was put back ([`Store::requeue_timer`]).
    attempt: u32,
    payload: String,
    channel_name: Option<String>,
}

/// (plugin, key).
type TimerId = (String, String);

/// The pending timers, indexed by id and by due time, with the counts the
/// bounds are checked against.
#[derive(Debug, Default)]
struct Timers {
    pending: HashMap<TimerId, PendingTimer>,
    /// (due ms, plugin, key), earliest first.
    due: BTreeSet<(u64, String, String)>,
    /// plugin -> its pending timers.
    per_plugin: HashMap<String, u32>,
    /// channel -> pending timers naming it.
    per_room: HashMap<String, u32>,
}

/// What a batch does to the timers: each touched id and what it holds
/// after the batch (`None`: no timer).
type TimerPlan = HashMap<TimerId, Option<PendingTimer>>;

/// Checks a batch's timer changes, in batch order, against the pending
/// timers without changing them, and records what they do.
struct TimerPlanner<'a> {
    timers: &'a Timers,
    plan: TimerPlan,
    /// Changes of the counts this batch made so far, by plugin and room.
    plugin_delta: HashMap<String, i64>,
    room_delta: HashMap<String, i64>,
}

impl<'a> TimerPlanner<'a> {
    fn new(timers: &'a Timers) -> Self {
        Self {
            timers,
            plan: TimerPlan::new(),
            plugin_delta: HashMap::new(),
            room_delta: HashMap::new(),
        }
    }

    /// One change of the batch (anything but a timer change is ignored).
    fn step(&mut self, change: &StateChange, now: u64) -> Result<(), ApplyError> {
        let (id, new) = match change {
            StateChange::SetTimer {
                plugin,
                key,
                delay_ms,
                payload,
                channel_name,
                bounds,
            } => {
                check_timer_delay(*delay_ms)?;
                let due_ms = now.saturating_add(*delay_ms);
                let timer = PendingTimer {
                    due_ms,
                    first_due_ms: due_ms,
                    attempt: 0,
                    payload: payload.clone(),
                    channel_name: channel_name.clone(),
                };
                ((plugin.clone(), key.clone()), Some((timer, *bounds)))
            }
            StateChange::CancelTimer { plugin, key } => ((plugin.clone(), key.clone()), None),
            _ => return Ok(()),
        };
        let old = match self.plan.get(&id) {
            Some(planned) => planned.clone(),
            None => self.timers.pending.get(&id).cloned(),
        };
        if let Some(old) = old {
            *self.plugin_delta.entry(id.0.clone()).or_default() -= 1;
            if let Some(room) = old.channel_name {
                *self.room_delta.entry(room).or_default() -= 1;
            }
        }
        let Some((timer, bounds)) = new else {
            self.plan.insert(id, None);
            return Ok(());
        };
        let delta = self.plugin_delta.entry(id.0.clone()).or_default();
        *delta += 1;
        let count = self.timers.per_plugin.get(&id.0).copied().unwrap_or(0);
        check_bound(i64::from(count) + *delta, bounds, &id.0, None)?;
        if let Some(room) = &timer.channel_name {
            let delta = self.room_delta.entry(room.clone()).or_default();
            *delta += 1;
            let count = self.timers.per_room.get(room).copied().unwrap_or(0);
            check_bound(i64::from(count) + *delta, bounds, &id.0, Some(room))?;
        }
        self.plan.insert(id, Some(timer));
        Ok(())
    }
}

impl Timers {
    /// Applies a plan a [`TimerPlanner`] made.
    fn commit(&mut self, plan: TimerPlan) {
        for (id, timer) in plan {
            self.remove(&id);
            if let Some(timer) = timer {
                self.due.insert((timer.due_ms, id.0.clone(), id.1.clone()));
                *self.per_plugin.entry(id.0.clone()).or_default() += 1;
                if let Some(room) = &timer.channel_name {
                    *self.per_room.entry(room.clone()).or_default() += 1;
                }
                self.pending.insert(id, timer);
            }
        }
    }

    /// Removes a pending timer, if any, with its index and counts.
    fn remove(&mut self, id: &TimerId) -> Option<PendingTimer> {
        let timer = self.pending.remove(id)?;
        self.due.remove(&(timer.due_ms, id.0.clone(), id.1.clone()));
        decrement(&mut self.per_plugin, &id.0);
        if let Some(room) = &timer.channel_name {
            decrement(&mut self.per_room, room);
        }
        Some(timer)
    }

    /// Removes and returns at most `limit` timers due at `now`.
    fn claim(&mut self, now: u64, limit: usize) -> Vec<DueTimer> {
        let ids: Vec<TimerId> = self
            .due
            .iter()
            .take_while(|(due, _, _)| *due <= now)
            .take(limit)
            .map(|(_, plugin, key)| (plugin.clone(), key.clone()))
            .collect();
        ids.into_iter()
            .filter_map(|id| {
                let timer = self.remove(&id)?;
                Some(DueTimer {
                    plugin: id.0,
                    key: id.1,
                    payload: timer.payload,
                    channel_name: timer.channel_name,
                    due_ms: timer.first_due_ms,
                    attempt: timer.attempt,
                })
            })
            .collect()
    }

    /// Puts a claimed timer back, due at `at`, unless its id is pending
    /// again (a newer timer wins); whether it was put back.
    fn requeue(&mut self, timer: &DueTimer, at: u64) -> bool {
        let id = (timer.plugin.clone(), timer.key.clone());
        if self.pending.contains_key(&id) {
            return false;
        }
        let pending = PendingTimer {
            due_ms: at,
            first_due_ms: timer.due_ms,
            attempt: timer.attempt.saturating_add(1),
            payload: timer.payload.clone(),
            channel_name: timer.channel_name.clone(),
        };
        self.commit(TimerPlan::from([(id, Some(pending))]));
        true
    }
}

/// Refuses a count past its bound (per room when `room` is named).
fn check_bound(
    total: i64,
    bounds: TimerBounds,
    plugin: &str,
    room: Option<&str>,
) -> Result<(), ApplyError> {
    let (bound, what, key) = match room {
        None => (
            bounds.per_plugin,
            format!("plugin {plugin}"),
            "plugins.max_timers_per_plugin",
        ),
        Some(room) => (
            bounds.per_room,
            format!("room {room}"),
            "plugins.max_timers_per_room",
        ),
    };
    if total > i64::from(bound) {
        return Err(ApplyError::Conflict(format!(
            "{what} already has {bound} pending timers ({key})"
        )));
    }
    Ok(())
}

fn decrement(counts: &mut HashMap<String, u32>, name: &str) {
    if let Some(n) = counts.get_mut(name) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            counts.remove(name);
        }
    }
}

/// The in-memory [`Store`] used by a single node (`store.url = "memory://"`).
#[derive(Debug)]
pub struct MemoryStore {
    /// Seats per room (`rooms.seats`).
    seats_per_room: u32,
    /// Bounds and idle expiry of room attributes (`[rooms.attributes]`).
    attr_limits: AttrLimits,
    /// Bounds of each stream's history (`[recovery]`).
    history_limits: HistoryLimits,
    /// All state under one lock; see the module docs for why that is enough.
    state: Mutex<State>,
    /// Profiles, under their own lock: they are written by the server API
    /// and read by plugins, never in a batch.
    profiles: Mutex<Profiles>,
    /// Where every room's fact numbers start: the store's creation time in
    /// ms times 1000, so numbers keep increasing across restarts.
    seq_base: u64,
}

/// The stored profiles, swept of expired ones as they grow.
#[derive(Debug, Default)]
struct Profiles {
    by_user: HashMap<u64, StoredProfile>,
    /// Size at which the next sweep runs; doubling keeps sweeps amortized
    /// O(1) per write.
    sweep_at: usize,
}

impl MemoryStore {
    /// An empty store whose rooms have `seats_per_room` seats.
    pub fn new(seats_per_room: u32) -> Self {
        Self {
            seats_per_room,
            attr_limits: AttrLimits::default(),
            history_limits: HistoryLimits::default(),
            state: Mutex::new(State::default()),
            profiles: Mutex::new(Profiles::default()),
            seq_base: unix_ms().saturating_mul(1000),
        }
    }

    /// The same store with these room attribute bounds.
    pub fn with_attr_limits(mut self, limits: AttrLimits) -> Self {
        self.attr_limits = limits;
        self
    }

    /// The same store with these history bounds (`[recovery]`).
    pub fn with_history_limits(mut self, limits: HistoryLimits) -> Self {
        self.history_limits = limits;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock would be a bug in this file; the
        // state is still consistent because every batch is checked on a
        // copy first, so recovering the guard is safe.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn free_seats(&self) -> Vec<Seat> {
        (1..=self.seats_per_room).map(Seat::free).collect()
    }
}

impl State {
    /// Drops expired KV entries and expired (idle) room attributes; both
    /// already read as absent. Runs at most every [`SWEEP_EVERY_MS`].
    fn sweep(&mut self, now: u64) {
        self.kv.retain(|_, v| v.live(now));
        self.attrs.retain(|_, a| a.live(now));
        self.room_seqs
            .retain(|_, (_, last)| now.saturating_sub(*last) < ROOM_SEQ_IDLE_MS);
        self.sweep_at_ms = now.saturating_add(SWEEP_EVERY_MS);
    }

    fn membership(&self, user_id: u64) -> Option<Membership> {
        let channel = self.member_of.get(&user_id)?;
        let room = self.rooms.get(channel)?;
        let seat_id = room
            .seats
            .iter()
            .find(|s| s.user_id == Some(user_id))
            .map(|s| s.id);
        Some(Membership {
            channel_name: channel.clone(),
            room_id: room.room_id,
            seat_id,
        })
    }

    fn leave(&mut self, user_id: u64) {
        let Some(channel) = self.member_of.remove(&user_id) else {
            return;
        };
        let Some(room) = self.rooms.get_mut(&channel) else {
            return;
        };
        room.members.retain(|m| *m != user_id);
        let freed = free_user_seat(room, user_id);
        let vacated = room.members.is_empty();
        if vacated {
            self.rooms.remove(&channel);
        }
        if let Some(seat) = freed {
            self.facts.push(
                Fact::new(FactKind::SeatFreed, &channel)
                    .user(user_id)
                    .seat(seat),
            );
        }
        self.facts
            .push(Fact::new(FactKind::Exited, &channel).user(user_id));
        if vacated {
            self.facts.push(Fact::new(FactKind::Vacated, &channel));
        }
    }

    /// The live entry at a key.
    fn kv_live(&self, plugin: &str, key: &str, now: u64) -> Option<&KvValue> {
        self.kv
            .get(&(plugin.to_string(), key.to_string()))
            .filter(|v| v.live(now))
    }

    /// The plugin's next version number.
    fn next_kv_version(&mut self, plugin: &str) -> u64 {
        let counter = self.kv_versions.entry(plugin.to_string()).or_insert(0);
        *counter += 1;
        *counter
    }

    fn kv_write(&mut self, plugin: &str, key: &str, value: String, expires_at: Option<u64>) {
        let version = self.next_kv_version(plugin);
        self.kv.insert(
            (plugin.to_string(), key.to_string()),
            KvValue {
                value,
                version,
                expires_at,
            },
        );
    }

    fn apply_one(
        &mut self,
        change: &StateChange,
        seats: u32,
        limits: &AttrLimits,
        now: u64,
    ) -> Result<(), ApplyError> {
        match change {
            StateChange::JoinRoom {
                user_id,
                channel_name,
                room_id,
            } => {
                if let Some(old) = self.member_of.get(user_id).cloned() {
                    self.attrs_settle.insert(old);
                }
                self.join(*user_id, channel_name, *room_id, seats);
                self.attrs_settle.insert(channel_name.clone());
            }
            StateChange::LeaveRoom {
                user_id,
                channel_name,
            } => {
                self.require_member(*user_id, channel_name)?;
                self.leave(*user_id);
                self.attrs_settle.insert(channel_name.clone());
            }
            StateChange::SetRoomAttr {
                channel_name,
                key,
                value,
                if_version,
            } => {
                let attrs = self.attrs_for_write(channel_name, *if_version, now)?;
                match value {
                    Some(value) => {
                        let adds = !attrs.entries.contains_key(key);
                        if adds && attrs.entries.len() >= limits.max_keys {
                            return Err(ApplyError::Conflict(format!(
                                "room {channel_name} already has {} attributes, the most allowed",
                                limits.max_keys
                            )));
                        }
                        attrs.entries.insert(key.clone(), value.clone());
                    }
                    None => {
                        attrs.entries.remove(key);
                    }
                }
            }
            StateChange::ClearRoomAttrs {
                channel_name,
                if_version,
            } => {
                self.attrs_for_write(channel_name, *if_version, now)?
                    .entries
                    .clear();
            }
            StateChange::TakeSeat {
                channel_name,
                seat_id,
                user_id,
            } => {
                self.take_seat(channel_name, *seat_id, *user_id)?;
            }
            StateChange::FreeSeat {
                channel_name,
                user_id,
            } => {
                self.require_member(*user_id, channel_name)?;
                let room = self.room_mut(channel_name)?;
                let Some(seat) = free_user_seat(room, *user_id) else {
                    return Err(ApplyError::NotAllowed(format!(
                        "user {user_id} holds no seat"
                    )));
                };
                self.facts.push(
                    Fact::new(FactKind::SeatFreed, channel_name)
                        .user(*user_id)
                        .seat(seat),
                );
            }
            StateChange::SetSeat {
                channel_name,
                seat_id,
                status,
                microphone,
            } => {
                self.set_seat(channel_name, *seat_id, *status, *microphone)?;
            }
            StateChange::StartCall {
                user_id,
                receiver_id,
                channel_name,
            } => {
                self.start_call(*user_id, *receiver_id, channel_name)?;
            }
            StateChange::EndCall { user_id } => self.end_call(*user_id),
            StateChange::UserOffline { user_id } => {
                if self.presence.contains_key(user_id) {
                    return Err(ApplyError::UserBack(*user_id));
                }
            }
            StateChange::KvSet { plugin, key, value } => {
                self.kv_write(plugin, key, value.clone(), None);
            }
            StateChange::KvPut {
                plugin,
                key,
                value,
                if_version,
                ttl_ms,
            } => {
                check_kv_ttl(*ttl_ms)?;
                if let Some(expected) = if_version {
                    let current = self.kv_live(plugin, key, now).map_or(0, |v| v.version);
                    if current != *expected {
                        return Err(ApplyError::Stale(format!(
                            "kv key `{key}` is at version {current}, not {expected}"
                        )));
                    }
                }
                let expires_at = ttl_ms.map(|t| now.saturating_add(t));
                self.kv_write(plugin, key, value.clone(), expires_at);
            }
            StateChange::KvIncr {
                plugin,
                key,
                delta,
                ttl_ms,
            } => {
                check_kv_ttl(*ttl_ms)?;
                let (current, expiry) = match self.kv_live(plugin, key, now) {
                    None => (0, None),
                    Some(v) => (kv_integer(key, &v.value)?, v.expires_at),
                };
                // Both magnitudes are at most 2^53 - 1 before adding, so
                // the sum cannot overflow an i64.
                let sum = (delta.unsigned_abs() <= MAX_KV_INT.unsigned_abs())
                    .then(|| current + delta)
                    .filter(|sum| sum.abs() <= MAX_KV_INT)
                    .ok_or_else(|| {
                        ApplyError::Conflict(format!("kv key `{key}` would overflow"))
                    })?;
                let expires_at = ttl_ms.map(|t| now.saturating_add(t)).or(expiry);
                self.kv_write(plugin, key, sum.to_string(), expires_at);
            }
            StateChange::KvDelete { plugin, key } => {
                self.kv.remove(&(plugin.clone(), key.clone()));
            }
            // Checked by `TimerPlanner`, applied by `Timers::commit`.
            StateChange::SetTimer { .. } | StateChange::CancelTimer { .. } => {}
        }
        Ok(())
    }

    /// The room's attributes to write, after checking the batch's
    /// condition against the version they had when the batch started
    /// (versions change only when the batch ends).
    fn attrs_for_write(
        &mut self,
        channel: &str,
        if_version: Option<u64>,
        now: u64,
    ) -> Result<&mut Attrs, ApplyError> {
        if self.attrs.get(channel).is_some_and(|a| !a.live(now)) {
            self.attrs.remove(channel);
        }
        let attrs = self.attrs.entry(channel.to_string()).or_default();
        if let Some(expected) = if_version
            && attrs.version != expected
        {
            return Err(ApplyError::Stale(format!(
                "room {channel} attributes are at version {}, not {expected}",
                attrs.version
            )));
        }
        if !self.attrs_dirty.iter().any(|c| c == channel) {
            self.attrs_dirty.push(channel.to_string());
        }
        self.attrs_settle.insert(channel.to_string());
        Ok(attrs)
    }

    /// Ends a batch for the attributes: each written room gets the next
    /// version (or loses its record when it has none left); each written,
    /// joined or left room's attributes never expire while anyone is in
    /// the room, else expire `idle_ttl_ms` from now.
    fn settle_attrs(&mut self, idle_ttl_ms: u64, now: u64) {
        for channel in std::mem::take(&mut self.attrs_dirty) {
            match self.attrs.get_mut(&channel) {
                Some(attrs) if attrs.entries.is_empty() => {
                    self.attrs.remove(&channel);
                }
                Some(attrs) => {
                    self.attr_seq += 1;
                    attrs.version = self.attr_seq;
                }
                None => {}
            }
        }
        for channel in std::mem::take(&mut self.attrs_settle) {
            let occupied = self.rooms.contains_key(&channel);
            if let Some(attrs) = self.attrs.get_mut(&channel) {
                attrs.expires_at = (!occupied).then(|| now.saturating_add(idle_ttl_ms));
            }
        }
    }

    fn join(&mut self, user_id: u64, channel: &str, room_id: u64, seats: u32) {
        if self.member_of.get(&user_id).is_some_and(|c| c == channel) {
            return;
        }
        self.leave(user_id);
        if !self.rooms.contains_key(channel) {
            self.facts
                .push(Fact::new(FactKind::Occupied, channel).room(room_id));
        }
        let room = self
            .rooms
            .entry(channel.to_string())
            .or_insert_with(|| Room {
                room_id,
                members: Vec::new(),
                seats: (1..=seats).map(Seat::free).collect(),
            });
        room.members.push(user_id);
        let room_id = room.room_id;
        self.member_of.insert(user_id, channel.to_string());
        self.facts.push(
            Fact::new(FactKind::Entered, channel)
                .user(user_id)
                .room(room_id),
        );
    }

    fn require_member(&self, user_id: u64, channel: &str) -> Result<(), ApplyError> {
        if self.member_of.get(&user_id).is_some_and(|c| c == channel) {
            Ok(())
        } else {
            Err(ApplyError::NotAllowed(format!(
                "user {user_id} is not in room {channel}"
            )))
        }
    }

    fn room_mut(&mut self, channel: &str) -> Result<&mut Room, ApplyError> {
        self.rooms
            .get_mut(channel)
            .ok_or_else(|| ApplyError::NotAllowed(format!("nobody is in room {channel}")))
    }

    fn take_seat(&mut self, channel: &str, seat_id: u32, user_id: u64) -> Result<(), ApplyError> {
        self.require_member(user_id, channel)?;
        let room = self.room_mut(channel)?;
        let index = seat_index(room, seat_id)?;
        let seat = &room.seats[index];
        if seat.user_id == Some(user_id) {
            return Err(ApplyError::Conflict(format!(
                "user {user_id} already holds seat {seat_id}"
            )));
        }
        if seat.status != seat_status::FREE {
            return Err(ApplyError::Conflict(format!("seat {seat_id} is not free")));
        }
        let freed = free_user_seat(room, user_id);
        room.seats[index] = Seat {
            id: seat_id,
            user_id: Some(user_id),
            status: seat_status::OCCUPIED,
            microphone: 1,
        };
        if let Some(old) = freed {
            self.facts.push(
                Fact::new(FactKind::SeatFreed, channel)
                    .user(user_id)
                    .seat(old),
            );
        }
        self.facts.push(
            Fact::new(FactKind::SeatTaken, channel)
                .user(user_id)
                .seat(seat_id),
        );
        Ok(())
    }

    fn set_seat(
        &mut self,
        channel: &str,
        seat_id: u32,
        status: u8,
        mic: u8,
    ) -> Result<(), ApplyError> {
        if status == seat_status::OCCUPIED || mic > 1 {
            return Err(ApplyError::Invalid(format!(
                "seat status {status} / microphone {mic}"
            )));
        }
        let room = self.room_mut(channel)?;
        let index = seat_index(room, seat_id)?;
        if room.seats[index].status == seat_status::OCCUPIED {
            return Err(ApplyError::Conflict(format!("seat {seat_id} is occupied")));
        }
        room.seats[index].status = status;
        room.seats[index].microphone = mic;
        Ok(())
    }

    fn start_call(
        &mut self,
        user_id: u64,
        receiver_id: u64,
        channel: &str,
    ) -> Result<(), ApplyError> {
        if user_id == receiver_id {
            return Err(ApplyError::Invalid("a call needs two users".into()));
        }
        // One reason for both users: a caller never learns which of them
        // is busy (issue 21: refusals do not reveal another user's call
        // state; the plugin checks first, this is the race between nodes).
        if self.calls.contains_key(&user_id) || self.calls.contains_key(&receiver_id) {
            return Err(ApplyError::Conflict(
                "a user of the call is already in one".into(),
            ));
        }
        let channel_name = channel.to_string();
        self.calls.insert(
            user_id,
            Call {
                peer_id: receiver_id,
                channel_name: channel_name.clone(),
            },
        );
        self.calls.insert(
            receiver_id,
            Call {
                peer_id: user_id,
                channel_name,
            },
        );
        self.facts.push(
            Fact::new(FactKind::CallStarted, channel)
                .user(user_id)
                .peer(receiver_id),
        );
        Ok(())
    }

    fn end_call(&mut self, user_id: u64) {
        if let Some(call) = self.calls.remove(&user_id) {
            self.calls.remove(&call.peer_id);
            self.facts.push(
                Fact::new(FactKind::CallEnded, &call.channel_name)
                    .user(user_id)
                    .peer(call.peer_id),
            );
        }
    }
}

/// The keys a batch can read or write, so that it can run on a copy of
/// only those.
#[derive(Debug, Default)]
struct Touched {
    channels: HashSet<String>,
    users: HashSet<u64>,
    callers: HashSet<u64>,
    kv: HashSet<(String, String)>,
}

impl Touched {
    fn of(state: &State, changes: &[StateChange]) -> Self {
        let mut t = Touched::default();
        for change in changes {
            t.add(change);
        }
        // A user's current room is touched whenever the user is.
        let current: Vec<String> = t
            .users
            .iter()
            .filter_map(|u| state.member_of.get(u).cloned())
            .collect();
        t.channels.extend(current);
        let peers: Vec<u64> = t
            .callers
            .iter()
            .filter_map(|u| state.calls.get(u).map(|c| c.peer_id))
            .collect();
        t.callers.extend(peers);
        t
    }

    fn add(&mut self, change: &StateChange) {
        match change {
            StateChange::JoinRoom {
                user_id,
                channel_name,
                ..
            }
            | StateChange::LeaveRoom {
                user_id,
                channel_name,
            }
            | StateChange::TakeSeat {
                user_id,
                channel_name,
                ..
            }
            | StateChange::FreeSeat {
                user_id,
                channel_name,
            } => {
                self.users.insert(*user_id);
                self.channels.insert(channel_name.clone());
            }
            StateChange::SetSeat { channel_name, .. }
            | StateChange::SetRoomAttr { channel_name, .. }
            | StateChange::ClearRoomAttrs { channel_name, .. } => {
                self.channels.insert(channel_name.clone());
            }
            StateChange::StartCall {
                user_id,
                receiver_id,
                ..
            } => {
                self.callers.extend([*user_id, *receiver_id]);
            }
            StateChange::EndCall { user_id } => {
                self.callers.insert(*user_id);
            }
            StateChange::KvSet { plugin, key, .. }
            | StateChange::KvDelete { plugin, key }
            | StateChange::KvPut { plugin, key, .. }
            | StateChange::KvIncr { plugin, key, .. } => {
                self.kv.insert((plugin.clone(), key.clone()));
            }
            StateChange::SetTimer { .. } | StateChange::CancelTimer { .. } => {}
            // Its condition reads the user's presence.
            StateChange::UserOffline { user_id } => {
                self.users.insert(*user_id);
            }
        }
    }

    fn extract(&self, state: &State) -> State {
        State {
            rooms: pick(&state.rooms, self.channels.iter()),
            member_of: pick(&state.member_of, self.users.iter()),
            calls: pick(&state.calls, self.callers.iter()),
            kv: self
                .kv
                .iter()
                .filter_map(|k| state.kv.get(k).map(|v| (k.clone(), v.clone())))
                .collect(),
            kv_versions: self
                .kv
                .iter()
                .filter_map(|(p, _)| state.kv_versions.get(p).map(|v| (p.clone(), *v)))
                .collect(),
            presence: pick(&state.presence, self.users.iter()),
            attrs: pick(&state.attrs, self.channels.iter()),
            attr_seq: state.attr_seq,
            attrs_dirty: Vec::new(),
            attrs_settle: BTreeSet::new(),
            // Scratch state is never swept; the real state is, after.
            sweep_at_ms: u64::MAX,
            timers: Timers::default(),
            // The history is appended to once the batch passed, on the
            // real state: the scratch copy never holds any.
            history: MemoryHistory::default(),
            facts: Vec::new(),
            room_seqs: HashMap::new(),
        }
    }

    fn write_back(&self, state: &mut State, mut scratch: State) {
        put_back(&mut state.rooms, &mut scratch.rooms, self.channels.iter());
        put_back(
            &mut state.member_of,
            &mut scratch.member_of,
            self.users.iter(),
        );
        put_back(&mut state.calls, &mut scratch.calls, self.callers.iter());
        for key in &self.kv {
            match scratch.kv.remove(key) {
                Some(v) => state.kv.insert(key.clone(), v),
                None => state.kv.remove(key),
            };
        }
        state.kv_versions.extend(scratch.kv_versions);
        put_back(&mut state.attrs, &mut scratch.attrs, self.channels.iter());
        state.attr_seq = scratch.attr_seq;
    }
}

fn pick<'a, K, V>(map: &HashMap<K, V>, keys: impl Iterator<Item = &'a K>) -> HashMap<K, V>
where
    K: std::hash::Hash + Eq + Clone + 'a,
    V: Clone,
{
    keys.filter_map(|k| map.get(k).map(|v| (k.clone(), v.clone())))
        .collect()
}

fn put_back<'a, K, V>(
    map: &mut HashMap<K, V>,
    from: &mut HashMap<K, V>,
    keys: impl Iterator<Item = &'a K>,
) where
    K: std::hash::Hash + Eq + Clone + 'a,
{
    for key in keys {
        match from.remove(key) {
            Some(v) => map.insert(key.clone(), v),
            None => map.remove(key),
        };
    }
}

fn seat_index(room: &Room, seat_id: u32) -> Result<usize, ApplyError> {
    let index = (seat_id as usize).wrapping_sub(1);
    if index < room.seats.len() {
        Ok(index)
    } else {
        Err(ApplyError::Invalid(format!(
            "no seat {seat_id} in this room"
        )))
    }
}

/// Frees the user's seat in the room; the seat they had, if any.
fn free_user_seat(room: &mut Room, user_id: u64) -> Option<u32> {
    let seat = room.seats.iter_mut().find(|s| s.user_id == Some(user_id))?;
    *seat = Seat::free(seat.id);
    Some(seat.id)
}

/// The integer a counter holds: an optional `-` and decimal digits, as the
/// Redis script reads it.
fn kv_integer(key: &str, value: &str) -> Result<i64, ApplyError> {
    let digits = value.strip_prefix('-').unwrap_or(value);
    let parsed =
        if !digits.is_empty() && value.len() <= 17 && digits.bytes().all(|b| b.is_ascii_digit()) {
            value.parse::<i64>().ok()
        } else {
            None
        };
    parsed
        .filter(|n| n.abs() <= MAX_KV_INT)
        .ok_or_else(|| ApplyError::Conflict(format!("kv key `{key}` does not hold an integer")))
}

#[async_trait]
impl Store for MemoryStore {
    async fn membership_of(&self, user_id: u64) -> Result<Option<Membership>, StoreError> {
        Ok(self.lock().membership(user_id))
    }

    async fn room_members(&self, channel_name: &str) -> Result<Vec<u64>, StoreError> {
        Ok(self
            .lock()
            .rooms
            .get(channel_name)
            .map(|r| r.members.clone())
            .unwrap_or_default())
    }

    async fn room_seats(&self, channel_name: &str) -> Result<Vec<Seat>, StoreError> {
        let state = self.lock();
        Ok(state
            .rooms
            .get(channel_name)
            .map(|r| r.seats.clone())
            .unwrap_or_else(|| self.free_seats()))
    }

    async fn room(&self, channel_name: &str) -> Result<Option<RoomView>, StoreError> {
        Ok(self.lock().rooms.get(channel_name).map(|r| RoomView {
            room_id: r.room_id,
            members: r.members.clone(),
            seats: r.seats.clone(),
        }))
    }

    async fn call_of(&self, user_id: u64) -> Result<Option<Call>, StoreError> {
        Ok(self.lock().calls.get(&user_id).cloned())
    }

    async fn kv_entry(&self, plugin: &str, key: &str) -> Result<Option<KvRecord>, StoreError> {
        let now = unix_ms();
        Ok(self.lock().kv_live(plugin, key, now).map(|v| KvRecord {
            value: v.value.clone(),
            version: v.version,
        }))
    }

    async fn kv_list(
        &self,
        plugin: &str,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let now = unix_ms();
        let state = self.lock();
        let start = (plugin.to_string(), prefix.to_string());
        Ok(state
            .kv
            .range(start..)
            .take_while(|((p, k), _)| p == plugin && k.starts_with(prefix))
            .filter(|(_, v)| v.live(now))
            .take(limit.min(MAX_KV_LIST))
            .map(|((_, k), _)| k.clone())
            .collect())
    }

    async fn apply_reported(
        &self,
        changes: &[StateChange],
        log: &[LogEntry],
    ) -> Result<Applied, ApplyError> {
        let mut state = self.lock();
        // All or nothing: run the batch on a scratch copy of just the
        // entries it can touch, and write them back only if every change
        // passed. Copying whole state would make each action O(everything).
        check_attr_changes(&self.attr_limits, changes)?;
        let touched = Touched::of(&state, changes);
        let mut scratch = touched.extract(&state);
        let now = unix_ms();
        // Timer changes are checked in batch order with the others, so the
        // first refusal is the same as the Redis script's.
        let mut timers = TimerPlanner::new(&state.timers);
        for change in changes {
            scratch.apply_one(change, self.seats_per_room, &self.attr_limits, now)?;
            timers.step(change, now)?;
        }
        scratch.settle_attrs(self.attr_limits.idle_ttl_ms, now);
        let mut facts = std::mem::take(&mut scratch.facts);
        let plan = timers.plan;
        touched.write_back(&mut state, scratch);
        state.timers.commit(plan);
        if now >= state.sweep_at_ms {
            state.sweep(now);
            state.history.sweep(&self.history_limits, now);
        }
        for fact in &mut facts {
            let (seq, last) = state
                .room_seqs
                .entry(fact.channel_name.clone())
                .or_insert_with(|| (next_room_seq_base(self.seq_base, now), now));
            *seq += 1;
            *last = now;
            fact.room_seq = *seq;
        }
        let limits = &self.history_limits;
        let stamps = log
            .iter()
            .map(|entry| state.history.append(limits, entry, now))
            .collect();
        Ok(Applied {
            stamps,
            facts,
            recorded: false,
        })
    }

    async fn history_since(&self, stream: &Stream, from: &Position) -> Result<Replay, StoreError> {
        let now = unix_ms();
        Ok(self
            .lock()
            .history
            .since(&self.history_limits, stream, from, now))
    }

    async fn room_snapshot(
        &self,
        channel_name: &str,
        member_limit: usize,
    ) -> Result<Option<RoomSnapshot>, StoreError> {
        let now = unix_ms();
        let mut state = self.lock();
        let Some(room) = state.rooms.get(channel_name) else {
            return Ok(None);
        };
        let view = RoomView {
            room_id: room.room_id,
            members: room.members.iter().take(member_limit).copied().collect(),
            seats: room.seats.clone(),
        };
        let member_count = room.members.len();
        let attrs = state.live_attrs(channel_name, now);
        let stream = Stream::Room(channel_name.to_string());
        let at = state.history.position(&self.history_limits, &stream, now);
        Ok(Some(RoomSnapshot {
            view,
            member_count,
            attrs,
            at,
        }))
    }

    async fn room_attrs(&self, channel_name: &str) -> Result<RoomAttrs, StoreError> {
        let now = unix_ms();
        let state = self.lock();
        Ok(state.live_attrs(channel_name, now))
    }

    async fn profile(&self, user_id: u64) -> Result<Option<String>, StoreError> {
        let now = unix_ms();
        let profiles = self.profiles.lock().unwrap_or_else(|p| p.into_inner());
        Ok(profiles
            .by_user
            .get(&user_id)
            .filter(|p| p.expires_at > now)
            .map(|p| p.json.clone()))
    }

    async fn set_profile(
        &self,
        user_id: u64,
        profile: Option<&str>,
        ttl_s: u64,
    ) -> Result<(), StoreError> {
        let now = unix_ms();
        let mut profiles = self.profiles.lock().unwrap_or_else(|p| p.into_inner());
        let Some(json) = profile else {
            profiles.by_user.remove(&user_id);
            return Ok(());
        };
        let expires_at = now.saturating_add(ttl_s.saturating_mul(1000));
        profiles.by_user.insert(
            user_id,
            StoredProfile {
                json: json.to_string(),
                expires_at,
            },
        );
        if profiles.by_user.len() >= profiles.sweep_at {
            profiles.by_user.retain(|_, p| p.expires_at > now);
            profiles.sweep_at = (profiles.by_user.len() * 2).max(1024);
        }
        Ok(())
    }

    async fn claim_due_timers(&self, limit: usize) -> Result<Vec<DueTimer>, StoreError> {
        let now = unix_ms();
        Ok(self.lock().timers.claim(now, limit))
    }

    async fn next_timer_due(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.lock().timers.due.first().map(|(due, _, _)| *due))
    }

    async fn requeue_timer(&self, timer: &DueTimer, delay_ms: u64) -> Result<bool, StoreError> {
        let at = unix_ms().saturating_add(delay_ms);
        Ok(self.lock().timers.requeue(timer, at))
    }

    async fn set_online(&self, user_id: u64, node: &str) -> Result<Option<String>, StoreError> {
        Ok(self.lock().presence.insert(user_id, node.to_string()))
    }

    async fn set_offline(&self, user_id: u64, node: &str) -> Result<(), StoreError> {
        let mut state = self.lock();
        if state.presence.get(&user_id).is_some_and(|n| n == node) {
            state.presence.remove(&user_id);
        }
        Ok(())
    }

    async fn node_of(&self, user_id: u64) -> Result<Option<String>, StoreError> {
        Ok(self.lock().presence.get(&user_id).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 16 review: a room's fact counter is swept a day after its
    /// last fact (a channel per call would otherwise pile up forever), and
    /// a swept room goes on from a higher number, never a lower one.
    #[tokio::test]
    async fn room_fact_counters_are_swept_and_numbers_never_go_back() {
        let store = MemoryStore::new(9);
        let join = |user: u64| StateChange::JoinRoom {
            user_id: user,
            channel_name: "r".into(),
            room_id: 1,
        };
        let first = store.apply_reported(&[join(1)], &[]).await.unwrap();
        let last_before = first.facts.iter().map(|f| f.room_seq).max().unwrap();
        {
            let mut state = store.state.lock().unwrap();
            let now = state.room_seqs["r"].1;
            state.sweep(now + ROOM_SEQ_IDLE_MS - 1);
            assert!(state.room_seqs.contains_key("r"), "kept within a day");
            state.sweep(now + ROOM_SEQ_IDLE_MS + 1);
            assert!(state.room_seqs.is_empty(), "swept after a day");
        }
        // A counter is only swept a day after its last fact, so the next
        // starts at least a day of milliseconds × 1000 higher; here a few
        // milliseconds stand for the day (two facts were numbered in one).
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let again = store.apply_reported(&[join(2)], &[]).await.unwrap();
        let first_after = again.facts.iter().map(|f| f.room_seq).min().unwrap();
        assert!(
            first_after > last_before,
            "{first_after} after {last_before}"
        );
        assert!(next_room_seq_base(5, 7) == 7000 && next_room_seq_base(9000, 7) == 9000);
    }

    fn put(key: &str, value: &str, if_version: Option<u64>, ttl_ms: Option<u64>) -> StateChange {
        StateChange::KvPut {
            plugin: "p".into(),
            key: key.into(),
            value: value.into(),
            if_version,
            ttl_ms,
        }
    }

    /// Expired entries leave memory at the next sweep (review of contract
    /// 1.1: per-day counters and closed invitations piled up for ever on a
    /// single node), and no answer changes.
    #[tokio::test]
    async fn a_batch_sweeps_expired_entries_out_of_memory() {
        let store = MemoryStore::new(3);
        let short: Vec<StateChange> = (0..100)
            .map(|i| put(&format!("day:{i}"), "1", None, Some(1)))
            .collect();
        store.apply(&short).await.unwrap();
        store.apply(&[put("kept", "1", None, None)]).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert_eq!(store.lock().kv.len(), 101, "not swept before it is due");
        store.lock().sweep_at_ms = 0;
        store.apply(&[put("other", "1", None, None)]).await.unwrap();
        let keys: Vec<String> = store.lock().kv.keys().map(|(_, k)| k.clone()).collect();
        assert_eq!(keys, vec!["kept", "other"]);
        assert!(store.lock().sweep_at_ms > unix_ms());
        // An expired key read before and after the sweep is the same: absent.
        assert_eq!(store.kv_get("p", "day:1").await.unwrap(), None);
        store
            .apply(&[put("day:1", "2", Some(0), None)])
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn versions_conditions_counters_ttl_and_listing() {
        let store = MemoryStore::new(3);
        store.apply(&[put("a", "1", Some(0), None)]).await.unwrap();
        let a = store.kv_entry("p", "a").await.unwrap().expect("written");
        assert_eq!((a.value.as_str(), a.version), ("1", 1));
        let stale = store.apply(&[put("a", "2", Some(0), None)]).await;
        assert!(matches!(stale, Err(ApplyError::Stale(_))), "{stale:?}");
        store.apply(&[put("a", "2", Some(1), None)]).await.unwrap();
        let incr = StateChange::KvIncr {
            plugin: "p".into(),
            key: "a".into(),
            delta: 5,
            ttl_ms: None,
        };
        store.apply(&[incr]).await.unwrap();
        let a = store.kv_entry("p", "a").await.unwrap().expect("counted");
        assert_eq!((a.value.as_str(), a.version), ("7", 3));
        // A refused batch writes nothing, not even a version number.
        let refused = store
            .apply(&[put("b", "x", None, None), put("a", "9", Some(1), None)])
            .await;
        assert!(refused.is_err());
        assert_eq!(store.kv_get("p", "b").await.unwrap(), None);
        for bad in [Some(0), Some(MAX_KV_TTL_MS_PLUS_ONE)] {
            let refused = store.apply(&[put("c", "x", None, bad)]).await;
            assert!(matches!(refused, Err(ApplyError::Invalid(_))), "{bad:?}");
        }
        store
            .apply(&[put("a2", "x", None, Some(50)), put("b", "y", None, None)])
            .await
            .unwrap();
        assert_eq!(store.kv_list("p", "a", 10).await.unwrap(), vec!["a", "a2"]);
        assert_eq!(store.kv_list("p", "a", 1).await.unwrap(), vec!["a"]);
        tokio::time::sleep(std::time::Duration::from_millis(80)).await;
        assert_eq!(store.kv_get("p", "a2").await.unwrap(), None, "expired");
        assert_eq!(store.kv_list("p", "", 10).await.unwrap(), vec!["a", "b"]);
        // An expired key counts as absent for a condition.
        store.apply(&[put("a2", "z", Some(0), None)]).await.unwrap();
    }

    fn timer(key: &str, delay_ms: u64, room: Option<&str>) -> StateChange {
        StateChange::SetTimer {
            plugin: "p".into(),
            key: key.into(),
            delay_ms,
            payload: format!("{{\"k\":\"{key}\"}}"),
            channel_name: room.map(str::to_string),
            bounds: TimerBounds {
                per_plugin: 3,
                per_room: 2,
            },
        }
    }

    #[tokio::test]
    async fn timers_replace_cancel_bound_and_claim_once() {
        let store = MemoryStore::new(3);
        store
            .apply(&[timer("a", 100, Some("r")), timer("b", 100, Some("r"))])
            .await
            .unwrap();
        // The room is full; replacing a key in it is not one more.
        let full = store.apply(&[timer("c", 100, Some("r"))]).await;
        assert!(
            matches!(full, Err(ApplyError::Conflict(ref r)) if r.contains("max_timers_per_room")),
            "{full:?}"
        );
        store.apply(&[timer("b", 100, Some("r"))]).await.unwrap();
        // Moving a timer out of the room frees its place in the same batch.
        store
            .apply(&[timer("b", 100, None), timer("c", 100, Some("r"))])
            .await
            .unwrap();
        let over = store.apply(&[timer("d", 100, None)]).await;
        assert!(
            matches!(over, Err(ApplyError::Conflict(ref r)) if r.contains("max_timers_per_plugin")),
            "{over:?}"
        );
        // A refused batch changes no timer, a bad delay is invalid.
        let refused = store
            .apply(&[
                StateChange::CancelTimer {
                    plugin: "p".into(),
                    key: "a".into(),
                },
                timer("e", 99, None),
            ])
            .await;
        assert!(
            matches!(refused, Err(ApplyError::Invalid(_))),
            "{refused:?}"
        );
        store
            .apply(&[StateChange::CancelTimer {
                plugin: "p".into(),
                key: "c".into(),
            }])
            .await
            .unwrap();
        assert!(
            store.claim_due_timers(10).await.unwrap().is_empty(),
            "not due yet"
        );
        assert!(store.next_timer_due().await.unwrap().is_some());
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        let mut claimed: Vec<String> = store
            .claim_due_timers(10)
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.key)
            .collect();
        claimed.sort();
        assert_eq!(claimed, vec!["a", "b"]);
        assert!(
            store.claim_due_timers(10).await.unwrap().is_empty(),
            "claimed once"
        );
        assert_eq!(store.next_timer_due().await.unwrap(), None);
        // Every place is free again.
        store
            .apply(&[
                timer("x", 100, Some("r")),
                timer("y", 100, Some("r")),
                timer("z", 100, None),
            ])
            .await
            .unwrap();
    }

    const MAX_KV_TTL_MS_PLUS_ONE: u64 = super::super::MAX_KV_TTL_MS + 1;
}
