//! Client frames in, error frames out (PROTOCOL section 4).
//!
//! [`ClientFrame::parse`] does the first two checks of the order section 4
//! gives: the frame is a JSON object whose fields have the right types
//! (1001), then the required fields are present (1002). The checks that
//! need the session (online_token, sid, freshness, signature, replay) are
//! the server's, with [`ClientFrame::canonical`] and
//! [`ClientFrame::verify_sign`] to help.
//!
//! Field types are checked by name, at any depth, because the seed's
//! objects (`gift`, `room_seat`, `cars[…]`) reuse the same names. A `null`
//! counts as absent for every field except the envelope's (`action`,
//! `online_token`, `timestamp`, `sid`, `sign`, `nonce`), which must have
//! their type whenever they appear.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::canonical::{canonical_frame, is_integer};
use crate::codes::ErrorCode;
use crate::field_path::FieldPath;
use crate::signing;

/// Fields that hold ids: non-negative integers (`user_id` is a u64).
const ID_FIELDS: &[&str] = &[
    "user_id",
    "room_id",
    "receiver_id",
    "seat_id",
    "sender_id",
    "sender_room_seat_id",
    "receiver_room_seat_id",
];

/// Fields that hold ids only inside a nested object (a seat's or a gift's
/// `id`); at the top level `id` is not one of the seed's fields.
const NESTED_ID_FIELDS: &[&str] = &["id"];

/// Fields that hold integers of either sign. `num` may be negative here:
/// `gift.num` below 1 is the plugin's rule (2001), not a type error.
const INTEGER_FIELDS: &[&str] = &[
    "timestamp",
    "sex",
    "num",
    "status",
    "microphone",
    "rank",
    "show_rank",
    "gift_type",
    "expire_time",
];

/// Fields that hold strings: every scalar of the seed that is not a
/// number, plus `nonce` (section 2) and `msg_id` (section 6).
const STRING_FIELDS: &[&str] = &[
    "action",
    "online_token",
    "sid",
    "sign",
    "nonce",
    "msg_id",
    "channel_name",
    "nickname",
    "avatar_url",
    "avatar_small_url",
    "content",
    "i_segment",
    "i_segment_text",
    "notify_type",
    "client_url",
    "name",
    "image_url",
    "image_small_url",
    "image_big_url",
    "dynamic_image_url",
    "svga_image_name",
    "svga_image_url",
    "render_type",
    "notice_content",
    "sender_nickname",
    "receiver_nickname",
];

/// Integer fields whose values the contract enumerates (section 4 for
/// `sex`, section 7 for a seat's `status` and `microphone`), with the
/// meaning of each allowed value, in order from 0.
const ENUMERATED_FIELDS: &[(&str, &[&str])] = &[
    ("sex", &["unknown", "male", "female"]),
    ("status", &["free", "occupied", "locked"]),
    ("microphone", &["closed", "open"]),
];

/// Fields that hold objects in the seed.
const OBJECT_FIELDS: &[&str] = &["gift", "room_seat", "user_car_gift"];

/// Fields that hold arrays in the seed (section 7).
const ARRAY_FIELDS: &[&str] = &["cars"];

/// Top-level fields whose type is checked even when `null`.
const ENVELOPE_FIELDS: &[&str] = &[
    "action",
    "online_token",
    "timestamp",
    "sid",
    "sign",
    "nonce",
];

/// The fields every client frame must have, in the order they are checked.
pub const REQUIRED_FIELDS: [&str; 5] = ["action", "online_token", "timestamp", "sid", "sign"];

/// The fields a plugin never sees: they authenticate the frame and mean
/// nothing to the action.
pub const ENVELOPE_ONLY_FIELDS: [&str; 5] = ["online_token", "sid", "sign", "timestamp", "nonce"];

/// A client frame refused before it reached an action.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("error {code}: {reason}")]
pub struct FrameError {
    /// 1001 for a malformed frame, 1002 for a missing field.
    pub code: ErrorCode,
    /// What was wrong, naming the field.
    pub reason: String,
}

impl FrameError {
    /// A 1001 error.
    pub fn malformed(reason: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::MalformedFrame,
            reason: reason.into(),
        }
    }

    /// A 1002 error for the missing `field`.
    pub fn missing(field: &str) -> Self {
        Self {
            code: ErrorCode::MissingField,
            reason: format!("missing required field `{field}`"),
        }
    }

    /// The error frame answering this error; `ref_action` as for
    /// [`error_frame`].
    pub fn to_frame(&self, ref_action: &str) -> String {
        error_frame(self.code, &self.reason, ref_action)
    }
}

