//! One task per endpoint: read the outbox in order, batch, sign, POST,
//! acknowledge after a 2xx, back off with jitter on anything else. Sessions
//! and actions never wait for it: they only append to the outbox.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::outbox::{Entry, Outbox};
use crate::config::WebhookEndpoint;

/// The first wait after a failed attempt; each next one doubles, up to the
/// endpoint's `backoff_max`.
pub const BACKOFF_BASE: Duration = Duration::from_millis(250);

/// How often an idle sender looks at the outbox even when nothing woke it
/// (events appended by another node, a lease to take over).
const IDLE_POLL: Duration = Duration::from_millis(500);

/// What `GET /admin/webhooks` shows of an endpoint.
#[derive(Debug, Clone, Default)]
struct Status {
    /// `idle`, `delivering`, `retrying` or `standby` (another node holds
    /// the endpoint's lease).
    state: &'static str,
    queue_depth: u64,
    lag_seconds: f64,
    last_error: Option<(u64, String)>,
    last_success_ms: Option<u64>,
    sent: u64,
    failed: u64,
    retried: u64,
    dropped: u64,
}

/// An endpoint's configuration, status and controls, shared by its task
/// and the admin routes.
pub struct EndpointState {
    /// Its `[[webhooks]]` entry.
    pub config: WebhookEndpoint,
    /// What the admin routes show.
    status: Mutex<Status>,
    /// A replay asked for (`since`, unix ms), applied by the task.
    rewind: Mutex<Option<u64>>,
    /// Wakes the task (a replay).
    wake: Notify,
}

impl EndpointState {
    /// The state of a configured endpoint, idle.
    pub fn new(config: WebhookEndpoint) -> Self {
        Self {
            config,
            status: Mutex::new(Status {
                state: "idle",
                ..Status::default()
            }),
            rewind: Mutex::new(None),
            wake: Notify::new(),
        }
    }

    fn status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks the task to send again from `since_ms`.
    pub fn replay(&self, since_ms: u64) {
        *self.rewind.lock().unwrap_or_else(|p| p.into_inner()) = Some(since_ms);
        self.wake.notify_one();
    }

    /// `{"name","url" (its password and query shown as `…`),"events","state","queue_depth","lag_seconds",
    /// "last_error":{"at_ms","error"}|null,"last_success_ms","sent",
    /// "failed","retried","dropped"}`.
    pub fn to_json(&self) -> Value {
        let s = self.status().clone();
        json!({
            "name": self.config.name,
            "url": redacted(&self.config.url),
            "events": self.config.events,
            "state": s.state,
            "queue_depth": s.queue_depth,
            "lag_seconds": s.lag_seconds,
            "last_error": s.last_error.map(|(at, e)| json!({"at_ms": at, "error": e})),
            "last_success_ms": s.last_success_ms,
            "sent": s.sent,
            "failed": s.failed,
            "retried": s.retried,
            "dropped": s.dropped,
        })
    }
}

/// One endpoint's delivery task.
pub struct Sender {
    pub(super) endpoint: Arc<EndpointState>,
    pub(super) outbox: Arc<dyn Outbox>,
    pub(super) client: reqwest::Client,
    pub(super) appended: Arc<Notify>,
    pub(super) shutdown: CancellationToken,
    /// How long a standby node waits before trying the lease again.
    pub(super) standby_poll: Duration,
}

impl Sender {
    fn name(&self) -> &str {
        &self.endpoint.config.name
    }

    /// Runs until shutdown.
    pub async fn run(self) {
        let mut batch: Vec<Entry> = Vec::new();
        let mut attempt: u32 = 0;
        while !self.shutdown.is_cancelled() {
            let rewind = self
                .endpoint
                .rewind
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(since) = rewind {
                match self.outbox.rewind(self.name(), since).await {
                    Ok(()) => {
                        batch.clear();
                        attempt = 0;
                    }
                    Err(e) => self.failed_step(&e.to_string()),
                }
            }
            match self.outbox.lead(self.name()).await {
                Ok(true) => {}
                Ok(false) => {
                    self.set_state("standby");
                    batch.clear();
                    self.pause(self.standby_poll).await;
                    continue;
                }
                Err(e) => {
                    self.failed_step(&e.to_string());
                    self.pause(self.standby_poll).await;
                    continue;
                }
            }
            if batch.is_empty() {
                match self.fill().await {
                    Ok(entries) => batch = entries,
                    Err(e) => {
                        self.failed_step(&e.to_string());
                        self.pause(IDLE_POLL).await;
                        continue;
                    }
                }
                if batch.is_empty() {
                    self.idle().await;
                    continue;
                }
            }
            self.drop_expired(&mut batch).await;
            if batch.is_empty() {
                continue;
            }
            // A request in flight does not hold shutdown up.
            let Some(sent) = self.leading(self.deliver(&batch)).await else {
                return;
            };
            match sent {
                Ok(count) => {
                    if let Err(e) = self.outbox.ack(self.name(), &batch).await {
                        tracing::warn!(endpoint = self.name(), error = %e, "delivered events not acknowledged; they may be sent again");
                    }
                    self.succeeded(count);
                    batch.clear();
                    attempt = 0;
                }
                Err(error) => {
                    attempt += 1;
                    self.failed(&error);
                    // The depth matters most while the endpoint fails:
                    // an alert on it must see the backlog grow.
                    self.refresh_depth().await;
                    self.leading(self.back_off(self.backoff(attempt))).await;
                }
            }
        }
    }

