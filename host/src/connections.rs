//! The sessions connected to this node, by user ([`Connections`]): one
//! live connection per user (a new one replaces the old), and the
//! [`SessionHandle`] other tasks use to queue frames for a session or
//! close it. [`fan_out`] queues one frame on many sessions.
//!
//! Layer: above `config`/`ids` only. Everything that reaches a client
//! socket goes through a handle's bounded outbox; nothing here awaits.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Context;

use axum::extract::ws::Utf8Bytes;
use futures_util::task::AtomicWaker;

use chorus_protocol::{CloseCode, Disconnect, ServerFrame};

/// What happened to a frame handed to [`SessionHandle::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    /// Queued for the socket.
    Queued,
    /// The queue was full: the session is being closed as a slow consumer.
    Overflow,
    /// The session is gone.
    Closed,
}

/// The shared face of one connection.
#[derive(Debug)]
pub struct SessionHandle {
    /// The connection's user.
    pub user_id: u64,
    /// Unique per connection, so a late cleanup of a replaced connection
    /// never removes its successor.
    pub conn_id: u64,
    /// The token this connection's frames must carry.
    pub online_token: crate::ids::OnlineToken,
    /// The session token the connection was opened with (for revocation).
    pub sid: String,
    /// Frames waiting for the socket, bounded (`limits.outbound_queue`).
    outbox: Outbox,
    /// [`CLOSING`], [`SHUTDOWN`], [`ENDED`]: what the session task must
    /// do, read on each of its wake-ups (one atomic load, no lock).
    flags: AtomicU8,
    /// The code and reason to close with; the first one set wins.
    close_reason: Mutex<Option<Disconnect>>,
}

/// Someone asked the session to close ([`SessionHandle::close`]).
const CLOSING: u8 = 1;
/// The node is shutting down ([`SessionHandle::shut_down`]).
const SHUTDOWN: u8 = 2;
/// The session task ended ([`SessionHandle::mark_ended`]).
const ENDED: u8 = 4;

/// What a session task is asked to do, by priority: shut down (1001),
/// close as asked, or nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    /// Keep going.
    Nothing,
    /// The node is shutting down.
    Shutdown,
    /// Close with [`SessionHandle::close_reason`].
    Close,
}

/// A bounded queue with one consumer, the session task.
///
/// Not a `tokio::sync::mpsc` channel: that allocates a 32-slot block and a
/// cache-padded header up front, about 1.6 KB for every connection even
/// when it never receives a frame. This queue allocates nothing until the
/// first frame; its buffer is kept across bursts and given back only when
/// the session is quiet ([`SessionHandle::shrink_idle`]), so a busy session
/// does not free and regrow it for every burst.
#[derive(Debug)]
struct Outbox {
    /// Most frames held at once.
    capacity: usize,
    /// The frames, oldest first. A std mutex: push and pop only.
    frames: Mutex<VecDeque<Utf8Bytes>>,
    /// The session task, woken when a frame arrives in an empty queue or a
    /// close is asked. The task drains the queue before it waits again,
    /// so a push onto a non-empty queue needs no wake-up.
    ready: AtomicWaker,
}

impl Outbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Utf8Bytes>> {
        self.frames.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a frame; `false` when full.
    fn push(&self, frame: Utf8Bytes) -> bool {
        let mut frames = self.lock();
        if frames.len() >= self.capacity {
            return false;
        }
        let was_empty = frames.is_empty();
        frames.push_back(frame);
        drop(frames);
        if was_empty {
            self.ready.wake();
        }
        true
    }

    /// The oldest frame, if any.
    fn pop(&self) -> Option<Utf8Bytes> {
        self.lock().pop_front()
    }
}

impl SessionHandle {
    /// A handle whose queue holds at most `queue` frames.
    pub fn new(
        user_id: u64,
        conn_id: u64,
        online_token: crate::ids::OnlineToken,
        sid: String,
        queue: usize,
    ) -> Arc<Self> {
        Arc::new(Self {
            user_id,
            conn_id,
            online_token,
            sid,
            outbox: Outbox {
                capacity: queue,
                frames: Mutex::new(VecDeque::new()),
                ready: AtomicWaker::new(),
            },
            flags: AtomicU8::new(0),
            close_reason: Mutex::new(None),
        })
    }

