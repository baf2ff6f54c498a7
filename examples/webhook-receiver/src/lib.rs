//! A receiver of Chorus webhooks (README, "Webhooks"), as a library the
//! integration tests run in process and as the `webhook-receiver` binary.
//!
//! For each `POST` (any path) it checks, in order:
//! 1. `X-Chorus-Timestamp`, `X-Chorus-Nonce`, `X-Chorus-Signature` present,
//!    the timestamp within [`MAX_SKEW_S`] of now, and the signature the
//!    `api_signature` of the request under the endpoint's secret (the
//!    server API's own check, `chorus_protocol::server_api`): else 401;
//! 2. the nonce not seen within the skew window: else 409 (a replayed
//!    request);
//! 3. the body a JSON array of events: else 400.
//!
//! Then it keeps (and prints as one JSON line each) the events whose
//! `event_id` it has not seen, and answers 200 `{"received": n, "new": m}`.
//! Delivery is at least once, so deduplicating by `event_id` is the
//! receiver's part.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chorus_protocol::server_api::{
    NONCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_api_signature,
};
use serde_json::{Value, json};

/// How far a request's timestamp may be from now, in seconds (the server
/// API's default `signing.max_skew`).
pub const MAX_SKEW_S: u64 = 300;

/// A receiver's state.
pub struct Receiver {
    /// The endpoint's `secret`.
    secret: Vec<u8>,
    /// Nonces seen, with when they may be forgotten (unix s).
    nonces: Mutex<HashMap<String, u64>>,
    /// Event ids seen.
    ids: Mutex<HashSet<String>>,
    /// Every new event, in arrival order.
    events: Mutex<Vec<Value>>,
    /// Answer 503 to everything (a receiver that is down).
    down: AtomicBool,
    /// Wait this long (ms) before answering (a slow receiver).
    delay_ms: AtomicU64,
    /// Print each new event on stdout.
    print: bool,
    /// Requests answered 200.
    accepted: AtomicU64,
}

impl Receiver {
    /// A receiver checking signatures with `secret`; `print`: each new
    /// event goes to stdout as a JSON line.
    pub fn new(secret: &str, print: bool) -> Arc<Self> {
        Arc::new(Self {
            secret: secret.as_bytes().to_vec(),
            nonces: Mutex::default(),
            ids: Mutex::default(),
            events: Mutex::default(),
            down: AtomicBool::new(false),
            delay_ms: AtomicU64::new(0),
            print,
            accepted: AtomicU64::new(0),
        })
    }

    /// Answers 503 to everything while `down`.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Waits `delay` before answering each request.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Every distinct event received so far, in arrival order.
    pub fn events(&self) -> Vec<Value> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Requests answered 200 so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }

    /// The router: `POST` on any path.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new().fallback(receive).with_state(Arc::clone(self))
    }

    /// Checks a request; the refusal's status and reason.
    fn check(
        &self,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(), (StatusCode, &'static str)> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let (Some(ts), Some(nonce), Some(signature)) = (
            header(TIMESTAMP_HEADER),
            header(NONCE_HEADER),
            header(SIGNATURE_HEADER),
        ) else {
            return Err((StatusCode::UNAUTHORIZED, "missing signature headers"));
        };
        let now = unix_now();
        let fresh = ts
            .parse::<u64>()
            .is_ok_and(|t| t.abs_diff(now) <= MAX_SKEW_S);
        if !fresh {
            return Err((StatusCode::UNAUTHORIZED, "stale or malformed timestamp"));
        }
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        if !verify_api_signature(&self.secret, ts, nonce, "POST", path, body, signature) {
            return Err((StatusCode::UNAUTHORIZED, "bad signature"));
        }
        let mut nonces = self.nonces.lock().unwrap_or_else(|p| p.into_inner());
        nonces.retain(|_, until| *until > now);
        if nonces.contains_key(nonce) {
            return Err((StatusCode::CONFLICT, "replayed nonce"));
        }
        nonces.insert(nonce.to_string(), now + 2 * MAX_SKEW_S);
        Ok(())
    }

    /// Keeps the events not seen before; how many were new.
    fn keep(&self, events: Vec<Value>) -> usize {
        let mut ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        let mut kept = self.events.lock().unwrap_or_else(|p| p.into_inner());
        let mut new = 0;
        for event in events {
            let id = event
                .get("event_id")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if !ids.insert(id.to_string()) {
                continue;
            }
            if self.print {
                println!("{event}");
            }
            kept.push(event);
            new += 1;
        }
        new
    }
}

async fn receive(
    State(receiver): State<Arc<Receiver>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let delay = receiver.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if receiver.down.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "down").into_response();
    }
    if let Err((status, reason)) = receiver.check(&uri, &headers, &body) {
        return (status, axum::Json(json!({"error": reason}))).into_response();
    }
    let Ok(Value::Array(events)) = serde_json::from_slice::<Value>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "not a JSON array"})),
        )
            .into_response();
    };
    let received = events.len();
    let new = receiver.keep(events);
    receiver.accepted.fetch_add(1, Ordering::SeqCst);
    axum::Json(json!({"received": received, "new": new})).into_response()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
