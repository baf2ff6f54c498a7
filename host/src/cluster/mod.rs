//! Several nodes as one service, over the Redis the store lives in.
//!
//! - **Bus** ([`bus`]): one pub/sub channel per node (`<prefix>bus:<node>`)
//!   plus one for all (`<prefix>bus`). A notification for users on other
//!   nodes is published once per node, carrying the frame once and the list
//!   of that node's recipients, so traffic grows with nodes, not members.
//!   Replacements (4009), relay frames, relay reports and disconnects of
//!   relay delegates travel the same way.
//! - **Lease** ([`lease`]): every node renews `<prefix>node:<node>` (TTL
//!   `store.lease_ttl`, every `store.lease_interval`) with its `public_url`
//!   and connection count. A node whose lease expired is dead: one survivor
//!   claims it (`SET NX`) and disconnects each of its users exactly once.
//!
//! Pub/sub is at most once: a message published while a node's subscriber
//! is reconnecting is lost. State is not: it lives in Redis and every change
//! is acknowledged only after Redis applied it.

pub mod bus;
pub mod lease;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::extract::ws::Utf8Bytes;
use tokio::sync::mpsc;

use crate::app::App;
use crate::registry::{Registry, SendOutcome, SessionHandle};
use crate::store::redis::RedisLink;
use crate::store::{Store, StoreError};
use bus::{Envelope, Outgoing};

/// Messages waiting to be published. Overflow drops the message (counted
/// in `chorus_cluster_publish_dropped_total`): a node that cannot publish
/// this fast has lost Redis anyway, and delivery must never block an action.
const OUTBOX: usize = 8192;

/// The cluster could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Redis refused or could not be reached.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The lease settings cannot work.
    #[error("store.lease_interval ({interval:?}) must be shorter than store.lease_ttl ({ttl:?})")]
    Lease {
        /// `store.lease_ttl`.
        ttl: Duration,
        /// `store.lease_interval`.
        interval: Duration,
    },
}

/// A live node as its lease describes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Peer {
    /// The node's name (presence values, channel names).
    pub node_id: String,
    /// What `end_point` returns for it.
    pub public_url: String,
    /// Its live WebSocket connections at the last renewal.
    pub connections: u64,
    /// The prefix of the `msg_id`s it mints, so a relay report reaches the
    /// node whose relay it is.
    pub origin: String,
    /// Shutting down: send no new users there.
    pub draining: bool,
}

/// This node's part in a cluster.
pub struct Cluster {
    /// This node's name, as presence records it.
    node_id: String,
    /// Connection and key prefix shared with the store.
    link: RedisLink,
    /// How long a lease lives without renewal.
    lease_ttl: Duration,
    /// How often it is renewed (and dead nodes looked for).
    lease_interval: Duration,
    /// Bounded queue to the publisher task; see [`OUTBOX`].
    outbox: mpsc::Sender<Outgoing>,
    /// The receiving end, taken once by [`Cluster::start`].
    outbox_rx: Mutex<Option<mpsc::Receiver<Outgoing>>>,
    /// Live nodes as of the last renewal, this one included; swapped whole.
    peers: ArcSwap<Vec<Peer>>,
    /// The last lease renewal succeeded.
    lease_ok: AtomicBool,
    /// The subscriber is connected and subscribed.
    subscribed: AtomicBool,
    /// The lease was written at least once (the first write is no repair).
    ever_renewed: AtomicBool,
    /// Since when the lease has been renewed without a failure. Other
    /// nodes are judged dead only after a full `lease_ttl` of that: after
    /// a Redis outage every lease has expired, and the living need one
    /// interval to renew theirs.
    healthy_since: Mutex<Option<tokio::time::Instant>>,
    /// Dead nodes this node is cleaning up right now.
    cleaning: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.node_id)
            .field("ready", &self.is_ready())
            .finish()
    }
}

/// Where one recipient's connection is.
#[derive(Debug, Clone)]
pub enum Recipient {
    /// On this node.
    Local(Arc<SessionHandle>),
    /// On another node, reached through the bus.
    Remote {
        /// The cluster to publish through.
        cluster: Arc<Cluster>,
        /// The node holding the connection.
        node: String,
        /// The user.
        user_id: u64,
    },
}

impl Recipient {
    /// Queues a relay frame for this recipient without waiting. A remote
    /// recipient counts as queued once the message is on the outbox; if it
    /// never arrives, the relay's report timeout moves on.
    pub fn send(&self, frame: Utf8Bytes) -> SendOutcome {
        match self {
            Recipient::Local(session) => session.send(frame),
            Recipient::Remote {
                cluster,
                node,
                user_id,
            } => {
                let envelope = Envelope::Deliver {
                    action: "relay".into(),
                    mode: "relay".into(),
                    users: vec![*user_id],
                };
                if cluster.publish_to(node, &envelope, Some(&frame)) {
                    SendOutcome::Queued
                } else {
                    SendOutcome::Overflow
                }
            }
        }
    }
}

