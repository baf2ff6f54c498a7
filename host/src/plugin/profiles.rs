//! The `profiles` import (contract 1.1): users' profiles as the app
//! backend stored them, straight from the state store.

use super::bindings::chorus::plugin::profiles::Host;
use super::grants::Import;
use super::view::PluginView;

impl Host for PluginView {
    async fn get(&mut self, user_id: u64) -> wasmtime::Result<Option<String>> {
        self.require(Import::Profiles)?;
        self.awaiting_store = true;
        let found = self.store.profile(user_id).await;
        self.awaiting_store = false;
        found.map_err(|e| self.store_failed(e))
    }
}
