//! The plugin's configuration, `<name>.toml` beside its `.wasm`, as the host
//! hands it over: a JSON object (`{}` without a file).
//!
//! Configuration comes from the operator, not from clients, so a value of
//! the wrong type falls back to the default with a warning in the log
//! instead of failing every call.

use std::sync::OnceLock;

use serde_json::{Map, Value};

use crate::bindings::chorus::plugin::config;
use crate::log;

/// The configuration object of this plugin.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// The top-level keys of the configuration.
    values: Map<String, Value>,
}

impl Config {
    /// The configuration, read from the host once per instance.
    ///
    /// An instance never outlives its configuration: the host gives a
    /// changed `<name>.toml` a fresh pool of instances, so caching here is
    /// safe and saves a host call and a JSON parse on every event.
    pub fn load() -> &'static Self {
        static LOADED: OnceLock<Config> = OnceLock::new();
        LOADED.get_or_init(|| Self::parse(&config::get()))
    }

    /// Parses a configuration JSON object; anything else is taken as empty.
    pub fn parse(json: &str) -> Self {
        match serde_json::from_str::<Value>(json) {
            Ok(Value::Object(values)) => Self { values },
            _ => {
                log::warn("the host's configuration is not a JSON object; using defaults");
                Self::default()
            }
        }
    }

    /// The string at `key`, or `default` when absent or not a string.
    pub fn string(&self, key: &str, default: &str) -> String {
        match self.values.get(key) {
            Some(Value::String(value)) => value.clone(),
            None => default.to_string(),
            Some(_) => {
                log::warn(&format!(
                    "config key `{key}` is not a string; using the default"
                ));
                default.to_string()
            }
        }
    }

    /// The table at `key` (a TOML table is a JSON object here), or `None`
    /// when absent or not a table.
    pub fn object(&self, key: &str) -> Option<&Map<String, Value>> {
        match self.values.get(key) {
            Some(Value::Object(map)) => Some(map),
            None => None,
            Some(_) => {
                log::warn(&format!("config key `{key}` is not a table; ignoring it"));
                None
            }
        }
    }

    /// The unsigned integer at `key`, or `default` when absent or not one.
    pub fn u64(&self, key: &str, default: u64) -> u64 {
        match self.values.get(key) {
            None => default,
            Some(value) => value.as_u64().unwrap_or_else(|| {
                log::warn(&format!(
                    "config key `{key}` is not an unsigned integer; using the default"
                ));
                default
            }),
        }
    }

    /// The integer at `key` if it lies in `range`, else `default` (with a
    /// warning when present but not such an integer).
    pub fn i64_in(&self, key: &str, range: std::ops::RangeInclusive<i64>, default: i64) -> i64 {
        match self.values.get(key) {
            None => default,
            Some(value) => value
                .as_i64()
                .filter(|n| range.contains(n))
                .unwrap_or_else(|| {
                    log::warn(&format!(
                        "config key `{key}` is not an integer in {}..={}; using the default",
                        range.start(),
                        range.end()
                    ));
                    default
                }),
        }
    }
}
