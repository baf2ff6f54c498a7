//! Chorus integration tests: each starts a real node on `127.0.0.1:0`
//! and talks to it through the front door (real WebSocket and HTTP clients)
//! with the real plugins built from source.
//!
//! Run with: `cargo test -p chorus-tests`

mod harness;

mod abuse;
mod cluster;
mod faults;

mod attributes;
mod dashboard;
mod errors;
mod inputs;
mod isolation;
mod lucky_draw;
mod operations;
mod plugin_isolation;
mod plugins;
mod profiles;
mod recovery;
mod relay;
mod rollout;
mod rooms;
mod seat_invite;
mod security;
mod sessions;
mod timers;
mod trust;
mod webhooks;
