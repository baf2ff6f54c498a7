//! What happens to a user as a whole, wherever the request comes from
//! (a session's end, the server API, another node): disconnect, kick,
//! revoke, replace.

use std::sync::Arc;

use crate::app::App;
use crate::revocations::RevocationError;
use crate::store::{ApplyError, StateChange, StoreError};
use crate::webhooks::{Cause, DisconnectReason, with_cause};
use chorus_protocol::CloseCode;

/// A revocation could not be recorded where it lasts.
#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    /// Redis (several nodes) could not record or find it.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The data folder (one node) could not be written.
    #[error(transparent)]
    Disk(#[from] RevocationError),
    /// The write was abandoned (the runtime is shutting down).
    #[error("the revocation write was abandoned")]
    Cancelled,
}

impl App {
    /// A user's disconnection (PROTOCOL section 5), after any grace: relays
    /// they were delegate of move on, plugins subscribed to `disconnected`
    /// take them out of their room and call, and whatever a failed plugin
    /// left behind is cleared so no seat stays held by a ghost. With
    /// webhooks, the changes are reported with reason `disconnect` (`kick`
    /// for a kicked user), then `session.disconnected` with `reason`.
    pub async fn disconnect(&self, user_id: u64, reason: DisconnectReason) {
        self.disconnect_flow(user_id, reason, false).await;
    }

    /// [`App::disconnect`] of a user who may come back while it runs: a
    /// connection that closed (after any grace), a heartbeat timeout, a
    /// user of a dead node. Nothing is done if the user is connected
    /// anywhere when the flow starts, and every batch of the flow (each
    /// `disconnected` handler's, the leftovers') carries the condition
    /// [`StateChange::UserOffline`]: it applies only while the user is
    /// connected nowhere, checked by the store in the same atomic step,
    /// whichever node the user came back to. The first batch refused for
    /// that stops the flow; what earlier handlers did stands (a call
    /// ended stays ended). A survivor cleaning up after a dead node used
    /// to take out of their room a user who had just reconnected and been
    /// entered again (issue 20 item 4: 1 to 4 users per two-node storm).
    /// True when it ran to the end; `session.disconnected` is recorded
    /// only then (a user found back has a session).
    pub async fn disconnect_unless_back(&self, user_id: u64, reason: DisconnectReason) -> bool {
        self.disconnect_flow(user_id, reason, true).await
    }

    async fn disconnect_flow(
        &self,
        user_id: u64,
        reason: DisconnectReason,
        unless_back: bool,
    ) -> bool {
        // The store work around the plugin calls takes a system-event slot
        // too (never while waiting for a room's lock): a mass drop must
        // not flood the store ahead of the calls (see SYSTEM_EVENTS_AT_ONCE).
        let slots = self.dispatch.system_slots();
        {
            let _slot = slots.acquire().await;
            if unless_back && self.is_online(user_id).await {
                metrics::counter!("chorus_disconnects_skipped_total").increment(1);
                return false;
            }
            metrics::counter!("chorus_disconnects_total").increment(1);
            self.delivery.relay.on_disconnect(user_id).await;
            if let Some(cluster) = &self.cluster {
                cluster.announce_gone(user_id);
            }
        }
        let cause = match reason {
            DisconnectReason::Kicked => Cause::Kick,
            _ => Cause::Disconnect,
        };
        let finished = with_cause(cause, async {
            let handled = if unless_back {
                self.dispatch
                    .raise_while_offline("disconnected", user_id)
                    .await
            } else {
                self.dispatch.raise("disconnected", user_id).await;
                true
            };
            let _slot = slots.acquire().await;
            handled && self.clear_leftovers(user_id, unless_back).await
        })
        .await;
        if !finished {
            metrics::counter!("chorus_disconnects_skipped_total").increment(1);
            tracing::info!(user_id, "user came back during the disconnect; left as is");
            return false;
        }
        let _slot = slots.acquire().await;
        if let Some(hooks) = &self.webhooks
            && let Err(e) = hooks.session_disconnected(user_id, reason).await
        {
            tracing::error!(user_id, error = %e, "session.disconnected not recorded");
        }
        true
    }

