//! Staged rollout of a plugin's versions (issue 18): which rooms a canary
//! serves, the objectives watch behind automatic rollback, and the shadow
//! comparison. The registry holds the state (`registry`); this file holds
//! the rules and the shapes `/admin/plugins/{name}` shows.
//!
//! - **Canary**: a staged version serves the rooms whose
//!   [`canary_bucket`] (a hash of `channel_name`, 0..10000) is below
//!   `percent × 100`; every other room stays on the live version. The hash
//!   depends on the channel name only, so every node agrees and a room
//!   never flips while the percentage holds (raising it only adds rooms).
//!   An event without a room (no `channel_name` in its payload and a
//!   subject in no room) goes to the live version.
//! - **Watch**: a canary, and a version that went live from its file or by
//!   a promotion, is judged against `[plugins.<name>]` ([`Objectives`])
//!   over a sliding window; a breach rolls it back by itself.
//! - **Shadow**: a staged version runs on a copy of every event the live
//!   version runs, at the same time and on the same state; what it returns
//!   is compared and dropped, never applied.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::error::CallError;
use super::loaded::LoadedPlugin;
use super::{Event, Reply};
use crate::store::unix_ms;

/// Rooms are split in this many buckets; a percentage of 20 is the
/// buckets below 2,000.
pub const CANARY_BUCKETS: u32 = 10_000;
/// Differing events a shadow keeps as samples (the most recent).
pub const SHADOW_SAMPLES: usize = 20;
/// Shadow calls in flight at once per plugin; an event beyond that runs
/// on the live version alone and is counted as `skipped`.
pub const SHADOW_CONCURRENCY: usize = 16;
/// Slots of a watch's sliding window.
const SLOTS: u32 = 10;

/// The bucket (0..[`CANARY_BUCKETS`]) of a room: FNV-1a (64 bits) of the
/// channel name's bytes, modulo the bucket count. Stable across nodes,
/// processes and releases: it decides which rooms a canary serves.
pub fn canary_bucket(channel_name: &str) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in channel_name.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % u64::from(CANARY_BUCKETS)) as u32
}

/// The objectives of one plugin (`[plugins.<name>]`, see
/// [`crate::config::PluginObjectives`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Objectives {
    /// The highest share of failed (2002) calls, 0..=1.
    pub max_error_rate: Option<f64>,
    /// The highest p99 of a call's duration.
    pub max_p99: Option<Duration>,
    /// The sliding window judged.
    pub window: Duration,
    /// Calls the window must hold before it is judged.
    pub min_calls: u64,
    /// How long a version that went live is judged.
    pub probation: Duration,
}

impl From<&crate::config::PluginObjectives> for Objectives {
    fn from(o: &crate::config::PluginObjectives) -> Self {
        Self {
            max_error_rate: o.max_error_rate,
            max_p99: o.max_p99,
            window: o.window,
            min_calls: o.min_calls,
            probation: o.probation,
        }
    }
}

/// Why an admin rollout request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RolloutError {
    /// No plugin of that name is loaded (HTTP 404).
    #[error("no plugin named {0:?}")]
    NotFound(String),
    /// No kept version matches (HTTP 404).
    #[error("plugin {name:?} keeps no version {version:?}")]
    NoVersion {
        /// The plugin.
        name: String,
        /// The version or sha256 asked for.
        version: String,
    },
    /// Nothing staged to promote, abort or change (HTTP 409).
    #[error("plugin {name:?} has no {what} staged")]
    NotStaged {
        /// The plugin.
        name: String,
        /// `canary` or `shadow`.
        what: &'static str,
    },
    /// A request that cannot be carried out as asked (HTTP 400/409):
    /// a percentage out of 0..=100, a version that would clash with
    /// another plugin, staging the live version beside itself.
    #[error("{0}")]
    Refused(String),
}

