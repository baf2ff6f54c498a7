//! `/api/v1`: the server API for the app backend (PROTOCOL section 8),
//! authenticated by an HMAC of timestamp, nonce, method, target and body.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, Uri};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{HttpError, room_json, room_of};
use crate::app::{App, SingleUse};
use crate::plugin::Source;
use chorus_protocol::codes::ErrorCode;
use chorus_protocol::server_api;

/// Largest server-API body accepted.
const MAX_BODY: usize = 1 << 20;

/// The body of a server-API request whose `X-Chorus-*` headers checked
/// out. As an extractor it must come last in a handler's arguments.
pub struct Signed(pub Bytes);

impl axum::extract::FromRequest<Arc<App>> for Signed {
    type Rejection = HttpError;

    async fn from_request(
        request: axum::extract::Request,
        app: &Arc<App>,
    ) -> Result<Self, HttpError> {
        let (parts, body) = request.into_parts();
        // The headers are checked (present, well-formed, fresh) before a
        // byte of the body is read, so an unauthenticated caller cannot
        // make the server buffer up to MAX_BODY.
        let headers = ApiHeaders::check(app, &parts.headers)?;
        let body = axum::body::to_bytes(body, MAX_BODY).await.map_err(|e| {
            HttpError::new(ErrorCode::MalformedFrame, format!("unreadable body: {e}"))
        })?;
        headers
            .authenticate(app, &parts.method, &parts.uri, &body)
            .await?;
        Ok(Signed(body))
    }
}

/// The three `X-Chorus-*` headers, present, well-formed and fresh.
struct ApiHeaders {
    /// `X-Chorus-Timestamp` as sent (it is signed as text).
    timestamp: String,
    /// The same, parsed (unix seconds).
    ts: i64,
    /// `X-Chorus-Nonce`.
    nonce: String,
    /// `X-Chorus-Signature`.
    signature: String,
}

impl ApiHeaders {
    /// Checks presence and form (1003) and freshness (1004).
    fn check(app: &App, headers: &HeaderMap) -> Result<Self, HttpError> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let bad = |reason: &str| HttpError::new(ErrorCode::BadSignature, reason);
        let timestamp = header(server_api::TIMESTAMP_HEADER)
            .ok_or_else(|| bad("missing X-Chorus-Timestamp"))?;
        let nonce =
            header(server_api::NONCE_HEADER).ok_or_else(|| bad("missing X-Chorus-Nonce"))?;
        let signature = header(server_api::SIGNATURE_HEADER)
            .ok_or_else(|| bad("missing X-Chorus-Signature"))?;
        let ts: i64 = timestamp
            .parse()
            .map_err(|_| bad("malformed X-Chorus-Timestamp"))?;
        if !server_api::valid_api_nonce(nonce) {
            return Err(bad("malformed X-Chorus-Nonce"));
        }
        if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("malformed X-Chorus-Signature"));
        }
        if !chorus_protocol::is_fresh(ts, crate::ids::unix_now(), app.max_skew()) {
            return Err(HttpError::new(
                ErrorCode::StaleTimestamp,
                "timestamp outside the accepted skew",
            ));
        }
        Ok(Self {
            timestamp: timestamp.to_string(),
            ts,
            nonce: nonce.to_string(),
            signature: signature.to_string(),
        })
    }

    /// Checks the signature over the request (1003), then that the nonce
    /// is new (1005; on every node with several).
    async fn authenticate(
        &self,
        app: &App,
        method: &Method,
        uri: &Uri,
        body: &[u8],
    ) -> Result<(), HttpError> {
        let target = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        if !server_api::verify_api_signature(
            app.config.app_secret(),
            &self.timestamp,
            &self.nonce,
            method.as_str(),
            target,
            body,
            &self.signature,
        ) {
            return Err(HttpError::new(ErrorCode::BadSignature, "bad signature"));
        }
        if !app
            .first_use(SingleUse::ApiNonce, &self.nonce, self.ts)
            .await?
        {
            return Err(HttpError::new(ErrorCode::Replayed, "nonce already used"));
        }
        Ok(())
    }
}

/// Parses a JSON object body (1001 otherwise).
fn object(body: &[u8]) -> Result<Map<String, Value>, HttpError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(HttpError::new(
            ErrorCode::MalformedFrame,
            "the body must be a JSON object",
        )),
        Err(e) => Err(HttpError::new(
            ErrorCode::MalformedFrame,
            format!("the body is not JSON: {e}"),
        )),
    }
}

/// `POST /api/v1/actions`.
pub async fn actions(
    State(app): State<Arc<App>>,
    Signed(body): Signed,
) -> Result<Json<Value>, HttpError> {
    let mut payload = object(&body)?;
    chorus_protocol::frame::check_field_types(&payload)
        .map_err(|e| HttpError::new(e.code, e.reason))?;
    let action = match payload.remove("action") {
        Some(Value::String(a)) if !a.is_empty() => a,
        Some(_) => {
            return Err(HttpError::new(
                ErrorCode::MalformedFrame,
                "action must be a non-empty string",
            ));
        }
        None => {
            return Err(HttpError::new(
                ErrorCode::MissingField,
                "action is required",
            ));
        }
    };
    let outcome = app
        .dispatch
        .run_action(Source::Server, None, &action, payload)
        .await?;
    Ok(Json(
        json!({"error_code": 0, "error_reason": "", "msg_ids": outcome.msg_ids, "result": outcome.result}),
    ))
}

