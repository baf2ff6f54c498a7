//! The plugin runtime: loads the WebAssembly components that implement the
//! actions (PROTOCOL section 10), calls them, and swaps versions while the
//! server runs.
//!
//! # What it does
//!
//! A plugin is a component of the `chorus:plugin` world (`wit/`). For each
//! version the host compiles the bytes once, links them against the world,
//! asks the plugin to [describe](Description) itself, and then routes events
//! to it: [`PluginHost::route`] finds the version serving an action,
//! [`PluginHost::call`] runs one event on it and turns what the plugin
//! returned into a [`Reply`] (state changes and notifications, in order) or a
//! [`CallError`]. The host never applies anything itself: the caller applies
//! a `Reply` only after the call returned, so a call that traps, times out or
//! returns an error changes nothing.
//!
//! # Code map
//!
//! - `bindings`: the `bindgen!` of the current world (1.2.0) and
//!   [`bindings::Plugin`], an instance of whichever world a plugin
//!   targets; `compat`: the frozen 1.0.0 and 1.1.0 worlds, their imports
//!   and conversions.
//! - `view`: `PluginView`, the data of one wasmtime `Store`: the plugin's
//!   name, version and config, the state [`Store`](crate::store::Store),
//!   the memory limit and a WASI context. It is all an import can reach:
//!   never the server.
//! - `room_state`, `profiles`, `kv`, `config`, `clock`, `log`: one file per WIT import
//!   interface, each holding only that interface's `Host` impl;
//!   `custom_metrics` holds the `metrics` import's (contract 1.2) and the
//!   per-plugin table of series that bounds it.
//! - `stderr`: the bounded in-memory pipe that catches a guest's stderr, so
//!   the panic message of a trapped call can be logged.
//! - `engine`: the wasmtime engine, its pooling allocator and the epoch
//!   ticker thread (and its `EpochClock`) that makes call deadlines work.
//! - `gate`: where guest code may run: epoch slicing (a guest yields at
//!   every tick) and the `GuestGate` (at most N threads in guest code).
//! - `breaker`: the circuit breaker of a version whose calls keep hitting
//!   their deadline.
//! - `cache`: the on-disk cache of precompiled `.cwasm` artifacts, in an
//!   owner-only folder, each authenticated (HMAC) before it is loaded.
//! - `runtime`: what every version shares (engine, linker, cache, store
//!   handle, limits); it compiles, links and describes a version.
//! - `loaded`: a compiled version ([`LoadedPlugin`]), its warm instance pool
//!   and the call path.
//! - `effects`: converting WIT replies and errors into [`Reply`] (state
//!   changes, notifications, emitted [`AppEvent`]s) and [`CallError`].
//! - `stats`: per-version counters and latency histogram, and the metrics.
//! - `registry`: which version of each plugin serves, the last
//!   `plugins.keep_versions` good versions kept compiled, a staged canary
//!   or shadow, pauses, and the route table.
//! - `rollout`: canary selection by room, the objectives watch behind
//!   automatic rollback, and the shadow comparison (issue 18).
//! - `host`: [`PluginHost`], loading from a folder or the bundled plugins,
//!   reloads and rollback.
//! - `watch`: the folder watcher behind hot reload.
//! - `check`: [`check_file`] for `chorus plugin check`.
//! - `grants`: [`Grants`], what a plugin's `[grants]` let it use; effects
//!   are checked in `effects`, imports by `PluginView::require`.
//!
//! # Instances: a small warm pool per version
//!
//! Measured (FIELD-NOTES): a call on a warm instance costs 0.6 to 0.9 µs, a
//! fresh instance from the pooling allocator about 21 µs. The budget is at
//! most 5 µs over native per call, so a fresh instance per call (Spin's
//! model) is out. (Here, release build: the `faulty` fixture's `fx_ok`
//! takes about 1.4 µs in the bare export call and about 2 µs through
//! [`PluginHost::call`], pool, deadline, conversion and counters included;
//! see the `warm_call_cost` test.) Each version keeps a few idle instances (a `Store` plus
//! its instance); a call takes one (or instantiates one when none is idle),
//! and gives it back after it returned, successfully or with a plugin
//! error. After any trap the instance is poisoned (wasmtime refuses to enter
//! it again), so it is dropped, as is one whose call future was dropped
//! half-way. An instance is also retired after [`RETIRE_AFTER_CALLS`] calls,
//! so a guest that leaks or fragments its heap starts clean now and then,
//! and the idle pool holds at most [`MAX_IDLE_INSTANCES`]; beyond that a
//! returned instance is dropped. Guest state can therefore survive between
//! calls on one instance but never reliably: plugins keep state in `kv`.
//!
//! # Limits
//!
//! Every call runs under an epoch deadline derived from
//! [`Settings::call_timeout`] (a thread bumps the engine's epoch every
//! 10 ms) and a memory cap of [`Settings::max_memory`]
//! (`StoreLimitsBuilder::trap_on_grow_failure`, so exhaustion is a clear
//! trap). A trap, a timeout, an exhausted memory, an import whose store
//! failed, or a malformed reply fails that call only, as
//! [`CallError::Failed`] naming the [`FailureKind`]; it is counted and
//! logged with the guest's stderr, and never shown to clients. Epoch
//! deadlines are wall-clock: on a starved machine a normal call can miss a
//! tight one, so keep `call_timeout` generous next to the load.
//!
//! With [`Settings::meter_fuel`] the engine also counts fuel (wasmtime's
//! `consume_fuel`, about one unit per instruction): each call gets an
//! effectively unlimited budget and the host records what it used. Fuel
//! is only measured, never a limit: the deadline stays the epoch's.
//!
//! Instance slots are bounded by the pooling allocator (512 per engine):
//! a call that finds none free fails at once ([`FailureKind::Unavailable`])
//! instead of queueing.
//!
//! # Guest code and the async workers (issue 12)
//!
//! Guest code runs on the tokio worker that polls the call, but never for
//! long and never on every worker (see `gate`): a guest yields to the
//! executor at every epoch tick (10 ms), and at most
//! [`Settings::guest_parallelism`] threads (default: the runtime's
//! workers minus one, at least one) poll guest code at once, so a node
//! with two or more workers always has one free for I/O. Three guards keep
//! one plugin from hogging even that share:
//!
//! - [`Settings::max_concurrent_calls`] per version (default 64): one
//!   more call fails at once with [`FailureKind::Overloaded`] (2002).
//!   Failing rather than waiting: a waiting call would hold its session
//!   loop and often a room lock behind a plugin that is already slow.
//! - A circuit breaker per version ([`BreakerSettings`]): after
//!   `threshold` calls hit their deadline within `window`, every call of
//!   the version fails at once with [`FailureKind::BreakerOpen`] (2002)
//!   for `cooldown`; then the next call decides. `/admin/plugins` shows
//!   `breaker.state` and `breaker.open_until_ms`; the metrics are
//!   `chorus_plugin_breaker_trips_total` and `chorus_plugin_breaker_open`.
//!   A new version (new bytes) starts with a closed breaker.
//! - Compiling, reading the artifact cache and hashing plugin files run
//!   on blocking threads; instantiation and `describe` go through the
//!   gate like calls.
//!
//! A separate runtime for plugins would keep guest code off the I/O
//! workers entirely, but costs a cross-thread hop there and back per call
//! (measured about 8 µs at the median, against a budget of 2 µs; see
//! BENCHMARKS.md).

