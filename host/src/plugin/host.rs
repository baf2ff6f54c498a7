//! [`PluginHost`]: the plugin runtime's front door. It loads every plugin
//! (from `plugins.dir` or the bundled set), routes and runs calls, reloads
//! and rolls back, and carries out a rollout (issue 18): kept versions,
//! pause, canary, shadow and automatic rollback.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::grants::Grants;
use super::loaded::{Compiled, LoadedPlugin};
use super::registry::{
    Fingerprint, LoadOutcome, PluginDetail, PluginStatus, Registry, Role, Rollout,
};
use super::rollout::{RolloutError, Shadow, ShadowStatus};
use super::runtime::Runtime;
use super::stats::count_reload;
use super::{CallError, Event, PluginError, Reply, Settings, Source, watch};
use crate::store::Store;

mod bundled {
    //! The plugins built into the binary by `build.rs`.
    include!(concat!(env!("OUT_DIR"), "/bundled.rs"));
}

/// The plugin runtime: every loaded plugin, the route table, and reloads.
pub struct PluginHost {
    /// Engine, linker, cache, store handle, limits.
    runtime: Arc<Runtime>,
    /// The watched folder; `None` serves the bundled plugins.
    dir: Option<PathBuf>,
    /// With a folder: also serve the bundled plugins it does not replace
    /// (`plugins.bundled`).
    bundled: bool,
    /// Versions by name, and the route table.
    registry: Registry,
    /// Serializes loads (initial load, watcher, admin reload, rollback), so
    /// two rescans never interleave their checks and swaps. It guards no
    /// data and calls never take it; it is held across the awaits of a
    /// load on purpose, which is why it is an async mutex.
    reload_gate: tokio::sync::Mutex<()>,
    /// Set once the initial load has finished.
    ready: AtomicBool,
    /// `plugins.canary_percent`: the share of rooms a canary file serves.
    canary_percent: f64,
    /// `plugins.allowed_sha256`.
    allowed_sha256: Option<HashSet<String>>,
}

/// The files of one plugin in the folder.
struct PluginFiles {
    name: String,
    /// `<name>.wasm`, `<name>.canary.wasm` or `<name>.shadow.wasm`.
    role: Role,
    wasm: PathBuf,
    toml: PathBuf,
}

/// The bytes and config text of one plugin to load.
struct Candidate {
    name: String,
    bytes: Arc<[u8]>,
    sha256: String,
    config: Option<String>,
}

impl PluginHost {
    /// Builds the engine and starts its epoch ticker (a 10 ms thread).
    /// Nothing is loaded until [`load_all`](Self::load_all).
    pub fn new(settings: Settings, store: Arc<dyn Store>) -> Result<Arc<Self>, PluginError> {
        let runtime = Runtime::new(&settings, store, true)?;
        Ok(Arc::new(Self {
            runtime,
            registry: Registry::new(settings.keep_versions, settings.objectives.clone()),
            dir: settings.dir,
            bundled: settings.bundled,
            reload_gate: tokio::sync::Mutex::new(()),
            ready: AtomicBool::new(false),
            canary_percent: settings.canary_percent,
            allowed_sha256: settings.allowed_sha256,
        }))
    }

    /// Loads every plugin of the folder (or the bundled ones); the host is
    /// ready afterwards, whatever failed (failures are in the outcomes, the
    /// log and [`statuses`](Self::statuses)).
    pub async fn load_all(&self) -> Vec<LoadOutcome> {
        let outcomes = match &self.dir {
            Some(dir) => self.rescan(dir, true).await,
            None => self.load_bundled().await,
        };
        self.ready.store(true, Ordering::Release);
        outcomes
    }

    /// Watches the folder and reloads what changes (PROTOCOL section 10),
    /// until `shutdown`; the watcher task runs on `tracker`. Does nothing
    /// for the bundled plugins.
    pub fn watch(self: &Arc<Self>, shutdown: CancellationToken, tracker: &TaskTracker) {
        match &self.dir {
            Some(dir) => watch::spawn(Arc::clone(self), dir.clone(), shutdown, tracker),
            None => tracing::debug!("bundled plugins: nothing to watch"),
        }
    }

    /// The version serving `action` from `source` (for a system event, the
    /// first subscriber; see [`subscribers`](Self::subscribers)).
    pub fn route(&self, action: &str, source: Source) -> Option<Arc<LoadedPlugin>> {
        self.registry.route(action, source)
    }

    /// The version of `name` serving now, if the plugin is loaded (a
    /// timer fires on the version live at its due time).
    pub fn active(&self, name: &str) -> Option<Arc<LoadedPlugin>> {
        self.registry.active(name)
    }

    /// Every version that lists the system event (e.g. `disconnected`).
    pub fn subscribers(&self, system_event: &str) -> Vec<Arc<LoadedPlugin>> {
        self.registry.subscribers(system_event)
    }

    /// Whether any version handles `action`, from any source.
    pub fn handles(&self, action: &str) -> bool {
        self.registry.handles(action)
    }

