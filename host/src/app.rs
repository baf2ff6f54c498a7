//! The composition root: one [`App`] per node holds every long-lived part
//! and is shared by the HTTP handlers and session tasks.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::Cluster;
use crate::config::Config;
use crate::delivery::Delivery;
use crate::delivery::relay::Relay;
use crate::dispatch::RoomLocks;
use crate::ids::IdGen;
use crate::plugin::PluginHost;
use crate::registry::Registry;
use crate::replay::ReplayWindow;
use crate::store::{StateChange, Store};

/// Everything a node shares between its tasks.
pub struct App {
    /// The configuration the node started with.
    pub config: Config,
    /// This node's name (presence, `GET /api/v1/users/{id}`).
    pub node_id: String,
    /// Rooms, seats, calls, presence, plugin KV.
    pub store: Arc<dyn Store>,
    /// The loaded plugins.
    pub plugins: Arc<PluginHost>,
    /// Sessions connected to this node.
    pub registry: Arc<Registry>,
    /// The other nodes (`store.url = "redis://…"`); `None` for one node.
    pub cluster: Option<Arc<Cluster>>,
    /// Notification routing (broadcast and relay).
    pub delivery: Delivery,
    /// Per-room ordering of actions.
    pub room_locks: RoomLocks,
    /// Server API nonces seen within the skew window.
    pub api_nonces: Mutex<ReplayWindow>,
    /// WebSocket-opening query signatures seen within the skew window.
    pub connect_signs: Mutex<ReplayWindow>,
    /// Revoked sids (kick with `revoke`), until they expire.
    pub revoked: Mutex<ReplayWindow>,
    /// msg_id and connection id source.
    pub ids: IdGen,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Signals shutdown to every task.
    pub shutdown: CancellationToken,
    /// Every session and timer task, so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// When the node started.
    pub started: Instant,
}

impl App {
    /// Wires a node from its parts.
    pub fn new(
        config: Config,
        store: Arc<dyn Store>,
        plugins: Arc<PluginHost>,
        metrics: PrometheusHandle,
        cluster: Option<Arc<Cluster>>,
    ) -> Arc<Self> {
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let registry = Arc::new(Registry::default());
        let relay = Relay::new(
            config.relay.clone(),
            Arc::clone(&store),
            Arc::clone(&registry),
            cluster.clone(),
            tracker.clone(),
            shutdown.clone(),
        );
        let delivery = Delivery::new(
            config.delivery.clone(),
            Arc::clone(&store),
            Arc::clone(&registry),
            relay,
            cluster.clone(),
        );
        let node_id = config
            .server
            .node_id
            .clone()
            .unwrap_or_else(|| config.server.listen.to_string());
        Arc::new(Self {
            config,
            node_id,
            store,
            plugins,
            registry,
            cluster,
            delivery,
            room_locks: RoomLocks::default(),
            api_nonces: Mutex::default(),
            connect_signs: Mutex::default(),
            revoked: Mutex::default(),
            ids: IdGen::default(),
            metrics,
            shutdown,
            tracker,
            started: Instant::now(),
        })
    }

    /// The skew window in whole seconds.
    pub fn max_skew(&self) -> u64 {
        self.config.signing.max_skew.as_secs()
    }

    /// A user's disconnection (PROTOCOL section 5), after any grace: relays
    /// they were delegate of move on, plugins subscribed to `disconnected`
    /// take them out of their room and call, and whatever a failed plugin
    /// left behind is cleared so no seat stays held by a ghost.
    pub async fn disconnect(&self, user_id: u64) {
        metrics::counter!("chorus_disconnects_total").increment(1);
        self.delivery.relay.on_disconnect(user_id).await;
        if let Some(cluster) = &self.cluster {
            cluster.announce_gone(user_id);
        }
        self.raise("disconnected", user_id).await;
        self.clear_leftovers(user_id).await;
    }

    async fn clear_leftovers(&self, user_id: u64) {
        let mut changes = Vec::new();
        if let Ok(Some(m)) = self.store.membership_of(user_id).await {
            tracing::warn!(
                user_id,
                channel_name = m.channel_name,
                "no plugin removed a disconnected user; removing silently"
            );
            changes.push(StateChange::LeaveRoom {
                user_id,
                channel_name: m.channel_name,
            });
        }
        if let Ok(Some(_)) = self.store.call_of(user_id).await {
            changes.push(StateChange::EndCall { user_id });
        }
        if !changes.is_empty()
            && let Err(e) = self.store.apply(&changes).await
        {
            tracing::warn!(user_id, error = %e, "could not clear a disconnected user's state");
        }
    }

    /// Whether the user is connected anywhere.
    pub async fn is_online(&self, user_id: u64) -> bool {
        if self.registry.get(user_id).is_some() {
            return true;
        }
        matches!(self.store.node_of(user_id).await, Ok(Some(_)))
    }
}
