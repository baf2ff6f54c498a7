//! The `up` and `down` notifications (kept under this name; see
//! [`crate::notifications`] for every seed notification), and the seat a
//! user holds.

pub use crate::notifications::{down, up};

use crate::room_state;

/// The seat `user_id` holds in `channel_name`, if any.
pub fn seat_of(user_id: u64, channel_name: &str) -> Option<u32> {
    room_state::membership_of(user_id)
        .filter(|m| m.channel_name == channel_name)
        .and_then(|m| m.seat_id)
}