/// A client frame that is a JSON object with well-typed fields and every
/// required field. Its session checks are still to be done.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientFrame {
    /// The action asked for.
    pub action: String,
    /// The token of the connection the client believes it is on.
    pub online_token: String,
    /// The client's unix time in seconds when it signed the frame.
    pub timestamp: i64,
    /// The client's session token.
    pub sid: String,
    /// The frame's signature.
    pub sign: String,
    /// Set by a client to tell apart two otherwise identical frames.
    pub nonce: Option<String>,
    /// The whole frame as received. Private so that it keeps the invariant
    /// established by parsing: no floats anywhere.
    raw: Map<String, Value>,
}

impl ClientFrame {
    /// Parses and validates the text of a client frame.
    pub fn parse(text: &str) -> Result<Self, FrameError> {
        let value: Value = serde_json::from_str(text)
            .map_err(|err| FrameError::malformed(format!("frame is not valid JSON: {err}")))?;
        Self::from_value(value)
    }

    /// Validates an already parsed JSON value as a client frame.
    pub fn from_value(value: Value) -> Result<Self, FrameError> {
        match value {
            Value::Object(map) => Self::from_map(map),
            _ => Err(FrameError::malformed("frame is not a JSON object")),
        }
    }

    /// Validates a JSON object as a client frame: field types first, then
    /// required fields.
    pub fn from_map(raw: Map<String, Value>) -> Result<Self, FrameError> {
        check_field_types(&raw)?;
        // Fields are read in the order of `REQUIRED_FIELDS`, so the first
        // missing one in that order is the one reported.
        Ok(Self {
            action: required_string(&raw, "action")?,
            online_token: required_string(&raw, "online_token")?,
            timestamp: required_timestamp(&raw)?,
            sid: required_string(&raw, "sid")?,
            sign: required_string(&raw, "sign")?,
            nonce: raw.get("nonce").and_then(Value::as_str).map(str::to_owned),
            raw,
        })
    }

    /// The whole frame as received.
    pub fn raw(&self) -> &Map<String, Value> {
        &self.raw
    }

    /// The whole frame as received, by value.
    pub fn into_raw(self) -> Map<String, Value> {
        self.raw
    }

    /// The canonical string the frame's `sign` covers (section 2).
    pub fn canonical(&self) -> String {
        // Invariant: `raw` is private and `from_map` refused any float in
        // it, so it always has a canonical string.
        canonical_frame(&self.raw).expect("a validated frame holds no float")
    }

    /// True when `sign` is the frame's signature under `sign_key`, compared
    /// in constant time.
    pub fn verify_sign(&self, sign_key: &str) -> bool {
        signing::verify(sign_key, &self.canonical(), &self.sign)
    }

    /// What a plugin receives: the frame without `online_token`, `sid`,
    /// `sign`, `timestamp` and `nonce`.
    pub fn payload(&self) -> Map<String, Value> {
        self.raw
            .iter()
            .filter(|(key, _)| !ENVELOPE_ONLY_FIELDS.contains(&key.as_str()))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect()
    }
}

/// Checks the types of every field of `map`, at any depth: no floats
/// anywhere, and the fields of the contract hold their types (1001).
///
/// Useful beyond client frames, for example on a server API action body.
pub fn check_field_types(map: &Map<String, Value>) -> Result<(), FrameError> {
    check_object(map, &mut FieldPath::default())
}

/// The error frame sent to a client:
/// `{"action":"error","error_code":N,"error_reason":"…","ref_action":"…"}`.
///
/// `ref_action` is the action of the frame that failed, or `""` when the
/// frame had no readable action.
pub fn error_frame(code: ErrorCode, reason: &str, ref_action: &str) -> String {
    json!({
        "action": "error",
        "error_code": code.code(),
        "error_reason": reason,
        "ref_action": ref_action,
    })
    .to_string()
}

/// The body of an HTTP error answer: `{"error_code":N,"error_reason":"…"}`.
pub fn error_body(code: ErrorCode, reason: &str) -> String {
    json!({ "error_code": code.code(), "error_reason": reason }).to_string()
}