//! # Versions and reloads
//!
//! Compilation happens once per version: the sha256 of the bytes plus the
//! engine's compatibility hash keys a `.cwasm` cache on disk, and compiling
//! runs under `spawn_blocking`. The route table is swapped wholesale
//! through `ArcSwap`; a call holds its `Arc<LoadedPlugin>`, so a call in
//! flight finishes on the version it started on. A file that fails to load
//! leaves the previous version serving, with `last_error` set; the last
//! `plugins.keep_versions` good versions stay compiled for
//! [`PluginHost::rollback`] and [`PluginHost::activate`].
//!
//! # Rollout (issue 18)
//!
//! Beside the live version, a plugin may have a staged canary (serving the
//! rooms whose hash of `channel_name` falls in its share) and a staged
//! shadow (run on a copy of each event of the live version, its reply
//! compared and dropped), and may be paused (out of the route table:
//! 1007). The dispatcher knows none of it: it routes to the live version
//! and hands it to [`PluginHost::call`], which picks the canary for a
//! canary room, runs the shadow alongside, and feeds the objectives watch
//! that rolls a canary or a newly live version back by itself (see
//! `rollout`). Without a canary, shadow or watch a call costs one more
//! lock-free map lookup. Every log line
//! and metric of a call or a load names the plugin and its version. The
//! metric handles of a version are taken when it loads, so the `metrics`
//! recorder must be installed before [`PluginHost::load_all`].

