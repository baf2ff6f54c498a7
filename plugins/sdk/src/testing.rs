//! A fake host, so a plugin's own `cargo test` runs its handlers natively,
//! without a server (native targets only; a `wasm32` build has no such
//! module).
//!
//! [`FakeHost`] holds what the real host's imports read (room members and
//! seats, calls, presence, stored profiles, the plugin's KV, room
//! attributes, the configuration, the clock, a seeded random sequence)
//! and applies a successful reply's state changes the way the host's store
//! does: checked first, then all or nothing (contract: "effects applied
//! after the call, all-or-nothing"). Its timers fire when the test moves
//! the clock ([`FakeHost::advance`]).
//!
//! ```ignore
//! use chorus_plugin_sdk::testing::FakeHost;
//! use serde_json::json;
//!
//! #[test]
//! fn greets_the_sender() {
//!     let mut host = FakeHost::new().member(7, "room-1", 1);
//!     let done = host.client::<Component>(7, "greet", json!({"channel_name": "room-1"}));
//!     assert_eq!(done.notifications()[0].body["text"], "Hello");
//! }
//! ```
//!
//! It records what the plugin records through the `metrics` import
//! ([`FakeHost::metrics`], [`FakeHost::counter_total`]); the events a
//! reply emits are in [`Handled::events`].
//!
//! What it does not model: grants (the `[grants]` of `<name>.toml`; run
//! `chorus plugin check` or `chorus plugin run` for those), the operator's
//! `[actions]` rules, field bounds, limits (fuel, memory, deadline), and
//! concurrency (a stale `if-version` fails the call with conflict, 2003, as
//! the host does once its re-runs are spent).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::imports::log::Level;
use crate::{Call, Delivery, Effect, Error, Event, Guest, Membership, Reply, Seat, Source, Target};

/// Unix ms the fake clock starts at (2023-11-14T22:13:20Z).
pub const START_MS: u64 = 1_700_000_000_000;

/// Seats per room, as the host's default `rooms.seats`.
pub const DEFAULT_SEATS: u32 = 9;

thread_local! {
    /// The fake host running a handler on this thread, if any.
    static CURRENT: RefCell<Option<FakeHost>> = const { RefCell::new(None) };
}

/// Runs `f` on the fake host of the running handler.
fn with_host<R>(f: impl FnOnce(&mut FakeHost) -> R) -> R {
    CURRENT.with(|current| {
        let mut current = current.borrow_mut();
        let host = current.as_mut().expect(
            "a host import was called outside a handler run by \
             chorus_plugin_sdk::testing::FakeHost",
        );
        f(host)
    })
}

/// One room of the fake host.
#[derive(Debug, Clone)]
struct Room {
    room_id: u64,
    members: Vec<u64>,
    seats: Vec<Seat>,
}

/// A timer set by the plugin and not fired yet.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingTimer {
    /// The timer's key.
    pub key: String,
    /// Unix ms it is due.
    pub due_ms: u64,
    /// The payload it was set with (JSON).
    pub payload: Value,
    /// The room it is tied to.
    pub channel_name: Option<String>,
}

/// A KV entry: value, version, unix ms it expires.
#[derive(Debug, Clone)]
struct KvValue {
    value: String,
    version: u64,
    expires_at: Option<u64>,
}

/// The state a plugin sees through the host's imports, and applies
/// replies to. Build it with the chained setters, then run events with
/// [`FakeHost::client`], [`FakeHost::server`], [`FakeHost::system`] or
/// [`FakeHost::handle`].
#[derive(Debug, Clone)]
pub struct FakeHost {
    rooms: BTreeMap<String, Room>,
    calls: BTreeMap<u64, Call>,
    online: BTreeSet<u64>,
    profiles: BTreeMap<u64, String>,
    kv: BTreeMap<String, KvValue>,
    attributes: BTreeMap<String, (u64, BTreeMap<String, String>)>,
    timers: BTreeMap<String, PendingTimer>,
    config: String,
    now_ms: u64,
    rng: u64,
    seats: u32,
    version_seq: u64,
    logs: Vec<(Level, String)>,
    metrics: Vec<MetricRecord>,
}

