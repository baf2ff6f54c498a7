//! Starting and stopping a node: listeners, plugins, the store, and the
//! one shutdown tree every task hangs off.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::app::{App, Parts};
use crate::cluster::{Cluster, ClusterError, ClusterInbox, NodeInfo};
use crate::config::Config;
use crate::connections::Connections;
use crate::ids::IdGen;
use crate::plugin::{PluginError, PluginHost, Settings};
use crate::revocations::Revoked;
use crate::store::memory::MemoryStore;
use crate::store::redis::{RedisLink, RedisStore};
use crate::store::{Store, StoreError};

/// A node failed to start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// `store.url` names nothing this build supports.
    #[error("unsupported store.url {0:?} (use memory:// or redis://…)")]
    UnsupportedStore(String),
    /// The Redis of `store.url` could not be reached.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The cluster could not start, or its settings cannot work.
    #[error("cluster: {0}")]
    Cluster(#[from] ClusterError),
    /// The plugin runtime could not start.
    #[error("plugin runtime: {0}")]
    Plugins(#[from] PluginError),
    /// The data folder or the revoked sids in it could not be used.
    #[error("data folder: {0}")]
    Data(#[from] crate::revocations::RevocationError),
    /// The webhook outbox could not be opened.
    #[error("webhooks: {0}")]
    Webhooks(#[from] crate::webhooks::OutboxError),
}

/// A running node.
pub struct Node {
    /// Shared state, for tests and the binary.
    pub app: Arc<App>,
    /// Where the WebSocket, `/iapi` and `/api/v1` listen.
    pub addr: SocketAddr,
    /// Where the admin API listens.
    pub admin_addr: SocketAddr,
    /// The two HTTP servers.
    servers: Vec<JoinHandle<()>>,
}

impl Node {
    /// Binds both listeners, loads the plugins and starts serving. A
    /// listen port of 0 picks a free port (the node's `addr` tells which);
    /// `public_url` then follows the bound address unless configured.
    pub async fn start(mut config: Config) -> Result<Node, StartError> {
        let public = bind(config.server.listen).await?;
        let admin = bind(config.admin.listen).await?;
        let addr = public.local_addr().map_err(|source| StartError::Bind {
            addr: config.server.listen,
            source,
        })?;
        let admin_addr = admin.local_addr().map_err(|source| StartError::Bind {
            addr: config.admin.listen,
            source,
        })?;
        config.server.listen = addr;
        config.admin.listen = admin_addr;
        // The cluster, the lease and presence all name the node by this.
        config
            .server
            .node_id
            .get_or_insert_with(|| addr.to_string());
        let connections = Arc::new(Connections::default());
        let ids = Arc::new(IdGen::default());
        let (store, cluster, link) = open_store(&config, &connections, &ids).await?;
        // With webhooks on, every part of the node applies batches through
        // the recording store, so each change's events are recorded before
        // its answer (the cluster keeps the plain store: it only reads and
        // hands disconnects to the app).
        let webhooks = crate::webhooks::Webhooks::open(&config, link).await?;
        let store: Arc<dyn Store> = match &webhooks {
            Some(hooks) => Arc::new(crate::webhooks::RecordingStore::new(
                store,
                Arc::clone(hooks),
            )),
            None => store,
        };
        let plugins = PluginHost::new(plugin_settings(&config), Arc::clone(&store))?;
        let cluster_handle = cluster.as_ref().map(|(c, _)| Arc::clone(c));
        let revoked = load_revoked(&config, cluster_handle.is_some())?;
        let app = App::new(Parts {
            config,
            store,
            plugins: Arc::clone(&plugins),
            connections,
            ids,
            cluster,
            metrics: crate::telemetry::metrics_handle(),
            revoked,
            webhooks,
        });
        for outcome in plugins.load_all().await {
            tracing::info!(?outcome, "plugin load");
        }
        // A `[plugins.<name>]` naming no plugin is most likely a typo
        // (`[plugins.gfit]`), which would leave the real one unwatched.
        let loaded: Vec<String> = plugins.statuses().into_iter().map(|s| s.name).collect();
        for name in app.config.plugins.objectives.keys() {
            if !loaded.contains(name) {
                tracing::warn!(
                    plugin = name,
                    "[plugins.{name}] names no loaded plugin: its objectives watch nothing (a typo?)"
                );
            }
        }
        plugins.watch(app.shutdown.clone(), &app.tracker);
        if let Some(cluster) = &cluster_handle
            && let Err(e) = cluster.start(&app.shutdown, &app.tracker).await
        {
            app.shutdown.cancel();
            return Err(e.into());
        }
        let servers = vec![
            serve(public, crate::http::public_router(Arc::clone(&app)), &app),
            serve(admin, crate::http::admin_router(Arc::clone(&app)), &app),
        ];
        tracing::info!(%addr, %admin_addr, node = app.node_id, "chorus listening");
        Ok(Node {
            app,
            addr,
            admin_addr,
            servers,
        })
    }

    /// Stops accepting, closes every session with 1001, waits for every
    /// task (at most `deadline`), and returns. A single node with webhooks
    /// first takes its connected users through the disconnect flow (at
    /// most half of `deadline`; [`App::leave_everyone_at_shutdown`]).
    pub async fn shutdown(self, deadline: Duration) {
        self.app.leave_everyone_at_shutdown(deadline / 2).await;
        self.stop(deadline).await;
    }

    /// [`Node::shutdown`] without telling anyone: tasks cancelled, sockets
    /// closed.
    async fn stop(self, deadline: Duration) {
        self.app.shutdown.cancel();
        self.app.tracker.close();
        let wait = async {
            self.app.tracker.wait().await;
            for server in self.servers {
                let _ = server.await;
            }
        };
        if tokio::time::timeout(deadline, wait).await.is_err() {
            tracing::warn!("shutdown deadline passed with tasks still running");
        }
    }

    /// For tests: stops the node as a SIGKILL would, as far as the rest of
    /// a cluster can tell. Its Redis traffic stops at once (no lease
    /// renewal, no presence cleared, no goodbye), then its tasks and
    /// sockets are dropped (without the leaving that [`Node::shutdown`]
    /// records on a single node).
    #[doc(hidden)]
    pub async fn kill_for_tests(self) {
        if let Some(cluster) = &self.app.cluster {
            cluster.sever();
        }
        self.stop(Duration::from_secs(5)).await;
    }
}

/// Creates the data folder and, on a single node, reads the revoked sids
/// a previous run left there (with several nodes they live in Redis).
fn load_revoked(config: &Config, clustered: bool) -> Result<Revoked, StartError> {
    let dir = config.data_dir();
    crate::revocations::create_data_dir(&dir)?;
    if clustered {
        return Ok(Revoked::default());
    }
    Ok(Revoked::load(&dir, crate::ids::unix_now())?)
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

/// The store and, for Redis, the cluster over it with its inbox and the
/// Redis link (the webhooks' stream).
type Opened = (
    Arc<dyn Store>,
    Option<(Arc<Cluster>, ClusterInbox)>,
    Option<RedisLink>,
);

/// The store `store.url` names, and for Redis the cluster over it.
async fn open_store(
    config: &Config,
    connections: &Arc<Connections>,
    ids: &IdGen,
) -> Result<Opened, StartError> {
    let settings = &config.store;
    let attr_limits = crate::store::AttrLimits::from_config(&config.rooms.attributes);
    let history_limits = crate::store::HistoryLimits::from_config(&config.recovery);
    match settings.url.as_str() {
        "memory://" | "memory" => {
            let store = MemoryStore::new(config.rooms.seats)
                .with_attr_limits(attr_limits)
                .with_history_limits(history_limits);
            Ok((Arc::new(store), None, None))
        }
        url if url.starts_with("redis://") => {
            let mut store = RedisStore::connect(url, &settings.prefix, config.rooms.seats)
                .await?
                .with_attr_limits(attr_limits)
                .with_history_limits(history_limits);
            // With webhooks, a batch's events go to the stream in the
            // batch's own script (issue 16).
            if let Some(retention) = config.webhooks.iter().map(|w| w.max_age).max() {
                store = store.with_event_stream(
                    &config.node_id(),
                    retention,
                    config.events.vacated_delay,
                );
            }
            let link = store.link();
            let webhook_link = link.clone();
            let store: Arc<dyn Store> = Arc::new(store);
            let me = NodeInfo {
                node_id: config.node_id(),
                public_url: config.public_url(),
                origin: ids.origin(),
            };
            let cluster = Cluster::new(
                me,
                link,
                Arc::clone(&store),
                Arc::clone(connections),
                settings.lease_ttl,
                settings.lease_interval,
            )?;
            Ok((store, Some(cluster), Some(webhook_link)))
        }
        other => Err(StartError::UnsupportedStore(other.to_string())),
    }
}

/// The runtime's settings, with the artifact cache in its configured or
/// default folder.
fn plugin_settings(config: &Config) -> Settings {
    Settings {
        cache_dir: Some(config.plugin_cache_dir()),
        ..Settings::from(&config.plugins)
    }
}

/// Serves a router until shutdown. Each connection gets
/// `heartbeat.handshake_timeout` to send its request head (a half-open
/// handshake is dropped, not kept forever) and runs on the app's tracker;
/// upgraded WebSockets are tracked by their session tasks, since a plain
/// `axum::serve` would neither time out heads nor wait for upgrades.
fn serve(listener: TcpListener, router: axum::Router, app: &Arc<App>) -> JoinHandle<()> {
    let shutdown = app.shutdown.clone();
    let tracker = app.tracker.clone();
    let head_timeout = app.config.heartbeat.handshake_timeout;
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = shutdown.cancelled() => return,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    tracker.spawn(serve_connection(
                        stream,
                        peer,
                        router.clone(),
                        head_timeout,
                        shutdown.clone(),
                    ));
                }
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    })
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    router: axum::Router,
    head_timeout: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt;
    let service =
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let mut request = request.map(axum::body::Body::new);
            // What axum's `ConnectInfo` extractor reads (the connection caps).
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            router.clone().oneshot(request)
        });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(head_timeout);
    let conn = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
        }
    }
}
