//! [`Body`]: a JSON object a plugin wrote (a notification's body, an
//! emitted event's body), kept as the text it wrote.
//!
//! The host used to parse each such text into a `serde_json` map only to
//! read one field and write it out again (a notification's frame, an
//! event's webhook body): for `send_gift` that was most of the host's
//! share of the plugin path (issue 20 item 1). Now the text is checked
//! with the parser `serde_json::Value` uses, visiting every token
//! (strings and numbers decoded, so the same texts are refused with the
//! same errors) but building nothing, and kept; the host splices what it
//! adds (`msg_id`) onto the text.
//!
//! A text the host would not pass on as it is takes the old way: parsed
//! into a map and written again (keys then in sorted order, as before).
//! That is a text with a key twice in one object (the map kept the last
//! one), or a notification's that names at its top a field the host sets
//! on frames ([`HOST_FIELDS`]: `msg_id`, `relay`, `stream`, `epoch`,
//! `seq`), which are removed: only the host sets them (a plugin's
//! `"relay":true` would make every client of a room run a relay, and be
//! left out of every resume's replay). An emitted event's body is never a
//! frame: its fields are all the plugin's ([`Body::parse_event`]).

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

/// A JSON object, as compact or spaced JSON text, checked to parse.
///
/// Its keys are in the order the plugin wrote them (the seed's, for the
/// SDK's builders), or sorted when it was written by the host or took
/// the old way (see the module's docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    /// The object's text, without surrounding whitespace: starts with
    /// `{` and ends with `}`.
    text: String,
    /// Its top-level `action` when that is a string (the last one).
    action: Option<String>,
}

/// Why a text is not a [`Body`].
#[derive(Debug)]
pub(crate) enum BodyError {
    /// It is not JSON (serde_json's error, as the map's parse gave it).
    NotJson(serde_json::Error),
    /// It is JSON but not an object.
    NotObject,
}

impl Body {
    /// Checks a notification's `text` (see the module's docs); the text is
    /// kept, trimmed, unless it names a field of [`HOST_FIELDS`] at its
    /// top or a key twice.
    pub(crate) fn parse(text: String) -> Result<Self, BodyError> {
        Self::parse_as(text, true)
    }

    /// Checks an emitted event's `text`: as [`Body::parse`], but every
    /// field is the plugin's (an event is no frame; `msg_id` and the rest
    /// are kept).
    pub(crate) fn parse_event(text: String) -> Result<Self, BodyError> {
        Self::parse_as(text, false)
    }

    fn parse_as(text: String, frame: bool) -> Result<Self, BodyError> {
        let shape = {
            let mut deserializer = serde_json::Deserializer::from_str(&text);
            let shape = TopLevel { frame }
                .deserialize(&mut deserializer)
                .and_then(|shape| deserializer.end().map(|()| shape))
                .map_err(BodyError::NotJson)?;
            shape.ok_or(BodyError::NotObject)?
        };
        if shape.kept_as_written {
            let trimmed = text.trim();
            let text = if trimmed.len() == text.len() {
                text
            } else {
                trimmed.to_string()
            };
            return Ok(Self {
                text,
                action: shape.action,
            });
        }
        match serde_json::from_str(&text).map_err(BodyError::NotJson)? {
            Value::Object(mut map) => {
                // The host sets these on frames; a plugin's are dropped.
                if frame {
                    for field in HOST_FIELDS {
                        map.remove(field);
                    }
                }
                Ok(Self::from_map(map))
            }
            _ => Err(BodyError::NotObject),
        }
    }

    /// A body the host builds (keys in sorted order).
    pub fn from_map(map: Map<String, Value>) -> Self {
        let action = map
            .get("action")
            .and_then(Value::as_str)
            .map(str::to_string);
        // A map of strings to values always serializes.
        let text = serde_json::to_string(&map).unwrap_or_else(|_| "{}".into());
        Self { text, action }
    }

    /// Its top-level `action`, when that is a string.
    pub fn action(&self) -> Option<&str> {
        self.action.as_deref()
    }

    /// Its JSON text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// It parsed into a map (for comparing and printing, never on a
    /// call's path).
    pub fn to_map(&self) -> Map<String, Value> {
        match serde_json::from_str(&self.text) {
            Ok(Value::Object(map)) => map,
            // Checked to be an object when it was made.
            _ => Map::new(),
        }
    }

