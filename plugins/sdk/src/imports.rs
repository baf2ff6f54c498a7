//! The host's imports as plugins call them.
//!
//! Built for `wasm32` (a real plugin), each module is the WIT import of
//! the same name. Built for any other target (a plugin's own `cargo
//! test`), each function reads the [`crate::testing::FakeHost`] that is
//! running the handler on this thread, so handlers run natively with the
//! same code.

/// Read access to the room state as it is at the time of the call
/// (WIT `room-state`).
pub mod room_state {
    #[cfg(target_arch = "wasm32")]
    pub use crate::bindings::chorus::plugin::room_state::*;
    #[cfg(not(target_arch = "wasm32"))]
    pub use crate::testing::imports::room_state::*;
}

/// The plugin's own key-value space, read side (WIT `kv`); writes are
/// effects.
pub mod kv {
    pub use crate::bindings::chorus::plugin::kv::Versioned;
    #[cfg(target_arch = "wasm32")]
    pub use crate::bindings::chorus::plugin::kv::{entry, get, keys};
    #[cfg(not(target_arch = "wasm32"))]
    pub use crate::testing::imports::kv::*;
}

/// Users' stored profiles (WIT `profiles`).
pub mod profiles {
    #[cfg(target_arch = "wasm32")]
    pub use crate::bindings::chorus::plugin::profiles::*;
    #[cfg(not(target_arch = "wasm32"))]
    pub use crate::testing::imports::profiles::*;
}

/// The host's clock (WIT `clock`).
pub mod clock {
    #[cfg(target_arch = "wasm32")]
    pub use crate::bindings::chorus::plugin::clock::*;
    #[cfg(not(target_arch = "wasm32"))]
    pub use crate::testing::imports::clock::*;
}

/// The plugin's configuration JSON (WIT `config`).
pub(crate) mod config {
    #[cfg(target_arch = "wasm32")]
    pub use crate::bindings::chorus::plugin::config::*;
    #[cfg(not(target_arch = "wasm32"))]
    pub use crate::testing::imports::config::*;
}

/// The plugin's own metrics (WIT `metrics`, contract 1.2); see
/// [`crate::metrics`].
pub(crate) mod metrics {
    #[cfg(target_arch = "wasm32")]
    pub use crate::bindings::chorus::plugin::metrics::*;
    #[cfg(not(target_arch = "wasm32"))]
    pub use crate::testing::imports::metrics::*;
}

/// The host's log (WIT `log`).
pub(crate) mod log {
    pub use crate::bindings::chorus::plugin::log::Level;
    #[cfg(target_arch = "wasm32")]
    pub use crate::bindings::chorus::plugin::log::log;
    #[cfg(not(target_arch = "wasm32"))]
    pub use crate::testing::imports::log::*;
}

/// Randomness from the host's secure source (the contract's `wasi:random`,
/// a ChaCha CSPRNG per instance); in a [`crate::testing::FakeHost`], a
/// sequence seeded by the test, so a draw is reproducible.
pub mod random {
    /// A uniformly random `u64`.
    #[cfg(target_arch = "wasm32")]
    pub fn u64() -> u64 {
        // The host links `wasi:random` in every instance; it does not fail.
        getrandom::u64().unwrap_or_default()
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub use crate::testing::imports::random::u64;

    /// A uniformly random index in `0..n` (`n` > 0; 0 for `n` == 0),
    /// without modulo bias.
    pub fn below(n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let r = u64();
            if r < zone {
                return r % n;
            }
        }
    }
}
