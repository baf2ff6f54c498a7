//! The frozen worlds the host still links, one module each: `v1_0`
//! (`wit/v1.0/`, `chorus:plugin@1.0.0`) and `v1_1` (`wit/v1.1/`,
//! `chorus:plugin@1.1.0`). Each holds its `bindgen!`, its imports (each
//! delegating to the current world's implementation and converting), and
//! the conversions of its event, description, reply and error to and from
//! the current types, so everything after a call knows one world.
//!
//! A plugin built against an older world sees exactly that world's
//! behaviour: every item it can name exists unchanged in the current
//! world (a minor version only adds), so its effects map one to one, and
//! it cannot reach what came later (a 1.1 plugin has no `metrics` import
//! and no `emit` effect).

pub(crate) mod v1_0;
pub(crate) mod v1_1;
