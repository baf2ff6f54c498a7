//! A room's owner and admins, from its attributes (contract 1.1).
//!
//! The app backend (or a plugin) sets them as room attributes: `owner` is
//! one user id in decimal, `admins` user ids in decimal separated by
//! commas (`"1233,1234"`). The host checks those shapes on every write, so
//! reading them back never fails; an id that does not parse is skipped.

use crate::Attributes;
use crate::room_state;

/// The attribute naming the room's owner.
pub const OWNER: &str = "owner";
/// The attribute naming the room's admins.
pub const ADMINS: &str = "admins";

/// Who manages a room.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Roles {
    /// The room's owner, if set.
    pub owner: Option<u64>,
    /// The room's admins, in the order set.
    pub admins: Vec<u64>,
}

impl Roles {
    /// The roles of `channel_name`, read from the host.
    pub fn of(channel_name: &str) -> Self {
        Self::from_attributes(&room_state::room_attributes(channel_name))
    }

    /// The roles in a set of attributes already read.
    pub fn from_attributes(attributes: &Attributes) -> Self {
        let value = |key: &str| {
            attributes
                .entries
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        Self {
            owner: value(OWNER).and_then(|v| v.parse().ok()),
            admins: value(ADMINS)
                .map(|v| v.split(',').filter_map(|id| id.parse().ok()).collect())
                .unwrap_or_default(),
        }
    }

    /// Whether `user_id` is the owner or an admin.
    pub fn manages(&self, user_id: u64) -> bool {
        self.owner == Some(user_id) || self.admins.contains(&user_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attributes(entries: &[(&str, &str)]) -> Attributes {
        Attributes {
            version: 1,
            entries: entries
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect(),
        }
    }

    #[test]
    fn reads_owner_and_admins() {
        let roles = Roles::from_attributes(&attributes(&[("admins", "7,8"), ("owner", "5")]));
        assert_eq!(roles.owner, Some(5));
        assert_eq!(roles.admins, vec![7, 8]);
        assert!(roles.manages(5) && roles.manages(8) && !roles.manages(6));
        let none = Roles::from_attributes(&attributes(&[("admins", ""), ("title", "x")]));
        assert_eq!(none, Roles::default());
        assert!(!none.manages(0));
    }
}
