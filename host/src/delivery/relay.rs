//! Delegated relay (seed section 2.4, PROTOCOL section 6).
//!
//! A room notification in `relay` mode goes to one member B (seated members
//! first by seat id, then by join time; never the subject) with
//! `"relay":true`. B relays it over the voice provider's signaling and
//! reports back. If B disconnects, the next member is tried at once; if B
//! stays silent for `relay.report_timeout`, the next one then; at most
//! `relay.max_attempts` members, each at most once.
//!
//! With several nodes, a delegate may sit on any node: the frame reaches it
//! through the cluster bus, and a report arriving on another node is
//! forwarded to this one (the node is found from the `msg_id`'s origin).
//!
//! Invariant: `Pending::current` is the only member whose report completes
//! a relay. It is cleared *before* any await on failover, so a report that
//! arrives after B's turn ended never completes it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::{Cluster, Recipient, RelayReport};
use crate::config::RelayConfig;
use crate::connections::{Connections, SendOutcome};
use crate::store::{Store, StoreError};

/// One relay in flight.
#[derive(Debug)]
struct Pending {
    /// The room to relay to.
    channel: String,
    /// The notification's action (`exit_room`, `up`, …).
    action: String,
    /// Never chosen as delegate; the `user_id` its report carries.
    subject: Option<u64>,
    /// The frame, with `msg_id` and `relay:true`.
    frame: Utf8Bytes,
    /// Members already tried, in order.
    tried: Vec<u64>,
    /// The delegate whose turn it is.
    current: Option<u64>,
}

/// Why a delegate's turn ended without a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failover {
    /// The delegate disconnected.
    Disconnect,
    /// The delegate did not report in time.
    Timeout,
    /// The delegate's queue was full or closed.
    SendFailed,
}

impl Failover {
    fn label(self) -> &'static str {
        match self {
            Failover::Disconnect => "disconnect",
            Failover::Timeout => "timeout",
            Failover::SendFailed => "send_failed",
        }
    }
}

/// The relays of this node.
pub struct Relay {
    /// Timeout and attempt limit.
    settings: RelayConfig,
    /// Room membership and seats, to pick delegates.
    store: Arc<dyn Store>,
    /// Local sessions, to reach delegates.
    connections: Arc<Connections>,
    /// The other nodes, to reach delegates there and forward reports.
    cluster: Option<Arc<Cluster>>,
    /// msg_id -> relay in flight. A std mutex: map updates only.
    pending: Mutex<HashMap<String, Pending>>,
    /// Report timers run here so shutdown waits for none of them.
    tracker: TaskTracker,
    /// Stops the timers on shutdown.
    shutdown: CancellationToken,
}

/// Maps a report action to the action of the notification it reports:
/// `<action>_report` reports `<action>`, for any action (contract 1.1: a
/// plugin's new notification is reported the same way), and the seed's
/// `up_deport` reports `up`. `None` for a frame that is no report.
pub fn reported_action(report: &str) -> Option<&str> {
    if report == "up_deport" {
        return Some("up");
    }
    report
        .strip_suffix("_report")
        .filter(|action| !action.is_empty())
}

impl Relay {
    /// An idle relay engine.
    pub fn new(
        settings: RelayConfig,
        store: Arc<dyn Store>,
        connections: Arc<Connections>,
        cluster: Option<Arc<Cluster>>,
        tracker: TaskTracker,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self {
            settings,
            store,
            connections,
            cluster,
            pending: Mutex::new(HashMap::new()),
            tracker,
            shutdown,
        })
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Number of relays in flight.
    pub fn in_flight(&self) -> usize {
        self.map().len()
    }

    /// Starts relaying `frame` to the room.
    #[tracing::instrument(name = "chorus.relay.start", skip_all, fields(msg_id = msg_id, channel_name = channel))]
    pub async fn start(
        self: &Arc<Self>,
        msg_id: &str,
        channel: &str,
        action: &str,
        subject: Option<u64>,
        frame: Utf8Bytes,
    ) -> Result<(), StoreError> {
        let pending = Pending {
            channel: channel.to_string(),
            action: action.to_string(),
            subject,
            frame,
            tried: Vec::new(),
            current: None,
        };
        self.map().insert(msg_id.to_string(), pending);
        self.advance(msg_id).await
    }

    /// Picks and sends to the next delegate, or ends the relay.
    async fn advance(self: &Arc<Self>, msg_id: &str) -> Result<(), StoreError> {
        loop {
            let Some((channel, subject, tried)) = self.snapshot(msg_id) else {
                return Ok(());
            };
            if tried.len() as u32 >= self.settings.max_attempts {
                self.end(msg_id, "max_attempts");
                return Ok(());
            }
            let candidates = self.candidates(&channel, subject, &tried).await?;
            let Some((delegate, session)) = candidates.into_iter().next() else {
                let members = self.store.room_members(&channel).await?;
                let reason = if members.is_empty() {
                    "room_empty"
                } else {
                    "no_delegate"
                };
                self.end(msg_id, reason);
                return Ok(());
            };
            let Some(frame) = self.assign(msg_id, delegate) else {
                return Ok(());
            };
            metrics::counter!("chorus_relay_attempts_total").increment(1);
            if session.send(frame) == SendOutcome::Queued {
                self.arm_timer(msg_id, delegate);
                return Ok(());
            }
            self.release(msg_id, delegate, Failover::SendFailed);
        }
    }

