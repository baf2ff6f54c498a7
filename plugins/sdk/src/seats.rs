//! The `up` and `down` notifications, in the seed's shapes, for every
//! plugin that moves users on seats (`seat`, `seat_invite`).

use crate::{Membership, Profile};
use serde_json::{Value, json};

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
/// protocol adds to the seed's shape.
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
