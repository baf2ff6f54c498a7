//! [`LoadedPlugin`]: one compiled version of a plugin with its config, its
//! warm instance pool, and the call path.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::bindings::{Plugin, PluginPre, types};
use super::breaker::Breaker;
use super::check::Description;
use super::effects::{self, Policy};
use super::error::{CallError, Failure, FailureKind};
use super::grants::Grants;
use super::runtime::Runtime;
use super::stats::{CallMetrics, CallStats};
use super::view::{Identity, PluginView};
use super::{Event, Reply, Source};

/// Idle warm instances kept per version. Calls beyond that run in parallel
/// on fresh instances, which are dropped afterwards instead of pooled.
pub const MAX_IDLE_INSTANCES: usize = 8;
/// Calls after which an instance is dropped instead of pooled, so a guest
/// that leaks or fragments its heap starts clean now and then.
pub const RETIRE_AFTER_CALLS: u32 = 10_000;

/// What is shared by every config of one version: the linked component,
/// its description, and its counters.
pub(crate) struct Compiled {
    /// The plugin's name (its file stem).
    pub(crate) name: Arc<str>,
    /// The version it described.
    pub(crate) version: Arc<str>,
    /// Hex sha256 of the `.wasm` bytes.
    pub(crate) sha256: String,
    /// What it handles.
    pub(crate) description: Description,
    /// Linked once; instantiated per warm instance.
    pub(crate) pre: PluginPre<PluginView>,
    /// For `/admin/plugins`.
    pub(crate) stats: CallStats,
    /// For `/metrics`.
    metrics: CallMetrics,
    /// Trips when the version's calls keep hitting their deadline.
    pub(crate) breaker: Breaker,
    /// Calls in flight now, bounded by `max_in_flight`.
    in_flight: AtomicUsize,
    /// `plugins.max_concurrent_calls`.
    max_in_flight: usize,
}

impl Compiled {
    /// Wraps a linked and described version, with the breaker and the
    /// concurrency bound of `runtime`'s settings.
    pub(crate) fn new(
        runtime: &Runtime,
        sha256: String,
        description: Description,
        pre: PluginPre<PluginView>,
    ) -> Arc<Self> {
        let metrics = CallMetrics::new(&description.name, &description.version);
        let breaker = Breaker::new(runtime.breaker, &description.name, &description.version);
        Arc::new(Self {
            name: description.name.as_str().into(),
            version: description.version.as_str().into(),
            sha256,
            description,
            pre,
            stats: CallStats::new(),
            metrics,
            breaker,
            in_flight: AtomicUsize::new(0),
            max_in_flight: runtime.max_concurrent_calls,
        })
    }

    /// A place among the calls in flight, or `None` when all are taken.
    fn enter(&self) -> Option<InFlight<'_>> {
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let slot = InFlight(&self.in_flight);
        (before < self.max_in_flight).then_some(slot)
    }

    /// Calls in flight now.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// One call in flight; leaves on drop, however the call ends (a dropped
/// call future included).
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One version of a plugin, with its config, ready to serve.
///
/// A call holds an `Arc` of it, so a call in flight finishes on the version
/// it started on even when a reload replaces it.
pub struct LoadedPlugin {
    /// The version.
    compiled: Arc<Compiled>,
    /// `<name>.toml` as a JSON object (`{}` without a file).
    config: Arc<str>,
    /// What this config grants (its `[grants]` table).
    grants: Arc<Grants>,
    /// Unix seconds when this version (or config) went live.
    loaded_at: u64,
    /// Engine, store handle and limits.
    runtime: Arc<Runtime>,
    /// Idle warm instances, most recently used last.
    idle: Mutex<Vec<Warm>>,
    /// Set once the version stops serving (replaced, removed): instances
    /// coming back from calls are dropped rather than pooled.
    retired: AtomicBool,
}

/// A warm instance: its `Store` and the world's exports.
struct Warm {
    store: wasmtime::Store<PluginView>,
    plugin: Plugin,
    calls: u32,
}

/// How a call on an instance ended, before conversion.
enum Ran {
    /// `handle` returned (a reply or the plugin's error): the instance is
    /// healthy.
    Returned(Result<types::Reply, types::Error>),
    /// It trapped: the instance is poisoned.
    Trapped(Failure),
}

