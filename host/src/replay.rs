//! Replay windows: a signature or nonce seen once is refused the second
//! time while its request could still pass the freshness check (PROTOCOL
//! sections 2 and 8).
//!
//! The rule, in one place for frames, upgrade queries and server-API
//! nonces ([`remember_until`]): a request is fresh while
//! `|now - timestamp| <= max_skew`, so it must be remembered until its own
//! `timestamp + max_skew`, and never for less than `now + max_skew`.
//! Measuring the window from arrival instead lets a request dated
//! `max_skew` ahead be replayed after the window closed and before the
//! request went stale.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::hash::{BuildHasher, RandomState};

/// Until when (unix seconds) a request signed at `timestamp` (unix
/// seconds, as the client sent it) and accepted at `now` must be
/// remembered: `max(timestamp, now) + max_skew`. Past that instant the
/// request is stale, so forgetting it cannot let it through again.
pub fn remember_until(timestamp: i64, now: u64, max_skew: u64) -> u64 {
    let timestamp = u64::try_from(timestamp).unwrap_or(0);
    timestamp.max(now).saturating_add(max_skew)
}

/// Keys seen, each remembered until an expiry of its own (unix seconds).
/// Memory is bounded by the rate of accepted keys times the window, and
/// optionally by a cap ([`ReplayWindow::with_cap`]): expired entries are
/// dropped on every insert.
///
/// A key is kept as a 128-bit fingerprint (two independently keyed
/// SipHashes), not as its text: 16 bytes in the set and 24 with its expiry
/// in the heap, before the tables' own overhead, instead of two heap
/// copies of a 64-character signature. That matters per session (a client pinging
/// every 15 s keeps 8 signatures in a 120 s window) and for the connect
/// queries, one per connection. The keys are random per window, so nobody
/// can pick two keys that collide; by chance, two of a million entries
/// collide with odds of about 10^-27.
#[derive(Debug)]
pub struct ReplayWindow {
    /// Fingerprints not yet expired.
    seen: HashSet<u128>,
    /// The same fingerprints by expiry, soonest first. A heap, not a queue:
    /// expiries come from the requests' own timestamps (or a sid's
    /// expiry), so they do not arrive in order.
    expiries: BinaryHeap<Reverse<(u64, u128)>>,
    /// The two hash keys of the fingerprints.
    hashers: (RandomState, RandomState),
    /// Most keys remembered at once; `None`: unbounded.
    cap: Option<usize>,
}

/// Why [`ReplayWindow::check`] refused a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// The key was already seen and has not expired.
    #[error("already used")]
    Replayed,
    /// The window holds its cap of unexpired keys; nothing was recorded.
    #[error("too many requests remembered")]
    Full,
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self {
            seen: HashSet::new(),
            expiries: BinaryHeap::new(),
            hashers: (RandomState::new(), RandomState::new()),
            cap: None,
        }
    }
}

impl ReplayWindow {
    /// A window that remembers at most `cap` unexpired keys.
    pub fn with_cap(cap: usize) -> Self {
        Self {
            cap: Some(cap),
            ..Self::default()
        }
    }

    fn fingerprint(&self, key: &str) -> u128 {
        let high = self.hashers.0.hash_one(key);
        let low = self.hashers.1.hash_one(key);
        (u128::from(high) << 64) | u128::from(low)
    }

    /// Records a request's `key` (its signature or nonce), signed at
    /// `timestamp` and seen at `now`, until [`remember_until`]; fails if
    /// it is already there or the window is full.
    pub fn check(
        &mut self,
        key: &str,
        timestamp: i64,
        now: u64,
        max_skew: u64,
    ) -> Result<(), ReplayError> {
        self.insert_until(key, now, remember_until(timestamp, now, max_skew))
    }

    /// Records `key` until `expires_at` (unix seconds) as seen at `now`;
    /// fails if it is already there or the window is full.
    pub fn insert_until(
        &mut self,
        key: &str,
        now: u64,
        expires_at: u64,
    ) -> Result<(), ReplayError> {
        self.prune(now);
        let fingerprint = self.fingerprint(key);
        if self.seen.contains(&fingerprint) {
            return Err(ReplayError::Replayed);
        }
        if self.cap.is_some_and(|cap| self.seen.len() >= cap) {
            return Err(ReplayError::Full);
        }
        self.seen.insert(fingerprint);
        self.expiries.push(Reverse((expires_at, fingerprint)));
        Ok(())
    }

    fn prune(&mut self, now: u64) {
        while let Some(Reverse((expiry, _))) = self.expiries.peek() {
            if *expiry >= now {
                break;
            }
            if let Some(Reverse((_, fingerprint))) = self.expiries.pop() {
                self.seen.remove(&fingerprint);
            }
        }
        if self.expiries.is_empty() && self.expiries.capacity() > 16 {
            // Give a burst's memory back once the window has emptied.
            self.expiries = BinaryHeap::new();
            self.seen = HashSet::new();
        }
    }

    /// Whether `key` is remembered and not expired at `now`.
    pub fn contains(&self, key: &str, now: u64) -> bool {
        let fingerprint = self.fingerprint(key);
        self.seen.contains(&fingerprint)
            && self
                .expiries
                .iter()
                .any(|Reverse((expiry, f))| *f == fingerprint && *expiry >= now)
    }

    /// Keys currently remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_use_within_window_is_refused_and_forgotten_after() {
        let mut w = ReplayWindow::default();
        assert!(w.check("a", 100, 100, 120).is_ok());
        assert_eq!(w.check("a", 150, 150, 120), Err(ReplayError::Replayed));
        assert!(w.check("b", 150, 150, 120).is_ok());
        assert!(w.check("a", 221, 221, 120).is_ok());
        assert_eq!(w.len(), 2);
    }

    #[test]
    fn a_request_dated_ahead_is_remembered_until_its_own_timestamp_plus_skew() {
        let mut w = ReplayWindow::default();
        // Signed 120 s ahead, seen at 100: fresh until 340.
        assert!(w.check("ahead", 220, 100, 120).is_ok());
        assert_eq!(w.check("ahead", 220, 300, 120), Err(ReplayError::Replayed));
        assert_eq!(remember_until(220, 100, 120), 340);
        assert_eq!(remember_until(0, 100, 120), 220);
    }

    #[test]
    fn expiries_out_of_order_are_pruned_by_time() {
        let mut w = ReplayWindow::default();
        w.insert_until("late", 0, 1000).unwrap();
        w.insert_until("soon", 0, 10).unwrap();
        assert!(w.check("x", 20, 20, 0).is_ok());
        assert!(!w.contains("soon", 20));
        assert!(w.contains("late", 20));
    }

    #[test]
    fn a_full_window_refuses_new_keys() {
        let mut w = ReplayWindow::with_cap(2);
        w.check("a", 0, 0, 10).unwrap();
        w.check("b", 0, 0, 10).unwrap();
        assert_eq!(w.check("c", 0, 0, 10), Err(ReplayError::Full));
        assert!(w.check("d", 11, 11, 10).is_ok());
    }
}
