//! The rules every action repeats.

use crate::{Error, Membership, room_state};

/// The membership of `user_id` in `channel_name`; not-allowed (2004)
/// naming both when they are not a member of that room.
pub fn member_of(user_id: u64, channel_name: &str) -> Result<Membership, Error> {
    room_state::membership_of(user_id)
        .filter(|m| m.channel_name == channel_name)
        .ok_or_else(|| Error::NotAllowed(format!("user {user_id} is not in `{channel_name}`")))
}

/// Whether `user_id` is a member of `channel_name`.
pub fn in_room(user_id: u64, channel_name: &str) -> bool {
    room_state::membership_of(user_id).is_some_and(|m| m.channel_name == channel_name)
}