    /// The next batch: what the outbox has (at most `batch_max`), topped
    /// up for `batch_wait` while it is short.
    async fn fill(&self) -> Result<Vec<Entry>, super::outbox::OutboxError> {
        let max = self.endpoint.config.batch_max;
        let mut batch = self.outbox.next(self.name(), max).await?;
        if batch.is_empty() || batch.len() >= max {
            return Ok(batch);
        }
        let deadline = tokio::time::Instant::now() + self.endpoint.config.batch_wait;
        while batch.len() < max && tokio::time::Instant::now() < deadline {
            tokio::select! {
                _ = self.appended.notified() => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = self.shutdown.cancelled() => break,
            }
            let more = self.outbox.next(self.name(), max - batch.len()).await?;
            batch.extend(more);
        }
        Ok(batch)
    }

    /// Drops (acknowledges unsent, counts) the events older than
    /// `max_age` at the front of the batch.
    async fn drop_expired(&self, batch: &mut Vec<Entry>) {
        let cutoff =
            crate::store::unix_ms().saturating_sub(self.endpoint.config.max_age.as_millis() as u64);
        let expired = batch.iter().take_while(|e| e.event.ts_ms < cutoff).count();
        if expired == 0 {
            return;
        }
        let old: Vec<Entry> = batch.drain(..expired).collect();
        let dropped = old
            .iter()
            .filter(|e| self.endpoint.config.wants(&e.event.event))
            .count();
        if let Err(e) = self.outbox.ack(self.name(), &old).await {
            tracing::warn!(endpoint = self.name(), error = %e, "expired events not acknowledged");
        }
        metrics::counter!("chorus_webhook_dropped_total", "endpoint" => self.name().to_string())
            .increment(dropped as u64);
        self.endpoint.status().dropped += dropped as u64;
        tracing::warn!(
            endpoint = self.name(),
            dropped,
            "events older than max_age dropped undelivered"
        );
    }

    /// POSTs the events the endpoint wants (none: nothing to send); how
    /// many were sent, or why not.
    async fn deliver(&self, batch: &[Entry]) -> Result<usize, String> {
        let wanted: Vec<&str> = batch
            .iter()
            .filter(|e| self.endpoint.config.wants(&e.event.event))
            .map(|e| e.json.as_str())
            .collect();
        let lag = crate::store::unix_ms().saturating_sub(batch[0].event.ts_ms) as f64 / 1000.0;
        metrics::gauge!("chorus_webhook_lag_seconds", "endpoint" => self.name().to_string())
            .set(lag);
        {
            let mut status = self.endpoint.status();
            status.lag_seconds = lag;
            status.state = if status.state == "retrying" {
                "retrying"
            } else {
                "delivering"
            };
        }
        if wanted.is_empty() {
            return Ok(0);
        }
        let body = format!("[{}]", wanted.join(","));
        let request = signed_request(&self.client, &self.endpoint.config, body)?;
        let response = tokio::time::timeout(self.endpoint.config.timeout, request.send())
            .await
            .map_err(|_| format!("no answer within {:?}", self.endpoint.config.timeout))?
            // Without the URL: its query or user info may hold a token.
            .map_err(|e| format!("request failed: {}", e.without_url()))?;
        let status = response.status();
        if status.is_success() {
            Ok(wanted.len())
        } else {
            Err(format!("answered HTTP {}", status.as_u16()))
        }
    }

    fn succeeded(&self, count: usize) {
        let name = self.name().to_string();
        metrics::counter!("chorus_webhook_sent_total", "endpoint" => name.clone())
            .increment(count as u64);
        metrics::gauge!("chorus_webhook_lag_seconds", "endpoint" => name).set(0.0);
        let mut status = self.endpoint.status();
        status.sent += count as u64;
        status.state = "delivering";
        status.lag_seconds = 0.0;
        status.last_success_ms = Some(crate::store::unix_ms());
    }

    fn failed(&self, error: &str) {
        let name = self.name().to_string();
        metrics::counter!("chorus_webhook_failed_total", "endpoint" => name.clone()).increment(1);
        metrics::counter!("chorus_webhook_retried_total", "endpoint" => name).increment(1);
        tracing::warn!(
            endpoint = self.name(),
            error,
            "webhook request failed; retrying"
        );
        let mut status = self.endpoint.status();
        status.failed += 1;
        status.retried += 1;
        status.state = "retrying";
        status.last_error = Some((crate::store::unix_ms(), error.to_string()));
    }

    /// An outbox error (not a request): shown, not counted as a failed
    /// request.
    fn failed_step(&self, error: &str) {
        tracing::warn!(endpoint = self.name(), error, "webhook outbox step failed");
        self.endpoint.status().last_error = Some((crate::store::unix_ms(), error.to_string()));
    }

