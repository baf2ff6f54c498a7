//! The `kv` import: reads of the plugin's own key-value space. Writes are
//! effects, applied by the caller after the call.

use super::bindings::chorus::plugin::kv::{Host, Versioned};
use super::grants::Import;
use super::view::PluginView;

impl Host for PluginView {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        self.require(Import::Kv)?;
        self.awaiting_store = true;
        let found = self.store.kv_get(&self.identity.plugin, &key).await;
        self.awaiting_store = false;
        found.map_err(|e| self.store_failed(e))
    }

    async fn entry(&mut self, key: String) -> wasmtime::Result<Option<Versioned>> {
        self.require(Import::Kv)?;
        self.awaiting_store = true;
        let found = self.store.kv_entry(&self.identity.plugin, &key).await;
        self.awaiting_store = false;
        let entry = found.map_err(|e| self.store_failed(e))?;
        Ok(entry.map(|r| Versioned {
            value: r.value,
            version: r.version,
        }))
    }

    async fn keys(&mut self, prefix: String, limit: u32) -> wasmtime::Result<Vec<String>> {
        self.require(Import::Kv)?;
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        self.awaiting_store = true;
        let found = self
            .store
            .kv_list(&self.identity.plugin, &prefix, limit)
            .await;
        self.awaiting_store = false;
        found.map_err(|e| self.store_failed(e))
    }
}
