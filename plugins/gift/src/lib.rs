//! The `gift` plugin: `send_gift`, from clients and from the app backend.
//!
//! Rules it holds:
//! - `notify_type` is `bc` (to the room) or `ptp` (to `gift.receiver_id`
//!   only); anything else is rejected.
//! - `gift.num` below 1 is rejected.
//! - The sender must be a member of `channel_name` (else not-allowed). From
//!   a client the sender is the connection's user: `gift.sender_id` is
//!   overwritten with it.
//! - `ptp`: the receiver must be a member of `channel_name` too (else
//!   not-allowed, 2004).
//! - `gift.sender_room_seat_id` and `gift.receiver_room_seat_id` are set
//!   from the room's seats, whatever the request said: the seat id, or 0
//!   when the user is not seated in that room.
//! - From a client (which the host refuses unless the operator allows it:
//!   `[actions.send_gift] sources`), the gift's catalog fields (`name`,
//!   `dynamic_image_url`, `image_url`, `image_big_url`,
//!   `image_small_url`) come from this plugin's configuration, never from
//!   the client: `gift.toml` holds `[catalog.<gift id>]` tables of those
//!   fields, and a gift id not in the catalog is rejected (2001). A field
//!   the catalog entry leaves out is `""`. From the app backend the
//!   request's fields stand: it took the payment and knows the gift.
//!
//! - `gift.sender_nickname` and `gift.receiver_nickname` come from the
//!   profiles the app backend stored (contract 1.1): from a client they
//!   replace what it sent, from the app backend they fill an empty one.
//!
//! The notification is the seed's `send_gift` with exactly the seed's gift
//! fields; its subject is the sender. The gift's ints (`id`,
//! `receiver_id`, `num`, and `sender_id` from the app backend) are
//! required; its strings default to `""`.

