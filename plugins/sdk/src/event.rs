//! Who an event is about, and how a plugin describes itself.

use crate::payload::Payload;
use crate::{ActionSpec, Description, Error, Event, Source};

/// The user acting in `event`.
///
/// - `client`: the connection's own user (`event.user-id`), whatever the
///   payload says;
/// - `server`: the payload's required `user_id`;
/// - `system`: the user the event is about (`event.user-id`).
pub fn acting_user(event: &Event, payload: &Payload) -> Result<u64, Error> {
    match event.source {
        Source::Server => payload.u64("user_id"),
        Source::Client | Source::System => event_user(event),
    }
}

/// [`acting_user`] for a payload read into a struct: `user_id` is the
/// struct's `Option<u64>` field, required (1002) from the app backend and
/// ignored from a client or the system.
pub fn acting(event: &Event, user_id: Option<u64>) -> Result<u64, Error> {
    match event.source {
        Source::Server => user_id.ok_or_else(|| Error::Missing("`user_id` is required".into())),
        Source::Client | Source::System => event_user(event),
    }
}

/// `event.user-id`, which the host always sets for client and system
/// events; its absence is reported as a malformed event.
pub fn event_user(event: &Event) -> Result<u64, Error> {
    event
        .user_id
        .ok_or_else(|| Error::Invalid(format!("`{}` event without a user", event.action)))
}

/// One action handled from the given sources.
pub fn action(name: &str, sources: &[Source]) -> ActionSpec {
    ActionSpec {
        name: name.to_string(),
        sources: sources.to_vec(),
    }
}

/// A plugin's description; pass `env!("CARGO_PKG_VERSION")` as `version`.
pub fn description(name: &str, version: &str, actions: Vec<ActionSpec>) -> Description {
    Description {
        name: name.to_string(),
        version: version.to_string(),
        actions,
    }
}

/// The error for an action the plugin did not describe. The host routes only
/// described actions, so this answers a host bug without trapping.
pub fn unknown_action(event: &Event) -> Error {
    Error::Invalid(format!("this plugin does not handle `{}`", event.action))
}

/// The name of the system event a due timer arrives as (contract 1.1);
/// list it with `action(TIMER, &[Source::System])` to receive timers.
pub const TIMER: &str = "timer";

/// A due timer, read from a `timer` system event.
#[derive(Debug, Clone, PartialEq)]
pub struct TimerEvent {
    /// The key it was set with.
    pub key: String,
    /// The payload it was set with.
    pub payload: serde_json::Value,
    /// The room it was tied to.
    pub channel_name: Option<String>,
    /// Unix ms it was due (it may arrive a little later).
    pub due_ms: u64,
}

/// The timer of a `timer` system event; [`Error::Invalid`] for any other
/// event.
pub fn timer_event(event: &Event) -> Result<TimerEvent, Error> {
    if event.action != TIMER || event.source != Source::System {
        return Err(Error::Invalid(format!(
            "`{}` is not a timer event",
            event.action
        )));
    }
    let payload = Payload::parse(&event.payload)?;
    Ok(TimerEvent {
        key: payload.string("key")?,
        payload: payload.get("payload").cloned().unwrap_or_default(),
        channel_name: payload
            .get("channel_name")
            .and_then(serde_json::Value::as_str)
            .map(str::to_string),
        due_ms: payload.u64("due_ms")?,
    })
}
