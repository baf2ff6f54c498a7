//! The contract 1.2 `metrics` import: a plugin's own counters and
//! histograms, bounded so that no plugin can flood `/metrics`.
//!
//! During a call the import only checks and buffers what the plugin
//! records ([`MetricBuffer`], in the instance's view); when the call
//! returns, [`SeriesTable::record`] admits each observation's series
//! against the plugin's bound and records it, except for a shadow call,
//! whose observations are dropped (a shadow applies nothing).
//!
//! Exported as two families, whatever the plugin names its metrics:
//! `chorus_plugin_custom_total` (counters) and `chorus_plugin_custom_value`
//! (histograms, rendered as summaries), labelled `plugin`, `version`,
//! `metric` and the plugin's own labels. One family with a `metric` label
//! rather than a family per name (`chorus_plugin_custom_<name>`): two
//! plugins may then use one name with different kinds or label sets
//! without producing an exposition Prometheus refuses, a plugin cannot
//! shadow a host metric's name, and a dashboard can chart every plugin's
//! metrics with one query.
//!
//! Refusals are counted in
//! `chorus_plugin_metric_series_refused_total{plugin, reason}`, `reason`
//! one of `invalid` (a name, label or value outside the bounds),
//! `series_limit` (one series more than `plugins.max_metric_series`) and
//! `per_call_limit` (more than [`MAX_PER_CALL`] records in one call).

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};

use super::bindings::chorus::plugin::metrics::Host;
use super::grants::Import;
use super::view::PluginView;

/// The longest metric or label name, in bytes.
const MAX_NAME_BYTES: usize = 64;
/// The longest label value, in bytes.
const MAX_VALUE_BYTES: usize = 128;
/// Labels of one record at most.
pub(crate) const MAX_LABELS: usize = 4;
/// Records of one call at most; more are dropped (`per_call_limit`).
pub(crate) const MAX_PER_CALL: usize = 64;
/// Label names the host sets itself, and those Prometheus gives a meaning
/// (`quantile` of a summary, `le` of a histogram): a plugin's `quantile`
/// beside the summary's own made a series with a duplicate label, which
/// Prometheus refuses with the whole scrape of the node.
const RESERVED_LABELS: [&str; 5] = ["plugin", "version", "metric", "quantile", "le"];
/// The largest counter delta and histogram magnitude, 2^53: beyond it a
/// float sample loses integer precision, and a few records could wrap a
/// counter or make a sum infinite.
const MAX_AMOUNT: f64 = 9_007_199_254_740_992.0;

/// Whether a series counts or observes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Counter,
    Histogram,
}

/// What one record adds to its series.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Amount {
    /// A counter's delta.
    Add(u64),
    /// A histogram's observed value (finite).
    Observe(f64),
}

impl Amount {
    fn kind(self) -> Kind {
        match self {
            Amount::Add(_) => Kind::Counter,
            Amount::Observe(_) => Kind::Histogram,
        }
    }
}

/// One record of a call, checked, not yet admitted.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Observation {
    name: String,
    /// Sorted by name, so a label set names one series whatever its order.
    labels: Vec<(String, String)>,
    amount: Amount,
}

/// What one call recorded, in order, for [`SeriesTable::record`].
#[derive(Debug, Default)]
pub(crate) struct MetricBuffer {
    observations: Vec<Observation>,
}

impl MetricBuffer {
    /// Forgets what the previous call recorded.
    pub(crate) fn clear(&mut self) {
        self.observations.clear();
    }

    /// Takes what the call recorded.
    pub(crate) fn take(&mut self) -> Vec<Observation> {
        std::mem::take(&mut self.observations)
    }
}

/// One series of a plugin: kind, metric name and sorted labels (the
/// version aside: the bound is on what the plugin chooses).
type SeriesKey = (Kind, String, Vec<(String, String)>);

/// The series every plugin created, by plugin name, all versions
/// together, and the bound on their number.
pub(crate) struct SeriesTable {
    max_series: usize,
    known: Mutex<HashMap<String, PluginSeries>>,
}

/// The series of one plugin: the keys it created (what the bound counts)
/// and, per version, the registered handle of each, so that recording a
/// known series is one map lookup and an atomic add, with no label
/// allocated and no lookup in the exporter's registry (issue 20 item 1).
#[derive(Default)]
struct PluginSeries {
    keys: HashSet<SeriesKey>,
    handles: HashMap<String, HashMap<SeriesKey, Handle>>,
}

