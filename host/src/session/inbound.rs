//! Checks of client frames, in the order PROTOCOL section 4 fixes: JSON
//! and field types, required fields, online_token, sid, freshness,
//! signature, replay. Then the frame is answered: `ping`, a relay report,
//! or an action routed to its plugin.
//!
//! One error path: every error a client frame earns, whether the frame
//! checks, dispatch (1007) or the action's plugin found it, becomes a
//! [`Refusal`] and goes through [`Inbound::refuse`], which counts it in
//! `chorus_client_errors_total{code}` and, for the 1xxx range, toward the
//! 4008 limit; a 1xxx error never renews the heartbeat.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;
use tracing::Instrument;

use crate::app::App;
use crate::cluster::RelayReport;
use crate::connections::SessionHandle;
use crate::plugin::Source;
use crate::replay::{ReplayError, ReplayWindow};
use chorus_protocol::codes::{ErrorCode, close};
use chorus_protocol::frame::{ClientFrame, error_frame};
use chorus_protocol::{CloseCode, Disconnect, ServerFrame};

/// The window of [`close::BAD_FRAME_LIMIT`].
const BAD_FRAME_WINDOW: Duration = Duration::from_secs(close::BAD_FRAME_WINDOW_SECS);

/// Most frame signatures one session remembers at once (each until its
/// own `timestamp + max_skew`): about 8.5 frames a second sustained over
/// the default 120 s skew. A frame past it is refused with 1008, which
/// counts toward 4008, so a client that floods past the cap is closed with
/// 4008 within 20 frames and its memory stays bounded.
pub const MAX_REPLAY_ENTRIES: usize = 1024;

/// What the session loop does after a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A valid frame: renew the heartbeat deadline.
    Renew,
    /// Not valid (or a control frame): keep the deadline.
    Keep,
    /// Close the connection so.
    Close(Disconnect),
    /// The connection is gone.
    Gone,
}

/// An error a client frame earned, on its way to an `error` frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The code (PROTOCOL section 4).
    pub code: ErrorCode,
    /// Shown to the client.
    pub reason: String,
    /// The frame's action, `""` when unreadable.
    pub ref_action: String,
}

impl Refusal {
    fn new(code: ErrorCode, reason: impl Into<String>, ref_action: &str) -> Self {
        Self {
            code,
            reason: reason.into(),
            ref_action: ref_action.to_string(),
        }
    }
}

/// Per-session inbound state.
pub struct Inbound {
    /// The session's sign_key (the sid it is checked against is the
    /// handle's, kept once per session).
    sign_key: String,
    /// Signatures accepted within the skew window.
    replay: ReplayWindow,
    /// When recent 1xxx errors happened, oldest first.
    bad_frames: VecDeque<Instant>,
}

impl Inbound {
    /// Fresh state for a session whose frames are signed with `sign_key`.
    pub fn new(sign_key: String) -> Self {
        Self {
            sign_key,
            replay: ReplayWindow::with_cap(MAX_REPLAY_ENTRIES),
            bad_frames: VecDeque::new(),
        }
    }

    /// Handles a text frame; returns the verdict and an immediate reply.
    pub async fn on_text(
        &mut self,
        app: &Arc<App>,
        handle: &SessionHandle,
        text: &str,
    ) -> (Verdict, Option<String>) {
        let answered = match self.check(app, handle, text) {
            Ok(frame) => {
                metrics::counter!("chorus_frames_in_total", "action" => frame_action_label(app, &frame.action))
                    .increment(1);
                answer(app, handle, frame).await
            }
            Err(refusal) => Err(refusal),
        };
        match answered {
            Ok(reply) => (Verdict::Renew, reply),
            Err(refusal) => self.refuse(refusal),
        }
    }

    /// A binary frame: error 1001 (PROTOCOL section 4).
    pub fn on_binary(&mut self) -> (Verdict, Option<String>) {
        self.refuse(Refusal::new(
            ErrorCode::MalformedFrame,
            "binary frames are not accepted; send JSON text",
            "",
        ))
    }

    fn check(
        &mut self,
        app: &App,
        handle: &SessionHandle,
        text: &str,
    ) -> Result<ClientFrame, Refusal> {
        let frame = ClientFrame::parse(text)
            .map_err(|e| Refusal::new(e.code, e.reason, &action_of(text)))?;
        let fail = |code, reason: &str| Refusal::new(code, reason, &frame.action);
        if !chorus_protocol::signing::tokens_match(
            &frame.online_token,
            handle.online_token.as_str(),
        ) {
            return Err(fail(
                ErrorCode::BadOnlineToken,
                "online_token does not match this connection",
            ));
        }
        if frame.sid != handle.sid {
            return Err(fail(ErrorCode::BadSignature, "sid is not this session's"));
        }
        let now = crate::ids::unix_now();
        if !chorus_protocol::is_fresh(frame.timestamp, now, app.max_skew()) {
            return Err(fail(
                ErrorCode::StaleTimestamp,
                "timestamp outside the accepted skew",
            ));
        }
        if !frame.verify_sign(&self.sign_key) {
            return Err(fail(ErrorCode::BadSignature, "bad signature"));
        }
        match self
            .replay
            .check(&frame.sign, frame.timestamp, now, app.max_skew())
        {
            Ok(()) => {}
            Err(ReplayError::Replayed) => return Err(fail(ErrorCode::Replayed, "replayed frame")),
            Err(ReplayError::Full) => {
                return Err(fail(
                    ErrorCode::RateLimited,
                    "too many frames within the skew window",
                ));
            }
        }
        Ok(frame)
    }

