//! The user's public profile as the seed's notifications show it.

use serde_json::{Map, Value};

use crate::{Error, Payload};

/// `nickname`, `sex`, `avatar_url` and `avatar_small_url` of a request,
/// repeated in the notifications about its user (`enter_room`, `up`,
/// `send_topic_msg`). Chorus stores no profiles: the caller sends them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    /// The user's display name.
    pub nickname: String,
    /// 0 unknown, 1 male, 2 female.
    pub sex: u64,
    /// The avatar image.
    pub avatar_url: String,
    /// The small avatar image.
    pub avatar_small_url: String,
}

/// What each value of `sex` means, from 0 (PROTOCOL section 4); any other
/// value is invalid (1001).
pub const SEX_VALUES: [&str; 3] = ["unknown", "male", "female"];

impl Profile {
    /// Reads the four fields, all required (requests from the app backend).
    pub fn required(payload: &Payload) -> Result<Self, Error> {
        let nickname = payload.string("nickname")?;
        let sex = payload
            .opt_enumerated("sex", &SEX_VALUES)?
            .ok_or_else(|| Error::Missing(format!("`{}` is required", payload.name("sex"))))?;
        Ok(Self {
            nickname,
            sex,
            avatar_url: payload.string("avatar_url")?,
            avatar_small_url: payload.string("avatar_small_url")?,
        })
    }

    /// Reads the four fields, each defaulting to `""` or 0 (requests from
    /// clients, which may not repeat their profile); a field present with
    /// the wrong type is still invalid.
    pub fn optional(payload: &Payload) -> Result<Self, Error> {
        Ok(Self {
            nickname: payload.opt_string("nickname")?.unwrap_or_default(),
            sex: payload
                .opt_enumerated("sex", &SEX_VALUES)?
                .unwrap_or_default(),
            avatar_url: payload.opt_string("avatar_url")?.unwrap_or_default(),
            avatar_small_url: payload.opt_string("avatar_small_url")?.unwrap_or_default(),
        })
    }

    /// Adds the four fields to a notification object being built, in the
    /// seed's order (`nickname`, `sex`, `avatar_url`, `avatar_small_url`).
    pub fn write_to(&self, object: &mut Map<String, Value>) {
        object.insert("nickname".into(), self.nickname.clone().into());
        object.insert("sex".into(), self.sex.into());
        object.insert("avatar_url".into(), self.avatar_url.clone().into());
        object.insert(
            "avatar_small_url".into(),
            self.avatar_small_url.clone().into(),
        );
    }
}
