//! Node liveness: each node renews a lease; survivors clean up after a node
//! whose lease expired.
//!
//! Keys (P = `store.prefix`): `P node:<node>` is the lease, a JSON [`Peer`]
//! with a TTL of `store.lease_ttl`, written every `store.lease_interval`;
//! `P nodes` is the set of nodes that ever took a lease and were not yet
//! cleaned up; `P node_users:<node>` the users a node holds (kept by the
//! presence script); `P cleanup:<node>` the claim of the survivor cleaning
//! up a dead node (`SET NX`, expires so that a survivor dying mid-way
//! leaves the rest to another).
//!
//! Cleanup pops users one at a time (`SPOP`, atomic with the presence
//! check), so each user of a dead node is disconnected exactly once, by
//! one survivor, and a user who already reconnected elsewhere is left
//! alone.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::Script;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Cluster, ClusterError, ClusterEvent, Peer};
use crate::store::StoreError;
use chorus_protocol::{CloseCode, Disconnect};

/// How long a survivor's claim on a dead node lasts.
const CLAIM: Duration = Duration::from_secs(60);

/// How late a renewal may be before its node is suspect, at least
/// ([`late`]): short intervals (tests use 250 ms) would otherwise judge a
/// node whose renewal waited behind a busy runtime.
pub const LATE_AT_LEAST: Duration = Duration::from_secs(1);

/// Whether a lease with `ttl_left` of its `ttl` written every `interval`
/// is late: its last renewal is more than `interval` plus half an
/// interval (at least [`LATE_AT_LEAST`]) ago. Being wrong costs little:
/// discovery sends nobody there until the next renewal is seen.
pub fn late(ttl_left: Duration, ttl: Duration, interval: Duration) -> bool {
    let age = ttl.saturating_sub(ttl_left);
    age > interval + (interval / 2).max(LATE_AT_LEAST)
}

/// How often the bus channels of the peers are probed for a subscriber
/// (`PUBSUB NUMSUB`; [`super::Peer::bus_unsubscribed`]), or every renewal
/// interval if that is shorter. One command per probe whatever the number
/// of nodes. Measured in the two-node storm (issue 20 item 4): discovery
/// named a SIGKILLed node until its lease expired, 10 s, and its clients
/// came back only after that.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// Pops one user of a dead node; returns `{user, 1}` to disconnect, `{user,
/// 0}` when the user is connected elsewhere now, `false` when none is left.
const POP: &str = r"
local P, dead = ARGV[1], ARGV[2]
local u = redis.call('SPOP', P .. 'node_users:' .. dead)
if not u then return false end
local key = P .. 'presence:' .. u
local at = redis.call('GET', key)
if at == dead then redis.call('DEL', key) end
if at == dead or not at then return {u, 1} end
return {u, 0}
";

fn pop_script() -> &'static Script {
    static SCRIPT: std::sync::OnceLock<Script> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| Script::new(POP))
}

/// Renews the lease every `store.lease_interval` and looks for dead nodes,
/// until shutdown; then marks the lease draining (it expires by itself,
/// giving this node's users `store.lease_ttl` to reconnect elsewhere
/// before survivors remove them).
pub async fn run(cluster: Arc<Cluster>, shutdown: CancellationToken, tracker: TaskTracker) {
    let mut tick = tokio::time::interval(cluster.lease_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut probe = tokio::time::interval(PROBE_INTERVAL.min(cluster.lease_interval));
    probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let renewal = tokio::select! {
            _ = tick.tick() => true,
            _ = probe.tick() => false,
            _ = shutdown.cancelled() => break,
        };
        if cluster.link.is_severed() {
            return;
        }
        if !renewal {
            if let Err(e) = probe_buses(&cluster).await {
                tracing::debug!(error = %e, "cluster bus probe failed");
            }
            continue;
        }
        if let Err(e) = renew(&cluster).await {
            *cluster
                .healthy_since
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = None;
            if cluster.lease_ok.swap(false, Ordering::Relaxed) {
                cluster.faults.outage_began();
                tracing::error!(error = %e, "cluster lease not renewed; not ready");
            }
            continue;
        }
        if let Err(e) = scan(&cluster, &shutdown, &tracker).await {
            tracing::warn!(error = %e, "cluster scan failed");
        }
    }
    if !cluster.link.is_severed()
        && let Err(e) = write_lease(&cluster, true).await
    {
        tracing::warn!(error = %e, "could not mark the lease draining");
    }
}