impl Default for FakeHost {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeHost {
    /// An empty host: no rooms, no one online, configuration `{}`, the
    /// clock at [`START_MS`], randomness seeded with 0, [`DEFAULT_SEATS`]
    /// seats per room.
    pub fn new() -> Self {
        Self {
            rooms: BTreeMap::new(),
            calls: BTreeMap::new(),
            online: BTreeSet::new(),
            profiles: BTreeMap::new(),
            kv: BTreeMap::new(),
            attributes: BTreeMap::new(),
            timers: BTreeMap::new(),
            config: "{}".into(),
            now_ms: START_MS,
            rng: 0,
            seats: DEFAULT_SEATS,
            version_seq: 0,
            logs: Vec::new(),
            metrics: Vec::new(),
        }
    }

    /// The plugin's configuration (what `<name>.toml` holds, as JSON).
    pub fn config(mut self, config: Value) -> Self {
        self.config = config.to_string();
        self
    }

    /// Seeds the random sequence (`random::u64`, `random::below`).
    pub fn seed(mut self, seed: u64) -> Self {
        self.rng = seed;
        self
    }

    /// Sets the clock (unix ms).
    pub fn at(mut self, now_ms: u64) -> Self {
        self.now_ms = now_ms;
        self
    }

    /// Seats of rooms created from now on (1..=64).
    pub fn seats_per_room(mut self, seats: u32) -> Self {
        self.seats = seats;
        self
    }

    /// `user_id` is online and a member of `channel_name` (room id
    /// `room_id`), leaving any other room.
    pub fn member(mut self, user_id: u64, channel_name: &str, room_id: u64) -> Self {
        self.join(user_id, channel_name, room_id);
        self.online.insert(user_id);
        self
    }

    /// `user_id`, a member of `channel_name`, sits on `seat_id`.
    ///
    /// # Panics
    /// When the user is not a member or the seat is not free.
    pub fn seated(mut self, user_id: u64, channel_name: &str, seat_id: u32) -> Self {
        if let Err(error) = self.take_seat(channel_name, seat_id, user_id) {
            panic!("cannot seat user {user_id}: {error:?}");
        }
        self
    }

    /// Locks a free seat (status 2).
    pub fn locked(mut self, channel_name: &str, seat_id: u32) -> Self {
        let seats = self.seats;
        let room = self.room_entry(channel_name, 0, seats);
        if let Some(seat) = room.seats.get_mut(seat_id as usize - 1) {
            seat.status = 2;
        }
        self
    }

    /// `user_id` is online (without being in a room).
    pub fn online(mut self, user_id: u64) -> Self {
        self.online.insert(user_id);
        self
    }

    /// `user_id` is offline (they keep room, seat and call).
    pub fn offline(mut self, user_id: u64) -> Self {
        self.online.remove(&user_id);
        self
    }

    /// `user_id` and `peer_id` are in a call of `channel_name`.
    pub fn in_call(mut self, user_id: u64, peer_id: u64, channel_name: &str) -> Self {
        self.start_call(user_id, peer_id, channel_name);
        self
    }

    /// The app backend stored this profile (a JSON object) for `user_id`.
    pub fn profile(mut self, user_id: u64, profile: Value) -> Self {
        self.profiles.insert(user_id, profile.to_string());
        self
    }

    /// The plugin's KV holds `value` at `key`.
    pub fn kv(mut self, key: &str, value: &str) -> Self {
        self.kv_write(key, value.to_string(), None);
        self
    }

    /// The room's attribute `key` is `value` (`owner`, `admins`, …).
    pub fn attribute(mut self, channel_name: &str, key: &str, value: &str) -> Self {
        self.version_seq += 1;
        let version = self.version_seq;
        let attrs = self.attributes.entry(channel_name.into()).or_default();
        attrs.1.insert(key.into(), value.into());
        attrs.0 = version;
        self
    }

    /// Runs a `client` event: `user_id`'s connection sends `action` with
    /// `payload` (a JSON object).
    pub fn client<P: Guest>(&mut self, user_id: u64, action: &str, payload: Value) -> Handled {
        self.handle::<P>(Event {
            action: action.into(),
            source: Source::Client,
            user_id: Some(user_id),
            payload: payload.to_string(),
        })
    }

