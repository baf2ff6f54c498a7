//! The `notice` plugin: `room_notice`, a notice from the app backend shown
//! in a room or to everyone online.
//!
//! Rules it holds:
//! - a non-empty `channel_name` sends the notice to that room; an absent or
//!   empty one sends it to every user online;
//! - from a client (contract 1.1), only the room's owner or an admin (room
//!   attributes `owner`, `admins`) may post, and only to that room:
//!   `channel_name` is required, and anyone else is not-allowed;
//! - `content` is required; `expire_time` (how long the notice stays, in
//!   seconds) defaults to 0 and `client_url` to `""`.
//!
//! The notification is the seed's `room_notice` (`channel_name` is `""`
//! when sent to everyone) and has no subject: it is always broadcast.

use chorus_plugin_sdk::Source::{Client, Server};
use chorus_plugin_sdk::event::event_user;
use chorus_plugin_sdk::notifications;
use chorus_plugin_sdk::payload::{self, check_channel_name};
use chorus_plugin_sdk::reply::{notify, reply};
use chorus_plugin_sdk::roles::Roles;
use chorus_plugin_sdk::{Error, Event, Reply, Router, Source, Target};
use serde::Deserialize;
use serde_json::json;

/// The plugin's actions.
fn router() -> Router {
    Router::new("notice", env!("CARGO_PKG_VERSION")).action(
        "room_notice",
        &[Server, Client],
        room_notice,
    )
}

chorus_plugin_sdk::plugin!(Component, router());

/// `room_notice`'s payload (PROTOCOL section 6): no `channel_name` (or
/// `""`) is everyone; `expire_time` and `client_url` default to 0 and `""`.
#[derive(Deserialize)]
struct RoomNotice {
    channel_name: Option<String>,
    expire_time: Option<u64>,
    content: String,
    client_url: Option<String>,
}

/// `room_notice`: notify the room, or everyone.
fn room_notice(event: &Event) -> Result<Reply, Error> {
    let request: RoomNotice = payload::parse(&event.payload)?;
    let channel_name = request.channel_name.unwrap_or_default();
    let expire_time = request.expire_time.unwrap_or(0);
    let content = request.content;
    let client_url = request.client_url.unwrap_or_default();
    if matches!(event.source, Source::Client) {
        check_manager(event, &channel_name)?;
    }
    let target = if channel_name.is_empty() {
        Target::Everyone
    } else {
        check_channel_name("channel_name", &channel_name)?;
        Target::Room(channel_name.clone())
    };
    let result = json!({
        "channel_name": channel_name,
        "target": if channel_name.is_empty() { "everyone" } else { "room" },
    });
    let body = notifications::room_notice(&channel_name, expire_time, &content, &client_url);
    Ok(reply(result, vec![notify(target, &body, None)]))
}

/// A client's notice goes to a room it manages (owner or admin).
fn check_manager(event: &Event, channel_name: &str) -> Result<(), Error> {
    let user_id = event_user(event)?;
    if channel_name.is_empty() {
        return Err(Error::Missing(
            "`channel_name` is required: a client posts to a room it manages".into(),
        ));
    }
    if !Roles::of(channel_name).manages(user_id) {
        return Err(Error::NotAllowed(format!(
            "user {user_id} is neither the owner nor an admin of `{channel_name}`"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chorus_plugin_sdk::testing::FakeHost;

    #[test]
    fn the_backend_posts_to_a_room_or_to_everyone() {
        let mut host = FakeHost::new();
        let room = host.server::<Component>(
            "room_notice",
            json!({"channel_name": "r1", "content": "hi"}),
        );
        let sent = room.notifications();
        assert_eq!(sent[0].target, Target::Room("r1".into()));
        assert_eq!(sent[0].subject, None);
        assert_eq!(
            sent[0].body,
            json!({"action": "room_notice", "channel_name": "r1", "expire_time": 0,
                "content": "hi", "client_url": ""})
        );
        let all = host.server::<Component>("room_notice", json!({"content": "hi"}));
        assert_eq!(all.notifications()[0].target, Target::Everyone);
        assert_eq!(all.output()["target"], "everyone");
    }

    #[test]
    fn a_client_posts_only_to_a_room_it_manages() {
        let mut host = FakeHost::new()
            .member(1, "r1", 88)
            .member(2, "r1", 88)
            .attribute("r1", "owner", "1");
        let payload = json!({"channel_name": "r1", "content": "hi"});
        assert!(
            host.client::<Component>(1, "room_notice", payload.clone())
                .result
                .is_ok()
        );
        assert_eq!(
            host.client::<Component>(2, "room_notice", payload).code(),
            2004
        );
        assert_eq!(
            host.client::<Component>(1, "room_notice", json!({"content": "hi"}))
                .code(),
            1002
        );
    }
}