    /// The one way an error frame is made. A 1xxx error does not renew the
    /// heartbeat and counts toward 4008 (the 20th within 10 s closes); a
    /// 2xxx error answers a valid frame, which renews it (PROTOCOL
    /// section 5: each valid client frame renews the session).
    fn refuse(&mut self, refusal: Refusal) -> (Verdict, Option<String>) {
        let Refusal {
            code,
            reason,
            ref_action,
        } = refusal;
        metrics::counter!("chorus_client_errors_total", "code" => code.code().to_string())
            .increment(1);
        let frame = error_frame(code, &reason, &ref_action);
        if !code.is_protocol_error() {
            return (Verdict::Renew, Some(frame));
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
        if self.bad_frames.len() >= close::BAD_FRAME_LIMIT as usize {
            let how = Disconnect::new(CloseCode::TooManyBadFrames);
            return (Verdict::Close(how), Some(frame));
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

/// Label for the frames-in metric, from a bounded set: `ping`, the report
/// actions and the actions a loaded plugin serves to clients by name;
/// anything else `other`, decided before routing, so a client cannot
/// create label values.
fn frame_action_label(app: &App, action: &str) -> String {
    // A report names an action of its own choosing (`<anything>_report`):
    // it is a label only when a loaded plugin serves the reported action.
    let known = action == "ping"
        || crate::delivery::relay::reported_action(action)
            .is_some_and(|reported| app.plugins.handles(reported))
        || app.plugins.route(action, Source::Client).is_some();
    if known {
        action.to_string()
    } else {
        "other".to_string()
    }
}

/// Answers a checked frame: the reply to send (none for a report), or the
/// error it earned.
async fn answer(
    app: &Arc<App>,
    handle: &SessionHandle,
    frame: ClientFrame,
) -> Result<Option<String>, Refusal> {
    if frame.action == "ping" {
        let pong = ServerFrame::Pong {
            server_time: crate::ids::unix_now(),
        };
        return Ok(Some(pong.encode()));
    }
    if crate::delivery::relay::reported_action(&frame.action).is_some() {
        return report(app, handle, &frame).map(|()| None);
    }
    let nonce = frame.nonce.clone();
    let action = frame.action.clone();
    // The session's span, around the action only: a span held for the
    // session's whole life would cost every idle connection about 400
    // bytes in the subscriber's registry (issue 20 item 2).
    let span = tracing::info_span!(
        "chorus.session",
        user_id = handle.user_id,
        conn_id = handle.conn_id
    );
    let outcome = app
        .dispatch
        .run_action(
            Source::Client,
            Some(handle.user_id),
            &action,
            frame.payload(),
        )
        .instrument(span)
        .await
        .map_err(|e| Refusal::new(e.code, e.reason, &action))?;
    // A call a client starts rings for `calls.ring_timeout` at most.
    app.ring(&outcome.calls_started, &outcome.result);
    let ack = ServerFrame::Ack {
        ref_action: action,
        msg_ids: outcome.msg_ids,
        result: outcome.result,
        nonce,
    };
    Ok(Some(ack.encode()))
}

/// A relay report (PROTOCOL section 6); answered only when malformed.
fn report(app: &App, handle: &SessionHandle, frame: &ClientFrame) -> Result<(), Refusal> {
    let Some(user) = frame.raw().get("user_id").and_then(Value::as_u64) else {
        return Err(Refusal::new(
            ErrorCode::MissingField,
            "user_id is required in a report",
            &frame.action,
        ));
    };
    let report = RelayReport {
        reporter: handle.user_id,
        report: frame.action.clone(),
        user,
        msg_id: frame
            .raw()
            .get("msg_id")
            .and_then(Value::as_str)
            .map(str::to_string),
    };
    app.delivery.relay.report(&report);
    Ok(())
}

/// A transport error from the socket, classified by its type: a message
/// over `limits.max_frame_bytes` closes with 1009, a text frame that is not
/// UTF-8 with 1007; anything else means the connection is gone.
pub fn transport_error(e: axum::Error) -> Verdict {
    let inner = e.into_inner();
    let how = match inner.downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(_)) => Some(CloseCode::FrameTooLarge),
        Some(tungstenite::Error::Utf8(_)) => Some(CloseCode::InvalidPayload),
        _ if inner.is::<std::str::Utf8Error>() => Some(CloseCode::InvalidPayload),
        _ => None,
    };
    match how {
        Some(code) => Verdict::Close(Disconnect::new(code)),
        None => {
            tracing::debug!(error = %inner, "socket error");
            Verdict::Gone
        }
    }
}
