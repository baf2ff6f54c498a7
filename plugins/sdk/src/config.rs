//! The plugin's configuration, `<name>.toml` beside its `.wasm`, as the host
//! hands it over: a JSON object (`{}` without a file).
//!
//! Configuration comes from the operator, not from clients, so a value of
//! the wrong type falls back to the default with a warning in the log
//! instead of failing every call.

#[cfg(target_arch = "wasm32")]
use std::sync::OnceLock;

use std::time::Duration;

use serde_json::{Map, Value};

use crate::imports::config;
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
    ///
    /// On native targets (a plugin's `cargo test`) it is read from the
    /// running [`crate::testing::FakeHost`] on every call instead, so each
    /// test may set its own configuration.
    #[cfg(target_arch = "wasm32")]
    pub fn load() -> &'static Self {
        static LOADED: OnceLock<Config> = OnceLock::new();
        LOADED.get_or_init(|| Self::parse(&config::get()))
    }

    /// See the `wasm32` version: read afresh from the running fake host
    /// (leaked: a test process is short-lived).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn load() -> &'static Self {
        Box::leak(Box::new(Self::parse(&config::get())))
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

    /// The signed integer at `key`, or `default` when absent or not one.
    pub fn i64(&self, key: &str, default: i64) -> i64 {
        self.typed(key, "an integer", default, Value::as_i64)
    }

    /// The number at `key` (a TOML float or integer), or `default` when
    /// absent or not a number.
    pub fn f64(&self, key: &str, default: f64) -> f64 {
        self.typed(key, "a number", default, Value::as_f64)
    }

    /// The boolean at `key`, or `default` when absent or not one.
    pub fn bool(&self, key: &str, default: bool) -> bool {
        self.typed(key, "a boolean", default, Value::as_bool)
    }

    /// The duration at `key`, or `default` when absent or not one: a
    /// string of a whole number and a unit (`"250ms"`, `"30s"`, `"5m"`,
    /// `"2h"`, `"1d"`), or an integer of seconds.
    pub fn duration(&self, key: &str, default: Duration) -> Duration {
        self.typed(
            key,
            "a duration such as \"30s\"",
            default,
            |value| match value {
                Value::Number(n) => n.as_u64().map(Duration::from_secs),
                Value::String(s) => parse_duration(s),
                _ => None,
            },
        )
    }

    /// The list of strings at `key`, or `default` when absent or not a
    /// list of strings.
    pub fn strings(&self, key: &str, default: &[&str]) -> Vec<String> {
        let default = || default.iter().map(|s| s.to_string()).collect();
        self.typed(key, "a list of strings", default(), |value| {
            value
                .as_array()?
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect()
        })
    }

    /// The list of unsigned integers at `key`, or `default` when absent or
    /// not such a list.
    pub fn u64s(&self, key: &str, default: &[u64]) -> Vec<u64> {
        self.typed(
            key,
            "a list of unsigned integers",
            default.to_vec(),
            |value| value.as_array()?.iter().map(Value::as_u64).collect(),
        )
    }

    /// The value at `key` read by `read`; `default` when absent, and with
    /// a warning naming `what` was expected when `read` refuses it.
    fn typed<T>(&self, key: &str, what: &str, default: T, read: impl Fn(&Value) -> Option<T>) -> T {
        match self.values.get(key) {
            None => default,
            Some(value) => read(value).unwrap_or_else(|| {
                log::warn(&format!(
                    "config key `{key}` is not {what}; using the default"
                ));
                default
            }),
        }
    }
}

/// `"250ms"`, `"30s"`, `"5m"`, `"2h"`, `"1d"`: a whole number and a unit.
fn parse_duration(text: &str) -> Option<Duration> {
    let digits = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(digits);
    let n: u64 = number.parse().ok()?;
    let ms = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(ms).map(Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(value: Value) -> Config {
        Config::parse(&value.to_string())
    }

    #[test]
    fn typed_getters_read_their_type_and_default_otherwise() {
        let c = config(json!({
            "offset": -90, "ratio": 0.25, "whole": 2, "on": true,
            "timeout": "90s", "short": "250ms", "secs": 5,
            "names": ["a", "b"], "ids": [3, 4], "bad": "x",
        }));
        assert_eq!(c.i64("offset", 0), -90);
        assert_eq!(c.f64("ratio", 1.0), 0.25);
        assert_eq!(c.f64("whole", 1.0), 2.0);
        assert!(c.bool("on", false));
        assert_eq!(
            c.duration("timeout", Duration::ZERO),
            Duration::from_secs(90)
        );
        assert_eq!(
            c.duration("short", Duration::ZERO),
            Duration::from_millis(250)
        );
        assert_eq!(c.duration("secs", Duration::ZERO), Duration::from_secs(5));
        assert_eq!(c.strings("names", &[]), vec!["a", "b"]);
        assert_eq!(c.u64s("ids", &[]), vec![3, 4]);
        assert_eq!(c.u64s("absent", &[9]), vec![9]);
    }
}