    /// Frames waiting in its queue now (for the `chorus_outbound_frames`
    /// gauge).
    pub fn queued(&self) -> usize {
        self.outbox.lock().len()
    }

    /// Queues a frame without waiting. A full queue closes the session with
    /// 4011: one slow client never holds up a broadcast.
    pub fn send(&self, frame: Utf8Bytes) -> SendOutcome {
        if self.flags.load(Ordering::Acquire) & (CLOSING | ENDED) != 0 {
            return SendOutcome::Closed;
        }
        if self.outbox.push(frame) {
            return SendOutcome::Queued;
        }
        metrics::counter!("chorus_outbound_overflows_total").increment(1);
        self.close(Disconnect::with_reason(
            CloseCode::SlowConsumer,
            "outbound queue full",
        ));
        SendOutcome::Overflow
    }

    /// Whether a frame is queued now.
    pub fn has_frames(&self) -> bool {
        !self.outbox.lock().is_empty()
    }

    /// A queued frame, if one is there now.
    pub fn try_next_frame(&self) -> Option<Utf8Bytes> {
        self.outbox.pop()
    }

    /// Gives the queue's buffer back if it is empty and holds more than
    /// 16 slots. The session task calls it when the client is heard from
    /// (every ping), so an idle session holds no burst-sized buffer while
    /// a busy one keeps its buffer from one burst to the next.
    pub fn shrink_idle(&self) {
        let mut frames = self.outbox.lock();
        if frames.is_empty() && frames.capacity() > 16 {
            *frames = VecDeque::new();
        }
    }

    /// Registers the session task to be woken when a frame is queued on
    /// an empty queue, a close is asked or the node shuts down, and says
    /// what it is asked to do now (an atomic load, no lock). Only the
    /// session task calls this: the queue has a single consumer, which
    /// must drain it (to `None` from [`SessionHandle::try_next_frame`])
    /// before it relies on this wake-up for the next frame.
    pub fn watch(&self, cx: &mut Context<'_>) -> Asked {
        self.outbox.ready.register(cx.waker());
        let flags = self.flags.load(Ordering::Acquire);
        if flags & SHUTDOWN != 0 {
            Asked::Shutdown
        } else if flags & CLOSING != 0 {
            Asked::Close
        } else {
            Asked::Nothing
        }
    }

    /// Tells the session task the node is shutting down: it closes with
    /// 1001 and ends as [`crate::session::End::Shutdown`].
    pub fn shut_down(&self) {
        self.flags.fetch_or(SHUTDOWN, Ordering::AcqRel);
        self.outbox.ready.wake();
    }

    /// Asks the session task to close the socket with `how`; the first
    /// close asked for wins.
    pub fn close(&self, how: Disconnect) {
        let mut slot = self.close_reason.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(how);
        }
        drop(slot);
        self.flags.fetch_or(CLOSING, Ordering::AcqRel);
        self.outbox.ready.wake();
    }

    /// Sends `{"action":"kicked","reason":…}` and closes with `code`
    /// (4009 for a replacement, 4010 for the app backend's kick;
    /// PROTOCOL sections 4 and 8). The frame is queued first, so the
    /// session task sends it before the close frame.
    pub fn kick(&self, code: CloseCode, reason: &str) {
        let how = Disconnect::with_reason(code, reason.to_string());
        let frame = ServerFrame::Kicked {
            reason: how.reason().to_string(),
        };
        self.send(Utf8Bytes::from(frame.encode()));
        self.close(how);
    }

    /// Tells this connection a newer one of its user replaced it:
    /// `kicked` with reason `replaced`, then 4009.
    pub fn replace(&self) {
        self.kick(CloseCode::Replaced, CloseCode::Replaced.reason());
    }

    /// Marks the session ended: later sends answer [`SendOutcome::Closed`]
    /// instead of filling a queue nobody reads.
    pub fn mark_ended(&self) {
        self.flags.fetch_or(ENDED, Ordering::AcqRel);
    }

    /// The close asked for through [`SessionHandle::close`], if any.
    pub fn close_reason(&self) -> Option<Disconnect> {
        self.close_reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The sessions of this node.
#[derive(Debug, Default)]
pub struct Connections {
    /// user -> live session. A std mutex: every critical section is a map
    /// operation, never an await.
    by_user: Mutex<HashMap<u64, Arc<SessionHandle>, UserIds>>,
}

/// Hashes the connections table's user ids: one keyed multiply, folded. A
/// room's fan-out looks every member up; with the standard SipHash that
/// was 2.5% of the server's CPU in the fan-out benchmark. Keyed with a
/// random number per process, so the buckets of given ids cannot be told
/// in advance (user ids are chosen by the app backend, not by clients).
#[derive(Debug, Clone, Copy)]
struct UserIds {
    /// The random key.
    key: u64,
}

impl Default for UserIds {
    fn default() -> Self {
        use std::hash::BuildHasher;
        Self {
            key: std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64),
        }
    }
}

