//! The event's payload: a JSON object read through typed getters.
//!
//! Every getter fails with [`Error::Invalid`] (error 1001 to the caller) and
//! a message naming the field, such as "`gift.num` must be an integer", so a
//! malformed request never traps the plugin. A JSON `null` counts as absent
//! for the optional getters and as missing for the required ones.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::Error;

/// The event's payload as a `serde`-derived struct `T`, every error naming
/// the field's path in the same words as [`Payload`]'s getters: a missing
/// (or `null`) required field is [`Error::Missing`] (1002, "`gift.num` is
/// required"); a field of the wrong type [`Error::Invalid`] (1001,
/// "`gift.num` must be an integer", "… must be a non-negative integer",
/// "… must be a string", "… must be an object", "… must be an array");
/// an integer beyond its type "`gift.num` is out of range: it must be
/// -9223372036854775808 to 9223372036854775807". Use `Option<_>` and
/// `#[serde(default)]` for optional fields, [`ChannelName`] for a room's
/// name, and unsigned types for ids. Unknown fields are ignored.
///
/// ```ignore
/// #[derive(serde::Deserialize)]
/// struct SendTopicMsg { channel_name: ChannelName, content: String }
/// let request: SendTopicMsg = chorus_plugin_sdk::payload::parse(&event.payload)?;
/// ```
pub fn parse<T: DeserializeOwned>(json: &str) -> Result<T, Error> {
    // Fast path: a payload that parses needs no field path. Tracking the
    // path costs on every field (issue 20 item 1), so only a payload that
    // fails is parsed again, with the path, to name the field.
    let mut deserializer = serde_json::Deserializer::from_str(json);
    if let Ok(value) = T::deserialize(&mut deserializer) {
        return Ok(value);
    }
    let mut deserializer = serde_json::Deserializer::from_str(json);
    match serde_path_to_error::deserialize(&mut deserializer) {
        Ok(value) => Ok(value),
        Err(error) => Err(field_error(
            "",
            &error.path().to_string(),
            &error.inner().to_string(),
        )),
    }
}

/// Deserializes `value` as `T`; errors name fields under `prefix`
/// (`gift.`, or empty at the top). Like [`parse`], the field path is
/// tracked only when the plain deserialization failed.
fn parse_value<T: DeserializeOwned>(value: Value, prefix: &str) -> Result<T, Error> {
    if let Ok(parsed) = T::deserialize(&value) {
        return Ok(parsed);
    }
    serde_path_to_error::deserialize(value).map_err(|error| {
        field_error(
            prefix,
            &error.path().to_string(),
            &error.inner().to_string(),
        )
    })
}

/// Maps a serde error at `path` (`.` for the top), under `prefix`, to the
/// contract's error in the getters' words.
fn field_error(prefix: &str, path: &str, message: &str) -> Error {
    // serde_json appends " at line L column C"; the path says where.
    let message = message.split(" at line ").next().unwrap_or(message);
    let path = match (prefix.strip_suffix('.'), path) {
        (None, p) => p.to_string(),
        (Some(parent), ".") => parent.to_string(),
        (Some(parent), p) if p.starts_with('[') => format!("{parent}{p}"),
        (Some(parent), p) => format!("{parent}.{p}"),
    };
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        let parent = if path == "." {
            String::new()
        } else {
            format!("{path}.")
        };
        return Error::Missing(format!("`{parent}{field}` is required"));
    }
    if message.starts_with("invalid type: null") {
        return Error::Missing(format!("`{path}` is required"));
    }
    if path == "." {
        return Error::Invalid(format!("the payload: {message}"));
    }
    // A field type's own check (ChannelName) says what is wrong with it.
    if message.starts_with("must ") || message.starts_with("is ") {
        return Error::Invalid(format!("`{path}` {message}"));
    }
    match expectation(message) {
        Some(said) => Error::Invalid(format!("`{path}` {said}")),
        None => Error::Invalid(format!("`{path}`: {message}")),
    }
}

