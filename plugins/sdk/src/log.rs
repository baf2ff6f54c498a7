//! One-line wrappers over the host's `log` interface.
//!
//! The host tags every line with the plugin's name and version, so a message
//! only needs to say what happened.

use crate::imports::log::{Level, log};

/// Logs at `trace` level.
pub fn trace(message: &str) {
    log(Level::Trace, message);
}

/// Logs at `debug` level.
pub fn debug(message: &str) {
    log(Level::Debug, message);
}

/// Logs at `info` level.
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// Logs at `warn` level.
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// Logs at `error` level.
pub fn error(message: &str) {
    log(Level::Error, message);
}
