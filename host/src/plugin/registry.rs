//! Which version of each plugin serves: the [`Registry`] of plugins by
//! name (active version, previous good version, last error) and the route
//! table derived from it.
//!
//! The route table is rebuilt from the registry after every change and
//! swapped wholesale through `ArcSwap`: readers never lock, and a reader
//! sees either the old table or the new one, never half of each.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use arc_swap::ArcSwap;
use serde::Serialize;

use super::breaker::{BreakerState, BreakerStatus};
use super::check::Description;
use super::loaded::LoadedPlugin;
use super::{PluginError, Source};

/// What a load, reload, removal or rollback did to one plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum LoadOutcome {
    /// A new version serves.
    Loaded {
        /// The plugin.
        name: String,
        /// The version now serving.
        version: String,
        /// Hex sha256 of its `.wasm`.
        sha256: String,
    },
    /// The same version serves with a new config.
    Reconfigured {
        /// The plugin.
        name: String,
        /// The version serving.
        version: String,
    },
    /// Nothing changed since the last load.
    Unchanged {
        /// The plugin.
        name: String,
    },
    /// Its file is gone: it no longer serves.
    Removed {
        /// The plugin.
        name: String,
    },
    /// The file could not be loaded; the previous version (if any) serves.
    Failed {
        /// The plugin.
        name: String,
        /// Why.
        error: String,
    },
}

impl LoadOutcome {
    /// The plugin concerned.
    pub fn name(&self) -> &str {
        match self {
            LoadOutcome::Loaded { name, .. }
            | LoadOutcome::Reconfigured { name, .. }
            | LoadOutcome::Unchanged { name }
            | LoadOutcome::Removed { name }
            | LoadOutcome::Failed { name, .. } => name,
        }
    }
}

/// Whether a plugin serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginState {
    /// A version serves (a failed reload leaves it active, with
    /// `last_error` set).
    Active,
    /// No version serves: its file never loaded.
    Failed,
}

/// One plugin as `/admin/plugins` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PluginStatus {
    /// The plugin's name.
    pub name: String,
    /// The version serving (empty when none does and none was described).
    pub version: String,
    /// Hex sha256 of the serving version's `.wasm` (or of the file that
    /// failed, when none serves).
    pub sha256: String,
    /// Actions and system events handled.
    pub actions: Vec<String>,
    /// `active` or `failed`.
    pub status: PluginState,
    /// Unix seconds when the serving version went live (0 when none).
    pub loaded_at: u64,
    /// Why the last load of its file failed, if it did.
    pub last_error: Option<String>,
    /// Calls served by this version.
    pub calls: u64,
    /// Of which failed (error 2002).
    pub errors: u64,
    /// Median call latency, µs (approximate, within about 19 %).
    pub p50_us: u64,
    /// 99th percentile call latency, µs (approximate).
    pub p99_us: u64,
    /// Calls of the serving version in flight now.
    pub in_flight: u64,
    /// The serving version's circuit breaker: whether it is tripped, and
    /// until when.
    pub breaker: BreakerStatus,
}

impl PluginStatus {
    fn of(plugin: &LoadedPlugin, last_error: Option<String>) -> Self {
        let stats = &plugin.compiled().stats;
        Self {
            name: plugin.name().to_string(),
            version: plugin.version().to_string(),
            sha256: plugin.sha256().to_string(),
            actions: plugin.description().action_names(),
            status: PluginState::Active,
            loaded_at: plugin.loaded_at(),
            last_error,
            calls: stats.calls(),
            errors: stats.errors(),
            p50_us: stats.percentile_us(0.50),
            p99_us: stats.percentile_us(0.99),
            in_flight: u64::try_from(plugin.compiled().in_flight()).unwrap_or(u64::MAX),
            breaker: plugin.compiled().breaker.status(),
        }
    }
}

/// What the files of a plugin looked like when last processed: a rescan
/// skips a plugin whose files still look the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    /// Hex sha256 of the `.wasm`.
    pub(crate) wasm: String,
    /// The `.toml` text, if there is one.
    pub(crate) config: Option<String>,
}