impl std::hash::BuildHasher for UserIds {
    type Hasher = UserIdHasher;
    fn build_hasher(&self) -> UserIdHasher {
        UserIdHasher { state: self.key }
    }
}

/// The hasher of [`UserIds`].
#[derive(Debug)]
struct UserIdHasher {
    /// The key, then the hash of what was written.
    state: u64,
}

impl std::hash::Hasher for UserIdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        let product = u128::from(self.state ^ n) * 0x9e37_79b9_7f4a_7c15_u128;
        self.state = (product as u64) ^ ((product >> 64) as u64);
    }

    fn finish(&self) -> u64 {
        self.state
    }
}

impl Connections {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<SessionHandle>, UserIds>> {
        self.by_user.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a session, returning the one it replaces.
    pub fn insert(&self, handle: Arc<SessionHandle>) -> Option<Arc<SessionHandle>> {
        self.map().insert(handle.user_id, handle)
    }

    /// Removes the user's session if it is still `conn_id`; whether it was.
    pub fn remove(&self, user_id: u64, conn_id: u64) -> bool {
        let mut map = self.map();
        if map.get(&user_id).is_some_and(|h| h.conn_id == conn_id) {
            map.remove(&user_id);
            true
        } else {
            false
        }
    }

    /// The user's live session.
    pub fn get(&self, user_id: u64) -> Option<Arc<SessionHandle>> {
        self.map().get(&user_id).cloned()
    }

    /// The live sessions of these users, in the given order (offline
    /// users are skipped). One lock for the whole list.
    pub fn get_many(&self, users: &[u64]) -> Vec<Arc<SessionHandle>> {
        let map = self.map();
        users.iter().filter_map(|u| map.get(u).cloned()).collect()
    }

    /// Queues `frame` on the live sessions of these users (offline users
    /// are skipped), under one lock and without collecting the sessions
    /// first; counts what was queued as [`fan_out`] does. The users found
    /// here are appended to `here`, when given (for the cluster, which
    /// serves the others).
    pub fn fan_out_to(
        &self,
        action: &str,
        mode: &'static str,
        users: &[u64],
        frame: &Utf8Bytes,
        mut here: Option<&mut Vec<u64>>,
    ) {
        let mut sent = 0u64;
        let map = self.map();
        for user in users {
            let Some(session) = map.get(user) else {
                continue;
            };
            if let Some(here) = here.as_deref_mut() {
                here.push(*user);
            }
            if session.send(frame.clone()) == SendOutcome::Queued {
                sent += 1;
            }
        }
        drop(map);
        count_out(action, mode, sent);
    }

