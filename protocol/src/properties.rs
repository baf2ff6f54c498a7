//! Property tests (issue 19, item 2): arbitrary input to every parser of
//! the contract never panics and always answers the contract's code, and
//! the canonical form is the one the contract's test vectors fix.
//!
//! Stable Rust, `proptest`: each property runs [`CASES`] generated cases
//! (more with `PROPTEST_CASES=N`); a failure prints the shrunk input, which
//! then becomes a named regression test in the module it concerns.

use proptest::prelude::*;
use serde_json::{Map, Number, Value};

use crate::canonical::{canonical_frame, canonical_json, canonical_query};
use crate::codes::ErrorCode;
use crate::credentials::{CredentialError, verify_sid};
use crate::frame::{ClientFrame, REQUIRED_FIELDS};
use crate::server_api::{api_signature, valid_api_nonce, verify_api_signature};
use crate::signing;
use crate::vectors::{
    APP_SECRET, ONLINE_TOKEN, QUERY_SIGN, SID, SIGN_KEY, SIGN1, SIGN2, canonical1, canonical2,
    frame1, frame2,
};

/// Cases per property: enough to find the bugs of this kind in seconds on
/// a loaded 2-core machine; `PROPTEST_CASES` raises it for a long run.
const CASES: u32 = 512;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(CASES);
    ProptestConfig {
        cases,
        // Failures are turned into named regression tests by hand; no
        // files written next to the sources.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Field names the parser treats specially, and some it does not know.
fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "action",
            "online_token",
            "timestamp",
            "sid",
            "sign",
            "nonce",
            "user_id",
            "room_id",
            "receiver_id",
            "seat_id",
            "sender_id",
            "id",
            "sex",
            "num",
            "status",
            "microphone",
            "rank",
            "show_rank",
            "gift_type",
            "expire_time",
            "channel_name",
            "content",
            "gift",
            "room_seat",
            "cars",
            "msg_id",
        ])
        .prop_map(str::to_owned),
        "[a-z_é点]{0,6}",
    ]
}

/// A JSON number: integers of every range, floats, and integer literals
/// beyond 64 bits (which serde_json reads as floats).
fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (0u64..4).prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
        "-?[1-9][0-9]{19,30}".prop_map(|digits| serde_json::from_str(&digits).unwrap()),
    ]
}

/// Any JSON value, a few levels deep, its object keys from [`field_name`].
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(field_name(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A JSON value without floats (nor integers beyond 64 bits).
fn integer_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<u64>().prop_map(Value::from),
        any::<i64>()
            .prop_filter("not -0", |n| *n != 0)
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(".{0,6}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A frame object: the envelope (each field possibly left out or given
/// a value of any type) and arbitrary other fields.
fn frame_object() -> impl Strategy<Value = Map<String, Value>> {
    let envelope = prop::collection::vec(
        (
            prop::sample::select(REQUIRED_FIELDS.to_vec()),
            prop_oneof![
                3 => ".{0,8}".prop_map(Value::String),
                1 => json_value(),
            ],
        ),
        0..6,
    );
    let extra = prop::collection::btree_map(field_name(), json_value(), 0..5);
    (envelope, extra).prop_map(|(envelope, extra)| {
        let mut map: Map<String, Value> = extra.into_iter().collect();
        for (key, value) in envelope {
            map.insert(key.to_owned(), value);
        }
        map
    })
}

/// The same object with its keys inserted in another order, at every
/// depth (visible only when serde_json keeps insertion order, but the
/// canonical form must never depend on it).
fn reorder(value: &Value, seed: usize) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            if !entries.is_empty() {
                let len = entries.len();
                entries.rotate_left(seed % len);
            }
            entries.reverse();
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.clone(), reorder(v, seed + 1)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| reorder(v, seed + 1)).collect()),
        other => other.clone(),
    }
}

