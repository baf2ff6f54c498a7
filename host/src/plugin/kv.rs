//! The `kv` import: reads of the plugin's own key-value space. Writes are
//! effects, applied by the caller after the call.

use super::bindings::chorus::plugin::kv::Host;
use super::view::PluginView;

impl Host for PluginView {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        let found = self.store.kv_get(&self.identity.plugin, &key).await;
        found.map_err(|e| self.store_failed(e))
    }
}