/// The getters' words for a serde type error: "must be an integer", "is
/// out of range: it must be 0 to 4294967295", …; `None` for anything else.
fn expectation(message: &str) -> Option<String> {
    let expected = message.rsplit_once(", expected ")?.1;
    let found = message.split_once(", expected ")?.0;
    // The number serde found, when it found one: `integer `N`` or
    // `floating point `F``.
    let number = found
        .split_once('`')
        .and_then(|(_, rest)| rest.strip_suffix('`'))
        .and_then(|n| n.parse::<f64>().ok());
    // An integer the type cannot hold: serde found an integer of another
    // type, or a float that is a whole number at or beyond the type's
    // bounds (serde_json reads an integer literal beyond 64 bits as one).
    // A negative number for an unsigned type is not "beyond": its cause is
    // its sign, as the getters say.
    let range = |min: i128, max: i128| {
        let negative = number.is_some_and(|n| n < 0.0);
        if min == 0 && negative {
            return false;
        }
        if found.starts_with("invalid value: integer") {
            return true;
        }
        let (low, high) = (min as f64, max as f64 + 1.0);
        found.starts_with("invalid type: floating point")
            && number.is_some_and(|n| n.fract() == 0.0 && (n >= high || (min != 0 && n <= low)))
    };
    let (min, max, words) = match expected {
        "u8" => (0, u8::MAX as i128, "a non-negative integer"),
        "u16" => (0, u16::MAX as i128, "a non-negative integer"),
        "u32" => (0, u32::MAX as i128, "a non-negative integer"),
        "u64" | "usize" => (0, u64::MAX as i128, "a non-negative integer"),
        "i8" => (i8::MIN as i128, i8::MAX as i128, "an integer"),
        "i16" => (i16::MIN as i128, i16::MAX as i128, "an integer"),
        "i32" => (i32::MIN as i128, i32::MAX as i128, "an integer"),
        "i64" | "isize" => (i64::MIN as i128, i64::MAX as i128, "an integer"),
        "a string" => return Some("must be a string".into()),
        "a boolean" => return Some("must be a boolean".into()),
        "a sequence" => return Some("must be an array".into()),
        "f32" | "f64" => return Some("must be a number".into()),
        other if other == "a map" || other.starts_with("struct ") => {
            return Some("must be an object".into());
        }
        _ => return None,
    };
    if range(min, max) {
        return Some(format!("is out of range: it must be {min} to {max}"));
    }
    Some(format!("must be {words}"))
}

/// A room's `channel_name` in a payload struct: a non-empty string of at
/// most [`MAX_CHANNEL_NAME_BYTES`] bytes (PROTOCOL section 0); anything
/// else is 1001 naming the field, as [`Payload::channel_name`] says it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct ChannelName(pub String);

impl ChannelName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for ChannelName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ChannelName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<ChannelName> for String {
    fn from(name: ChannelName) -> String {
        name.0
    }
}

impl<'de> serde::Deserialize<'de> for ChannelName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        if name.is_empty() {
            return Err(serde::de::Error::custom("must not be empty"));
        }
        if name.len() > MAX_CHANNEL_NAME_BYTES {
            return Err(serde::de::Error::custom(format!(
                "is longer than {MAX_CHANNEL_NAME_BYTES} bytes"
            )));
        }
        Ok(ChannelName(name))
    }
}

/// The longest `channel_name`, in bytes (PROTOCOL section 0).
pub const MAX_CHANNEL_NAME_BYTES: usize = 128;

/// A JSON object from a payload, or an object nested in one.
#[derive(Debug, Clone)]
pub struct Payload {
    /// The object's fields.
    fields: Map<String, Value>,
    /// How error messages name this object's fields: empty at the top,
    /// `gift.` or `cars[1].` for nested objects.
    prefix: String,
}

impl Payload {
    /// Parses `json`, which must be a JSON object.
    pub fn parse(json: &str) -> Result<Self, Error> {
        match serde_json::from_str::<Value>(json) {
            Ok(Value::Object(fields)) => Ok(Self::from_map(fields, String::new())),
            Ok(_) => Err(Error::Invalid("the payload is not a JSON object".into())),
            Err(err) => Err(Error::Invalid(format!(
                "the payload is not valid JSON: {err}"
            ))),
        }
    }

    /// A top-level payload of these fields.
    pub fn from_fields(fields: Map<String, Value>) -> Self {
        Self::from_map(fields, String::new())
    }

    /// Wraps `fields`, naming them with `prefix` in error messages.
    fn from_map(fields: Map<String, Value>, prefix: String) -> Self {
        Self { fields, prefix }
    }