/// One plugin by name.
#[derive(Default)]
struct Entry {
    /// The version serving.
    active: Option<Arc<LoadedPlugin>>,
    /// The previous good version, kept compiled for rollback.
    previous: Option<Arc<LoadedPlugin>>,
    /// Why the last load failed (cleared by a successful one).
    last_error: Option<String>,
    /// Files last processed, successfully or not.
    seen: Option<Fingerprint>,
}

/// The plugins by name, and the route table.
pub(crate) struct Registry {
    entries: Mutex<BTreeMap<String, Entry>>,
    routes: ArcSwap<Routes>,
}

/// Who serves what, rebuilt on every change.
#[derive(Default)]
struct Routes {
    client: HashMap<String, Arc<LoadedPlugin>>,
    server: HashMap<String, Arc<LoadedPlugin>>,
    /// System events go to every plugin listing them, in name order.
    system: HashMap<String, Vec<Arc<LoadedPlugin>>>,
}

impl Registry {
    pub(crate) fn new() -> Self {
        Self {
            entries: Mutex::new(BTreeMap::new()),
            routes: ArcSwap::from_pointee(Routes::default()),
        }
    }

    /// The version serving `action` from `source`.
    pub(crate) fn route(&self, action: &str, source: Source) -> Option<Arc<LoadedPlugin>> {
        let routes = self.routes.load();
        match source {
            Source::Client => routes.client.get(action).cloned(),
            Source::Server => routes.server.get(action).cloned(),
            Source::System => routes.system.get(action).and_then(|p| p.first()).cloned(),
        }
    }

    /// Every version listing the system event.
    pub(crate) fn subscribers(&self, event: &str) -> Vec<Arc<LoadedPlugin>> {
        self.routes
            .load()
            .system
            .get(event)
            .cloned()
            .unwrap_or_default()
    }

    /// Whether any version handles `action` from any source.
    pub(crate) fn handles(&self, action: &str) -> bool {
        let routes = self.routes.load();
        routes.client.contains_key(action)
            || routes.server.contains_key(action)
            || routes.system.contains_key(action)
    }

    /// The names of every plugin known (serving or failed).
    pub(crate) fn names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// The version of `name` serving now.
    pub(crate) fn active(&self, name: &str) -> Option<Arc<LoadedPlugin>> {
        self.lock().get(name).and_then(|e| e.active.clone())
    }

    /// Whether `name`'s files are unchanged since they were last processed.
    /// With `retry_failed`, files whose last load failed count as changed.
    pub(crate) fn unchanged(&self, name: &str, files: &Fingerprint, retry_failed: bool) -> bool {
        let entries = self.lock();
        let Some(entry) = entries.get(name) else {
            return false;
        };
        entry.seen.as_ref() == Some(files) && !(retry_failed && entry.last_error.is_some())
    }

    /// The first (action, source) of `description` that another plugin's
    /// serving version already claims from a client or server source.
    pub(crate) fn conflict(&self, description: &Description) -> Option<PluginError> {
        let entries = self.lock();
        Self::conflict_in(&entries, description)
    }

    fn conflict_in(
        entries: &BTreeMap<String, Entry>,
        description: &Description,
    ) -> Option<PluginError> {
        let others = entries
            .iter()
            .filter(|(name, _)| **name != description.name)
            .filter_map(|(_, e)| e.active.as_ref());
        for other in others {
            let clash = description
                .claims()
                .filter(|(_, source)| *source != Source::System)
                .find(|(action, source)| other.accepts(action, *source));
            if let Some((action, source)) = clash {
                return Some(PluginError::DuplicateAction {
                    action: action.to_string(),
                    origin: source.as_str(),
                    owner: other.name().to_string(),
                });
            }
        }
        None
    }

    /// Makes `plugin` the serving version of its name. A new version pushes
    /// the old one to `previous` (for rollback); a new config of the same
    /// version keeps `previous` as it was.
    pub(crate) fn activate(&self, plugin: Arc<LoadedPlugin>, files: Option<Fingerprint>) {
        let mut entries = self.lock();
        let entry = entries.entry(plugin.name().to_string()).or_default();
        if let Some(old) = entry.active.take() {
            old.retire();
            if old.sha256() != plugin.sha256() {
                entry.previous = Some(old);
            }
        }
        entry.active = Some(plugin);
        entry.last_error = None;
        entry.seen = files;
        self.rebuild(&entries);
    }