use chorus_plugin_sdk::Source::{Client, Server};
use chorus_plugin_sdk::event::event_user;
use chorus_plugin_sdk::reply::{notify, reply};
use chorus_plugin_sdk::rules::member_of;
use chorus_plugin_sdk::{
    ChannelName, Config, Error, Event, Reply, Router, Seat, Source, Target, notifications, payload,
    profile, room_state,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The plugin's actions.
fn router() -> Router {
    Router::new("gift", env!("CARGO_PKG_VERSION")).action("send_gift", &[Client, Server], send_gift)
}

chorus_plugin_sdk::plugin!(Component, router());

/// `send_gift`'s payload (PROTOCOL section 6).
#[derive(Deserialize)]
struct SendGift {
    channel_name: ChannelName,
    notify_type: String,
    gift: GiftRequest,
}

/// The request's `gift`: its ints are required (`sender_id` from the app
/// backend only: a client's gift is its own), its strings default to `""`
/// (`null` too); the seat ids it may carry are ignored (the room's count).
#[derive(Deserialize)]
struct GiftRequest {
    id: u64,
    sender_id: Option<u64>,
    receiver_id: u64,
    num: i64,
    sender_nickname: Option<String>,
    receiver_nickname: Option<String>,
    name: Option<String>,
    dynamic_image_url: Option<String>,
    image_url: Option<String>,
    image_big_url: Option<String>,
    image_small_url: Option<String>,
}

/// The gift's catalog fields: from `[catalog.<id>]` in `gift.toml` for a
/// client's gift (a client may not choose them), from the request for the
/// app backend's (it took the payment and knows the gift).
#[derive(Serialize)]
struct Catalog {
    name: String,
    dynamic_image_url: String,
    image_url: String,
    image_big_url: String,
    image_small_url: String,
}

/// The gift as notified: exactly the seed's fields, in its order.
#[derive(Serialize)]
struct Gift {
    id: u64,
    sender_room_seat_id: u32,
    receiver_room_seat_id: u32,
    sender_id: u64,
    receiver_id: u64,
    sender_nickname: String,
    receiver_nickname: String,
    #[serde(flatten)]
    catalog: Catalog,
    num: i64,
}

impl Gift {
    /// The request's gift from `event`'s source, seats still unknown: a
    /// client's own user is the sender and its catalog fields come from
    /// the configuration; nicknames from the stored profiles.
    fn read(event: &Event, gift: GiftRequest) -> Result<Self, Error> {
        let sender_id = match event.source {
            Source::Client => event_user(event)?,
            Source::Server | Source::System => gift
                .sender_id
                .ok_or_else(|| Error::Missing("`gift.sender_id` is required".into()))?,
        };
        let catalog = match event.source {
            Source::Client => from_catalog(gift.id)?,
            Source::Server | Source::System => Catalog {
                name: gift.name.unwrap_or_default(),
                dynamic_image_url: gift.dynamic_image_url.unwrap_or_default(),
                image_url: gift.image_url.unwrap_or_default(),
                image_big_url: gift.image_big_url.unwrap_or_default(),
                image_small_url: gift.image_small_url.unwrap_or_default(),
            },
        };
        let nickname = |user_id, sent: Option<String>| {
            profile::nickname(event, user_id, sent.unwrap_or_default())
        };
        Ok(Self {
            id: gift.id,
            sender_room_seat_id: 0,
            receiver_room_seat_id: 0,
            sender_id,
            receiver_id: gift.receiver_id,
            sender_nickname: nickname(sender_id, gift.sender_nickname),
            receiver_nickname: nickname(gift.receiver_id, gift.receiver_nickname),
            catalog,
            num: gift.num,
        })
    }
}

/// `send_gift`: check the rules, then notify the room or the receiver.
fn send_gift(event: &Event) -> Result<Reply, Error> {
    let request: SendGift = payload::parse(&event.payload)?;
    let channel_name = request.channel_name.as_str();
    let notify_type = request.notify_type;
    let mut gift = Gift::read(event, request.gift)?;
    let target = target_of(&notify_type, channel_name, gift.receiver_id)?;
    check_gift(&gift, channel_name)?;
    if matches!(target, Target::User(_)) {
        member_of(gift.receiver_id, channel_name)?;
    }
    let seats = room_state::room_seats(channel_name);
    gift.sender_room_seat_id = seat_of(&seats, gift.sender_id);
    gift.receiver_room_seat_id = seat_of(&seats, gift.receiver_id);
    let result = Outcome {
        channel_name,
        notify_type: &notify_type,
        sender_room_seat_id: gift.sender_room_seat_id,
        receiver_room_seat_id: gift.receiver_room_seat_id,
    };
    // Written straight to JSON text: no `Value` of the gift or the body.
    let body = notifications::SendGift::new(&notify_type, channel_name, &gift);
    // Contract 1.2: a counter whose one label has two values, and the
    // event the app backend's webhooks get.
    chorus_plugin_sdk::metrics::counter("gifts_sent", &[("notify_type", &notify_type)], 1);
    let sent = Sent {
        channel_name,
        gift_id: gift.id,
        num: gift.num,
        sender_id: gift.sender_id,
        receiver_id: gift.receiver_id,
        notify_type: &notify_type,
    };
    Ok(reply(
        result,
        vec![
            notify(target, &body, Some(gift.sender_id)),
            chorus_plugin_sdk::reply::emit("gift.sent", &sent),
        ],
    ))
}

/// `send_gift`'s result: the room, the notify type and the seats the gift
/// was counted from.
#[derive(Serialize)]
struct Outcome<'a> {
    channel_name: &'a str,
    notify_type: &'a str,
    sender_room_seat_id: u32,
    receiver_room_seat_id: u32,
}

/// The body of the `gift.sent` event the app backend's webhooks get.
#[derive(Serialize)]
struct Sent<'a> {
    channel_name: &'a str,
    gift_id: u64,
    num: i64,
    sender_id: u64,
    receiver_id: u64,
    notify_type: &'a str,
}

/// Where `notify_type` sends the gift: `bc` the room, `ptp` the receiver.
fn target_of(notify_type: &str, channel_name: &str, receiver_id: u64) -> Result<Target, Error> {
    match notify_type {
        "bc" => Ok(Target::Room(channel_name.to_string())),
        "ptp" => Ok(Target::User(receiver_id)),
        other => Err(Error::Rejected(format!(
            "`notify_type` must be \"bc\" or \"ptp\", not {other:?}"
        ))),
    }
}

/// A client's gift's catalog fields: the configuration's `[catalog.<id>]`
/// (a field it leaves out is `""`); an id it does not hold is rejected.
fn from_catalog(id: u64) -> Result<Catalog, Error> {
    let entry = Config::load()
        .object("catalog")
        .and_then(|catalog| catalog.get(&id.to_string()).cloned())
        .filter(Value::is_object)
        .ok_or_else(|| Error::Rejected(format!("unknown gift id {id}")))?;
    // Not a string: the operator's catalog is wrong, not the request.
    let text = |field: &str| entry[field].as_str().unwrap_or_default().to_string();
    Ok(Catalog {
        name: text("name"),
        dynamic_image_url: text("dynamic_image_url"),
        image_url: text("image_url"),
        image_big_url: text("image_big_url"),
        image_small_url: text("image_small_url"),
    })
}