    /// The object's fields.
    pub fn fields(&self) -> &Map<String, Value> {
        &self.fields
    }

    /// The object as a JSON value.
    pub fn to_value(&self) -> Value {
        Value::Object(self.fields.clone())
    }

    /// The whole object as a `serde`-derived struct `T`, with
    /// [`parse`]'s errors (fields named under this object's prefix).
    pub fn to<T: DeserializeOwned>(&self) -> Result<T, Error> {
        parse_value(self.to_value(), &self.prefix)
    }

    /// Field `field` as `T` (an `Option<_>` for an optional one), with
    /// [`parse`]'s errors, naming nested fields `<field>.<name>`.
    pub fn field<T: DeserializeOwned>(&self, field: &str) -> Result<T, Error> {
        let value = self.fields.get(field).cloned().unwrap_or(Value::Null);
        let name = self.name(field);
        parse_value::<T>(value, &format!("{name}.")).map_err(|error| match error {
            // A missing field reads "`gift.` is required" from the null it
            // was replaced by: name the field itself.
            Error::Missing(_) if self.get(field).is_none() => self.missing(field),
            other => other,
        })
    }

    /// The field's name as error messages show it.
    pub fn name(&self, field: &str) -> String {
        format!("{}{field}", self.prefix)
    }

    /// The field's value, `None` when absent or `null`.
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.fields.get(field).filter(|value| !value.is_null())
    }

    /// A required string field.
    pub fn string(&self, field: &str) -> Result<String, Error> {
        self.opt_string(field)?.ok_or_else(|| self.missing(field))
    }

    /// An optional string field.
    pub fn opt_string(&self, field: &str) -> Result<Option<String>, Error> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(value)) => Ok(Some(value.clone())),
            Some(_) => Err(self.wrong_type(field, "a string")),
        }
    }

    /// A required unsigned integer field (ids, `sex`, …).
    pub fn u64(&self, field: &str) -> Result<u64, Error> {
        self.opt_u64(field)?.ok_or_else(|| self.missing(field))
    }

    /// An optional unsigned integer field.
    pub fn opt_u64(&self, field: &str) -> Result<Option<u64>, Error> {
        match self.get(field) {
            None => Ok(None),
            Some(value) => match value.as_u64() {
                Some(n) => Ok(Some(n)),
                None if is_beyond_u64(value) => {
                    Err(self.out_of_range(field, "0 to 18446744073709551615"))
                }
                None => Err(self.wrong_type(field, "a non-negative integer")),
            },
        }
    }

    /// An optional unsigned integer field that must be one of the values
    /// `0..meanings.len()`, `meanings` naming each in order (`sex`: unknown,
    /// male, female); anything else is [`Error::Invalid`] naming the field
    /// and the allowed values.
    pub fn opt_enumerated(&self, field: &str, meanings: &[&str]) -> Result<Option<u64>, Error> {
        let Some(n) = self.opt_u64(field)? else {
            return Ok(None);
        };
        if usize::try_from(n).is_ok_and(|n| n < meanings.len()) {
            return Ok(Some(n));
        }
        let choices: Vec<String> = meanings
            .iter()
            .enumerate()
            .map(|(n, meaning)| format!("{n} ({meaning})"))
            .collect();
        Err(Error::Invalid(format!(
            "`{}` must be one of {}, not {n}",
            self.name(field),
            choices.join(", ")
        )))
    }

    /// A required integer field that may be negative (`num`, `expire_time`),
    /// so that a rule, not the type check, refuses a negative value.
    pub fn i64(&self, field: &str) -> Result<i64, Error> {
        self.opt_i64(field)?.ok_or_else(|| self.missing(field))
    }

    /// An optional integer field that may be negative. An integer beyond
    /// i64 (`gift.num` of 2^63 or more) is refused as out of range, not
    /// as "not an integer".
    pub fn opt_i64(&self, field: &str) -> Result<Option<i64>, Error> {
        match self.get(field) {
            None => Ok(None),
            Some(value) => match value.as_i64() {
                Some(n) => Ok(Some(n)),
                None if is_beyond_i64(value) => {
                    Err(self.out_of_range(field, "-9223372036854775808 to 9223372036854775807"))
                }
                None => Err(self.wrong_type(field, "an integer")),
            },
        }
    }

    /// A required nested object, its fields named `<field>.<name>`.
    pub fn object(&self, field: &str) -> Result<Payload, Error> {
        match self.get(field) {
            None => Err(self.missing(field)),
            Some(Value::Object(fields)) => Ok(Self::from_map(
                fields.clone(),
                format!("{}.", self.name(field)),
            )),
            Some(_) => Err(self.wrong_type(field, "an object")),
        }
    }

    /// An optional array of objects, their fields named `<field>[i].<name>`.
    pub fn opt_objects(&self, field: &str) -> Result<Option<Vec<Payload>>, Error> {
        let items = match self.get(field) {
            None => return Ok(None),
            Some(Value::Array(items)) => items,
            Some(_) => return Err(self.wrong_type(field, "an array")),
        };
        let mut objects = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            let name = format!("{}[{index}]", self.name(field));
            match item {
                Value::Object(fields) => {
                    objects.push(Self::from_map(fields.clone(), format!("{name}.")));
                }
                _ => return Err(Error::Invalid(format!("`{name}` must be an object"))),
            }
        }
        Ok(Some(objects))
    }

    /// The required `channel_name`: a non-empty string of at most 128 bytes.
    pub fn channel_name(&self) -> Result<String, Error> {
        let channel_name = self.string("channel_name")?;
        check_channel_name(&self.name("channel_name"), &channel_name)?;
        Ok(channel_name)
    }

    /// The error for a missing required field (1002).
    fn missing(&self, field: &str) -> Error {
        Error::Missing(format!("`{}` is required", self.name(field)))
    }

    /// The error for a field of the wrong type; `expected` reads "a string".
    fn wrong_type(&self, field: &str, expected: &str) -> Error {
        Error::Invalid(format!("`{}` must be {expected}", self.name(field)))
    }

    /// The error for an integer field whose value is too large or too
    /// small; `range` reads "0 to 18446744073709551615".
    fn out_of_range(&self, field: &str, range: &str) -> Error {
        Error::Invalid(format!(
            "`{}` is out of range: it must be {range}",
            self.name(field)
        ))
    }
}

