//! Replay windows: a signature or nonce seen once within the skew window
//! is refused the second time (PROTOCOL section 2 and 8).

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasher, RandomState};

/// Keys seen within a sliding window of unix seconds. Memory is bounded by
/// the rate of accepted keys times the window: entries older than the
/// window are dropped on every insert.
///
/// A key is kept as a 128-bit fingerprint (two independently keyed
/// SipHashes), not as its text: 16 bytes in the set and 32 with its expiry
/// in the queue, before the tables' own overhead, instead of two heap
/// copies of a 64-character signature. That matters per session (a client pinging
/// every 15 s keeps 8 signatures in a 120 s window) and for the connect
/// queries, one per connection. The keys are random per window, so nobody
/// can pick two keys that collide; by chance, two of a million entries
/// collide with odds of about 10^-27.
#[derive(Debug)]
pub struct ReplayWindow {
    /// Fingerprints still inside the window.
    seen: HashSet<u128>,
    /// The same fingerprints by expiry, oldest first, to prune in order.
    expiries: VecDeque<(u64, u128)>,
    /// The two hash keys of the fingerprints.
    hashers: (RandomState, RandomState),
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self {
            seen: HashSet::new(),
            expiries: VecDeque::new(),
            hashers: (RandomState::new(), RandomState::new()),
        }
    }
}

impl ReplayWindow {
    fn fingerprint(&self, key: &str) -> u128 {
        let high = self.hashers.0.hash_one(key);
        let low = self.hashers.1.hash_one(key);
        (u128::from(high) << 64) | u128::from(low)
    }

    /// Records `key` until `now + window`; `false` if it was already there.
    pub fn first_use(&mut self, key: &str, now: u64, window: u64) -> bool {
        self.prune(now);
        let fingerprint = self.fingerprint(key);
        if !self.seen.insert(fingerprint) {
            return false;
        }
        self.expiries.push_back((now + window, fingerprint));
        true
    }

    fn prune(&mut self, now: u64) {
        while let Some((expiry, _)) = self.expiries.front() {
            if *expiry >= now {
                break;
            }
            if let Some((_, fingerprint)) = self.expiries.pop_front() {
                self.seen.remove(&fingerprint);
            }
        }
        if self.expiries.is_empty() && self.expiries.capacity() > 16 {
            // Give a burst's memory back once the window has emptied.
            self.expiries = VecDeque::new();
            self.seen = HashSet::new();
        }
    }

    /// Whether `key` was recorded (it may have just expired: callers use
    /// this only where an expired key is refused anyway).
    pub fn contains(&self, key: &str) -> bool {
        self.seen.contains(&self.fingerprint(key))
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
        assert!(w.first_use("a", 100, 120));
        assert!(!w.first_use("a", 150, 120));
        assert!(w.first_use("b", 150, 120));
        assert!(w.first_use("a", 221, 120));
        assert_eq!(w.len(), 2);
    }
}
