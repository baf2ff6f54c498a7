//! A plugin's own Prometheus metrics (contract 1.2 `metrics` import; the
//! plugin's `<name>.toml` must grant the import `metrics` when it has a
//! `[grants]` table).
//!
//! ```ignore
//! chorus_plugin_sdk::metrics::counter("gifts_sent", &[("notify_type", "bc")], 1);
//! chorus_plugin_sdk::metrics::histogram("gift_num", &[], 3.0);
//! ```
//!
//! The host exports them as `chorus_plugin_custom_total` (counters) and
//! `chorus_plugin_custom_value` (histograms) with the labels `plugin`,
//! `version`, `metric` (the name given here) and these labels. Names and
//! label names are `[a-z][a-z0-9_]*` of at most 64 bytes, label values at
//! most 128 bytes, at most 4 labels (not `plugin`, `version` or
//! `metric`), and a plugin has at most `plugins.max_metric_series`
//! distinct series: anything beyond is dropped by the host and counted,
//! never an error of the call. Keep label values to a small fixed set
//! (a gift tier, a `notify_type`), never a user or room id.

use crate::imports::metrics::{counter_add, histogram_observe};

fn owned(labels: &[(&str, &str)]) -> Vec<(String, String)> {
    labels
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

/// Adds `delta` to the counter `name` with `labels`.
pub fn counter(name: &str, labels: &[(&str, &str)], delta: u64) {
    counter_add(name, &owned(labels), delta);
}

/// Records one observation `value` of the histogram `name` with `labels`
/// (a NaN or infinite value is dropped by the host).
pub fn histogram(name: &str, labels: &[(&str, &str)], value: f64) {
    histogram_observe(name, &owned(labels), value);
}