    /// Runs a `server` event (`POST /api/v1/actions`): no user, the
    /// payload names its own `user_id`.
    pub fn server<P: Guest>(&mut self, action: &str, payload: Value) -> Handled {
        self.handle::<P>(Event {
            action: action.into(),
            source: Source::Server,
            user_id: None,
            payload: payload.to_string(),
        })
    }

    /// Runs a `system` event about `user_id` (e.g. `disconnected`).
    pub fn system<P: Guest>(
        &mut self,
        action: &str,
        user_id: Option<u64>,
        payload: Value,
    ) -> Handled {
        self.handle::<P>(Event {
            action: action.into(),
            source: Source::System,
            user_id,
            payload: payload.to_string(),
        })
    }

    /// Runs one event through the plugin's `handle`, then applies the
    /// reply's state changes (all or nothing; a refused batch turns the
    /// outcome into the error the host answers: conflict 2003 or
    /// not-allowed 2004).
    pub fn handle<P: Guest>(&mut self, event: Event) -> Handled {
        let me = std::mem::take(self);
        CURRENT.with(|current| *current.borrow_mut() = Some(me));
        let result = P::handle(event.clone());
        *self = CURRENT
            .with(|current| current.borrow_mut().take())
            .expect("the fake host is still installed");
        let result = match result {
            Ok(reply) => match self.apply(&reply.effects) {
                Ok(()) => Ok(reply),
                Err(error) => Err(error),
            },
            Err(error) => Err(error),
        };
        Handled { event, result }
    }

    /// Moves the clock `ms` forward and fires every timer now due, in due
    /// order, through the plugin's `handle` (a `timer` system event).
    pub fn advance<P: Guest>(&mut self, ms: u64) -> Vec<Handled> {
        self.now_ms += ms;
        let mut fired = Vec::new();
        loop {
            let due = self
                .timers
                .values()
                .filter(|t| t.due_ms <= self.now_ms)
                .min_by_key(|t| t.due_ms)
                .cloned();
            let Some(timer) = due else { break };
            self.timers.remove(&timer.key);
            let payload = serde_json::json!({
                "key": timer.key,
                "payload": timer.payload,
                "channel_name": timer.channel_name,
                "due_ms": timer.due_ms,
            });
            fired.push(self.system::<P>(crate::event::TIMER, None, payload));
        }
        fired
    }

    /// The clock (unix ms).
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// The members of a room in join order.
    pub fn members(&self, channel_name: &str) -> Vec<u64> {
        self.rooms
            .get(channel_name)
            .map(|r| r.members.clone())
            .unwrap_or_default()
    }

    /// The seats of a room (all free for an unknown room).
    pub fn seats(&self, channel_name: &str) -> Vec<Seat> {
        self.rooms
            .get(channel_name)
            .map(|r| r.seats.clone())
            .unwrap_or_else(|| free_seats(self.seats))
    }

    /// The seat `user_id` holds, if any.
    pub fn seat_of(&self, user_id: u64) -> Option<u32> {
        self.membership(user_id).and_then(|m| m.seat_id)
    }

    /// The room `user_id` is in, with their seat.
    pub fn membership(&self, user_id: u64) -> Option<Membership> {
        self.rooms.iter().find_map(|(channel, room)| {
            room.members.contains(&user_id).then(|| Membership {
                channel_name: channel.clone(),
                room_id: room.room_id,
                seat_id: room
                    .seats
                    .iter()
                    .find(|s| s.user_id == Some(user_id))
                    .map(|s| s.id),
            })
        })
    }

    /// The call `user_id` is in.
    pub fn call(&self, user_id: u64) -> Option<Call> {
        self.calls.get(&user_id).cloned()
    }

    /// The live value at `key` of the plugin's KV.
    pub fn kv_value(&self, key: &str) -> Option<String> {
        self.kv_live(key).map(|v| v.value.clone())
    }

