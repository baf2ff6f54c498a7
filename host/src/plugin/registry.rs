//! Which version of each plugin serves: the [`Registry`] of plugins by
//! name (active version, the last `plugins.keep_versions` good versions,
//! a staged canary or shadow, a pause, the last error) and the route table
//! derived from it.
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
use super::rollout::{
    AutoRollback, Breach, Canary, CanaryStatus, Objectives, RolloutError, Shadow, ShadowStatus,
    VersionStatus, Watch, WatchKind, WatchStatus,
};
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
    /// `<name>.canary.wasm` or `<name>.shadow.wasm` was staged beside the
    /// live version (issue 18).
    Staged {
        /// The plugin.
        name: String,
        /// `canary` or `shadow`.
        role: &'static str,
        /// The staged version.
        version: String,
        /// Hex sha256 of its `.wasm`.
        sha256: String,
    },
    /// A staged file is gone: its canary or shadow was dropped.
    Unstaged {
        /// The plugin.
        name: String,
        /// `canary` or `shadow`.
        role: &'static str,
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
            | LoadOutcome::Staged { name, .. }
            | LoadOutcome::Unstaged { name, .. }
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
    /// Paused by `POST /admin/plugins/{name}/pause`: its actions and system
    /// events answer 1007 as if it were not loaded (issue 18).
    pub paused: bool,
    /// The version a canary serves to some rooms, if one is staged.
    pub canary_version: Option<String>,
    /// The version shadowing the live one, if one is staged.
    pub shadow_version: Option<String>,
}

/// One plugin in `GET /admin/plugins/{name}` (issue 18): its status, the
/// versions kept, and its rollout.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PluginDetail {
    /// What `/admin/plugins` shows of it.
    #[serde(flatten)]
    pub status: PluginStatus,
    /// The good versions kept compiled, the one live longest ago first (at most
    /// `plugins.keep_versions`), for `POST …/activate?version=`.
    pub versions: Vec<VersionStatus>,
    /// The staged canary.
    pub canary: Option<CanaryStatus>,
    /// The staged shadow, its counts and samples.
    pub shadow: Option<ShadowStatus>,
    /// The objectives watch over a version that went live (a canary's is
    /// in `canary.watch`).
    pub watch: Option<WatchStatus>,
    /// The last automatic rollback, and why.
    pub last_rollback: Option<AutoRollback>,
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
            paused: false,
            canary_version: None,
            shadow_version: None,
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

/// Which file of a plugin: the live one, or one staged beside it
/// (`role=live|canary|shadow` of `PUT /admin/plugins/{name}/wasm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// `<name>.wasm`.
    Live,
    /// `<name>.canary.wasm`.
    Canary,
    /// `<name>.shadow.wasm`.
    Shadow,
}

impl Role {
    /// The file of plugin `name` in this role: `<name>.wasm`,
    /// `<name>.canary.wasm` or `<name>.shadow.wasm`.
    pub fn file_name(self, name: &str) -> String {
        match self {
            Role::Live => format!("{name}.wasm"),
            Role::Canary => format!("{name}.canary.wasm"),
            Role::Shadow => format!("{name}.shadow.wasm"),
        }
    }

    /// `live`, `canary` or `shadow`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Live => "live",
            Role::Canary => "canary",
            Role::Shadow => "shadow",
        }
    }
}

/// One plugin by name.
#[derive(Default)]
struct Entry {
    /// The version serving.
    active: Option<Arc<LoadedPlugin>>,
    /// The version that served before it, for `rollback`.
    previous: Option<Arc<LoadedPlugin>>,
    /// The good versions kept compiled, oldest first, the active one
    /// included (at most `keep_versions`, one per sha256).
    history: Vec<Arc<LoadedPlugin>>,
    /// Why the last load failed (cleared by a successful one).
    last_error: Option<String>,
    /// Files last processed, successfully or not.
    seen: Option<Fingerprint>,
    /// `<name>.canary.wasm` and `<name>.shadow.wasm` last processed.
    seen_canary: Option<Fingerprint>,
    seen_shadow: Option<Fingerprint>,
    /// Its actions answer 1007 while paused.
    paused: bool,
    canary: Option<Arc<Canary>>,
    shadow: Option<Arc<Shadow>>,
    /// The objectives watch over a version that went live (a canary's
    /// watch is the canary's).
    watch: Option<Arc<Watch>>,
    last_rollback: Option<AutoRollback>,
}