    /// The room, subject and tried list of a relay still in flight.
    fn snapshot(&self, msg_id: &str) -> Option<(String, Option<u64>, Vec<u64>)> {
        self.map()
            .get(msg_id)
            .map(|p| (p.channel.clone(), p.subject, p.tried.clone()))
    }

    /// Connected members who may still be tried, best first.
    async fn candidates(
        &self,
        channel: &str,
        subject: Option<u64>,
        tried: &[u64],
    ) -> Result<Vec<(u64, Recipient)>, StoreError> {
        let members = self.store.room_members(channel).await?;
        let seats = self.store.room_seats(channel).await?;
        let mut order: Vec<u64> = seats.iter().filter_map(|s| s.user_id).collect();
        order.extend(
            members
                .iter()
                .filter(|m| !order.contains(m))
                .copied()
                .collect::<Vec<_>>(),
        );
        let eligible: Vec<u64> = order
            .into_iter()
            .filter(|u| Some(*u) != subject && !tried.contains(u) && members.contains(u))
            .collect();
        crate::cluster::locate(&self.connections, self.cluster.as_ref(), &eligible).await
    }

    /// Makes `delegate` the current one; the frame to send, or `None` if
    /// the relay ended meanwhile.
    fn assign(&self, msg_id: &str, delegate: u64) -> Option<Utf8Bytes> {
        let mut map = self.map();
        let pending = map.get_mut(msg_id)?;
        pending.tried.push(delegate);
        pending.current = Some(delegate);
        Some(pending.frame.clone())
    }

    /// Ends `delegate`'s turn if it is still theirs; whether it was.
    fn release(&self, msg_id: &str, delegate: u64, why: Failover) -> bool {
        let mut map = self.map();
        match map.get_mut(msg_id) {
            Some(p) if p.current == Some(delegate) => {
                p.current = None;
                metrics::counter!("chorus_relay_failovers_total", "reason" => why.label())
                    .increment(1);
                true
            }
            _ => false,
        }
    }

    fn end(&self, msg_id: &str, outcome: &'static str) {
        if self.map().remove(msg_id).is_some() {
            metrics::counter!("chorus_relay_outcomes_total", "outcome" => outcome).increment(1);
            tracing::debug!(msg_id, outcome, "relay ended");
        }
    }

    fn arm_timer(self: &Arc<Self>, msg_id: &str, delegate: u64) {
        let relay = Arc::clone(self);
        let msg_id = msg_id.to_string();
        let timeout: Duration = self.settings.report_timeout;
        let shutdown = self.shutdown.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(timeout) => {}
                _ = shutdown.cancelled() => return,
            }
            if relay.release(&msg_id, delegate, Failover::Timeout)
                && let Err(e) = relay.advance(&msg_id).await
            {
                tracing::warn!(msg_id, error = %e, "relay failover failed");
            }
        });
    }

    /// A report from a delegate connected to this node; whether it
    /// completed a relay of this node. A report for another node's relay
    /// is forwarded there.
    pub fn report(&self, report: &RelayReport) -> bool {
        if let (Some(cluster), Some(id)) = (&self.cluster, &report.msg_id) {
            let ours = self.map().contains_key(id);
            if !ours && cluster.forward_report(report) {
                return false;
            }
        }
        let completed = self.report_here(report);
        if let (false, Some(cluster), None) = (completed, &self.cluster, &report.msg_id) {
            cluster.forward_report(report);
        }
        completed
    }

    /// A report, from here or forwarded by another node; whether it
    /// completed a relay of this node.
    pub fn report_here(&self, report: &RelayReport) -> bool {
        let Some(action) = reported_action(&report.report) else {
            return false;
        };
        let reporter = report.reporter;
        let mut map = self.map();
        let found = match &report.msg_id {
            Some(id) => map
                .get(id)
                .filter(|p| p.action == action)
                .map(|_| id.clone()),
            None => map
                .iter()
                .find(|(_, p)| {
                    p.current == Some(reporter)
                        && p.action == action
                        && p.subject == Some(report.user)
                })
                .map(|(id, _)| id.clone()),
        };
        let completes = found
            .as_ref()
            .and_then(|id| map.get(id))
            .is_some_and(|p| p.current == Some(reporter));
        if completes {
            if let Some(id) = found {
                map.remove(&id);
            }
            metrics::counter!("chorus_relay_outcomes_total", "outcome" => "completed").increment(1);
        } else {
            metrics::counter!("chorus_relay_unmatched_reports_total").increment(1);
        }
        completes
    }

    /// Moves every relay whose delegate is `user_id` on to the next member.
    pub async fn on_disconnect(self: &Arc<Self>, user_id: u64) {
        let ids: Vec<String> = self
            .map()
            .iter()
            .filter(|(_, p)| p.current == Some(user_id))
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            if self.release(&id, user_id, Failover::Disconnect)
                && let Err(e) = self.advance(&id).await
            {
                tracing::warn!(msg_id = id, error = %e, "relay failover failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::reported_action;

    #[test]
    fn every_action_has_its_report_and_the_seeds_spelling_stays() {
        assert_eq!(reported_action("up_deport"), Some("up"));
        assert_eq!(reported_action("up_report"), Some("up"));
        assert_eq!(reported_action("exit_room_report"), Some("exit_room"));
        assert_eq!(reported_action("lucky_draw_report"), Some("lucky_draw"));
        assert_eq!(reported_action("_report"), None);
        assert_eq!(reported_action("send_gift"), None);
        assert_eq!(reported_action("report"), None);
    }
}
