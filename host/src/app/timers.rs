//! The task that fires plugin timers (contract 1.1 `set-timer`).
//!
//! Timers live in the state store, not on a node: the loop claims the
//! ones that are due ([`Store::claim_due_timers`], atomic, so of several
//! nodes exactly one gets a timer) and hands each to
//! [`Dispatcher::fire_timer`] in a task of its own, so a slow plugin
//! never holds up the loop or any session.
//!
//! At most [`parallelism`] timer calls run at once on a node (half of
//! `plugins.max_concurrent_calls`, at least one), so timers that come due
//! together neither fail as overloaded against their own plugin's
//! in-flight bound nor crowd out the clients' calls; a round claims no
//! more timers than there are free slots, so what this node cannot run
//! yet stays in the store for another node. A timer whose call still
//! never ran (overloaded by other calls, breaker open) is put back by
//! `fire_timer` and retried. Between rounds it sleeps until
//! the earliest due time, at most [`POLL`] (a timer set through another
//! node is seen within that), and wakes early when a batch of this node
//! scheduled one. When the store cannot be reached it tries again every
//! [`RETRY`]: a timer due during a Redis outage fires once Redis is back.
//! A node that stops leaves its timers in the store for the others.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::App;
use crate::store::unix_ms;

/// The longest sleep between two looks at the store.
pub const POLL: Duration = Duration::from_millis(50);
/// The pause after the store failed to answer.
pub const RETRY: Duration = Duration::from_millis(500);
/// The most timers claimed in one round; a full round is followed by
/// another at once.
const CLAIM_BATCH: usize = 256;

/// How many timer calls may run at once on a node with
/// `max_concurrent_calls` (`plugins.max_concurrent_calls`, per plugin
/// version): half of it, at least one.
pub fn parallelism(max_concurrent_calls: usize) -> usize {
    (max_concurrent_calls / 2).max(1)
}

/// Runs until shutdown (on the app's tracker).
pub async fn run(app: Arc<App>) {
    let changed = app.dispatch.timers_changed();
    let slots = Arc::new(Semaphore::new(parallelism(
        app.config.plugins.max_concurrent_calls,
    )));
    let mut outage = false;
    loop {
        let permits = tokio::select! {
            () = app.shutdown.cancelled() => return,
            permits = free_slots(&slots) => permits,
        };
        let wait = match round(&app, permits).await {
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

/// Waits for at least one free slot and takes every free one (at most
/// [`CLAIM_BATCH`]).
async fn free_slots(slots: &Arc<Semaphore>) -> Vec<OwnedSemaphorePermit> {
    // The semaphore is never closed: acquiring only fails once closed.
    let Ok(first) = Arc::clone(slots).acquire_owned().await else {
        return Vec::new();
    };
    let mut permits = vec![first];
    while permits.len() < CLAIM_BATCH {
        match Arc::clone(slots).try_acquire_owned() {
            Ok(permit) => permits.push(permit),
            Err(_) => break,
        }
    }
    permits
}

/// Claims at most one timer per permit and fires each in a task holding
/// its permit (unused permits are freed); how long to sleep next, or
/// `None` to claim again at once (every permit found a timer).
async fn round(
    app: &Arc<App>,
    mut permits: Vec<OwnedSemaphorePermit>,
) -> Result<Option<Duration>, crate::store::StoreError> {
    let limit = permits.len();
    let due = app.store.claim_due_timers(limit).await?;
    let full = due.len() == limit;
    for (timer, permit) in due.into_iter().zip(permits.drain(..)) {
        let app_for_task = Arc::clone(app);
        app.tracker.spawn(async move {
            app_for_task.dispatch.fire_timer(timer).await;
            drop(permit);
        });
    }
    drop(permits);
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