/// Writes this node's lease, and repairs what an outage may have broken:
///
/// - If this node had been given up for dead (it is no longer in the node
///   set: a survivor removed its users, or Redis lost its data), every
///   local session is closed with 1001, so that clients reconnect and
///   learn (`current_room_id` empty) that they left their rooms.
/// - Otherwise, after renewals failed or the lease vanished, presence of
///   the local sessions is written again where it is missing (sessions
///   opened while Redis was away), and a session whose user is now
///   connected to another node (a replacement published while this node's
///   bus was away) is closed with 4009.
pub async fn renew(cluster: &Arc<Cluster>) -> Result<(), ClusterError> {
    let was_ok = cluster.lease_ok.load(Ordering::Relaxed);
    let (existed, rejoined) = write_lease(cluster, false).await?;
    if cluster.ever_renewed.swap(true, Ordering::Relaxed) {
        if rejoined {
            cluster.faults.state_lost();
            tracing::error!(
                node = cluster.node_id,
                sessions = cluster.connections.len(),
                "this node had been given up for dead; closing its sessions so clients resync"
            );
            for session in cluster.connections.all() {
                session.close(Disconnect::with_reason(
                    CloseCode::GoingAway,
                    "node rejoined the cluster; reconnect",
                ));
            }
        } else if !was_ok || !existed {
            reclaim_presence(cluster).await?;
        }
    }
    if !was_ok {
        cluster.faults.outage_ended();
        tracing::info!(node = cluster.node_id, "cluster lease held; ready");
        *cluster
            .healthy_since
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(tokio::time::Instant::now());
    }
    cluster.lease_ok.store(true, Ordering::Relaxed);
    Ok(())
}