    /// Every live session.
    pub fn all(&self) -> Vec<Arc<SessionHandle>> {
        self.map().values().cloned().collect()
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.map().is_empty()
    }
}

/// Queues one frame on every session; counts what was queued under
/// `chorus_frames_out_total{action,mode}`. `mode` is `user`,
/// `broadcast`, `everyone` or `relay`.
pub fn fan_out(
    action: &str,
    mode: &'static str,
    sessions: &[Arc<SessionHandle>],
    frame: Utf8Bytes,
) {
    let mut sent = 0u64;
    for session in sessions {
        if session.send(frame.clone()) == SendOutcome::Queued {
            sent += 1;
        }
    }
    count_out(action, mode, sent);
}

/// Adds `sent` to `chorus_frames_out_total{action,mode}`.
fn count_out(action: &str, mode: &'static str, sent: u64) {
    metrics::counter!("chorus_frames_out_total", "action" => action.to_string(), "mode" => mode)
        .increment(sent);
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::task::{ArcWake, waker};
    use std::sync::atomic::AtomicUsize;

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Count(AtomicUsize);

    impl ArcWake for Count {
        fn wake_by_ref(this: &Arc<Self>) {
            this.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn handle(user_id: u64, queue: usize) -> Arc<SessionHandle> {
        SessionHandle::new(
            user_id,
            user_id,
            crate::ids::OnlineToken::random(),
            "s".into(),
            queue,
        )
    }

    #[test]
    fn the_task_is_woken_by_a_frame_on_an_empty_queue_and_by_a_close() {
        let count = Arc::new(Count::default());
        let waker = waker(Arc::clone(&count));
        let mut cx = Context::from_waker(&waker);
        let h = handle(1, 4);
        assert_eq!(h.watch(&mut cx), Asked::Nothing);
        assert!(!h.has_frames());
        assert_eq!(h.send(Utf8Bytes::from("a")), SendOutcome::Queued);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        // The queue is not empty: the task drains it before waiting again.
        assert_eq!(h.send(Utf8Bytes::from("b")), SendOutcome::Queued);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(h.watch(&mut cx), Asked::Nothing);
        assert_eq!(h.try_next_frame().as_deref(), Some("a"));
        assert_eq!(h.try_next_frame().as_deref(), Some("b"));
        assert!(h.try_next_frame().is_none());
        h.close(Disconnect::new(CloseCode::Kicked));
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        assert_eq!(h.watch(&mut cx), Asked::Close);
        assert_eq!(h.send(Utf8Bytes::from("c")), SendOutcome::Closed);
        // Shutdown wins over a close asked before it.
        h.shut_down();
        assert_eq!(h.watch(&mut cx), Asked::Shutdown);
    }

    #[test]
    fn a_full_queue_closes_as_a_slow_consumer_and_keeps_its_buffer_until_idle() {
        let h = handle(1, 20);
        for _ in 0..20 {
            assert_eq!(h.send(Utf8Bytes::from("x")), SendOutcome::Queued);
        }
        assert_eq!(h.send(Utf8Bytes::from("x")), SendOutcome::Overflow);
        assert_eq!(
            h.close_reason().map(|d| d.code),
            Some(CloseCode::SlowConsumer)
        );
        while h.try_next_frame().is_some() {}
        assert!(h.outbox.lock().capacity() >= 20);
        h.shrink_idle();
        assert_eq!(h.outbox.lock().capacity(), 0);
    }

    #[test]
    fn fan_out_to_queues_on_the_users_found_here() {
        let connections = Connections::default();
        for user in [1, 3] {
            connections.insert(handle(user, 4));
        }
        let mut here = Vec::new();
        let frame = Utf8Bytes::from("f");
        connections.fan_out_to("a", "broadcast", &[1, 2, 3], &frame, Some(&mut here));
        assert_eq!(here, [1, 3]);
        for user in [1, 3] {
            let session = connections.get(user).expect("connected");
            assert_eq!(session.try_next_frame().as_deref(), Some("f"));
        }
    }

    #[test]
    fn user_ids_hash_apart() {
        use std::collections::HashSet;
        use std::hash::BuildHasher;
        let ids = UserIds::default();
        let hashes: HashSet<u64> = (0..10_000u64).map(|u| ids.hash_one(u)).collect();
        assert_eq!(hashes.len(), 10_000);
        // The bucket bits (low) and the control bits (top 7) both vary.
        let low: HashSet<u64> = (0..1024u64).map(|u| ids.hash_one(u) & 1023).collect();
        let top: HashSet<u64> = (0..1024u64).map(|u| ids.hash_one(u) >> 57).collect();
        assert!(low.len() > 500, "{}", low.len());
        assert_eq!(top.len(), 128);
    }
}
