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

use chorus_plugin_sdk::Source::{Client, Server};
use chorus_plugin_sdk::event::acting;
use chorus_plugin_sdk::notifications;
use chorus_plugin_sdk::profile;
use chorus_plugin_sdk::reply::{notify_room, reply};
use chorus_plugin_sdk::rules::member_of;
use chorus_plugin_sdk::{
    ChannelName, Config, Error, Event, Payload, Profile, Reply, Router, Source,
};
use serde::Deserialize;
use serde_json::json;

/// The default of config key `max_chars`.
const DEFAULT_MAX_CHARS: u64 = 200;

/// The plugin's actions.
fn router() -> Router {
    Router::new("chat", env!("CARGO_PKG_VERSION")).action(
        "send_topic_msg",
        &[Client, Server],
        send_topic_msg,
    )
}

chorus_plugin_sdk::plugin!(Component, router());

/// `send_topic_msg`'s own fields (PROTOCOL section 6); the sender's
/// profile fields are read by [`Profile`].
#[derive(Deserialize)]
struct SendTopicMsg {
    user_id: Option<u64>,
    channel_name: ChannelName,
    content: String,
}

/// `send_topic_msg`: check the message and its sender, then notify the room.
fn send_topic_msg(event: &Event) -> Result<Reply, Error> {
    let payload = Payload::parse(&event.payload)?;
    let SendTopicMsg {
        user_id,
        channel_name,
        content,
    } = payload.to()?;
    let user_id = acting(event, user_id)?;
    let payload = profile::with_stored(event, &payload, user_id);
    let profile = match event.source {
        Source::Client => Profile::optional(&payload)?,
        Source::Server | Source::System => Profile::required(&payload)?,
    };
    check_length(&content, Config::load().u64("max_chars", DEFAULT_MAX_CHARS))?;
    member_of(user_id, &channel_name)?;
    let body = notifications::send_topic_msg(user_id, &profile, &content, &channel_name);
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

#[cfg(test)]
mod tests {
    use super::*;

    use chorus_plugin_sdk::Target;
    use chorus_plugin_sdk::testing::FakeHost;

    fn room() -> FakeHost {
        FakeHost::new()
            .member(1, "r1", 88)
            .member(2, "r1", 88)
            .online(3)
    }

    #[test]
    fn a_member_posts_to_the_room_in_the_seed_shape() {
        let mut host = room().profile(1, json!({"nickname": "Ann", "sex": 2}));
        let done = host.client::<Component>(
            1,
            "send_topic_msg",
            json!({"channel_name": "r1", "content": "hi"}),
        );
        let sent = done.notifications();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].target, Target::Room("r1".into()));
        assert_eq!(sent[0].subject, Some(1));
        assert_eq!(
            sent[0].body,
            json!({"action": "send_topic_msg", "user_id": 1, "nickname": "Ann", "sex": 2,
                "avatar_url": "", "avatar_small_url": "", "content": "hi", "channel_name": "r1"})
        );
    }

    #[test]
    fn a_non_member_is_not_allowed_and_the_backend_must_send_the_profile() {
        let mut host = room();
        let outsider = host.client::<Component>(
            3,
            "send_topic_msg",
            json!({"channel_name": "r1", "content": "hi"}),
        );
        assert_eq!(outsider.code(), 2004);
        let no_profile = host.server::<Component>(
            "send_topic_msg",
            json!({"user_id": 1, "channel_name": "r1", "content": "hi"}),
        );
        assert_eq!(no_profile.code(), 1002);
    }

    #[test]
    fn max_chars_comes_from_the_config() {
        let mut host = room().config(json!({"max_chars": 3}));
        let long = host.client::<Component>(
            1,
            "send_topic_msg",
            json!({"channel_name": "r1", "content": "four"}),
        );
        assert_eq!(long.code(), 2001);
        let empty = host.client::<Component>(
            1,
            "send_topic_msg",
            json!({"channel_name": "r1", "content": ""}),
        );
        assert_eq!(empty.code(), 2001);
    }

    #[test]
    fn counts_unicode_characters() {
        assert!(check_length("你好", 2).is_ok());
        assert!(matches!(check_length("你好!", 2), Err(Error::Rejected(_))));
        assert!(matches!(check_length("", 2), Err(Error::Rejected(_))));
    }
}
