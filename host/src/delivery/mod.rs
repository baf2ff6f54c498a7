//! Delivery of notifications: point to point, to everyone, and to a room
//! either by broadcast or by the seed's delegated relay ([`relay`]).
//!
//! Every notification gets its `msg_id` before it leaves here; all its
//! recipients, and every attempt of one relay, see the same id. A frame is
//! serialized once and shared by every recipient's queue. With several
//! nodes, recipients on this node are served directly and the others
//! through the [`Cluster`] bus, one message per node.
//!
//! Layer: above `connections` and `cluster`, below `dispatch`.

pub mod relay;

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use serde_json::{Map, Value};

use crate::cluster::Cluster;
use crate::cluster::bus::Mode;
use crate::config::{DeliveryConfig, DeliveryMode};
use crate::connections::{Connections, fan_out};
use crate::plugin::{Notification, Target};
use crate::store::{Store, StoreError};
use relay::Relay;

/// Routes notifications to sessions of this node.
pub struct Delivery {
    /// Per-action delivery modes.
    modes: DeliveryConfig,
    /// Room membership, to find a room's members.
    store: Arc<dyn Store>,
    /// Local sessions.
    connections: Arc<Connections>,
    /// Pending relays.
    pub relay: Arc<Relay>,
    /// The other nodes, when there are any.
    cluster: Option<Arc<Cluster>>,
}

impl Delivery {
    /// A delivery front for these sessions.
    pub fn new(
        modes: DeliveryConfig,
        store: Arc<dyn Store>,
        connections: Arc<Connections>,
        relay: Arc<Relay>,
        cluster: Option<Arc<Cluster>>,
    ) -> Self {
        Self {
            modes,
            store,
            connections,
            relay,
            cluster,
        }
    }

    /// Delivers one notification under `msg_id`: to a user, to everyone,
    /// or to a room in the mode the plugin chose, else its action's mode
    /// (`delivery.mode`, `[delivery.actions]`). Fails only when the store cannot say who is
    /// in the room or where a user is; frames already queued stay queued.
    #[tracing::instrument(name = "chorus.delivery.deliver", skip_all, fields(msg_id = msg_id, action = tracing::field::Empty))]
    pub async fn deliver(
        &self,
        notification: Notification,
        msg_id: &str,
    ) -> Result<(), StoreError> {
        let Notification {
            target,
            mut body,
            subject,
            delivery,
        } = notification;
        let action = body
            .get("action")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        tracing::Span::current().record("action", action.as_str());
        body.insert("msg_id".into(), Value::String(msg_id.to_string()));
        match target {
            Target::User(user_id) => {
                self.to_users(&action, Mode::User, &[user_id], encode(&body))
                    .await?;
            }
            Target::Everyone => {
                let frame = encode(&body);
                fan_out(&action, "everyone", &self.connections.all(), frame.clone());
                if let Some(cluster) = &self.cluster {
                    cluster.forward_everyone(&action, &frame);
                }
            }
            Target::Room(channel) => match self.modes.mode_for(&action, delivery) {
                DeliveryMode::Broadcast => {
                    let members = self.store.room_members(&channel).await?;
                    self.to_users(&action, Mode::Broadcast, &members, encode(&body))
                        .await?;
                }
                DeliveryMode::Relay => {
                    body.insert("relay".into(), Value::Bool(true));
                    let frame = encode(&body);
                    self.relay
                        .start(msg_id, &channel, &action, subject, frame)
                        .await?;
                }
            },
        }
        Ok(())
    }

    /// Queues `frame` for these users: here directly, elsewhere through
    /// the cluster bus.
    async fn to_users(
        &self,
        action: &str,
        mode: Mode,
        users: &[u64],
        frame: Utf8Bytes,
    ) -> Result<(), StoreError> {
        let sessions = self.connections.get_many(users);
        fan_out(action, mode.label(), &sessions, frame.clone());
        if let Some(cluster) = &self.cluster {
            cluster
                .forward(action, mode, users, &sessions, &frame)
                .await?;
        }
        Ok(())
    }
}

/// Serializes a frame once for all its recipients.
pub fn encode(body: &Map<String, Value>) -> Utf8Bytes {
    // A Map of Values always serializes.
    Utf8Bytes::from(serde_json::to_string(body).unwrap_or_default())
}
