//! Identifiers the server mints: notification `msg_id`s, `online_token`s
//! and connection ids.

use std::sync::atomic::{AtomicU64, Ordering};

use rand::Rng;

/// Mints ids unique across nodes and restarts: a random per-process prefix
/// and a counter.
#[derive(Debug)]
pub struct IdGen {
    /// 48 random bits, chosen at start.
    prefix: u64,
    /// Next counter value.
    next: AtomicU64,
}

impl Default for IdGen {
    fn default() -> Self {
        Self {
            prefix: rand::rng().random::<u64>() >> 16,
            next: AtomicU64::new(1),
        }
    }
}

impl IdGen {
    /// A new `msg_id`, e.g. `3f9a0c1e5b7d-1a`.
    pub fn msg_id(&self) -> String {
        format!(
            "{:012x}-{:x}",
            self.prefix,
            self.next.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// The prefix of every `msg_id` this generator mints (the part before
    /// the `-`), so another node can tell whose notification it was.
    pub fn origin(&self) -> String {
        format!("{:012x}", self.prefix)
    }

    /// A new connection id, unique within this process.
    pub fn conn_id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }
}

/// A connection's `online_token` (PROTOCOL section 4): 128 random bits as
/// 32 lowercase hex digits, held inline: a `String` was a heap block of
/// every idle connection (issue 20 item 2).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct OnlineToken([u8; 32]);

impl OnlineToken {
    /// A fresh token.
    pub fn random() -> Self {
        let mut digits = [0u8; 32];
        hex::encode_to_slice(rand::rng().random::<[u8; 16]>(), &mut digits)
            .expect("16 bytes are 32 hex digits");
        Self(digits)
    }

    /// The 32 hex digits.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::fmt::Debug for OnlineToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Unix time in whole seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