    /// The room's attributes, by key.
    pub fn attributes(&self, channel_name: &str) -> BTreeMap<String, String> {
        self.attributes
            .get(channel_name)
            .map(|a| a.1.clone())
            .unwrap_or_default()
    }

    /// The plugin's pending timers, by key.
    pub fn timers(&self) -> &BTreeMap<String, PendingTimer> {
        &self.timers
    }

    /// What the plugin logged so far, as (level, message).
    pub fn logs(&self) -> &[(Level, String)] {
        &self.logs
    }

    /// Every record the plugin made through the `metrics` import so far
    /// (contract 1.2), in order. The fake host keeps them all: the real
    /// host's bounds (names, labels, `plugins.max_metric_series`) are not
    /// modelled.
    pub fn metrics(&self) -> &[MetricRecord] {
        &self.metrics
    }

    /// The sum of the counter `name` over the records whose labels are
    /// exactly `labels` (in any order).
    pub fn counter_total(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let mut wanted: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        wanted.sort();
        self.metrics
            .iter()
            .filter_map(|m| match m {
                MetricRecord::Counter {
                    name: n,
                    labels: l,
                    delta,
                } if n == name && sorted(l) == wanted => Some(*delta),
                _ => None,
            })
            .sum()
    }

    fn room_entry(&mut self, channel_name: &str, room_id: u64, seats: u32) -> &mut Room {
        self.rooms
            .entry(channel_name.into())
            .or_insert_with(|| Room {
                room_id,
                members: Vec::new(),
                seats: free_seats(seats),
            })
    }

    fn join(&mut self, user_id: u64, channel_name: &str, room_id: u64) {
        if self
            .membership(user_id)
            .is_some_and(|m| m.channel_name == channel_name)
        {
            return;
        }
        self.leave(user_id);
        let seats = self.seats;
        self.room_entry(channel_name, room_id, seats)
            .members
            .push(user_id);
    }

    fn leave(&mut self, user_id: u64) {
        let Some(m) = self.membership(user_id) else {
            return;
        };
        if let Some(room) = self.rooms.get_mut(&m.channel_name) {
            room.members.retain(|&u| u != user_id);
            free_seat_of(room, user_id);
            if room.members.is_empty() {
                self.rooms.remove(&m.channel_name);
            }
        }
    }

    fn require_member(&self, user_id: u64, channel_name: &str) -> Result<(), Error> {
        match self.membership(user_id) {
            Some(m) if m.channel_name == channel_name => Ok(()),
            _ => Err(Error::NotAllowed(format!(
                "user {user_id} is not in {channel_name}"
            ))),
        }
    }

    fn take_seat(&mut self, channel_name: &str, seat_id: u32, user_id: u64) -> Result<(), Error> {
        self.require_member(user_id, channel_name)?;
        let room = self.rooms.get_mut(channel_name).expect("a member's room");
        let Some(seat) = room.seats.get(seat_id.wrapping_sub(1) as usize) else {
            return Err(Error::Conflict(format!(
                "room {channel_name} has no seat {seat_id}"
            )));
        };
        if seat.user_id == Some(user_id) {
            return Ok(());
        }
        if seat.status != 0 {
            return Err(Error::Conflict(format!("seat {seat_id} is not free")));
        }
        free_seat_of(room, user_id);
        let seat = &mut room.seats[seat_id as usize - 1];
        seat.user_id = Some(user_id);
        seat.status = 1;
        seat.microphone = 1;
        Ok(())
    }

    fn start_call(&mut self, user_id: u64, peer_id: u64, channel_name: &str) {
        self.calls.insert(
            user_id,
            Call {
                peer_id,
                channel_name: channel_name.into(),
            },
        );
        self.calls.insert(
            peer_id,
            Call {
                peer_id: user_id,
                channel_name: channel_name.into(),
            },
        );
    }

    fn kv_live(&self, key: &str) -> Option<&KvValue> {
        self.kv
            .get(key)
            .filter(|v| v.expires_at.is_none_or(|at| at > self.now_ms))
    }

    fn kv_write(&mut self, key: &str, value: String, expires_at: Option<u64>) {
        self.version_seq += 1;
        let version = self.version_seq;
        self.kv.insert(
            key.into(),
            KvValue {
                value,
                version,
                expires_at,
            },
        );
    }

