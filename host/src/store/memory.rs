//! The single-node store: everything in one process, behind one mutex.
//!
//! Every method is a short synchronous critical section (no await inside),
//! so a `std::sync::Mutex` is the right lock: contention is a few hundred
//! nanoseconds, and a batch is atomic simply by holding the lock while it
//! checks and applies.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use async_trait::async_trait;

use super::{
    ApplyError, Call, Membership, RoomView, Seat, StateChange, Store, StoreError, seat_status,
};

/// One room's state.
#[derive(Debug, Clone)]
struct Room {
    room_id: u64,
    /// Members in join order.
    members: Vec<u64>,
    /// Seats 1..N, index = id - 1.
    seats: Vec<Seat>,
}

/// Everything the store holds.
#[derive(Debug, Default)]
struct State {
    rooms: HashMap<String, Room>,
    /// user -> channel of the room the user is in.
    member_of: HashMap<u64, String>,
    /// user -> call; both users of a call have an entry.
    calls: HashMap<u64, Call>,
    /// (plugin, key) -> value.
    kv: BTreeMap<(String, String), String>,
    /// user -> node holding the user's connection.
    presence: HashMap<u64, String>,
}

/// The in-memory [`Store`] used by a single node (`store.url = "memory://"`).
#[derive(Debug)]
pub struct MemoryStore {
    /// Seats per room (`rooms.seats`).
    seats_per_room: u32,
    /// All state under one lock; see the module docs for why that is enough.
    state: Mutex<State>,
}

impl MemoryStore {
    /// An empty store whose rooms have `seats_per_room` seats.
    pub fn new(seats_per_room: u32) -> Self {
        Self {
            seats_per_room,
            state: Mutex::new(State::default()),
        }
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
        free_user_seat(room, user_id);
        if room.members.is_empty() {
            self.rooms.remove(&channel);
        }
    }

    fn apply_one(&mut self, change: &StateChange, seats: u32) -> Result<(), ApplyError> {
        match change {
            StateChange::JoinRoom {
                user_id,
                channel_name,
                room_id,
            } => {
                self.join(*user_id, channel_name, *room_id, seats);
            }
            StateChange::LeaveRoom {
                user_id,
                channel_name,
            } => {
                self.require_member(*user_id, channel_name)?;
                self.leave(*user_id);
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
                if !free_user_seat(room, *user_id) {
                    return Err(ApplyError::NotAllowed(format!(
                        "user {user_id} holds no seat"
                    )));
                }
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
            StateChange::KvSet { plugin, key, value } => {
                self.kv.insert((plugin.clone(), key.clone()), value.clone());
            }
            StateChange::KvDelete { plugin, key } => {
                self.kv.remove(&(plugin.clone(), key.clone()));
            }
        }
        Ok(())
    }

    fn join(&mut self, user_id: u64, channel: &str, room_id: u64, seats: u32) {
        if self.member_of.get(&user_id).is_some_and(|c| c == channel) {
            return;
        }
        self.leave(user_id);
        let room = self
            .rooms
            .entry(channel.to_string())
            .or_insert_with(|| Room {
                room_id,
                members: Vec::new(),
                seats: (1..=seats).map(Seat::free).collect(),
            });
        room.members.push(user_id);
        self.member_of.insert(user_id, channel.to_string());
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
        free_user_seat(room, user_id);
        room.seats[index] = Seat {
            id: seat_id,
            user_id: Some(user_id),
            status: seat_status::OCCUPIED,
            microphone: 1,
        };
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
        for user in [user_id, receiver_id] {
            if self.calls.contains_key(&user) {
                return Err(ApplyError::Conflict(format!(
                    "user {user} is already in a call"
                )));
            }
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
        Ok(())
    }

    fn end_call(&mut self, user_id: u64) {
        if let Some(call) = self.calls.remove(&user_id) {
            self.calls.remove(&call.peer_id);
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
            StateChange::SetSeat { channel_name, .. } => {
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
            StateChange::KvSet { plugin, key, .. } | StateChange::KvDelete { plugin, key } => {
                self.kv.insert((plugin.clone(), key.clone()));
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
            presence: HashMap::new(),
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

/// Frees the user's seat in the room; whether they had one.
fn free_user_seat(room: &mut Room, user_id: u64) -> bool {
    match room.seats.iter_mut().find(|s| s.user_id == Some(user_id)) {
        Some(seat) => {
            *seat = Seat::free(seat.id);
            true
        }
        None => false,
    }
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

    async fn kv_get(&self, plugin: &str, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .lock()
            .kv
            .get(&(plugin.to_string(), key.to_string()))
            .cloned())
    }

    async fn apply(&self, changes: &[StateChange]) -> Result<(), ApplyError> {
        let mut state = self.lock();
        // All or nothing: run the batch on a scratch copy of just the
        // entries it can touch, and write them back only if every change
        // passed. Copying whole state would make each action O(everything).
        let touched = Touched::of(&state, changes);
        let mut scratch = touched.extract(&state);
        for change in changes {
            scratch.apply_one(change, self.seats_per_room)?;
        }
        touched.write_back(&mut state, scratch);
        Ok(())
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
