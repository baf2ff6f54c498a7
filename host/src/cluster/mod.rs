//! Several nodes as one service, over the Redis the store lives in.
//!
//! - **Bus** ([`bus`]): one pub/sub channel per node (`<prefix>bus:<node>`)
//!   plus one for all (`<prefix>bus`). A notification for users on other
//!   nodes is published once per node, carrying the frame once and the list
//!   of that node's recipients, so messages grow with nodes, not members;
//!   the publisher task finds those nodes (one `MGET` for whatever queued
//!   up), so a broadcast waits for no Redis round trip of its own.
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
//!
//! Layer: below delivery, dispatch, sessions and HTTP; it never calls up.
//! Frames for local sessions are queued here directly ([`Connections`] is
//! below); everything else that arrives (relay reports, kicks, revokes,
//! replacements, disconnects of a dead node's users) becomes a typed
//! [`ClusterEvent`] on a bounded channel ([`INBOX`]) that the app applies
//! in one task of its own.

pub mod bus;
pub mod lease;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::extract::ws::Utf8Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::connections::{Connections, SendOutcome, SessionHandle};
use crate::store::redis::RedisLink;
use crate::store::{Store, StoreError};
use bus::{Envelope, Outgoing};

/// Messages waiting to be published. Overflow drops the message (counted
/// in `chorus_cluster_publish_dropped_total`): a node that cannot publish
/// this fast has lost Redis anyway, and delivery must never block an action.
const OUTBOX: usize = 8192;

/// Events waiting for the app. The bus reader waits when it is full (the
/// app applies each event in microseconds; a backlog this deep means the
/// node is overloaded, and Redis buffers the subscription meanwhile).
pub const INBOX: usize = 1024;

/// What arrived from other nodes (or from the lease's cleanup) that only
/// layers above the cluster can act on. The app applies them in order in
/// one task (`app::inbox`).
#[derive(Debug)]
pub enum ClusterEvent {
    /// A relay report that arrived on another node, for a relay of this one.
    Report(RelayReport),
    /// A user disconnected from another node: relays waiting for them as
    /// delegate move on.
    Gone {
        /// The user.
        user: u64,
    },
    /// The app backend kicked a user connected here through another node:
    /// close the session with `kicked` and 4010.
    Kick {
        /// The user.
        user: u64,
        /// The reason shown to the client.
        reason: String,
        /// Also refuse the session's sid until it expires.
        revoke: bool,
    },
    /// A sid was revoked on another node: refuse it here too.
    Revoke {
        /// The revoked session token.
        sid: String,
    },
    /// The user connected on another node: close the connection here with
    /// 4009 unless presence says the user is (again) on this node.
    Replace {
        /// The user.
        user: u64,
    },
    /// A user of a dead node (or of this node's previous run) must be
    /// disconnected (PROTOCOL section 5). `done` is answered once the
    /// disconnect ran, so each user is handled exactly once and in turn.
    Disconnect {
        /// The user.
        user: u64,
        /// Answered when the disconnect is complete: true if the user was
        /// disconnected, false if they were found connected again.
        done: oneshot::Sender<bool>,
    },
}

/// A relay report, as the delegate sent it (PROTOCOL section 6).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RelayReport {
    /// The delegate who reported.
    pub reporter: u64,
    /// The report action (`up_deport`, `enter_room_report`, …).
    pub report: String,
    /// The report's `user_id`: the user the notification was about.
    pub user: u64,
    /// The report's `msg_id`, if it had one.
    pub msg_id: Option<String>,
}

/// The receiving end of a cluster's events, taken by the app.
pub type ClusterInbox = mpsc::Receiver<ClusterEvent>;

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
    /// Its `store.lease_ttl` in ms (0 in a lease written before it was
    /// recorded: the reader's own is assumed), so each lease is judged by
    /// its writer's settings.
    #[serde(default)]
    pub lease_ttl_ms: u64,
    /// Its `store.lease_interval` in ms (0: the reader's own).
    #[serde(default)]
    pub lease_interval_ms: u64,
    /// This node's judgement, not part of the lease: the peer's lease is
    /// late, not renewed for a renewal interval plus half of one, and at
    /// least [`lease::LATE_AT_LEAST`] (see [`lease::late`]). Discovery
    /// sends nobody there.
    #[serde(skip)]
    pub lease_stale: bool,
    /// This node's judgement, not part of the lease: nobody is subscribed
    /// to the peer's bus channel. Redis drops the connections of a killed
    /// process at once, so this is the first sign of a SIGKILL (seen
    /// within [`lease::PROBE_INTERVAL`]); discovery sends nobody there.
    /// Its users are cleaned up only once its lease expires.
    #[serde(skip)]
    pub bus_unsubscribed: bool,
}