/// A staged canary: the version, and the share of rooms it serves.
pub(crate) struct Canary {
    /// The staged version.
    pub(crate) plugin: Arc<LoadedPlugin>,
    /// Percent of rooms, 0..=100.
    pub(crate) percent: f64,
    /// Staged from `<name>.canary.wasm` (dropped when the file goes).
    pub(crate) from_file: bool,
    /// Unix ms when it was staged.
    pub(crate) since_ms: u64,
    /// Its objectives watch, when `[plugins.<name>]` sets objectives.
    pub(crate) watch: Option<Arc<Watch>>,
}

impl Canary {
    /// Whether the room `channel_name` is served by the canary.
    pub(crate) fn takes(&self, channel_name: &str) -> bool {
        f64::from(canary_bucket(channel_name)) < self.percent * f64::from(CANARY_BUCKETS) / 100.0
    }

    pub(crate) fn status(&self) -> CanaryStatus {
        let stats = &self.plugin.compiled().stats;
        CanaryStatus {
            version: self.plugin.version().to_string(),
            sha256: self.plugin.sha256().to_string(),
            percent: self.percent,
            source: if self.from_file { "file" } else { "admin" },
            since_ms: self.since_ms,
            calls: stats.calls(),
            errors: stats.errors(),
            p99_us: stats.percentile_us(0.99),
            watch: self.watch.as_ref().map(|w| w.status()),
        }
    }
}

/// A canary in `/admin/plugins/{name}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CanaryStatus {
    /// The staged version.
    pub version: String,
    /// Hex sha256 of its `.wasm`.
    pub sha256: String,
    /// Percent of rooms it serves.
    pub percent: f64,
    /// `file` (`<name>.canary.wasm`) or `admin`.
    pub source: &'static str,
    /// Unix ms when it was staged.
    pub since_ms: u64,
    /// Calls of this version (all its lives).
    pub calls: u64,
    /// Of which failed (2002).
    pub errors: u64,
    /// 99th percentile call latency, µs (approximate).
    pub p99_us: u64,
    /// Its objectives watch (none without `[plugins.<name>]` objectives).
    pub watch: Option<WatchStatus>,
}

/// What a watch is judging.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WatchKind {
    /// A staged canary: rolling back aborts it.
    Canary,
    /// A version that went live: rolling back restores the one it replaced.
    Live,
}

/// One slot of a watch's window.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// The slot's index since the watch started.
    index: u64,
    calls: u64,
    errors: u64,
    /// Calls over `max_p99`.
    slow: u64,
}

/// What broke an objective.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Breach {
    /// `error_rate` or `p99` (the metric's `reason` label).
    pub(crate) reason: &'static str,
    /// For people: the figures.
    pub(crate) detail: String,
}

/// The objectives watch over one version.
pub(crate) struct Watch {
    pub(crate) kind: WatchKind,
    /// The version judged.
    pub(crate) sha256: String,
    pub(crate) version: String,
    objectives: Objectives,
    started: Instant,
    /// For a live version: the end of its probation.
    until: Option<Instant>,
    slots: Mutex<VecDeque<Slot>>,
    /// Set by the first breach: one rollback per watch.
    tripped: AtomicBool,
}

impl Watch {
    /// A watch over `plugin` as `kind`, from now.
    pub(crate) fn new(kind: WatchKind, plugin: &LoadedPlugin, objectives: Objectives) -> Self {
        Self::over(kind, plugin.version(), plugin.sha256(), objectives)
    }

    fn over(kind: WatchKind, version: &str, sha256: &str, objectives: Objectives) -> Self {
        let started = Instant::now();
        let until = (kind == WatchKind::Live).then(|| started + objectives.probation);
        Self {
            kind,
            sha256: sha256.to_string(),
            version: version.to_string(),
            objectives,
            started,
            until,
            slots: Mutex::new(VecDeque::new()),
            tripped: AtomicBool::new(false),
        }
    }

    fn slot_len(&self) -> Duration {
        (self.objectives.window / SLOTS).max(Duration::from_millis(1))
    }

    /// Whether the watch still judges (a live version's probation runs).
    pub(crate) fn judging(&self) -> bool {
        self.until.is_none_or(|until| Instant::now() < until)
            && !self.tripped.load(Ordering::Relaxed)
    }

