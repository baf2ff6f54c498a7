//! [`Grants`]: what the operator lets one plugin use, from the `[grants]`
//! table of its `<name>.toml` (contract 1.1, issue 13 item 8).
//!
//! ```toml
//! [grants]
//! effects = ["seats", "kv"]          # effect groups, see `EffectGroup`
//! imports = ["room-state", "kv", "config", "clock", "log"]
//! ```
//!
//! An effect of a group the plugin is not granted fails that call with
//! 2002 (nothing of the reply is applied), and so does a call of an
//! import it is not granted; the log line and the reason name the missing
//! grant, and `chorus_plugin_ungranted_total{plugin, grant}` counts it.
//! Notifications to a user or a room need no grant.
//!
//! A `<name>.toml` without a `[grants]` table (or no file at all) grants
//! the contract 1.0 set: every effect group 1.0 had (`seats`, `calls`,
//! `notify-everyone`, `kv`) and every import, so a 1.0 plugin keeps working
//! unchanged; `timers` and `room-attributes` (new in 1.1) must be granted
//! explicitly. What 1.2 added is in the default too: the `metrics` import
//! (it only counts, bounded) and the `events` group (an emitted event goes
//! only to the operator's own app backend, and changes no state), so a
//! 1.2 plugin installed without its `<name>.toml`, such as a bundled
//! `gift.wasm` copied alone into `plugins.dir`, does not fail every call
//! that emits. A 1.0 or 1.1 plugin cannot name either. A `[grants]` table grants exactly what it lists
//! (a missing `effects` or `imports` key grants none of that kind).

use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;
use serde_json::Value;

use super::error::PluginError;

/// A group of effects granted together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EffectGroup {
    /// `join-room`, `leave-room`, `take-seat`, `free-seat`, `set-seat`.
    Seats,
    /// `start-call`, `end-call`.
    Calls,
    /// `set-timer`, `cancel-timer` (1.1).
    Timers,
    /// A notification whose target is `everyone`.
    NotifyEveryone,
    /// `set-room-attr` (1.1).
    RoomAttributes,
    /// `kv-set`, `kv-delete`, `kv-put`, `kv-incr`.
    Kv,
    /// `emit` (1.2): application events for the app backend's webhooks.
    Events,
}

/// An import interface granted as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Import {
    /// `room-state`.
    RoomState,
    /// `profiles` (1.1).
    Profiles,
    /// `kv` (reads).
    Kv,
    /// `config`.
    Config,
    /// `clock`.
    Clock,
    /// `log`.
    Log,
    /// `metrics` (1.2): the plugin's own Prometheus counters and histograms.
    Metrics,
}

impl EffectGroup {
    /// Every group, in the order `plugin check` lists them.
    pub const ALL: [EffectGroup; 7] = [
        EffectGroup::Seats,
        EffectGroup::Calls,
        EffectGroup::Timers,
        EffectGroup::NotifyEveryone,
        EffectGroup::RoomAttributes,
        EffectGroup::Kv,
        EffectGroup::Events,
    ];

    /// Its name in `[grants] effects`.
    pub fn as_str(self) -> &'static str {
        match self {
            EffectGroup::Seats => "seats",
            EffectGroup::Calls => "calls",
            EffectGroup::Timers => "timers",
            EffectGroup::NotifyEveryone => "notify-everyone",
            EffectGroup::RoomAttributes => "room-attributes",
            EffectGroup::Kv => "kv",
            EffectGroup::Events => "events",
        }
    }
}

impl Import {
    /// Every import, in the order `plugin check` lists them.
    pub const ALL: [Import; 7] = [
        Import::RoomState,
        Import::Profiles,
        Import::Kv,
        Import::Config,
        Import::Clock,
        Import::Log,
        Import::Metrics,
    ];

    /// Its name in `[grants] imports` (the WIT interface's name).
    pub fn as_str(self) -> &'static str {
        match self {
            Import::RoomState => "room-state",
            Import::Profiles => "profiles",
            Import::Kv => "kv",
            Import::Config => "config",
            Import::Clock => "clock",
            Import::Log => "log",
            Import::Metrics => "metrics",
        }
    }
}