/// An error frame as a client reads it, for clients and tests.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ServerError {
    /// The error code.
    #[serde(rename = "error_code")]
    pub code: ErrorCode,
    /// Why, in English.
    #[serde(rename = "error_reason", default)]
    pub reason: String,
    /// The action of the frame that failed (`""` if unknown).
    #[serde(default)]
    pub ref_action: String,
}

impl ServerError {
    /// Reads `text` as an error frame; `None` when it is not one.
    pub fn from_frame(text: &str) -> Option<Self> {
        let value: Value = serde_json::from_str(text).ok()?;
        if value.get("action")?.as_str()? != "error" {
            return None;
        }
        serde_json::from_value(value).ok()
    }

    /// The frame text of this error.
    pub fn to_frame(&self) -> String {
        error_frame(self.code, &self.reason, &self.ref_action)
    }
}

/// The type a field of the contract must have.
#[derive(Clone, Copy)]
enum Expected {
    Id,
    Integer,
    String,
    Object,
    Array,
}

impl Expected {
    /// The type expected of the field `key`, if the contract fixes one.
    fn of(key: &str, nested: bool) -> Option<Self> {
        let listed = |list: &[&str]| list.contains(&key);
        if listed(ID_FIELDS) || (nested && listed(NESTED_ID_FIELDS)) {
            Some(Self::Id)
        } else if listed(INTEGER_FIELDS) {
            Some(Self::Integer)
        } else if listed(STRING_FIELDS) {
            Some(Self::String)
        } else if listed(OBJECT_FIELDS) {
            Some(Self::Object)
        } else if listed(ARRAY_FIELDS) {
            Some(Self::Array)
        } else {
            None
        }
    }

    /// True when `value` has this type.
    fn matches(self, value: &Value) -> bool {
        match self {
            Self::Id => value.is_u64(),
            Self::Integer => value.as_number().is_some_and(is_integer),
            Self::String => value.is_string(),
            Self::Object => value.is_object(),
            Self::Array => value.is_array(),
        }
    }

    /// The range an integer type allows, for an "out of range" reason.
    fn range(self) -> &'static str {
        match self {
            Self::Id => "ids are 0 to 18446744073709551615",
            _ => "integers are -9223372036854775808 to 18446744073709551615",
        }
    }

    /// How the type is named in an error reason.
    fn describe(self) -> &'static str {
        match self {
            Self::Id => "a non-negative integer",
            Self::Integer => "an integer",
            Self::String => "a string",
            Self::Object => "an object",
            Self::Array => "an array",
        }
    }
}

/// Checks each member of an object.
fn check_object<'a>(
    map: &'a Map<String, Value>,
    path: &mut FieldPath<'a>,
) -> Result<(), FrameError> {
    for (key, value) in map {
        path.push_key(key);
        check_field(key, value, path)?;
        check_value(value, path)?;
        path.pop();
    }
    Ok(())
}

/// Checks a value and everything inside it for floats and typed fields.
fn check_value<'a>(value: &'a Value, path: &mut FieldPath<'a>) -> Result<(), FrameError> {
    match value {
        Value::Number(number) if is_out_of_range(number) => Err(FrameError::malformed(format!(
            "field `{}` is out of range: integers are -9223372036854775808 to 18446744073709551615",
            path.render()
        ))),
        Value::Number(number) if !is_integer(number) => Err(FrameError::malformed(format!(
            "field `{}` is a float; send decimals as strings",
            path.render()
        ))),
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                path.push_index(index);
                check_value(item, path)?;
                path.pop();
            }
            Ok(())
        }
        Value::Object(map) => check_object(map, path),
        _ => Ok(()),
    }
}

/// Checks that the member `key` of an object, at `path`, has the type the
/// contract gives that name.
fn check_field(key: &str, value: &Value, path: &FieldPath<'_>) -> Result<(), FrameError> {
    let nested = path.is_nested();
    let Some(expected) = Expected::of(key, nested) else {
        return Ok(());
    };
    let null_allowed = nested || !ENVELOPE_FIELDS.contains(&key);
    if value.is_null() && null_allowed {
        return Ok(());
    }
    if expected.matches(value) {
        return check_enumerated(key, value, path);
    }
    let field = path.render();
    let reason = match value {
        Value::Number(number)
            if matches!(expected, Expected::Id | Expected::Integer) && is_out_of_range(number) =>
        {
            format!("field `{field}` is out of range: {}", expected.range())
        }
        _ => format!("field `{field}` must be {}", expected.describe()),
    };
    Err(FrameError::malformed(reason))
}