    fn set_state(&self, state: &'static str) {
        self.endpoint.status().state = state;
    }

    /// Reads the queue depth into the status and the gauge.
    async fn refresh_depth(&self) {
        if let Ok(depth) = self.outbox.depth(self.name()).await {
            metrics::gauge!("chorus_webhook_queue_depth", "endpoint" => self.name().to_string())
                .set(depth as f64);
            self.endpoint.status().queue_depth = depth;
        }
    }

    /// Nothing to send: refreshes the queue depth and waits for an append,
    /// a replay, the poll interval or shutdown.
    async fn idle(&self) {
        match self.outbox.depth(self.name()).await {
            Ok(depth) => {
                metrics::gauge!("chorus_webhook_queue_depth", "endpoint" => self.name().to_string())
                    .set(depth as f64);
                metrics::gauge!("chorus_webhook_lag_seconds", "endpoint" => self.name().to_string())
                    .set(0.0);
                let mut status = self.endpoint.status();
                status.queue_depth = depth;
                status.lag_seconds = 0.0;
                status.state = "idle";
            }
            Err(e) => self.failed_step(&e.to_string()),
        }
        self.pause(IDLE_POLL).await;
    }

    /// Waits `wait` after a failure; only a replay or shutdown cuts it
    /// short (new events do not: they would make a failing endpoint be
    /// retried at the rate of actions).
    async fn back_off(&self, wait: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = self.endpoint.wake.notified() => {}
            _ = self.shutdown.cancelled() => {}
        }
    }

    /// Runs `work` (a request, a back-off) while renewing the endpoint's
    /// lease every `standby_poll`, so a slow request or a long back-off
    /// does not let another node take the endpoint over meanwhile; `None`
    /// at shutdown.
    async fn leading<F: std::future::Future>(&self, work: F) -> Option<F::Output> {
        tokio::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return Some(out),
                _ = tokio::time::sleep(self.standby_poll) => {
                    if let Ok(false) = self.outbox.lead(self.name()).await {
                        tracing::warn!(endpoint = self.name(), "webhook lease lost while delivering");
                    }
                }
                _ = self.shutdown.cancelled() => return None,
            }
        }
    }

    /// Waits `wait`, or less if an append, a replay or shutdown comes.
    async fn pause(&self, wait: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = self.appended.notified() => {}
            _ = self.endpoint.wake.notified() => {}
            _ = self.shutdown.cancelled() => {}
        }
    }

    /// The wait after `attempt` failures: [`BACKOFF_BASE`] doubled per
    /// attempt, capped at `backoff_max`, then between half and all of it
    /// (jitter), so endpoints that failed together do not retry together.
    fn backoff(&self, attempt: u32) -> Duration {
        let cap = self.endpoint.config.backoff_max;
        let full = BACKOFF_BASE
            .saturating_mul(1u32 << attempt.min(20).saturating_sub(1))
            .min(cap);
        let half = full / 2;
        half + full.mul_f64(rand::random::<f64>() * 0.5)
    }
}

/// A POST of `body` to the endpoint, signed like the server API (README,
/// "Webhooks"): `X-Chorus-Timestamp` (unix seconds), `X-Chorus-Nonce` (32
/// lowercase hex digits, new per request) and `X-Chorus-Signature`, the
/// `api_signature` of timestamp, nonce, `POST`, the URL's path and query,
/// and the body, under the endpoint's secret.
fn signed_request(
    client: &reqwest::Client,
    endpoint: &WebhookEndpoint,
    body: String,
) -> Result<reqwest::RequestBuilder, String> {
    let url = reqwest::Url::parse(&endpoint.url).map_err(|e| format!("bad url: {e}"))?;
    let path_and_query = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let timestamp = crate::ids::unix_now().to_string();
    let nonce = format!("{:032x}", rand::random::<u128>());
    let headers = chorus_protocol::server_api::signed_headers(
        endpoint.secret.as_bytes(),
        &timestamp,
        &nonce,
        "POST",
        &path_and_query,
        body.as_bytes(),
    );
    let mut request = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json");
    for (name, value) in headers {
        request = request.header(name, value);
    }
    Ok(request.body(body))
}

/// `url` with its password and query replaced by `…`: a receiver's token
/// often rides there, and the admin API and logs must not show it (found
/// in review).
fn redacted(url: &str) -> String {
    let Ok(mut parsed) = reqwest::Url::parse(url) else {
        return "…".into();
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("…"));
    }
    if parsed.query().is_some() {
        parsed.set_query(Some("…"));
    }
    parsed.to_string()
}

#[cfg(test)]
mod redaction_tests {
    #[test]
    fn tokens_in_the_url_are_not_shown() {
        let shown = super::redacted("http://u:pw-SECRET@h:8/hooks?token=tok-SECRET&app=1");
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(
            shown.starts_with("http://u:") && shown.contains("h:8/hooks"),
            "{shown}"
        );
        assert_eq!(super::redacted("https://h/x"), "https://h/x");
    }
}
