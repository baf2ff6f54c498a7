//! The sessions connected to this node, by user ([`Connections`]): one
//! live connection per user (a new one replaces the old), and the
//! [`SessionHandle`] other tasks use to queue frames for a session or
//! close it. [`fan_out`] queues one frame on many sessions.
//!
//! Layer: above `config`/`ids` only. Everything that reaches a client
//! socket goes through a handle's bounded outbox; nothing here awaits.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::Notify;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

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
    pub online_token: String,
    /// The session token the connection was opened with (for revocation).
    pub sid: String,
    /// Frames waiting for the socket, bounded (`limits.outbound_queue`).
    outbox: Outbox,
    /// Cancelled to make the session task close the socket; a child of
    /// the node's shutdown token, so shutting down cancels it too.
    closing: CancellationToken,
    /// The code and reason to close with; the first one set wins.
    close_reason: Mutex<Option<Disconnect>>,
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
    /// A handle whose queue holds at most `queue` frames, closed when
    /// `closing` is cancelled (a child of the node's shutdown token: the
    /// session task watches one token for both).
    pub fn new(
        user_id: u64,
        conn_id: u64,
        online_token: String,
        sid: String,
        queue: usize,
        closing: CancellationToken,
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
            closing,
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
        if self.closing.is_cancelled() {
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

    /// Resolves once a frame is queued (at once if one already is). Only
    /// the session task calls this: the queue has a single consumer.
    pub async fn frame_ready(&self) {
        loop {
            if !self.outbox.lock().is_empty() {
                return;
            }
            self.outbox.ready.notified().await;
        }
    }

    /// A queued frame, if one is there now.
    pub fn try_next_frame(&self) -> Option<Utf8Bytes> {
        self.outbox.pop()
    }

    /// Asks the session task to close the socket with `how`; the first
    /// close asked for wins.
    pub fn close(&self, how: Disconnect) {
        let mut slot = self.close_reason.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(how);
        }
        drop(slot);
        self.closing.cancel();
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
        self.closing.cancel();
    }

    /// Resolves once someone asked for the session to close, or the node
    /// is shutting down.
    pub fn closing(&self) -> WaitForCancellationFuture<'_> {
        self.closing.cancelled()
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
    by_user: Mutex<HashMap<u64, Arc<SessionHandle>>>,
}

impl Connections {
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
    metrics::counter!("chorus_frames_out_total", "action" => action.to_string(), "mode" => mode)
        .increment(sent);
}
