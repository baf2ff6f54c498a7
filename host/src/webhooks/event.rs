//! The event model (README, "Webhooks"): what one event says, and how a
//! store's [`Fact`] becomes one.

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::store::{Cause, current_cause, with_cause};
use crate::store::{Fact, FactKind};

/// One event as the receiver gets it: an element of the JSON array a
/// request carries. Absent fields are left out of the JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique (128 random bits, 32 lowercase hex digits): a receiver
    /// deduplicates by it, since delivery is at least once.
    pub event_id: String,
    /// `session.connected`, `room.exited`, … or `plugin.<plugin>.<name>`.
    pub event: String,
    /// The node that recorded it (`server.node_id`).
    pub node: String,
    /// When it was recorded, unix ms.
    pub ts_ms: u64,
    /// The subject user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<u64>,
    /// The room concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_name: Option<String>,
    /// The room's sequence number: increasing within a room, so a
    /// receiver can order the room's events (present with `channel_name`
    /// on room, seat and call events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_seq: Option<u64>,
    /// The app backend's id of the room (`room.entered`, `room.occupied`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_id: Option<u64>,
    /// The seat (`seat.taken`, `seat.freed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seat_id: Option<u32>,
    /// The callee (`call.started`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiver_id: Option<u64>,
    /// The other user of the call (`call.ended`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_id: Option<u64>,
    /// Why: `session.disconnected` (`heartbeat_timeout`,
    /// `connection_closed`, `kicked`); `room.exited`, `seat.freed` and
    /// `call.ended` (`action`, `disconnect`, `kick`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A plugin event's body (`plugin.<plugin>.<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl Event {
    /// A new event named `event`, recorded now by `node`, with a fresh id.
    pub fn new(event: &str, node: &str) -> Self {
        Self {
            event_id: format!("{:032x}", rand::random::<u128>()),
            event: event.to_string(),
            node: node.to_string(),
            ts_ms: crate::store::unix_ms(),
            user_id: None,
            channel_name: None,
            room_seq: None,
            room_id: None,
            seat_id: None,
            receiver_id: None,
            peer_id: None,
            reason: None,
            data: None,
        }
    }

    /// The event of a store fact, with `cause` as the reason of exits,
    /// freed seats and ended calls.
    pub fn of_fact(fact: &Fact, cause: Cause, node: &str) -> Self {
        let name = match fact.kind {
            FactKind::Entered => ROOM_ENTERED,
            FactKind::Exited => ROOM_EXITED,
            FactKind::SeatTaken => SEAT_TAKEN,
            FactKind::SeatFreed => SEAT_FREED,
            FactKind::CallStarted => CALL_STARTED,
            FactKind::CallEnded => CALL_ENDED,
            FactKind::Occupied => ROOM_OCCUPIED,
            FactKind::Vacated => ROOM_VACATED,
        };
        let mut event = Event::new(name, node);
        event.user_id = fact.user_id;
        event.channel_name = Some(fact.channel_name.clone());
        event.room_seq = Some(fact.room_seq);
        event.room_id = fact.room_id;
        event.seat_id = fact.seat_id;
        match fact.kind {
            FactKind::CallStarted => event.receiver_id = fact.peer_id,
            FactKind::CallEnded => event.peer_id = fact.peer_id,
            _ => {}
        }
        if matches!(
            fact.kind,
            FactKind::Exited | FactKind::SeatFreed | FactKind::CallEnded
        ) {
            event.reason = Some(cause.as_str().to_string());
        }
        event
    }
}

/// `session.connected`: a session of the user opened on `node`.
pub const SESSION_CONNECTED: &str = "session.connected";
/// `session.disconnected`: the user is gone (after `heartbeat.grace`); a
/// replaced session is not one.
pub const SESSION_DISCONNECTED: &str = "session.disconnected";
/// `room.entered`.
pub const ROOM_ENTERED: &str = "room.entered";
/// `room.exited`.
pub const ROOM_EXITED: &str = "room.exited";
/// `room.occupied`: the first member entered an empty room.
pub const ROOM_OCCUPIED: &str = "room.occupied";
/// `room.vacated`: the room stayed empty `events.vacated_delay`.
pub const ROOM_VACATED: &str = "room.vacated";
/// `seat.taken`.
pub const SEAT_TAKEN: &str = "seat.taken";
/// `seat.freed`.
pub const SEAT_FREED: &str = "seat.freed";
/// `call.started`.
pub const CALL_STARTED: &str = "call.started";
/// `call.ended`.
pub const CALL_ENDED: &str = "call.ended";

/// Why a user's session ended, as `session.disconnected` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The server heard nothing within `heartbeat.ping_timeout` (4000):
    /// `"heartbeat_timeout"`.
    HeartbeatTimeout,
    /// The client closed or the connection dropped, or the server closed
    /// it for another reason, or its node died: `"connection_closed"`.
    ConnectionClosed,
    /// Kicked (4010): `"kicked"`.
    Kicked,
    /// The user's node shut down (SIGTERM) on a single node, whose room
    /// state ends with it: `"server_shutdown"`.
    ServerShutdown,
    /// The user's single node ended without a graceful stop (a crash, a
    /// kill -9); reported at its next start: `"server_lost"`.
    ServerLost,
}

impl DisconnectReason {
    /// The `reason` value.
    pub fn as_str(self) -> &'static str {
        match self {
            DisconnectReason::HeartbeatTimeout => "heartbeat_timeout",
            DisconnectReason::ConnectionClosed => "connection_closed",
            DisconnectReason::Kicked => "kicked",
            DisconnectReason::ServerShutdown => "server_shutdown",
            DisconnectReason::ServerLost => "server_lost",
        }
    }
}

#[cfg(test)]
mod names_tests {
    use super::*;

    /// The configuration checks `[[webhooks]] events` against its own
    /// list (it sits below this module): the two must name the same events.
    #[test]
    fn the_configuration_knows_every_event() {
        let here = [
            SESSION_CONNECTED,
            SESSION_DISCONNECTED,
            ROOM_ENTERED,
            ROOM_EXITED,
            ROOM_OCCUPIED,
            ROOM_VACATED,
            SEAT_TAKEN,
            SEAT_FREED,
            CALL_STARTED,
            CALL_ENDED,
        ];
        assert_eq!(here, crate::config::WEBHOOK_EVENTS);
    }
}
