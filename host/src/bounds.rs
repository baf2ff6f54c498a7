//! The longest string a client or the app backend may send in each field
//! (issue 21, item 5), checked by the host before any plugin runs, so
//! nothing unbounded reaches a plugin, the store or other users.
//!
//! One table, [`FIELDS`], by field name wherever the field sits (top
//! level, inside `gift`, inside each of `cars`); every other string field
//! is bounded by [`OTHER_STRING_BYTES`], and every field name by
//! [`FIELD_NAME_BYTES`]. The operator may change a bound
//! (`[limits.fields] content = 8192`) or the default for other fields
//! (`limits.string_bytes`); [`Bounds`] is the table in force. Lengths are UTF-8 bytes. A string over its bound
//! is a malformed request: error 1001 naming the field and the bound
//! (`` `gift.name` is longer than 64 bytes ``). A plugin's own rules
//! (`content` of 1 to `max_chars` characters) come after and stay 2001.
//!
//! The frame itself is bounded by `limits.max_frame_bytes` (1009) and a
//! server-API body by 1 MiB; these bounds keep any one field far below
//! what would make a notification slow for every member of a room.

use std::collections::HashMap;

use serde_json::{Map, Value};

/// Field name → the most UTF-8 bytes its string value may have. The
/// README's table is this one.
pub const FIELDS: &[(&str, usize)] = &[
    // The action's name, checked before routing (a longer one is 1001,
    // never a 1007 echoing it back).
    ("action", 64),
    ("channel_name", 128),
    ("nickname", 64),
    ("sender_nickname", 64),
    ("receiver_nickname", 64),
    ("name", 64),
    ("i_segment", 32),
    ("i_segment_text", 64),
    ("notify_type", 8),
    ("render_type", 16),
    ("svga_image_name", 128),
    ("avatar_url", 1024),
    ("avatar_small_url", 1024),
    ("image_url", 1024),
    ("image_small_url", 1024),
    ("image_big_url", 1024),
    ("dynamic_image_url", 1024),
    ("svga_image_url", 1024),
    ("client_url", 1024),
    ("notice_content", 512),
    ("content", 2048),
    ("reason", 256),
];

/// The bound of a string field the table does not name.
pub const OTHER_STRING_BYTES: usize = 1024;

/// The longest field name (object key) accepted anywhere.
pub const FIELD_NAME_BYTES: usize = 64;

/// The bounds in force: [`FIELDS`] with the operator's overrides.
#[derive(Debug, Clone)]
pub struct Bounds {
    /// Field name → its most bytes.
    fields: HashMap<String, usize>,
    /// The bound of any other string field.
    other: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        Self::new(&HashMap::new(), OTHER_STRING_BYTES)
    }
}

impl Bounds {
    /// [`FIELDS`] with `overrides` (field → bytes) applied, and `other`
    /// for every field neither names.
    pub fn new(overrides: &HashMap<String, usize>, other: usize) -> Self {
        let mut fields: HashMap<String, usize> = FIELDS
            .iter()
            .map(|(name, max)| ((*name).to_string(), *max))
            .collect();
        fields.extend(overrides.iter().map(|(k, v)| (k.clone(), *v)));
        Self { fields, other }
    }

    /// The bound of field `name`.
    pub fn max_bytes(&self, name: &str) -> usize {
        self.fields.get(name).copied().unwrap_or(self.other)
    }

    /// Checks every string and field name of `payload`, at any depth.
    pub fn check(&self, payload: &Map<String, Value>) -> Result<(), TooLong> {
        self.check_object(payload, "")
    }

    /// Checks one string field `name` (at the top level).
    pub fn check_field(&self, name: &str, value: &str) -> Result<(), TooLong> {
        self.check_string(name, name, value)
    }

    fn check_object(&self, object: &Map<String, Value>, prefix: &str) -> Result<(), TooLong> {
        for (key, value) in object {
            if key.len() > FIELD_NAME_BYTES {
                return Err(TooLong(format!(
                    "a field name in `{}` is longer than {FIELD_NAME_BYTES} bytes",
                    if prefix.is_empty() {
                        "the request"
                    } else {
                        prefix
                    }
                )));
            }
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            self.check_value(key, &path, value)?;
        }
        Ok(())
    }

    /// `name` is the field's own name (its bound); `path` names it in
    /// errors.
    fn check_value(&self, name: &str, path: &str, value: &Value) -> Result<(), TooLong> {
        match value {
            Value::String(s) => self.check_string(name, path, s),
            Value::Object(object) => self.check_object(object, path),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .try_for_each(|(i, item)| self.check_value(name, &format!("{path}[{i}]"), item)),
            _ => Ok(()),
        }
    }

    fn check_string(&self, name: &str, path: &str, value: &str) -> Result<(), TooLong> {
        let max = self.max_bytes(name);
        if value.len() > max {
            return Err(TooLong(format!("`{path}` is longer than {max} bytes")));
        }
        Ok(())
    }
}

/// A field over its bound; the message names it (dotted path from the
/// payload's top) and the bound, never the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TooLong(pub String);

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn checked(value: Value) -> Result<(), TooLong> {
        Bounds::default().check(value.as_object().expect("an object"))
    }

    #[test]
    fn every_string_at_any_depth_has_a_bound() {
        assert!(checked(json!({"nickname": "x".repeat(64)})).is_ok());
        assert_eq!(
            checked(json!({"nickname": "x".repeat(65)})).unwrap_err().0,
            "`nickname` is longer than 64 bytes"
        );
        assert_eq!(
            checked(json!({"gift": {"name": "é".repeat(33)}}))
                .unwrap_err()
                .0,
            "`gift.name` is longer than 64 bytes"
        );
        assert_eq!(
            checked(json!({"cars": [{"name": "ok"}, {"image_url": "x".repeat(1025)}]}))
                .unwrap_err()
                .0,
            "`cars[1].image_url` is longer than 1024 bytes"
        );
        assert_eq!(
            checked(json!({"extra": {"b": ["x".repeat(1025)]}}))
                .unwrap_err()
                .0,
            "`extra.b[0]` is longer than 1024 bytes"
        );
        assert!(checked(json!({"extra": {"b": ["x".repeat(1024)], "n": 1}})).is_ok());
        let long_key = "k".repeat(65);
        assert!(
            checked(json!({"extra": {long_key: 1}}))
                .unwrap_err()
                .0
                .contains("a field name in `extra`")
        );
    }

    #[test]
    fn the_operator_overrides_a_bound_and_the_default() {
        let overrides = HashMap::from([("content".to_string(), 8192)]);
        let bounds = Bounds::new(&overrides, 16);
        assert_eq!(bounds.max_bytes("content"), 8192);
        assert_eq!(bounds.max_bytes("nickname"), 64);
        assert_eq!(bounds.max_bytes("anything_else"), 16);
    }

    #[test]
    fn the_table_names_each_field_once() {
        for (i, (name, _)) in FIELDS.iter().enumerate() {
            assert!(
                FIELDS[i + 1..].iter().all(|(other, _)| other != name),
                "{name} twice"
            );
        }
    }
}