    /// Its text with `"msg_id":"<msg_id>"` added as the last field.
    pub fn with_msg_id(&self, msg_id: &str) -> String {
        let open = self.text.strip_suffix('}').unwrap_or(&self.text);
        let mut frame = String::with_capacity(self.text.len() + msg_id.len() + 12);
        frame.push_str(open);
        if !open.trim_end().ends_with('{') {
            frame.push(',');
        }
        frame.push_str("\"msg_id\":");
        // A host-minted id is hex and `-`; escaped all the same.
        match serde_json::to_string(msg_id) {
            Ok(quoted) => frame.push_str(&quoted),
            Err(_) => frame.push_str("\"\""),
        }
        frame.push('}');
        frame
    }
}

/// As JSON: the object (parsed again; `plugin run` and tests only).
impl Serialize for Body {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_map().serialize(serializer)
    }
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotJson(e) => write!(f, "not JSON: {e}"),
            Self::NotObject => f.write_str("not a JSON object"),
        }
    }
}

/// What the check found of the top level: `None` when it is not an
/// object. `frame`: the body of a notification, whose top-level
/// [`HOST_FIELDS`] the host sets.
struct TopLevel {
    frame: bool,
}

/// An object's top level as checked.
struct Shape {
    /// The last top-level `action`, when it is a string.
    action: Option<String>,
    /// No key twice in any object, and (a notification's) no field of
    /// [`HOST_FIELDS`] at the top: the text can be passed on as written.
    kept_as_written: bool,
}

/// Keys of one object held without growing (a `send_gift` gift has 13):
/// one allocation per object instead of three.
const KEYS_CAPACITY: usize = 16;

/// The top-level keys the host sets on a frame (`msg_id`; `relay` in
/// relay mode; `stream`, `epoch`, `seq` from the history, PROTOCOL
/// "Recovery"); a plugin's notification may not carry them.
pub const HOST_FIELDS: [&str; 5] = ["msg_id", "relay", "stream", "epoch", "seq"];

/// The keys of one object seen so far, to find a key written twice: a
/// list while short (a gift has 13), a hash set past
/// [`KEYS_CAPACITY`], so an object of thousands of keys costs linear
/// time, not quadratic (found in review: 7,000 keys were 25 million
/// comparisons, outside any fuel or deadline).
enum SeenKeys<'de> {
    Few(Vec<Cow<'de, str>>),
    Many(std::collections::HashSet<Cow<'de, str>>),
}

impl<'de> SeenKeys<'de> {
    fn new() -> Self {
        Self::Few(Vec::with_capacity(KEYS_CAPACITY))
    }

    /// Adds `key`; false when it was there already.
    fn insert(&mut self, key: Cow<'de, str>) -> bool {
        match self {
            Self::Few(keys) if keys.len() < KEYS_CAPACITY => {
                if keys.contains(&key) {
                    return false;
                }
                keys.push(key);
                true
            }
            Self::Few(keys) => {
                let mut set: std::collections::HashSet<Cow<'de, str>> = keys.drain(..).collect();
                let new = set.insert(key);
                *self = Self::Many(set);
                new
            }
            Self::Many(set) => set.insert(key),
        }
    }
}

impl<'de> DeserializeSeed<'de> for TopLevel {
    type Value = Option<Shape>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TopLevel {
    type Value = Option<Shape>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut shape = Shape {
            action: None,
            kept_as_written: true,
        };
        let mut keys = SeenKeys::new();
        while let Some(key) = map.next_key::<CowKey<'de>>()? {
            let key = key.0;
            if self.frame && HOST_FIELDS.contains(&key.as_ref()) {
                shape.kept_as_written = false;
            }
            let is_action = key == "action";
            if !keys.insert(key) {
                shape.kept_as_written = false;
            }
            if is_action {
                let action: Value = map.next_value()?;
                shape.action = match action {
                    Value::String(action) => Some(action),
                    _ => None,
                };
            } else if !map.next_value::<Checked>()?.0 {
                shape.kept_as_written = false;
            }
        }
        Ok(Some(shape))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Checked::visit_seq_of(seq).map(|_| None)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// A key, borrowed from the text when it has no escape.
struct CowKey<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for CowKey<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(CowKeyVisitor)
    }
}

/// Visits a key into a [`CowKey`].
struct CowKeyVisitor;

