//! Each action declared once: its name, the sources it accepts and its
//! handler, in one [`Router`], from which both `describe` and `handle`
//! follow ([`crate::plugin!`]).
//!
//! ```ignore
//! use chorus_plugin_sdk::{Router, Source::{Client, Server}};
//!
//! fn router() -> Router {
//!     Router::new("chat", env!("CARGO_PKG_VERSION"))
//!         .action("send_topic_msg", &[Client, Server], send_topic_msg)
//! }
//!
//! chorus_plugin_sdk::plugin!(Component, router());
//! ```

use crate::event::{action, description, unknown_action};
use crate::{ActionSpec, Description, Error, Event, Reply, Source};

/// A handler of one action: the event in, the reply (or the refusal) out.
pub type Handler = fn(&Event) -> Result<Reply, Error>;

/// A plugin's actions with their sources and handlers.
pub struct Router {
    name: &'static str,
    version: &'static str,
    routes: Vec<(ActionSpec, Handler)>,
}

impl Router {
    /// A router for the plugin `name` (the `.wasm` file's stem) at
    /// `version` (pass `env!("CARGO_PKG_VERSION")`: each plugin has its
    /// own).
    pub fn new(name: &'static str, version: &'static str) -> Self {
        Self {
            name,
            version,
            routes: Vec::new(),
        }
    }

    /// Handles `name` from `sources` with `handler`. For system events
    /// (`disconnected`, [`crate::event::TIMER`]) pass `&[Source::System]`.
    pub fn action(mut self, name: &str, sources: &[Source], handler: Handler) -> Self {
        self.routes.push((action(name, sources), handler));
        self
    }

    /// The description the host asks for once per loaded version.
    pub fn describe(&self) -> Description {
        let actions = self.routes.iter().map(|(spec, _)| spec.clone()).collect();
        description(self.name, self.version, actions)
    }

    /// Runs the handler of the event's action; an action not declared is
    /// refused as invalid (the host routes only declared ones).
    pub fn handle(&self, event: Event) -> Result<Reply, Error> {
        match self
            .routes
            .iter()
            .find(|(spec, _)| spec.name == event.action)
        {
            Some((_, handler)) => handler(&event),
            None => Err(unknown_action(&event)),
        }
    }
}

/// Declares the plugin's component type `$component`, serving the router
/// `$router` (an expression, evaluated once per instance, at its first
/// call: building the routes on every call cost each call a few
/// allocations, issue 20 item 1), and exports it as the
/// plugin's `handler`. Call it once, at the root of the plugin crate; tests
/// name `$component` in [`crate::testing::FakeHost`] calls.
#[macro_export]
macro_rules! plugin {
    ($component:ident, $router:expr) => {
        /// The plugin's `handler` export, served by its router.
        pub struct $component;

        impl $crate::Guest for $component {
            fn describe() -> $crate::Description {
                $router.describe()
            }

            fn handle(
                event: $crate::Event,
            ) -> ::core::result::Result<$crate::Reply, $crate::Error> {
                static ROUTER: ::std::sync::OnceLock<$crate::Router> =
                    ::std::sync::OnceLock::new();
                ROUTER.get_or_init(|| $router).handle(event)
            }
        }

        $crate::export!($component);
    };
}
