//! Per-version call statistics: the counters and latency and fuel
//! percentiles of `/admin/plugins`, and the handles of the Prometheus
//! metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics::{Counter, Histogram};

use super::error::{CallError, FailureKind};

/// Sub-buckets per power of two: latencies are known to within about 19 %.
const SUB_BUCKETS: u32 = 4;
/// Enough buckets for values up to 2^39 (latencies of about 6 days in
/// µs, fuel of 5.5 * 10^11 units).
const BUCKETS: usize = 38 * SUB_BUCKETS as usize;

/// A lock-free log-scale histogram of `u64` values (four buckets per power
/// of two): percentiles to within about 19 %.
pub(crate) struct LogHistogram {
    buckets: [AtomicU64; BUCKETS],
}

impl LogHistogram {
    pub(crate) fn new() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Counts one value.
    pub(crate) fn record(&self, value: u64) {
        self.buckets[bucket_of(value)].fetch_add(1, Ordering::Relaxed);
    }

    /// The value under which `quantile` (0..=1) of the recorded values
    /// fall: the upper bound of the bucket holding that rank; `None`
    /// without values.
    pub(crate) fn percentile(&self, quantile: f64) -> Option<u64> {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        // The rank of the value at `quantile`, 1-based; a float is fine for
        // a figure that is itself approximate.
        let rank = ((total as f64) * quantile).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (index, count) in counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(upper_bound(index));
            }
        }
        Some(upper_bound(BUCKETS - 1))
    }
}

/// Counters and log-scale latency and fuel histograms of one version.
pub(crate) struct CallStats {
    calls: AtomicU64,
    errors: AtomicU64,
    /// The largest linear memory any instance of the version reached.
    peak_memory: AtomicU64,
    /// Call latencies, µs.
    latency: LogHistogram,
    /// Fuel each call consumed (with `plugins.meter_fuel` only).
    fuel: LogHistogram,
    /// The fuel the last metered call consumed, plus one (0: none yet).
    last_fuel: AtomicU64,
}

impl CallStats {
    pub(crate) fn new() -> Self {
        Self {
            calls: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            peak_memory: AtomicU64::new(0),
            latency: LogHistogram::new(),
            fuel: LogHistogram::new(),
            last_fuel: AtomicU64::new(0),
        }
    }

    /// Counts one call; `failed` when it ended in a [`CallError::Failed`].
    pub(crate) fn record(&self, elapsed: Duration, failed: bool) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.latency.record(micros);
    }

    /// Notes the fuel one call consumed (units of wasmtime fuel: about one
    /// per WebAssembly instruction).
    pub(crate) fn note_fuel(&self, fuel: u64) {
        self.fuel.record(fuel);
        self.last_fuel
            .store(fuel.saturating_add(1), Ordering::Relaxed);
    }

    /// The exact fuel of the last metered call, if any.
    pub(crate) fn last_fuel(&self) -> Option<u64> {
        self.last_fuel.load(Ordering::Relaxed).checked_sub(1)
    }

    /// The fuel under which `quantile` of the metered calls stayed; `None`
    /// when no call was metered (`plugins.meter_fuel` off, or no call).
    pub(crate) fn fuel_percentile(&self, quantile: f64) -> Option<u64> {
        self.fuel.percentile(quantile)
    }

    /// Notes the linear memory an instance had after a call, in bytes.
    pub(crate) fn note_memory(&self, bytes: u64) {
        self.peak_memory.fetch_max(bytes, Ordering::Relaxed);
    }

    /// The largest linear memory an instance of the version reached, bytes.
    pub(crate) fn peak_memory(&self) -> u64 {
        self.peak_memory.load(Ordering::Relaxed)
    }

    /// Calls so far.
    pub(crate) fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Failed calls (error 2002) so far.
    pub(crate) fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// The latency under which `quantile` (0..=1) of the calls finished, in
    /// µs: the upper bound of the bucket holding that rank (0 without calls).
    pub(crate) fn percentile_us(&self, quantile: f64) -> u64 {
        self.latency.percentile(quantile).unwrap_or(0)
    }
}

/// The bucket of a latency in µs: 0 to 3 exactly, then four buckets per
/// power of two.
fn bucket_of(micros: u64) -> usize {
    if micros < u64::from(SUB_BUCKETS) {
        return micros as usize;
    }
    let msb = 63 - micros.leading_zeros(); // >= 2
    let sub = (micros >> (msb - 2)) & 3;
    let index = (msb - 1) * SUB_BUCKETS + sub as u32;
    (index as usize).min(BUCKETS - 1)
}

/// The largest latency (µs) that falls in bucket `index`.
fn upper_bound(index: usize) -> u64 {
    let sub_buckets = SUB_BUCKETS as usize;
    if index < sub_buckets {
        return index as u64;
    }
    let msb = index / sub_buckets + 1;
    let sub = (index % sub_buckets) as u64;
    ((4 + sub + 1) << (msb - 2)) - 1
}

