//! The one `bindgen!` of the `chorus:plugin` world.
//!
//! Every import is `async` (the room state may live in Redis) and
//! `trappable` (a store that cannot answer traps the call instead of
//! inventing an answer); the `handler` export is called asynchronously so
//! those imports can await.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
    imports: { default: async | trappable },
    exports: { default: async },
});

pub(crate) use self::chorus::plugin::types;

/// `types` declares no functions; its (empty) `Host` trait still has to be
/// implemented for the view to link the world.
impl types::Host for super::view::PluginView {}
