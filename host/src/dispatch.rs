//! Running an action: route it to its plugin, apply the reply's state
//! changes as one batch, then deliver its notifications.
//!
//! Events of one room are serialized by a per-room lock held across the
//! plugin call, the batch and the hand-off to delivery, so notifications
//! leave in the order the state changed, and a plugin's reads are not
//! invalidated by a concurrent call of the same room on this node. The
//! store's batch conditions (a seat must be free, …) still decide between
//! nodes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};

use crate::app::App;
use crate::plugin::{CallError, Event, Source};
use crate::store::ApplyError;
use chorus_protocol::codes::ErrorCode;

/// What a successful action returns.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    /// The ids of the notifications it produced.
    pub msg_ids: Vec<String>,
    /// The plugin's result object.
    pub result: Value,
}

/// Why an action failed; nothing of it was applied.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code:?}: {reason}")]
pub struct ActionError {
    /// The protocol error code.
    pub code: ErrorCode,
    /// Shown to the caller; never holds a plugin's internals.
    pub reason: String,
}

impl ActionError {
    /// An error with a code and reason.
    pub fn new(code: ErrorCode, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }
}

impl From<CallError> for ActionError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Rejected(r) => Self::new(ErrorCode::PluginRejected, r),
            CallError::Conflict(r) => Self::new(ErrorCode::Conflict, r),
            CallError::NotAllowed(r) => Self::new(ErrorCode::NotAllowed, r),
            CallError::Invalid(r) => Self::new(ErrorCode::MalformedFrame, r),
            CallError::Missing(r) => Self::new(ErrorCode::MissingField, r),
            // Details of a broken plugin are logged by the runtime, never shown.
            CallError::Failed(_) => Self::new(
                ErrorCode::PluginFailed,
                "the action's plugin failed; nothing was applied",
            ),
        }
    }
}

impl From<ApplyError> for ActionError {
    fn from(e: ApplyError) -> Self {
        match e {
            ApplyError::Conflict(r) => Self::new(ErrorCode::Conflict, r),
            ApplyError::NotAllowed(r) => Self::new(ErrorCode::NotAllowed, r),
            ApplyError::Invalid(r) => {
                tracing::warn!(reason = r, "plugin returned an invalid state change");
                Self::new(
                    ErrorCode::PluginFailed,
                    "the action's plugin failed; nothing was applied",
                )
            }
            ApplyError::Store(s) => {
                tracing::error!(error = %s, "state store unavailable");
                Self::new(
                    ErrorCode::PluginFailed,
                    "state store unavailable; nothing was applied",
                )
            }
        }
    }
}

/// One async mutex per room with work in flight; entries are dropped when
/// no one holds or waits for them, so the map stays as small as the set of
/// busy rooms.
#[derive(Debug, Default)]
pub struct RoomLocks {
    /// channel -> its lock.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl RoomLocks {
    /// Holds the room's lock until the guard drops.
    pub async fn lock(&self, channel: &str) -> RoomGuard<'_> {
        let lock = {
            let mut map = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(map.entry(channel.to_string()).or_default())
        };
        let guard = Arc::clone(&lock).lock_owned().await;
        RoomGuard {
            locks: self,
            channel: channel.to_string(),
            lock,
            guard: Some(guard),
        }
    }
}

/// Releases a room lock and forgets it when it was the last user.
pub struct RoomGuard<'a> {
    locks: &'a RoomLocks,
    channel: String,
    lock: Arc<tokio::sync::Mutex<()>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for RoomGuard<'_> {
    fn drop(&mut self) {
        self.guard.take();
        let mut map = self.locks.locks.lock().unwrap_or_else(|p| p.into_inner());
        // Two references remain when nobody else holds or waits: the map's
        // and ours.
        if Arc::strong_count(&self.lock) == 2 {
            map.remove(&self.channel);
        }
    }
}

impl App {
    /// Runs `action` from `source`. `user_id` is the subject for client and
    /// system events.
    pub async fn run_action(
        &self,
        source: Source,
        user_id: Option<u64>,
        action: &str,
        payload: Map<String, Value>,
    ) -> Result<Outcome, ActionError> {
        let plugin = self.plugins.route(action, source).ok_or_else(|| {
            ActionError::new(ErrorCode::UnknownAction, format!("unknown action {action}"))
        })?;
        let channel = self.lock_key(user_id, &payload).await;
        let _room = match &channel {
            Some(c) => Some(self.room_locks.lock(c).await),
            None => None,
        };
        let event = Event {
            action: action.to_string(),
            source,
            user_id,
            payload,
        };
        let reply = self.plugins.call(&plugin, event).await?;
        self.store.apply(&reply.changes).await?;
        let mut msg_ids = Vec::with_capacity(reply.notifications.len());
        for notification in reply.notifications {
            let msg_id = self.ids.msg_id();
            if let Err(e) = self.delivery.deliver(notification, &msg_id).await {
                tracing::error!(error = %e, msg_id, "delivery failed after the state changed");
            }
            msg_ids.push(msg_id);
        }
        Ok(Outcome {
            msg_ids,
            result: reply.result,
        })
    }

    /// The room whose lock an event takes: the payload's channel, else the
    /// subject's current room.
    async fn lock_key(&self, user_id: Option<u64>, payload: &Map<String, Value>) -> Option<String> {
        match payload.get("channel_name").and_then(Value::as_str) {
            Some(c) if !c.is_empty() => Some(c.to_string()),
            _ => {
                let user = user_id?;
                self.store
                    .membership_of(user)
                    .await
                    .ok()
                    .flatten()
                    .map(|m| m.channel_name)
            }
        }
    }

    /// Raises a system event for every plugin that subscribes to it; one
    /// failing plugin does not keep the others from running.
    pub async fn raise(&self, event: &str, user_id: u64) {
        for plugin in self.plugins.subscribers(event) {
            let mut payload = Map::new();
            payload.insert("user_id".into(), Value::from(user_id));
            let channel = self.lock_key(Some(user_id), &payload).await;
            let _room = match &channel {
                Some(c) => Some(self.room_locks.lock(c).await),
                None => None,
            };
            let call = Event {
                action: event.to_string(),
                source: Source::System,
                user_id: Some(user_id),
                payload,
            };
            match self.plugins.call(&plugin, call).await {
                Ok(reply) => self.apply_system_reply(event, reply).await,
                Err(e) => {
                    tracing::warn!(event, user_id, error = ?e, "system event failed in a plugin")
                }
            }
        }
    }

    async fn apply_system_reply(&self, event: &str, reply: crate::plugin::Reply) {
        if let Err(e) = self.store.apply(&reply.changes).await {
            tracing::warn!(event, plugin = reply.plugin, error = %e, "system event changes refused");
            return;
        }
        for notification in reply.notifications {
            let msg_id = self.ids.msg_id();
            if let Err(e) = self.delivery.deliver(notification, &msg_id).await {
                tracing::error!(error = %e, msg_id, "delivery failed");
            }
        }
    }
}
