//! [`Runtime`]: the machinery every version shares: the engine and its
//! epoch ticker, the linker of the world, the artifact cache, the state
//! store handle and the per-call limits. It compiles, links and describes
//! a version; [`super::loaded`] calls it.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

use super::bindings::{Plugin, PluginPre};
use super::breaker::BreakerSettings;
use super::cache::ArtifactCache;
use super::check::Description;
use super::custom_metrics::SeriesTable;
use super::engine::{self, EPOCH_TICK, EpochTicker, FUEL_PER_RUN};
use super::gate::{self, GuestGate};
use super::grants::Grants;
use super::view::{Identity, PluginView};
use super::{PluginError, Settings};
use crate::store::{Store, TimerBounds};

/// The shortest deadline `describe` gets.
const MIN_DESCRIBE_DEADLINE: Duration = Duration::from_secs(1);

/// Shared by the host and every loaded version.
pub(crate) struct Runtime {
    /// Compiles and runs every version; its epoch drives the deadlines.
    pub(crate) engine: Engine,
    /// The world's imports: WASI p2 and the five Chorus interfaces.
    linker: Linker<PluginView>,
    /// The state the `room-state` and `kv` imports read.
    pub(crate) store: Arc<dyn Store>,
    /// Memory cap of one instance, in bytes.
    pub(crate) max_memory: usize,
    /// Epoch ticks a call may run (from `call_timeout`).
    pub(crate) deadline_ticks: u64,
    /// Bounds the threads running guest code at once; every call,
    /// instantiation and `describe` goes through it.
    pub(crate) gate: GuestGate,
    /// When a version's breaker trips (`plugins.breaker_*`).
    pub(crate) breaker: BreakerSettings,
    /// Calls of one version in flight at most.
    pub(crate) max_concurrent_calls: usize,
    /// Pending timers allowed (`plugins.max_timers_per_*`).
    pub(crate) timer_bounds: TimerBounds,
    /// The series each plugin created through the `metrics` import, and
    /// their bound (`plugins.max_metric_series`).
    pub(crate) custom_metrics: SeriesTable,
    /// `plugins.meter_fuel`: the engine counts fuel, and each run of
    /// guest code starts with [`FUEL_PER_RUN`].
    meter_fuel: bool,
    /// The backstop for time spent awaiting the store inside an import or
    /// waiting for a turn after a yield: the epoch deadline is checked only
    /// while guest code runs.
    pub(crate) wall_deadline: Duration,
    /// The deadline of `describe`: once per version and off the request
    /// path, so generous; a load must not fail because a compile was
    /// competing for the cores at that moment.
    describe_deadline: Duration,
    /// Precompiled artifacts; `None` for `chorus plugin check` and without
    /// a `cache_dir`.
    cache: Option<ArtifactCache>,
    /// Drives the epoch (and the clock call deadlines are read against);
    /// stops its thread when the runtime goes.
    ticker: EpochTicker,
}

impl Runtime {
    /// Builds the engine, the linker and the ticker. `cached` chooses
    /// whether compiled artifacts go through the disk cache (when
    /// `settings.cache_dir` names one); a cache folder that cannot be
    /// trusted is [`PluginError::Cache`].
    pub(crate) fn new(
        settings: &Settings,
        store: Arc<dyn Store>,
        cached: bool,
    ) -> Result<Arc<Self>, PluginError> {
        let engine = engine::build(settings.max_memory, settings.meter_fuel)?;
        let linker = build_linker(&engine)?;
        let cache = match (&settings.cache_dir, cached) {
            (Some(dir), true) => Some(ArtifactCache::open(&engine, dir)?),
            _ => None,
        };
        let ticker = EpochTicker::start(&engine)?;
        let gate = GuestGate::new(
            settings
                .guest_parallelism
                .unwrap_or_else(GuestGate::default_size),
        );
        tracing::debug!(
            guest_parallelism = gate.size(),
            "plugin runtime: threads that may run guest code at once"
        );
        Ok(Arc::new(Self {
            max_memory: usize::try_from(settings.max_memory).unwrap_or(usize::MAX),
            deadline_ticks: engine::deadline_ticks(settings.call_timeout),
            breaker: settings.breaker,
            max_concurrent_calls: settings.max_concurrent_calls.max(1),
            timer_bounds: settings.timer_bounds,
            custom_metrics: SeriesTable::new(settings.max_metric_series),
            meter_fuel: settings.meter_fuel,
            gate,
            wall_deadline: settings.call_timeout + 3 * EPOCH_TICK,
            describe_deadline: (settings.call_timeout * 10).max(MIN_DESCRIBE_DEADLINE),
            engine,
            linker,
            store,
            cache,
            ticker,
        }))
    }

