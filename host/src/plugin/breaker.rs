//! The circuit breaker of one plugin version: a version whose calls keep
//! running into their deadline is tripped, and its calls are answered 2002
//! at once for a cool-down instead of each burning a whole
//! `plugins.call_timeout` of guest time.
//!
//! States, as usual for breakers:
//!
//! - **closed**: calls run. Every call that hits its deadline is counted;
//!   [`BreakerSettings::threshold`] of them within
//!   [`BreakerSettings::window`] trip the breaker.
//! - **open**: calls fail at once ([`FailureKind::BreakerOpen`]) until
//!   [`BreakerSettings::cooldown`] has passed.
//! - **half-open**: the cool-down is over and calls run again; the first
//!   one to hit its deadline trips the breaker again at once, the first
//!   one to return in time closes it.
//!
//! Only deadlines count: a trap or an exhausted memory ends quickly and
//! costs the node little, while a loop holds guest time for the whole
//! deadline. The fast path (closed) is one atomic load; the lock is taken
//! only when a call timed out or the breaker is not closed, and never
//! across an await.
//!
//! [`FailureKind::BreakerOpen`]: super::FailureKind::BreakerOpen

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metrics::{Counter, Gauge};
use serde::Serialize;
use tokio::time::Instant;

/// When a version's breaker trips and for how long (`plugins.breaker_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Calls that hit their deadline within [`window`](Self::window) that
    /// trip the breaker (default 5); 0 turns the breaker off.
    pub threshold: u32,
    /// The sliding window the timeouts are counted in (default 10 s).
    pub window: Duration,
    /// How long a tripped breaker answers 2002 at once (default 30 s).
    pub cooldown: Duration,
}

impl Default for BreakerSettings {
    /// The defaults of `plugins.breaker_*` ([`crate::config::PluginsConfig`]).
    fn default() -> Self {
        super::Settings::default().breaker
    }
}

/// The state of a breaker, as `/admin/plugins` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls run.
    Closed,
    /// Tripped: calls are answered 2002 at once until `open_until_ms`.
    Open,
    /// The cool-down is over; the next call decides.
    HalfOpen,
}

/// A breaker in `/admin/plugins`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BreakerStatus {
    /// `closed`, `open` or `half_open`.
    pub state: BreakerState,
    /// While open: unix milliseconds when calls run again.
    pub open_until_ms: Option<u64>,
    /// Times this version's breaker tripped.
    pub trips: u64,
    /// Calls that hit their deadline within the window now.
    pub recent_timeouts: u32,
    /// Calls answered 2002 at once because the breaker was open.
    pub short_circuited: u64,
}

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

/// One version's breaker.
pub(crate) struct Breaker {
    settings: BreakerSettings,
    /// `CLOSED`, `OPEN` or `HALF_OPEN`: read without the lock on every call.
    state: AtomicU8,
    /// The timeouts in the window and the end of the cool-down.
    inner: Mutex<Window>,
    /// Trips so far (also a metric).
    trips: AtomicU64,
    /// Calls refused while open.
    short_circuited: AtomicU64,
    /// `chorus_plugin_breaker_trips_total{plugin,version}`.
    trips_metric: Counter,
    /// `chorus_plugin_breaker_open{plugin,version}`: 1 while open.
    open_metric: Gauge,
}

/// What the lock guards.
struct Window {
    /// When the recent timeouts happened, oldest first; at most
    /// `threshold` kept.
    timeouts: VecDeque<Instant>,
    /// The end of the cool-down while open.
    open_until: Option<Instant>,
}

impl Breaker {
    /// A closed breaker for `plugin` at `version`.
    pub(crate) fn new(settings: BreakerSettings, plugin: &str, version: &str) -> Self {
        let labels = [
            ("plugin", plugin.to_string()),
            ("version", version.to_string()),
        ];
        Self {
            settings,
            state: AtomicU8::new(CLOSED),
            inner: Mutex::new(Window {
                timeouts: VecDeque::new(),
                open_until: None,
            }),
            trips: AtomicU64::new(0),
            short_circuited: AtomicU64::new(0),
            trips_metric: metrics::counter!("chorus_plugin_breaker_trips_total", &labels),
            open_metric: metrics::gauge!("chorus_plugin_breaker_open", &labels),
        }
    }

    /// Whether a call may run now; a refused call is counted.
    pub(crate) fn admit(&self) -> bool {
        if self.state.load(Ordering::Acquire) != OPEN {
            return true;
        }
        self.admit_at(Instant::now())
    }

