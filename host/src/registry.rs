//! The sessions connected to this node, by user: one live connection per
//! user (a new one replaces the old), and the handle other tasks use to
//! send to a session or close it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::mpsc;
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
    /// Outbound frames, bounded (`limits.outbound_queue`).
    tx: mpsc::Sender<Utf8Bytes>,
    /// Cancelled to make the session task close the socket.
    closing: CancellationToken,
    /// The code and reason to close with; the first one set wins.
    close_reason: Mutex<Option<CloseReason>>,
}

impl SessionHandle {
    /// A handle and the receiving end of its queue.
    pub fn new(
        user_id: u64,
        conn_id: u64,
        online_token: String,
        sid: String,
        queue: usize,
    ) -> (Arc<Self>, mpsc::Receiver<Utf8Bytes>) {
        let (tx, rx) = mpsc::channel(queue);
        let handle = Self {
            user_id,
            conn_id,
            online_token,
            sid,
            tx,
            closing: CancellationToken::new(),
            close_reason: Mutex::new(None),
        };
        (Arc::new(handle), rx)
    }

    /// Queues a frame without waiting. A full queue closes the session with
    /// 4011: one slow client never holds up a broadcast.
    pub fn send(&self, frame: Utf8Bytes) -> SendOutcome {
        match self.tx.try_send(frame) {
            Ok(()) => SendOutcome::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics::counter!("chorus_outbound_overflows_total").increment(1);
                self.close(close::SLOW_CONSUMER, "outbound queue full");
                SendOutcome::Overflow
            }
            Err(mpsc::error::TrySendError::Closed(_)) => SendOutcome::Closed,
        }
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
