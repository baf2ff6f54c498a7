//! The Rust side of the `chorus:plugin@1.2.0` world, for writing Chorus
//! plugins.
//!
//! This crate holds the workspace's single `wit_bindgen::generate!` of the
//! `plugin` world (from `wit/chorus-plugin.wit`) and the few helpers every
//! plugin needs. It holds no rule of any action: those live in the plugins.
//!
//! A plugin crate is a `cdylib` that implements [`Guest`] and exports it:
//!
//! ```ignore
//! use chorus_plugin_sdk::{Error, Event, Guest, Description, Reply};
//!
//! struct Component;
//!
//! impl Guest for Component {
//!     fn describe() -> Description { /* … */ }
//!     fn handle(event: Event) -> Result<Reply, Error> { /* … */ }
//! }
//!
//! chorus_plugin_sdk::export!(Component);
//! ```
//!
//! [`export!`] expands, in the plugin crate, to the `handler` interface's
//! canonical-ABI exports and to the custom section describing the world, so
//! `cargo build --target wasm32-wasip2` emits a ready component; the plugin
//! crate needs no `wit-bindgen` dependency of its own.
//!
//! What the helpers cover:
//! - [`Payload`]: the event's JSON object with typed getters whose errors
//!   are [`Error::Missing`] (the host answers 1002) or [`Error::Invalid`]
//!   (1001), naming the field;
//! - [`event`]: who the acting user is for each source, and the
//!   [`Description`] builders;
//! - [`reply`]: building replies and `notify` effects from `serde_json`
//!   values, and timers ([`reply::set_timer`], [`reply::cancel_timer`],
//!   read back with [`event::timer_event`]), and application events for
//!   the app backend ([`reply::emit`], contract 1.2);
//! - [`metrics`]: the plugin's own counters and histograms (contract 1.2);
//! - [`Profile`]: the user fields the seed repeats in notifications, from
//!   the app backend's stored profile where it gave one;
//! - [`roles`]: a room's owner and admins, from its attributes;
//! - [`router`]: each action declared once (name, sources, handler), and
//!   [`plugin!`] to export the plugin from it;
//! - [`rules`]: the subject is a member of the room;
//! - [`notifications`]: builders for every seed notification (`up`,
//!   `down`, `enter_room`, …);
//! - [`seats`]: the seat a user holds;
//! - [`Config`]: the plugin's `<name>.toml` as typed values with defaults;
//! - [`log`]: one-line wrappers over the host's log;
//! - [`random`]: the contract's secure randomness (seeded in tests);
//! - [`testing`] (native targets only): a fake host, so a plugin's own
//!   `cargo test` runs its handlers without a server.
//!
//! The host's imports (`room_state`, `kv`, `profiles`, `clock`, `config`,
//! `log`, `metrics`, `random`) are reached through this crate's modules of the same
//! names: built for `wasm32`, they are the WIT imports; built for the
//! machine running `cargo test`, they read the [`testing::FakeHost`] the
//! test handed the event to.

pub mod config;
pub mod event;
mod imports;
pub mod log;
pub mod metrics;
pub mod notifications;
pub mod payload;
pub mod profile;
pub mod reply;
pub mod roles;
pub mod router;
pub mod rules;
pub mod seats;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

/// The bindings generated from the WIT world `plugin`.
///
/// Their docs are the WIT's doc comments; items the WIT leaves undocumented
/// (for example the fields of `join-room`) are allowed to stay so here.
#[allow(missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "plugin",
        path: "../../wit",
        pub_export_macro: true,
        // Comparable in tests (`assert_eq!` on targets, calls, seats).
        additional_derives: [PartialEq],
        default_bindings_module: "chorus_plugin_sdk::bindings",
    });
}

/// Exports a type implementing [`Guest`] as the plugin's `handler`.
///
/// Call it once, at the root of the plugin crate:
/// `chorus_plugin_sdk::export!(Component);`.
pub use bindings::export;

pub use bindings::chorus::plugin::types::{
    ActionSpec, AppEvent, Attributes, Call, Delivery, Description, Effect, Error, Event, FreeSeat,
    JoinRoom, KvEntry, KvIncr, KvPut, LeaveRoom, Membership, Notification, Reply,
    RoutedNotification, Seat, SetRoomAttr, SetSeat, SetTimer, Source, StartCall, TakeSeat, Target,
};
pub use bindings::exports::chorus::plugin::handler::Guest;
pub use imports::{clock, kv, profiles, random, room_state};

pub use config::Config;
pub use payload::{ChannelName, Payload};
pub use profile::Profile;
pub use router::Router;

/// The JSON library the helpers speak, re-exported so plugins use the same
/// version (and its `json!` macro).
pub use serde_json;