/// A registered series.
enum Handle {
    Counter(metrics::Counter),
    Histogram(metrics::Histogram),
}

impl SeriesTable {
    pub(crate) fn new(max_series: usize) -> Self {
        Self {
            max_series,
            known: Mutex::new(HashMap::new()),
        }
    }

    /// Records what a call of `plugin` at `version` recorded: each
    /// observation whose series is known or still fits the bound; the
    /// others are dropped and counted.
    pub(crate) fn record(&self, plugin: &str, version: &str, observations: Vec<Observation>) {
        if observations.is_empty() {
            return;
        }
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        if !known.contains_key(plugin) {
            known.insert(plugin.to_string(), PluginSeries::default());
        }
        let Some(series) = known.get_mut(plugin) else {
            return;
        };
        for o in observations {
            let key = (o.amount.kind(), o.name, o.labels);
            // A series this version recorded before: one lookup (its key is
            // in `keys`, which a handle is only made after). The slow path
            // below hashed the key three times (issue 20 item 1).
            if let Some(handle) = series.handles.get(version).and_then(|h| h.get(&key)) {
                apply(handle, o.amount);
                continue;
            }
            if !series.keys.contains(&key) {
                if series.keys.len() >= self.max_series {
                    refused(plugin, "series_limit");
                    continue;
                }
                series.keys.insert(key.clone());
            }
            if !series.handles.contains_key(version) {
                series.handles.insert(version.to_string(), HashMap::new());
            }
            let Some(handles) = series.handles.get_mut(version) else {
                continue;
            };
            if !handles.contains_key(&key) {
                let handle = register(plugin, version, &key);
                handles.insert(key.clone(), handle);
            }
            let Some(handle) = handles.get(&key) else {
                continue;
            };
            apply(handle, o.amount);
        }
    }

    /// Distinct series `plugin` has created (for tests).
    #[cfg(test)]
    pub(crate) fn series_of(&self, plugin: &str) -> usize {
        let known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        known.get(plugin).map_or(0, |series| series.keys.len())
    }
}

/// Adds `amount` to the series of `handle`.
fn apply(handle: &Handle, amount: Amount) {
    match (handle, amount) {
        (Handle::Counter(counter), Amount::Add(delta)) => counter.increment(delta),
        (Handle::Histogram(histogram), Amount::Observe(value)) => histogram.record(value),
        // The key holds the kind: a handle always matches its amount.
        _ => {}
    }
}

/// Registers the series `key` of `plugin` at `version` with the
/// exporter: its family by kind, labelled `plugin`, `version`, `metric`
/// and the plugin's own labels.
fn register(plugin: &str, version: &str, key: &SeriesKey) -> Handle {
    let (kind, name, own) = key;
    let mut labels = vec![
        metrics::Label::new("plugin", plugin.to_string()),
        metrics::Label::new("version", version.to_string()),
        metrics::Label::new("metric", name.clone()),
    ];
    labels.extend(
        own.iter()
            .map(|(k, v)| metrics::Label::new(k.clone(), v.clone())),
    );
    match kind {
        Kind::Counter => Handle::Counter(metrics::counter!("chorus_plugin_custom_total", labels)),
        Kind::Histogram => {
            Handle::Histogram(metrics::histogram!("chorus_plugin_custom_value", labels))
        }
    }
}

/// Counts a dropped record.
fn refused(plugin: &str, reason: &'static str) {
    metrics::counter!(
        "chorus_plugin_metric_series_refused_total",
        "plugin" => plugin.to_string(),
        "reason" => reason
    )
    .increment(1);
}

/// Whether `name` is `[a-z][a-z0-9_]*` of at most 64 bytes.
fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    name.len() <= MAX_NAME_BYTES
        && bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// A record, checked against the contract's bounds; `None` when outside.
fn check(name: String, mut labels: Vec<(String, String)>, amount: Amount) -> Option<Observation> {
    let finite = match amount {
        Amount::Add(delta) => (delta as f64) <= MAX_AMOUNT,
        Amount::Observe(value) => value.is_finite() && value.abs() <= MAX_AMOUNT,
    };
    if !valid_name(&name) || labels.len() > MAX_LABELS || !finite {
        return None;
    }
    labels.sort();
    let well_formed = labels.iter().all(|(k, v)| {
        // An empty value is the same series as no label at all to
        // Prometheus: refused, so one series is never exported twice.
        valid_name(k)
            && !RESERVED_LABELS.contains(&k.as_str())
            && !v.is_empty()
            && v.len() <= MAX_VALUE_BYTES
    });
    let distinct = labels.windows(2).all(|pair| pair[0].0 != pair[1].0);
    (well_formed && distinct).then_some(Observation {
        name,
        labels,
        amount,
    })
}

