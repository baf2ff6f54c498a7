//! The WebSocket upgrade: credentials are checked before the upgrade, so a
//! bad one gets HTTP 401 and a JSON body, never a socket.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Extension;
use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::{HttpError, signed_query};
use crate::admission::Refusal;
use crate::app::{App, SingleUse};
use chorus_protocol::codes::ErrorCode;

/// `GET /` with the signed public parameters, and optionally the
/// `resume_*` ones of a reconnecting client (issue 17; a malformed one is
/// 400 with 1001 before the upgrade).
///
/// The connection caps are checked first (a full node spends no signature
/// check): over `limits.max_connections` or `limits.max_connections_per_ip`
/// the answer is HTTP 503 with `{"error_code":1008,"error_reason":…}`.
pub async fn upgrade(
    State(app): State<Arc<App>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    Query(params): Query<BTreeMap<String, String>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let ticket = match app
        .admission
        .admit(peer.map(|Extension(ConnectInfo(a))| a.ip()))
    {
        Ok(ticket) => ticket,
        Err(refusal) => return full(refusal).into_response(),
    };
    let verified = match signed_query::verify(&app, &params).await {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let resume = match crate::session::resume::Resume::from_query(&params) {
        Ok(r) => r,
        Err(reason) => return HttpError::new(ErrorCode::MalformedFrame, reason).into_response(),
    };
    if app.shutdown.is_cancelled() {
        return HttpError::shutting_down().into_response();
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    let fresh = app
        .first_use(SingleUse::ConnectQuery, &verified.sign, verified.timestamp)
        .await;
    match fresh {
        Ok(true) => {}
        Ok(false) => return replayed().into_response(),
        // Without Redis a node keeps accepting connections (ARCHITECTURE:
        // it keeps its sockets and refuses only state changes); the query
        // is then single-use on this node only, as SECURITY.md says.
        Err(e) => {
            metrics::counter!("chorus_single_use_unchecked_total").increment(1);
            tracing::warn!(error = %e, "upgrade query checked on this node only: Redis unavailable");
        }
    }
    let limits = &app.config.limits;
    let app2 = Arc::clone(&app);
    let ws = ws
        .read_buffer_size(limits.read_buffer_bytes)
        // Frames are buffered up to 4 KiB and written at each flush, so a
        // burst queued for one client leaves in one write, not one per frame.
        .write_buffer_size(4096)
        .max_message_size(limits.max_frame_bytes)
        .max_frame_size(limits.max_frame_bytes);
    // Dev only (refused outside --dev): the same socket, echoed, for Autobahn.
    if app.config.dev.ws_echo {
        let (tracker, shutdown) = (app.tracker.clone(), app.shutdown.clone());
        return ws.on_upgrade(move |s| {
            tracker.track_future(async move {
                let _ticket = ticket;
                super::conformance::echo(s, shutdown).await
            })
        });
    }
    // What the session starts from, in one box: axum keeps the callback
    // in the connection's task for the task's whole life, so its captures
    // cost every connection their size even after the session took them.
    let start = Box::new((app2, verified.who, resume, ticket));
    ws.on_upgrade(move |socket| {
        let (app, who, resume, ticket) = *start;
        let tracker = app.tracker.clone();
        // The place (`ticket`) is held until the session ends. The future is
        // tracked as it is, not wrapped in another `async` block, which
        // would keep a second copy of its arguments in every session's task.
        tracker.track_future(crate::session::run(app, socket, who, resume, ticket))
    })
}

/// The answer over a connection cap: 503 with 1008, counted by the cap.
fn full(refusal: Refusal) -> HttpError {
    metrics::counter!("chorus_connections_refused_total", "cap" => refusal.label()).increment(1);
    let reason = match refusal {
        Refusal::NodeFull => "this server holds as many connections as it may; retry later",
        Refusal::AddressFull => "too many connections from this address; retry later",
    };
    HttpError::new(ErrorCode::RateLimited, reason).with_status(StatusCode::SERVICE_UNAVAILABLE)
}

/// The answer to a reused query: the query that opens a WebSocket is
/// single-use, on every node, until its timestamp is stale.
fn replayed() -> HttpError {
    HttpError::new(
        ErrorCode::Replayed,
        "this query was already used to connect; sign a new one",
    )
}