mod bindings;
mod body;
mod breaker;
mod cache;
mod check;
mod clock;
mod compat;
mod config;
mod custom_metrics;
mod effects;
mod engine;
mod error;
mod gate;
mod grants;
mod host;
mod kv;
mod loaded;
mod log;
mod profiles;
mod registry;
mod rollout;
mod room_state;
mod runtime;
mod stats;
mod stderr;
mod view;
mod watch;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where `host/build.rs` left every built plugin, test fixtures included
/// (a folder of the source tree: for tests and tools, not for production).
pub const ARTIFACTS_DIR: &str = env!("CHORUS_PLUGIN_ARTIFACTS");

pub use body::Body;
pub use breaker::{BreakerSettings, BreakerState, BreakerStatus};
pub use check::{ActionSpec, Description, check_file, check_grants};
pub use error::{CallError, Failure, FailureKind, PluginError};
pub use grants::{EffectGroup, Grants, Import};
pub use host::InstallError;
pub use host::PluginHost;
pub use loaded::{LoadedPlugin, MAX_IDLE_INSTANCES, RETIRE_AFTER_CALLS};
pub use registry::{LoadOutcome, PluginDetail, PluginState, PluginStatus, Role};
pub use rollout::{
    AutoRollback, CanaryStatus, Objectives, RolloutError, ShadowSample, ShadowStatus,
    VersionStatus, WatchKind, WatchStatus, canary_bucket,
};

/// Where an event comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A signed frame from a client's WebSocket.
    Client,
    /// `POST /api/v1/actions` from the app backend.
    Server,
    /// An event the host raises itself, such as `disconnected`.
    System,
}

impl Source {
    /// The name used in descriptions and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Client => "client",
            Source::Server => "server",
            Source::System => "system",
        }
    }
}

/// How the plugin runtime is set up (`[plugins]` of the configuration).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Folder of `<name>.wasm` and `<name>.toml`, watched for changes;
    /// `None` serves the bundled plugins embedded in the binary.
    pub dir: Option<PathBuf>,
    /// `plugins.bundled`: with `dir`, also serve each bundled plugin no
    /// file of the folder replaces.
    pub bundled: bool,
    /// Deadline of one call (default 50 ms).
    pub call_timeout: Duration,
    /// Memory cap of one instance, in bytes (default 32 MiB).
    pub max_memory: u64,
    /// Folder of precompiled, authenticated artifacts (see `cache`);
    /// `None`: no disk cache, every load compiles. The server passes
    /// `plugins.cache_dir` or its default under `server.data_dir`
    /// ([`crate::config::Config::plugin_cache_dir`]).
    pub cache_dir: Option<PathBuf>,
    /// Calls of one version that may be in flight at once (default 64);
    /// one more is answered 2002 at once ([`FailureKind::Overloaded`])
    /// rather than queued.
    pub max_concurrent_calls: usize,
    /// Threads that may run guest code at once; `None` (the default): the
    /// tokio runtime's workers minus one, at least one.
    pub guest_parallelism: Option<usize>,
    /// When a version whose calls keep hitting their deadline is tripped.
    pub breaker: BreakerSettings,
    /// Pending timers a plugin and a room may have
    /// (`plugins.max_timers_per_plugin`, `plugins.max_timers_per_room`).
    pub timer_bounds: crate::store::TimerBounds,
    /// Good compiled versions kept per plugin, the serving one included
    /// (`plugins.keep_versions`, default 5).
    pub keep_versions: usize,
    /// The share of rooms, in percent, a `<name>.canary.wasm` serves when
    /// staged (`plugins.canary_percent`, default 10).
    pub canary_percent: f64,
    /// `plugins.allowed_sha256`: when set, only files with one of these
    /// hex sha256 (lowercase) load.
    pub allowed_sha256: Option<std::collections::HashSet<String>>,
    /// `[plugins.<name>]`: the objectives behind automatic rollback.
    pub objectives: std::collections::HashMap<String, Objectives>,
    /// `plugins.max_metric_series`: distinct series of the contract 1.2
    /// `metrics` import one plugin may create (all its versions together).
    pub max_metric_series: usize,
    /// `plugins.meter_fuel`: count the fuel (about one unit per
    /// WebAssembly instruction) each call consumes, for
    /// `chorus_plugin_fuel_per_call` and `fuel_p50`/`fuel_p99`. Costs CPU
    /// on every call (BENCHMARKS.md); deadlines stay epoch-based either way.
    pub meter_fuel: bool,
}