    /// Records that `name`'s files were processed and changed nothing
    /// (e.g. a reformatted `.toml`): an earlier failure no longer stands.
    pub(crate) fn confirm(&self, name: &str, files: Option<Fingerprint>) {
        if let Some(entry) = self.lock().get_mut(name) {
            entry.last_error = None;
            entry.seen = files;
        }
    }

    /// Records a failed load of `name`'s files; whatever served still does.
    pub(crate) fn fail(&self, name: &str, files: Option<Fingerprint>, error: String) {
        let mut entries = self.lock();
        let entry = entries.entry(name.to_string()).or_default();
        entry.last_error = Some(error);
        entry.seen = files;
    }

    /// Forgets `name`: its actions are no longer served. Returns the
    /// version that served, if one did.
    pub(crate) fn remove(&self, name: &str) -> Option<Arc<LoadedPlugin>> {
        let mut entries = self.lock();
        let entry = entries.remove(name)?;
        for plugin in entry.active.iter().chain(entry.previous.iter()) {
            plugin.retire();
        }
        self.rebuild(&entries);
        entry.active
    }

    /// Swaps the serving version of `name` with the previous good one.
    pub(crate) fn rollback(&self, name: &str) -> Result<Arc<LoadedPlugin>, PluginError> {
        let mut entries = self.lock();
        let entry = entries
            .get(name)
            .ok_or_else(|| PluginError::NotFound(name.into()))?;
        let previous = entry
            .previous
            .clone()
            .ok_or_else(|| PluginError::NoPrevious(name.into()))?;
        if let Some(error) = Self::conflict_in(&entries, previous.description()) {
            return Err(error);
        }
        let entry = entries
            .get_mut(name)
            .ok_or_else(|| PluginError::NotFound(name.into()))?;
        previous.reinstate();
        if let Some(old) = entry.active.replace(Arc::clone(&previous)) {
            old.retire();
            entry.previous = Some(old);
        }
        entry.last_error = None;
        self.rebuild(&entries);
        Ok(previous)
    }

    /// The status of `name`.
    pub(crate) fn status(&self, name: &str) -> Option<PluginStatus> {
        self.lock()
            .get(name)
            .map(|entry| Self::status_of(name, entry))
    }

    /// Every plugin's status, by name.
    pub(crate) fn statuses(&self) -> Vec<PluginStatus> {
        self.lock()
            .iter()
            .map(|(name, entry)| Self::status_of(name, entry))
            .collect()
    }

    fn status_of(name: &str, entry: &Entry) -> PluginStatus {
        match &entry.active {
            Some(plugin) => PluginStatus::of(plugin, entry.last_error.clone()),
            None => PluginStatus {
                name: name.to_string(),
                version: String::new(),
                sha256: entry
                    .seen
                    .as_ref()
                    .map(|f| f.wasm.clone())
                    .unwrap_or_default(),
                actions: Vec::new(),
                status: PluginState::Failed,
                loaded_at: 0,
                last_error: entry.last_error.clone(),
                calls: 0,
                errors: 0,
                p50_us: 0,
                p99_us: 0,
                in_flight: 0,
                breaker: BreakerStatus {
                    state: BreakerState::Closed,
                    open_until_ms: None,
                    trips: 0,
                    recent_timeouts: 0,
                    short_circuited: 0,
                },
            },
        }
    }

    /// Rebuilds and swaps the route table; called with the entries locked,
    /// so tables are published in the order the changes were made.
    fn rebuild(&self, entries: &BTreeMap<String, Entry>) {
        let mut routes = Routes::default();
        for plugin in entries.values().filter_map(|e| e.active.as_ref()) {
            for (action, source) in plugin.description().claims() {
                let plugin = Arc::clone(plugin);
                match source {
                    Source::Client => {
                        routes.client.entry(action.to_string()).or_insert(plugin);
                    }
                    Source::Server => {
                        routes.server.entry(action.to_string()).or_insert(plugin);
                    }
                    Source::System => routes
                        .system
                        .entry(action.to_string())
                        .or_default()
                        .push(plugin),
                }
            }
        }
        self.routes.store(Arc::new(routes));
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Entry>> {
        // Every critical section leaves the map consistent before anything
        // that could panic, so a poisoned lock is still usable.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
