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

use crate::cluster::Cluster;
use crate::cluster::bus::Mode;
use crate::config::{DeliveryConfig, DeliveryMode};
use crate::connections::{Connections, fan_out};
use crate::plugin::{Notification, Target};
use crate::store::{Store, StoreError, Stream};
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

    /// Delivers one notification (prepared by [`Outgoing::prepare`], its
    /// frame stamped with its stream's `epoch` and `seq` when it was
    /// logged): to a user, to everyone, or to a room in the mode the
    /// plugin chose, else its action's mode (`delivery.mode`,
    /// `[delivery.actions]`). Fails only when the store cannot say who is
    /// in the room or where a user is; frames already queued stay queued.
    ///
    /// The frame is shared
    /// by every recipient: a relay adds `"relay":true` once, never a copy
    /// per recipient.
    #[tracing::instrument(name = "chorus.delivery.deliver", skip_all, fields(msg_id = out.msg_id.as_str(), action = out.action.as_str()))]
    pub async fn deliver_outgoing(&self, out: Outgoing) -> Result<(), StoreError> {
        let Outgoing {
            target,
            action,
            subject,
            delivery,
            msg_id,
            frame,
        } = out;
        match target {
            Target::User(user_id) => {
                self.to_users(&action, Mode::User, &[user_id], Utf8Bytes::from(frame))
                    .await?;
            }
            Target::Everyone => {
                let frame = Utf8Bytes::from(frame);
                fan_out(&action, "everyone", &self.connections.all(), frame.clone());
                if let Some(cluster) = &self.cluster {
                    cluster.forward_everyone(&action, &frame);
                }
            }
            Target::Room(channel) => match self.modes.mode_for(&action, delivery) {
                DeliveryMode::Broadcast => {
                    let members = self.store.room_members(&channel).await?;
                    self.to_users(&action, Mode::Broadcast, &members, Utf8Bytes::from(frame))
                        .await?;
                }
                DeliveryMode::Relay => {
                    let mut frame = frame;
                    if !is_relayed(&frame) {
                        mark_relayed(&mut frame);
                    }
                    self.relay
                        .start(&msg_id, &channel, &action, subject, Utf8Bytes::from(frame))
                        .await?;
                }
            },
        }
        Ok(())
    }

    /// Whether `out` goes to a room in `relay` mode (to one delegate).
    pub fn relays(&self, out: &Outgoing) -> bool {
        matches!(out.target, Target::Room(_))
            && self.modes.mode_for(&out.action, out.delivery) == DeliveryMode::Relay
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
        let Some(cluster) = &self.cluster else {
            self.connections
                .fan_out_to(action, mode.label(), users, &frame, None);
            return Ok(());
        };
        let mut here = Vec::new();
        self.connections
            .fan_out_to(action, mode.label(), users, &frame, Some(&mut here));
        cluster.forward(action, mode, users, &here, &frame).await?;
        Ok(())
    }
}

/// Adds `"relay":true` to a frame (a JSON object's text) before its
/// closing brace. A relay-mode room notification gets it before it is
/// logged (issue 17), so its stamp follows it and a resume can tell it.
pub fn mark_relayed(frame: &mut String) {
    if frame.ends_with('}') {
        frame.pop();
        frame.push_str(if frame.ends_with('{') { "" } else { "," });
        frame.push_str("\"relay\":true}");
    }
}

/// Whether a frame carries the host's `"relay":true` (a string value
/// cannot: its quotes are escaped). Only what follows the frame's last
/// `msg_id` is read, which the host puts after everything the plugin
/// wrote: a plugin's own `"relay":true` in a nested object is not the
/// mark (found in review once plugin text was passed on as written).
pub fn is_relayed(frame: &str) -> bool {
    let tail = frame.rfind("\"msg_id\":").map_or(frame, |at| &frame[at..]);
    tail.contains("\"relay\":true")
}

/// A notification ready to leave: its target, its `msg_id` and its frame,
/// serialized once.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Who gets it.
    pub target: Target,
    /// The frame's `action`.
    pub action: String,
    /// The user it is about (never a relay's delegate).
    pub subject: Option<u64>,
    /// The mode the plugin chose for a room target, if any.
    pub delivery: Option<DeliveryMode>,
    /// Its id, already in the frame.
    pub msg_id: String,
    /// The JSON text every recipient gets.
    pub frame: String,
}

impl Outgoing {
    /// The notification with `msg_id` added to its text (the plugin's
    /// text is passed on, not parsed and written again).
    pub fn prepare(notification: Notification, msg_id: &str) -> Self {
        let Notification {
            target,
            body,
            subject,
            delivery,
        } = notification;
        Self {
            target,
            action: body.action().unwrap_or_default().to_string(),
            subject,
            delivery,
            msg_id: msg_id.to_string(),
            frame: body.with_msg_id(msg_id),
        }
    }

    /// The history stream it belongs to (issue 17): a room's, a user's,
    /// none for a notification to everyone.
    pub fn stream(&self) -> Option<Stream> {
        match &self.target {
            Target::Room(channel) => Some(Stream::Room(channel.clone())),
            Target::User(user) => Some(Stream::User(*user)),
            Target::Everyone => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host's mark follows the frame's `msg_id` (and may precede the
    /// history stamp); a plugin's `"relay":true` inside its own object is
    /// not the mark.
    #[test]
    fn only_the_hosts_relay_mark_counts() {
        let mut frame = r#"{"action":"a","o":{"relay":true},"msg_id":"n-1"}"#.to_string();
        assert!(!is_relayed(&frame));
        mark_relayed(&mut frame);
        assert_eq!(
            frame,
            r#"{"action":"a","o":{"relay":true},"msg_id":"n-1","relay":true}"#
        );
        assert!(is_relayed(&frame));
        let stamped =
            r#"{"action":"a","msg_id":"n-2","relay":true,"stream":"room","epoch":"e","seq":3}"#;
        assert!(is_relayed(stamped));
    }
}
