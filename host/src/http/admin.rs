//! The admin API (PROTOCOL section 9): health, readiness and metrics open;
//! everything else behind `Authorization: Bearer <admin.token>`.

use std::sync::Arc;

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::app::App;
use crate::plugin::{InstallError, LoadOutcome, PluginDetail, Role, RolloutError};

/// The admin router.
pub fn router(app: Arc<App>) -> Router {
    let protected = Router::new()
        .route("/admin/plugins", get(plugins))
        .route("/admin/plugins/reload", post(reload))
        .route("/admin/plugins/{name}/rollback", post(rollback))
        .route("/admin/plugins/{name}", get(plugin_detail))
        .route(
            "/admin/plugins/{name}/wasm",
            put(upload_wasm).layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES)),
        )
        .route("/admin/plugins/{name}/toml", put(upload_toml))
        .route("/admin/plugins/{name}/activate", post(activate))
        .route("/admin/plugins/{name}/pause", post(pause))
        .route("/admin/plugins/{name}/resume", post(resume))
        .route("/admin/plugins/{name}/canary", post(canary))
        .route("/admin/plugins/{name}/promote", post(promote))
        .route("/admin/plugins/{name}/abort", post(abort))
        .route("/admin/plugins/{name}/shadow", post(shadow))
        .route("/admin/plugins/{name}/shadow/stop", post(stop_shadow))
        .route("/admin/rooms/{channel_name}", get(room))
        .route("/admin/users/{user_id}", get(user))
        .route("/admin/connections", get(connections))
        .route("/admin/cluster", get(cluster))
        .route("/admin/webhooks", get(webhooks))
        .route("/admin/webhooks/{name}/replay", post(replay_webhook))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&app),
            require_token,
        ));
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .merge(protected)
        .with_state(app)
}

/// Refuses requests without the admin bearer token (403 when none is
/// configured: the protected routes are then off).
async fn require_token(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let Some(token) = app.config.admin.token.as_deref() else {
        return (
            StatusCode::FORBIDDEN,
            Json(json!({"error": "admin.token is not configured"})),
        )
            .into_response();
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(g) if chorus_protocol::signing::tokens_match(g, token) => next.run(request).await,
        _ => (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "bad or missing bearer token"})),
        )
            .into_response(),
    }
}

/// `GET /readyz`: 200 `{"status":"ready"}`, or 503 `{"status":"not
/// ready","reason":…}` naming the first thing missing: `"shutting down"`,
/// `"plugins loading"`, or the cluster's reason
/// ([`crate::cluster::Cluster::not_ready_reason`]).
async fn readyz(State(app): State<Arc<App>>) -> Response {
    let outbox_error = app.webhooks.as_ref().and_then(|h| h.outbox_error());
    let reason = if app.shutdown.is_cancelled() {
        Some("shutting down".to_string())
    } else if !app.plugins.is_ready() {
        Some("plugins loading".to_string())
    } else if let Some(error) = outbox_error {
        // Every state change would be answered 2005 until it recovers.
        Some(format!("webhooks outbox cannot record events: {error}"))
    } else {
        app.cluster
            .as_ref()
            .and_then(|c| c.not_ready_reason())
            .map(str::to_string)
    };
    match reason {
        None => Json(json!({"status": "ready"})).into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not ready", "reason": reason})),
        )
            .into_response(),
    }
}

/// `GET /admin/cluster`: this node's view of the cluster, `{"node",
/// "ready", "not_ready_reason", "peers": [{"node_id", "public_url",
/// "connections", "draining", "suspect"}], "faults": {…}}` (`suspect`:
/// see [`crate::cluster::Peer::is_suspect`]) (faults: see
/// [`crate::cluster::FaultRecord::to_json`]); on a single node
/// `{"node": null}`.
async fn cluster(State(app): State<Arc<App>>) -> Json<Value> {
    let Some(cluster) = app.cluster.as_ref() else {
        return Json(json!({"node": null}));
    };
    let peers: Vec<Value> = cluster
        .peers()
        .iter()
        .map(|p| {
            json!({"node_id": p.node_id, "public_url": p.public_url,
                   "connections": p.connections, "draining": p.draining,
                   "suspect": p.is_suspect()})
        })
        .collect();
    Json(json!({
        "node": cluster.node_id(),
        "ready": cluster.is_ready(),
        "not_ready_reason": cluster.not_ready_reason(),
        "peers": peers,
        "faults": cluster.faults().to_json(),
    }))
}