impl Peer {
    /// Probably dead ([`Peer::lease_stale`] or [`Peer::bus_unsubscribed`]):
    /// no new users go there, but it is not cleaned up before its lease
    /// expires.
    pub fn is_suspect(&self) -> bool {
        self.lease_stale || self.bus_unsubscribed
    }
}

/// How a node appears to the others: what its lease says besides load.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// This node's name, as presence records it.
    pub node_id: String,
    /// What `end_point` returns for it.
    pub public_url: String,
    /// The prefix of the `msg_id`s it mints.
    pub origin: String,
}

/// This node's part in a cluster.
pub struct Cluster {
    /// This node's name, as presence records it.
    node_id: String,
    /// The lease's `public_url`.
    public_url: String,
    /// The lease's `origin` (prefix of this node's `msg_id`s).
    origin: String,
    /// Connection and key prefix shared with the store.
    link: RedisLink,
    /// The sessions of this node: frames from the bus are queued on them,
    /// and the lease repairs their presence.
    connections: Arc<Connections>,
    /// The store, to find on which node a user is.
    store: Arc<dyn Store>,
    /// Events for the app; see [`ClusterEvent`].
    events: mpsc::Sender<ClusterEvent>,
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
    /// What went wrong with Redis and other nodes, as this node saw it.
    faults: FaultRecord,
}

/// What a node saw go wrong with Redis and with other nodes since it
/// started: the record behind `GET /admin/cluster` (README, "Operations"),
/// so that an operator, or a fault test, can tell from the node itself
/// whether acknowledged state may have been lost. Times are Unix
/// milliseconds, durations milliseconds; 0 means never.
#[derive(Debug, Default)]
pub struct FaultRecord {
    /// Outages: a lease renewal failed after the previous one succeeded.
    outages: AtomicU64,
    /// When the outage going on now began (0: none is).
    outage_since_ms: AtomicU64,
    /// How long the last finished outage lasted, from the first failed
    /// renewal to the first successful one.
    last_outage_ms: AtomicU64,
    /// Times this node found itself missing from the node set at a
    /// renewal: Redis lost its data (restarted without persistence,
    /// flushed, failed over to an empty replica) or survivors had given
    /// this node up for dead. Either way state it had acknowledged may be
    /// gone, and it closed every session with 1001 so clients resync.
    state_lost: AtomicU64,
    /// When that last happened.
    last_state_lost_ms: AtomicU64,
    /// Dead nodes this node claimed and cleaned up.
    dead_nodes_cleaned: AtomicU64,
    /// Users of dead nodes this node disconnected.
    users_cleaned: AtomicU64,
}

impl FaultRecord {
    /// The record as JSON: `{"outages", "outage_since_ms", "last_outage_ms",
    /// "state_lost", "last_state_lost_ms", "dead_nodes_cleaned",
    /// "users_cleaned"}`, all unsigned integers.
    pub fn to_json(&self) -> serde_json::Value {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        serde_json::json!({
            "outages": get(&self.outages),
            "outage_since_ms": get(&self.outage_since_ms),
            "last_outage_ms": get(&self.last_outage_ms),
            "state_lost": get(&self.state_lost),
            "last_state_lost_ms": get(&self.last_state_lost_ms),
            "dead_nodes_cleaned": get(&self.dead_nodes_cleaned),
            "users_cleaned": get(&self.users_cleaned),
        })
    }

    /// A renewal failed after one had succeeded: an outage begins.
    fn outage_began(&self) {
        self.outages.fetch_add(1, Ordering::Relaxed);
        self.outage_since_ms
            .store(crate::store::unix_ms(), Ordering::Relaxed);
        metrics::counter!("chorus_cluster_store_outages_total").increment(1);
    }

    /// A renewal succeeded after failures: the outage, if one was going
    /// on, ends.
    fn outage_ended(&self) {
        let since = self.outage_since_ms.swap(0, Ordering::Relaxed);
        if since > 0 {
            let took = crate::store::unix_ms().saturating_sub(since);
            self.last_outage_ms.store(took, Ordering::Relaxed);
            metrics::histogram!("chorus_cluster_store_outage_seconds").record(took as f64 / 1000.0);
        }
    }