impl LoadedPlugin {
    /// A version with `config`, not yet warm.
    pub(crate) fn new(
        runtime: Arc<Runtime>,
        compiled: Arc<Compiled>,
        config: Arc<str>,
        grants: Grants,
    ) -> Arc<Self> {
        let loaded_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        Arc::new(Self {
            compiled,
            config,
            grants: Arc::new(grants),
            loaded_at,
            runtime,
            idle: Mutex::new(Vec::new()),
            retired: AtomicBool::new(false),
        })
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.compiled.name
    }

    /// The version serving.
    pub fn version(&self) -> &str {
        &self.compiled.version
    }

    /// Hex sha256 of the `.wasm` bytes of this version.
    pub fn sha256(&self) -> &str {
        &self.compiled.sha256
    }

    /// What this version handles.
    pub fn description(&self) -> &Description {
        &self.compiled.description
    }

    /// Whether this version handles `action` from `source`.
    pub fn accepts(&self, action: &str, source: Source) -> bool {
        self.compiled.description.accepts(action, source)
    }

    /// Unix seconds when this version (or its config) went live.
    pub fn loaded_at(&self) -> u64 {
        self.loaded_at
    }

    pub(crate) fn compiled(&self) -> &Arc<Compiled> {
        &self.compiled
    }

    pub(crate) fn config(&self) -> &Arc<str> {
        &self.config
    }

    /// The fuel the last call of this version consumed (wasmtime fuel,
    /// about one unit per WebAssembly instruction), exactly; `None`
    /// without `plugins.meter_fuel` or before any call ran.
    pub fn last_call_fuel(&self) -> Option<u64> {
        self.compiled.stats.last_fuel()
    }

    /// What this version's config grants.
    pub fn grants(&self) -> &Grants {
        &self.grants
    }

    /// Instantiates one instance ahead of the first call. A failure here
    /// only means the first call instantiates.
    pub(crate) async fn prewarm(&self) {
        match self.instantiate().await {
            Ok(warm) => self.give_back(warm, false),
            Err(e) => tracing::warn!(
                plugin = self.name(),
                plugin_version = self.version(),
                "could not prewarm: {e:#}"
            ),
        }
    }

