//! Replay windows: a signature or nonce seen once within the skew window
//! is refused the second time (PROTOCOL section 2 and 8).

use std::collections::{HashSet, VecDeque};

/// Keys seen within a sliding window of unix seconds. Memory is bounded by
/// the rate of accepted keys times the window: entries older than the
/// window are dropped on every insert.
#[derive(Debug, Default)]
pub struct ReplayWindow {
    /// Keys still inside the window.
    seen: HashSet<String>,
    /// The same keys by expiry, oldest first, to prune in order.
    expiries: VecDeque<(u64, String)>,
}

impl ReplayWindow {
    /// Records `key` until `now + window`; `false` if it was already there.
    pub fn first_use(&mut self, key: &str, now: u64, window: u64) -> bool {
        self.prune(now);
        if self.seen.contains(key) {
            return false;
        }
        self.seen.insert(key.to_string());
        self.expiries.push_back((now + window, key.to_string()));
        true
    }

    fn prune(&mut self, now: u64) {
        while let Some((expiry, _)) = self.expiries.front() {
            if *expiry >= now {
                break;
            }
            if let Some((_, key)) = self.expiries.pop_front() {
                self.seen.remove(&key);
            }
        }
    }

    /// Whether `key` was recorded (it may have just expired: callers use
    /// this only where an expired key is refused anyway).
    pub fn contains(&self, key: &str) -> bool {
        self.seen.contains(key)
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