/// 2^63, one past the largest i64, as a float.
const I64_END: f64 = 9_223_372_036_854_775_808.0;
/// 2^64, one past the largest u64, as a float.
const U64_END: f64 = 18_446_744_073_709_551_616.0;

/// True when `value` is an integer above u64::MAX (serde_json reads one
/// as a float). A negative number is not "beyond": its cause is its sign.
fn is_beyond_u64(value: &Value) -> bool {
    !value.is_u64() && !value.is_i64() && value.as_f64().is_some_and(|f| f >= U64_END)
}

/// True when `value` is an integer outside i64: a u64 above i64::MAX, or
/// a float at or beyond ±2^63 (an integer literal that large; -2^63
/// itself written as an integer is an i64 and never gets here).
fn is_beyond_i64(value: &Value) -> bool {
    if value.is_i64() {
        return false;
    }
    value.is_u64() || value.as_f64().is_some_and(|f| f.abs() >= I64_END)
}

/// Checks that a channel name is non-empty and at most 128 bytes long;
/// `field` names it in the error.
pub fn check_channel_name(field: &str, channel_name: &str) -> Result<(), Error> {
    if channel_name.is_empty() {
        return Err(Error::Invalid(format!("`{field}` must not be empty")));
    }
    if channel_name.len() > MAX_CHANNEL_NAME_BYTES {
        return Err(Error::Invalid(format!(
            "`{field}` is longer than {MAX_CHANNEL_NAME_BYTES} bytes"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Gift {
        num: i64,
        #[serde(default)]
        name: String,
    }

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct SendGift {
        channel_name: String,
        gift: Gift,
        note: Option<String>,
    }

    #[test]
    fn structs_name_the_field_in_1001_and_1002() {
        let ok: SendGift =
            parse(r#"{"channel_name":"r","gift":{"num":2},"extra":1}"#).expect("valid");
        assert_eq!(ok.gift.num, 2);
        let code = |json: &str| {
            let error = parse::<SendGift>(json).expect_err("invalid");
            (crate::reply::code(&error), format!("{error:?}"))
        };
        let (c, m) = code(r#"{"gift":{"num":2}}"#);
        assert_eq!(c, 1002, "{m}");
        assert!(m.contains("`channel_name` is required"), "{m}");
        let (c, m) = code(r#"{"channel_name":"r","gift":{}}"#);
        assert_eq!(c, 1002, "{m}");
        assert!(m.contains("`gift.num` is required"), "{m}");
        let (c, m) = code(r#"{"channel_name":"r","gift":{"num":"x"}}"#);
        assert_eq!(c, 1001, "{m}");
        assert!(m.contains("`gift.num` must be an integer"), "{m}");
        let (c, m) = code(r#"{"channel_name":null,"gift":{"num":1}}"#);
        assert_eq!(c, 1002, "{m}");
        assert!(m.contains("`channel_name` is required"), "{m}");
        assert_eq!(code("[1]").0, 1001);
    }

    /// Every field type's error through a struct reads exactly as the
    /// getter's for the same value: one vocabulary, whichever way a plugin
    /// reads its payload.
    #[test]
    fn structs_and_getters_say_the_same_words() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Inner {
            n: Option<i64>,
            u: Option<u64>,
            s: Option<String>,
        }
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Outer {
            channel_name: Option<ChannelName>,
            n: Option<i64>,
            u: Option<u64>,
            s: Option<String>,
            seat: Option<u32>,
            inner: Option<Inner>,
        }
        let values = [
            "\"x\"",
            "1.5",
            "-3",
            "true",
            "[1]",
            "{}",
            "9223372036854775808",
            "-9223372036854775809",
            "18446744073709551615",
            "18446744073709551616",
            "1e300",
        ];
        for value in values {
            let json = |field: &str| format!(r#"{{"{field}":{value}}}"#);
            let payload = |field: &str| Payload::parse(&json(field)).unwrap();
            let via_struct = |field: &str| parse::<Outer>(&json(field)).err().map(message);
            let via_getter = |field: &str, get: &dyn Fn(&Payload) -> Option<Error>| {
                get(&payload(field)).map(message)
            };
            assert_eq!(
                via_struct("n"),
                via_getter("n", &|p| p.opt_i64("n").err()),
                "n = {value}"
            );
            assert_eq!(
                via_struct("u"),
                via_getter("u", &|p| p.opt_u64("u").err()),
                "u = {value}"
            );
            assert_eq!(
                via_struct("s"),
                via_getter("s", &|p| p.opt_string("s").err()),
                "s = {value}"
            );
            let nested = format!(r#"{{"inner":{{"n":{value}}}}}"#);
            let via_struct = parse::<Outer>(&nested).err().map(message);
            let getter = Payload::parse(&nested).unwrap().object("inner").unwrap();
            assert_eq!(
                via_struct,
                getter.opt_i64("n").err().map(message),
                "inner.n = {value}"
            );
            // Through Payload::field the same words, under the same name.
            let via_field = Payload::parse(&nested)
                .unwrap()
                .field::<Option<Inner>>("inner")
                .err()
                .map(message);
            assert_eq!(
                via_field,
                getter.opt_i64("n").err().map(message),
                "field inner.n = {value}"
            );
        }
        let big = parse::<Outer>(r#"{"seat":4294967296}"#).unwrap_err();
        assert_eq!(
            message(big),
            "`seat` is out of range: it must be 0 to 4294967295"
        );
        let neg = parse::<Outer>(r#"{"seat":-1}"#).unwrap_err();
        assert_eq!(message(neg), "`seat` must be a non-negative integer");
        let not_object = parse::<Outer>(r#"{"inner":3}"#).unwrap_err();
        assert_eq!(message(not_object), "`inner` must be an object");
        for name in [r#""""#.to_string(), format!(r#""{}""#, "r".repeat(129))] {
            let json = format!(r#"{{"channel_name":{name}}}"#);
            let via_struct = message(parse::<Outer>(&json).unwrap_err());
            let via_getter = message(Payload::parse(&json).unwrap().channel_name().unwrap_err());
            assert_eq!(via_struct, via_getter);
        }
        let missing = Payload::parse("{}")
            .unwrap()
            .field::<Inner>("inner")
            .unwrap_err();
        assert_eq!(message(missing), "`inner` is required");
    }

    fn message(error: Error) -> String {
        match error {
            Error::Invalid(message) | Error::Missing(message) => message,
            other => panic!("expected invalid or missing, got {other:?}"),
        }
    }

    #[test]
    fn refuses_what_is_not_an_object() {
        assert!(message(Payload::parse("[1]").unwrap_err()).contains("not a JSON object"));
        assert!(message(Payload::parse("{").unwrap_err()).contains("not valid JSON"));
    }

    #[test]
    fn typed_getters_name_the_field() {
        let payload =
            Payload::parse(r#"{"a":"x","n":-3,"f":1.5,"z":null,"gift":{"num":"2"}}"#).unwrap();
        assert_eq!(payload.string("a").unwrap(), "x");
        assert_eq!(message(payload.string("b").unwrap_err()), "`b` is required");
        assert_eq!(message(payload.string("z").unwrap_err()), "`z` is required");
        assert_eq!(payload.opt_string("z").unwrap(), None);
        assert_eq!(
            message(payload.string("n").unwrap_err()),
            "`n` must be a string"
        );
        assert_eq!(payload.i64("n").unwrap(), -3);
        assert_eq!(
            message(payload.u64("n").unwrap_err()),
            "`n` must be a non-negative integer"
        );
        assert!(message(payload.i64("f").unwrap_err()).contains("an integer"));
        let gift = payload.object("gift").unwrap();
        assert_eq!(
            message(gift.i64("num").unwrap_err()),
            "`gift.num` must be an integer"
        );
    }

    /// Regression (issue 19, item 6): a `gift.num` at or above 2^63 was
    /// refused as "must be an integer" although it is one.
    #[test]
    fn integers_beyond_the_type_are_out_of_range() {
        let payload = Payload::parse(
            r#"{"gift":{"num":9223372036854775808,"big":18446744073709551616,"neg":-9223372036854775809,"f":2.5}}"#,
        )
        .unwrap();
        let gift = payload.object("gift").unwrap();
        assert_eq!(
            message(gift.i64("num").unwrap_err()),
            "`gift.num` is out of range: it must be -9223372036854775808 to 9223372036854775807"
        );
        assert!(message(gift.i64("big").unwrap_err()).contains("out of range"));
        assert!(message(gift.i64("neg").unwrap_err()).contains("out of range"));
        assert_eq!(
            message(gift.u64("big").unwrap_err()),
            "`gift.big` is out of range: it must be 0 to 18446744073709551615"
        );
        assert_eq!(gift.u64("num").unwrap(), 1 << 63);
        assert_eq!(
            message(gift.u64("neg").unwrap_err()),
            "`gift.neg` must be a non-negative integer"
        );
        assert_eq!(
            message(gift.i64("f").unwrap_err()),
            "`gift.f` must be an integer"
        );
    }

    #[test]
    fn enumerated_fields_name_their_values() {
        let payload = Payload::parse(r#"{"sex":3,"ok":2,"neg":-1}"#).unwrap();
        let meanings = ["unknown", "male", "female"];
        assert_eq!(
            message(payload.opt_enumerated("sex", &meanings).unwrap_err()),
            "`sex` must be one of 0 (unknown), 1 (male), 2 (female), not 3"
        );
        assert_eq!(payload.opt_enumerated("ok", &meanings).unwrap(), Some(2));
        assert_eq!(payload.opt_enumerated("none", &meanings).unwrap(), None);
        assert!(
            message(payload.opt_enumerated("neg", &meanings).unwrap_err()).contains("non-negative")
        );
    }

    #[test]
    fn arrays_of_objects_name_their_items() {
        let payload = Payload::parse(r#"{"cars":[{"gift_type":2},3]}"#).unwrap();
        assert_eq!(
            message(payload.opt_objects("cars").unwrap_err()),
            "`cars[1]` must be an object"
        );
        let payload = Payload::parse(r#"{"cars":[{"gift_type":"2"}]}"#).unwrap();
        let cars = payload.opt_objects("cars").unwrap().unwrap();
        assert_eq!(
            message(cars[0].opt_i64("gift_type").unwrap_err()),
            "`cars[0].gift_type` must be an integer"
        );
    }

    #[test]
    fn channel_names_are_checked() {
        let empty = Payload::parse(r#"{"channel_name":""}"#).unwrap();
        assert!(message(empty.channel_name().unwrap_err()).contains("empty"));
        let long = format!(r#"{{"channel_name":"{}"}}"#, "r".repeat(129));
        let long = Payload::parse(&long).unwrap();
        assert!(message(long.channel_name().unwrap_err()).contains("128 bytes"));
    }
}