/// Presence of `ARGV[3..]` on node `ARGV[2]`: written where missing;
/// returns the users connected to another node now.
const RECLAIM: &str = r"
local P, node = ARGV[1], ARGV[2]
local elsewhere = {}
for i = 3, #ARGV do
  local u = ARGV[i]
  local key = P .. 'presence:' .. u
  local at = redis.call('GET', key)
  if not at then
    redis.call('SET', key, node)
    at = node
  end
  if at == node then
    redis.call('SADD', P .. 'node_users:' .. node, u)
  else
    elsewhere[#elsewhere + 1] = u
  end
end
return elsewhere
";

/// Writes missing presence of the local sessions, 500 users per script,
/// and closes with 4009 those whose user connected elsewhere meanwhile.
async fn reclaim_presence(cluster: &Cluster) -> Result<(), ClusterError> {
    static SCRIPT: std::sync::OnceLock<Script> = std::sync::OnceLock::new();
    let script = SCRIPT.get_or_init(|| Script::new(RECLAIM));
    let sessions = cluster.connections.all();
    for chunk in sessions.chunks(500) {
        let mut invocation = script.prepare_invoke();
        invocation.arg(cluster.link.prefix()).arg(&cluster.node_id);
        for session in chunk {
            invocation.arg(session.user_id);
        }
        let mut conn = cluster.link.conn()?;
        let elsewhere: Vec<u64> = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(StoreError::from)?;
        for user_id in elsewhere {
            if let Some(session) = cluster.connections.get(user_id) {
                session.replace();
            }
        }
    }
    Ok(())
}

/// `SET lease … PX ttl GET` and `SADD nodes`: whether the lease existed,
/// and whether this node was missing from the node set.
async fn write_lease(cluster: &Cluster, draining: bool) -> Result<(bool, bool), StoreError> {
    let me = Peer {
        node_id: cluster.node_id.clone(),
        public_url: cluster.public_url.clone(),
        connections: cluster.connections.len() as u64,
        origin: cluster.origin.clone(),
        draining,
        lease_ttl_ms: cluster.lease_ttl.as_millis() as u64,
        lease_interval_ms: cluster.lease_interval.as_millis() as u64,
        lease_stale: false,
        bus_unsubscribed: false,
    };
    let lease = serde_json::to_string(&me).unwrap_or_default();
    let ttl_ms = cluster.lease_ttl.as_millis() as u64;
    let mut pipe = redis::pipe();
    pipe.cmd("SET")
        .arg(cluster.link.key(&format!("node:{}", cluster.node_id)))
        .arg(lease)
        .arg("PX")
        .arg(ttl_ms)
        .arg("GET")
        .cmd("SADD")
        .arg(cluster.link.key("nodes"))
        .arg(&cluster.node_id);
    let (previous, added): (Option<String>, u64) = cluster.link.query_pipe(&pipe).await?;
    Ok((previous.is_some(), added == 1))
}

/// Reads every lease: refreshes the table of live nodes, and starts the
/// cleanup of each node whose lease expired.
pub async fn scan(
    cluster: &Arc<Cluster>,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
) -> Result<(), ClusterError> {
    let nodes: Vec<String> = cluster
        .link
        .query(redis::cmd("SMEMBERS").arg(cluster.link.key("nodes")))
        .await?;
    if nodes.is_empty() {
        return Ok(());
    }
    let mut get = redis::cmd("MGET");
    let mut ttl = redis::pipe();
    for node in &nodes {
        get.arg(cluster.link.key(&format!("node:{node}")));
        ttl.cmd("PTTL")
            .arg(cluster.link.key(&format!("node:{node}")));
    }
    let leases: Vec<Option<String>> = cluster.link.query(&get).await?;
    let ttls: Vec<i64> = cluster.link.query_pipe(&ttl).await?;
    let may_judge = cluster
        .healthy_since
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .is_some_and(|since| since.elapsed() >= cluster.lease_ttl);
    let mut live = Vec::new();
    for ((node, lease), ttl) in nodes.into_iter().zip(leases).zip(ttls) {
        match lease.and_then(|l| serde_json::from_str::<Peer>(&l).ok()) {
            Some(mut peer) => {
                let own = |ms: u64, mine: Duration| {
                    if ms == 0 {
                        mine
                    } else {
                        Duration::from_millis(ms)
                    }
                };
                peer.lease_stale = node != cluster.node_id
                    && u64::try_from(ttl).is_ok_and(|left| {
                        late(
                            Duration::from_millis(left),
                            own(peer.lease_ttl_ms, cluster.lease_ttl),
                            own(peer.lease_interval_ms, cluster.lease_interval),
                        )
                    });
                live.push(peer);
            }
            None if node == cluster.node_id || !may_judge => {}
            None => start_cleanup(cluster, node, shutdown, tracker),
        }
    }
    // Best effort: a Redis that refuses `PUBSUB` (ACL, renamed command)
    // leaves only the lease's age to judge by.
    if let Err(e) = mark_unsubscribed(cluster, &mut live).await {
        tracing::debug!(error = %e, "cluster bus probe failed");
    }
    metrics::gauge!("chorus_cluster_nodes").set(live.len() as f64);
    cluster.peers.store(Arc::new(live));
    Ok(())
}

/// Probes the bus channels of the known peers between two scans, so a
/// killed node stops being named by discovery within [`PROBE_INTERVAL`].
async fn probe_buses(cluster: &Cluster) -> Result<(), StoreError> {
    let mut peers = Vec::clone(&cluster.peers());
    if peers.iter().all(|p| p.node_id == cluster.node_id) {
        return Ok(());
    }
    mark_unsubscribed(cluster, &mut peers).await?;
    if peers != *cluster.peers() {
        cluster.peers.store(Arc::new(peers));
    }
    Ok(())
}

/// Sets [`Peer::bus_unsubscribed`] of every peer but this node from one
/// `PUBSUB NUMSUB` of their bus channels.
async fn mark_unsubscribed(cluster: &Cluster, peers: &mut [Peer]) -> Result<(), StoreError> {
    let mut numsub = redis::cmd("PUBSUB");
    numsub.arg("NUMSUB");
    let mut any = false;
    for peer in peers.iter().filter(|p| p.node_id != cluster.node_id) {
        numsub.arg(cluster.link.key(&format!("bus:{}", peer.node_id)));
        any = true;
    }
    if !any {
        return Ok(());
    }
    let counts: HashMap<String, u64> = cluster.link.query(&numsub).await?;
    for peer in peers.iter_mut().filter(|p| p.node_id != cluster.node_id) {
        let channel = cluster.link.key(&format!("bus:{}", peer.node_id));
        peer.bus_unsubscribed = counts.get(&channel).copied().unwrap_or(0) == 0;
    }
    Ok(())
}

/// Cleans up after `dead` in a task of its own, unless this node already is.
fn start_cleanup(
    cluster: &Arc<Cluster>,
    dead: String,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
) {
    {
        let mut cleaning = cluster.cleaning.lock().unwrap_or_else(|p| p.into_inner());
        if !cleaning.insert(dead.clone()) {
            return;
        }
    }
    let cluster2 = Arc::clone(cluster);
    let shutdown = shutdown.clone();
    tracker.spawn(async move {
        tokio::select! {
            result = cleanup_dead(&cluster2, &dead) => {
                if let Err(e) = result {
                    tracing::warn!(dead, error = %e, "dead node cleanup failed; will retry");
                }
            }
            _ = shutdown.cancelled() => {}
        }
        let mut cleaning = cluster2.cleaning.lock().unwrap_or_else(|p| p.into_inner());
        cleaning.remove(&dead);
    });
}

/// Claims `dead` and disconnects its users; forgets the node afterwards.
async fn cleanup_dead(cluster: &Arc<Cluster>, dead: &str) -> Result<(), ClusterError> {
    let claim = cluster.link.key(&format!("cleanup:{dead}"));
    let claimed: Option<String> = cluster
        .link
        .query(
            redis::cmd("SET")
                .arg(&claim)
                .arg(&cluster.node_id)
                .arg("NX")
                .arg("EX")
                .arg(CLAIM.as_secs()),
        )
        .await?;
    if claimed.is_none() {
        return Ok(()); // another survivor has it
    }
    tracing::warn!(
        dead,
        node = cluster.node_id,
        "node lease expired; removing its users"
    );
    metrics::counter!("chorus_cluster_dead_nodes_total").increment(1);
    cluster
        .faults
        .dead_nodes_cleaned
        .fetch_add(1, Ordering::Relaxed);
    let removed = cleanup_users(cluster, dead).await?;
    let mut pipe = redis::pipe();
    pipe.cmd("SREM")
        .arg(cluster.link.key("nodes"))
        .arg(dead)
        .ignore()
        .cmd("DEL")
        .arg(&claim)
        .ignore();
    cluster.link.query_pipe::<()>(&pipe).await?;
    tracing::info!(dead, removed, "dead node cleaned up");
    Ok(())
}

/// Disconnects, one at a time and each exactly once, the users `node`
/// still holds; returns how many. Also run by a node at start for what a
/// previous run under the same name left behind. Each disconnect is run
/// by the app ([`ClusterEvent::Disconnect`]) and awaited before the next
/// user is popped.
pub async fn cleanup_users(cluster: &Cluster, node: &str) -> Result<u64, ClusterError> {
    let mut removed = 0;
    loop {
        let mut conn = cluster.link.conn()?;
        let popped: Option<(u64, u8)> = pop_script()
            .arg(cluster.link.prefix())
            .arg(node)
            .invoke_async(&mut conn)
            .await
            .map_err(StoreError::from)?;
        let Some((user_id, gone)) = popped else {
            return Ok(removed);
        };
        if gone == 1 {
            let (done, finished) = oneshot::channel();
            let event = ClusterEvent::Disconnect {
                user: user_id,
                done,
            };
            if !cluster.raise(event).await {
                return Ok(removed);
            }
            match finished.await {
                // The app is shutting down; the user stays popped, as a
                // dead node's would if this node died here.
                Err(_) => return Ok(removed),
                // Connected again meanwhile: left as they are.
                Ok(false) => {}
                Ok(true) => {
                    removed += 1;
                    metrics::counter!("chorus_cluster_users_cleaned_total").increment(1);
                    cluster.faults.users_cleaned.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}