/// The gift's rules: at least one, from a member of the room.
fn check_gift(gift: &Gift, channel_name: &str) -> Result<(), Error> {
    if gift.num < 1 {
        let num = gift.num;
        return Err(Error::Rejected(format!(
            "`gift.num` must be at least 1, not {num}"
        )));
    }
    member_of(gift.sender_id, channel_name)?;
    Ok(())
}

/// The id of the seat `user_id` holds among `seats`, or 0.
fn seat_of(seats: &[Seat], user_id: u64) -> u32 {
    seats
        .iter()
        .find(|seat| seat.user_id == Some(user_id))
        .map_or(0, |seat| seat.id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chorus_plugin_sdk::testing::FakeHost;
    use serde_json::json;

    fn room() -> FakeHost {
        FakeHost::new()
            .member(1, "r1", 88)
            .member(2, "r1", 88)
            .seated(2, "r1", 5)
            .config(json!({"catalog": {"7": {"name": "rose", "image_url": "r.png"}}}))
    }

    fn gift(receiver: u64, num: i64) -> Value {
        json!({"id": 7, "receiver_id": receiver, "num": num, "name": "free diamond"})
    }

    #[test]
    fn a_client_gift_takes_seats_from_the_room_and_names_from_the_catalog() {
        let mut host = room();
        let done = host.client::<Component>(
            1,
            "send_gift",
            json!({"channel_name": "r1", "notify_type": "bc", "gift": gift(2, 3)}),
        );
        let sent = done.notifications();
        assert_eq!(sent[0].target, Target::Room("r1".into()));
        assert_eq!(sent[0].subject, Some(1));
        let g = &sent[0].body["gift"];
        assert_eq!(g["sender_id"], 1);
        assert_eq!(g["sender_room_seat_id"], 0);
        assert_eq!(g["receiver_room_seat_id"], 5);
        assert_eq!(g["name"], "rose");
        assert_eq!(g["image_url"], "r.png");
        assert_eq!(g["dynamic_image_url"], "");
        assert_eq!(done.output()["receiver_room_seat_id"], 5);
    }

    #[test]
    fn the_rules_answer_their_codes() {
        let mut host = room();
        let send = |host: &mut FakeHost, notify_type: &str, gift: Value| {
            host.client::<Component>(
                1,
                "send_gift",
                json!({"channel_name": "r1", "notify_type": notify_type, "gift": gift}),
            )
            .code()
        };
        assert_eq!(send(&mut host, "bc", gift(2, 0)), 2001);
        assert_eq!(send(&mut host, "multicast", gift(2, 1)), 2001);
        assert_eq!(send(&mut host, "ptp", gift(9, 1)), 2004);
        let unknown = json!({"id": 8, "receiver_id": 2, "num": 1});
        assert_eq!(send(&mut host, "bc", unknown), 2001);
        assert_eq!(send(&mut host, "bc", json!({"id": 7, "num": 1})), 1002);
        let outsider = host.client::<Component>(
            9,
            "send_gift",
            json!({"channel_name": "r1", "notify_type": "bc", "gift": gift(2, 1)}),
        );
        assert_eq!(outsider.code(), 2004);
    }

    #[test]
    fn ptp_goes_to_the_receiver_only() {
        let mut host = room();
        let done = host.server::<Component>(
            "send_gift",
            json!({"channel_name": "r1", "notify_type": "ptp",
                "gift": {"id": 1, "sender_id": 1, "receiver_id": 2, "num": 1}}),
        );
        assert_eq!(done.notifications()[0].target, Target::User(2));
    }

    #[test]
    fn a_sent_gift_is_counted_and_emitted_a_refused_one_is_not() {
        let mut host = room();
        let send = |host: &mut FakeHost, notify_type: &str, num: i64| {
            host.client::<Component>(
                1,
                "send_gift",
                json!({"channel_name": "r1", "notify_type": notify_type, "gift": gift(2, num)}),
            )
        };
        let done = send(&mut host, "bc", 3);
        let events = done.events();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].name, "gift.sent");
        assert_eq!(
            events[0].body,
            json!({"channel_name": "r1", "gift_id": 7, "num": 3, "sender_id": 1,
                "receiver_id": 2, "notify_type": "bc"})
        );
        send(&mut host, "ptp", 1);
        send(&mut host, "bc", 0); // rejected: neither counted nor emitted
        assert_eq!(
            host.counter_total("gifts_sent", &[("notify_type", "bc")]),
            1
        );
        assert_eq!(
            host.counter_total("gifts_sent", &[("notify_type", "ptp")]),
            1
        );
        assert_eq!(host.metrics().len(), 2);
    }
}
