//! The composition root: one [`App`] per node holds every long-lived part
//! and is shared by the tasks at the top of the layering (sessions, HTTP
//! handlers). Lower layers get only the parts they use, never the `App`.
//!
//! - [`users`]: what happens to a user as a whole: disconnect (PROTOCOL
//!   section 5), kick, revoke, replace; the operations HTTP handlers and
//!   the cluster's events call.
//! - [`inbox`]: the task that applies the cluster's events.
//! - [`calls`]: the ring timeout of calls clients start.
//! - [`timers`]: the task that fires plugin timers.

pub mod calls;
pub mod inbox;
pub mod timers;
pub mod users;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::Admission;
use crate::cluster::{Cluster, ClusterInbox};
use crate::config::Config;
use crate::connections::Connections;
use crate::delivery::Delivery;
use crate::delivery::relay::Relay;
use crate::dispatch::Dispatcher;
use crate::ids::IdGen;
use crate::plugin::PluginHost;
use crate::replay::ReplayWindow;
use crate::revocations::Revoked;
use crate::store::{Store, StoreError};
use crate::webhooks::Webhooks;

/// Everything a node shares between its tasks.
pub struct App {
    /// The configuration the node started with.
    pub config: Config,
    /// This node's name (presence, `GET /api/v1/users/{id}`).
    pub node_id: String,
    /// Rooms, seats, calls, presence, plugin KV.
    pub store: Arc<dyn Store>,
    /// The loaded plugins (admin routes).
    pub plugins: Arc<PluginHost>,
    /// Sessions connected to this node.
    pub connections: Arc<Connections>,
    /// The other nodes (`store.url = "redis://…"`); `None` for one node.
    pub cluster: Option<Arc<Cluster>>,
    /// Notification routing (broadcast and relay).
    pub delivery: Arc<Delivery>,
    /// Runs actions and system events.
    pub dispatch: Dispatcher,
    /// Server API nonces seen within the skew window.
    pub api_nonces: Mutex<ReplayWindow>,
    /// WebSocket-opening query signatures seen within the skew window.
    pub connect_signs: Mutex<ReplayWindow>,
    /// Revoked sids (kick with `revoke`), until they expire; on a single
    /// node also on disk under `server.data_dir`, with several in Redis.
    pub revoked: Mutex<Revoked>,
    /// Serializes writes of the revocation file, so a later snapshot is
    /// never overwritten by an earlier one.
    pub revoked_file: Mutex<()>,
    /// The connection caps (`limits.max_connections`, `_per_ip`).
    pub admission: Arc<Admission>,
    /// msg_id and connection id source.
    pub ids: Arc<IdGen>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Signals shutdown to every task.
    pub shutdown: CancellationToken,
    /// Every session and timer task, so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// When the node started.
    pub started: Instant,
    /// Ring timeouts of the calls this node's clients started
    /// (`calls::run` raises them).
    pub ringing: calls::Ringing,
    /// Events to the app backend (`[[webhooks]]`); `None` when no
    /// endpoint is configured.
    pub webhooks: Option<Arc<Webhooks>>,
    /// user -> the number of the user's latest grace timer on this node
    /// ([`App::disconnect_after_grace`]): only that one may disconnect.
    pub grace_timers: Mutex<std::collections::HashMap<u64, u64>>,
}

/// The parts a node is wired from (see [`App::new`]).
pub struct Parts {
    /// The configuration, with `server.node_id` settled.
    pub config: Config,
    /// The state store.
    pub store: Arc<dyn Store>,
    /// The plugin runtime.
    pub plugins: Arc<PluginHost>,
    /// The sessions of this node (shared with the cluster).
    pub connections: Arc<Connections>,
    /// The id source (its origin is in the cluster's lease).
    pub ids: Arc<IdGen>,
    /// The cluster and its inbox, with several nodes.
    pub cluster: Option<(Arc<Cluster>, ClusterInbox)>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Revoked sids loaded at start (from disk on a single node).
    pub revoked: Revoked,
    /// The webhooks, when `[[webhooks]]` names any endpoint (the store
    /// is then already their [`crate::webhooks::RecordingStore`]).
    pub webhooks: Option<Arc<Webhooks>>,
}

/// At shutdown, tells every session task (a flag it reads on each wake-up,
/// instead of each task polling the shared token). A session registered
/// later sees the token cancelled itself ([`crate::session::Registration::open`]).
async fn shut_sessions(shutdown: CancellationToken, connections: Arc<Connections>) {
    shutdown.cancelled().await;
    for session in connections.all() {
        session.shut_down();
    }
}