/// `GET /admin/webhooks`: `{"endpoints": [...]}`, each endpoint's
/// status (see `webhooks::EndpointState::to_json`); empty without
/// `[[webhooks]]`.
async fn webhooks(State(app): State<Arc<App>>) -> Json<Value> {
    let endpoints = app
        .webhooks
        .as_ref()
        .map(|h| h.statuses())
        .unwrap_or_default();
    let outbox_error = app.webhooks.as_ref().and_then(|h| h.outbox_error());
    Json(json!({"endpoints": endpoints, "outbox_error": outbox_error}))
}

/// `POST /admin/webhooks/{name}/replay?since=<unix ms>`: the endpoint gets
/// again every kept event recorded at or after `since`. 202 `{"name",
/// "since"}`; 400 without a `since` in unix ms or with one in the future;
/// 404 for no such endpoint. A replay only ever moves the endpoint back:
/// events not yet delivered are never skipped.
async fn replay_webhook(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(since) = query.get("since").and_then(|s| s.parse::<u64>().ok()) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "since must be unix milliseconds"})),
        )
            .into_response();
    };
    if since > crate::store::unix_ms() {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "since is in the future: nothing was recorded after it"})),
        )
            .into_response();
    }
    match &app.webhooks {
        Some(hooks) if hooks.replay(&name, since) => (
            StatusCode::ACCEPTED,
            Json(json!({"name": name, "since": since})),
        )
            .into_response(),
        _ => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no webhook endpoint {name}")})),
        )
            .into_response(),
    }
}

async fn render_metrics(State(app): State<Arc<App>>) -> Response {
    metrics::gauge!("chorus_relays_in_flight").set(app.delivery.relay.in_flight() as f64);
    // Read at each scrape, for soak runs and dashboards: tasks alive on
    // the app's tracker (sessions, timers, watchers), and frames waiting
    // in every session's outbound queue (one short lock per session per
    // scrape: O(connections), not measured at 19,000 connections).
    metrics::gauge!("chorus_tasks").set(app.tracker.len() as f64);
    let queued: usize = app.connections.all().iter().map(|s| s.queued()).sum();
    metrics::gauge!("chorus_outbound_frames").set(queued as f64);
    let body = app.metrics.render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

async fn plugins(State(app): State<Arc<App>>) -> Json<Value> {
    Json(json!({"plugins": app.plugins.statuses()}))
}

async fn reload(State(app): State<Arc<App>>) -> Json<Value> {
    let outcomes = app.plugins.reload().await;
    Json(json!({"outcomes": outcomes, "plugins": app.plugins.statuses()}))
}

async fn rollback(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    // Only a known plugin's name reaches the runtime, whose metrics label
    // rollbacks by name: an unknown one would become a label value.
    if !app.plugins.statuses().iter().any(|s| s.name == name) {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "no such plugin"})),
        )
            .into_response();
    }
    match app.plugins.rollback(&name).await {
        Ok(status) => Json(json!({"plugin": status})).into_response(),
        Err(e) => (StatusCode::CONFLICT, Json(json!({"error": e.to_string()}))).into_response(),
    }
}

/// The largest `.wasm` `PUT /admin/plugins/{name}/wasm` takes: 64 MiB
/// (the bundled plugins are 100 to 400 KiB); more is 413.
pub const MAX_UPLOAD_BYTES: usize = 64 << 20;