    /// Counts one call of the watched version; the breach, the first time
    /// the window breaks an objective.
    pub(crate) fn record(&self, elapsed: Duration, failed: bool) -> Option<Breach> {
        if !self.judging() {
            return None;
        }
        let now = Instant::now();
        let index = (now.saturating_duration_since(self.started).as_nanos()
            / self.slot_len().as_nanos().max(1)) as u64;
        let slow = self.objectives.max_p99.is_some_and(|max| elapsed > max);
        let (calls, errors, slow_calls) = {
            let mut slots = self.lock();
            match slots.back_mut() {
                Some(slot) if slot.index == index => {}
                _ => slots.push_back(Slot {
                    index,
                    ..Slot::default()
                }),
            }
            if let Some(slot) = slots.back_mut() {
                slot.calls += 1;
                slot.errors += u64::from(failed);
                slot.slow += u64::from(slow);
            }
            let oldest = index.saturating_sub(u64::from(SLOTS) - 1);
            while slots.front().is_some_and(|s| s.index < oldest) {
                slots.pop_front();
            }
            slots.iter().fold((0, 0, 0), |(c, e, s), slot| {
                (c + slot.calls, e + slot.errors, s + slot.slow)
            })
        };
        let breach = self.judge(calls, errors, slow_calls)?;
        (!self.tripped.swap(true, Ordering::AcqRel)).then_some(breach)
    }

    fn judge(&self, calls: u64, errors: u64, slow: u64) -> Option<Breach> {
        if calls < self.objectives.min_calls {
            return None;
        }
        let window = format!("{:?}", self.objectives.window);
        let rate = errors as f64 / calls as f64;
        if let Some(max) = self.objectives.max_error_rate
            && rate > max
        {
            return Some(Breach {
                reason: "error_rate",
                detail: format!(
                    "{errors} of {calls} calls failed in the last {window} ({:.1} %), over max_error_rate {:.1} %",
                    rate * 100.0,
                    max * 100.0
                ),
            });
        }
        if let Some(max) = self.objectives.max_p99
            && slow * 100 > calls
        {
            return Some(Breach {
                reason: "p99",
                detail: format!(
                    "{slow} of {calls} calls in the last {window} took over max_p99 {max:?}: p99 above it"
                ),
            });
        }
        None
    }