    /// A fresh `Store` for one instance of a version, with the memory cap
    /// and the epoch slicing of [`gate`]: the guest yields at every tick
    /// and traps once a call's deadline has passed. Armed for one call's
    /// deadline (which its instantiation runs under).
    pub(crate) fn new_store(
        &self,
        identity: Identity,
        config: Arc<str>,
    ) -> wasmtime::Store<PluginView> {
        let view = PluginView::new(identity, config, Arc::clone(&self.store), self.max_memory);
        let mut store = wasmtime::Store::new(&self.engine, view);
        store.limiter(|view| &mut view.limits);
        let clock = self.ticker.clock().clone();
        store.epoch_deadline_callback(move |store| gate::on_epoch(store, &clock));
        self.arm(&mut store, self.deadline_ticks);
        store
    }

    /// Gives the next run of guest code in `store` a deadline `ticks`
    /// epoch ticks from now: the store's epoch callback fires at every
    /// tick, yields, and traps once that tick has come.
    /// With `plugins.meter_fuel`, also refills the store's fuel.
    pub(crate) fn arm(&self, store: &mut wasmtime::Store<PluginView>, ticks: u64) {
        store.data_mut().deadline_epoch = self.ticker.clock().now() + ticks;
        store.set_epoch_deadline(1);
        if self.meter_fuel {
            // Cannot fail: the engine was built with `consume_fuel`.
            let _ = store.set_fuel(FUEL_PER_RUN);
        }
    }

    /// The fuel guest code consumed in `store` since it was last armed;
    /// `None` without `plugins.meter_fuel`.
    pub(crate) fn fuel_used(&self, store: &wasmtime::Store<PluginView>) -> Option<u64> {
        if !self.meter_fuel {
            return None;
        }
        store
            .get_fuel()
            .ok()
            .map(|left| FUEL_PER_RUN - left.min(FUEL_PER_RUN))
    }

    /// Compiles `bytes` (or loads the cached artifact) on a blocking
    /// thread, off the async workers.
    pub(crate) async fn compile(
        self: &Arc<Self>,
        name: &str,
        sha256: String,
        bytes: Arc<[u8]>,
    ) -> Result<Component, PluginError> {
        let (runtime, name) = (Arc::clone(self), name.to_string());
        tokio::task::spawn_blocking(move || runtime.compile_blocking(&name, &sha256, &bytes))
            .await
            .map_err(|e| PluginError::Compile(format!("the compile task failed: {e}")))?
    }

    /// Compiles on the current thread.
    pub(crate) fn compile_blocking(
        &self,
        name: &str,
        sha256: &str,
        bytes: &[u8],
    ) -> Result<Component, PluginError> {
        let compiled = match &self.cache {
            Some(cache) => cache.load_or_compile(&self.engine, name, sha256, bytes),
            None => Component::new(&self.engine, bytes),
        };
        compiled.map_err(|e| PluginError::Compile(format!("{e:#}")))
    }

    /// Links a component against the world, once per version.
    pub(crate) fn link(&self, component: &Component) -> Result<PluginPre<PluginView>, PluginError> {
        let pre = self
            .linker
            .instantiate_pre(component)
            .map_err(|e| PluginError::Link(format!("{e:#}")))?;
        PluginPre::new(pre).map_err(|e| PluginError::Link(format!("{e:#}")))
    }

    /// Instantiates a version once and asks it to describe itself, under
    /// the memory cap of a call and a more generous deadline.
    pub(crate) async fn describe(
        &self,
        pre: &PluginPre<PluginView>,
        name: &str,
        config: Arc<str>,
    ) -> Result<Description, PluginError> {
        let identity = Identity {
            plugin: name.into(),
            version: "unknown".into(),
            // `describe` runs before any config applies; what it may call
            // is not the operator's to grant.
            grants: Arc::new(Grants::all()),
        };
        let mut store = self.new_store(identity, config);
        self.arm(&mut store, engine::deadline_ticks(self.describe_deadline));
        let described = tokio::time::timeout(
            self.describe_deadline,
            self.gate.run(describe_in(&mut store, pre)),
        )
        .await;
        let stderr = store.data().output.contents();
        let with_stderr = |e: String| {
            if stderr.is_empty() {
                e
            } else {
                format!("{e} (stderr: {stderr})")
            }
        };
        match described {
            Ok(Ok(description)) => Ok(Description::from_wit(description)),
            Ok(Err(e)) => Err(PluginError::Describe(with_stderr(format!("{e:#}")))),
            Err(_) => Err(PluginError::Describe(with_stderr("timed out".into()))),
        }
    }
}

/// Instantiates and calls `describe`.
async fn describe_in(
    store: &mut wasmtime::Store<PluginView>,
    pre: &PluginPre<PluginView>,
) -> wasmtime::Result<super::bindings::types::Description> {
    let plugin: Plugin = pre.instantiate_async(&mut *store).await?;
    plugin
        .chorus_plugin_handler()
        .call_describe(&mut *store)
        .await
}

/// The linker of the world: WASI p2 (with nothing granted: no folders, no
/// environment, no network) and the Chorus imports, all implemented on
/// [`PluginView`].
fn build_linker(engine: &Engine) -> Result<Linker<PluginView>, PluginError> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)
        .map_err(|e| PluginError::Engine(format!("{e:#}")))?;
    super::bindings::add_to_linker(&mut linker)
        .map_err(|e| PluginError::Engine(format!("{e:#}")))?;
    Ok(linker)
}