    /// Stops pooling and drops the idle instances: the version no longer
    /// serves (it may still be kept for rollback).
    pub(crate) fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
        let idle = std::mem::take(&mut *self.lock_idle());
        drop(idle);
    }

    /// Serves again after a rollback.
    pub(crate) fn reinstate(&self) {
        self.retired.store(false, Ordering::Relaxed);
    }

    /// Runs one event; counts, times and logs it, and feeds the breaker.
    pub(crate) async fn call(&self, event: &Event) -> Result<Reply, CallError> {
        self.call_as(event, false).await
    }

    /// Runs one event as a shadow of the live version: like
    /// [`call`](Self::call), but what it records through the `metrics`
    /// import is dropped (a shadow applies nothing).
    pub(crate) async fn call_shadow(&self, event: &Event) -> Result<Reply, CallError> {
        self.call_as(event, true).await
    }

    async fn call_as(&self, event: &Event, shadow: bool) -> Result<Reply, CallError> {
        let started = Instant::now();
        let outcome = self.run(event, shadow).await;
        let elapsed = started.elapsed();
        let failed = matches!(outcome, Err(CallError::Failed(_)));
        self.compiled.stats.record(elapsed, failed);
        self.compiled.metrics.record(&outcome, elapsed);
        self.feed_breaker(&outcome);
        if let Err(error) = &outcome
            && !failed
        {
            tracing::debug!(
                plugin = self.name(),
                plugin_version = self.version(),
                action = %event.action,
                code = error.code(),
                "plugin refused: {error}"
            );
        }
        outcome
    }

    /// Tells the breaker how a call ended: a timeout counts, a call that
    /// returned in time closes a half-open breaker, a call that never ran
    /// says nothing.
    fn feed_breaker(&self, outcome: &Result<Reply, CallError>) {
        let breaker = &self.compiled.breaker;
        match outcome {
            Err(CallError::Failed(f)) if f.kind == FailureKind::Timeout => {
                if breaker.on_timeout(tokio::time::Instant::now()) {
                    let status = breaker.status();
                    tracing::warn!(
                        plugin = self.name(),
                        plugin_version = self.version(),
                        open_until_ms = status.open_until_ms,
                        trips = status.trips,
                        "plugin circuit breaker tripped: its calls keep hitting their deadline"
                    );
                }
            }
            Err(CallError::Failed(f))
                if matches!(
                    f.kind,
                    FailureKind::BreakerOpen | FailureKind::Overloaded | FailureKind::Starved
                ) => {}
            _ => breaker.on_returned(),
        }
    }

    async fn run(&self, event: &Event, shadow: bool) -> Result<Reply, CallError> {
        let input = wit_event(event)?;
        if !self.compiled.breaker.admit() {
            let failure = Failure::new(FailureKind::BreakerOpen, "the circuit breaker is open");
            return Err(self.failed(event, failure));
        }
        let Some(_in_flight) = self.compiled.enter() else {
            let detail = format!("{} calls already in flight", self.compiled.max_in_flight);
            return Err(self.failed(event, Failure::new(FailureKind::Overloaded, detail)));
        };
        let mut warm = self.take().await.map_err(|f| self.failed(event, f))?;
        let ran = run_on(&mut warm, &input, &self.runtime).await;
        let peak = u64::try_from(warm.store.data().limits.peak).unwrap_or(u64::MAX);
        self.compiled.stats.note_memory(peak);
        self.compiled.metrics.record_memory(peak);
        if let Some(fuel) = self.runtime.fuel_used(&warm.store) {
            self.compiled.stats.note_fuel(fuel);
            self.compiled.metrics.record_fuel(fuel);
        }
        let recorded = warm.store.data_mut().metrics.take();
        if !shadow {
            let runtime = &self.runtime;
            runtime
                .custom_metrics
                .record(self.name(), self.version(), recorded);
        }
        match ran {
            Ran::Returned(Ok(reply)) => {
                self.give_back(warm, true);
                let policy = Policy {
                    grants: &self.grants,
                    timer_bounds: self.runtime.timer_bounds,
                };
                effects::convert_reply(self.name(), self.version(), reply, policy)
                    .map_err(|f| self.failed(event, f))
            }
            Ran::Returned(Err(error)) => {
                self.give_back(warm, true);
                Err(effects::convert_error(error))
            }
            Ran::Trapped(mut failure) => {
                // Poisoned: dropped here, never pooled. What the guest wrote
                // to stderr (a panic message) goes into the detail.
                let stderr = warm.store.data().output.contents();
                if !stderr.is_empty() {
                    failure.detail = format!("{}; guest stderr: {stderr}", failure.detail);
                }
                Err(self.failed(event, failure))
            }
        }
    }

    /// Logs a failed call and wraps it. Calls refused before running (an
    /// open breaker, too many in flight) log at debug: they come in bursts,
    /// and the trip itself was logged.
    fn failed(&self, event: &Event, failure: Failure) -> CallError {
        if matches!(
            failure.kind,
            FailureKind::BreakerOpen | FailureKind::Overloaded
        ) {
            tracing::debug!(
                plugin = self.name(),
                plugin_version = self.version(),
                action = %event.action,
                kind = %failure.kind,
                "plugin call refused"
            );
        } else {
            tracing::warn!(
                plugin = self.name(),
                plugin_version = self.version(),
                action = %event.action,
                kind = %failure.kind,
                detail = %failure.detail,
                "plugin call failed"
            );
        }
        CallError::Failed(failure)
    }

    /// An idle instance, or a fresh one.
    async fn take(&self) -> Result<Warm, Failure> {
        let idle = self.lock_idle().pop();
        match idle {
            Some(warm) => Ok(warm),
            None => self
                .instantiate()
                .await
                .map_err(|e| Failure::new(FailureKind::Unavailable, format!("instantiate: {e:#}"))),
        }
    }

    async fn instantiate(&self) -> wasmtime::Result<Warm> {
        let identity = Identity {
            plugin: Arc::clone(&self.compiled.name),
            version: Arc::clone(&self.compiled.version),
            grants: Arc::clone(&self.grants),
        };
        let mut store = self.runtime.new_store(identity, Arc::clone(&self.config));
        let instantiating = self.compiled.pre.instantiate_async(&mut store);
        let plugin = self.runtime.gate.run(instantiating).await?;
        Ok(Warm {
            store,
            plugin,
            calls: 0,
        })
    }

    /// Pools a healthy instance, unless it is due for retirement, the
    /// version is retired, or the pool is full.
    fn give_back(&self, mut warm: Warm, after_call: bool) {
        if after_call {
            warm.calls += 1;
        }
        if warm.calls >= RETIRE_AFTER_CALLS || self.retired.load(Ordering::Relaxed) {
            return;
        }
        let overflow = {
            let mut idle = self.lock_idle();
            if idle.len() < MAX_IDLE_INSTANCES {
                idle.push(warm);
                None
            } else {
                Some(warm)
            }
        };
        // Dropping a store takes a few µs: outside the lock.
        drop(overflow);
    }

    fn lock_idle(&self) -> MutexGuard<'_, Vec<Warm>> {
        // A panic while holding the lock cannot leave a half-pushed Vec.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Idle instances now (for tests).
    #[cfg(test)]
    pub(crate) fn idle_instances(&self) -> usize {
        self.lock_idle().len()
    }
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("name", &self.name())
            .field("version", &self.version())
            .field("sha256", &self.sha256())
            .finish_non_exhaustive()
    }
}