    pub(crate) fn status(&self) -> WatchStatus {
        let slots = self.lock();
        let (calls, errors, slow) = slots.iter().fold((0, 0, 0), |(c, e, s), slot| {
            (c + slot.calls, e + slot.errors, s + slot.slow)
        });
        let until_ms = self.until.map(|until| {
            let left = until.saturating_duration_since(Instant::now());
            unix_ms() + u64::try_from(left.as_millis()).unwrap_or(u64::MAX)
        });
        WatchStatus {
            kind: self.kind,
            version: self.version.clone(),
            sha256: self.sha256.clone(),
            judging: self.until.is_none_or(|until| Instant::now() < until)
                && !self.tripped.load(Ordering::Relaxed),
            window_ms: u64::try_from(self.objectives.window.as_millis()).unwrap_or(u64::MAX),
            calls,
            errors,
            slow,
            until_ms,
        }
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Slot>> {
        // Every critical section leaves a valid queue.
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The objectives watch in `/admin/plugins/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WatchStatus {
    /// `canary` or `live`.
    pub kind: WatchKind,
    /// The version judged.
    pub version: String,
    /// Its sha256.
    pub sha256: String,
    /// Whether it is still judged (a live version's probation runs and
    /// nothing tripped).
    pub judging: bool,
    /// The window, ms.
    pub window_ms: u64,
    /// Calls in the window (at the last call).
    pub calls: u64,
    /// Of which failed (2002).
    pub errors: u64,
    /// Of which took over `max_p99`.
    pub slow: u64,
    /// For a live version: unix ms when its probation ends.
    pub until_ms: Option<u64>,
}

/// The last automatic rollback of a plugin, in `/admin/plugins/{name}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AutoRollback {
    /// `canary` (the canary was aborted) or `live` (the version it replaced
    /// serves again).
    pub kind: WatchKind,
    /// The version rolled back.
    pub version: String,
    /// Its sha256.
    pub sha256: String,
    /// The version serving after it (the live one).
    pub serving_version: Option<String>,
    /// `error_rate` or `p99`.
    pub reason: &'static str,
    /// The figures that broke the objective.
    pub detail: String,
    /// Unix ms.
    pub at_ms: u64,
}

/// A staged shadow: the version, its counters and samples.
pub(crate) struct Shadow {
    pub(crate) plugin: Arc<LoadedPlugin>,
    /// Staged from `<name>.shadow.wasm` (dropped when the file goes).
    pub(crate) from_file: bool,
    pub(crate) since_ms: u64,
    permits: tokio::sync::Semaphore,
    agree: AtomicU64,
    differ: AtomicU64,
    skipped: AtomicU64,
    samples: Mutex<VecDeque<ShadowSample>>,
}

/// One event on which a shadow and the live version differed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShadowSample {
    /// Unix ms.
    pub at_ms: u64,
    /// The action or system event.
    pub action: String,
    /// `client`, `server` or `system`.
    pub source: &'static str,
    /// The event's subject.
    pub user_id: Option<u64>,
    /// The event's payload (secrets were stripped before any plugin).
    pub payload: Map<String, Value>,
    /// The live version.
    pub live_version: String,
    /// What the live version returned:
    /// `{"changes":[…],"notifications":[…],"events":[…]}` (`events`: the
    /// application events it emitted, `{"name","body"}`) or
    /// `{"error_code":…}`.
    pub live: Value,
    /// What the shadow returned, in the same shape.
    pub shadow: Value,
}

/// A shadow in `/admin/plugins/{name}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShadowStatus {
    /// The shadow version.
    pub version: String,
    /// Its sha256.
    pub sha256: String,
    /// `file` or `admin`.
    pub source: &'static str,
    /// Unix ms when it was staged.
    pub since_ms: u64,
    /// Events compared (`agree + differ`).
    pub events: u64,
    /// Of which both versions returned the same effects and notifications
    /// (or the same error code).
    pub agree: u64,
    /// Of which they differed.
    pub differ: u64,
    /// Events the live version ran without the shadow (too many shadow
    /// calls in flight).
    pub skipped: u64,
    /// "v2 agrees with v1 on N of M events (P %); K differ".
    pub summary: String,
    /// The most recent differing events, at most [`SHADOW_SAMPLES`].
    pub samples: Vec<ShadowSample>,
}

impl Shadow {
    pub(crate) fn new(plugin: Arc<LoadedPlugin>, from_file: bool) -> Self {
        Self {
            plugin,
            from_file,
            since_ms: unix_ms(),
            permits: tokio::sync::Semaphore::new(SHADOW_CONCURRENCY),
            agree: AtomicU64::new(0),
            differ: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            samples: Mutex::new(VecDeque::new()),
        }
    }

    /// A place for one shadow call, or `None` (counted as skipped).
    pub(crate) fn permit(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        let permit = self.permits.try_acquire().ok();
        if permit.is_none() {
            self.skipped.fetch_add(1, Ordering::Relaxed);
        }
        permit
    }