impl<'de> Visitor<'de> for CowKeyVisitor {
    type Value = CowKey<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_borrowed_str<E: de::Error>(self, key: &'de str) -> Result<Self::Value, E> {
        Ok(CowKey(Cow::Borrowed(key)))
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(CowKey(Cow::Owned(key.to_string())))
    }
}

/// Any JSON value, checked as `Value`'s parse checks it and dropped;
/// `false` when some object in it has a key twice.
struct Checked(bool);

impl Checked {
    /// The elements of an array, each checked.
    fn visit_seq_of<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<bool, A::Error> {
        let mut unique = true;
        while let Some(element) = seq.next_element::<Checked>()? {
            unique &= element.0;
        }
        Ok(unique)
    }
}

impl<'de> de::Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(CheckedVisitor)
    }
}

/// Visits any value into a [`Checked`].
struct CheckedVisitor;

impl<'de> Visitor<'de> for CheckedVisitor {
    type Value = Checked;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut unique = true;
        let mut keys = SeenKeys::new();
        while let Some(key) = map.next_key::<CowKey<'de>>()? {
            unique &= keys.insert(key.0);
            unique &= map.next_value::<Checked>()?.0;
        }
        Ok(Checked(unique))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Checked::visit_seq_of(seq).map(Checked)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Checked(true))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Checked(true))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Checked(true))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Checked(true))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Checked(true))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Checked(true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Body, BodyError> {
        Body::parse(text.to_string())
    }

    /// The same texts as the map's parse are refused, with its errors.
    #[test]
    fn refuses_what_the_map_refused_with_its_words() {
        for text in [
            "",
            "{",
            "{\"a\":1,}",
            "{\"a\":1} x",
            "{\"a\":\"\\ud800\"}",
            "{\"a\":1e400}",
            "{\"a\":\"\\x\"}",
            "{\"a\":\"tab\there\"}",
            &format!("{}1{}", "[".repeat(200), "]".repeat(200)),
        ] {
            let ours = parse(text).expect_err(text);
            let theirs = serde_json::from_str::<Value>(text).expect_err(text);
            let BodyError::NotJson(ours) = ours else {
                panic!("{text}: not JSON expected")
            };
            assert_eq!(ours.to_string(), theirs.to_string(), "{text}");
        }
        for text in ["[]", "1", "\"s\"", "null", "true", "[{\"a\":1}]"] {
            assert!(matches!(parse(text), Err(BodyError::NotObject)), "{text}");
        }
    }

    /// A clean object is kept as written (trimmed), with its `action`.
    #[test]
    fn keeps_the_text_and_finds_the_action() {
        let body = parse(" {\"action\":\"up\",\"b\":{\"c\":[1,{\"d\":2}]},\"a\":\"\\u00e9\"}\n")
            .expect("object");
        assert_eq!(
            body.as_str(),
            "{\"action\":\"up\",\"b\":{\"c\":[1,{\"d\":2}]},\"a\":\"\\u00e9\"}"
        );
        assert_eq!(body.action(), Some("up"));
        assert_eq!(parse("{\"action\":7}").expect("object").action(), None);
        assert_eq!(
            parse("{\"action\":7,\"action\":\"x\"}")
                .expect("object")
                .action(),
            Some("x")
        );
        assert_eq!(
            body.with_msg_id("ab-1"),
            "{\"action\":\"up\",\"b\":{\"c\":[1,{\"d\":2}]},\"a\":\"\\u00e9\",\"msg_id\":\"ab-1\"}"
        );
        assert_eq!(
            parse("{ }").expect("object").with_msg_id("x"),
            "{ \"msg_id\":\"x\"}"
        );
    }

    /// A key twice, or a field the host sets, takes the map's way: the
    /// last value of a key, no `msg_id` of the plugin's, sorted keys.
    #[test]
    fn duplicates_and_host_fields_take_the_maps_way() {
        let body = parse("{\"z\":1,\"action\":\"a\",\"z\":2}").expect("object");
        assert_eq!(body.as_str(), "{\"action\":\"a\",\"z\":2}");
        let body = parse("{\"action\":\"a\",\"o\":{\"k\":1,\"k\":2}}").expect("object");
        assert_eq!(body.as_str(), "{\"action\":\"a\",\"o\":{\"k\":2}}");
        let body = parse("{\"action\":\"a\",\"msg_id\":\"mine\"}").expect("object");
        assert_eq!(
            body.with_msg_id("h-1"),
            "{\"action\":\"a\",\"msg_id\":\"h-1\"}"
        );
        // Only the host sets `relay`, `stream`, `epoch`, `seq`.
        let body = parse(
            "{\"relay\" : true,\"action\":\"a\",\"seq\":9,\"stream\":\"room\",\"epoch\":\"e\"}",
        )
        .expect("object");
        assert_eq!(body.as_str(), "{\"action\":\"a\"}");
        // Escaped keys are the same keys.
        let body = parse("{\"action\":\"a\",\"msg\\u005fid\":\"mine\"}").expect("object");
        assert_eq!(body.as_str(), "{\"action\":\"a\"}");
        let body = parse("{\"action\":\"a\",\"k\":1,\"\\u006b\":2}").expect("object");
        assert_eq!(body.as_str(), "{\"action\":\"a\",\"k\":2}");
    }

    /// An emitted event's body is all the plugin's: its `msg_id` stays.
    #[test]
    fn an_events_fields_are_all_the_plugins() {
        let body = Body::parse_event("{\"msg_id\":\"m1\",\"a\":1}".into()).expect("object");
        assert_eq!(body.as_str(), "{\"msg_id\":\"m1\",\"a\":1}");
    }

    /// Thousands of keys: the same answers as a few (the check switches to
    /// a hash set; linear time, not quadratic).
    #[test]
    fn an_object_of_many_keys_is_checked_whole() {
        let keys: Vec<String> = (0..5_000).map(|i| format!("\"k{i}\":{i}")).collect();
        let text = format!("{{\"action\":\"a\",{}}}", keys.join(","));
        assert_eq!(parse(&text).expect("object").as_str(), text);
        let twice = format!("{{\"action\":\"a\",{},\"k4999\":0}}", keys.join(","));
        let body = parse(&twice).expect("object");
        assert_eq!(body.to_map()["k4999"], 0);
        assert_eq!(body.to_map().len(), 5_001);
    }
}