/// Body of `POST /api/v1/sessions`.
#[derive(Deserialize)]
struct SessionRequest {
    user_id: u64,
    #[serde(default = "default_ttl")]
    ttl_s: u64,
    /// The user's profile (contract 1.1), stored for as long as the session
    /// lives; see `http::profiles`.
    #[serde(default)]
    profile: Option<Value>,
}

fn default_ttl() -> u64 {
    86400
}

/// `POST /api/v1/sessions`: mints a sid and sign key for a user. An
/// optional `profile` object (checked by `http::profiles`, 400 1001 naming
/// the field) replaces the user's stored profile and lives as long as the
/// session; without one the stored profile, if any, is left as it is.
pub async fn sessions(
    State(app): State<Arc<App>>,
    Signed(body): Signed,
) -> Result<Json<Value>, HttpError> {
    let req: SessionRequest = serde_json::from_slice(&body).map_err(|e| {
        HttpError::new(
            ErrorCode::MalformedFrame,
            format!("expected {{\"user_id\":N,\"ttl_s\":N,\"profile\":{{…}}}}: {e}"),
        )
    })?;
    let profile = match &req.profile {
        None | Some(Value::Null) => None,
        Some(profile) => Some(super::profiles::check(
            "profile",
            profile,
            app.dispatch.bounds(),
        )?),
    };
    let token = crate::token::mint(app.config.app_secret(), req.user_id, req.ttl_s)
        .map_err(|e| HttpError::new(ErrorCode::MalformedFrame, e.to_string()))?;
    if let Some(profile) = &profile {
        let ttl_s = super::profiles::session_ttl(req.ttl_s);
        app.store
            .set_profile(req.user_id, Some(profile), ttl_s)
            .await?;
    }
    Ok(Json(
        json!({"error_code": 0, "error_reason": "", "user_id": req.user_id, "sid": token.sid, "sign_key": token.sign_key, "expires_at": token.expires_at}),
    ))
}

/// `GET /api/v1/users/{user_id}`.
pub async fn user(
    State(app): State<Arc<App>>,
    Path(user_id): Path<u64>,
    _: Signed,
) -> Result<Json<Value>, HttpError> {
    let (room_id, channel) = room_of(&app, user_id).await?;
    let node = app
        .store
        .node_of(user_id)
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    Ok(Json(json!({
        "error_code": 0,
        "user_id": user_id,
        "online": app.is_online(user_id).await,
        "current_room_id": room_id,
        "channel_name": channel,
        "node": node,
    })))
}

/// `GET /api/v1/rooms/{channel_name}`.
pub async fn room(
    State(app): State<Arc<App>>,
    Path(channel): Path<String>,
    _: Signed,
) -> Result<Json<Value>, HttpError> {
    let room = app.store.room(&channel).await?;
    let Some(room) = room else {
        let error = HttpError::new(
            ErrorCode::NotAllowed,
            format!("nobody is in room {channel}"),
        );
        return Err(error.with_status(axum::http::StatusCode::NOT_FOUND));
    };
    let mut body = Map::new();
    body.insert("error_code".into(), json!(0));
    body.extend(room_json(&channel, &room));
    Ok(Json(Value::Object(body)))
}

/// Body of a kick.
#[derive(Deserialize, Default)]
struct KickRequest {
    #[serde(default)]
    revoke: bool,
    #[serde(default)]
    reason: Option<String>,
    /// A sid of the user to revoke as well (with `revoke`), online or not.
    #[serde(default)]
    sid: Option<String>,
}

/// `POST /api/v1/users/{user_id}/kick`: closes the user's connection with
/// 4010; a kick is a disconnect with no grace. With `revoke`, the user's
/// current sid and the body's `sid` (if it is one of this user's) are
/// refused until they expire, on every node and across restarts; answers
/// `{"error_code":0,"kicked":bool,"revoked":bool}`.
pub async fn kick(
    State(app): State<Arc<App>>,
    Path(user_id): Path<u64>,
    Signed(body): Signed,
) -> Result<Json<Value>, HttpError> {
    let req: KickRequest = if body.is_empty() {
        KickRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| HttpError::new(ErrorCode::MalformedFrame, format!("bad kick body: {e}")))?
    };
    let reason = req.reason.as_deref().unwrap_or("kicked");
    app.dispatch
        .bounds()
        .check_field("reason", reason)
        .map_err(|e| HttpError::new(ErrorCode::MalformedFrame, e.0))?;
    let kicked = app.kick(user_id, reason, req.revoke).await?;
    let mut revoked = req.revoke && kicked;
    if let (true, Some(sid)) = (req.revoke, &req.sid) {
        if !sid_of(&app, sid, user_id) {
            return Err(HttpError::new(
                ErrorCode::MalformedFrame,
                "sid is not a valid sid of this user",
            ));
        }
        revoked |= app.revoke(sid).await?;
    }
    Ok(Json(
        json!({"error_code": 0, "kicked": kicked, "revoked": revoked}),
    ))
}

/// Whether `sid` is a valid, unexpired sid of `user_id`.
fn sid_of(app: &App, sid: &str, user_id: u64) -> bool {
    let now = crate::ids::unix_now();
    chorus_protocol::credentials::verify_sid(app.config.app_secret(), sid, Some(user_id), now)
        .is_ok()
}