    /// Compares what the live version and the shadow returned for `event`;
    /// counts it, and samples it when they differ.
    pub(crate) fn observe(
        &self,
        event: &Event,
        live_version: &str,
        live: &Result<Reply, CallError>,
        shadow: &Result<Reply, CallError>,
    ) {
        let (live, shadow) = (comparable(live), comparable(shadow));
        let verdict = if live == shadow { "agree" } else { "differ" };
        metrics::counter!(
            "chorus_plugin_shadow_events_total",
            "plugin" => self.plugin.name().to_string(),
            "version" => self.plugin.version().to_string(),
            "verdict" => verdict
        )
        .increment(1);
        if live == shadow {
            self.agree.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.differ.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            plugin = self.plugin.name(),
            plugin_version = live_version,
            shadow_version = self.plugin.version(),
            action = %event.action,
            "shadow differs from the live version"
        );
        let sample = ShadowSample {
            at_ms: unix_ms(),
            action: event.action.clone(),
            source: event.source.as_str(),
            user_id: event.user_id,
            payload: event.payload.clone(),
            live_version: live_version.to_string(),
            live,
            shadow,
        };
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        if samples.len() == SHADOW_SAMPLES {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    pub(crate) fn status(&self, live_version: Option<&str>) -> ShadowStatus {
        let agree = self.agree.load(Ordering::Relaxed);
        let differ = self.differ.load(Ordering::Relaxed);
        let events = agree + differ;
        let percent = if events == 0 {
            100.0
        } else {
            agree as f64 * 100.0 / events as f64
        };
        let summary = if events == 0 {
            format!(
                "{} has seen no event yet beside {}",
                self.plugin.version(),
                live_version.unwrap_or("the live version"),
            )
        } else {
            format!(
                "{} agrees with {} on {agree} of {events} events ({percent:.1} %); {differ} differ",
                self.plugin.version(),
                live_version.unwrap_or("the live version"),
            )
        };
        let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        ShadowStatus {
            version: self.plugin.version().to_string(),
            sha256: self.plugin.sha256().to_string(),
            source: if self.from_file { "file" } else { "admin" },
            since_ms: self.since_ms,
            events,
            agree,
            differ,
            skipped: self.skipped.load(Ordering::Relaxed),
            summary,
            samples: samples.iter().cloned().collect(),
        }
    }
}

/// What a call returned, in the shape compared and sampled: its state
/// changes, notifications (without `msg_id`, which the host mints per
/// delivery) and emitted application events, or its error code. The `result` is not compared: only what
/// would change state or reach clients.
fn comparable(outcome: &Result<Reply, CallError>) -> Value {
    match outcome {
        Ok(reply) => {
            let changes = serde_json::to_value(&reply.changes).unwrap_or(Value::Null);
            let notifications: Vec<Value> = reply
                .notifications
                .iter()
                .map(|n| {
                    let mut body = n.body.to_map();
                    body.remove("msg_id");
                    json!({
                        "target": n.target,
                        "subject": n.subject,
                        "delivery": n.delivery,
                        "body": body,
                    })
                })
                .collect();
            let events: Vec<Value> = reply
                .events
                .iter()
                .map(|e| json!({"name": e.name, "body": e.body}))
                .collect();
            json!({"changes": changes, "notifications": notifications, "events": events})
        }
        Err(error) => json!({"error_code": error.code()}),
    }
}

/// One kept version in `/admin/plugins/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionStatus {
    /// The version it describes.
    pub version: String,
    /// Hex sha256 of its `.wasm`.
    pub sha256: String,
    /// Unix seconds when it was loaded.
    pub loaded_at: u64,
    /// Calls it served (all its lives, canary and shadow calls included).
    pub calls: u64,
    /// Of which failed (2002).
    pub errors: u64,
    /// 99th percentile call latency, µs (approximate).
    pub p99_us: u64,
    /// The largest linear memory an instance of it reached, bytes.
    pub peak_memory_bytes: u64,
    /// Median fuel a call consumed (wasmtime fuel, about one unit per
    /// WebAssembly instruction; approximate, within about 19 %); null when
    /// `plugins.meter_fuel` is off or no call ran.
    pub fuel_p50: Option<u64>,
    /// 99th percentile fuel per call, as `fuel_p50`.
    pub fuel_p99: Option<u64>,
    /// The contract (`chorus:plugin` world) it was built against:
    /// `1.0.0`, `1.1.0` or `1.2.0`.
    pub contract: &'static str,
    /// Whether it is the live version.
    pub active: bool,
}

impl VersionStatus {
    pub(crate) fn of(plugin: &LoadedPlugin, active: bool) -> Self {
        let stats = &plugin.compiled().stats;
        Self {
            version: plugin.version().to_string(),
            sha256: plugin.sha256().to_string(),
            loaded_at: plugin.loaded_at(),
            calls: stats.calls(),
            errors: stats.errors(),
            p99_us: stats.percentile_us(0.99),
            peak_memory_bytes: stats.peak_memory(),
            fuel_p50: stats.fuel_percentile(0.50),
            fuel_p99: stats.fuel_percentile(0.99),
            contract: plugin.compiled().pre.contract(),
            active,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_stable_and_spread() {
        // Fixed values: the hash decides which rooms a canary serves on
        // every node, so it must never change.
        assert_eq!(
            canary_bucket(""),
            (0xcbf2_9ce4_8422_2325u64 % 10_000) as u32
        );
        assert_eq!(canary_bucket("room-1"), canary_bucket("room-1"));
        let under_20 = (0..10_000)
            .filter(|i| canary_bucket(&format!("room-{i}")) < 2_000)
            .count();
        assert!((1_800..=2_200).contains(&under_20), "{under_20}");
    }

    /// Contract 1.2: two replies that differ only in the application
    /// events they emit are not the same to the shadow comparison.
    #[test]
    fn emitted_events_are_compared() {
        let reply = |events: Vec<crate::plugin::AppEvent>| -> Result<Reply, CallError> {
            Ok(Reply {
                result: json!({}),
                changes: Vec::new(),
                notifications: Vec::new(),
                events,
                plugin: "gift".into(),
                version: "1".into(),
            })
        };
        let sent = |num: u64| crate::plugin::AppEvent {
            name: "gift.sent".into(),
            body: crate::plugin::Body::from_map(
                json!({"num": num}).as_object().cloned().unwrap_or_default(),
            ),
        };
        assert_eq!(
            comparable(&reply(vec![sent(1)])),
            comparable(&reply(vec![sent(1)]))
        );
        assert_ne!(
            comparable(&reply(vec![sent(1)])),
            comparable(&reply(vec![sent(2)]))
        );
        assert_ne!(
            comparable(&reply(vec![sent(1)])),
            comparable(&reply(vec![]))
        );
        assert_eq!(
            comparable(&reply(vec![sent(3)]))["events"],
            json!([{"name": "gift.sent", "body": {"num": 3}}])
        );
    }

    fn objectives() -> Objectives {
        Objectives {
            max_error_rate: Some(0.05),
            max_p99: Some(Duration::from_millis(10)),
            window: Duration::from_secs(3600),
            min_calls: 20,
            probation: Duration::from_secs(3600),
        }
    }

    #[test]
    fn a_watch_trips_once_when_the_error_rate_passes_its_maximum() {
        let watch = Watch::over(WatchKind::Canary, "2", "sha", objectives());
        let fast = Duration::from_millis(1);
        for _ in 0..19 {
            assert_eq!(watch.record(fast, false), None);
        }
        // 1 of 20 is 5 %: not over the maximum.
        assert_eq!(watch.record(fast, true), None);
        let breach = watch.record(fast, true).expect("2 of 21 is over 5 %");
        assert_eq!(breach.reason, "error_rate");
        assert!(
            breach.detail.contains("2 of 21 calls failed"),
            "{}",
            breach.detail
        );
        assert_eq!(watch.record(fast, true), None, "one rollback per watch");
        assert!(!watch.status().judging);
    }

    #[test]
    fn a_watch_judges_p99_by_the_share_of_slow_calls_and_waits_for_min_calls() {
        let watch = Watch::over(WatchKind::Live, "2", "sha", objectives());
        let (fast, slow) = (Duration::from_millis(1), Duration::from_millis(11));
        for _ in 0..5 {
            assert_eq!(watch.record(slow, false), None, "under min_calls");
        }
        let watch = Watch::over(WatchKind::Live, "2", "sha", objectives());
        for _ in 0..99 {
            assert_eq!(watch.record(fast, false), None);
        }
        assert_eq!(watch.record(slow, false), None, "1 % is not over 1 %");
        let breach = watch.record(slow, false).expect("2 of 101 are slow");
        assert_eq!(breach.reason, "p99");
        let status = watch.status();
        assert_eq!((status.calls, status.slow, status.errors), (101, 2, 0));
        assert!(status.until_ms.is_some());
    }
}