    /// This node found itself missing from the node set.
    fn state_lost(&self) {
        self.state_lost.fetch_add(1, Ordering::Relaxed);
        self.last_state_lost_ms
            .store(crate::store::unix_ms(), Ordering::Relaxed);
        metrics::counter!("chorus_cluster_state_lost_total").increment(1);
    }
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
                    mode: bus::Mode::Relay,
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
    /// A cluster member described by `me` over `link`, serving
    /// `connections`; nothing runs until [`Cluster::start`]. The returned
    /// inbox carries the events only the app can apply; it must be read
    /// before [`Cluster::start`] runs (start disconnects users a previous
    /// run left behind, through it).
    pub fn new(
        me: NodeInfo,
        link: RedisLink,
        store: Arc<dyn Store>,
        connections: Arc<Connections>,
        lease_ttl: Duration,
        lease_interval: Duration,
    ) -> Result<(Arc<Self>, ClusterInbox), ClusterError> {
        if lease_interval.is_zero() || lease_interval >= lease_ttl {
            return Err(ClusterError::Lease {
                ttl: lease_ttl,
                interval: lease_interval,
            });
        }
        let (outbox, rx) = mpsc::channel(OUTBOX);
        let (events, inbox) = mpsc::channel(INBOX);
        let cluster = Arc::new(Self {
            node_id: me.node_id,
            public_url: me.public_url,
            origin: me.origin,
            link,
            connections,
            store,
            events,
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
            faults: FaultRecord::default(),
        });
        Ok((cluster, inbox))
    }

