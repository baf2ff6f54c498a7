//! The wasmtime engine every plugin version shares, and the thread that
//! drives its epoch so call deadlines fire.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::PluginError;

/// How often the epoch advances: Spin's choice, and the granularity of
/// call deadlines.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Instance slots of the pooling allocator: every warm, busy or
/// instantiating instance of every version holds one. A call that finds
/// none free fails with `unavailable` (2002) rather than queueing.
const INSTANCE_SLOTS: u32 = 512;
/// Core instances, memories and tables a std `wasm32-wasip2` component
/// needs per component instance, with room to spare (the main module plus
/// the WASI adapter and its shims).
const CORE_INSTANCES_PER_COMPONENT: u32 = 16;
const MEMORIES_PER_COMPONENT: u32 = 2;
const TABLES_PER_COMPONENT: u32 = 4;

/// Builds the engine: component model, epoch interruption, and the pooling
/// allocator (a fresh instance costs about 21 µs there against 44 µs on
/// demand, which matters whenever the warm pool runs dry). `meter_fuel`
/// turns on wasmtime's fuel counting (`plugins.meter_fuel`): compiled code
/// then decrements a counter per instruction, so a component compiled
/// with and without it differ (the artifact cache keys on the engine).
pub(crate) fn build(max_memory: u64, meter_fuel: bool) -> Result<Engine, PluginError> {
    let max_memory = usize::try_from(max_memory).map_err(|e| PluginError::Engine(e.to_string()))?;
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(INSTANCE_SLOTS)
        .total_core_instances(INSTANCE_SLOTS * CORE_INSTANCES_PER_COMPONENT)
        .total_memories(INSTANCE_SLOTS * MEMORIES_PER_COMPONENT)
        .total_tables(INSTANCE_SLOTS * TABLES_PER_COMPONENT)
        .total_stacks(INSTANCE_SLOTS)
        .max_memory_size(max_memory);
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .consume_fuel(meter_fuel)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    // A profile of guest code (`perf report` names the guest's functions
    // from /tmp/perf-<pid>.map): for the plugin benchmarks only.
    #[cfg(test)]
    if std::env::var_os("CHORUS_WASM_PERFMAP").is_some() {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    Engine::new(&config).map_err(|e| PluginError::Engine(format!("{e:#}")))
}

/// The epoch ticker thread; stops (within a tick) when dropped.
pub(crate) struct EpochTicker {
    stop: Arc<AtomicBool>,
    clock: EpochClock,
}

impl EpochTicker {
    /// Starts a thread that bumps `engine`'s epoch every [`EPOCH_TICK`].
    ///
    /// A plain thread rather than a tokio task: a deadline must fire even
    /// when every runtime worker is busy.
    pub(crate) fn start(engine: &Engine) -> Result<Self, PluginError> {
        let stop = Arc::new(AtomicBool::new(false));
        let clock = EpochClock::default();
        let (engine, flag, ticks) = (engine.clone(), Arc::clone(&stop), clock.clone());
        thread::Builder::new()
            .name("chorus-plugin-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    thread::sleep(EPOCH_TICK);
                    ticks.0.fetch_add(1, Ordering::Release);
                    engine.increment_epoch();
                }
            })
            .map_err(|e| PluginError::Engine(format!("epoch thread: {e}")))?;
        Ok(Self { stop, clock })
    }

    /// The ticks counted so far, readable by the epoch callbacks.
    pub(crate) fn clock(&self) -> &EpochClock {
        &self.clock
    }
}

/// The engine's epoch as the ticker advanced it (wasmtime does not expose
/// its own counter), so a call's deadline is an absolute tick however long
/// the call spent yielded or awaiting the store.
#[derive(Debug, Clone, Default)]
pub(crate) struct EpochClock(Arc<AtomicU64>);

impl EpochClock {
    /// The current tick.
    pub(crate) fn now(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Epoch ticks a call may run: the timeout rounded up to whole ticks, plus
/// one because the current tick may be about to end.
pub(crate) fn deadline_ticks(timeout: Duration) -> u64 {
    let tick = EPOCH_TICK.as_nanos();
    let ticks = timeout.as_nanos().div_ceil(tick);
    u64::try_from(ticks).unwrap_or(u64::MAX / 2).max(1) + 1
}

/// The fuel a metered store gets before each run of guest code: far more
/// than any call can burn before its epoch deadline, so fuel never ends a
/// call; what is left afterwards tells what the call used.
pub(crate) const FUEL_PER_RUN: u64 = u64::MAX / 4;
