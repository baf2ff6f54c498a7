//! Users' profiles from the app backend (contract 1.1, issue 13 item 5):
//! the `profile` of `POST /api/v1/sessions` and `POST /api/v1/profiles`.
//!
//! A profile holds the seed's user fields, each optional, with the seed's
//! types: `nickname`, `avatar_url`, `avatar_small_url`, `i_segment`,
//! `i_segment_text` (strings), `sex` (0, 1 or 2) and `cars` (a list of car
//! objects, as `enter_room`'s `cars`). It is checked here (a wrong type or
//! size is 400, 1001, naming the field) and stored as given, compact JSON;
//! plugins read it through the `profiles` import.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde_json::{Map, Value, json};

use super::HttpError;
use super::api::Signed;
use crate::app::App;
use crate::bounds::Bounds;
use crate::store::MAX_PROFILE_TTL_S;
use chorus_protocol::codes::ErrorCode;

/// The string fields of a profile; each is bounded as the same field of
/// a frame is ([`Bounds`], `limits.fields`), so a stored value always
/// fits where a client's would.
const STRING_FIELDS: [&str; 5] = [
    "nickname",
    "avatar_url",
    "avatar_small_url",
    "i_segment",
    "i_segment_text",
];
/// The most cars a profile lists.
const MAX_CARS: usize = 16;
/// The longest car object, as compact JSON, in bytes.
const MAX_CAR_BYTES: usize = 4096;
/// How long a profile of `POST /api/v1/profiles` lives without `ttl_s`.
const DEFAULT_TTL_S: u64 = 86400;

fn invalid(reason: impl Into<String>) -> HttpError {
    HttpError::new(ErrorCode::MalformedFrame, reason)
}

/// Checks a profile object (`field` is how reasons name it, `profile`)
/// against the string `bounds` of frames and returns its compact JSON.
/// Every type error and bound names the field (`profile.sex`,
/// `profile.cars[1].name`); a string field may not be `null`.
pub(crate) fn check(field: &str, profile: &Value, bounds: &Bounds) -> Result<String, HttpError> {
    let Value::Object(fields) = profile else {
        return Err(invalid(format!("`{field}` must be an object")));
    };
    // The seed's types, checked as for any request (`sex` 0..2, car ints).
    let mut wrapped = Map::new();
    wrapped.insert(field.to_string(), profile.clone());
    chorus_protocol::frame::check_field_types(&wrapped)
        .map_err(|e| HttpError::new(e.code, e.reason))?;
    for (name, value) in fields {
        if STRING_FIELDS.contains(&name.as_str()) {
            let Value::String(text) = value else {
                return Err(invalid(format!("field `{field}.{name}` must be a string")));
            };
            let max = bounds.max_bytes(name);
            if text.len() > max {
                return Err(invalid(format!(
                    "field `{field}.{name}` is longer than {max} bytes"
                )));
            }
        } else if value.is_null() {
            continue;
        } else if name == "cars" {
            check_cars(field, value)?;
        } else if name != "sex" {
            return Err(invalid(format!("unknown profile field `{field}.{name}`")));
        }
    }
    Ok(profile.to_string())
}

/// `cars`: at most [`MAX_CARS`] objects of at most [`MAX_CAR_BYTES`].
fn check_cars(field: &str, cars: &Value) -> Result<(), HttpError> {
    let Value::Array(cars) = cars else {
        return Err(invalid(format!("field `{field}.cars` must be an array")));
    };
    if cars.len() > MAX_CARS {
        return Err(invalid(format!(
            "field `{field}.cars` lists more than {MAX_CARS} cars"
        )));
    }
    for (index, car) in cars.iter().enumerate() {
        if !car.is_object() {
            return Err(invalid(format!(
                "field `{field}.cars[{index}]` must be an object"
            )));
        }
        if car.to_string().len() > MAX_CAR_BYTES {
            return Err(invalid(format!(
                "field `{field}.cars[{index}]` is longer than {MAX_CAR_BYTES} bytes"
            )));
        }
    }
    Ok(())
}

/// The time to live of a profile given with a session: the session's,
/// within 1 s ..= [`MAX_PROFILE_TTL_S`].
pub(crate) fn session_ttl(ttl_s: u64) -> u64 {
    ttl_s.clamp(1, MAX_PROFILE_TTL_S)
}

/// `POST /api/v1/profiles`: `{"user_id":N,"profile":{…},"ttl_s":N}`
/// replaces the user's whole profile (`"profile": null` deletes it); it
/// lives `ttl_s` seconds (default 86400, at most 365 days). Answers
/// `{"error_code":0,"error_reason":"","user_id":N,"profile":{…}|null}`.
/// Errors: 400 1001 (a wrong type, naming the field; a bound), 400 1002
/// (`user_id` or `profile` missing), 503 2002 (store unavailable).
pub async fn update(
    State(app): State<Arc<App>>,
    Signed(body): Signed,
) -> Result<Json<Value>, HttpError> {
    let fields = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(fields)) => fields,
        Ok(_) => return Err(invalid("the body must be a JSON object")),
        Err(e) => return Err(invalid(format!("the body is not JSON: {e}"))),
    };
    if let Some(other) = fields
        .keys()
        .find(|k| !["user_id", "profile", "ttl_s"].contains(&k.as_str()))
    {
        return Err(invalid(format!("unknown field `{other}`")));
    }
    let user_id = match fields.get("user_id") {
        Some(Value::Number(n)) if n.is_u64() => n.as_u64().unwrap_or_default(),
        Some(_) => return Err(invalid("field `user_id` must be a non-negative integer")),
        None => {
            return Err(HttpError::new(
                ErrorCode::MissingField,
                "`user_id` is required",
            ));
        }
    };
    let ttl_s = match fields.get("ttl_s") {
        None => DEFAULT_TTL_S,
        Some(Value::Number(n))
            if n.as_u64()
                .is_some_and(|t| (1..=MAX_PROFILE_TTL_S).contains(&t)) =>
        {
            n.as_u64().unwrap_or(DEFAULT_TTL_S)
        }
        Some(_) => {
            return Err(invalid(format!(
                "field `ttl_s` must be an integer from 1 to {MAX_PROFILE_TTL_S}"
            )));
        }
    };
    let profile = match fields.get("profile") {
        None => {
            return Err(HttpError::new(
                ErrorCode::MissingField,
                "`profile` is required",
            ));
        }
        Some(Value::Null) => None,
        Some(profile) => Some(check("profile", profile, app.dispatch.bounds())?),
    };
    app.store
        .set_profile(user_id, profile.as_deref(), ttl_s)
        .await?;
    Ok(Json(json!({
        "error_code": 0, "error_reason": "", "user_id": user_id,
        "profile": fields.get("profile").cloned().unwrap_or(Value::Null),
    })))
}