/// `PUT /admin/plugins/{name}/wasm[?role=live|canary|shadow]`, body the
/// component's bytes: written into `plugins.dir` as `<name>.wasm` (or
/// `<name>.canary.wasm`, `<name>.shadow.wasm`) and loaded at once (issue
/// 14 item 5, `chorus plugin dev --server <admin url>`). 200
/// `{"outcome": {…}, "plugin": {…}}` when it serves, is staged or served
/// already; 422 `{"error", "outcome"}` when it does not load (the serving
/// version stays); 400 for a bad name, role or an empty body; 409 when
/// the server has no `plugins.dir`; 413 over [`MAX_UPLOAD_BYTES`].
async fn upload_wasm(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    Query(q): Params,
    body: Bytes,
) -> Response {
    let role = match q.get("role").map(String::as_str) {
        None | Some("live") => Role::Live,
        Some("canary") => Role::Canary,
        Some("shadow") => Role::Shadow,
        Some(_) => return bad_request("role must be live, canary or shadow"),
    };
    if body.is_empty() {
        return bad_request("the body must be the plugin's .wasm bytes");
    }
    match app.plugins.install(&name, role, &body).await {
        Ok(outcome) => upload_reply(&app, &name, outcome),
        Err(error) => install_error(error),
    }
}

/// `PUT /admin/plugins/{name}/toml`, body the plugin's `<name>.toml`
/// (config and `[grants]`): checked (422 when it is not valid TOML or its
/// grants do not parse; nothing written), written into `plugins.dir`, and
/// the live `<name>.wasm`, if the folder has one, reloaded with it. 200
/// `{"outcome": {…} | null, "plugin": {…} | null}`; 400/409 as for the
/// `.wasm`.
async fn upload_toml(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let Ok(text) = std::str::from_utf8(&body) else {
        return bad_request("the body must be the plugin's .toml text (UTF-8)");
    };
    // An empty file would silently swap a plugin's `[grants]` for the
    // default ones.
    if text.trim().is_empty() {
        return bad_request("the body must be the plugin's .toml text; it is empty");
    }
    match app.plugins.install_config(&name, text).await {
        Ok(Some(outcome)) => upload_reply(&app, &name, outcome),
        // A bundled plugin no `.wasm` of the folder replaces keeps its
        // built-in config: say so rather than look like it applied.
        Ok(None) if app.plugins.serves_bundled(&name) => Json(json!({
            "outcome": null,
            "plugin": null,
            "note": format!("{name} is bundled and serves with its built-in config; this {name}.toml applies once a {name}.wasm is uploaded to the folder"),
        }))
        .into_response(),
        Ok(None) => Json(json!({"outcome": null, "plugin": null})).into_response(),
        Err(error) => install_error(error),
    }
}

/// 200 with the outcome and the plugin's status, or 422 when it failed.
fn upload_reply(app: &App, name: &str, outcome: LoadOutcome) -> Response {
    let plugin = app.plugins.statuses().into_iter().find(|s| s.name == name);
    match &outcome {
        LoadOutcome::Failed { error, .. } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"error": error, "outcome": outcome, "plugin": plugin})),
        )
            .into_response(),
        _ => Json(json!({"outcome": outcome, "plugin": plugin})).into_response(),
    }
}

fn install_error(error: InstallError) -> Response {
    let status = match error {
        InstallError::Name(_) => StatusCode::BAD_REQUEST,
        InstallError::NoFolder => StatusCode::CONFLICT,
        InstallError::Config(_) => StatusCode::UNPROCESSABLE_ENTITY,
        InstallError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, Json(json!({"error": error.to_string()}))).into_response()
}

/// `GET /admin/plugins/{name}`: the plugin's status, its kept versions,
/// canary, shadow (counts, summary, samples), objectives watch and last
/// automatic rollback (issue 18); 404 for an unknown plugin.
async fn plugin_detail(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    match app.plugins.detail(&name) {
        Some(detail) => Json(json!({"plugin": detail})).into_response(),
        None => rollout_error(RolloutError::NotFound(name)),
    }
}

/// The query of the rollout routes.
type Params = Query<HashMap<String, String>>;

/// `POST /admin/plugins/{name}/activate?version=<version or sha256>`.
async fn activate(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    Query(q): Params,
) -> Response {
    let Some(version) = q.get("version") else {
        return bad_request("version is required (a kept version or its sha256)");
    };
    rollout_reply(app.plugins.activate(&name, version).await)
}

/// `POST /admin/plugins/{name}/pause`: its actions answer 1007.
async fn pause(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    rollout_reply(app.plugins.set_paused(&name, true).await)
}

