//! The `clock` import: unix time in milliseconds.

use std::time::{SystemTime, UNIX_EPOCH};

use super::bindings::chorus::plugin::clock::Host;
use super::grants::Import;
use super::view::PluginView;

impl Host for PluginView {
    async fn now_ms(&mut self) -> wasmtime::Result<u64> {
        self.require(Import::Clock)?;
        // A clock set before 1970 reads as 0 rather than failing the call.
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Ok(u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX))
    }
}