    /// Applies a reply's state changes to a copy, then keeps the copy: all
    /// or nothing.
    fn apply(&mut self, effects: &[Effect]) -> Result<(), Error> {
        let mut next = self.clone();
        let attr_versions: BTreeMap<String, u64> = self
            .attributes
            .iter()
            .map(|(c, a)| (c.clone(), a.0))
            .collect();
        let mut written_attrs = BTreeSet::new();
        for effect in effects {
            next.apply_one(effect, &attr_versions, &mut written_attrs)?;
        }
        for channel in written_attrs {
            next.version_seq += 1;
            let version = next.version_seq;
            if let Some(attrs) = next.attributes.get_mut(&channel) {
                attrs.0 = version;
                if attrs.1.is_empty() {
                    next.attributes.remove(&channel);
                }
            }
        }
        *self = next;
        Ok(())
    }

    fn apply_one(
        &mut self,
        effect: &Effect,
        attr_versions: &BTreeMap<String, u64>,
        written_attrs: &mut BTreeSet<String>,
    ) -> Result<(), Error> {
        match effect {
            Effect::JoinRoom(j) => self.join(j.user_id, &j.channel_name, j.room_id),
            Effect::LeaveRoom(l) => {
                self.require_member(l.user_id, &l.channel_name)?;
                self.leave(l.user_id);
            }
            Effect::TakeSeat(t) => self.take_seat(&t.channel_name, t.seat_id, t.user_id)?,
            Effect::FreeSeat(f) => {
                self.require_member(f.user_id, &f.channel_name)?;
                let room = self
                    .rooms
                    .get_mut(&f.channel_name)
                    .expect("a member's room");
                if !free_seat_of(room, f.user_id) {
                    return Err(Error::NotAllowed(format!(
                        "user {} holds no seat",
                        f.user_id
                    )));
                }
            }
            Effect::SetSeat(s) => {
                let seats = self.seats;
                let room = self.room_entry(&s.channel_name, 0, seats);
                let Some(seat) = room.seats.get_mut(s.seat_id.wrapping_sub(1) as usize) else {
                    return Err(Error::Conflict(format!("no seat {}", s.seat_id)));
                };
                if seat.user_id.is_some() {
                    return Err(Error::Conflict(format!("seat {} is occupied", s.seat_id)));
                }
                seat.status = s.status;
                seat.microphone = s.microphone;
            }
            Effect::StartCall(c) => self.start_call(c.user_id, c.receiver_id, &c.channel_name),
            Effect::EndCall(user_id) => {
                if let Some(call) = self.calls.remove(user_id) {
                    self.calls.remove(&call.peer_id);
                }
            }
            Effect::KvSet(e) => self.kv_write(&e.key, e.value.clone(), None),
            Effect::KvDelete(key) => {
                self.kv.remove(key);
            }
            Effect::KvPut(p) => {
                if let Some(expected) = p.if_version {
                    let current = self.kv_live(&p.key).map_or(0, |v| v.version);
                    if current != expected {
                        return Err(Error::Conflict(format!(
                            "kv key `{}` is at version {current}, not {expected}",
                            p.key
                        )));
                    }
                }
                let expires_at = p.ttl_ms.map(|t| self.now_ms + t);
                self.kv_write(&p.key, p.value.clone(), expires_at);
            }
            Effect::KvIncr(i) => {
                let (current, expiry) = match self.kv_live(&i.key) {
                    None => (0, None),
                    Some(v) => (
                        v.value.parse::<i64>().map_err(|_| {
                            Error::Conflict(format!("kv key `{}` is not an integer", i.key))
                        })?,
                        v.expires_at,
                    ),
                };
                let expires_at = i.ttl_ms.map(|t| self.now_ms + t).or(expiry);
                self.kv_write(&i.key, (current + i.delta).to_string(), expires_at);
            }
            // Emitted events change no state; `Handled::events` reads them.
            Effect::Notify(_) | Effect::NotifyVia(_) | Effect::Emit(_) => {}
            Effect::SetTimer(t) => {
                if !(100..=86_400_000).contains(&t.delay_ms) {
                    return Err(Error::Invalid(format!(
                        "set-timer `{}`: delay {} ms is outside 100..=86400000 (host: 2002)",
                        t.key, t.delay_ms
                    )));
                }
                self.timers.insert(
                    t.key.clone(),
                    PendingTimer {
                        key: t.key.clone(),
                        due_ms: self.now_ms + t.delay_ms as u64,
                        payload: serde_json::from_str(&t.payload).unwrap_or(Value::Null),
                        channel_name: t.channel_name.clone(),
                    },
                );
            }
            Effect::CancelTimer(key) => {
                self.timers.remove(key);
            }
            Effect::SetRoomAttr(a) => {
                if let Some(expected) = a.if_version {
                    let current = attr_versions.get(&a.channel_name).copied().unwrap_or(0);
                    if current != expected {
                        return Err(Error::Conflict(format!(
                            "room {} attributes are at version {current}, not {expected}",
                            a.channel_name
                        )));
                    }
                }
                let attrs = self.attributes.entry(a.channel_name.clone()).or_default();
                match &a.value {
                    Some(value) => {
                        attrs.1.insert(a.key.clone(), value.clone());
                    }
                    None => {
                        attrs.1.remove(&a.key);
                    }
                }
                written_attrs.insert(a.channel_name.clone());
            }
        }
        Ok(())
    }