    /// Runs `event` on `plugin` (from [`route`](Self::route)). The reply is
    /// for the caller to apply; nothing has been applied when this returns.
    /// Dropping the future abandons the call (its instance is discarded).
    ///
    /// Under a rollout (issue 18): an event of a room the plugin's canary
    /// serves runs on the canary instead ([`Reply::version`] names it); an
    /// event on the live version also runs, at the same time and on the
    /// same state, on the shadow, whose reply is compared and dropped; the
    /// version judged against its objectives is counted, and rolled back
    /// when it breaks one.
    pub async fn call(&self, plugin: &Arc<LoadedPlugin>, event: Event) -> Result<Reply, CallError> {
        let Some(rollout) = self
            .registry
            .rollout(plugin.name())
            .filter(|r| r.live_sha256 == plugin.sha256())
        else {
            return plugin.call(&event).await;
        };
        let chosen = self.version_for(&rollout, plugin, &event).await;
        let shadow = rollout.shadow.as_ref().filter(|s| {
            std::ptr::eq(chosen, plugin) && s.plugin.accepts(&event.action, event.source)
        });
        let (outcome, elapsed) = match shadow.and_then(|s| s.permit().map(|p| (s, p))) {
            Some((shadow, _permit)) => Self::call_shadowed(chosen, shadow, &event).await,
            None => {
                let started = Instant::now();
                let outcome = chosen.call(&event).await;
                (outcome, started.elapsed())
            }
        };
        let watch = if std::ptr::eq(chosen, plugin) {
            rollout.watch.as_ref()
        } else {
            rollout.canary.as_ref().and_then(|c| c.watch.as_ref())
        };
        if let Some(watch) = watch
            && watch.sha256 == chosen.sha256()
        {
            let failed = matches!(outcome, Err(CallError::Failed(_)));
            if let Some(breach) = watch.record(elapsed, failed) {
                self.roll_back_breach(chosen.name(), watch, &breach);
            }
        }
        outcome
    }