/// The WIT event for `event`.
fn wit_event(event: &Event) -> Result<types::Event, CallError> {
    let payload =
        serde_json::to_string(&event.payload).map_err(|e| CallError::Invalid(e.to_string()))?;
    Ok(types::Event {
        action: event.action.clone(),
        source: event.source.into(),
        user_id: event.user_id,
        payload,
    })
}

/// Calls `handle` on a warm instance under the call's deadline, through
/// the guest gate.
async fn run_on(warm: &mut Warm, input: &types::Event, runtime: &Runtime) -> Ran {
    warm.store.data_mut().begin_call();
    runtime.arm(&mut warm.store, runtime.deadline_ticks);
    let handler = warm.plugin.chorus_plugin_handler();
    let call = runtime
        .gate
        .run(handler.call_handle(&mut warm.store, input));
    let ran = match tokio::time::timeout(runtime.wall_deadline, call).await {
        Ok(Ok(returned)) => return Ran::Returned(returned),
        Ok(Err(trap)) => classify(warm.store.data_mut(), &trap),
        // The store, not the guest, took the time: not the plugin's fault,
        // and not a reason to trip its breaker.
        Err(_) if warm.store.data().awaiting_store => Failure::new(
            FailureKind::Store,
            "the state store did not answer an import within the call's deadline",
        ),
        Err(_) => Failure::new(
            FailureKind::Timeout,
            "the call ran past its deadline while yielded or awaiting the host",
        ),
    };
    Ran::Trapped(blame(
        ran,
        warm.store.data().ticks_run,
        runtime.deadline_ticks,
    ))
}

/// A timeout the guest cannot be blamed for becomes [`FailureKind::Starved`]:
/// a guest that ran in at most one epoch tick of its deadline spent it
/// waiting (for a guest thread, the CPU, the host), not looping; a looping
/// guest runs in every tick it is given. Any other failure is unchanged.
fn blame(failure: Failure, ticks_run: u64, deadline_ticks: u64) -> Failure {
    if failure.kind == FailureKind::Timeout && ticks_run <= 1 && deadline_ticks > 2 {
        return Failure::new(
            FailureKind::Starved,
            format!(
                "the call's deadline passed while it waited; the guest ran in {ticks_run} of {deadline_ticks} ticks"
            ),
        );
    }
    failure
}

/// Names a trap: a store error an import met, an exhausted memory, the
/// epoch deadline, or any other trap.
fn classify(view: &mut PluginView, trap: &wasmtime::Error) -> Failure {
    if let Some(failure) = view.ungranted.take() {
        return failure;
    }
    if let Some(error) = view.store_error.take() {
        return Failure::new(FailureKind::Store, error.to_string());
    }
    if view.limits.exhausted {
        return Failure::new(FailureKind::Memory, format!("{trap:#}"));
    }
    if trap.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt) {
        return Failure::new(FailureKind::Timeout, "the call ran past its deadline");
    }
    Failure::new(FailureKind::Trap, format!("{trap:#}"))
}

