//! The sessions connected to this node, by user: one live connection per
//! user (a new one replaces the old), and the handle other tasks use to
//! send to a session or close it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use chorus_protocol::codes::close;

/// Why a session was closed by someone other than its client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    /// WebSocket close code (PROTOCOL section 4).
    pub code: u16,
    /// Short reason sent in the close frame.
    pub reason: String,
}

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
    pub online_token: String,
    /// The session token the connection was opened with (for revocation).
    pub sid: String,
    /// Frames waiting for the socket, bounded (`limits.outbound_queue`).
    outbox: Outbox,
    /// Cancelled to make the session task close the socket.
    closing: CancellationToken,
    /// The code and reason to close with; the first one set wins.
    close_reason: Mutex<Option<CloseReason>>,
}

/// A bounded queue with one consumer, the session task.
///
/// Not a `tokio::sync::mpsc` channel: that allocates a 32-slot block and a
/// cache-padded header up front, about 1.6 KB for every connection even
/// when it never receives a frame. This queue allocates nothing until the
/// first frame and gives its buffer back once a burst is drained.
#[derive(Debug)]
struct Outbox {
    /// Most frames held at once.
    capacity: usize,
    /// The frames, oldest first. A std mutex: push and pop only.
    frames: Mutex<VecDeque<Utf8Bytes>>,
    /// Wakes the session task; a notification sent while it is busy is
    /// kept as a permit, so none is lost.
    ready: Notify,
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
        frames.push_back(frame);
        drop(frames);
        self.ready.notify_one();
        true
    }

    /// The oldest frame, if any.
    fn pop(&self) -> Option<Utf8Bytes> {
        let mut frames = self.lock();
        let frame = frames.pop_front();
        if frames.is_empty() && frames.capacity() > 16 {
            *frames = VecDeque::new();
        }
        frame
    }
}

impl SessionHandle {
    /// A handle whose queue holds at most `queue` frames.
    pub fn new(
        user_id: u64,
        conn_id: u64,
        online_token: String,
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
                ready: Notify::new(),
            },
            closing: CancellationToken::new(),
            close_reason: Mutex::new(None),
        })
    }

    /// Queues a frame without waiting. A full queue closes the session with
    /// 4011: one slow client never holds up a broadcast.
    pub fn send(&self, frame: Utf8Bytes) -> SendOutcome {
        if self.closing.is_cancelled() {
            return SendOutcome::Closed;
        }
        if self.outbox.push(frame) {
            return SendOutcome::Queued;
        }
        metrics::counter!("chorus_outbound_overflows_total").increment(1);
        self.close(close::SLOW_CONSUMER, "outbound queue full");
        SendOutcome::Overflow
    }

    /// The next queued frame, waiting for one. Only the session task calls
    /// this: the queue has a single consumer.
    pub async fn next_frame(&self) -> Utf8Bytes {
        loop {
            if let Some(frame) = self.outbox.pop() {
                return frame;
            }
            self.outbox.ready.notified().await;
        }
    }

    /// A queued frame, if one is there now.
    pub fn try_next_frame(&self) -> Option<Utf8Bytes> {
        self.outbox.pop()
    }

    /// Asks the session task to close the socket with `code`.
    pub fn close(&self, code: u16, reason: &str) {
        let mut slot = self.close_reason.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(CloseReason {
                code,
                reason: reason.to_string(),
            });
        }
        drop(slot);
        self.closing.cancel();
    }

    /// Marks the session ended: later sends answer [`SendOutcome::Closed`]
    /// instead of filling a queue nobody reads.
    pub fn mark_ended(&self) {
        self.closing.cancel();
    }

    /// Resolves once someone asked for the session to close.
    pub async fn closing(&self) {
        self.closing.cancelled().await;
    }

    /// The reason given to [`SessionHandle::close`], if any.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.close_reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The sessions of this node.
#[derive(Debug, Default)]
pub struct Registry {
    /// user -> live session. A std mutex: every critical section is a map
    /// operation, never an await.
    by_user: Mutex<HashMap<u64, Arc<SessionHandle>>>,
}

impl Registry {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<SessionHandle>>> {
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