/// `POST /admin/plugins/{name}/resume`.
async fn resume(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    rollout_reply(app.plugins.set_paused(&name, false).await)
}

/// `POST /admin/plugins/{name}/canary?percent=<0..=100>[&version=<kept>]`.
async fn canary(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    Query(q): Params,
) -> Response {
    // An unknown plugin is 404 whatever the query says.
    if !app.plugins.statuses().iter().any(|s| s.name == name) {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "no such plugin"})),
        )
            .into_response();
    }
    let Some(percent) = q.get("percent").and_then(|p| p.parse::<f64>().ok()) else {
        return bad_request("percent (0..=100) is required");
    };
    if !(0.0..=100.0).contains(&percent) {
        return bad_request("percent must be 0..=100");
    }
    // `-0` is 0.
    let percent = percent + 0.0;
    let version = q.get("version").map(String::as_str);
    rollout_reply(app.plugins.canary(&name, version, percent).await)
}

/// `POST /admin/plugins/{name}/promote`: the canary goes live everywhere.
async fn promote(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    rollout_reply(app.plugins.promote(&name).await)
}

/// `POST /admin/plugins/{name}/abort`: the canary is dropped.
async fn abort(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    rollout_reply(app.plugins.abort(&name).await)
}

/// `POST /admin/plugins/{name}/shadow?version=<kept>`.
async fn shadow(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    Query(q): Params,
) -> Response {
    let Some(version) = q.get("version") else {
        return bad_request("version is required (a kept version or its sha256)");
    };
    rollout_reply(app.plugins.shadow(&name, version).await)
}

/// `POST /admin/plugins/{name}/shadow/stop`: the shadow's final counts.
async fn stop_shadow(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    match app.plugins.stop_shadow(&name).await {
        Ok(status) => Json(json!({"shadow": status})).into_response(),
        Err(e) => rollout_error(e),
    }
}

fn rollout_reply(outcome: Result<PluginDetail, RolloutError>) -> Response {
    match outcome {
        Ok(detail) => Json(json!({"plugin": detail})).into_response(),
        Err(e) => rollout_error(e),
    }
}

/// 404 for an unknown plugin or version, 409 for nothing staged or a
/// refused change.
fn rollout_error(error: RolloutError) -> Response {
    let status = match error {
        RolloutError::NotFound(_) | RolloutError::NoVersion { .. } => StatusCode::NOT_FOUND,
        RolloutError::NotStaged { .. } | RolloutError::Refused(_) => StatusCode::CONFLICT,
    };
    (status, Json(json!({"error": error.to_string()}))).into_response()
}

fn bad_request(message: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": message}))).into_response()
}

async fn room(State(app): State<Arc<App>>, Path(channel): Path<String>) -> Response {
    match app.store.room(&channel).await {
        Ok(Some(room)) => {
            let online: Vec<u64> = app
                .connections
                .get_many(&room.members)
                .iter()
                .map(|s| s.user_id)
                .collect();
            let mut body = super::room_json(&channel, &room);
            body.insert("online_here".into(), json!(online));
            Json(Value::Object(body)).into_response()
        }
        Ok(None) => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "nobody is in that room"})),
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "admin room view: store unavailable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": "state store unavailable"})),
            )
                .into_response()
        }
    }
}

async fn user(State(app): State<Arc<App>>, Path(user_id): Path<u64>) -> Json<Value> {
    let membership = app.store.membership_of(user_id).await.ok().flatten();
    let call = app.store.call_of(user_id).await.ok().flatten();
    Json(json!({
        "user_id": user_id,
        "online": app.is_online(user_id).await,
        "node": app.store.node_of(user_id).await.ok().flatten(),
        "channel_name": membership.as_ref().map(|m| m.channel_name.clone()),
        "room_id": membership.as_ref().map(|m| m.room_id),
        "seat_id": membership.and_then(|m| m.seat_id),
        "call_peer_id": call.map(|c| c.peer_id),
    }))
}

async fn connections(State(app): State<Arc<App>>) -> Json<Value> {
    Json(
        json!({"node": app.node_id, "connections": app.connections.len(), "relays_in_flight": app.delivery.relay.in_flight()}),
    )
}
