//! [`PluginHost`]: the plugin runtime's front door. It loads every plugin
//! (from `plugins.dir` or the bundled set), routes and runs calls, reloads
//! and rolls back.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::grants::Grants;
use super::loaded::{Compiled, LoadedPlugin};
use super::registry::{Fingerprint, LoadOutcome, PluginStatus, Registry};
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
    /// Versions by name, and the route table.
    registry: Registry,
    /// Serializes loads (initial load, watcher, admin reload, rollback), so
    /// two rescans never interleave their checks and swaps. It guards no
    /// data and calls never take it; it is held across the awaits of a
    /// load on purpose, which is why it is an async mutex.
    reload_gate: tokio::sync::Mutex<()>,
    /// Set once the initial load has finished.
    ready: AtomicBool,
}

/// The files of one plugin in the folder.
struct PluginFiles {
    name: String,
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
            dir: settings.dir,
            registry: Registry::new(),
            reload_gate: tokio::sync::Mutex::new(()),
            ready: AtomicBool::new(false),
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
    pub async fn call(&self, plugin: &Arc<LoadedPlugin>, event: Event) -> Result<Reply, CallError> {
        plugin.call(&event).await
    }

    /// Every plugin's status, by name.
    pub fn statuses(&self) -> Vec<PluginStatus> {
        self.registry.statuses()
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
        for name in self.registry.names() {
            if !files.iter().any(|f| f.name == name) {
                outcomes.push(self.unload(&name));
            }
        }
        for file in &files {
            outcomes.push(self.load_files(file, retry_failed).await);
        }
        outcomes
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
            outcomes.push(self.load(candidate, None).await);
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
            Err(error) => return self.fail(&file.name, None, None, error),
        };
        let files = Fingerprint {
            wasm: candidate.sha256.clone(),
            config: candidate.config.clone(),
        };
        if self.registry.unchanged(&file.name, &files, retry_failed) {
            return LoadOutcome::Unchanged {
                name: file.name.clone(),
            };
        }
        self.load(candidate, Some(files)).await
    }

    /// Loads a candidate: a new config of the serving version, or a new
    /// version compiled, linked, described and checked.
    async fn load(&self, candidate: Candidate, files: Option<Fingerprint>) -> LoadOutcome {
        let name = candidate.name.clone();
        // A config whose `[grants]` do not parse is refused like invalid
        // TOML: the serving version (and its grants) stays.
        let config = match config_json(candidate.config.as_deref())
            .and_then(|c| Grants::from_config(&c).map(|_| c))
        {
            Ok(config) => config,
            Err(error) => return self.fail(&name, None, files, error),
        };
        if let Some(active) = self
            .registry
            .active(&name)
            .filter(|a| a.sha256() == candidate.sha256)
        {
            return self.reconfigure(&active, config, files).await;
        }
        match self.prepare(&candidate, Arc::clone(&config)).await {
            Ok(compiled) => self.go_live(compiled, config, files).await,
            Err((error, version)) => self.fail(&name, version.as_deref(), files, error),
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
            self.registry.confirm(active.name(), files);
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
        version: Option<&str>,
        files: Option<Fingerprint>,
        error: PluginError,
    ) -> LoadOutcome {
        let serving = self.registry.active(name).map(|p| p.version().to_string());
        tracing::error!(
            plugin = name,
            plugin_version = version.unwrap_or("unknown"),
            serving_version = serving.as_deref().unwrap_or("none"),
            "plugin load failed: {error}"
        );
        count_reload(name, "failed");
        self.registry.fail(name, files, error.to_string());
        LoadOutcome::Failed {
            name: name.into(),
            error: error.to_string(),
        }
    }
}

/// The plugins in `dir`: every `<name>.wasm` file or link to one (hidden
/// files skipped), by name.
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
        files.push(PluginFiles {
            toml: dir.join(format!("{name}.toml")),
            wasm: path,
            name,
        });
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
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
