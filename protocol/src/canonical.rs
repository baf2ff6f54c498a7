//! The canonical string that is signed (PROTOCOL section 2).
//!
//! `canonical(M)`: drop `sign`, sort the remaining keys by their UTF-8
//! bytes, render each as `key=value`, join with `&`. A value renders as: a
//! string as-is, an integer in decimal, `true`/`false`, `null` as the empty
//! string, an object or array as compact JSON with object keys sorted
//! recursively, non-ASCII unescaped and strings escaped as `serde_json`
//! escapes them. A float anywhere, however deeply nested, is an error.
//!
//! Sorting is done here explicitly rather than relied upon from
//! `serde_json::Map`: whether that map is sorted depends on the
//! `preserve_order` feature, which any crate in a build can turn on.

use serde_json::{Map, Number, Value};

use crate::field_path::FieldPath;

/// The key that holds a signature and is left out of the canonical string.
pub const SIGN_FIELD: &str = "sign";

/// Why a value has no canonical string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonicalError {
    /// A number that is not a 64-bit integer: a float (`1.5`, `1e3`,
    /// `-0`), or an integer too large for 64 bits, which JSON parsers read
    /// as a float. Decimals are sent as strings.
    #[error("field `{path}` is a float or out of 64-bit range; send decimals as strings")]
    NotAnInteger {
        /// Where the number is, like `extra.b[1]`.
        path: String,
    },
}

/// The canonical string of a client frame (section 2).
pub fn canonical_frame(frame: &Map<String, Value>) -> Result<String, CanonicalError> {
    let mut out = String::new();
    let mut path = FieldPath::default();
    for (index, (key, value)) in sorted_entries(frame)
        .into_iter()
        .filter(|(key, _)| key.as_str() != SIGN_FIELD)
        .enumerate()
    {
        if index > 0 {
            out.push('&');
        }
        out.push_str(key);
        out.push('=');
        path.push_key(key);
        write_field_value(&mut out, value, &mut path)?;
        path.pop();
    }
    Ok(out)
}

/// The canonical string of query parameters (section 2), given as decoded
/// `(name, value)` pairs.
///
/// `sign` is left out. Pairs with the same name keep their given order;
/// a server should refuse a query that repeats a parameter rather than
/// guess which one was signed.
pub fn canonical_query(params: &[(&str, &str)]) -> String {
    let mut sorted: Vec<&(&str, &str)> = params
        .iter()
        .filter(|(name, _)| *name != SIGN_FIELD)
        .collect();
    // `str` orders by UTF-8 bytes; the sort is stable.
    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let rendered: Vec<String> = sorted
        .into_iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    rendered.join("&")
}

/// `value` as compact JSON with object keys sorted by their UTF-8 bytes,
/// recursively: the rendering of a nested object or array in a canonical
/// string.
pub fn canonical_json(value: &Value) -> Result<String, CanonicalError> {
    let mut out = String::new();
    write_json(&mut out, value, &mut FieldPath::default())?;
    Ok(out)
}

/// Appends the rendering of a top-level field's value.
fn write_field_value<'a>(
    out: &mut String,
    value: &'a Value,
    path: &mut FieldPath<'a>,
) -> Result<(), CanonicalError> {
    match value {
        Value::Null => {}
        Value::String(text) => out.push_str(text),
        Value::Bool(_) | Value::Number(_) | Value::Array(_) | Value::Object(_) => {
            write_json(out, value, path)?;
        }
    }
    Ok(())
}

/// Appends `value` as sorted compact JSON.
fn write_json<'a>(
    out: &mut String,
    value: &'a Value,
    path: &mut FieldPath<'a>,
) -> Result<(), CanonicalError> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(flag) => out.push_str(if *flag { "true" } else { "false" }),
        Value::Number(number) => write_integer(out, number, path)?,
        Value::String(text) => write_json_string(out, text),
        Value::Array(items) => write_array(out, items, path)?,
        Value::Object(members) => write_object(out, members, path)?,
    }
    Ok(())
}

/// Appends `[item,item,…]`.
fn write_array<'a>(
    out: &mut String,
    items: &'a [Value],
    path: &mut FieldPath<'a>,
) -> Result<(), CanonicalError> {
    out.push('[');
    for (index, item) in items.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        path.push_index(index);
        write_json(out, item, path)?;
        path.pop();
    }
    out.push(']');
    Ok(())
}

/// Appends `{"key":value,…}` with keys sorted.
fn write_object<'a>(
    out: &mut String,
    members: &'a Map<String, Value>,
    path: &mut FieldPath<'a>,
) -> Result<(), CanonicalError> {
    out.push('{');
    for (index, (key, value)) in sorted_entries(members).into_iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        write_json_string(out, key);
        out.push(':');
        path.push_key(key);
        write_json(out, value, path)?;
        path.pop();
    }
    out.push('}');
    Ok(())
}