    /// splitmix64: small, seeded, and good enough for tests.
    fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn free_seats(n: u32) -> Vec<Seat> {
    (1..=n)
        .map(|id| Seat {
            id,
            user_id: None,
            status: 0,
            microphone: 1,
        })
        .collect()
}

/// Frees the seat `user_id` holds in `room`; false when none.
fn free_seat_of(room: &mut Room, user_id: u64) -> bool {
    match room.seats.iter_mut().find(|s| s.user_id == Some(user_id)) {
        Some(seat) => {
            seat.user_id = None;
            seat.status = 0;
            true
        }
        None => false,
    }
}

/// One record of the `metrics` import (contract 1.2), as the plugin made
/// it.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricRecord {
    /// `metrics::counter`.
    Counter {
        /// The metric's name.
        name: String,
        /// Its labels, in the order given.
        labels: Vec<(String, String)>,
        /// What it added.
        delta: u64,
    },
    /// `metrics::histogram`.
    Histogram {
        /// The metric's name.
        name: String,
        /// Its labels, in the order given.
        labels: Vec<(String, String)>,
        /// The observed value.
        value: f64,
    },
}

fn sorted(labels: &[(String, String)]) -> Vec<(String, String)> {
    let mut labels = labels.to_vec();
    labels.sort();
    labels
}

/// An application event of a reply (contract 1.2 `emit`), with its body
/// parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Emitted {
    /// The event's name.
    pub name: String,
    /// Its body (a JSON object).
    pub body: Value,
}

/// A notification of a reply, with its body parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    /// Who it goes to.
    pub target: Target,
    /// The body (a JSON object with its `action`).
    pub body: Value,
    /// The user it is about.
    pub subject: Option<u64>,
    /// How a room notification is delivered (`Configured` for `notify`).
    pub delivery: Delivery,
}

/// One event handled by a [`FakeHost`]: the event and what came back
/// (after the host's batch; a refused batch is the error here).
#[derive(Debug, Clone)]
pub struct Handled {
    /// The event as handed to the plugin.
    pub event: Event,
    /// The reply, or the error the caller would get.
    pub result: Result<Reply, Error>,
}

impl Handled {
    /// The reply.
    ///
    /// # Panics
    /// When the call failed (with its error).
    pub fn reply(&self) -> &Reply {
        match &self.result {
            Ok(reply) => reply,
            Err(error) => panic!("`{}` failed: {error:?}", self.event.action),
        }
    }

    /// The error.
    ///
    /// # Panics
    /// When the call succeeded.
    pub fn error(&self) -> &Error {
        match &self.result {
            Ok(reply) => panic!("`{}` succeeded: {reply:?}", self.event.action),
            Err(error) => error,
        }
    }