impl Entry {
    /// Keeps `plugin` among the versions (replacing one of the same
    /// sha256), then drops the oldest beyond `keep`, never the active or
    /// previous one.
    fn remember(&mut self, plugin: &Arc<LoadedPlugin>, keep: usize) {
        self.history.retain(|p| p.sha256() != plugin.sha256());
        self.history.push(Arc::clone(plugin));
        while self.history.len() > keep {
            let pinned = |p: &Arc<LoadedPlugin>| {
                [&self.active, &self.previous]
                    .iter()
                    .any(|k| k.as_ref().is_some_and(|k| k.sha256() == p.sha256()))
            };
            let Some(oldest) = self.history.iter().position(|p| !pinned(p)) else {
                break;
            };
            self.history.remove(oldest).retire();
        }
    }

    /// Whether `plugin` is the serving version.
    fn serves(&self, plugin: &LoadedPlugin) -> bool {
        self.active
            .as_ref()
            .is_some_and(|p| std::ptr::eq(&**p, plugin))
    }

    /// Drops the canary (and its watch); retires its version unless it
    /// serves (a kept version stays compiled, idle).
    fn drop_canary(&mut self) -> Option<Arc<Canary>> {
        let canary = self.canary.take()?;
        if !self.serves(&canary.plugin) {
            canary.plugin.retire();
        }
        Some(canary)
    }

    fn drop_shadow(&mut self) -> Option<Arc<Shadow>> {
        let shadow = self.shadow.take()?;
        if !self.serves(&shadow.plugin) {
            shadow.plugin.retire();
        }
        Some(shadow)
    }

    /// A kept version by version string or sha256 (the newest match).
    fn kept(&self, version: &str) -> Option<Arc<LoadedPlugin>> {
        self.history
            .iter()
            .rev()
            .find(|p| p.version() == version || p.sha256() == version)
            .cloned()
    }
}

/// What the call path needs of a plugin under rollout, published with the
/// route table: read without a lock on every call.
pub(crate) struct Rollout {
    /// The live version the canary and shadow stand beside.
    pub(crate) live_sha256: String,
    pub(crate) canary: Option<Arc<Canary>>,
    pub(crate) shadow: Option<Arc<Shadow>>,
    pub(crate) watch: Option<Arc<Watch>>,
}

/// What an automatic rollback did, for the caller to log.
pub(crate) struct RolledBack {
    pub(crate) record: AutoRollback,
}

/// The plugins by name, and the route table.
pub(crate) struct Registry {
    entries: Mutex<BTreeMap<String, Entry>>,
    routes: ArcSwap<Routes>,
    /// `plugins.keep_versions`.
    keep_versions: usize,
    /// `[plugins.<name>]`.
    objectives: HashMap<String, Objectives>,
}

/// Who serves what, rebuilt on every change.
#[derive(Default)]
struct Routes {
    client: HashMap<String, Arc<LoadedPlugin>>,
    server: HashMap<String, Arc<LoadedPlugin>>,
    /// System events go to every plugin listing them, in name order.
    system: HashMap<String, Vec<Arc<LoadedPlugin>>>,
    /// Plugins with a canary, a shadow or a watch, by name.
    rollouts: HashMap<String, Arc<Rollout>>,
}

