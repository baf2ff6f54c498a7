//! `/iapi`: what clients call over HTTP (PROTOCOL section 3).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use serde_json::{Value, json};

use super::{HttpError, signed_query};
use crate::app::App;

/// `GET /iapi/websocket/end_point`: where to connect.
pub async fn end_point(
    State(app): State<Arc<App>>,
    Query(params): Query<BTreeMap<String, String>>,
) -> Result<Json<Value>, HttpError> {
    signed_query::verify(&app, &params).await?;
    Ok(Json(json!({
        "error_code": 0,
        "error_reason": "",
        // With several nodes: the least-loaded live one.
        "end_point": app.cluster.as_ref().and_then(|c| c.least_loaded()).unwrap_or_else(|| app.config.public_url()),
        "ping_interval": crate::config::whole_seconds(app.config.heartbeat.ping_interval),
    })))
}

/// `GET /iapi/user/info`: whether the caller is online and in which room;
/// an empty `current_room_id` after a reconnect means the user was removed.
pub async fn user_info(
    State(app): State<Arc<App>>,
    Query(params): Query<BTreeMap<String, String>>,
) -> Result<Json<Value>, HttpError> {
    let verified = signed_query::verify(&app, &params).await?;
    let user_id = verified.who.user_id;
    let (room_id, channel) = super::room_of(&app, user_id).await?;
    Ok(Json(json!({
        "error_code": 0,
        "error_reason": "",
        "user_id": user_id,
        "online": app.is_online(user_id).await,
        "current_room_id": room_id,
        "channel_name": channel,
    })))
}
