//! Builders for the seed's notifications (PROTOCOL section 7), in the
//! seed's shapes and field order, so a plugin that seats someone, says
//! someone entered, or hangs up a call never copies a shape by hand.
//!
//! Each returns the body as a JSON object with its `action`; send it with
//! [`crate::reply::notify_room`], [`crate::reply::notify_user`] or
//! [`crate::reply::notify`]. The host adds `msg_id` (and `relay`).

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::{Membership, Profile};

/// `enter_room`: `user_id` joined `channel_name`, with their profile
/// fields, `i_segment` and its text, and `user_car_gift`, the car to show
/// (`null` for none).
pub fn enter_room(
    user_id: u64,
    profile: &Profile,
    channel_name: &str,
    i_segment: &str,
    i_segment_text: &str,
    car: Value,
) -> Value {
    let mut body = Map::new();
    body.insert("action".into(), "enter_room".into());
    body.insert("user_id".into(), user_id.into());
    profile.write_to(&mut body);
    body.insert("channel_name".into(), channel_name.into());
    body.insert("i_segment".into(), i_segment.into());
    body.insert("i_segment_text".into(), i_segment_text.into());
    body.insert("user_car_gift".into(), car);
    Value::Object(body)
}

/// `exit_room`: `user_id` left the room of `membership`; `room_seat` is
/// their seat as freed, or `null` when they had none.
pub fn exit_room(user_id: u64, membership: &Membership) -> Value {
    let room_seat = match membership.seat_id {
        Some(id) => json!({"id": id, "status": 0, "microphone": 0}),
        None => Value::Null,
    };
    json!({
        "action": "exit_room",
        "user_id": user_id,
        "channel_name": membership.channel_name,
        "room_seat": room_seat,
    })
}

/// `up`: the user now on `seat_id`, microphone open.
pub fn up(user_id: u64, membership: &Membership, seat_id: u32, profile: &Profile) -> Value {
    json!({
        "action": "up",
        "channel_name": membership.channel_name,
        "room_seat": {
            "user_id": user_id,
            "id": seat_id,
            "sex": profile.sex,
            "avatar_url": profile.avatar_url,
            "avatar_small_url": profile.avatar_small_url,
            "nickname": profile.nickname,
            "status": 1,
            "microphone": 1,
            "rank": seat_id,
            "room_id": membership.room_id,
        },
    })
}

/// `down`: `seat_id` freed by the user, with the top-level `user_id` the
/// protocol adds to the seed's shape (PROTOCOL section 6).
pub fn down(user_id: u64, membership: &Membership, seat_id: u32) -> Value {
    json!({
        "action": "down",
        "user_id": user_id,
        "channel_name": membership.channel_name,
        "room_seat": {
            "id": seat_id,
            "status": 0,
            "microphone": 0,
            "rank": seat_id,
            "room_id": membership.room_id,
        },
    })
}

/// `send_gift`: `gift` (the seed's gift object) sent `bc` (the room) or
/// `ptp` (its receiver).
pub fn send_gift(notify_type: &str, channel_name: &str, gift: Value) -> Value {
    json!({
        "action": "send_gift",
        "notify_type": notify_type,
        "channel_name": channel_name,
        "gift": gift,
    })
}

/// [`send_gift`] as a struct that serializes straight to the same text
/// (the same fields in the same order), for a plugin whose gift is a
/// `#[derive(Serialize)]` struct: pass it to [`crate::reply::notify`]
/// without building a `Value` of the gift and then of the body, which
/// was a fifth of a `send_gift` call's guest time (issue 20 item 1).
#[derive(Serialize)]
pub struct SendGift<'a, G: Serialize> {
    /// Always `send_gift`.
    action: &'static str,
    /// `bc` (the room) or `ptp` (the receiver).
    pub notify_type: &'a str,
    /// The room.
    pub channel_name: &'a str,
    /// The seed's gift object.
    pub gift: &'a G,
}

// By hand: derived, they would ask `G` to be `Clone`, `Copy` and `Debug`
// too, though only a reference to it is held.
impl<G: Serialize> Clone for SendGift<'_, G> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<G: Serialize> Copy for SendGift<'_, G> {}

impl<G: Serialize> std::fmt::Debug for SendGift<'_, G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendGift")
            .field("notify_type", &self.notify_type)
            .field("channel_name", &self.channel_name)
            .finish_non_exhaustive()
    }
}

impl<'a, G: Serialize> SendGift<'a, G> {
    /// `gift` sent `notify_type` in `channel_name`.
    pub fn new(notify_type: &'a str, channel_name: &'a str, gift: &'a G) -> Self {
        Self {
            action: "send_gift",
            notify_type,
            channel_name,
            gift,
        }
    }
}

/// `send_topic_msg`: `content` from `user_id` on the room's public screen.
pub fn send_topic_msg(user_id: u64, profile: &Profile, content: &str, channel_name: &str) -> Value {
    let mut body = Map::new();
    body.insert("action".into(), "send_topic_msg".into());
    body.insert("user_id".into(), user_id.into());
    profile.write_to(&mut body);
    body.insert("content".into(), content.into());
    body.insert("channel_name".into(), channel_name.into());
    Value::Object(body)
}

/// `hang_up`: `user_id` ended the call with `receiver_id`.
pub fn hang_up(user_id: u64, receiver_id: u64, channel_name: &str) -> Value {
    json!({
        "action": "hang_up",
        "user_id": user_id,
        "receiver_id": receiver_id,
        "channel_name": channel_name,
    })
}

/// `hang_up` with a `reason` (e.g. `no_answer` when a ring timed out).
pub fn hang_up_because(user_id: u64, receiver_id: u64, channel_name: &str, reason: &str) -> Value {
    let mut body = hang_up(user_id, receiver_id, channel_name);
    body["reason"] = reason.into();
    body
}

/// `room_notice`: to the room `channel_name`, or to everyone when empty.
pub fn room_notice(channel_name: &str, expire_time: u64, content: &str, client_url: &str) -> Value {
    json!({
        "action": "room_notice",
        "channel_name": channel_name,
        "expire_time": expire_time,
        "content": content,
        "client_url": client_url,
    })
}
