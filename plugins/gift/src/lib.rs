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
    Config, Error, Event, Payload, Reply, Router, Seat, Source, Target, notifications, profile,
    room_state,
};
use serde_json::{Map, Value, json};

/// The gift's string fields, in the seed's order.
const GIFT_STRINGS: [&str; 7] = [
    "sender_nickname",
    "receiver_nickname",
    "name",
    "dynamic_image_url",
    "image_url",
    "image_big_url",
    "image_small_url",
];

/// The fields of [`GIFT_STRINGS`] a client may not choose: from the
/// catalog (`[catalog.<id>]` in `gift.toml`) for a client's gift.
const CATALOG_FIELDS: [&str; 5] = [
    "name",
    "dynamic_image_url",
    "image_url",
    "image_big_url",
    "image_small_url",
];

/// The plugin's actions.
fn router() -> Router {
    Router::new("gift", env!("CARGO_PKG_VERSION")).action("send_gift", &[Client, Server], send_gift)
}

chorus_plugin_sdk::plugin!(Component, router());

/// A validated gift, before its seats are known.
struct Gift {
    id: u64,
    sender_id: u64,
    receiver_id: u64,
    num: i64,
    /// The string fields of [`GIFT_STRINGS`], in that order.
    strings: Vec<String>,
}

impl Gift {
    /// Reads the `gift` object; `sender_id` is the client's own user for a
    /// client event.
    fn read(event: &Event, gift: &Payload) -> Result<Self, Error> {
        let sender_id = match event.source {
            Source::Client => event_user(event)?,
            Source::Server | Source::System => gift.u64("sender_id")?,
        };
        let id = gift.u64("id")?;
        let receiver_id = gift.u64("receiver_id")?;
        let mut strings = GIFT_STRINGS
            .iter()
            .map(|field| Ok(gift.opt_string(field)?.unwrap_or_default()))
            .collect::<Result<Vec<_>, Error>>()?;
        if event.source == Source::Client {
            fill_from_catalog(id, &mut strings)?;
        }
        // The first two strings are the sender's and receiver's nicknames.
        for (index, user_id) in [(0, sender_id), (1, receiver_id)] {
            let sent = std::mem::take(&mut strings[index]);
            strings[index] = profile::nickname(event, user_id, sent);
        }
        Ok(Self {
            id,
            sender_id,
            receiver_id,
            num: gift.i64("num")?,
            strings,
        })
    }

    /// The gift as notified, with the seat ids found in the room.
    fn to_json(&self, seats: &[Seat]) -> Value {
        let mut gift = Map::new();
        gift.insert("id".into(), self.id.into());
        gift.insert(
            "sender_room_seat_id".into(),
            seat_of(seats, self.sender_id).into(),
        );
        gift.insert(
            "receiver_room_seat_id".into(),
            seat_of(seats, self.receiver_id).into(),
        );
        gift.insert("sender_id".into(), self.sender_id.into());
        gift.insert("receiver_id".into(), self.receiver_id.into());
        for (field, value) in GIFT_STRINGS.iter().zip(&self.strings) {
            gift.insert((*field).into(), value.clone().into());
        }
        gift.insert("num".into(), self.num.into());
        Value::Object(gift)
    }
}

/// `send_gift`: check the rules, then notify the room or the receiver.
fn send_gift(event: &Event) -> Result<Reply, Error> {
    let payload = Payload::parse(&event.payload)?;
    let channel_name = payload.channel_name()?;
    let notify_type = payload.string("notify_type")?;
    let gift = Gift::read(event, &payload.object("gift")?)?;
    let target = target_of(&notify_type, &channel_name, gift.receiver_id)?;
    check_gift(&gift, &channel_name)?;
    if matches!(target, Target::User(_)) {
        member_of(gift.receiver_id, &channel_name)?;
    }
    let gift_json = gift.to_json(&room_state::room_seats(&channel_name));
    let result = json!({
        "channel_name": channel_name,
        "notify_type": notify_type,
        "sender_room_seat_id": gift_json["sender_room_seat_id"],
        "receiver_room_seat_id": gift_json["receiver_room_seat_id"],
    });
    let body = notifications::send_gift(&notify_type, &channel_name, gift_json);
    // Contract 1.2: a counter whose one label has two values, and the
    // event the app backend's webhooks get.
    chorus_plugin_sdk::metrics::counter("gifts_sent", &[("notify_type", &notify_type)], 1);
    let sent = json!({"channel_name": channel_name, "gift_id": gift.id, "num": gift.num,
        "sender_id": gift.sender_id, "receiver_id": gift.receiver_id, "notify_type": notify_type});
    Ok(reply(
        result,
        vec![
            notify(target, &body, Some(gift.sender_id)),
            chorus_plugin_sdk::reply::emit("gift.sent", &sent),
        ],
    ))
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

/// Replaces the catalog fields of a client's gift with the catalog's
/// entry for `id`; an id the catalog does not hold is rejected.
fn fill_from_catalog(id: u64, strings: &mut [String]) -> Result<(), Error> {
    let entry = Config::load()
        .object("catalog")
        .and_then(|catalog| catalog.get(&id.to_string()))
        .and_then(Value::as_object)
        .ok_or_else(|| Error::Rejected(format!("unknown gift id {id}")))?;
    for (field, value) in GIFT_STRINGS.iter().zip(strings.iter_mut()) {
        if CATALOG_FIELDS.contains(field) {
            *value = entry
                .get(*field)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
        }
    }
    Ok(())
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