/// Checks that an integer field whose values the contract enumerates
/// ([`ENUMERATED_FIELDS`]) holds one of them.
fn check_enumerated(key: &str, value: &Value, path: &FieldPath<'_>) -> Result<(), FrameError> {
    let Some((_, meanings)) = ENUMERATED_FIELDS.iter().find(|(name, _)| *name == key) else {
        return Ok(());
    };
    let allowed = value
        .as_u64()
        .is_some_and(|n| usize::try_from(n).is_ok_and(|n| n < meanings.len()));
    if allowed {
        return Ok(());
    }
    let choices: Vec<String> = meanings
        .iter()
        .enumerate()
        .map(|(n, meaning)| format!("{n} ({meaning})"))
        .collect();
    Err(FrameError::malformed(format!(
        "field `{}` must be one of {}, not {value}",
        path.render(),
        choices.join(", ")
    )))
}

/// True when `number` lies beyond both u64 and i64: an integer too large
/// for 64 bits, which serde_json reads as a float. Its cause is its size,
/// not its type, and the error says so.
///
/// A float at or above 2^64 or at or below -2^63 is one (an integer
/// literal that large becomes exactly such a float; -2^63 itself is
/// caught by `is_i64` when it was written as an integer). A float literal
/// within range (`1e3`, `1.5`) is not, and is refused as a float.
fn is_out_of_range(number: &serde_json::Number) -> bool {
    const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;
    const MINUS_TWO_POW_63: f64 = -9_223_372_036_854_775_808.0;
    if number.is_u64() || number.is_i64() {
        return false;
    }
    number
        .as_f64()
        .is_some_and(|f| f >= TWO_POW_64 || f <= MINUS_TWO_POW_63)
}

/// The value of the required `timestamp`, which must fit an i64.
fn required_timestamp(map: &Map<String, Value>) -> Result<i64, FrameError> {
    let value = map
        .get("timestamp")
        .ok_or_else(|| FrameError::missing("timestamp"))?;
    value
        .as_i64()
        .ok_or_else(|| FrameError::malformed("field `timestamp` is out of range"))
}