/// A measurement of [`Body::parse`] (issue 20 item 1).
#[cfg(test)]
mod cost {
    use super::*;
    use std::time::Instant;

    /// What checking the texts of a `send_gift` reply costs: [`Body::parse`]
    /// against a `Value` parse (what the host did before) and against
    /// `IgnoredAny` (syntax only: no number, escape or duplicate-key
    /// checks, so not enough). Release only:
    /// `cargo test --release -p chorus --lib plugin::body::cost -- --ignored --nocapture`
    #[test]
    #[ignore = "a measurement, not a test"]
    fn gift_texts() {
        let body = r#"{"action":"send_gift","notify_type":"bc","channel_name":"bench","gift":{"id":7,"sender_room_seat_id":0,"receiver_room_seat_id":2,"sender_id":11,"receiver_id":12,"sender_nickname":"sender","receiver_nickname":"receiver","name":"bench-7","dynamic_image_url":"https://cdn.example/gifts/rose.webp","image_url":"https://cdn.example/gifts/rose.png","image_big_url":"https://cdn.example/gifts/rose_big.png","image_small_url":"https://cdn.example/gifts/rose_small.png","num":1}}"#;
        let event = r#"{"channel_name":"bench","gift_id":7,"num":1,"sender_id":11,"receiver_id":12,"notify_type":"bc"}"#;
        let result = r#"{"channel_name":"bench","notify_type":"bc","sender_room_seat_id":0,"receiver_room_seat_id":2}"#;
        let rounds = 200_000u32;
        for (name, text) in [("body", body), ("event", event), ("result", result)] {
            let started = Instant::now();
            for _ in 0..rounds {
                std::hint::black_box(Body::parse(std::hint::black_box(text).to_string()).ok());
            }
            eprintln!("Body::parse {name}: {:?}", started.elapsed() / rounds);
            let started = Instant::now();
            for _ in 0..rounds {
                std::hint::black_box(
                    serde_json::from_str::<Value>(std::hint::black_box(text)).ok(),
                );
            }
            eprintln!("Value parse {name}: {:?}", started.elapsed() / rounds);
            let started = Instant::now();
            for _ in 0..rounds {
                std::hint::black_box(
                    serde_json::from_str::<serde::de::IgnoredAny>(std::hint::black_box(text)).ok(),
                );
            }
            eprintln!("IgnoredAny {name}: {:?}", started.elapsed() / rounds);
        }
    }
}
