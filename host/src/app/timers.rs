//! The task that fires plugin timers (contract 1.1 `set-timer`).
//!
//! Timers live in the state store, not on a node: the loop claims the
//! ones that are due ([`Store::claim_due_timers`], atomic, so of several
//! nodes exactly one gets a timer) and hands each to
//! [`Dispatcher::fire_timer`] in a task of its own, so a slow plugin
//! never holds up the loop or any session. Between rounds it sleeps until
//! the earliest due time, at most [`POLL`] (a timer set through another
//! node is seen within that), and wakes early when a batch of this node
//! scheduled one. When the store cannot be reached it tries again every
//! [`RETRY`]: a timer due during a Redis outage fires once Redis is back.
//! A node that stops leaves its timers in the store for the others.

use std::sync::Arc;
use std::time::Duration;

use super::App;
use crate::store::unix_ms;

/// The longest sleep between two looks at the store.
pub const POLL: Duration = Duration::from_millis(50);
/// The pause after the store failed to answer.
pub const RETRY: Duration = Duration::from_millis(500);
/// The most timers claimed in one round; a full round is followed by
/// another at once.
const CLAIM_BATCH: usize = 256;

/// Runs until shutdown (on the app's tracker).
pub async fn run(app: Arc<App>) {
    let changed = app.dispatch.timers_changed();
    let mut outage = false;
    loop {
        let wait = match round(&app).await {
            Err(e) => {
                if !outage {
                    tracing::warn!(error = %e, "cannot claim due timers; retrying");
                }
                outage = true;
                RETRY
            }
            Ok(next) => {
                if outage {
                    tracing::info!("claiming timers again");
                    outage = false;
                }
                match next {
                    Some(wait) => wait,
                    None => continue,
                }
            }
        };
        tokio::select! {
            () = app.shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
            () = changed.notified() => {}
        }
    }
}

/// Claims and fires what is due; how long to sleep next, or `None` to
/// claim again at once (the round was full).
async fn round(app: &Arc<App>) -> Result<Option<Duration>, crate::store::StoreError> {
    let due = app.store.claim_due_timers(CLAIM_BATCH).await?;
    let full = due.len() == CLAIM_BATCH;
    for timer in due {
        let app_for_task = Arc::clone(app);
        app.tracker
            .spawn(async move { app_for_task.dispatch.fire_timer(timer).await });
    }
    if full {
        return Ok(None);
    }
    let next = app.store.next_timer_due().await?;
    let wait = match next {
        // At least 1 ms: the store's clock (Redis's) may be a little
        // behind this node's, and a timer not yet due there must not make
        // this loop spin.
        Some(at) => Duration::from_millis(at.saturating_sub(unix_ms()).max(1)).min(POLL),
        None => POLL,
    };
    Ok(Some(wait))
}