    /// The error code the caller would get (1001, 1002, 2001, 2003, 2004).
    ///
    /// # Panics
    /// When the call succeeded.
    pub fn code(&self) -> u16 {
        crate::reply::code(self.error())
    }

    /// The reply's `result` object.
    pub fn output(&self) -> Value {
        serde_json::from_str(&self.reply().output).expect("the output is JSON")
    }

    /// The reply's effects.
    pub fn effects(&self) -> &[Effect] {
        &self.reply().effects
    }

    /// The reply's notifications in order (`notify` and `notify-via`).
    pub fn notifications(&self) -> Vec<Sent> {
        self.effects()
            .iter()
            .filter_map(|effect| {
                let (n, delivery) = match effect {
                    Effect::Notify(n) => (n, Delivery::Configured),
                    Effect::NotifyVia(r) => (&r.notification, r.delivery),
                    _ => return None,
                };
                Some(Sent {
                    target: n.target.clone(),
                    body: serde_json::from_str(&n.body).expect("a notification body is JSON"),
                    subject: n.subject,
                    delivery,
                })
            })
            .collect()
    }

    /// The bodies of the notifications, in order.
    pub fn bodies(&self) -> Vec<Value> {
        self.notifications().into_iter().map(|n| n.body).collect()
    }

    /// The application events the reply emitted (contract 1.2 `emit`), in
    /// order.
    pub fn events(&self) -> Vec<Emitted> {
        self.effects()
            .iter()
            .filter_map(|effect| match effect {
                Effect::Emit(e) => Some(Emitted {
                    name: e.name.clone(),
                    body: serde_json::from_str(&e.body).expect("an event body is JSON"),
                }),
                _ => None,
            })
            .collect()
    }
}

/// The native side of the host's imports: each function reads the fake
/// host running the handler.
pub(crate) mod imports {
    pub mod room_state {
        use super::super::with_host;
        use crate::{Attributes, Call, Membership, Seat};

        /// See the WIT `room-state.membership-of`.
        pub fn membership_of(user_id: u64) -> Option<Membership> {
            with_host(|h| h.membership(user_id))
        }
        /// See the WIT `room-state.room-members`.
        pub fn room_members(channel_name: &str) -> Vec<u64> {
            with_host(|h| h.members(channel_name))
        }
        /// See the WIT `room-state.room-seats`.
        pub fn room_seats(channel_name: &str) -> Vec<Seat> {
            with_host(|h| h.seats(channel_name))
        }
        /// See the WIT `room-state.call-of`.
        pub fn call_of(user_id: u64) -> Option<Call> {
            with_host(|h| h.call(user_id))
        }
        /// See the WIT `room-state.is-online`.
        pub fn is_online(user_id: u64) -> bool {
            with_host(|h| h.online.contains(&user_id))
        }
        /// See the WIT `room-state.room-attributes`.
        pub fn room_attributes(channel_name: &str) -> Attributes {
            with_host(|h| match h.attributes.get(channel_name) {
                Some((version, entries)) => Attributes {
                    version: *version,
                    entries: entries.clone().into_iter().collect(),
                },
                None => Attributes {
                    version: 0,
                    entries: Vec::new(),
                },
            })
        }
    }

    pub mod kv {
        use super::super::with_host;
        use crate::bindings::chorus::plugin::kv::Versioned;

        /// See the WIT `kv.get`.
        pub fn get(key: &str) -> Option<String> {
            with_host(|h| h.kv_value(key))
        }
        /// See the WIT `kv.entry`.
        pub fn entry(key: &str) -> Option<Versioned> {
            with_host(|h| {
                h.kv_live(key).map(|v| Versioned {
                    value: v.value.clone(),
                    version: v.version,
                })
            })
        }
        /// See the WIT `kv.keys`.
        pub fn keys(prefix: &str, limit: u32) -> Vec<String> {
            with_host(|h| {
                let now = h.now_ms;
                h.kv.iter()
                    .filter(|(k, v)| {
                        k.starts_with(prefix) && v.expires_at.is_none_or(|at| at > now)
                    })
                    .map(|(k, _)| k.clone())
                    .take(limit.min(1000) as usize)
                    .collect()
            })
        }
    }