    /// [`admit`](Self::admit) at `now`, for an open breaker.
    fn admit_at(&self, now: Instant) -> bool {
        let window = self.lock();
        if self.state.load(Ordering::Acquire) != OPEN {
            return true;
        }
        if window.open_until.is_some_and(|until| now >= until) {
            self.state.store(HALF_OPEN, Ordering::Release);
            self.open_metric.set(0.0);
            return true;
        }
        self.short_circuited.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// A call hit its deadline at `now`. Returns whether this tripped the
    /// breaker.
    pub(crate) fn on_timeout(&self, now: Instant) -> bool {
        let threshold = self.settings.threshold;
        if threshold == 0 {
            return false;
        }
        let mut window = self.lock();
        if self.state.load(Ordering::Acquire) == OPEN {
            return false; // a call admitted before the trip
        }
        while window
            .timeouts
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > self.settings.window)
        {
            window.timeouts.pop_front();
        }
        window.timeouts.push_back(now);
        let half_open = self.state.load(Ordering::Acquire) == HALF_OPEN;
        if !half_open && window.timeouts.len() < threshold as usize {
            return false;
        }
        window.timeouts.clear();
        window.open_until = Some(now + self.settings.cooldown);
        self.state.store(OPEN, Ordering::Release);
        self.trips.fetch_add(1, Ordering::Relaxed);
        self.trips_metric.increment(1);
        self.open_metric.set(1.0);
        true
    }

    /// A call ran and returned within its deadline (successfully or not):
    /// a half-open breaker closes.
    pub(crate) fn on_returned(&self) {
        if self.state.load(Ordering::Acquire) != HALF_OPEN {
            return;
        }
        let mut window = self.lock();
        if self.state.load(Ordering::Acquire) == HALF_OPEN {
            window.open_until = None;
            self.state.store(CLOSED, Ordering::Release);
        }
    }

    /// The breaker as `/admin/plugins` shows it.
    pub(crate) fn status(&self) -> BreakerStatus {
        let window = self.lock();
        let state = match self.state.load(Ordering::Acquire) {
            OPEN => BreakerState::Open,
            HALF_OPEN => BreakerState::HalfOpen,
            _ => BreakerState::Closed,
        };
        let open_until_ms = match (state, window.open_until) {
            (BreakerState::Open, Some(until)) => Some(unix_ms_at(until)),
            _ => None,
        };
        let now = Instant::now();
        let recent = window
            .timeouts
            .iter()
            .filter(|t| now.saturating_duration_since(**t) <= self.settings.window)
            .count();
        BreakerStatus {
            state,
            open_until_ms,
            trips: self.trips.load(Ordering::Relaxed),
            recent_timeouts: u32::try_from(recent).unwrap_or(u32::MAX),
            short_circuited: self.short_circuited.load(Ordering::Relaxed),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Window> {
        // Every critical section leaves the window consistent (a queue of
        // instants and an option), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Unix milliseconds of an instant of this process's clock.
fn unix_ms_at(at: Instant) -> u64 {
    let now = Instant::now();
    let wall = SystemTime::now();
    let wall_at = if at >= now {
        wall + (at - now)
    } else {
        wall - (now - at)
    };
    wall_at
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(threshold: u32) -> Breaker {
        let settings = BreakerSettings {
            threshold,
            window: Duration::from_secs(10),
            cooldown: Duration::from_secs(30),
        };
        Breaker::new(settings, "test", "1")
    }

    #[test]
    fn trips_after_threshold_timeouts_within_the_window() {
        let breaker = breaker(3);
        let start = Instant::now();
        assert!(!breaker.on_timeout(start));
        // The first timeout leaves the window before the third arrives.
        assert!(!breaker.on_timeout(start + Duration::from_secs(5)));
        assert!(!breaker.on_timeout(start + Duration::from_secs(11)));
        assert!(breaker.admit_at(start + Duration::from_secs(11)));
        assert!(breaker.on_timeout(start + Duration::from_secs(12)));
        assert!(!breaker.admit_at(start + Duration::from_secs(12)));
        let status = breaker.status();
        assert_eq!((status.state, status.trips), (BreakerState::Open, 1));
        assert!(status.open_until_ms.is_some());
        assert_eq!(status.short_circuited, 1);
    }

    #[test]
    fn after_the_cooldown_one_call_decides() {
        let breaker = breaker(2);
        let start = Instant::now();
        breaker.on_timeout(start);
        assert!(breaker.on_timeout(start));
        let later = start + Duration::from_secs(31);
        assert!(breaker.admit_at(later), "half-open lets calls run");
        assert_eq!(breaker.status().state, BreakerState::HalfOpen);
        assert!(
            breaker.on_timeout(later),
            "one timeout when half-open trips again"
        );
        assert!(!breaker.admit_at(later + Duration::from_secs(1)));

        let much_later = later + Duration::from_secs(31);
        assert!(breaker.admit_at(much_later));
        breaker.on_returned();
        assert_eq!(breaker.status().state, BreakerState::Closed);
        assert!(
            !breaker.on_timeout(much_later),
            "closed again: the count starts over"
        );
        assert_eq!(breaker.status().trips, 2);
    }

    #[test]
    fn a_zero_threshold_never_trips() {
        let breaker = breaker(0);
        let now = Instant::now();
        for _ in 0..100 {
            assert!(!breaker.on_timeout(now));
        }
        assert!(breaker.admit());
    }
}