/// The parser's verdict on `text`: every error is 1001 or 1002.
fn assert_parse_answers_a_contract_code(text: &str) -> Result<(), TestCaseError> {
    match ClientFrame::parse(text) {
        Ok(frame) => {
            // A parsed frame always has a canonical string and a payload
            // without the envelope.
            let _ = frame.canonical();
            for key in frame.payload().keys() {
                prop_assert!(!crate::frame::ENVELOPE_ONLY_FIELDS.contains(&key.as_str()));
            }
        }
        Err(err) => prop_assert!(
            matches!(
                err.code,
                ErrorCode::MalformedFrame | ErrorCode::MissingField
            ),
            "{text:?} answered {:?}",
            err
        ),
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    /// Arbitrary bytes (read as a client would send them: lossy UTF-8)
    /// never panic the frame parser and answer 1001 or 1002.
    #[test]
    fn frame_parser_answers_1001_or_1002_to_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        assert_parse_answers_a_contract_code(&String::from_utf8_lossy(&bytes))?;
    }

    /// Any JSON document, objects or not, with the contract's field names
    /// at any depth and values of any type.
    #[test]
    fn frame_parser_answers_1001_or_1002_to_any_json(value in json_value()) {
        assert_parse_answers_a_contract_code(&value.to_string())?;
    }

    /// Frame-shaped objects with the envelope partly missing or mistyped:
    /// a missing field is 1002 only when the types are all right, and an
    /// error always names a field in backticks (or says what is not JSON).
    #[test]
    fn frame_errors_name_their_field(map in frame_object()) {
        let text = Value::Object(map.clone()).to_string();
        match ClientFrame::parse(&text) {
            Ok(frame) => {
                for field in REQUIRED_FIELDS {
                    prop_assert!(map.contains_key(field));
                }
                prop_assert_eq!(frame.raw(), &map);
            }
            Err(err) => {
                prop_assert!(err.reason.contains('`'), "{}", err.reason);
                if err.code == ErrorCode::MissingField {
                    let missing = REQUIRED_FIELDS.iter().find(|f| !map.contains_key(**f));
                    prop_assert!(missing.is_some());
                    prop_assert_eq!(err, crate::frame::FrameError::missing(missing.unwrap()));
                } else {
                    prop_assert_eq!(err.code, ErrorCode::MalformedFrame);
                }
            }
        }
    }

    /// Truncating a valid frame anywhere never panics and answers 1001.
    #[test]
    fn truncated_frames_answer_1001(cut in 0usize..400) {
        let text = format!(r#"{},"sign":"{SIGN2}"}}"#, &frame2()[..frame2().len() - 1]);
        let cut = text.char_indices().map(|(i, _)| i).nth(cut).unwrap_or(text.len());
        if cut < text.len() {
            let err = ClientFrame::parse(&text[..cut]).unwrap_err();
            prop_assert_eq!(err.code, ErrorCode::MalformedFrame);
        }
    }

    /// The canonical string does not depend on the order of keys, at any
    /// depth, and leaves `sign` out.
    #[test]
    fn canonical_form_ignores_key_order(value in integer_json(), seed in 0usize..16, sign in ".{0,8}") {
        let mut map = match value {
            Value::Object(map) => map,
            other => Map::from_iter([("v".to_owned(), other)]),
        };
        let without_sign = { map.remove("sign"); canonical_frame(&map).unwrap() };
        map.insert("sign".into(), Value::String(sign));
        let shuffled = reorder(&Value::Object(map), seed);
        prop_assert_eq!(canonical_frame(shuffled.as_object().unwrap()).unwrap(), without_sign);
    }

    /// A nested value's canonical JSON reads back as the same value, and
    /// rendering it again changes nothing.
    #[test]
    fn canonical_json_round_trips(value in integer_json(), seed in 0usize..16) {
        let rendered = canonical_json(&reorder(&value, seed)).unwrap();
        let back: Value = serde_json::from_str(&rendered).unwrap();
        prop_assert_eq!(&back, &value);
        prop_assert_eq!(canonical_json(&back).unwrap(), rendered);
    }

    /// A float or an integer beyond 64 bits anywhere has no canonical form
    /// (a typed error, never a panic); the frame parser refuses it with 1001.
    #[test]
    fn floats_have_no_canonical_form(value in json_value()) {
        let map = Map::from_iter([("v".to_owned(), value)]);
        if canonical_frame(&map).is_err() {
            let mut frame = map;
            for field in REQUIRED_FIELDS {
                frame.insert(field.into(), Value::String("x".into()));
            }
            frame.insert("timestamp".into(), Value::from(1));
            let err = ClientFrame::from_map(frame).unwrap_err();
            prop_assert_eq!(err.code, ErrorCode::MalformedFrame);
        }
    }

    /// The query's canonical string does not depend on parameter order.
    #[test]
    fn canonical_query_ignores_parameter_order(
        params in prop::collection::btree_map("[a-z_]{1,8}", ".{0,10}", 0..6),
        seed in 0usize..8,
    ) {
        let pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut rotated = pairs.clone();
        if !rotated.is_empty() {
            let len = rotated.len();
            rotated.rotate_left(seed % len);
        }
        rotated.push(("sign", "ignored"));
        prop_assert_eq!(canonical_query(&rotated), canonical_query(&pairs));
    }

    /// A signed frame verifies; changing any one byte of its sign does not.
    #[test]
    fn signatures_verify_only_unchanged(value in integer_json(), flip in 0usize..64) {
        let mut map = match value { Value::Object(map) => map, other => Map::from_iter([("v".to_owned(), other)]) };
        for field in ["action", "online_token", "sid"] {
            map.insert(field.into(), Value::String("x".into()));
        }
        map.insert("timestamp".into(), Value::from(1_764_134_400));
        map.remove("nonce");
        let sign = signing::sign(SIGN_KEY, &canonical_frame(&map).unwrap());
        map.insert("sign".into(), Value::String(sign.clone()));
        let Ok(frame) = ClientFrame::from_map(map.clone()) else {
            // Field types the contract refuses (an `id` that is a string…).
            return Ok(());
        };
        prop_assert!(frame.verify_sign(SIGN_KEY));
        let mut bad = sign.into_bytes();
        bad[flip] = if bad[flip] == b'0' { b'1' } else { b'0' };
        map.insert("sign".into(), Value::String(String::from_utf8(bad).unwrap()));
        prop_assert!(!ClientFrame::from_map(map).unwrap().verify_sign(SIGN_KEY));
    }

    /// Server API headers: any timestamp, nonce, method, target, body and
    /// signature never panic the check, and only the exact signature of
    /// the request verifies.
    #[test]
    fn server_api_signature_checks_never_panic(
        timestamp in ".{0,12}",
        nonce in ".{0,70}",
        method in "[A-Z]{0,7}",
        target in ".{0,40}",
        body in prop::collection::vec(any::<u8>(), 0..64),
        signature in ".{0,70}",
    ) {
        let right = api_signature(APP_SECRET, &timestamp, &nonce, &method, &target, &body);
        prop_assert_eq!(right.len(), 64);
        prop_assert!(verify_api_signature(APP_SECRET, &timestamp, &nonce, &method, &target, &body, &right));
        prop_assert_eq!(
            verify_api_signature(APP_SECRET, &timestamp, &nonce, &method, &target, &body, &signature),
            signature == right
        );
        prop_assert!(!verify_api_signature(APP_SECRET, &timestamp, &nonce, &method, &target, &body, &right.to_uppercase()) || right.to_uppercase() == right);
    }

    /// The nonce rule of section 8 is exactly `[A-Za-z0-9_-]{8,64}`.
    #[test]
    fn server_api_nonce_rule(nonce in prop_oneof!["[A-Za-z0-9_-]{0,70}", ".{0,70}"]) {
        let expected = (8..=64).contains(&nonce.len())
            && nonce.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        prop_assert_eq!(valid_api_nonce(&nonce), expected);
    }

    /// Any sid string gets a typed verdict, never a panic; every refusal
    /// is 1003.
    #[test]
    fn sid_checks_never_panic(
        sid in prop_oneof![".{0,120}", "[0-9]{0,21}\\.[0-9]{0,21}\\.[A-Za-z0-9_-]{0,65}\\.[0-9a-f]{0,66}"],
        claimed in any::<Option<u64>>(),
    ) {
        if let Err(err) = verify_sid(APP_SECRET, &sid, claimed, 1_764_134_400) {
            prop_assert_eq!(err.code(), ErrorCode::BadSignature);
            // Without the secret's MAC nothing gets past the MAC check.
            prop_assert!(matches!(err, CredentialError::Malformed(_) | CredentialError::BadMac | CredentialError::InvalidNonce));
        }
    }
}

/// The contract's vectors (section 2) survive the parser, in any key
/// order: frame → canonical → sign, and the query's sign.
#[test]
fn the_contract_vectors_round_trip() {
    for (frame, canonical, sign) in [
        (frame1(), canonical1(), SIGN1),
        (frame2(), canonical2(), SIGN2),
    ] {
        let value: Value = serde_json::from_str(&frame).unwrap();
        for seed in 0..8 {
            let mut map = reorder(&value, seed).as_object().unwrap().clone();
            map.insert("sign".into(), Value::String(sign.into()));
            let parsed = ClientFrame::parse(&Value::Object(map).to_string()).unwrap();
            assert_eq!(parsed.canonical(), canonical);
            assert_eq!(signing::sign(SIGN_KEY, &parsed.canonical()), sign);
            assert!(parsed.verify_sign(SIGN_KEY));
            assert_eq!(parsed.online_token, ONLINE_TOKEN);
        }
    }
    let query = canonical_query(&[
        ("timestamp", "1764134400"),
        ("user_id", "1233"),
        ("sid", SID),
    ]);
    assert_eq!(signing::sign(SIGN_KEY, &query), QUERY_SIGN);
}
