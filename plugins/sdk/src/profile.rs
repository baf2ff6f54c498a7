//! The user's public profile as the seed's notifications show it, and the
//! profile the app backend stored (contract 1.1 `profiles`).
//!
//! The rule (README, "Profiles from the app backend"): a field the app
//! backend stored wins over the same field a **client** sends, so a client
//! can no longer show another name; a request from the **app backend**
//! keeps the fields it names, and the stored profile fills the ones it
//! leaves out. Without a stored profile the request's fields are used, as
//! the seed does.

use serde_json::{Map, Value};

use crate::{Error, Event, Payload, Source, profiles};

/// The fields a stored profile may hold, with the seed's names.
pub const STORED_FIELDS: [&str; 7] = [
    "nickname",
    "sex",
    "avatar_url",
    "avatar_small_url",
    "i_segment",
    "i_segment_text",
    "cars",
];

/// The profile the app backend stored for `user_id` (`None` without one).
/// The host checked its fields' types when it was stored.
pub fn stored(user_id: u64) -> Option<Map<String, Value>> {
    match serde_json::from_str(&profiles::get(user_id)?) {
        Ok(Value::Object(fields)) => Some(fields),
        _ => None,
    }
}

/// `payload` with `user_id`'s stored profile applied to its top-level
/// profile fields ([`STORED_FIELDS`]): from a client the stored fields
/// replace the request's; from the app backend or the host they fill only
/// the fields the request leaves out (absent or `null`).
pub fn with_stored(event: &Event, payload: &Payload, user_id: u64) -> Payload {
    let Some(stored) = stored(user_id) else {
        return payload.clone();
    };
    Payload::from_fields(merge(payload.fields().clone(), stored, event.source))
}

/// [`with_stored`] on plain maps.
fn merge(
    mut request: Map<String, Value>,
    stored: Map<String, Value>,
    source: Source,
) -> Map<String, Value> {
    let stored_wins = matches!(source, Source::Client);
    for (field, value) in stored {
        if !STORED_FIELDS.contains(&field.as_str()) || value.is_null() {
            continue;
        }
        let absent = request.get(&field).is_none_or(Value::is_null);
        if stored_wins || absent {
            request.insert(field, value);
        }
    }
    request
}

/// `user_id`'s nickname for a field such as a gift's `sender_nickname`:
/// from a client the stored one wins over `sent`; from the app backend
/// `sent` wins unless empty.
pub fn nickname(event: &Event, user_id: u64, sent: String) -> String {
    let keep_sent = !matches!(event.source, Source::Client) && !sent.is_empty();
    if keep_sent {
        return sent;
    }
    stored(user_id)
        .and_then(|fields| fields.get("nickname")?.as_str().map(str::to_string))
        .unwrap_or(sent)
}

/// `nickname`, `sex`, `avatar_url` and `avatar_small_url` of a request,
/// repeated in the notifications about its user (`enter_room`, `up`,
/// `send_topic_msg`); read from the request after [`with_stored`].
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    #[test]
    fn a_client_cannot_override_what_the_backend_stored() {
        let request = map(json!({"nickname": "Mallory", "sex": 1, "content": "hi"}));
        let stored = map(json!({"nickname": "Alice", "avatar_url": "a.png", "extra": 1}));
        let merged = merge(request.clone(), stored.clone(), Source::Client);
        assert_eq!(
            Value::Object(merged),
            json!({"nickname": "Alice", "sex": 1, "content": "hi", "avatar_url": "a.png"})
        );
        let merged = merge(request, stored, Source::Server);
        assert_eq!(
            merged["nickname"], "Mallory",
            "the backend's request keeps its fields"
        );
        assert_eq!(
            merged["avatar_url"], "a.png",
            "and the stored profile fills the rest"
        );
    }
}