/// The runtime's view of `[plugins]`; the defaults live once, in
/// [`PluginsConfig`]. `cache_dir` is the configured one only: the server
/// fills in the default, which depends on `server.data_dir`.
impl From<&crate::config::PluginsConfig> for Settings {
    fn from(config: &crate::config::PluginsConfig) -> Self {
        Self {
            dir: config.dir.clone(),
            bundled: config.bundled,
            call_timeout: config.call_timeout,
            max_memory: config.max_memory.as_u64(),
            cache_dir: config.cache_dir.clone(),
            max_concurrent_calls: config.max_concurrent_calls,
            guest_parallelism: config.guest_parallelism,
            breaker: BreakerSettings {
                threshold: config.breaker_threshold,
                window: config.breaker_window,
                cooldown: config.breaker_cooldown,
            },
            timer_bounds: crate::store::TimerBounds {
                per_plugin: config.max_timers_per_plugin,
                per_room: config.max_timers_per_room,
            },
            keep_versions: config.keep_versions.max(1),
            canary_percent: config.canary_percent,
            allowed_sha256: config
                .allowed_sha256
                .as_ref()
                .map(|list| list.iter().map(|s| s.to_ascii_lowercase()).collect()),
            objectives: config
                .objectives
                .iter()
                .map(|(name, o)| (name.clone(), Objectives::from(o)))
                .collect(),
            max_metric_series: config.max_metric_series,
            meter_fuel: config.meter_fuel,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self::from(&crate::config::PluginsConfig::default())
    }
}

/// One event to hand to a plugin.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The action, or the system event's name (e.g. `disconnected`).
    pub action: String,
    /// Where it comes from.
    pub source: Source,
    /// For [`Source::Client`]: the connection's user; for
    /// [`Source::System`]: the user the event is about; for
    /// [`Source::Server`]: none (the payload carries `user_id`).
    pub user_id: Option<u64>,
    /// The request, without `online_token`, `sid`, `sign`, `timestamp` and
    /// `nonce`.
    pub payload: serde_json::Map<String, serde_json::Value>,
}

/// Who a notification goes to. Serialized as `{"user": 7}`,
/// `{"room": "room_1"}` or `"everyone"`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// One user, point to point.
    User(u64),
    /// The members of a room (by channel name), in the action's delivery
    /// mode.
    Room(String),
    /// Every user online.
    Everyone,
}

/// A notification a plugin asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// Who gets it.
    pub target: Target,
    /// The frame in the seed's shape, as the plugin wrote it; checked to
    /// be a JSON object with a string `action`. The host adds `msg_id`
    /// (and `relay`) to its text.
    pub body: Body,
    /// The user it is about: never the relay delegate, and the `user_id`
    /// of its report.
    pub subject: Option<u64>,
    /// For a room target: broadcast or relay as the plugin chose (contract
    /// 1.1 `notify-via`), or `None` for the mode configured for its action
    /// (`notify`, and every 1.0 plugin). `room_notice` is always broadcast.
    pub delivery: Option<crate::config::DeliveryMode>,
}

impl Notification {
    /// The notification's `action` (checked to be a string at conversion).
    pub fn action(&self) -> &str {
        self.body.action().unwrap_or_default()
    }
}

/// An application event a plugin emitted (contract 1.2 `emit`), for the
/// app backend's webhooks (issue 16). Checked at conversion: `name`
/// matches `[a-z][a-z0-9_.]*` and is at most 64 bytes, `body` is a JSON
/// object of at most 4096 bytes as the plugin wrote it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppEvent {
    /// The event's name, e.g. `gift.sent`.
    pub name: String,
    /// The event's body, as the plugin wrote it (serialized as the
    /// object).
    pub body: Body,
}

/// What a successful call returned, for the caller to apply.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The plugin's `result`, returned to the caller as `result`.
    pub result: serde_json::Value,
    /// State changes, in order, to apply as one atomic batch; `KvSet` and
    /// `KvDelete` carry this plugin's name.
    pub changes: Vec<crate::store::StateChange>,
    /// Notifications, in order, to deliver after the batch.
    pub notifications: Vec<Notification>,
    /// Application events the plugin emitted (contract 1.2 `emit`), in
    /// order, to hand on to the app backend after the batch applied.
    pub events: Vec<AppEvent>,
    /// The plugin that handled the call.
    pub plugin: String,
    /// Its version, to tag what the caller logs and counts.
    pub version: String,
}