    /// The version `event` runs on: the canary when it handles the event
    /// and serves the event's room, else the live `plugin`.
    async fn version_for<'a>(
        &self,
        rollout: &'a Rollout,
        plugin: &'a Arc<LoadedPlugin>,
        event: &Event,
    ) -> &'a Arc<LoadedPlugin> {
        let Some(canary) = rollout
            .canary
            .as_ref()
            .filter(|c| c.plugin.accepts(&event.action, event.source))
        else {
            return plugin;
        };
        if !self
            .room_of(event)
            .await
            .is_some_and(|room| canary.takes(&room))
        {
            return plugin;
        }
        // The call's span (`chorus.plugin.call`) names the version that runs.
        tracing::Span::current().record("plugin_version", canary.plugin.version());
        &canary.plugin
    }

    /// Runs `event` on the live version and on the shadow at once (so both
    /// read the same state, under the caller's room lock), compares the
    /// replies, and returns the live one with its duration.
    async fn call_shadowed(
        live: &LoadedPlugin,
        shadow: &Shadow,
        event: &Event,
    ) -> (Result<Reply, CallError>, Duration) {
        let started = Instant::now();
        let timed = async {
            let outcome = live.call(event).await;
            (outcome, started.elapsed())
        };
        let ((outcome, elapsed), copy) = tokio::join!(timed, shadow.plugin.call_shadow(event));
        shadow.observe(event, live.version(), &outcome, &copy);
        (outcome, elapsed)
    }

    /// The room an event belongs to, as the dispatcher locks it: the
    /// payload's `channel_name`, else its subject's room.
    async fn room_of(&self, event: &Event) -> Option<String> {
        match event.payload.get("channel_name").and_then(|c| c.as_str()) {
            Some(c) if !c.is_empty() => Some(c.to_string()),
            _ => {
                let user = event.user_id?;
                let membership = self.runtime.store.membership_of(user).await.ok()??;
                Some(membership.channel_name)
            }
        }
    }

    /// Carries out an automatic rollback: logged, counted, and shown in
    /// `/admin/plugins/{name}` (`last_rollback`).
    fn roll_back_breach(
        &self,
        name: &str,
        watch: &super::rollout::Watch,
        breach: &super::rollout::Breach,
    ) {
        let Some(done) = self.registry.auto_rollback(name, watch, breach) else {
            return;
        };
        let record = &done.record;
        metrics::counter!(
            "chorus_plugin_auto_rollbacks_total",
            "plugin" => name.to_string(),
            "kind" => if record.kind == super::rollout::WatchKind::Canary { "canary" } else { "live" },
            "reason" => record.reason
        )
        .increment(1);
        count_reload(name, "auto_rolled_back");
        tracing::warn!(
            plugin = name,
            plugin_version = %record.version,
            sha256 = %record.sha256,
            serving_version = record.serving_version.as_deref().unwrap_or("none"),
            reason = record.reason,
            detail = %record.detail,
            "automatic rollback: the {} broke its objectives",
            if record.kind == super::rollout::WatchKind::Canary { "canary" } else { "new live version" },
        );
    }

    /// Every plugin's status, by name.
    pub fn statuses(&self) -> Vec<PluginStatus> {
        self.registry.statuses()
    }

    /// One plugin with its kept versions and rollout
    /// (`GET /admin/plugins/{name}`); `None` when unknown.
    pub fn detail(&self, name: &str) -> Option<PluginDetail> {
        self.registry.detail(name)
    }

    /// Puts the kept version `version` (a version string or a hex sha256)
    /// of `name` in service for every room. Calls in flight finish on the
    /// version they started on; the next calls run on this one.
    pub async fn activate(&self, name: &str, version: &str) -> Result<PluginDetail, RolloutError> {
        let _gate = self.reload_gate.lock().await;
        let plugin = self.registry.activate_kept(name, version)?;
        count_reload(name, "activated");
        tracing::info!(
            plugin = name,
            plugin_version = plugin.version(),
            sha256 = plugin.sha256(),
            "kept plugin version activated"
        );
        plugin.prewarm().await;
        self.detail_of(name)
    }

    /// Pauses (`true`) or resumes `name`: while paused, its actions answer
    /// 1007 as if no plugin served them, and its system events are not
    /// raised; timers it set still fire. The file and versions stay.
    pub async fn set_paused(&self, name: &str, paused: bool) -> Result<PluginDetail, RolloutError> {
        let _gate = self.reload_gate.lock().await;
        self.registry.set_paused(name, paused)?;
        count_reload(name, if paused { "paused" } else { "resumed" });
        tracing::info!(
            plugin = name,
            paused,
            "plugin {}",
            if paused { "paused" } else { "resumed" }
        );
        self.detail_of(name)
    }

    /// Stages a canary or changes its share: with `version`, that kept
    /// version becomes the canary at `percent`; without, the staged
    /// canary's share becomes `percent` (0..=100).
    pub async fn canary(
        &self,
        name: &str,
        version: Option<&str>,
        percent: f64,
    ) -> Result<PluginDetail, RolloutError> {
        if !(0.0..=100.0).contains(&percent) {
            return Err(RolloutError::Refused("percent must be 0..=100".into()));
        }
        let _gate = self.reload_gate.lock().await;
        match version {
            Some(version) => {
                let plugin = self.registry.canary_kept(name, version, percent)?;
                plugin.prewarm().await;
                tracing::info!(
                    plugin = name,
                    plugin_version = plugin.version(),
                    percent,
                    "canary staged"
                );
            }
            None => {
                self.registry.set_canary_percent(name, percent)?;
                tracing::info!(plugin = name, percent, "canary share changed");
            }
        }
        count_reload(name, "canary");
        self.detail_of(name)
    }

    /// Makes the canary of `name` live for every room.
    pub async fn promote(&self, name: &str) -> Result<PluginDetail, RolloutError> {
        let _gate = self.reload_gate.lock().await;
        let from_file = self.staged_from_file(name, Role::Canary);
        let plugin = self.registry.promote(name)?;
        if from_file {
            // The folder says what a restart serves: the promoted file
            // becomes `<name>.wasm`.
            self.settle_file(name, Role::Canary, Some(Role::Live)).await;
            self.registry.promote_fingerprint(name);
        }
        count_reload(name, "promoted");
        tracing::info!(
            plugin = name,
            plugin_version = plugin.version(),
            "canary promoted: live for every room"
        );
        self.detail_of(name)
    }

    /// Drops the canary of `name`: every room is on the live version.
    pub async fn abort(&self, name: &str) -> Result<PluginDetail, RolloutError> {
        let _gate = self.reload_gate.lock().await;
        let from_file = self.staged_from_file(name, Role::Canary);
        let plugin = self.registry.abort(name)?;
        if from_file {
            self.settle_file(name, Role::Canary, None).await;
            self.registry.forget_files(name, Role::Canary);
        }
        count_reload(name, "aborted");
        tracing::info!(
            plugin = name,
            plugin_version = plugin.version(),
            "canary aborted"
        );
        self.detail_of(name)
    }

    /// Stages the kept version `version` of `name` as its shadow.
    pub async fn shadow(&self, name: &str, version: &str) -> Result<PluginDetail, RolloutError> {
        let _gate = self.reload_gate.lock().await;
        let plugin = self.registry.shadow_kept(name, version)?;
        plugin.prewarm().await;
        count_reload(name, "shadow");
        tracing::info!(
            plugin = name,
            plugin_version = plugin.version(),
            "shadow staged"
        );
        self.detail_of(name)
    }

    /// Stops the shadow of `name`; its final counts.
    pub async fn stop_shadow(&self, name: &str) -> Result<ShadowStatus, RolloutError> {
        let _gate = self.reload_gate.lock().await;
        let from_file = self.staged_from_file(name, Role::Shadow);
        let status = self.registry.stop_shadow(name)?;
        if from_file {
            self.settle_file(name, Role::Shadow, None).await;
            self.registry.forget_files(name, Role::Shadow);
        }
        tracing::info!(plugin = name, summary = %status.summary, "shadow stopped");
        Ok(status)
    }

    /// Whether `name`'s staged `role` came from its file in the folder.
    fn staged_from_file(&self, name: &str, role: Role) -> bool {
        self.dir.is_some()
            && self
                .registry
                .staged_from_files(role)
                .iter()
                .any(|n| n == name)
    }

    /// Makes the folder agree with an admin decision on a staged file, so
    /// that neither the watcher nor a restart undoes it: the file of
    /// `from` is renamed to the file of `to` (a promote), or removed
    /// (`None`: an abort, a stopped shadow). A folder that cannot be
    /// changed (a read-only mount) is logged: the decision holds until the
    /// next restart or change of the file.
    async fn settle_file(&self, name: &str, from: Role, to: Option<Role>) {
        let Some(dir) = &self.dir else { return };
        let file = dir.join(from.file_name(name));
        let done = match to {
            Some(to) => tokio::fs::rename(&file, dir.join(to.file_name(name))).await,
            None => tokio::fs::remove_file(&file).await,
        };
        match done {
            Ok(()) => {
                tracing::info!(plugin = name, file = %file.display(), "plugin folder updated to match the admin decision")
            }
            Err(e) => {
                tracing::warn!(plugin = name, file = %file.display(), error = %e, "could not update the plugin folder: a restart or a change of the file stages it again")
            }
        }
    }

    fn detail_of(&self, name: &str) -> Result<PluginDetail, RolloutError> {
        self.registry
            .detail(name)
            .ok_or_else(|| RolloutError::NotFound(name.into()))
    }

    /// Loads `bytes` as plugin `name`'s `.wasm` in `role` at once, under
    /// the reload gate, and when it loads writes it into the plugins
    /// folder as `<name>.wasm` (`<name>.canary.wasm`, `<name>.shadow.wasm`;
    /// a hidden temporary file, then a rename) so that the watcher finds
    /// it unchanged and a restart finds it. The outcome is this upload's:
    /// [`LoadOutcome::Loaded`] (live), [`LoadOutcome::Staged`] (canary,
    /// shadow), [`LoadOutcome::Unchanged`] (these bytes and the folder's
    /// config serve already) or [`LoadOutcome::Failed`]: then nothing is
    /// written, the serving version stays, and `last_error` says why, so a
    /// refused upload can never become what a restart loads. The folder's
    /// `<name>.toml` is the config. Needs `plugins.dir`
    /// ([`InstallError::NoFolder`]); `plugins.allowed_sha256` applies as
    /// to any file. Used by `PUT /admin/plugins/{name}/wasm` and so by
    /// `chorus plugin dev --server <admin url>` (issue 14 item 5).
    pub async fn install(
        &self,
        name: &str,
        role: Role,
        bytes: &[u8],
    ) -> Result<LoadOutcome, InstallError> {
        let dir = self.upload_dir(name)?;
        let _gate = self.reload_gate.lock().await;
        let toml = dir.join(format!("{name}.toml"));
        let config = match tokio::fs::read_to_string(&toml).await {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(InstallError::Io {
                    path: toml,
                    message: e.to_string(),
                });
            }
        };
        let bytes: Arc<[u8]> = Arc::from(bytes);
        let files = Fingerprint {
            wasm: sha256_hex(&bytes),
            config: config.clone(),
        };
        let outcome = if self.registry.unchanged(name, role, &files, true) {
            LoadOutcome::Unchanged { name: name.into() }
        } else {
            let candidate = Candidate {
                name: name.to_string(),
                sha256: files.wasm.clone(),
                bytes: Arc::clone(&bytes),
                config,
            };
            self.load(candidate, role, Some(files)).await
        };
        if !matches!(outcome, LoadOutcome::Failed { .. }) {
            write_then_rename(&dir, &role.file_name(name), &bytes).await?;
        }
        Ok(outcome)
    }

    /// Writes `text` as plugin `name`'s `<name>.toml` (config and
    /// `[grants]`) into the plugins folder, then reloads its live `.wasm`
    /// if the folder has one, so the serving version takes the new config
    /// ([`LoadOutcome::Reconfigured`]); `None` when no `.wasm` is there
    /// yet (the next upload reads the file). A text that is not valid TOML
    /// or whose `[grants]` do not parse is refused before anything is
    /// written ([`InstallError::Config`]). Used by
    /// `PUT /admin/plugins/{name}/toml`.
    pub async fn install_config(
        &self,
        name: &str,
        text: &str,
    ) -> Result<Option<LoadOutcome>, InstallError> {
        let dir = self.upload_dir(name)?;
        config_json(Some(text))
            .and_then(|c| Grants::from_config(&c).map(drop))
            .map_err(|e| InstallError::Config(e.to_string()))?;
        let _gate = self.reload_gate.lock().await;
        let wasm = dir.join(Role::Live.file_name(name));
        let toml = write_then_rename(&dir, &format!("{name}.toml"), text.as_bytes()).await?;
        if !is_file(&wasm).await {
            return Ok(None);
        }
        let file = PluginFiles {
            name: name.to_string(),
            role: Role::Live,
            wasm,
            toml: toml.clone(),
        };
        let outcome = self.load_files(&file, true).await;
        // A staged canary or shadow file shares the config: it takes the
        // new grants now too, not at the watcher's next look.
        for role in [Role::Canary, Role::Shadow] {
            let staged = dir.join(role.file_name(name));
            if is_file(&staged).await {
                let file = PluginFiles {
                    name: name.to_string(),
                    role,
                    wasm: staged,
                    toml: toml.clone(),
                };
                self.load_files(&file, true).await;
            }
        }
        Ok(Some(outcome))
    }

    /// Whether `name` is a plugin built into this binary that serves here
    /// (`plugins.bundled`) unless a `<name>.wasm` of the folder replaces it.
    pub fn serves_bundled(&self, name: &str) -> bool {
        self.bundled && bundled::BUNDLED.iter().any(|(n, _, _)| *n == name)
    }

    /// The plugins folder an upload of `name` goes to.
    fn upload_dir(&self, name: &str) -> Result<PathBuf, InstallError> {
        if !is_plugin_name(name) {
            return Err(InstallError::Name(name.into()));
        }
        self.dir.clone().ok_or(InstallError::NoFolder)
    }

    /// Rescans the folder now (also retrying files whose last load failed).
    /// Nothing to do for the bundled plugins.
    pub async fn reload(&self) -> Vec<LoadOutcome> {
        match &self.dir {
            Some(dir) => self.rescan(dir, true).await,
            None => Vec::new(),
        }
    }

    /// Puts the previous good version of `name` back in service (the
    /// current one becomes the previous). It stays until the plugin's files
    /// change again.
    pub async fn rollback(&self, name: &str) -> Result<PluginStatus, PluginError> {
        let _gate = self.reload_gate.lock().await;
        let rolled = self.registry.rollback(name);
        let outcome = if rolled.is_ok() {
            "rolled_back"
        } else {
            "rollback_failed"
        };
        count_reload(name, outcome);
        let plugin =
            rolled.inspect_err(|e| tracing::warn!(plugin = name, "rollback refused: {e}"))?;
        tracing::info!(
            plugin = name,
            plugin_version = plugin.version(),
            sha256 = plugin.sha256(),
            "plugin rolled back"
        );
        plugin.prewarm().await;
        self.registry
            .status(name)
            .ok_or_else(|| PluginError::NotFound(name.into()))
    }

    /// Whether the initial load has finished.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The registry, for tests that check its rules directly.
    #[cfg(test)]
    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Rescans `dir`: unloads plugins whose `.wasm` is gone and loads every
    /// file that changed. With `retry_failed`, files whose last load failed
    /// are tried again even if unchanged (the watcher skips them).
    pub(crate) async fn rescan(&self, dir: &Path, retry_failed: bool) -> Vec<LoadOutcome> {
        let _gate = self.reload_gate.lock().await;
        let files = match scan(dir).await {
            Ok(files) => files,
            Err(error) => {
                tracing::error!(dir = %dir.display(), "cannot read the plugin folder: {error}");
                return Vec::new();
            }
        };
        let mut outcomes = Vec::new();
        let present =
            |name: &str, role: Role| files.iter().any(|f| f.name == name && f.role == role);
        let serving = self.registry.names();
        for name in &serving {
            if present(name, Role::Live) {
                continue;
            }
            match self.bundled_candidate(name) {
                // Its file is gone: the bundled version serves again
                // (unless it already does).
                Some(candidate) => {
                    let current = self.registry.status(name).map(|s| s.sha256);
                    if current.as_deref() != Some(candidate.sha256.as_str()) {
                        outcomes.push(self.load(candidate, Role::Live, None).await);
                    }
                }
                None => outcomes.push(self.unload(name)),
            }
        }
        // Bundled plugins the folder does not replace, before the folder's
        // files: a file claiming one of their actions under another name
        // is refused as a clash (name it like the bundled plugin to
        // replace it, or set `plugins.bundled = false`).
        if self.bundled {
            for (name, _, _) in bundled::BUNDLED {
                if !present(name, Role::Live)
                    && !serving.iter().any(|s| s == name)
                    && let Some(candidate) = self.bundled_candidate(name)
                {
                    outcomes.push(self.load(candidate, Role::Live, None).await);
                }
            }
        }
        for role in [Role::Canary, Role::Shadow] {
            for name in self.registry.staged_from_files(role) {
                if !present(&name, role) && self.registry.unstage_file(&name, role) {
                    tracing::info!(plugin = %name, role = role.as_str(), "staged file gone: dropped");
                    outcomes.push(LoadOutcome::Unstaged {
                        name,
                        role: role.as_str(),
                    });
                }
            }
        }
        // Live files first (sorted so): a canary or shadow stands beside
        // the live version of its plugin.
        for file in &files {
            outcomes.push(self.load_files(file, retry_failed).await);
        }
        outcomes
    }

    /// The bundled plugin `name`, when `plugins.bundled` lets it serve
    /// beside a folder.
    fn bundled_candidate(&self, name: &str) -> Option<Candidate> {
        if !self.bundled {
            return None;
        }
        let (name, bytes, config) = bundled::BUNDLED.iter().find(|(n, _, _)| *n == name)?;
        let bytes: Arc<[u8]> = Arc::from(*bytes);
        Some(Candidate {
            name: name.to_string(),
            sha256: sha256_hex(&bytes),
            bytes,
            config: Some(config.to_string()),
        })
    }

    async fn load_bundled(&self) -> Vec<LoadOutcome> {
        let _gate = self.reload_gate.lock().await;
        let mut outcomes = Vec::new();
        for (name, bytes, config) in bundled::BUNDLED {
            let bytes: Arc<[u8]> = Arc::from(*bytes);
            let candidate = Candidate {
                name: name.to_string(),
                sha256: sha256_hex(&bytes),
                bytes,
                config: Some(config.to_string()),
            };
            outcomes.push(self.load(candidate, Role::Live, None).await);
        }
        outcomes
    }

    fn unload(&self, name: &str) -> LoadOutcome {
        if let Some(plugin) = self.registry.remove(name) {
            tracing::info!(
                plugin = name,
                plugin_version = plugin.version(),
                "plugin removed: its actions are no longer served"
            );
        }
        count_reload(name, "removed");
        LoadOutcome::Removed { name: name.into() }
    }

    /// Reads one plugin's files and loads them unless unchanged.
    async fn load_files(&self, file: &PluginFiles, retry_failed: bool) -> LoadOutcome {
        let candidate = match read_files(file).await {
            Ok(candidate) => candidate,
            Err(error) => return self.fail(&file.name, file.role, None, None, error),
        };
        let files = Fingerprint {
            wasm: candidate.sha256.clone(),
            config: candidate.config.clone(),
        };
        if self
            .registry
            .unchanged(&file.name, file.role, &files, retry_failed)
        {
            return LoadOutcome::Unchanged {
                name: file.name.clone(),
            };
        }
        self.load(candidate, file.role, Some(files)).await
    }

    /// Loads a candidate: a new config of the serving version, or a new
    /// version compiled, linked, described and checked; for a staged role,
    /// a canary or shadow beside the live version. `files` is `None` for a
    /// bundled plugin (which `plugins.allowed_sha256` does not restrict:
    /// it is part of the binary).
    async fn load(
        &self,
        candidate: Candidate,
        role: Role,
        files: Option<Fingerprint>,
    ) -> LoadOutcome {
        let name = candidate.name.clone();
        if files.is_some()
            && let Some(allowed) = &self.allowed_sha256
            && !allowed.contains(&candidate.sha256)
        {
            let error = PluginError::NotAllowed(candidate.sha256.clone());
            return self.fail(&name, role, None, files, error);
        }
        // A config whose `[grants]` do not parse is refused like invalid
        // TOML: the serving version (and its grants) stays.
        let config = match config_json(candidate.config.as_deref())
            .and_then(|c| Grants::from_config(&c).map(|_| c))
        {
            Ok(config) => config,
            Err(error) => return self.fail(&name, role, None, files, error),
        };
        if role != Role::Live {
            return self.load_staged(candidate, role, config, files).await;
        }
        if let Some(active) = self
            .registry
            .active(&name)
            .filter(|a| a.sha256() == candidate.sha256)
        {
            return self.reconfigure(&active, config, files).await;
        }
        match self.prepare(&candidate, Arc::clone(&config)).await {
            Ok(compiled) => self.go_live(compiled, config, files).await,
            Err((error, version)) => self.fail(&name, role, version.as_deref(), files, error),
        }
    }

    /// Stages `<name>.canary.wasm` (at `plugins.canary_percent`) or
    /// `<name>.shadow.wasm` beside the live version of `<name>`, with the
    /// live version's `<name>.toml`.
    async fn load_staged(
        &self,
        candidate: Candidate,
        role: Role,
        config: Arc<str>,
        files: Option<Fingerprint>,
    ) -> LoadOutcome {
        let name = candidate.name.clone();
        if self.registry.active(&name).is_none() {
            let error = PluginError::Config(format!(
                "no live version of {name:?} to stage a {} beside",
                role.as_str()
            ));
            return self.fail(&name, role, None, files, error);
        }
        let compiled = match self.prepare(&candidate, Arc::clone(&config)).await {
            Ok(compiled) => compiled,
            Err((error, version)) => {
                return self.fail(&name, role, version.as_deref(), files, error);
            }
        };
        let grants = Grants::from_config(&config).unwrap_or_else(|_| Grants::legacy());
        let plugin = LoadedPlugin::new(Arc::clone(&self.runtime), compiled, config, grants);
        plugin.prewarm().await;
        let staged = match role {
            Role::Canary => self.registry.stage_canary(
                Arc::clone(&plugin),
                self.canary_percent,
                true,
                files.clone(),
            ),
            _ => self
                .registry
                .stage_shadow(Arc::clone(&plugin), true, files.clone()),
        };
        if let Err(error) = staged {
            let error = PluginError::Config(error.to_string());
            return self.fail(&name, role, Some(plugin.version()), files, error);
        }
        self.registry.confirm(&name, role, files);
        count_reload(
            &name,
            if role == Role::Canary {
                "canary"
            } else {
                "shadow"
            },
        );
        tracing::info!(
            plugin = %name,
            plugin_version = plugin.version(),
            sha256 = plugin.sha256(),
            role = role.as_str(),
            percent = (role == Role::Canary).then_some(self.canary_percent),
            "plugin version staged"
        );
        LoadOutcome::Staged {
            name,
            role: role.as_str(),
            version: plugin.version().into(),
            sha256: plugin.sha256().into(),
        }
    }

    /// Compiles, links, describes and checks a new version. On failure,
    /// also returns the version it described, if it got that far.
    async fn prepare(
        &self,
        candidate: &Candidate,
        config: Arc<str>,
    ) -> Result<Arc<Compiled>, (PluginError, Option<String>)> {
        let component = self
            .runtime
            .compile(
                &candidate.name,
                candidate.sha256.clone(),
                Arc::clone(&candidate.bytes),
            )
            .await
            .map_err(|e| (e, None))?;
        let pre = self.runtime.link(&component).map_err(|e| (e, None))?;
        let description = self
            .runtime
            .describe(&pre, &candidate.name, config)
            .await
            .map_err(|e| (e, None))?;
        let version = Some(description.version.clone());
        description
            .validate(&candidate.name)
            .map_err(|e| (e, version.clone()))?;
        if let Some(error) = self.registry.conflict(&description) {
            return Err((error, version));
        }
        Ok(Compiled::new(
            &self.runtime,
            candidate.sha256.clone(),
            description,
            pre,
        ))
    }

    async fn go_live(
        &self,
        compiled: Arc<Compiled>,
        config: Arc<str>,
        files: Option<Fingerprint>,
    ) -> LoadOutcome {
        let grants = Grants::from_config(&config).unwrap_or_else(|_| Grants::legacy());
        let plugin = LoadedPlugin::new(Arc::clone(&self.runtime), compiled, config, grants);
        plugin.prewarm().await;
        let replaced = self
            .registry
            .active(plugin.name())
            .map(|p| p.version().to_string());
        self.registry.activate(Arc::clone(&plugin), files);
        count_reload(plugin.name(), "loaded");
        tracing::info!(
            plugin = plugin.name(),
            plugin_version = plugin.version(),
            sha256 = plugin.sha256(),
            replaced = replaced.as_deref().unwrap_or(""),
            actions = ?plugin.description().action_names(),
            "plugin loaded"
        );
        LoadOutcome::Loaded {
            name: plugin.name().into(),
            version: plugin.version().into(),
            sha256: plugin.sha256().into(),
        }
    }

    async fn reconfigure(
        &self,
        active: &LoadedPlugin,
        config: Arc<str>,
        files: Option<Fingerprint>,
    ) -> LoadOutcome {
        if **active.config() == *config {
            // Same bytes, same config (e.g. the `.toml` was only reformatted).
            self.registry.confirm(active.name(), Role::Live, files);
            return LoadOutcome::Unchanged {
                name: active.name().into(),
            };
        }
        let grants = Grants::from_config(&config).unwrap_or_else(|_| Grants::legacy());
        let plugin = LoadedPlugin::new(
            Arc::clone(&self.runtime),
            Arc::clone(active.compiled()),
            config,
            grants,
        );
        plugin.prewarm().await;
        self.registry.activate(Arc::clone(&plugin), files);
        count_reload(plugin.name(), "reconfigured");
        tracing::info!(
            plugin = plugin.name(),
            plugin_version = plugin.version(),
            "plugin config reloaded"
        );
        LoadOutcome::Reconfigured {
            name: plugin.name().into(),
            version: plugin.version().into(),
        }
    }

    /// Records and logs a failed load; the serving version (if any) stays.
    fn fail(
        &self,
        name: &str,
        role: Role,
        version: Option<&str>,
        files: Option<Fingerprint>,
        error: PluginError,
    ) -> LoadOutcome {
        let serving = self.registry.active(name).map(|p| p.version().to_string());
        tracing::error!(
            plugin = name,
            plugin_version = version.unwrap_or("unknown"),
            serving_version = serving.as_deref().unwrap_or("none"),
            role = role.as_str(),
            "plugin load failed: {error}"
        );
        count_reload(name, "failed");
        self.registry.fail(name, role, files, error.to_string());
        LoadOutcome::Failed {
            name: name.into(),
            error: error.to_string(),
        }
    }
}

