//! HTTP surfaces: the client-facing router (WebSocket upgrade, `/iapi`,
//! `/api/v1`) and the operators' admin router, each on its own listener.

mod admin;
mod api;
mod attributes;
mod conformance;
mod demo;
mod iapi;
mod profiles;
mod signed_query;
mod ws;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Map, Value, json};

use crate::app::App;
use crate::dispatch::ActionError;
use crate::store::{RoomView, StoreError};
use chorus_protocol::codes::ErrorCode;

/// The client-facing router.
pub fn public_router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(ws::upgrade))
        .route("/iapi/websocket/end_point", get(iapi::end_point))
        .route("/iapi/user/info", get(iapi::user_info))
        .route("/api/v1/actions", post(api::actions))
        .route("/api/v1/sessions", post(api::sessions))
        .route("/api/v1/profiles", post(profiles::update))
        .route("/api/v1/users/{user_id}", get(api::user))
        .route("/api/v1/users/{user_id}/kick", post(api::kick))
        .route("/api/v1/rooms/{channel_name}", get(api::room))
        .route(
            "/api/v1/rooms/{channel_name}/attributes",
            get(attributes::get).post(attributes::post),
        )
        .merge(demo::routes(&app))
        .route_layer(axum::middleware::from_fn(count_requests))
        .with_state(app)
}

/// Counts requests by route template and status (the template, not the
/// raw path, so user ids and channel names do not become label values).
async fn count_requests(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("chorus_http_requests_total", "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("chorus_http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// The admin router.
pub fn admin_router(app: Arc<App>) -> Router {
    admin::router(app)
}

/// An error answered as `{"error_code":N,"error_reason":"…"}` with the
/// HTTP status the contract gives the code.
#[derive(Debug, Clone)]
pub struct HttpError {
    /// The protocol code.
    pub code: ErrorCode,
    /// Shown to the caller.
    pub reason: String,
    /// A status other than the code's usual one (a room nobody is in is
    /// 404 with 2004, where 2004 is otherwise 403).
    pub status: Option<StatusCode>,
}

impl HttpError {
    /// An error with a code and reason.
    pub fn new(code: ErrorCode, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
            status: None,
        }
    }

    /// The same error answered with `status`.
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = Some(status);
        self
    }
}

impl From<ActionError> for HttpError {
    fn from(e: ActionError) -> Self {
        Self::new(e.code, e.reason)
    }
}

impl From<StoreError> for HttpError {
    /// 2002 and 503 with a generic reason, as an action gets (see
    /// [`ActionError`]'s conversion); the cause is logged, never shown.
    fn from(e: StoreError) -> Self {
        ActionError::from(e).into()
    }
}

impl From<crate::app::users::RevokeError> for HttpError {
    /// A store error as [`StoreError`]'s conversion; a disk error 2002 and
    /// 503 with a generic reason (the cause is logged, never shown).
    fn from(e: crate::app::users::RevokeError) -> Self {
        match e {
            crate::app::users::RevokeError::Store(e) => e.into(),
            _ => Self::new(
                ErrorCode::PluginFailed,
                "the revocation could not be recorded; nothing was applied",
            ),
        }
    }
}

impl HttpError {
    /// The server is shutting down: 503 with 2002 (PROTOCOL section 4:
    /// nothing was applied), reason `server shutting down`.
    pub fn shutting_down() -> Self {
        Self::new(ErrorCode::PluginFailed, "server shutting down")
    }
}

/// A room as `GET /api/v1/rooms/{channel_name}` shows it (PROTOCOL
/// section 8): `channel_name`, `room_id`, `members` in join order, and
/// every seat in id order as `{"id","user_id" or null,"status",
/// "microphone","rank"}`.
pub(crate) fn room_json(channel: &str, room: &RoomView) -> Map<String, Value> {
    let seats: Vec<Value> = room
        .seats
        .iter()
        .map(|s| {
            json!({
                "id": s.id, "user_id": s.user_id, "status": s.status,
                "microphone": s.microphone, "rank": s.id,
            })
        })
        .collect();
    let mut body = Map::new();
    body.insert("channel_name".into(), json!(channel));
    body.insert("room_id".into(), json!(room.room_id));
    body.insert("members".into(), json!(room.members));
    body.insert("seats".into(), Value::Array(seats));
    body
}

/// The user's room as (`current_room_id`, `channel_name`), empty strings
/// when in none.
pub(crate) async fn room_of(app: &App, user_id: u64) -> Result<(String, String), HttpError> {
    let membership = app.store.membership_of(user_id).await?;
    Ok(membership
        .map(|m| (m.room_id.to_string(), m.channel_name))
        .unwrap_or_default())
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = self.status.unwrap_or_else(|| {
            StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::BAD_REQUEST)
        });
        metrics::counter!("chorus_http_errors_total", "code" => self.code.code().to_string())
            .increment(1);
        (
            status,
            Json(json!({"error_code": self.code.code(), "error_reason": self.reason})),
        )
            .into_response()
    }
}