#[cfg(test)]
impl LoadedPlugin {
    /// Prints where the time of a warm call goes: the bare export call,
    /// then each layer the call path adds (for `warm_call_cost`).
    pub(crate) async fn measure_layers(&self, event: &Event, rounds: u32) {
        let input = wit_event(event).expect("event");
        let mut warm = self.take().await.expect("warm");
        // The bare loop never resets the deadline: give it all the time.
        warm.store.set_epoch_deadline(1 << 40);
        let started = Instant::now();
        for _ in 0..rounds {
            let handler = warm.plugin.chorus_plugin_handler();
            let _ = handler
                .call_handle(&mut warm.store, &input)
                .await
                .expect("ok");
        }
        eprintln!("  call_handle only: {:?}", started.elapsed() / rounds);
        let started = Instant::now();
        for _ in 0..rounds {
            warm.store.data_mut().begin_call();
            self.runtime
                .arm(&mut warm.store, self.runtime.deadline_ticks);
            let handler = warm.plugin.chorus_plugin_handler();
            let _ = handler
                .call_handle(&mut warm.store, &input)
                .await
                .expect("ok");
        }
        eprintln!("  + begin_call/deadline: {:?}", started.elapsed() / rounds);
        let started = Instant::now();
        for _ in 0..rounds {
            warm.store.data_mut().begin_call();
            self.runtime
                .arm(&mut warm.store, self.runtime.deadline_ticks);
            let handler = warm.plugin.chorus_plugin_handler();
            let _ = self
                .runtime
                .gate
                .run(handler.call_handle(&mut warm.store, &input))
                .await
                .expect("ok");
        }
        eprintln!("  + guest gate: {:?}", started.elapsed() / rounds);
        let started = Instant::now();
        for _ in 0..rounds {
            let _ = run_on(&mut warm, &input, &self.runtime).await;
        }
        eprintln!(
            "  run_on (adds tokio timeout): {:?}",
            started.elapsed() / rounds
        );
        let started = Instant::now();
        for _ in 0..rounds {
            let _ = wit_event(event).expect("event");
        }
        eprintln!("  wit_event: {:?}", started.elapsed() / rounds);
        let handler = warm.plugin.chorus_plugin_handler();
        let reply = handler
            .call_handle(&mut warm.store, &input)
            .await
            .expect("ok")
            .expect("a reply");
        let policy = Policy {
            grants: &self.grants,
            timer_bounds: self.runtime.timer_bounds,
        };
        let started = Instant::now();
        for _ in 0..rounds {
            let reply = reply.clone();
            let _ = effects::convert_reply(self.name(), self.version(), reply, policy);
        }
        eprintln!(
            "  convert_reply (with a clone of the WIT reply): {:?}",
            started.elapsed() / rounds
        );
        let started = Instant::now();
        for _ in 0..rounds {
            std::hint::black_box(reply.clone());
        }
        eprintln!("  the clone alone: {:?}", started.elapsed() / rounds);
        self.give_back(warm, false);
    }
}

#[cfg(test)]
mod blame_tests {
    use super::*;

    #[test]
    fn a_timeout_is_the_guests_only_when_it_ran_in_two_ticks_or_more() {
        let timeout = || Failure::new(FailureKind::Timeout, "deadline");
        assert_eq!(blame(timeout(), 0, 6).kind, FailureKind::Starved);
        assert_eq!(blame(timeout(), 1, 6).kind, FailureKind::Starved);
        assert_eq!(blame(timeout(), 2, 6).kind, FailureKind::Timeout);
        assert_eq!(blame(timeout(), 6, 6).kind, FailureKind::Timeout);
        // A deadline of one or two ticks leaves no room to tell.
        assert_eq!(blame(timeout(), 0, 2).kind, FailureKind::Timeout);
        let trap = Failure::new(FailureKind::Trap, "panic");
        assert_eq!(blame(trap, 0, 6).kind, FailureKind::Trap);
    }
}
