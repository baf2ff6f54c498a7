//! The message bus between nodes: Redis pub/sub, one channel per node and
//! one for all.
//!
//! A message is a JSON [`Envelope`] on the first line, then, for frames, a
//! newline and the frame exactly as the WebSocket sends it (never
//! re-escaped). One task publishes (pipelining whatever queued up), one
//! task subscribes and queues each frame on local sessions, or hands the
//! message to the app as a [`ClusterEvent`]; the subscriber reconnects by
//! itself when Redis comes back.
//!
//! A frame for users of other nodes ([`Outgoing::Forward`]) is routed by
//! the publisher, not by the caller: it looks up the nodes of all the
//! recipients of every forward it took off the queue at once (one `MGET`),
//! then publishes one message per node holding some of them, in queue
//! order. The caller (a broadcast holding its room's lock) waits for no
//! Redis round trip, and a busy room's lookups share one command.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Cluster, ClusterEvent, RelayReport};
use crate::connections::fan_out;
use crate::store::StoreError;

/// Items the publisher takes off its queue for one pipeline at most.
const BATCH: usize = 256;

/// Recipients the publisher looks up in one `MGET` at most: it stops
/// taking forwards off the queue for a pipeline once their recipients
/// reach this many (a single forward may hold more).
const LOOKUPS: usize = 16_384;

/// How a forwarded frame was addressed (the `mode` label of
/// `chorus_frames_out_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// To one user.
    User,
    /// To every member of a room.
    Broadcast,
    /// To a relay's delegate.
    Relay,
}

impl Mode {
    /// The metrics label.
    pub const fn label(self) -> &'static str {
        match self {
            Mode::User => "user",
            Mode::Broadcast => "broadcast",
            Mode::Relay => "relay",
        }
    }
}

/// What one bus message asks of the node that receives it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Envelope {
    /// Queue the attached frame for these users' sessions on this node.
    Deliver {
        /// The notification's action (metrics label).
        action: String,
        /// How it was addressed (metrics label).
        mode: Mode,
        /// Recipients connected to the receiving node.
        users: Vec<u64>,
    },
    /// Queue the attached frame for every session of this node.
    Everyone {
        /// The sending node (which already served its own sessions).
        from: String,
        /// The notification's action (metrics label).
        action: String,
    },
    /// The user connected on another node: close the older connection here
    /// with `kicked` and 4009.
    Replace {
        /// The user.
        user: u64,
    },
    /// A relay report that arrived on another node.
    Report {
        /// The sending node.
        from: String,
        /// The report.
        #[serde(flatten)]
        report: RelayReport,
    },
    /// The app backend kicked the user through another node: close their
    /// session here with `kicked` and 4010.
    Kick {
        /// The user.
        user: u64,
        /// The reason shown to the client.
        reason: String,
        /// Refuse the session's sid until it expires, on every node.
        revoke: bool,
    },
    /// A sid was revoked on another node: refuse it here too.
    Revoke {
        /// The sending node.
        from: String,
        /// The revoked session token.
        sid: String,
    },
    /// The user disconnected from another node: relays waiting for them as
    /// delegate move on.
    Gone {
        /// The sending node.
        from: String,
        /// The user.
        user: u64,
    },
}

/// One item on its way to Redis.
#[derive(Debug)]
pub enum Outgoing {
    /// A message for one channel, as it will be published.
    Message {
        /// The full channel name.
        channel: String,
        /// Envelope line, then optionally a newline and the frame.
        payload: Vec<u8>,
    },
    /// A frame for users not connected to this node: the publisher finds
    /// the node of each (users connected nowhere, or here, are left out)
    /// and publishes one [`Envelope::Deliver`] per node holding some of
    /// them, users in this order.
    Forward {
        /// The notification's action (metrics label).
        action: String,
        /// How it was addressed (metrics label).
        mode: Mode,
        /// The recipients not served by this node.
        users: Vec<u64>,
        /// The frame, shared with the local recipients' queues.
        frame: Utf8Bytes,
    },
}

impl Outgoing {
    /// Users whose node the publisher must look up for this item.
    fn lookups(&self) -> usize {
        match self {
            Outgoing::Message { .. } => 0,
            Outgoing::Forward { users, .. } => users.len(),
        }
    }
}

/// The wire form of a message.
pub fn encode(envelope: &Envelope, frame: Option<&Utf8Bytes>) -> Vec<u8> {
    // An enum of strings and integers always serializes.
    let mut payload = serde_json::to_vec(envelope).unwrap_or_default();
    if let Some(frame) = frame {
        payload.push(b'\n');
        payload.extend_from_slice(frame.as_bytes());
    }
    payload
}