/// The string value of a required top-level field.
fn required_string(map: &Map<String, Value>, field: &str) -> Result<String, FrameError> {
    match map.get(field) {
        None => Err(FrameError::missing(field)),
        Some(Value::String(text)) => Ok(text.clone()),
        // Unreachable after `check_field_types`, but an error is cheaper to
        // keep honest than a panic.
        Some(_) => Err(FrameError::malformed(format!(
            "field `{field}` must be a string"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vectors::{
        ONLINE_TOKEN, SID, SIGN_KEY, SIGN1, SIGN2, canonical1, canonical2, frame1, frame2,
    };

    /// `frame` with `"sign":sign` added before the closing brace.
    fn with_sign(frame: &str, sign: &str) -> String {
        format!(r#"{},"sign":"{sign}"}}"#, &frame[..frame.len() - 1])
    }

    fn parse_err(text: &str) -> FrameError {
        ClientFrame::parse(text).unwrap_err()
    }

    /// A valid signed-looking frame with `extra` spliced in.
    fn frame_with(extra: &str) -> String {
        format!(r#"{{"action":"x","online_token":"t","timestamp":1,"sid":"s","sign":"g"{extra}}}"#)
    }

    #[test]
    fn parses_and_verifies_the_examples() {
        for (frame, canonical, sign) in [
            (frame1(), canonical1(), SIGN1),
            (frame2(), canonical2(), SIGN2),
        ] {
            let parsed = ClientFrame::parse(&with_sign(&frame, sign)).unwrap();
            assert_eq!(parsed.online_token, ONLINE_TOKEN);
            assert_eq!(parsed.sid, SID);
            assert_eq!(parsed.canonical(), canonical);
            assert!(parsed.verify_sign(SIGN_KEY));
        }
        let ping = ClientFrame::parse(&with_sign(&frame1(), SIGN1)).unwrap();
        assert_eq!(ping.action, "ping");
        assert_eq!(ping.timestamp, 1_764_134_400);
        assert_eq!(ping.nonce, None);
        let tampered = with_sign(&frame1().replace("1764134400", "1764134401"), SIGN1);
        assert!(!ClientFrame::parse(&tampered).unwrap().verify_sign(SIGN_KEY));
    }

    #[test]
    fn payload_drops_the_envelope() {
        let frame = ClientFrame::parse(&frame_with(
            r#","nonce":"n1","user_id":7,"extra":{"sid":"kept"}"#,
        ))
        .unwrap();
        assert_eq!(frame.nonce.as_deref(), Some("n1"));
        let payload = Value::Object(frame.payload());
        assert_eq!(
            payload,
            json!({"action":"x","user_id":7,"extra":{"sid":"kept"}})
        );
        assert!(frame.canonical().contains("nonce=n1"));
    }

    #[test]
    fn refuses_what_is_not_a_json_object() {
        for text in ["", "not json", "[]", "\"ping\"", "42", "null", "{\"a\":1"] {
            assert_eq!(parse_err(text).code, ErrorCode::MalformedFrame, "{text}");
        }
    }

    #[test]
    fn refuses_floats_at_any_depth() {
        for (extra, field) in [
            (r#","price":1.5"#, "price"),
            (r#","extra":{"a":[1,{"b":2.0}]}"#, "extra.a[1].b"),
            (r#","big":18446744073709551616"#, "big"),
        ] {
            let err = parse_err(&frame_with(extra));
            assert_eq!(err.code, ErrorCode::MalformedFrame);
            assert!(err.reason.contains(&format!("`{field}`")), "{}", err.reason);
        }
        let err = parse_err(&frame_with("").replace("\"timestamp\":1", "\"timestamp\":1.0"));
        assert_eq!(err.code, ErrorCode::MalformedFrame);
    }

    #[test]
    fn refuses_wrong_field_types() {
        for (extra, field) in [
            (r#","user_id":"1233""#, "user_id"),
            (r#","user_id":-1"#, "user_id"),
            (r#","seat_id":true"#, "seat_id"),
            (r#","nonce":7"#, "nonce"),
            (r#","nonce":null"#, "nonce"),
            (r#","channel_name":88"#, "channel_name"),
            (r#","gift":{"id":"5","num":1}"#, "gift.id"),
            (r#","gift":{"id":5,"num":"1"}"#, "gift.num"),
            (r#","gift":{"id":5,"name":3}"#, "gift.name"),
            (r#","room_seat":{"status":[1]}"#, "room_seat.status"),
            (r#","cars":[{"expire_time":"0"}]"#, "cars[0].expire_time"),
            (r#","gift":"rose""#, "gift"),
            (r#","cars":{}"#, "cars"),
        ] {
            let err = parse_err(&frame_with(extra));
            assert_eq!(err.code, ErrorCode::MalformedFrame, "{extra}");
            assert!(
                err.reason.contains(&format!("`{field}`")),
                "{extra}: {}",
                err.reason
            );
        }
        for (from, to) in [
            ("\"timestamp\":1", "\"timestamp\":\"1\""),
            ("\"action\":\"x\"", "\"action\":null"),
            ("\"sign\":\"g\"", "\"sign\":1"),
            ("\"timestamp\":1", "\"timestamp\":18446744073709551615"),
        ] {
            let err = parse_err(&frame_with("").replace(from, to));
            assert_eq!(err.code, ErrorCode::MalformedFrame, "{to}");
        }
    }

    /// Regression (issue 19, item 6): an integer too large for 64 bits was
    /// refused as "must be an integer"; its cause is its size.
    #[test]
    fn names_out_of_range_integers_as_such() {
        for (extra, field) in [
            (r#","gift":{"num":18446744073709551616}"#, "gift.num"),
            (r#","user_id":18446744073709551616"#, "user_id"),
            (r#","gift":{"id":-18446744073709551616}"#, "gift.id"),
            (r#","num":-9223372036854775809"#, "num"),
            (r#","cars":[{"expire_time":1e20}]"#, "cars[0].expire_time"),
            (r#","unknown":123456789012345678901234567890"#, "unknown"),
        ] {
            let err = parse_err(&frame_with(extra));
            assert_eq!(err.code, ErrorCode::MalformedFrame, "{extra}");
            assert!(
                err.reason
                    .starts_with(&format!("field `{field}` is out of range")),
                "{extra}: {}",
                err.reason
            );
        }
        let err = parse_err(&frame_with("").replace("\"timestamp\":1", "\"timestamp\":1e300"));
        assert!(err.reason.contains("out of range"), "{}", err.reason);
        // Within range, a float is refused as a float, not for its size.
        for extra in [r#","num":1.5"#, r#","unknown":1e3"#, r#","user_id":1e3"#] {
            let err = parse_err(&frame_with(extra));
            assert!(
                !err.reason.contains("out of range"),
                "{extra}: {}",
                err.reason
            );
        }
        // The largest values of each type are accepted.
        for extra in [
            r#","user_id":18446744073709551615"#,
            r#","gift":{"num":18446744073709551615}"#,
            r#","num":-9223372036854775808"#,
        ] {
            assert!(ClientFrame::parse(&frame_with(extra)).is_ok(), "{extra}");
        }
    }

    /// Regression (issue 19, item 6): `sex` outside 0/1/2 was accepted.
    #[test]
    fn refuses_values_outside_an_enumeration() {
        for (extra, field) in [
            (r#","sex":3"#, "sex"),
            (r#","sex":-1"#, "sex"),
            (r#","sex":18446744073709551615"#, "sex"),
            (r#","room_seat":{"status":3}"#, "room_seat.status"),
            (r#","room_seat":{"microphone":2}"#, "room_seat.microphone"),
        ] {
            let err = parse_err(&frame_with(extra));
            assert_eq!(err.code, ErrorCode::MalformedFrame, "{extra}");
            assert!(
                err.reason
                    .starts_with(&format!("field `{field}` must be one of 0 (")),
                "{extra}: {}",
                err.reason
            );
        }
        let err = parse_err(&frame_with(r#","sex":7"#));
        assert_eq!(
            err.reason,
            "field `sex` must be one of 0 (unknown), 1 (male), 2 (female), not 7"
        );
        for extra in [
            r#","sex":0"#,
            r#","sex":2"#,
            r#","sex":null"#,
            r#","room_seat":{"status":2,"microphone":1}"#,
        ] {
            assert!(ClientFrame::parse(&frame_with(extra)).is_ok(), "{extra}");
        }
    }

    #[test]
    fn accepts_lenient_but_well_typed_fields() {
        let frame = ClientFrame::parse(&frame_with(
            r#","id":"top-level id is free","num":-3,"room_seat":null,"seat_id":null,"gift":{"id":9,"num":0,"sender_id":1},"timestamp_hint":1.5e0"#,
        ));
        // The float in an unknown field is still refused.
        assert_eq!(frame.unwrap_err().code, ErrorCode::MalformedFrame);
        let frame = ClientFrame::parse(&frame_with(
            r#","id":"top-level id is free","num":-3,"room_seat":null,"seat_id":null,"gift":{"id":9,"num":0,"sender_id":1}"#,
        ));
        assert!(frame.is_ok(), "{frame:?}");
    }

    #[test]
    fn reports_missing_fields_after_types() {
        for field in REQUIRED_FIELDS {
            let mut map: Map<String, Value> = serde_json::from_str(&frame_with("")).unwrap();
            map.remove(field);
            let err = ClientFrame::from_map(map).unwrap_err();
            assert_eq!(err, FrameError::missing(field));
            assert_eq!(err.code, ErrorCode::MissingField);
        }
        // A type error wins over a missing field.
        let err = parse_err(r#"{"action":"ping","user_id":"x"}"#);
        assert_eq!(err.code, ErrorCode::MalformedFrame);
        let err = parse_err(r#"{"action":"ping"}"#);
        assert_eq!(err.reason, "missing required field `online_token`");
    }

    #[test]
    fn builds_error_frames() {
        let text = error_frame(ErrorCode::UnknownAction, "no \"such\" action", "dance");
        assert_eq!(
            text,
            r#"{"action":"error","error_code":1007,"error_reason":"no \"such\" action","ref_action":"dance"}"#
        );
        let read = ServerError::from_frame(&text).unwrap();
        assert_eq!(read.code, ErrorCode::UnknownAction);
        assert_eq!(read.reason, "no \"such\" action");
        assert_eq!(read.to_frame(), text);
        assert_eq!(ServerError::from_frame(r#"{"action":"pong"}"#), None);
        let err = FrameError::missing("sign");
        assert!(err.to_frame("ping").contains(r#""error_code":1002"#));
        assert_eq!(
            error_body(ErrorCode::StaleTimestamp, "stale"),
            r#"{"error_code":1004,"error_reason":"stale"}"#
        );
    }
}