impl Registry {
    pub(crate) fn new(keep_versions: usize, objectives: HashMap<String, Objectives>) -> Self {
        Self {
            entries: Mutex::new(BTreeMap::new()),
            routes: ArcSwap::from_pointee(Routes::default()),
            keep_versions: keep_versions.max(1),
            objectives,
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

    /// The rollout of `name`, if it has a canary, a shadow or a watch.
    pub(crate) fn rollout(&self, name: &str) -> Option<Arc<Rollout>> {
        let routes = self.routes.load();
        if routes.rollouts.is_empty() {
            return None;
        }
        routes.rollouts.get(name).cloned()
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

    /// The names of the plugins with a canary or shadow staged from a file.
    pub(crate) fn staged_from_files(&self, role: Role) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, e)| match role {
                Role::Canary => e.canary.as_ref().is_some_and(|c| c.from_file),
                Role::Shadow => e.shadow.as_ref().is_some_and(|s| s.from_file),
                Role::Live => false,
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The version of `name` serving now (paused or not).
    pub(crate) fn active(&self, name: &str) -> Option<Arc<LoadedPlugin>> {
        self.lock().get(name).and_then(|e| e.active.clone())
    }

    /// Whether `name`'s files of `role` are unchanged since they were last
    /// processed. With `retry_failed`, files whose last load failed count
    /// as changed.
    pub(crate) fn unchanged(
        &self,
        name: &str,
        role: Role,
        files: &Fingerprint,
        retry_failed: bool,
    ) -> bool {
        let entries = self.lock();
        let Some(entry) = entries.get(name) else {
            return false;
        };
        let seen = match role {
            Role::Live => &entry.seen,
            Role::Canary => &entry.seen_canary,
            Role::Shadow => &entry.seen_shadow,
        };
        seen.as_ref() == Some(files) && !(retry_failed && entry.last_error.is_some())
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
            .flat_map(|(_, e)| e.active.iter().chain(e.canary.as_ref().map(|c| &c.plugin)));
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
    /// the old one to `previous` (for rollback) and, with objectives
    /// configured, is judged for its probation; a new config of the same
    /// version keeps `previous` as it was.
    pub(crate) fn activate(&self, plugin: Arc<LoadedPlugin>, files: Option<Fingerprint>) {
        let mut entries = self.lock();
        let objectives = self.objectives.get(plugin.name()).cloned();
        let entry = entries.entry(plugin.name().to_string()).or_default();
        let mut new_version = false;
        if let Some(old) = entry.active.take() {
            old.retire();
            if old.sha256() != plugin.sha256() {
                entry.previous = Some(old);
                new_version = true;
            }
        }
        if entry
            .canary
            .as_ref()
            .is_some_and(|c| c.plugin.sha256() == plugin.sha256())
        {
            // The canary's bytes went live through the file: it is done.
            entry.drop_canary();
        }
        if new_version {
            entry.watch = objectives.map(|o| Arc::new(Watch::new(WatchKind::Live, &plugin, o)));
        }
        entry.active = Some(Arc::clone(&plugin));
        entry.remember(&plugin, self.keep_versions);
        entry.last_error = None;
        entry.seen = files;
        self.rebuild(&entries);
    }

    /// Records that `name`'s files were processed and changed nothing
    /// (e.g. a reformatted `.toml`): an earlier failure no longer stands.
    /// After a canary staged from its file was promoted and that file
    /// renamed over `<name>.wasm`: the canary's fingerprint is now the live
    /// file's, so the watcher finds the folder unchanged.
    pub(crate) fn promote_fingerprint(&self, name: &str) {
        if let Some(entry) = self.lock().get_mut(name)
            && let Some(files) = entry.seen_canary.take()
        {
            entry.seen = Some(files);
        }
    }

    /// Forgets the files of `name`'s staged `role` (removed from the folder
    /// after an abort or a stopped shadow), so the same file dropped in
    /// again is staged again.
    pub(crate) fn forget_files(&self, name: &str, role: Role) {
        if let Some(entry) = self.lock().get_mut(name) {
            match role {
                Role::Live => entry.seen = None,
                Role::Canary => entry.seen_canary = None,
                Role::Shadow => entry.seen_shadow = None,
            }
        }
    }

    pub(crate) fn confirm(&self, name: &str, role: Role, files: Option<Fingerprint>) {
        if let Some(entry) = self.lock().get_mut(name) {
            entry.last_error = None;
            match role {
                Role::Live => entry.seen = files,
                Role::Canary => entry.seen_canary = files,
                Role::Shadow => entry.seen_shadow = files,
            }
        }
    }

    /// Records a failed load of `name`'s files; whatever served still does.
    pub(crate) fn fail(&self, name: &str, role: Role, files: Option<Fingerprint>, error: String) {
        let mut entries = self.lock();
        let entry = entries.entry(name.to_string()).or_default();
        entry.last_error = Some(match role {
            Role::Live => error,
            Role::Canary | Role::Shadow => format!("{}.{}.wasm: {error}", name, role.as_str()),
        });
        match role {
            Role::Live => entry.seen = files,
            Role::Canary => entry.seen_canary = files,
            Role::Shadow => entry.seen_shadow = files,
        }
    }

    /// Forgets `name`: its actions are no longer served. Returns the
    /// version that served, if one did.
    pub(crate) fn remove(&self, name: &str) -> Option<Arc<LoadedPlugin>> {
        let mut entries = self.lock();
        let mut entry = entries.remove(name)?;
        entry.drop_canary();
        entry.drop_shadow();
        for plugin in entry
            .active
            .iter()
            .chain(entry.previous.iter())
            .chain(entry.history.iter())
        {
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
        Self::swap_in(entry, &previous, self.keep_versions);
        self.rebuild(&entries);
        Ok(previous)
    }

    /// Makes the kept `plugin` serve; the one serving becomes `previous`.
    /// An operator's choice: no watch starts.
    fn swap_in(entry: &mut Entry, plugin: &Arc<LoadedPlugin>, keep: usize) {
        plugin.reinstate();
        if entry
            .canary
            .as_ref()
            .is_some_and(|c| c.plugin.sha256() == plugin.sha256())
        {
            // The canary's version now serves every room.
            entry.canary = None;
        }
        if let Some(old) = entry.active.replace(Arc::clone(plugin))
            && !std::ptr::eq(&*old, &**plugin)
        {
            old.retire();
            entry.previous = Some(old);
        }
        entry.watch = None;
        entry.remember(plugin, keep);
        entry.last_error = None;
    }

    /// Puts the kept version `version` (a version string or a sha256) of
    /// `name` in service (`POST /admin/plugins/{name}/activate`). Calls in
    /// flight finish on the version they started on.
    pub(crate) fn activate_kept(
        &self,
        name: &str,
        version: &str,
    ) -> Result<Arc<LoadedPlugin>, RolloutError> {
        let mut entries = self.lock();
        let plugin = Self::find_kept(&entries, name, version)?;
        if let Some(error) = Self::conflict_in(&entries, plugin.description()) {
            return Err(RolloutError::Refused(error.to_string()));
        }
        let entry = Self::entry_mut(&mut entries, name)?;
        Self::swap_in(entry, &plugin, self.keep_versions);
        self.rebuild(&entries);
        Ok(plugin)
    }

    fn find_kept(
        entries: &BTreeMap<String, Entry>,
        name: &str,
        version: &str,
    ) -> Result<Arc<LoadedPlugin>, RolloutError> {
        let entry = entries
            .get(name)
            .ok_or_else(|| RolloutError::NotFound(name.into()))?;
        entry.kept(version).ok_or_else(|| RolloutError::NoVersion {
            name: name.into(),
            version: version.into(),
        })
    }

    fn entry_mut<'a>(
        entries: &'a mut BTreeMap<String, Entry>,
        name: &str,
    ) -> Result<&'a mut Entry, RolloutError> {
        entries
            .get_mut(name)
            .filter(|e| e.active.is_some())
            .ok_or_else(|| RolloutError::NotFound(name.into()))
    }

    /// Pauses or resumes `name`: while paused its actions and system events
    /// are out of the route table (1007). Its timers still fire.
    pub(crate) fn set_paused(&self, name: &str, paused: bool) -> Result<(), RolloutError> {
        let mut entries = self.lock();
        Self::entry_mut(&mut entries, name)?.paused = paused;
        self.rebuild(&entries);
        Ok(())
    }

    /// Stages `plugin` as the canary of its name, serving `percent` of the
    /// rooms; replaces any canary staged before.
    pub(crate) fn stage_canary(
        &self,
        plugin: Arc<LoadedPlugin>,
        percent: f64,
        from_file: bool,
        files: Option<Fingerprint>,
    ) -> Result<(), RolloutError> {
        let mut entries = self.lock();
        let objectives = self.objectives.get(plugin.name()).cloned();
        let name = plugin.name().to_string();
        let entry = Self::entry_mut(&mut entries, &name)?;
        if entry
            .active
            .as_ref()
            .is_some_and(|a| a.sha256() == plugin.sha256())
        {
            return Err(RolloutError::Refused(format!(
                "version {} of {name} is the live one",
                plugin.version()
            )));
        }
        entry.drop_canary();
        plugin.reinstate();
        let watch = objectives.map(|o| Arc::new(Watch::new(WatchKind::Canary, &plugin, o)));
        entry.canary = Some(Arc::new(Canary {
            plugin,
            percent,
            from_file,
            since_ms: crate::store::unix_ms(),
            watch,
        }));
        if from_file {
            entry.seen_canary = files;
        }
        self.rebuild(&entries);
        Ok(())
    }

    /// Stages the kept version `version` of `name` as its canary.
    pub(crate) fn canary_kept(
        &self,
        name: &str,
        version: &str,
        percent: f64,
    ) -> Result<Arc<LoadedPlugin>, RolloutError> {
        let plugin = Self::find_kept(&self.lock(), name, version)?;
        self.stage_canary(Arc::clone(&plugin), percent, false, None)?;
        Ok(plugin)
    }

    /// Changes the share of rooms the canary of `name` serves.
    pub(crate) fn set_canary_percent(&self, name: &str, percent: f64) -> Result<(), RolloutError> {
        let mut entries = self.lock();
        let entry = Self::entry_mut(&mut entries, name)?;
        let canary = entry.canary.as_ref().ok_or(RolloutError::NotStaged {
            name: name.into(),
            what: "canary",
        })?;
        entry.canary = Some(Arc::new(Canary {
            plugin: Arc::clone(&canary.plugin),
            percent,
            from_file: canary.from_file,
            since_ms: canary.since_ms,
            watch: canary.watch.clone(),
        }));
        self.rebuild(&entries);
        Ok(())
    }

    /// Makes the canary of `name` live for every room; the live version
    /// becomes `previous`, and the promoted one is judged for its probation.
    pub(crate) fn promote(&self, name: &str) -> Result<Arc<LoadedPlugin>, RolloutError> {
        let mut entries = self.lock();
        let objectives = self.objectives.get(name).cloned();
        let entry = Self::entry_mut(&mut entries, name)?;
        let canary = entry.canary.take().ok_or(RolloutError::NotStaged {
            name: name.into(),
            what: "canary",
        })?;
        let plugin = Arc::clone(&canary.plugin);
        Self::swap_in(entry, &plugin, self.keep_versions);
        entry.watch = objectives.map(|o| Arc::new(Watch::new(WatchKind::Live, &plugin, o)));
        self.rebuild(&entries);
        Ok(plugin)
    }

    /// Drops the canary of `name`: every room is on the live version again.
    pub(crate) fn abort(&self, name: &str) -> Result<Arc<LoadedPlugin>, RolloutError> {
        let mut entries = self.lock();
        let entry = Self::entry_mut(&mut entries, name)?;
        let canary = entry.drop_canary().ok_or(RolloutError::NotStaged {
            name: name.into(),
            what: "canary",
        })?;
        self.rebuild(&entries);
        Ok(Arc::clone(&canary.plugin))
    }

    /// Stages `plugin` as the shadow of its name; replaces any before.
    pub(crate) fn stage_shadow(
        &self,
        plugin: Arc<LoadedPlugin>,
        from_file: bool,
        files: Option<Fingerprint>,
    ) -> Result<(), RolloutError> {
        let mut entries = self.lock();
        let name = plugin.name().to_string();
        let entry = Self::entry_mut(&mut entries, &name)?;
        entry.drop_shadow();
        plugin.reinstate();
        entry.shadow = Some(Arc::new(Shadow::new(plugin, from_file)));
        if from_file {
            entry.seen_shadow = files;
        }
        self.rebuild(&entries);
        Ok(())
    }

    /// Stages the kept version `version` of `name` as its shadow.
    pub(crate) fn shadow_kept(
        &self,
        name: &str,
        version: &str,
    ) -> Result<Arc<LoadedPlugin>, RolloutError> {
        let plugin = Self::find_kept(&self.lock(), name, version)?;
        self.stage_shadow(Arc::clone(&plugin), false, None)?;
        Ok(plugin)
    }

    /// Stops the shadow of `name`.
    pub(crate) fn stop_shadow(&self, name: &str) -> Result<ShadowStatus, RolloutError> {
        let mut entries = self.lock();
        let entry = Self::entry_mut(&mut entries, name)?;
        let live = entry.active.as_ref().map(|a| a.version().to_string());
        let shadow = entry.drop_shadow().ok_or(RolloutError::NotStaged {
            name: name.into(),
            what: "shadow",
        })?;
        self.rebuild(&entries);
        Ok(shadow.status(live.as_deref()))
    }

    /// Drops the file-staged canary or shadow of `name` (its file is gone).
    pub(crate) fn unstage_file(&self, name: &str, role: Role) -> bool {
        let mut entries = self.lock();
        let Some(entry) = entries.get_mut(name) else {
            return false;
        };
        let dropped = match role {
            Role::Canary if entry.canary.as_ref().is_some_and(|c| c.from_file) => {
                entry.seen_canary = None;
                entry.drop_canary().is_some()
            }
            Role::Shadow if entry.shadow.as_ref().is_some_and(|s| s.from_file) => {
                entry.seen_shadow = None;
                entry.drop_shadow().is_some()
            }
            _ => false,
        };
        if dropped {
            self.rebuild(&entries);
        }
        dropped
    }

    /// Rolls back the version `watch` judged, which broke an objective: a
    /// canary is dropped, a live version gives way to the one it replaced.
    /// `None` when that already changed (another call got here first).
    pub(crate) fn auto_rollback(
        &self,
        name: &str,
        watch: &Watch,
        breach: &Breach,
    ) -> Option<RolledBack> {
        let mut entries = self.lock();
        let entry = entries.get_mut(name)?;
        match watch.kind {
            WatchKind::Canary => {
                if entry
                    .canary
                    .as_ref()
                    .is_none_or(|c| c.plugin.sha256() != watch.sha256)
                {
                    return None;
                }
                entry.drop_canary();
            }
            WatchKind::Live => {
                if entry
                    .active
                    .as_ref()
                    .is_none_or(|a| a.sha256() != watch.sha256)
                {
                    return None;
                }
                let previous = entry.previous.clone()?;
                if Self::conflict_in(&entries, previous.description()).is_some() {
                    return None;
                }
                let entry = entries.get_mut(name)?;
                Self::swap_in(entry, &previous, self.keep_versions);
            }
        }
        let entry = entries.get_mut(name)?;
        let record = AutoRollback {
            kind: watch.kind,
            version: watch.version.clone(),
            sha256: watch.sha256.clone(),
            serving_version: entry.active.as_ref().map(|a| a.version().to_string()),
            reason: breach.reason,
            detail: breach.detail.clone(),
            at_ms: crate::store::unix_ms(),
        };
        entry.last_rollback = Some(record.clone());
        self.rebuild(&entries);
        Some(RolledBack { record })
    }

    /// The status of `name`.
    pub(crate) fn status(&self, name: &str) -> Option<PluginStatus> {
        self.lock()
            .get(name)
            .map(|entry| Self::status_of(name, entry))
    }

    /// `GET /admin/plugins/{name}`.
    pub(crate) fn detail(&self, name: &str) -> Option<PluginDetail> {
        let entries = self.lock();
        let entry = entries.get(name)?;
        let live = entry.active.as_ref().map(|a| a.version().to_string());
        Some(PluginDetail {
            status: Self::status_of(name, entry),
            versions: entry
                .history
                .iter()
                .map(|p| {
                    let active = entry
                        .active
                        .as_ref()
                        .is_some_and(|a| a.sha256() == p.sha256());
                    VersionStatus::of(p, active)
                })
                .collect(),
            canary: entry.canary.as_ref().map(|c| c.status()),
            shadow: entry.shadow.as_ref().map(|s| s.status(live.as_deref())),
            watch: entry.watch.as_ref().map(|w| w.status()),
            last_rollback: entry.last_rollback.clone(),
        })
    }

    /// Every plugin's status, by name.
    pub(crate) fn statuses(&self) -> Vec<PluginStatus> {
        self.lock()
            .iter()
            .map(|(name, entry)| Self::status_of(name, entry))
            .collect()
    }

    fn status_of(name: &str, entry: &Entry) -> PluginStatus {
        let mut status = match &entry.active {
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
                paused: false,
                canary_version: None,
                shadow_version: None,
            },
        };
        status.paused = entry.paused;
        status.canary_version = entry
            .canary
            .as_ref()
            .map(|c| c.plugin.version().to_string());
        status.shadow_version = entry
            .shadow
            .as_ref()
            .map(|s| s.plugin.version().to_string());
        status
    }

    /// Rebuilds and swaps the route table; called with the entries locked,
    /// so tables are published in the order the changes were made. A paused
    /// plugin is left out.
    fn rebuild(&self, entries: &BTreeMap<String, Entry>) {
        let mut routes = Routes::default();
        for (name, entry) in entries.iter().filter(|(_, e)| !e.paused) {
            let Some(plugin) = entry.active.as_ref() else {
                continue;
            };
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
            if entry.canary.is_some() || entry.shadow.is_some() || entry.watch.is_some() {
                routes.rollouts.insert(
                    name.clone(),
                    Arc::new(Rollout {
                        live_sha256: plugin.sha256().to_string(),
                        canary: entry.canary.clone(),
                        shadow: entry.shadow.clone(),
                        watch: entry.watch.clone(),
                    }),
                );
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