impl App {
    /// Wires a node from its parts and starts the tasks that apply the
    /// cluster's events and fire plugin timers.
    pub fn new(parts: Parts) -> Arc<Self> {
        let Parts {
            config,
            store,
            plugins,
            connections,
            ids,
            cluster,
            metrics,
            revoked,
            webhooks,
        } = parts;
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let (cluster, inbox) = match cluster {
            Some((cluster, inbox)) => (Some(cluster), Some(inbox)),
            None => (None, None),
        };
        let relay = Relay::new(
            config.relay.clone(),
            Arc::clone(&store),
            Arc::clone(&connections),
            cluster.clone(),
            tracker.clone(),
            shutdown.clone(),
        );
        let delivery = Arc::new(Delivery::new(
            config.delivery.clone(),
            Arc::clone(&store),
            Arc::clone(&connections),
            relay,
            cluster.clone(),
        ));
        let dispatch = Dispatcher::new(
            Arc::clone(&plugins),
            Arc::clone(&store),
            Arc::clone(&delivery),
            Arc::clone(&ids),
            config.actions.clone(),
            config.limits.bounds(),
            config.plugins.stale_retries,
        )
        .with_snapshot_members(config.recovery.snapshot_members)
        .with_webhooks(webhooks.clone());
        let admission = Admission::new(
            config.limits.max_connections,
            config.limits.max_connections_per_ip,
        );
        let app = Arc::new(Self {
            node_id: config.node_id(),
            config,
            store,
            plugins,
            connections,
            cluster,
            delivery,
            dispatch,
            api_nonces: Mutex::default(),
            connect_signs: Mutex::default(),
            revoked: Mutex::new(revoked),
            revoked_file: Mutex::new(()),
            admission,
            ids,
            metrics,
            shutdown,
            tracker,
            started: Instant::now(),
            ringing: calls::Ringing::default(),
            webhooks,
            grace_timers: Mutex::default(),
        });
        if let Some(hooks) = &app.webhooks {
            hooks.start(&app.shutdown, &app.tracker);
        }
        if let Some(inbox) = inbox {
            app.tracker.spawn(inbox::run(Arc::clone(&app), inbox));
        }
        app.tracker.spawn(timers::run(Arc::clone(&app)));
        app.tracker.spawn(calls::run(Arc::clone(&app)));
        app.tracker.spawn(shut_sessions(
            app.shutdown.clone(),
            Arc::clone(&app.connections),
        ));
        app
    }

    /// The skew window in whole seconds.
    pub fn max_skew(&self) -> u64 {
        self.config.signing.max_skew.as_secs()
    }

    /// Whether a single-use request is new (PROTOCOL sections 2 and 8):
    /// `key` (a query's `sign`, a server-API nonce) signed at `timestamp`
    /// is remembered until [`crate::replay::remember_until`], on this node
    /// and, with several nodes, in Redis, so it is single-use across the
    /// cluster. Fails only when Redis cannot answer.
    pub async fn first_use(
        &self,
        kind: SingleUse,
        key: &str,
        timestamp: i64,
    ) -> Result<bool, StoreError> {
        let now = crate::ids::unix_now();
        let until = crate::replay::remember_until(timestamp, now, self.max_skew());
        let window = match kind {
            SingleUse::ApiNonce => &self.api_nonces,
            SingleUse::ConnectQuery => &self.connect_signs,
        };
        let fresh_here = {
            let mut seen = window.lock().unwrap_or_else(|p| p.into_inner());
            seen.insert_until(key, now, until).is_ok()
        };
        match &self.cluster {
            Some(cluster) if fresh_here => cluster.first_use(kind.space(), key, now, until).await,
            _ => Ok(fresh_here),
        }
    }
}

/// The kinds of single-use request, each with its own window (and Redis
/// key space).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SingleUse {
    /// A server-API `X-Chorus-Nonce` (PROTOCOL section 8).
    ApiNonce,
    /// The signed query that opens a WebSocket, by its `sign` (section 2).
    ConnectQuery,
}

impl SingleUse {
    /// The Redis key space (under `store.prefix`).
    fn space(self) -> &'static str {
        match self {
            SingleUse::ApiNonce => "api_nonce",
            SingleUse::ConnectQuery => "connect",
        }
    }
}
