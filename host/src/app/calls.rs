//! Calls that ring unanswered end by themselves (issue 21, item 4).
//!
//! A client's `call_start` records a call at once (so the callee cannot be
//! called by a third user meanwhile), but a call its callee never answers
//! must not hold both users for ever. The host does not know what
//! "answered" means; the call plugin does (`call_answer`). So for each call
//! a client's action started, the host raises the system event
//! `call_ring_timeout` about the caller after `calls.ring_timeout`
//! (default 30 s), with the action's `result` object as the payload, and
//! the plugin ends the call if it is still ringing.
//!
//! The timer is the host's, on the node where the call started; a node
//! that stops before it fires drops it (its users are disconnected, which
//! ends their calls). Calls the app backend starts are its own policy and
//! get no timer. Contract 1.1 has no plugin timers yet; when it does, the
//! call plugin can ask for this one itself.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::app::App;

/// The system event raised when a call a client started has rung for
/// `calls.ring_timeout`.
pub const RING_TIMEOUT_EVENT: &str = "call_ring_timeout";

impl App {
    /// Arms the ring timeout of each call `callers` started, with the
    /// starting action's `result` (an object; anything else is sent as
    /// `{}`) as the event's payload. Runs on the tracker; shutdown drops
    /// the timers.
    pub fn ring(self: &Arc<Self>, callers: &[u64], result: &Value) {
        let fields: Map<String, Value> = result.as_object().cloned().unwrap_or_default();
        for &caller in callers {
            let app = Arc::clone(self);
            let fields = fields.clone();
            let timeout = self.config.calls.ring_timeout;
            self.tracker.spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep(timeout) => {}
                    _ = app.shutdown.cancelled() => return,
                }
                app.dispatch
                    .raise_with(RING_TIMEOUT_EVENT, caller, fields)
                    .await;
            });
        }
    }
}
