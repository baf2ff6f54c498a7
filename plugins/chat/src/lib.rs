//! The `chat` plugin: `send_topic_msg`, a message on the room's public
//! screen, from clients and from the app backend.
//!
//! Rules it holds:
//! - `content` is 1 to `max_chars` Unicode characters (config key
//!   `max_chars`, default 200), else rejected.
//! - The sender must be a member of `channel_name`, else not-allowed. From
//!   a client the sender is the connection's user, whatever `user_id` says.
//! - `nickname`, `sex`, `avatar_url` and `avatar_small_url` are required
//!   from the app backend; a client may leave them out (`""` / 0). Where
//!   the app backend stored the sender's profile (contract 1.1), its
//!   fields replace what a client sends and fill what the backend's
//!   request leaves out ([`chorus_plugin_sdk::profile::with_stored`]).
//!
//! The room gets the seed's `send_topic_msg`; its subject is the sender.

use chorus_plugin_sdk::event::{acting_user, action, description, unknown_action};
use chorus_plugin_sdk::profile;
use chorus_plugin_sdk::reply::{notify_room, reply};
use chorus_plugin_sdk::{
    Config, Description, Error, Event, Guest, Payload, Profile, Reply, Source, room_state,
};
use serde_json::{Value, json};

/// The default of config key `max_chars`.
const DEFAULT_MAX_CHARS: u64 = 200;

/// The plugin's `handler` export.
struct Component;

impl Guest for Component {
    fn describe() -> Description {
        description(
            "chat",
            env!("CARGO_PKG_VERSION"),
            vec![action("send_topic_msg", &[Source::Client, Source::Server])],
        )
    }

    fn handle(event: Event) -> Result<Reply, Error> {
        match event.action.as_str() {
            "send_topic_msg" => send_topic_msg(&event),
            _ => Err(unknown_action(&event)),
        }
    }
}

chorus_plugin_sdk::export!(Component);

/// `send_topic_msg`: check the message and its sender, then notify the room.
fn send_topic_msg(event: &Event) -> Result<Reply, Error> {
    let payload = Payload::parse(&event.payload)?;
    let user_id = acting_user(event, &payload)?;
    let payload = profile::with_stored(event, &payload, user_id);
    let channel_name = payload.channel_name()?;
    let content = payload.string("content")?;
    let profile = match event.source {
        Source::Client => Profile::optional(&payload)?,
        Source::Server | Source::System => Profile::required(&payload)?,
    };
    check_length(&content, Config::load().u64("max_chars", DEFAULT_MAX_CHARS))?;
    let in_room = room_state::membership_of(user_id)
        .is_some_and(|membership| membership.channel_name == channel_name);
    if !in_room {
        return Err(Error::NotAllowed(format!(
            "user {user_id} is not in `{channel_name}`"
        )));
    }
    let body = notification(user_id, &profile, &content, &channel_name);
    let effects = vec![notify_room(&channel_name, &body, Some(user_id))];
    Ok(reply(json!({"channel_name": channel_name}), effects))
}

/// Content must hold 1 to `max_chars` Unicode characters.
fn check_length(content: &str, max_chars: u64) -> Result<(), Error> {
    let chars = content.chars().count() as u64;
    if chars == 0 {
        return Err(Error::Rejected("`content` must not be empty".into()));
    }
    if chars > max_chars {
        return Err(Error::Rejected(format!(
            "`content` has {chars} characters, more than the {max_chars} allowed"
        )));
    }
    Ok(())
}

/// The seed's `send_topic_msg` notification.
fn notification(user_id: u64, profile: &Profile, content: &str, channel_name: &str) -> Value {
    let mut body = json!({"action": "send_topic_msg", "user_id": user_id});
    if let Value::Object(object) = &mut body {
        profile.write_to(object);
        object.insert("content".into(), content.into());
        object.insert("channel_name".into(), channel_name.into());
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_unicode_characters() {
        assert!(check_length("你好", 2).is_ok());
        assert!(matches!(check_length("你好!", 2), Err(Error::Rejected(_))));
        assert!(matches!(check_length("", 2), Err(Error::Rejected(_))));
    }
}
