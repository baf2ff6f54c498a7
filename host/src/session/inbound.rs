//! Checks of client frames, in the order PROTOCOL section 4 fixes: JSON
//! and field types, required fields, online_token, sid, freshness,
//! signature, replay. Then the frame is answered: `ping`, a relay report,
//! or an action routed to its plugin.

use std::collections::VecDeque;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use futures_util::SinkExt;
use futures_util::stream::SplitSink;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::Identity;
use crate::app::App;
use crate::plugin::Source;
use crate::registry::SessionHandle;
use crate::replay::ReplayWindow;
use chorus_protocol::codes::{ErrorCode, close};
use chorus_protocol::frame::{ClientFrame, error_frame};

/// Bad frames (1xxx errors) tolerated within [`BAD_FRAME_WINDOW`]; the
/// next one closes with 4008.
const BAD_FRAME_LIMIT: usize = 20;
/// The window of [`BAD_FRAME_LIMIT`].
const BAD_FRAME_WINDOW: Duration = Duration::from_secs(10);

/// What the session loop does after a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A valid frame: renew the heartbeat deadline.
    Renew,
    /// Not valid (or a control frame): keep the deadline.
    Keep,
    /// Close with this code and reason.
    Close(u16, &'static str),
    /// The connection is gone.
    Gone,
}

/// Per-session inbound state.
pub struct Inbound {
    /// Who the session is.
    who: Identity,
    /// Signatures accepted within the skew window.
    replay: ReplayWindow,
    /// When recent 1xxx errors happened, oldest first.
    bad_frames: VecDeque<Instant>,
}

impl Inbound {
    /// Fresh state for a session.
    pub fn new(who: Identity) -> Self {
        Self {
            who,
            replay: ReplayWindow::default(),
            bad_frames: VecDeque::new(),
        }
    }

    /// Handles a text frame; returns the verdict and an immediate reply.
    pub async fn on_text(
        &mut self,
        app: &App,
        handle: &SessionHandle,
        text: &str,
    ) -> (Verdict, Option<String>) {
        let frame = match self.check(app, handle, text) {
            Ok(frame) => frame,
            Err((code, reason, ref_action)) => return self.refuse(code, &reason, &ref_action),
        };
        metrics::counter!("chorus_frames_in_total", "action" => frame_action_label(&frame.action))
            .increment(1);
        let reply = answer(app, handle, frame).await;
        (Verdict::Renew, reply)
    }

    /// A binary frame: error 1001, counted as a bad frame.
    pub async fn on_binary(&mut self, sink: &mut SplitSink<WebSocket, Message>) -> Verdict {
        let (verdict, reply) = self.refuse(
            ErrorCode::MalformedFrame,
            "binary frames are not accepted; send JSON text",
            "",
        );
        if let Some(reply) = reply
            && sink.send(Message::Text(reply.into())).await.is_err()
        {
            return Verdict::Gone;
        }
        verdict
    }

    fn check(
        &mut self,
        app: &App,
        handle: &SessionHandle,
        text: &str,
    ) -> Result<ClientFrame, (ErrorCode, String, String)> {
        let frame = ClientFrame::parse(text).map_err(|e| (e.code, e.reason, action_of(text)))?;
        let fail = |code, reason: &str| (code, reason.to_string(), frame.action.clone());
        if !chorus_protocol::signing::tokens_match(&frame.online_token, &handle.online_token) {
            return Err(fail(
                ErrorCode::BadOnlineToken,
                "online_token does not match this connection",
            ));
        }
        if frame.sid != self.who.sid {
            return Err(fail(ErrorCode::BadSignature, "sid is not this session's"));
        }
        let now = crate::ids::unix_now();
        if frame.timestamp.abs_diff(now as i64) > app.max_skew() {
            return Err(fail(
                ErrorCode::StaleTimestamp,
                "timestamp outside the accepted skew",
            ));
        }
        if !frame.verify_sign(&self.who.sign_key) {
            return Err(fail(ErrorCode::BadSignature, "bad signature"));
        }
        if !self.replay.first_use(&frame.sign, now, app.max_skew()) {
            return Err(fail(ErrorCode::Replayed, "replayed frame"));
        }
        Ok(frame)
    }

