//! The bindings of every `chorus:plugin` world the host links, and
//! [`Plugin`] / [`PluginPre`]: one instance (or linked component) of
//! whichever world a plugin targets, seen through the current world's types.
//!
//! The current world (`wit/chorus-plugin.wit`, `chorus:plugin@1.2.0`) is
//! bound here; the frozen 1.0.0 (`wit/v1.0/`) and 1.1.0 (`wit/v1.1/`)
//! worlds in `compat`, which converts their values to and from the
//! current ones. Versioning rule
//! (ARCHITECTURE.md, "Plugin contract versions"): a minor version only adds,
//! and every shipped world stays linked.
//!
//! Every import is `async` (the room state may live in Redis) and
//! `trappable` (a store that cannot answer traps the call instead of
//! inventing an answer); the `handler` export is called asynchronously so
//! those imports can await.

use wasmtime::component::{HasSelf, InstancePre, Linker};
use wasmtime::{AsContextMut, Result};

use super::compat::{v1_0, v1_1};
use super::view::PluginView;

/// The current world, `chorus:plugin@1.2.0`.
mod current {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "plugin",
        imports: { default: async | trappable },
        exports: { default: async },
    });
}

pub(crate) use current::chorus;
pub(crate) use current::chorus::plugin::types;

/// `types` declares no functions; its (empty) `Host` trait still has to be
/// implemented for the view to link the world.
impl types::Host for PluginView {}

/// Adds the imports of every linked world to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<PluginView>) -> Result<()> {
    current::Plugin::add_to_linker::<PluginView, HasSelf<PluginView>>(linker, |view| view)?;
    v1_1::bindings::Plugin::add_to_linker::<PluginView, HasSelf<PluginView>>(linker, |view| view)?;
    v1_0::bindings::Plugin::add_to_linker::<PluginView, HasSelf<PluginView>>(linker, |view| view)?;
    Ok(())
}

/// The export of a plugin built against 1.0.0.
const HANDLER_V1_0: &str = "chorus:plugin/handler@1.0.0";
/// The export of a plugin built against 1.1.0.
const HANDLER_V1_1: &str = "chorus:plugin/handler@1.1.0";

/// A linked component of any linked world, instantiated per warm instance.
pub(crate) enum PluginPre<T: 'static> {
    /// Built against 1.2.0, the current world.
    V1_2(current::PluginPre<T>),
    /// Built against 1.1.0.
    V1_1(v1_1::bindings::PluginPre<T>),
    /// Built against 1.0.0.
    V1_0(v1_0::bindings::PluginPre<T>),
}

impl<T: Send + 'static> PluginPre<T> {
    /// Finds the world from the `handler` the component exports, by its
    /// exact versioned name (wasmtime's semver matching would let the
    /// current bindings find `handler@1.1.0` and fail at the first call on
    /// the differing types); anything but a 1.0 or 1.1 handler is bound as
    /// the current world, whose error names what is missing.
    pub(crate) fn new(pre: InstancePre<T>) -> Result<Self> {
        let component = pre.component();
        let exports = |wanted: &str| {
            component
                .component_type()
                .exports(component.engine())
                .any(|(name, _)| name == wanted)
        };
        if exports(HANDLER_V1_0) {
            v1_0::bindings::PluginPre::new(pre).map(Self::V1_0)
        } else if exports(HANDLER_V1_1) {
            v1_1::bindings::PluginPre::new(pre).map(Self::V1_1)
        } else {
            current::PluginPre::new(pre).map(Self::V1_2)
        }
    }

    /// The contract version the component was built against (`1.0.0`,
    /// `1.1.0` or `1.2.0`).
    pub(crate) fn contract(&self) -> &'static str {
        match self {
            Self::V1_2(_) => "1.2.0",
            Self::V1_1(_) => "1.1.0",
            Self::V1_0(_) => "1.0.0",
        }
    }

    /// Instantiates the component in `store`.
    pub(crate) async fn instantiate_async(
        &self,
        store: impl AsContextMut<Data = T>,
    ) -> Result<Plugin> {
        Ok(match self {
            Self::V1_2(pre) => Plugin::V1_2(pre.instantiate_async(store).await?),
            Self::V1_1(pre) => Plugin::V1_1(pre.instantiate_async(store).await?),
            Self::V1_0(pre) => Plugin::V1_0(pre.instantiate_async(store).await?),
        })
    }
}

/// One instance of a plugin of any linked world.
pub(crate) enum Plugin {
    /// Built against 1.2.0, the current world.
    V1_2(current::Plugin),
    /// Built against 1.1.0.
    V1_1(v1_1::bindings::Plugin),
    /// Built against 1.0.0.
    V1_0(v1_0::bindings::Plugin),
}

impl Plugin {
    /// The `handler` export, in the current world's types.
    pub(crate) fn chorus_plugin_handler(&self) -> Handler<'_> {
        Handler(self)
    }
}

/// The `handler` export of an instance of either world.
pub(crate) struct Handler<'a>(&'a Plugin);

impl Handler<'_> {
    /// Calls `describe`.
    pub(crate) async fn call_describe<S>(&self, store: S) -> Result<types::Description>
    where
        S: AsContextMut,
        S::Data: Send,
    {
        match self.0 {
            Plugin::V1_2(p) => p.chorus_plugin_handler().call_describe(store).await,
            Plugin::V1_1(p) => {
                let described = p.chorus_plugin_handler().call_describe(store).await?;
                Ok(v1_1::description(described))
            }
            Plugin::V1_0(p) => {
                let described = p.chorus_plugin_handler().call_describe(store).await?;
                Ok(v1_0::description(described))
            }
        }
    }

    /// Calls `handle`; a 1.0 or 1.1 reply is converted to the current types.
    pub(crate) async fn call_handle<S>(
        &self,
        store: S,
        event: &types::Event,
    ) -> Result<std::result::Result<types::Reply, types::Error>>
    where
        S: AsContextMut,
        S::Data: Send,
    {
        match self.0 {
            Plugin::V1_2(p) => p.chorus_plugin_handler().call_handle(store, event).await,
            Plugin::V1_1(p) => {
                let event = v1_1::event(event);
                let returned = p.chorus_plugin_handler().call_handle(store, &event).await?;
                Ok(returned.map(v1_1::reply).map_err(v1_1::error))
            }
            Plugin::V1_0(p) => {
                let event = v1_0::event(event);
                let returned = p.chorus_plugin_handler().call_handle(store, &event).await?;
                Ok(returned.map(v1_0::reply).map_err(v1_0::error))
            }
        }
    }
}