impl Cluster {
    /// A cluster member named `node_id` over `link`; nothing runs until
    /// [`Cluster::start`].
    pub fn new(
        node_id: String,
        link: RedisLink,
        lease_ttl: Duration,
        lease_interval: Duration,
    ) -> Result<Arc<Self>, ClusterError> {
        if lease_interval.is_zero() || lease_interval >= lease_ttl {
            return Err(ClusterError::Lease {
                ttl: lease_ttl,
                interval: lease_interval,
            });
        }
        let (outbox, rx) = mpsc::channel(OUTBOX);
        Ok(Arc::new(Self {
            node_id,
            link,
            lease_ttl,
            lease_interval,
            outbox,
            outbox_rx: Mutex::new(Some(rx)),
            peers: ArcSwap::from_pointee(Vec::new()),
            lease_ok: AtomicBool::new(false),
            subscribed: AtomicBool::new(false),
            ever_renewed: AtomicBool::new(false),
            healthy_since: Mutex::new(None),
            cleaning: Mutex::new(HashSet::new()),
        }))
    }

    /// Joins the cluster before the node serves: disconnects users a
    /// previous run of this node left behind, subscribes, takes the lease,
    /// then runs the publisher, subscriber and lease tasks on the app's
    /// tracker until shutdown.
    pub async fn start(self: &Arc<Self>, app: &Arc<App>) -> Result<(), ClusterError> {
        lease::cleanup_users(app, self, &self.node_id).await?;
        let pubsub = bus::subscribe(self).await?;
        lease::renew(app, self).await?;
        lease::scan(app, self).await?;
        let rx = self
            .outbox_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(rx) = rx {
            app.tracker
                .spawn(bus::publisher(Arc::clone(self), rx, app.shutdown.clone()));
        }
        app.tracker.spawn(bus::subscriber(
            Arc::clone(app),
            Arc::clone(self),
            Some(pubsub),
        ));
        app.tracker
            .spawn(lease::run(Arc::clone(app), Arc::clone(self)));
        Ok(())
    }

    /// This node's name.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Whether this node can serve state changes: its lease is renewed and
    /// its bus subscribed.
    pub fn is_ready(&self) -> bool {
        !self.link.is_severed()
            && self.lease_ok.load(Ordering::Relaxed)
            && self.subscribed.load(Ordering::Relaxed)
    }

    /// The live nodes as of the last renewal.
    pub fn peers(&self) -> Arc<Vec<Peer>> {
        self.peers.load_full()
    }

    /// The `public_url` of the live node with the fewest connections (ties
    /// by name), or `None` before the first renewal.
    pub fn least_loaded(&self) -> Option<String> {
        self.peers()
            .iter()
            .filter(|p| !p.draining)
            .min_by(|a, b| (a.connections, &a.node_id).cmp(&(b.connections, &b.node_id)))
            .map(|p| p.public_url.clone())
    }

    /// Stops all Redis traffic of this node at once, as a SIGKILL would:
    /// no lease renewal, no publish, no presence change. For tests.
    pub fn sever(&self) {
        self.link.sever();
        self.lease_ok.store(false, Ordering::Relaxed);
    }

    /// Queues `envelope` (and `frame`) for node `node`; false when the
    /// outbox is full or the link severed.
    pub fn publish_to(&self, node: &str, envelope: &Envelope, frame: Option<&Utf8Bytes>) -> bool {
        let channel = self.link.key(&format!("bus:{node}"));
        self.enqueue(channel, envelope, frame)
    }

    /// Queues `envelope` (and `frame`) for every node.
    pub fn publish_all(&self, envelope: &Envelope, frame: Option<&Utf8Bytes>) -> bool {
        let channel = self.link.key("bus");
        self.enqueue(channel, envelope, frame)
    }

    fn enqueue(&self, channel: String, envelope: &Envelope, frame: Option<&Utf8Bytes>) -> bool {
        if self.link.is_severed() {
            return false;
        }
        let outgoing = Outgoing {
            channel,
            payload: bus::encode(envelope, frame),
        };
        match self.outbox.try_send(outgoing) {
            Ok(()) => true,
            Err(_) => {
                metrics::counter!("chorus_cluster_publish_dropped_total").increment(1);
                false
            }
        }
    }

    /// Sends `frame` to those of `users` connected to other nodes: one
    /// message per node. `local` are the sessions already served here.
    pub async fn forward(
        &self,
        store: &dyn Store,
        action: &str,
        mode: &str,
        users: &[u64],
        local: &[Arc<SessionHandle>],
        frame: &Utf8Bytes,
    ) -> Result<(), StoreError> {
        let here: HashSet<u64> = local.iter().map(|s| s.user_id).collect();
        let remote: Vec<u64> = users
            .iter()
            .copied()
            .filter(|u| !here.contains(u))
            .collect();
        if remote.is_empty() {
            return Ok(());
        }
        let nodes = store.nodes_of(&remote).await?;
        let mut by_node: HashMap<String, Vec<u64>> = HashMap::new();
        for (user, node) in remote.into_iter().zip(nodes) {
            match node {
                Some(node) if node != self.node_id => by_node.entry(node).or_default().push(user),
                _ => {}
            }
        }
        for (node, users) in by_node {
            let envelope = Envelope::Deliver {
                action: action.to_string(),
                mode: mode.to_string(),
                users,
            };
            self.publish_to(&node, &envelope, Some(frame));
        }
        Ok(())
    }