    /// An error frame; the 20th 1xxx error within 10 s closes with 4008.
    fn refuse(
        &mut self,
        code: ErrorCode,
        reason: &str,
        ref_action: &str,
    ) -> (Verdict, Option<String>) {
        metrics::counter!("chorus_client_errors_total", "code" => code.code().to_string())
            .increment(1);
        let frame = error_frame(code, reason, ref_action);
        if code.code() >= 2000 {
            return (Verdict::Keep, Some(frame));
        }
        let now = Instant::now();
        while self
            .bad_frames
            .front()
            .is_some_and(|t| now.duration_since(*t) >= BAD_FRAME_WINDOW)
        {
            self.bad_frames.pop_front();
        }
        self.bad_frames.push_back(now);
        if self.bad_frames.len() >= BAD_FRAME_LIMIT {
            return (
                Verdict::Close(close::TOO_MANY_BAD_FRAMES, "too many bad frames"),
                Some(frame),
            );
        }
        (Verdict::Keep, Some(frame))
    }
}

/// The `action` of a frame that failed to parse, for `ref_action` (this
/// second parse happens only on the error path).
fn action_of(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v.get("action").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_default()
}

/// Label for the frames-in metric: known actions by name, anything else
/// folded so a client cannot create unbounded label values.
fn frame_action_label(action: &str) -> String {
    if action.len() <= 32 && action.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        action.to_string()
    } else {
        "other".to_string()
    }
}

/// Answers a checked frame.
async fn answer(app: &App, handle: &SessionHandle, frame: ClientFrame) -> Option<String> {
    if frame.action == "ping" {
        return Some(json!({"action": "pong", "server_time": crate::ids::unix_now()}).to_string());
    }
    if crate::delivery::relay::reported_action(&frame.action).is_some() {
        return report(app, handle, &frame);
    }
    let nonce = frame.nonce.clone();
    let action = frame.action.clone();
    let outcome = app
        .run_action(
            Source::Client,
            Some(handle.user_id),
            &action,
            frame.payload(),
        )
        .await;
    Some(match outcome {
        Ok(o) => {
            let mut ack = json!({"action": "ack", "ref_action": action, "msg_ids": o.msg_ids, "result": o.result});
            if let Some(nonce) = nonce {
                ack["nonce"] = Value::String(nonce);
            }
            ack.to_string()
        }
        Err(e) => error_frame(e.code, &e.reason, &action),
    })
}

/// A relay report; answered only when it is malformed.
fn report(app: &App, handle: &SessionHandle, frame: &ClientFrame) -> Option<String> {
    let Some(user_id) = frame.raw().get("user_id").and_then(Value::as_u64) else {
        return Some(error_frame(
            ErrorCode::MissingField,
            "user_id is required in a report",
            &frame.action,
        ));
    };
    let msg_id = frame.raw().get("msg_id").and_then(Value::as_str);
    app.delivery
        .relay
        .report(handle.user_id, &frame.action, user_id, msg_id);
    None
}

/// A transport error from the socket: too large (1009), bad UTF-8 (1007),
/// or the connection is gone.
pub fn transport_error(e: &axum::Error) -> Verdict {
    let text = e.to_string();
    if text.contains("Space limit exceeded")
        || text.contains("too long")
        || text.contains("Message too big")
    {
        Verdict::Close(close::FRAME_TOO_LARGE, "frame too large")
    } else if text.contains("UTF-8") || text.contains("utf-8") || text.contains("Utf8") {
        Verdict::Close(1007, "invalid UTF-8")
    } else {
        tracing::debug!(error = %e, "socket error");
        Verdict::Gone
    }
}
