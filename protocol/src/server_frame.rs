//! The frames the server sends that are not notifications and not errors
//! (errors are [`crate::frame::error_frame`]): `connected`, `pong`, `ack`
//! and `kicked`.
//!
//! One typed value per frame, so the server builds each the same way
//! everywhere and clients and tests read them back with the same type.
//! Serialized with `action` first, then the fields in the order below,
//! as PROTOCOL sections 4 and 5 show them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A frame from the server to a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ServerFrame {
    /// The first frame of a connection (PROTOCOL section 4).
    Connected {
        /// Random, at least 128 bits; this connection's frames carry it.
        online_token: String,
        /// Seconds between the client's pings, rounded up.
        ping_interval: u64,
        /// Seconds without a valid frame before close 4000, rounded up.
        ping_timeout: u64,
        /// The server's unix time in seconds.
        server_time: u64,
        /// The authenticated user.
        user_id: u64,
        /// The user's room id as a string, `""` when in none (a
        /// reconnection within `heartbeat.grace` resumes the room).
        current_room_id: String,
        /// The user's room channel, `""` when in none.
        channel_name: String,
    },
    /// The answer to `ping` (PROTOCOL section 4, seed section 3.1).
    Pong {
        /// The server's unix time in seconds.
        server_time: u64,
    },
    /// A client action that succeeded (our choice, README "Choices the
    /// contract leaves open").
    Ack {
        /// The action answered.
        ref_action: String,
        /// The ids of the notifications the action produced.
        msg_ids: Vec<String>,
        /// The plugin's result object.
        result: Value,
        /// The frame's `nonce`, echoed when it had one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nonce: Option<String>,
    },
    /// Sent just before a close 4009 (`reason` = `"replaced"`) or 4010
    /// (the app backend's reason, `"kicked"` by default).
    Kicked {
        /// Why.
        reason: String,
    },
}

impl ServerFrame {
    /// The frame's JSON text.
    pub fn encode(&self) -> String {
        // An enum of strings, integers and JSON values always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a frame's text; `None` for anything else (notifications,
    /// errors, malformed text).
    pub fn parse(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn frames_have_the_contract_shapes() {
        let connected = ServerFrame::Connected {
            online_token: "t".into(),
            ping_interval: 15,
            ping_timeout: 20,
            server_time: 1764134400,
            user_id: 1233,
            current_room_id: String::new(),
            channel_name: String::new(),
        };
        assert_eq!(
            connected.encode(),
            r#"{"action":"connected","online_token":"t","ping_interval":15,"ping_timeout":20,"server_time":1764134400,"user_id":1233,"current_room_id":"","channel_name":""}"#
        );
        assert_eq!(
            ServerFrame::Pong { server_time: 5 }.encode(),
            r#"{"action":"pong","server_time":5}"#
        );
        let ack = ServerFrame::Ack {
            ref_action: "up".into(),
            msg_ids: vec!["m1".into()],
            result: json!({}),
            nonce: None,
        };
        assert_eq!(
            ack.encode(),
            r#"{"action":"ack","ref_action":"up","msg_ids":["m1"],"result":{}}"#
        );
        let kicked = ServerFrame::Kicked {
            reason: "replaced".into(),
        };
        assert_eq!(
            kicked.encode(),
            r#"{"action":"kicked","reason":"replaced"}"#
        );
        assert_eq!(ServerFrame::parse(&kicked.encode()), Some(kicked));
        assert_eq!(ServerFrame::parse(r#"{"action":"send_gift"}"#), None);
    }
}