    pub mod profiles {
        use super::super::with_host;

        /// See the WIT `profiles.get`.
        pub fn get(user_id: u64) -> Option<String> {
            with_host(|h| h.profiles.get(&user_id).cloned())
        }
    }

    pub mod clock {
        use super::super::with_host;

        /// See the WIT `clock.now-ms`.
        pub fn now_ms() -> u64 {
            with_host(|h| h.now_ms)
        }
    }

    pub mod config {
        use super::super::with_host;

        /// See the WIT `config.get`.
        pub fn get() -> String {
            with_host(|h| h.config.clone())
        }
    }

    pub mod log {
        use crate::imports::log::Level;

        /// See the WIT `log.log`; kept in [`super::super::FakeHost::logs`].
        /// Outside a handler (a helper tested on its own) the line goes
        /// to stderr.
        pub fn log(level: Level, message: &str) {
            super::super::CURRENT.with(|current| match current.borrow_mut().as_mut() {
                Some(h) => h.logs.push((level, message.to_string())),
                None => eprintln!("plugin log {level:?}: {message}"),
            });
        }
    }

    pub mod metrics {
        use super::super::{MetricRecord, with_host};

        /// See the WIT `metrics.counter-add`; kept in
        /// [`super::super::FakeHost::metrics`].
        pub fn counter_add(name: &str, labels: &[(String, String)], delta: u64) {
            with_host(|h| {
                h.metrics.push(MetricRecord::Counter {
                    name: name.to_string(),
                    labels: labels.to_vec(),
                    delta,
                });
            });
        }

        /// See the WIT `metrics.histogram-observe`.
        pub fn histogram_observe(name: &str, labels: &[(String, String)], value: f64) {
            with_host(|h| {
                h.metrics.push(MetricRecord::Histogram {
                    name: name.to_string(),
                    labels: labels.to_vec(),
                    value,
                });
            });
        }
    }

    pub mod random {
        use super::super::with_host;

        /// The next number of the fake host's seeded sequence.
        pub fn u64() -> u64 {
            with_host(|h| h.next_random())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reply::{notify_user, reply};
    use crate::{TakeSeat, room_state};
    use serde_json::json;

    struct Sit;

    impl Guest for Sit {
        fn describe() -> crate::Description {
            unreachable!("not described in these tests")
        }
        fn handle(event: Event) -> Result<Reply, Error> {
            let user = event.user_id.ok_or(Error::Missing("user".into()))?;
            let m = room_state::membership_of(user)
                .ok_or_else(|| Error::NotAllowed("not in a room".into()))?;
            let body = json!({"action": "sat", "n": crate::random::below(10)});
            Ok(reply(
                json!({}),
                vec![
                    Effect::TakeSeat(TakeSeat {
                        channel_name: m.channel_name,
                        seat_id: 2,
                        user_id: user,
                    }),
                    notify_user(user, &body, Some(user)),
                ],
            ))
        }
    }

    #[test]
    fn applies_a_reply_and_refuses_a_conflicting_batch_whole() {
        let mut host = FakeHost::new().member(1, "r", 5).member(2, "r", 5).seed(7);
        let done = host.client::<Sit>(1, "sit", json!({}));
        assert_eq!(host.seat_of(1), Some(2));
        assert_eq!(done.notifications()[0].target, Target::User(1));
        // Seat 2 is taken: the whole batch is refused, nothing applied.
        let refused = host.client::<Sit>(2, "sit", json!({}));
        assert_eq!(refused.code(), 2003);
        assert_eq!(host.seat_of(2), None);
        assert_eq!(host.client::<Sit>(3, "sit", json!({})).code(), 2004);
    }

    #[test]
    fn randomness_is_reproducible_from_the_seed() {
        let draw = |seed| {
            let mut host = FakeHost::new().member(1, "r", 5).seed(seed);
            host.client::<Sit>(1, "sit", json!({})).bodies()[0]["n"].clone()
        };
        assert_eq!(draw(3), draw(3));
    }
}
