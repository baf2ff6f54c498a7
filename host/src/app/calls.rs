//! Calls that ring unanswered end by themselves (issue 21, item 4).
//!
//! A client's `call_start` records a call at once (so the callee cannot be
//! called by a third user meanwhile), but a call its callee never answers
//! must not hold both users for ever. The host does not know what
//! "answered" means; the call plugin does (`call_answer`). So for each call
//! a client's action started, the host raises the system event
//! `call_ring_timeout` about the caller after `calls.ring_timeout`
//! (default 30 s), with the action's `result` object as the payload, and
//! the plugin ends the call if it is still ringing (an answered or ended
//! call makes the event a no-op).
//!
//! The timeouts of a node wait in one queue ([`Ringing`]) served by one
//! task ([`run`]), not in a task per call: a call costs an entry (its
//! caller and the result object) until its timeout, whether or not it was
//! answered, and nothing else. Every entry has the same delay, so the
//! queue is in due order by construction. The task raises the due events
//! one after another. The queue is as long as the calls this node's
//! clients started within one `calls.ring_timeout`; each call needed an
//! accepted client action, which the session's own bounds pace.
//!
//! The timer is the host's, on the node where the call started; a node
//! that stops before it fires drops it (its users are disconnected, which
//! ends their calls). Calls the app backend starts are its own policy and
//! get no timer. (Contract 1.1 plugin timers could carry this instead;
//! the host's event is kept so that 1.0 call plugins keep their rule.)

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::app::App;

/// The system event raised when a call a client started has rung for
/// `calls.ring_timeout`.
pub const RING_TIMEOUT_EVENT: &str = "call_ring_timeout";

/// One waiting ring timeout: when it is due, the caller, the starting
/// action's result fields.
type Ring = (Instant, u64, Map<String, Value>);

/// The ring timeouts waiting on this node, earliest first.
#[derive(Debug, Default)]
pub struct Ringing {
    /// Due time, caller, the starting action's result fields; pushed in
    /// due order (one delay for all).
    queue: Mutex<VecDeque<Ring>>,
    /// Wakes [`run`] when the queue was empty and one was added.
    added: Notify,
}

impl Ringing {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Ring>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// When the earliest timeout is due, if any.
    fn next_due(&self) -> Option<Instant> {
        self.lock().front().map(|(due, _, _)| *due)
    }

    /// Removes and returns the timeouts due at `now`.
    fn take_due(&self, now: Instant) -> Vec<(u64, Map<String, Value>)> {
        let mut queue = self.lock();
        let mut due = Vec::new();
        while queue.front().is_some_and(|(at, _, _)| *at <= now) {
            if let Some((_, caller, fields)) = queue.pop_front() {
                due.push((caller, fields));
            }
        }
        due
    }

    /// How many timeouts are waiting.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is waiting.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

impl App {
    /// Arms the ring timeout of each call `callers` started, with the
    /// starting action's `result` (an object; anything else is sent as
    /// `{}`) as the event's payload. Shutdown drops the waiting ones.
    pub fn ring(self: &Arc<Self>, callers: &[u64], result: &Value) {
        if callers.is_empty() {
            return;
        }
        let fields: Map<String, Value> = result.as_object().cloned().unwrap_or_default();
        let due = Instant::now() + self.config.calls.ring_timeout;
        let mut queue = self.ringing.lock();
        for &caller in callers {
            queue.push_back((due, caller, fields.clone()));
        }
        drop(queue);
        self.ringing.added.notify_one();
    }
}

/// Raises each ring timeout when due, until shutdown (on the app's
/// tracker).
pub async fn run(app: Arc<App>) {
    loop {
        let next = app.ringing.next_due();
        tokio::select! {
            () = app.shutdown.cancelled() => return,
            () = app.ringing.added.notified(), if next.is_none() => continue,
            () = sleep_until(next) => {}
        }
        for (caller, fields) in app.ringing.take_due(Instant::now()) {
            app.dispatch
                .raise_with(RING_TIMEOUT_EVENT, caller, fields)
                .await;
        }
    }
}

/// Sleeps until `at`; for ever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
