//! The `config` import: the plugin's `<name>.toml` as a JSON object.

use super::bindings::chorus::plugin::config::Host;
use super::grants::Import;
use super::view::PluginView;

impl Host for PluginView {
    async fn get(&mut self) -> wasmtime::Result<String> {
        self.require(Import::Config)?;
        Ok(self.config.to_string())
    }
}