/// Splits a message into its envelope and frame.
pub fn decode(payload: &[u8]) -> Option<(Envelope, Option<Utf8Bytes>)> {
    let (head, frame) = match payload.iter().position(|b| *b == b'\n') {
        Some(at) => (&payload[..at], Some(&payload[at + 1..])),
        None => (payload, None),
    };
    let envelope = serde_json::from_slice(head).ok()?;
    let frame = match frame {
        Some(bytes) => Some(Utf8Bytes::from(
            std::str::from_utf8(bytes).ok()?.to_string(),
        )),
        None => None,
    };
    Some((envelope, frame))
}

/// Publishes queued items in order, pipelining what accumulated (routing
/// the forwards among them first), until shutdown. A failed pipeline is
/// dropped (counted): pub/sub is at most once, and the senders already
/// moved on.
pub async fn publisher(
    cluster: Arc<Cluster>,
    mut rx: mpsc::Receiver<Outgoing>,
    shutdown: CancellationToken,
) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let first = tokio::select! {
            next = rx.recv() => next,
            _ = shutdown.cancelled() => None,
        };
        let Some(first) = first else { return };
        let mut lookups = first.lookups();
        batch.push(first);
        while batch.len() < BATCH && lookups < LOOKUPS {
            match rx.try_recv() {
                Ok(next) => {
                    lookups += next.lookups();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        publish_batch(&cluster, &mut batch).await;
    }
}

/// Routes the forwards of `batch` (one `MGET` for all their recipients),
/// then publishes every message in one pipeline, in order; empties
/// `batch`.
async fn publish_batch(cluster: &Cluster, batch: &mut Vec<Outgoing>) {
    let users: Vec<u64> = batch
        .iter()
        .flat_map(|item| match item {
            Outgoing::Forward { users, .. } => users.as_slice(),
            Outgoing::Message { .. } => &[],
        })
        .copied()
        .collect();
    let nodes = if users.is_empty() {
        Vec::new()
    } else {
        match cluster.store.nodes_of(&users).await {
            Ok(nodes) => nodes,
            Err(e) => {
                tracing::warn!(error = %e, users = users.len(), "cluster: cannot find the nodes of forwarded frames' recipients");
                Vec::new()
            }
        }
    };
    let mut pipe = redis::pipe();
    let (mut count, mut unrouted, mut at) = (0u64, 0u64, 0usize);
    for item in batch.drain(..) {
        match item {
            Outgoing::Message { channel, payload } => {
                pipe.cmd("PUBLISH").arg(channel).arg(payload).ignore();
                count += 1;
            }
            Outgoing::Forward {
                action,
                mode,
                users,
                frame,
            } => {
                let located = nodes.get(at..at + users.len());
                at += users.len();
                let Some(located) = located else {
                    unrouted += 1;
                    continue;
                };
                for (node, users) in cluster.group_by_node(&users, located) {
                    let envelope = Envelope::Deliver {
                        action: action.clone(),
                        mode,
                        users,
                    };
                    pipe.cmd("PUBLISH")
                        .arg(cluster.link.key(&format!("bus:{node}")))
                        .arg(encode(&envelope, Some(&frame)))
                        .ignore();
                    count += 1;
                }
            }
        }
    }
    if unrouted > 0 {
        metrics::counter!("chorus_cluster_publish_dropped_total").increment(unrouted);
    }
    if count == 0 {
        return;
    }
    match cluster.link.query_pipe::<()>(&pipe).await {
        Ok(()) => metrics::counter!("chorus_cluster_published_total").increment(count),
        Err(e) => {
            metrics::counter!("chorus_cluster_publish_dropped_total").increment(count);
            tracing::warn!(error = %e, messages = count, "cluster publish failed");
        }
    }
}

/// A pub/sub connection subscribed to this node's channel and the shared
/// one.
pub async fn subscribe(cluster: &Cluster) -> Result<redis::aio::PubSub, StoreError> {
    if cluster.link.is_severed() {
        return Err(StoreError::Severed);
    }
    let connect = cluster.link.client().get_async_pubsub();
    let mut pubsub = tokio::time::timeout(Duration::from_secs(2), connect)
        .await
        .map_err(|_| StoreError::Timeout("pub/sub connection"))??;
    let own = cluster.link.key(&format!("bus:{}", cluster.node_id));
    let all = cluster.link.key("bus");
    pubsub.subscribe(&[own, all][..]).await?;
    Ok(pubsub)
}

/// Reads the bus until shutdown, reconnecting (every half second, at most
/// every few seconds once it keeps failing) whenever the connection drops.
pub async fn subscriber(
    cluster: Arc<Cluster>,
    shutdown: CancellationToken,
    mut connected: Option<redis::aio::PubSub>,
) {
    let mut backoff = Duration::from_millis(250);
    loop {
        if shutdown.is_cancelled() || cluster.link.is_severed() {
            return;
        }
        let pubsub = match connected.take() {
            Some(p) => Ok(p),
            None => subscribe(&cluster).await,
        };
        match pubsub {
            Ok(mut pubsub) => {
                cluster
                    .subscribed
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                backoff = Duration::from_millis(250);
                read(&cluster, &shutdown, &mut pubsub).await;
                if shutdown.is_cancelled() {
                    return;
                }
                cluster
                    .subscribed
                    .store(false, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(node = cluster.node_id, "cluster bus disconnected");
            }
            Err(e) => tracing::debug!(error = %e, "cluster bus: cannot subscribe yet"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// Handles messages until the connection ends or the node stops.
async fn read(
    cluster: &Arc<Cluster>,
    shutdown: &CancellationToken,
    pubsub: &mut redis::aio::PubSub,
) {
    let mut messages = pubsub.on_message();
    loop {
        let message = tokio::select! {
            m = messages.next() => m,
            _ = shutdown.cancelled() => return,
        };
        let Some(message) = message else { return };
        if cluster.link.is_severed() {
            return;
        }
        metrics::counter!("chorus_cluster_received_total").increment(1);
        let Some((envelope, frame)) = decode(message.get_payload_bytes()) else {
            tracing::warn!("cluster bus: malformed message dropped");
            continue;
        };
        if let Some(event) = handle(cluster, envelope, frame)
            && !cluster.raise(event).await
        {
            return;
        }
    }
}

/// Acts on one message: frames are queued on local sessions here; what
/// needs a layer above the cluster is returned as an event for the app.
/// Messages a node sent to all (itself included) are ignored by it.
fn handle(cluster: &Cluster, envelope: Envelope, frame: Option<Utf8Bytes>) -> Option<ClusterEvent> {
    let me = cluster.node_id.as_str();
    match envelope {
        Envelope::Deliver {
            action,
            mode,
            users,
        } => {
            cluster
                .connections
                .fan_out_to(&action, mode.label(), &users, &frame?, None);
            None
        }
        Envelope::Everyone { from, action } => {
            if from != me {
                fan_out(&action, "everyone", &cluster.connections.all(), frame?);
            }
            None
        }
        Envelope::Replace { user } => Some(ClusterEvent::Replace { user }),
        Envelope::Kick {
            user,
            reason,
            revoke,
        } => Some(ClusterEvent::Kick {
            user,
            reason,
            revoke,
        }),
        Envelope::Revoke { from, sid } => (from != me).then_some(ClusterEvent::Revoke { sid }),
        Envelope::Report { from, report } => (from != me).then_some(ClusterEvent::Report(report)),
        Envelope::Gone { from, user } => (from != me).then_some(ClusterEvent::Gone { user }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_carries_the_frame_verbatim() {
        let envelope = Envelope::Deliver {
            action: "send_gift".into(),
            mode: Mode::Broadcast,
            users: vec![1, 2],
        };
        let frame = Utf8Bytes::from("{\"action\":\"send_gift\",\"note\":\"a\\nb\"}\n".to_string());
        let wire = encode(&envelope, Some(&frame));
        let (back, back_frame) = decode(&wire).expect("decodes");
        assert_eq!(back, envelope);
        assert_eq!(back_frame.as_deref(), Some(frame.as_str()));
        let bare = encode(&Envelope::Replace { user: 7 }, None);
        assert_eq!(decode(&bare), Some((Envelope::Replace { user: 7 }, None)));
    }

    #[test]
    fn a_report_keeps_its_wire_shape() {
        let report = Envelope::Report {
            from: "n1".into(),
            report: RelayReport {
                reporter: 5,
                report: "up_deport".into(),
                user: 7,
                msg_id: None,
            },
        };
        let wire = String::from_utf8(encode(&report, None)).unwrap();
        assert_eq!(
            wire,
            r#"{"t":"report","from":"n1","reporter":5,"report":"up_deport","user":7,"msg_id":null}"#
        );
        assert_eq!(decode(wire.as_bytes()), Some((report, None)));
    }
}