    /// At a graceful shutdown of a single node with webhooks: its room
    /// state (memory) ends with the process, so every connected user is
    /// taken through the disconnect flow first (plugins take them out of
    /// their rooms, seats and calls; `session.disconnected` with reason
    /// `server_shutdown`), recorded in the outbox for the next start to
    /// deliver; without it the app backend kept them in their rooms after
    /// every deploy (found in review). At most `within`; 16 at a time.
    /// With a cluster the lease hands users over instead; without webhooks
    /// nobody is told, so nothing is done. How many were taken through.
    pub async fn leave_everyone_at_shutdown(&self, within: std::time::Duration) -> usize {
        use futures_util::StreamExt;
        if self.cluster.is_some() || self.webhooks.is_none() {
            return 0;
        }
        let mut users: Vec<u64> = self.connections.all().iter().map(|s| s.user_id).collect();
        users.sort_unstable();
        users.dedup();
        let total = users.len();
        let done = std::sync::atomic::AtomicUsize::new(0);
        let work = futures_util::stream::iter(users).for_each_concurrent(16, |user| {
            let done = &done;
            async move {
                self.disconnect(user, DisconnectReason::ServerShutdown)
                    .await;
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
        if tokio::time::timeout(within, work).await.is_err() {
            tracing::warn!(
                total,
                done = done.load(std::sync::atomic::Ordering::Relaxed),
                "shutdown: not every user's leaving was recorded in time"
            );
        }
        done.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Takes the user out of what no plugin took them out of (a failed
    /// plugin): room and call; with `unless_back`, only while the user is
    /// connected nowhere. False when the store refused it because the
    /// user is back.
    async fn clear_leftovers(&self, user_id: u64, unless_back: bool) -> bool {
        let mut changes = Vec::new();
        let room = self.store.membership_of(user_id).await.ok().flatten();
        if let Some(m) = &room {
            changes.push(StateChange::LeaveRoom {
                user_id,
                channel_name: m.channel_name.clone(),
            });
        }
        if let Ok(Some(_)) = self.store.call_of(user_id).await {
            changes.push(StateChange::EndCall { user_id });
        }
        if changes.is_empty() {
            return true;
        }
        if unless_back {
            changes.insert(0, StateChange::UserOffline { user_id });
        }
        match self.store.apply(&changes).await {
            Ok(_) => {
                if let Some(m) = room {
                    tracing::warn!(
                        user_id,
                        channel_name = m.channel_name,
                        "no plugin removed a disconnected user; removed silently"
                    );
                }
                true
            }
            Err(ApplyError::UserBack(_)) => false,
            Err(e) => {
                tracing::warn!(user_id, error = %e, "could not clear a disconnected user's state");
                true
            }
        }
    }

    /// Disconnects the user after `heartbeat.grace` unless they came back
    /// (PROTOCOL section 5). Runs on the tracker; shutdown abandons it (the
    /// lease or the next start cleans up). A later session of the user
    /// that ends too starts a grace of its own, which replaces this one:
    /// a client that drops, comes back and drops again within the grace is
    /// disconnected once, a full grace after its last drop (found in the
    /// review of issue 16: it got two `session.disconnected`, and the
    /// first timer cut the second session's grace short).
    pub fn disconnect_after_grace(self: &Arc<Self>, user_id: u64, reason: DisconnectReason) {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let timer = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.grace_timers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(user_id, timer);
        let app = Arc::clone(self);
        let grace = self.config.heartbeat.grace;
        self.tracker.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(grace) => {}
                _ = app.shutdown.cancelled() => return,
            }
            {
                let mut timers = app.grace_timers.lock().unwrap_or_else(|p| p.into_inner());
                if timers.get(&user_id) != Some(&timer) {
                    return; // a later drop's grace decides
                }
                timers.remove(&user_id);
            }
            app.disconnect_unless_back(user_id, reason).await;
        });
    }

    /// Whether the user is connected anywhere.
    pub async fn is_online(&self, user_id: u64) -> bool {
        if self.connections.get(user_id).is_some() {
            return true;
        }
        matches!(self.store.node_of(user_id).await, Ok(Some(_)))
    }

    /// Kicks the user (PROTOCOL section 8): `kicked` with `reason`, then
    /// close 4010, on whichever node holds the connection. Whether the
    /// user was connected. Fails only when the store cannot say where the
    /// user is. With `revoke` the node holding the connection also
    /// revokes its sid (see [`App::revoke`] for offline users).
    pub async fn kick(
        &self,
        user_id: u64,
        reason: &str,
        revoke: bool,
    ) -> Result<bool, RevokeError> {
        if self.kick_here(user_id, reason, revoke).await? {
            return Ok(true);
        }
        match &self.cluster {
            Some(cluster) => Ok(cluster.kick(user_id, reason, revoke).await?),
            None => Ok(false),
        }
    }

    /// Kicks the user if connected to this node; whether they were. With
    /// `revoke`, the session's sid is revoked before the close.
    pub async fn kick_here(
        &self,
        user_id: u64,
        reason: &str,
        revoke: bool,
    ) -> Result<bool, RevokeError> {
        let Some(session) = self.connections.get(user_id) else {
            return Ok(false);
        };
        if revoke {
            self.revoke(&session.sid).await?;
        }
        session.kick(CloseCode::Kicked, reason);
        Ok(true)
    }

    /// Refuses `sid` until it expires, on every node and across restarts:
    /// in Redis (until the sid's own expiry) with several nodes, on disk
    /// under `server.data_dir` on one. Whether `sid` is a valid unexpired
    /// sid (anything else is refused anyway, so nothing is recorded).
    /// Fails when Redis or the disk cannot record it.
    pub async fn revoke(&self, sid: &str) -> Result<bool, RevokeError> {
        let now = crate::ids::unix_now();
        let Ok(claims) =
            chorus_protocol::credentials::verify_sid(self.config.app_secret(), sid, None, now)
        else {
            return Ok(false);
        };
        self.revoke_here(sid);
        match &self.cluster {
            Some(cluster) => {
                cluster
                    .first_use("revoked", sid, now, claims.expires_at)
                    .await?;
                cluster.announce_revoked(sid);
            }
            None => self.save_revoked().await?,
        }
        Ok(true)
    }

    /// Writes the revoked sids to the data folder (a blocking write, off
    /// the runtime's threads).
    async fn save_revoked(&self) -> Result<(), RevokeError> {
        let dir = self.config.data_dir();
        let snapshot = {
            let _writing = self.revoked_file.lock().unwrap_or_else(|p| p.into_inner());
            self.revoked
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
        };
        let written = tokio::task::spawn_blocking(move || snapshot.save(&dir)).await;
        match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "revoked sids not saved");
                Err(e.into())
            }
            Err(_) => Err(RevokeError::Cancelled),
        }
    }

    /// Refuses `sid` on this node until it expires (in memory only: the
    /// node that revoked it recorded it where it lasts).
    pub fn revoke_here(&self, sid: &str) {
        let now = crate::ids::unix_now();
        let expires =
            chorus_protocol::credentials::verify_sid(self.config.app_secret(), sid, None, now)
                .map(|c| c.expires_at)
                .unwrap_or(now);
        let mut revoked = self.revoked.lock().unwrap_or_else(|p| p.into_inner());
        revoked.insert(sid, expires, now);
    }

    /// Whether `sid` was revoked: on this node (or announced by another),
    /// and with several nodes in Redis, so a node started after the
    /// revocation refuses it too. While Redis cannot answer, only what
    /// this node knows counts (logged and counted in
    /// `chorus_single_use_unchecked_total`): a node without Redis keeps
    /// accepting connections.
    pub async fn is_revoked(&self, sid: &str) -> bool {
        let here = {
            let revoked = self.revoked.lock().unwrap_or_else(|p| p.into_inner());
            revoked.contains(sid, crate::ids::unix_now())
        };
        match &self.cluster {
            Some(cluster) if !here => match cluster.remembered("revoked", sid).await {
                Ok(revoked) => revoked,
                Err(e) => {
                    metrics::counter!("chorus_single_use_unchecked_total").increment(1);
                    tracing::warn!(error = %e, "revocation checked on this node only: Redis unavailable");
                    false
                }
            },
            _ => here,
        }
    }

    /// The user connected on another node: closes their connection here
    /// with 4009, unless presence says they are (again) on this node.
    pub async fn replace_if_elsewhere(&self, user_id: u64) {
        let Some(session) = self.connections.get(user_id) else {
            return;
        };
        match self.store.node_of(user_id).await {
            Ok(Some(node)) if node == self.node_id => {}
            _ => session.replace(),
        }
    }
}