/// Handles of one version's Prometheus series, made once at load so a call
/// builds no label sets. The recorder must be installed before plugins
/// load; handles taken before that stay no-ops.
pub(crate) struct CallMetrics {
    ok: Counter,
    rejected: Counter,
    conflict: Counter,
    not_allowed: Counter,
    invalid: Counter,
    failed: Counter,
    duration: Histogram,
    /// `chorus_plugin_memory_bytes{plugin,version}`: the instance's peak
    /// linear memory after each call that ran.
    memory: Histogram,
    /// `chorus_plugin_fuel_per_call{plugin,version}`: the fuel each call
    /// that ran consumed (with `plugins.meter_fuel` only).
    fuel: Histogram,
    failures: [Counter; FailureKind::ALL.len()],
}

impl CallMetrics {
    pub(crate) fn new(plugin: &str, version: &str) -> Self {
        let (plugin, version) = (plugin.to_string(), version.to_string());
        let calls = |outcome: &'static str| {
            let labels = [
                ("plugin", plugin.clone()),
                ("version", version.clone()),
                ("outcome", outcome.into()),
            ];
            metrics::counter!("chorus_plugin_calls_total", &labels)
        };
        let failures = FailureKind::ALL.map(|kind| {
            let labels = [
                ("plugin", plugin.clone()),
                ("version", version.clone()),
                ("kind", kind.as_str().into()),
            ];
            metrics::counter!("chorus_plugin_failures_total", &labels)
        });
        let labels = [("plugin", plugin.clone()), ("version", version.clone())];
        Self {
            ok: calls("ok"),
            rejected: calls("rejected"),
            conflict: calls("conflict"),
            not_allowed: calls("not_allowed"),
            invalid: calls("invalid"),
            failed: calls("failed"),
            duration: metrics::histogram!("chorus_plugin_call_duration_seconds", &labels),
            memory: metrics::histogram!("chorus_plugin_memory_bytes", &labels),
            fuel: metrics::histogram!("chorus_plugin_fuel_per_call", &labels),
            failures,
        }
    }

    /// Records the peak linear memory of the instance a call ran on.
    pub(crate) fn record_memory(&self, bytes: u64) {
        self.memory.record(bytes as f64);
    }

    /// Records the fuel one call consumed.
    pub(crate) fn record_fuel(&self, fuel: u64) {
        self.fuel.record(fuel as f64);
    }

    /// Counts one call with its outcome and duration.
    pub(crate) fn record<T>(&self, outcome: &Result<T, CallError>, elapsed: Duration) {
        self.duration.record(elapsed.as_secs_f64());
        let counter = match outcome {
            Ok(_) => &self.ok,
            Err(CallError::Rejected(_)) => &self.rejected,
            Err(CallError::Conflict(_)) => &self.conflict,
            Err(CallError::NotAllowed(_)) => &self.not_allowed,
            Err(CallError::Invalid(_) | CallError::Missing(_)) => &self.invalid,
            Err(CallError::Failed(failure)) => {
                let kind = FailureKind::ALL
                    .iter()
                    .position(|k| *k == failure.kind)
                    .unwrap_or(0);
                self.failures[kind].increment(1);
                &self.failed
            }
        };
        counter.increment(1);
    }
}

/// Counts a load, reload, removal or rollback of a plugin.
pub(crate) fn count_reload(plugin: &str, outcome: &'static str) {
    let labels = [
        ("plugin", plugin.to_string()),
        ("outcome", outcome.to_string()),
    ];
    metrics::counter!("chorus_plugin_reloads_total", &labels).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_bound_their_values() {
        let mut last = 0;
        for micros in 0..100_000u64 {
            let bucket = bucket_of(micros);
            assert!(bucket >= last, "{micros}");
            assert!(micros <= upper_bound(bucket), "{micros} in bucket {bucket}");
            if bucket > 0 {
                assert!(
                    micros > upper_bound(bucket - 1),
                    "{micros} in bucket {bucket}"
                );
            }
            last = bucket;
        }
    }

    #[test]
    fn percentiles_follow_the_recorded_calls() {
        let stats = CallStats::new();
        for _ in 0..98 {
            stats.record(Duration::from_micros(10), false);
        }
        stats.record(Duration::from_millis(5), true);
        stats.record(Duration::from_millis(5), true);
        assert_eq!(stats.calls(), 100);
        assert_eq!(stats.errors(), 2);
        let p50 = stats.percentile_us(0.5);
        assert!((10..=12).contains(&p50), "{p50}");
        let p99 = stats.percentile_us(0.99);
        assert!((5000..=6200).contains(&p99), "{p99}");
        assert_eq!(stats.fuel_percentile(0.5), None);
        for fuel in [1_000, 1_000, 1_000, 400_000_000] {
            stats.note_fuel(fuel);
        }
        let p50 = stats.fuel_percentile(0.5).expect("metered");
        assert!((1_000..=1_200).contains(&p50), "{p50}");
        let p99 = stats.fuel_percentile(0.99).expect("metered");
        assert!((400_000_000..=480_000_000).contains(&p99), "{p99}");
    }
}
