//! [`PluginView`]: everything one instance's imports may touch.
//!
//! Each wasmtime `Store` holds one view. It names the plugin and version
//! (for logs), carries the plugin's config and a handle to the state
//! store, enforces the memory cap, and gives the guest a WASI context with
//! no preopened folders, no environment, no arguments and no network: a
//! std guest imports `wasi:cli` and friends even as a pure library, and
//! its stdout and stderr land in a small in-memory pipe.

use std::sync::Arc;

use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{ResourceTable, WasiCtx, WasiCtxView, WasiView};

use super::custom_metrics::MetricBuffer;
use super::effects::ungranted;
use super::error::Failure;
use super::grants::{Grants, Import};
use super::stderr::OutputPipe;
use crate::store::{Store, StoreError};

/// The name and version a view's log lines carry.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    /// The plugin's name (its file stem).
    pub(crate) plugin: Arc<str>,
    /// The version it described, or `"unknown"` before `describe`.
    pub(crate) version: Arc<str>,
    /// What its imports may be called for (`[grants] imports`).
    pub(crate) grants: Arc<Grants>,
}

/// The data of one instance's `Store`.
pub(crate) struct PluginView {
    /// Tags every log line of the guest.
    pub(crate) identity: Identity,
    /// `<name>.toml` as a JSON object, for the `config` import.
    pub(crate) config: Arc<str>,
    /// The shared state, read by `room-state` and `kv`.
    pub(crate) store: Arc<dyn Store>,
    /// Caps the guest's memory and remembers whether it ran out.
    pub(crate) limits: MemoryCap,
    /// The first store error an import met during the current call: it
    /// trapped the call, and names the failure `store` instead of `trap`.
    pub(crate) store_error: Option<StoreError>,
    /// An import is awaiting the state store right now. When the call's
    /// wall-clock deadline passes while this is set, the time went to the
    /// store (Redis slow, paused or gone), not to the guest: the call
    /// fails as `store` and does not count toward the breaker.
    pub(crate) awaiting_store: bool,
    /// Epoch ticks during which the current call's guest was running (its
    /// epoch callbacks, [`super::gate::on_epoch`]): the guest's own time,
    /// in ticks, as opposed to the call's wall-clock time.
    pub(crate) ticks_run: u64,
    /// The first ungranted import the current call used: it trapped the
    /// call, which fails as `FailureKind::Ungranted`.
    pub(crate) ungranted: Option<Failure>,
    /// The epoch tick (of [`super::engine::EpochClock`]) at which the
    /// current call (or `describe`, or an instantiation) traps; until then
    /// [`super::gate::on_epoch`] yields at every tick.
    pub(crate) deadline_epoch: u64,
    /// The guest's stdout and stderr.
    pub(crate) output: OutputPipe,
    /// What the current call recorded through the `metrics` import,
    /// recorded when it returns (see `custom_metrics`).
    pub(crate) metrics: MetricBuffer,
    /// WASI state for the `wasi:*` imports of a std guest.
    wasi: WasiCtx,
    /// WASI resources (streams) the guest holds.
    table: ResourceTable,
}

impl PluginView {
    /// A view for a fresh instance.
    pub(crate) fn new(
        identity: Identity,
        config: Arc<str>,
        store: Arc<dyn Store>,
        max_memory: usize,
    ) -> Self {
        let output = OutputPipe::default();
        let wasi = WasiCtx::builder()
            .stdout(output.clone())
            .stderr(output.clone())
            .build();
        Self {
            identity,
            config,
            store,
            limits: MemoryCap::new(max_memory),
            store_error: None,
            awaiting_store: false,
            ticks_run: 0,
            ungranted: None,
            deadline_epoch: 0,
            output,
            metrics: MetricBuffer::default(),
            wasi,
            table: ResourceTable::new(),
        }
    }

    /// Resets what one call records, before the call.
    pub(crate) fn begin_call(&mut self) {
        self.store_error = None;
        self.awaiting_store = false;
        self.ticks_run = 0;
        self.ungranted = None;
        self.limits.exhausted = false;
        self.output.clear();
        self.metrics.clear();
    }

    /// Records a store failure and turns it into the trap that ends the
    /// call: an import cannot answer without the state, and inventing an
    /// answer (say, "not a member") would be worse than failing.
    pub(crate) fn store_failed(&mut self, error: StoreError) -> wasmtime::Error {
        let trap = wasmtime::format_err!("{error}");
        self.store_error.get_or_insert(error);
        trap
    }
}

impl PluginView {
    /// Traps the call unless `import` is granted; the failure names the
    /// missing grant.
    pub(crate) fn require(&mut self, import: Import) -> wasmtime::Result<()> {
        if self.identity.grants.import(import) {
            return Ok(());
        }
        let failure = ungranted(&self.identity.plugin, "imports", import.as_str());
        let trap = wasmtime::format_err!("{}", failure.detail);
        self.ungranted.get_or_insert(failure);
        Err(trap)
    }
}

impl WasiView for PluginView {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// wasmtime's [`StoreLimits`] with `trap_on_grow_failure`, remembering
/// whether it refused to grow a memory, so an exhausted memory is told
/// apart from any other trap without reading error messages.
pub(crate) struct MemoryCap {
    limits: StoreLimits,
    /// Set when a memory growth was refused during the current call.
    pub(crate) exhausted: bool,
    /// The largest size, in bytes, any linear memory of the instance was
    /// allowed to grow to (its peak: linear memory never shrinks).
    pub(crate) peak: usize,
}

impl MemoryCap {
    fn new(max_memory: usize) -> Self {
        let limits = StoreLimitsBuilder::new()
            .memory_size(max_memory)
            .trap_on_grow_failure(true)
            .build();
        Self {
            limits,
            exhausted: false,
            peak: 0,
        }
    }

    fn note<T>(&mut self, result: wasmtime::Result<T>) -> wasmtime::Result<T> {
        if result.is_err() {
            self.exhausted = true;
        }
        result
    }
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let result = self.limits.memory_growing(current, desired, maximum);
        if matches!(result, Ok(true)) {
            self.peak = self.peak.max(desired);
        }
        self.note(result)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        let result = self.limits.memory_grow_failed(error);
        self.note(result)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}
