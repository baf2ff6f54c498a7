//! Chorus: a realtime signaling WebSocket server for voice-chat-room apps.
//!
//! The host owns connections, credentials, heartbeats, rooms, seats, calls
//! and delivery; WebAssembly plugins ([`plugin`]) own the per-action rules
//! and change state only through the effects they return. See
//! `ARCHITECTURE.md` at the repository root for the map and invariants.

pub mod admission;
pub mod app;
pub mod bounds;
pub mod cluster;
pub mod config;
pub mod connections;
pub mod delivery;
pub mod dispatch;
pub mod http;
pub mod ids;
pub mod plugin;
pub mod replay;
pub mod revocations;
pub mod server;
pub mod session;
pub mod store;
pub mod telemetry;
pub mod token;
pub mod webhooks;

#[cfg(test)]
mod layering;

pub use config::Config;
pub use server::Node;