/// The plugins in `dir`: every `<name>.wasm` file or link to one (hidden
/// files skipped), and the staged `<name>.canary.wasm` and
/// `<name>.shadow.wasm`.
async fn scan(dir: &Path) -> std::io::Result<Vec<PluginFiles>> {
    let mut entries = tokio::fs::read_dir(dir).await?;
    let mut files = Vec::new();
    while let Some(entry) = entries.next_entry().await? {
        let path = entry.path();
        let is_wasm = path.extension().is_some_and(|e| e == "wasm");
        let Some(name) = path
            .file_stem()
            .and_then(|s| s.to_str())
            .map(str::to_string)
        else {
            continue;
        };
        if !is_wasm || name.starts_with('.') || !is_file(&path).await {
            continue;
        }
        let (name, role) = match (name.strip_suffix(".canary"), name.strip_suffix(".shadow")) {
            (Some(base), _) => (base.to_string(), Role::Canary),
            (_, Some(base)) => (base.to_string(), Role::Shadow),
            _ => (name, Role::Live),
        };
        files.push(PluginFiles {
            toml: dir.join(format!("{name}.toml")),
            wasm: path,
            name,
            role,
        });
    }
    // Live files first, then canaries, then shadows; by name within each.
    files.sort_by(|a, b| (a.role, &a.name).cmp(&(b.role, &b.name)));
    Ok(files)
}

