//! The one task that applies what the cluster received for layers above
//! it ([`ClusterEvent`]), so the cluster never calls up into delivery,
//! sessions or HTTP code.
//!
//! Events are applied in arrival order. Those that wait on the store or on
//! plugins (a replacement check, a relay failover, a disconnect) run as
//! tasks of their own, so one slow event never holds up the rest; a
//! disconnect answers its `done` when complete, which keeps a dead node's
//! cleanup one user at a time.

use std::sync::Arc;

use crate::app::App;
use crate::cluster::{ClusterEvent, ClusterInbox};

/// Applies events until the cluster's side closes or the node shuts down.
pub async fn run(app: Arc<App>, mut inbox: ClusterInbox) {
    loop {
        let event = tokio::select! {
            event = inbox.recv() => event,
            _ = app.shutdown.cancelled() => return,
        };
        let Some(event) = event else { return };
        apply(&app, event);
    }
}

fn apply(app: &Arc<App>, event: ClusterEvent) {
    match event {
        ClusterEvent::Report(report) => {
            app.delivery.relay.report_here(&report);
        }
        ClusterEvent::Gone { user } => {
            let relay = Arc::clone(&app.delivery.relay);
            spawn(app, async move { relay.on_disconnect(user).await });
        }
        ClusterEvent::Kick {
            user,
            reason,
            revoke,
        } => {
            let app2 = Arc::clone(app);
            spawn(app, async move {
                if let Err(e) = app2.kick_here(user, &reason, revoke).await {
                    tracing::warn!(user_id = user, error = %e, "kick: revocation not recorded");
                }
            });
        }
        ClusterEvent::Revoke { sid } => app.revoke_here(&sid),
        ClusterEvent::Replace { user } => {
            let app2 = Arc::clone(app);
            spawn(app, async move { app2.replace_if_elsewhere(user).await });
        }
        ClusterEvent::Disconnect { user, done } => {
            let app2 = Arc::clone(app);
            spawn(app, async move {
                // Its node died: as far as the user's session goes, the
                // connection closed. The user may be reconnecting here
                // right now: then they are left as they are.
                let disconnected = app2
                    .disconnect_unless_back(
                        user,
                        crate::webhooks::DisconnectReason::ConnectionClosed,
                    )
                    .await;
                let _ = done.send(disconnected);
            });
        }
    }
}

/// Runs `task` on the tracker until it ends or the node shuts down.
fn spawn(app: &Arc<App>, task: impl std::future::Future<Output = ()> + Send + 'static) {
    let shutdown = app.shutdown.clone();
    app.tracker.spawn(async move {
        tokio::select! {
            _ = task => {}
            _ = shutdown.cancelled() => {}
        }
    });
}