/// True when `number` is an integer the protocol accepts: one that fits a
/// u64 or an i64.
///
/// `-0` is not one. serde_json reads it as the float `-0.0`, unless its
/// `arbitrary_precision` feature is on, when it reads an integer; refusing
/// it explicitly keeps the verdict the same whatever features a build
/// turns on.
pub(crate) fn is_integer(number: &Number) -> bool {
    match (number.as_u64(), number.as_i64()) {
        (Some(_), _) => true,
        (None, Some(signed)) => signed != 0,
        (None, None) => false,
    }
}

/// Appends an integer in decimal, or fails on anything else (see
/// [`is_integer`]).
fn write_integer(
    out: &mut String,
    number: &Number,
    path: &FieldPath<'_>,
) -> Result<(), CanonicalError> {
    let decimal = match (number.as_u64(), number.as_i64()) {
        (Some(unsigned), _) => unsigned.to_string(),
        (None, Some(signed)) if signed != 0 => signed.to_string(),
        _ => {
            return Err(CanonicalError::NotAnInteger {
                path: path.render(),
            });
        }
    };
    out.push_str(&decimal);
    Ok(())
}

/// Appends `text` as a JSON string literal, escaped exactly as
/// `serde_json` escapes it (quote, backslash and control characters only;
/// non-ASCII stays as it is).
fn write_json_string(out: &mut String, text: &str) {
    // Invariant: serializing a `str` into a `String` has no I/O and no map
    // keys to reject, so serde_json cannot fail here.
    let literal = serde_json::to_string(text).expect("a str always serializes to JSON");
    out.push_str(&literal);
}

/// The entries of `map` sorted by the UTF-8 bytes of their keys.
fn sorted_entries(map: &Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    entries
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vectors::{QUERY_SIGN, SID, SIGN_KEY, canonical1, canonical2, frame1, frame2};

    fn object(text: &str) -> Map<String, Value> {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn reproduces_the_example_canonicals() {
        assert_eq!(canonical_frame(&object(&frame1())).unwrap(), canonical1());
        assert_eq!(canonical_frame(&object(&frame2())).unwrap(), canonical2());
    }

    #[test]
    fn reproduces_the_example_query_sign() {
        let canonical = canonical_query(&[
            ("user_id", "1233"),
            ("sid", SID),
            ("timestamp", "1764134400"),
        ]);
        assert_eq!(
            canonical,
            format!("sid={SID}&timestamp=1764134400&user_id=1233")
        );
        assert_eq!(crate::signing::sign(SIGN_KEY, &canonical), QUERY_SIGN);
    }

    #[test]
    fn drops_sign_and_sorts_by_bytes() {
        let frame = object(r#"{"sign":"x","b":"2","a":"1","B":"0","é":"e","z":"9"}"#);
        assert_eq!(canonical_frame(&frame).unwrap(), "B=0&a=1&b=2&z=9&é=e");
        let query = canonical_query(&[("sign", "x"), ("b", "2"), ("a", "1")]);
        assert_eq!(query, "a=1&b=2");
    }

    #[test]
    fn renders_scalars_and_nested_values() {
        let frame = object(
            r#"{"s":"a&b=\"c\"","n":-5,"u":18446744073709551615,"t":true,"f":false,"z":null,
                "o":{"y":[{"b":null,"a":"q\"\n\u0001"}],"x":"点"},"e":[],"m":{}}"#,
        );
        assert_eq!(
            canonical_frame(&frame).unwrap(),
            r#"e=[]&f=false&m={}&n=-5&o={"x":"点","y":[{"a":"q\"\n\u0001","b":null}]}&s=a&b="c"&t=true&u=18446744073709551615&z="#
        );
    }

    #[test]
    fn rejects_floats_at_any_depth() {
        for (text, path) in [
            (r#"{"a":1.5}"#, "a"),
            (r#"{"a":1e3}"#, "a"),
            (r#"{"a":-0}"#, "a"),
            (r#"{"a":18446744073709551616}"#, "a"),
            (r#"{"a":{"b":[1,{"c":2.0}]}}"#, "a.b[1].c"),
            (r#"{"sign":"x","a":[0.1]}"#, "a[0]"),
        ] {
            let err = canonical_frame(&object(text)).unwrap_err();
            assert_eq!(
                err,
                CanonicalError::NotAnInteger { path: path.into() },
                "{text}"
            );
        }
    }

    #[test]
    fn canonical_json_sorts_nested_keys() {
        let value: Value =
            serde_json::from_str(r#"{"b":{"d":1,"c":[true,null]},"a":"x"}"#).unwrap();
        assert_eq!(
            canonical_json(&value).unwrap(),
            r#"{"a":"x","b":{"c":[true,null],"d":1}}"#
        );
    }
}