/// Why an upload (`PluginHost::install`, `install_config`) wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The server has no `plugins.dir`.
    #[error(
        "the server has no plugins folder (plugins.dir): an uploaded plugin is written there \
         so that a restart finds it; start the server with plugins.dir set"
    )]
    NoFolder,
    /// Not `[a-z][a-z0-9_]*` of at most 64 bytes.
    #[error(
        "`{0}` is not a plugin name: use a-z, 0-9 and _, starting with a letter, at most 64 bytes"
    )]
    Name(String),
    /// The `.toml` is not valid TOML or its `[grants]` do not parse.
    #[error("the plugin config is refused: {0}")]
    Config(String),
    /// The file could not be written.
    #[error("writing {path}: {message}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        message: String,
    },
}

/// A plugin name, as a file stem: `[a-z][a-z0-9_]*`, at most 64 bytes
/// (the bound of an action name, which a plugin's example action shares).
pub(crate) fn is_plugin_name(name: &str) -> bool {
    name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
}

/// Writes `bytes` to a hidden temporary file in `dir` (skipped by the
/// scan), flushes it to disk, then renames it to `file`: a reader sees the
/// whole old file or the whole new one. The path of `file`.
async fn write_then_rename(dir: &Path, file: &str, bytes: &[u8]) -> Result<PathBuf, InstallError> {
    use std::io::Write;
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".{file}.upload.{}.{}.tmp",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let target = dir.join(file);
    let (bytes, tmp2, target2) = (bytes.to_vec(), tmp.clone(), target.clone());
    let written = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let mut out = std::fs::File::create(&tmp2)?;
        out.write_all(&bytes)?;
        out.sync_all()?;
        std::fs::rename(&tmp2, &target2)
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        InstallError::Io {
            path: target.clone(),
            message: e.to_string(),
        }
    })?;
    Ok(target)
}