    /// Joins the cluster before the node serves: disconnects users a
    /// previous run of this node left behind, subscribes, takes the lease,
    /// then runs the publisher, subscriber and lease tasks on `tracker`
    /// until `shutdown`.
    pub async fn start(
        self: &Arc<Self>,
        shutdown: &CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<(), ClusterError> {
        lease::cleanup_users(self, &self.node_id).await?;
        let pubsub = bus::subscribe(self).await?;
        lease::renew(self).await?;
        lease::scan(self, shutdown, tracker).await?;
        let rx = self
            .outbox_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(rx) = rx {
            tracker.spawn(bus::publisher(Arc::clone(self), rx, shutdown.clone()));
        }
        tracker.spawn(bus::subscriber(
            Arc::clone(self),
            shutdown.clone(),
            Some(pubsub),
        ));
        tracker.spawn(lease::run(
            Arc::clone(self),
            shutdown.clone(),
            tracker.clone(),
        ));
        Ok(())
    }

    /// Hands an event to the app, waiting while its inbox is full; false
    /// when the app stopped reading (shutdown).
    async fn raise(&self, event: ClusterEvent) -> bool {
        self.events.send(event).await.is_ok()
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

    /// What this node saw go wrong (see [`FaultRecord`]).
    pub fn faults(&self) -> &FaultRecord {
        &self.faults
    }

    /// Why this node is not ready, or `None` when it is: `"redis link
    /// severed"`, `"lease not renewed (Redis unreachable)"` or `"bus not
    /// subscribed"`.
    pub fn not_ready_reason(&self) -> Option<&'static str> {
        if self.link.is_severed() {
            Some("redis link severed")
        } else if !self.lease_ok.load(Ordering::Relaxed) {
            Some("lease not renewed (Redis unreachable)")
        } else if !self.subscribed.load(Ordering::Relaxed) {
            Some("bus not subscribed")
        } else {
            None
        }
    }

    /// The live nodes as of the last renewal.
    pub fn peers(&self) -> Arc<Vec<Peer>> {
        self.peers.load_full()
    }

    /// The `public_url` of the live node with the fewest connections (ties
    /// by name), or `None` before the first renewal. Draining and suspect
    /// peers ([`Peer::is_suspect`]: a killed node looks alive until its
    /// lease expires) are passed over; this node is never suspect, so a node
    /// whose peers all look dead names itself.
    pub fn least_loaded(&self) -> Option<String> {
        self.peers()
            .iter()
            .filter(|p| !p.draining && (p.node_id == self.node_id || !p.is_suspect()))
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
        self.push(Outgoing::Message {
            channel,
            payload: bus::encode(envelope, frame),
        })
    }

    /// Puts `outgoing` on the publisher's queue; false when it is full or
    /// the link severed (counted as dropped).
    fn push(&self, outgoing: Outgoing) -> bool {
        if self.link.is_severed() {
            return false;
        }
        match self.outbox.try_send(outgoing) {
            Ok(()) => true,
            Err(_) => {
                metrics::counter!("chorus_cluster_publish_dropped_total").increment(1);
                false
            }
        }
    }

    /// Sends `frame` to those of `users` connected to other nodes: one
    /// message per node holding some of them. `local` are the users whose
    /// sessions were already served here. Waits for nothing: the publisher
    /// looks up the nodes and publishes, in the order of the calls (see
    /// [`Outgoing::Forward`]); a frame it cannot route, or that does not
    /// fit its queue, is dropped and counted in
    /// `chorus_cluster_publish_dropped_total`, like any bus message. Never
    /// fails today; the `Result` keeps the callers' contract.
    pub async fn forward(
        &self,
        action: &str,
        mode: bus::Mode,
        users: &[u64],
        local: &[u64],
        frame: &Utf8Bytes,
    ) -> Result<(), StoreError> {
        let remote: Vec<u64> = if local.is_empty() {
            users.to_vec()
        } else {
            let here: HashSet<u64> = local.iter().copied().collect();
            users
                .iter()
                .copied()
                .filter(|u| !here.contains(u))
                .collect()
        };
        if !remote.is_empty() {
            self.push(Outgoing::Forward {
                action: action.to_string(),
                mode,
                users: remote,
                frame: frame.clone(),
            });
        }
        Ok(())
    }

    /// The users of `remote` connected to other nodes, grouped by node
    /// (users within a group keep their order; users connected nowhere
    /// or here are left out).
    async fn locate_remote(&self, remote: &[u64]) -> Result<Vec<(String, Vec<u64>)>, StoreError> {
        if remote.is_empty() {
            return Ok(Vec::new());
        }
        let nodes = self.store.nodes_of(remote).await?;
        Ok(self.group_by_node(remote, &nodes))
    }

    /// `users` grouped by the node `nodes` names for each (same order and
    /// length), in order of first appearance; users connected nowhere or
    /// here are left out.
    fn group_by_node(&self, users: &[u64], nodes: &[Option<String>]) -> Vec<(String, Vec<u64>)> {
        let mut by_node: Vec<(&str, Vec<u64>)> = Vec::new();
        for (user, node) in users.iter().copied().zip(nodes) {
            let Some(node) = node.as_deref().filter(|n| *n != self.node_id) else {
                continue;
            };
            match by_node.iter_mut().find(|(n, _)| *n == node) {
                Some((_, users)) => users.push(user),
                None => by_node.push((node, vec![user])),
            }
        }
        by_node
            .into_iter()
            .map(|(node, users)| (node.to_string(), users))
            .collect()
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

    /// Whether `key` of the single-use kind `space` (`api_nonce`,
    /// `connect`) is new across the cluster; remembers it until
    /// `expires_at` (unix seconds, from [`crate::replay::remember_until`]),
    /// at least one second, seen at `now`.
    pub async fn first_use(
        &self,
        space: &str,
        key: &str,
        now: u64,
        expires_at: u64,
    ) -> Result<bool, StoreError> {
        let key = self.link.key(&format!("{space}:{key}"));
        let ttl_ms = expires_at.saturating_sub(now).max(1).saturating_mul(1000);
        let set: Option<String> = self
            .link
            .query(
                redis::cmd("SET")
                    .arg(key)
                    .arg(&self.node_id)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms),
            )
            .await?;
        Ok(set.is_some())
    }

    /// Whether `key` of `space` is remembered in Redis (a revoked sid
    /// under `revoked`, written by [`Cluster::first_use`]).
    pub async fn remembered(&self, space: &str, key: &str) -> Result<bool, StoreError> {
        let key = self.link.key(&format!("{space}:{key}"));
        let found: u64 = self.link.query(redis::cmd("EXISTS").arg(key)).await?;
        Ok(found > 0)
    }

    /// Kicks `user_id` on the node holding their connection (4010, with
    /// `reason`; `revoke` refuses their sid everywhere); whether the user
    /// was connected to another node.
    pub async fn kick(&self, user_id: u64, reason: &str, revoke: bool) -> Result<bool, StoreError> {
        let Some(node) = self.store.node_of(user_id).await? else {
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
    pub fn forward_report(&self, report: &RelayReport) -> bool {
        let owner = report.msg_id.as_deref().and_then(|id| self.owner_of(id));
        let envelope = Envelope::Report {
            from: self.node_id.clone(),
            report: report.clone(),
        };
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
    connections: &Connections,
    cluster: Option<&Arc<Cluster>>,
    users: &[u64],
) -> Result<Vec<(u64, Recipient)>, StoreError> {
    let local = connections.get_many(users);
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
        for (node, users) in cluster.locate_remote(&remote).await? {
            for user_id in users {
                let recipient = Recipient::Remote {
                    cluster: Arc::clone(cluster),
                    node: node.clone(),
                    user_id,
                };
                found.insert(user_id, recipient);
            }
        }
    }
    Ok(users
        .iter()
        .filter_map(|u| found.remove(u).map(|r| (*u, r)))
        .collect())
}
