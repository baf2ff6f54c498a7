//! The `log` import: a guest's log lines go to `tracing`, tagged with the
//! plugin's name and version.

use super::bindings::chorus::plugin::log::{Host, Level};
use super::grants::Import;
use super::view::PluginView;

/// Longest message kept, in bytes; a guest cannot flood the log with one
/// line.
const MAX_MESSAGE: usize = 4096;

impl Host for PluginView {
    async fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        self.require(Import::Log)?;
        let message = truncate(&message, MAX_MESSAGE);
        let plugin = &*self.identity.plugin;
        let plugin_version = &*self.identity.version;
        match level {
            Level::Trace => tracing::trace!(plugin, plugin_version, "{message}"),
            Level::Debug => tracing::debug!(plugin, plugin_version, "{message}"),
            Level::Info => tracing::info!(plugin, plugin_version, "{message}"),
            Level::Warn => tracing::warn!(plugin, plugin_version, "{message}"),
            Level::Error => tracing::error!(plugin, plugin_version, "{message}"),
        }
        Ok(())
    }
}

/// `text` cut to at most `max` bytes on a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
