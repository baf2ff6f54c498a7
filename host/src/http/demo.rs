//! The demo room at `/demo/`: a page built on the JavaScript SDK
//! (`clients/js`) plus three dev-only helper routes. Mounted only with
//! `--dev` or `demo.enabled = true`, never by the production defaults,
//! because its routes hand out credentials to anyone who asks.
//!
//! The page's files are embedded from `clients/demo/`; the SDK is the
//! `tsc` output `host/build.rs` produced in `OUT_DIR` (an empty table when
//! Node was missing at build time; the page then says so).
//!
//! Helper routes, standing in for the app backend a real client would have:
//! - `POST /demo/api/credentials {"user_id":N}`: a session for that user,
//!   the same shape `chorus token` prints.
//! - `POST /demo/api/actions {"user_id":N,"sid":"…","action":…, …}`: runs
//!   one of the server-only actions a room screen needs (`enter_room`,
//!   `exit_room`, `up`, `down`, `room_notice`) as the server API would, for
//!   the sid's own user. Clients may not send these over the WebSocket (the
//!   bundled plugins accept them from the server only).
//! - `GET /demo/api/rooms/{channel_name}`: the room's members and seats.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Map, Value, json};

use super::HttpError;
use crate::app::App;
use crate::plugin::Source;
use chorus_protocol::codes::ErrorCode;

/// The SDK's compiled modules: `(file name, contents)`.
mod sdk {
    include!(concat!(env!("OUT_DIR"), "/demo_sdk.rs"));
}

/// The page's own files: `(file name, content type, contents)`.
const PAGE: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../../../clients/demo/index.html"),
    ),
    (
        "demo.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../clients/demo/demo.js"),
    ),
    (
        "demo.css",
        "text/css; charset=utf-8",
        include_str!("../../../clients/demo/demo.css"),
    ),
];

/// Actions the demo may run on a user's behalf: the server-only ones a
/// room screen needs (`send_gift` is one by default: `[actions.send_gift]`;
/// the demo plays the app backend that took the payment). Anything else
/// goes over the WebSocket.
const DEMO_ACTIONS: &[&str] = &[
    "enter_room",
    "exit_room",
    "up",
    "down",
    "room_notice",
    "send_gift",
];

/// Lifetime of minted demo credentials, seconds.
const DEMO_TTL_S: u64 = 86_400;

/// The demo's routes, or none when the demo is off.
pub fn routes(app: &App) -> Router<Arc<App>> {
    if !app.config.demo_enabled() {
        return Router::new();
    }
    tracing::info!(
        "demo room at http://{}/demo/ (dev only: it mints credentials for anyone)",
        app.config.server.listen
    );
    Router::new()
        .route("/demo", get(|| async { Redirect::permanent("/demo/") }))
        .route("/demo/", get(|| async { file("index.html") }))
        .route(
            "/demo/{file}",
            get(|Path(name): Path<String>| async move { file(&name) }),
        )
        .route("/demo/sdk/{file}", get(sdk_file))
        .route("/demo/api/credentials", post(credentials))
        .route("/demo/api/actions", post(actions))
        .route("/demo/api/rooms/{channel_name}", get(room))
}

/// One of the page's files.
fn file(name: &str) -> Response {
    match PAGE.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, body)) => asset(content_type, body),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// One of the SDK's modules.
async fn sdk_file(Path(name): Path<String>) -> Response {
    match sdk::SDK.iter().find(|(n, _)| *n == name) {
        Some((_, body)) => asset("text/javascript; charset=utf-8", body),
        None => (
            StatusCode::NOT_FOUND,
            "the SDK was not built: install Node 20+ and npm, then rebuild",
        )
            .into_response(),
    }
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

/// `POST /demo/api/credentials`.
async fn credentials(
    State(app): State<Arc<App>>,
    Json(body): Json<Value>,
) -> Result<Json<Value>, HttpError> {
    let user_id = body
        .get("user_id")
        .and_then(Value::as_u64)
        .filter(|id| *id > 0)
        .ok_or_else(|| {
            HttpError::new(
                ErrorCode::MalformedFrame,
                "user_id must be a positive integer",
            )
        })?;
    let token = crate::token::mint(app.config.app_secret(), user_id, DEMO_TTL_S)
        .map_err(|e| HttpError::new(ErrorCode::MalformedFrame, e.to_string()))?;
    Ok(Json(json!({
        "user_id": token.user_id, "sid": token.sid, "sign_key": token.sign_key, "expires_at": token.expires_at,
    })))
}

/// `POST /demo/api/actions`: a server-only action for the sid's user.
async fn actions(
    State(app): State<Arc<App>>,
    Json(body): Json<Value>,
) -> Result<Json<Value>, HttpError> {
    let Value::Object(mut payload) = body else {
        return Err(HttpError::new(
            ErrorCode::MalformedFrame,
            "the body must be a JSON object",
        ));
    };
    let user_id = authenticate(&app, &mut payload)?;
    let action = match payload.remove("action") {
        Some(Value::String(a)) if DEMO_ACTIONS.contains(&a.as_str()) => a,
        _ => {
            return Err(HttpError::new(
                ErrorCode::UnknownAction,
                format!(
                    "the demo runs only {DEMO_ACTIONS:?}; send other actions over the WebSocket"
                ),
            ));
        }
    };
    if action != "room_notice" {
        payload.insert("user_id".into(), user_id.into());
    }
    // A gift's sender is the sid's user, whatever the page said.
    if let Some(Value::Object(gift)) = payload.get_mut("gift") {
        gift.insert("sender_id".into(), user_id.into());
    }
    chorus_protocol::frame::check_field_types(&payload)
        .map_err(|e| HttpError::new(e.code, e.reason))?;
    let outcome = app
        .dispatch
        .run_action(Source::Server, None, &action, payload)
        .await?;
    Ok(Json(
        json!({"error_code": 0, "error_reason": "", "msg_ids": outcome.msg_ids, "result": outcome.result}),
    ))
}

/// Takes `user_id` and `sid` out of the body and checks the sid is that
/// user's: the demo acts only for the user whose credentials it minted.
fn authenticate(app: &App, payload: &mut Map<String, Value>) -> Result<u64, HttpError> {
    let user_id = payload
        .remove("user_id")
        .and_then(|v| v.as_u64())
        .ok_or_else(|| HttpError::new(ErrorCode::MissingField, "user_id is required"))?;
    let sid = match payload.remove("sid") {
        Some(Value::String(sid)) => sid,
        _ => return Err(HttpError::new(ErrorCode::MissingField, "sid is required")),
    };
    chorus_protocol::credentials::verify_sid(
        app.config.app_secret(),
        &sid,
        Some(user_id),
        crate::ids::unix_now(),
    )
    .map_err(|e| HttpError::new(ErrorCode::BadSignature, format!("bad sid: {e}")))?;
    Ok(user_id)
}

/// `GET /demo/api/rooms/{channel_name}`: members and seats; an empty room
/// (nobody in it) answers with no members rather than 404.
async fn room(
    State(app): State<Arc<App>>,
    Path(channel): Path<String>,
) -> Result<Json<Value>, HttpError> {
    let Some(room) = app.store.room(&channel).await? else {
        return Ok(Json(
            json!({"channel_name": channel, "members": [], "seats": []}),
        ));
    };
    Ok(Json(Value::Object(super::room_json(&channel, &room))))
}