impl fmt::Display for EffectGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Import {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one plugin (with one config) may use; `chorus plugin check`
/// prints it as `{"effects":[…],"imports":[…],"explicit":bool}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Grants {
    /// Granted effect groups.
    pub effects: BTreeSet<EffectGroup>,
    /// Granted imports.
    pub imports: BTreeSet<Import>,
    /// Whether they come from a `[grants]` table (false: the 1.0 default).
    pub explicit: bool,
}

impl Grants {
    /// The default without a `[grants]` table: what contract 1.0 offered,
    /// and the `events` group and `metrics` import of 1.2.
    pub fn legacy() -> Self {
        Self {
            effects: [
                EffectGroup::Seats,
                EffectGroup::Calls,
                EffectGroup::NotifyEveryone,
                EffectGroup::Kv,
                EffectGroup::Events,
            ]
            .into(),
            imports: Import::ALL.into(),
            explicit: false,
        }
    }

    /// Everything (for `describe`, which runs before any config applies).
    pub(crate) fn all() -> Self {
        Self {
            effects: EffectGroup::ALL.into(),
            imports: Import::ALL.into(),
            explicit: true,
        }
    }

    /// The grants of a plugin config (`<name>.toml` as a JSON object).
    /// Errors: `grants` is not a table, a key other than `effects` and
    /// `imports`, a value that is not a list of known names.
    pub fn from_config(config: &str) -> Result<Self, PluginError> {
        let bad = |m: String| PluginError::Config(format!("[grants]: {m}"));
        let value: Value = serde_json::from_str(config).map_err(|e| bad(e.to_string()))?;
        let Some(grants) = value.get("grants") else {
            return Ok(Self::legacy());
        };
        let Value::Object(table) = grants else {
            return Err(bad("must be a table".into()));
        };
        if let Some(key) = table.keys().find(|k| *k != "effects" && *k != "imports") {
            return Err(bad(format!(
                "unknown key `{key}` (known: effects, imports)"
            )));
        }
        Ok(Self {
            effects: names(table.get("effects"), "effects", &EffectGroup::ALL, |g| {
                g.as_str()
            })
            .map_err(bad)?,
            imports: names(table.get("imports"), "imports", &Import::ALL, |i| {
                i.as_str()
            })
            .map_err(bad)?,
            explicit: true,
        })
    }

    /// Whether effects of `group` are granted.
    pub fn effect(&self, group: EffectGroup) -> bool {
        self.effects.contains(&group)
    }

    /// Whether `import` is granted.
    pub fn import(&self, import: Import) -> bool {
        self.imports.contains(&import)
    }
}

/// The set named by a list of strings, each one of `known`.
fn names<T: Copy + Ord>(
    value: Option<&Value>,
    key: &str,
    known: &[T],
    name: impl Fn(T) -> &'static str,
) -> Result<BTreeSet<T>, String> {
    let Some(value) = value else {
        return Ok(BTreeSet::new());
    };
    let Value::Array(items) = value else {
        return Err(format!("`{key}` must be a list of names"));
    };
    let mut set = BTreeSet::new();
    for item in items {
        let text = item
            .as_str()
            .ok_or_else(|| format!("`{key}` must be a list of names"))?;
        let found = known.iter().find(|k| name(**k) == text).ok_or_else(|| {
            let all: Vec<&str> = known.iter().map(|k| name(*k)).collect();
            format!("unknown {key} grant `{text}` (known: {})", all.join(", "))
        })?;
        set.insert(*found);
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_table_is_the_1_0_set_and_a_table_grants_what_it_lists() {
        assert_eq!(Grants::from_config("{}").unwrap(), Grants::legacy());
        assert!(!Grants::legacy().effect(EffectGroup::Timers));
        let g = Grants::from_config(r#"{"grants":{"effects":["timers","kv"]}}"#).unwrap();
        assert!(g.effect(EffectGroup::Timers) && g.effect(EffectGroup::Kv));
        assert!(!g.effect(EffectGroup::Seats));
        assert!(g.imports.is_empty());
        for bad in [
            r#"{"grants":3}"#,
            r#"{"grants":{"effect":["kv"]}}"#,
            r#"{"grants":{"effects":["kv","teleport"]}}"#,
            r#"{"grants":{"imports":"kv"}}"#,
        ] {
            let error = Grants::from_config(bad).expect_err(bad).to_string();
            assert!(error.contains("[grants]"), "{error}");
        }
    }
}
