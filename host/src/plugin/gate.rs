//! Keeping guest code off most of the async workers: the [`GuestGate`]
//! and the epoch slicing that together bound how much of the node's I/O
//! capacity plugins can take.
//!
//! Guest code runs on whatever thread polls the call's future. Before
//! this module, a call held its tokio worker for its whole run, up to
//! `plugins.call_timeout`, so a plugin that kept looping occupied every
//! worker of a 2-core machine and no pong went out for seconds (issue 12).
//! Two rules now hold:
//!
//! 1. **A guest runs at most one epoch tick at a stretch.** Each store's
//!    epoch deadline is one tick ahead; when it passes, the store's
//!    callback ([`on_epoch`]) yields to the executor through
//!    `tokio::task::yield_now` (which tokio wakes only after it has polled
//!    its I/O driver and run the other ready tasks), then gives the call
//!    another tick, until the call's deadline
//!    ([`PluginView::deadline_epoch`]) has passed and the call traps with
//!    `Interrupt` (a timeout, as before).
//! 2. **At most [`GuestGate::size`] threads poll guest code at once.** A
//!    call's future is polled only while it holds a permit of the gate's
//!    semaphore, and gives it back as soon as that poll returns: a guest
//!    that yielded or awaits the store (Redis) holds no permit. The
//!    default size is the runtime's workers minus one (at least one), so
//!    on any runtime with two or more workers one of them is always free
//!    of guest code.
//!
//! Why not a runtime of its own for plugins: handing each call to another
//! thread and back costs two cross-thread wake-ups per call, several µs
//! measured against a budget of 2 µs per call (BENCHMARKS.md, issue 12),
//! while the gate costs an uncontended semaphore acquire per poll. It
//! also keeps the host imports, which await the store on this runtime,
//! exactly where they were.
//!
//! [`PluginView::deadline_epoch`]: super::view::PluginView::deadline_epoch

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::sync::Semaphore;
use tokio_util::sync::PollSemaphore;
use wasmtime::{StoreContextMut, UpdateDeadline};

use super::engine::EpochClock;
use super::view::PluginView;

/// The bound on threads running guest code at once, shared by every
/// version of every plugin of a host.
pub(crate) struct GuestGate {
    permits: Arc<Semaphore>,
    size: usize,
}

impl GuestGate {
    /// A gate of `size` permits (at least one).
    pub(crate) fn new(size: usize) -> Self {
        let size = size.max(1);
        Self {
            permits: Arc::new(Semaphore::new(size)),
            size,
        }
    }

    /// The default size: this runtime's workers minus one, at least one
    /// (the machine's parallelism stands in outside a runtime).
    pub(crate) fn default_size() -> usize {
        let workers = match tokio::runtime::Handle::try_current() {
            Ok(handle) => handle.metrics().num_workers(),
            Err(_) => std::thread::available_parallelism().map_or(1, usize::from),
        };
        workers.saturating_sub(1).max(1)
    }

    /// Threads that may run guest code at once.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// Runs `future` (a call into guest code) polling it only while
    /// holding a permit.
    pub(crate) async fn run<F: Future>(&self, future: F) -> F::Output {
        let future = std::pin::pin!(future);
        Gated {
            inner: future,
            gate: PollSemaphore::new(Arc::clone(&self.permits)),
        }
        .await
    }
}

/// A future polled only under a permit of the gate.
struct Gated<'a, F> {
    inner: Pin<&'a mut F>,
    gate: PollSemaphore,
}

impl<F: Future> Future for Gated<'_, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        // The gate's semaphore is never closed, so `None` cannot come; if
        // it did, running ungated is better than never running.
        let permit = ready!(this.gate.poll_acquire(cx));
        let polled = this.inner.as_mut().poll(cx);
        drop(permit);
        polled
    }
}

/// The epoch callback of every plugin store: another tick after a yield
/// until the call's deadline tick, then a trap (`Interrupt`: a timeout).
pub(crate) fn on_epoch(
    mut store: StoreContextMut<'_, PluginView>,
    clock: &EpochClock,
) -> wasmtime::Result<UpdateDeadline> {
    store.data_mut().ticks_run += 1;
    if clock.now() >= store.data().deadline_epoch {
        return Ok(UpdateDeadline::Interrupt);
    }
    Ok(UpdateDeadline::YieldCustom(
        1,
        Box::pin(tokio::task::yield_now()),
    ))
}