    /// Sends `frame` to every session of every other node.
    pub fn forward_everyone(&self, action: &str, frame: &Utf8Bytes) {
        let envelope = Envelope::Everyone {
            from: self.node_id.clone(),
            action: action.to_string(),
        };
        self.publish_all(&envelope, Some(frame));
    }

    /// Tells `node` that `user_id` connected here, so its older connection
    /// gets `kicked` and 4009.
    pub fn replace_on(&self, node: &str, user_id: u64) {
        if node != self.node_id {
            self.publish_to(node, &Envelope::Replace { user: user_id }, None);
        }
    }

    /// Whether a server-API nonce is new across the cluster; remembers it
    /// for `ttl`.
    pub async fn first_use_nonce(&self, nonce: &str, ttl: Duration) -> Result<bool, StoreError> {
        let key = self.link.key(&format!("api_nonce:{nonce}"));
        let set: Option<String> = self
            .link
            .query(
                redis::cmd("SET")
                    .arg(key)
                    .arg(&self.node_id)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl.as_millis() as u64),
            )
            .await?;
        Ok(set.is_some())
    }

    /// Kicks `user_id` on the node holding their connection (4010, with
    /// `reason`; `revoke` refuses their sid everywhere); whether the user
    /// was connected to another node.
    pub async fn kick(
        &self,
        store: &dyn Store,
        user_id: u64,
        reason: &str,
        revoke: bool,
    ) -> Result<bool, StoreError> {
        let Some(node) = store.node_of(user_id).await? else {
            return Ok(false);
        };
        if node == self.node_id {
            return Ok(false);
        }
        let envelope = Envelope::Kick {
            user: user_id,
            reason: reason.to_string(),
            revoke,
        };
        Ok(self.publish_to(&node, &envelope, None))
    }

    /// Tells every node to refuse `sid` until it expires.
    pub fn announce_revoked(&self, sid: &str) {
        let envelope = Envelope::Revoke {
            from: self.node_id.clone(),
            sid: sid.to_string(),
        };
        self.publish_all(&envelope, None);
    }

    /// Tells every node that `user_id` disconnected, so relays waiting for
    /// them as delegate move on at once.
    pub fn announce_gone(&self, user_id: u64) {
        let envelope = Envelope::Gone {
            from: self.node_id.clone(),
            user: user_id,
        };
        self.publish_all(&envelope, None);
    }

    /// Sends a relay report that matched no relay of this node to the node
    /// that minted its `msg_id` (to every node when that is unknown or the
    /// report has none). False when the relay is this node's own.
    pub fn forward_report(
        &self,
        reporter: u64,
        report: &str,
        user_id: u64,
        msg_id: Option<&str>,
    ) -> bool {
        let envelope = Envelope::Report {
            from: self.node_id.clone(),
            reporter,
            report: report.to_string(),
            user: user_id,
            msg_id: msg_id.map(str::to_string),
        };
        let owner = msg_id.and_then(|id| self.owner_of(id));
        match owner {
            Some(node) if node == self.node_id => false,
            Some(node) => self.publish_to(&node, &envelope, None),
            None => self.publish_all(&envelope, None),
        }
    }

    /// The node that minted `msg_id`, from the origins in the leases.
    fn owner_of(&self, msg_id: &str) -> Option<String> {
        let origin = msg_id.split('-').next()?;
        self.peers()
            .iter()
            .find(|p| p.origin == origin)
            .map(|p| p.node_id.clone())
    }
}

/// Finds each user's connection, here or on another node, keeping the
/// order of `users` and skipping users connected nowhere.
pub async fn locate(
    registry: &Registry,
    cluster: Option<&Arc<Cluster>>,
    store: &dyn Store,
    users: &[u64],
) -> Result<Vec<(u64, Recipient)>, StoreError> {
    let local = registry.get_many(users);
    let mut found: HashMap<u64, Recipient> = local
        .into_iter()
        .map(|s| (s.user_id, Recipient::Local(s)))
        .collect();
    if let Some(cluster) = cluster {
        let remote: Vec<u64> = users
            .iter()
            .copied()
            .filter(|u| !found.contains_key(u))
            .collect();
        if !remote.is_empty() {
            let nodes = store.nodes_of(&remote).await?;
            for (user_id, node) in remote.into_iter().zip(nodes) {
                if let Some(node) = node.filter(|n| *n != cluster.node_id) {
                    let recipient = Recipient::Remote {
                        cluster: Arc::clone(cluster),
                        node,
                        user_id,
                    };
                    found.insert(user_id, recipient);
                }
            }
        }
    }
    Ok(users
        .iter()
        .filter_map(|u| found.remove(u).map(|r| (*u, r)))
        .collect())
}