/// Whether `path` is a file, following symlinks (a mounted ConfigMap's
/// files are links); one that vanished since the listing is not.
async fn is_file(path: &Path) -> bool {
    tokio::fs::metadata(path).await.is_ok_and(|m| m.is_file())
}

/// Reads a plugin's `.wasm` and optional `.toml`, and hashes the bytes:
/// on a blocking thread, since a rescan hashes every plugin file and a
/// large one takes milliseconds of CPU.
async fn read_files(file: &PluginFiles) -> Result<Candidate, PluginError> {
    let (name, wasm, toml) = (file.name.clone(), file.wasm.clone(), file.toml.clone());
    tokio::task::spawn_blocking(move || read_files_blocking(name, &wasm, &toml))
        .await
        .map_err(|e| PluginError::Io {
            path: file.wasm.clone(),
            message: format!("the read task failed: {e}"),
        })?
}

/// [`read_files`] on the current thread.
fn read_files_blocking(name: String, wasm: &Path, toml: &Path) -> Result<Candidate, PluginError> {
    let io = |path: &Path, e: std::io::Error| PluginError::Io {
        path: path.into(),
        message: e.to_string(),
    };
    let bytes: Arc<[u8]> = std::fs::read(wasm).map_err(|e| io(wasm, e))?.into();
    let config = match std::fs::read_to_string(toml) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io(toml, e)),
    };
    Ok(Candidate {
        name,
        sha256: sha256_hex(&bytes),
        bytes,
        config,
    })
}

/// `<name>.toml` as a JSON object (`{}` without a file).
pub(crate) fn config_json(toml_text: Option<&str>) -> Result<Arc<str>, PluginError> {
    let Some(text) = toml_text else {
        return Ok("{}".into());
    };
    let table: toml::Table =
        toml::from_str(text).map_err(|e| PluginError::Config(e.to_string()))?;
    let json = serde_json::to_string(&table).map_err(|e| PluginError::Config(e.to_string()))?;
    Ok(json.into())
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