impl PluginView {
    /// Buffers one record of the current call, or drops and counts it.
    fn note_metric(&mut self, name: String, labels: Vec<(String, String)>, amount: Amount) {
        let plugin = &self.identity.plugin;
        if self.metrics.observations.len() >= MAX_PER_CALL {
            refused(plugin, "per_call_limit");
            return;
        }
        match check(name, labels, amount) {
            Some(observation) => self.metrics.observations.push(observation),
            None => refused(plugin, "invalid"),
        }
    }
}

impl Host for PluginView {
    async fn counter_add(
        &mut self,
        name: String,
        labels: Vec<(String, String)>,
        delta: u64,
    ) -> wasmtime::Result<()> {
        self.require(Import::Metrics)?;
        self.note_metric(name, labels, Amount::Add(delta));
        Ok(())
    }

    async fn histogram_observe(
        &mut self,
        name: String,
        labels: Vec<(String, String)>,
        value: f64,
    ) -> wasmtime::Result<()> {
        self.require(Import::Metrics)?;
        self.note_metric(name, labels, Amount::Observe(value));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn records_outside_the_bounds_are_refused() {
        let ok = |name: &str, l: &[(&str, &str)]| {
            check(name.into(), labels(l), Amount::Add(1)).is_some()
        };
        assert!(ok("gifts_sent", &[("tier", "gold")]));
        assert!(ok(&"a".repeat(64), &[]));
        assert!(!ok(&"a".repeat(65), &[]));
        for bad in ["", "Gifts", "1st", "gifts-sent", "gifts.sent", "gifts sent"] {
            assert!(!ok(bad, &[]), "{bad:?}");
        }
        assert!(!ok("m", &[("plugin", "x")]));
        assert!(!ok("m", &[("Tier", "x")]));
        assert!(!ok("m", &[("a", "1"), ("a", "2")]));
        assert!(!ok(
            "m",
            &[("a", "1"), ("b", "1"), ("c", "1"), ("d", "1"), ("e", "1")]
        ));
        assert!(!ok("m", &[("a", &"v".repeat(129))]));
        assert!(check("m".into(), vec![], Amount::Observe(f64::NAN)).is_none());
        // Review: Prometheus's own label names (a duplicate `quantile`
        // made Prometheus refuse the node's whole scrape), an empty value
        // (the same series as none), amounts past 2^53.
        assert!(!ok("m", &[("quantile", "0.5")]));
        assert!(!ok("m", &[("le", "1")]));
        assert!(!ok("m", &[("tier", "")]));
        assert!(check("m".into(), vec![], Amount::Add(u64::MAX)).is_none());
        assert!(check("m".into(), vec![], Amount::Add(1 << 53)).is_some());
        assert!(check("m".into(), vec![], Amount::Observe(1e308)).is_none());
        assert!(check("m".into(), vec![], Amount::Observe(-1e15)).is_some());
        // Label order does not make another series.
        let one = check(
            "m".into(),
            labels(&[("b", "1"), ("a", "2")]),
            Amount::Add(1),
        );
        let two = check(
            "m".into(),
            labels(&[("a", "2"), ("b", "1")]),
            Amount::Add(1),
        );
        assert_eq!(one, two);
    }

    #[test]
    fn series_past_the_bound_are_dropped_and_known_ones_still_count() {
        let table = SeriesTable::new(2);
        let counter = |tier: &str| {
            check("m".into(), labels(&[("tier", tier)]), Amount::Add(1)).expect("valid")
        };
        table.record("p", "1", vec![counter("a"), counter("b"), counter("c")]);
        assert_eq!(table.series_of("p"), 2);
        table.record("p", "2", vec![counter("a"), counter("d")]);
        assert_eq!(table.series_of("p"), 2);
        // Another plugin has its own bound.
        table.record("q", "1", vec![counter("c")]);
        assert_eq!(table.series_of("q"), 1);
    }
}
