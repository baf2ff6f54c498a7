//! Small bad inputs, tried as a new user would (issue 19, item 6), and
//! arbitrary frames (item 2), through the front door: a real node, real
//! WebSocket clients, the signed server API and the bundled plugins.
//!
//! The sweep behind them: every integer field of PROTOCOL section 4 is
//! range-checked by the frame parser (`chorus_protocol::frame`) for
//! client frames and server-API bodies alike: ids are 0 to u64::MAX (the
//! contract makes them unsigned 64-bit and excludes no value), other
//! integers -2^63 to u64::MAX, an integer beyond that is "out of range"
//! (not "must be an integer"), and the enumerated ones (`sex`, a seat's
//! `status` and `microphone`) hold one of their listed values. Within a
//! plugin, the SDK's getters name the range of their own type.

use std::path::Path;
use std::time::Duration;

use chorus_protocol::ClientCredentials;
use futures_util::SinkExt;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::harness::*;
use crate::rooms::enter;

/// The profile of a test user with `sex`.
fn profile_with_sex(user_id: u64, sex: Value) -> Value {
    json!({
        "action": "enter_room",
        "user_id": user_id,
        "channel_name": "inputs",
        "room_id": 7,
        "nickname": "n",
        "sex": sex,
        "avatar_url": "a",
        "avatar_small_url": "s",
        "i_segment": "newcomer",
    })
}

/// Asserts a refusal: HTTP `status`, error `code`, a reason starting with
/// `reason`.
fn assert_refused_with(answer: (u16, Value), status: u16, code: u16, reason: &str) {
    let (got, body) = answer;
    assert_eq!(
        (got, body["error_code"].as_u64()),
        (status, Some(u64::from(code))),
        "{body}"
    );
    let text = body["error_reason"].as_str().unwrap_or_default();
    assert!(
        text.starts_with(reason),
        "expected {reason:?}…, got {text:?}"
    );
}

#[tokio::test]
async fn sex_outside_0_1_2_is_refused_with_1001_naming_the_field() {
    let server = TestServer::start().await;
    for sex in [json!(3), json!(-1), json!(255), json!(u64::MAX)] {
        let answer = server.action(profile_with_sex(1901, sex.clone())).await;
        assert_refused_with(
            answer,
            400,
            1001,
            "field `sex` must be one of 0 (unknown), 1 (male), 2 (female)",
        );
    }
    for sex in [0u64, 1, 2] {
        let (status, body) = server
            .action(profile_with_sex(1903 + sex, json!(sex)))
            .await;
        assert_eq!(status, 200, "sex {sex}: {body}");
    }
    // From a client too (send_topic_msg accepts client frames).
    let mut client = server.connect(1902).await;
    let (status, _) = enter(&server, 1902, "inputs", 7, json!({})).await;
    assert_eq!(status, 200);
    client.expect("enter_room").await;
    let answer = client
        .call(
            "send_topic_msg",
            json!({"channel_name": "inputs", "content": "hi", "sex": 9}),
        )
        .await;
    assert_eq!(answer["error_code"], 1001, "{answer}");
    assert!(
        answer["error_reason"].as_str().unwrap().contains("`sex`"),
        "{answer}"
    );
    client
        .send(
            "send_topic_msg",
            json!({"channel_name": "inputs", "content": "hi", "sex": 2}),
        )
        .await;
    // The ack and the room's own notification, in either order.
    let mut actions = vec![client.recv().await.unwrap(), client.recv().await.unwrap()];
    actions.sort_by_key(|frame| frame["action"].as_str().unwrap_or_default().to_owned());
    assert_eq!(actions[0]["action"], "ack", "{actions:?}");
    assert_eq!(actions[1]["action"], "send_topic_msg", "{actions:?}");
    assert_eq!(actions[1]["sex"], 2, "{actions:?}");
    server.stop().await;
}

/// The body of a `send_gift` from user 1911 in room `inputs` with `num`
/// written exactly as given.
fn gift_body(num: &str) -> String {
    format!(
        r#"{{"action":"send_gift","channel_name":"inputs","notify_type":"bc","gift":{{"id":5,"sender_id":1911,"receiver_id":1912,"num":{num}}}}}"#
    )
}

#[tokio::test]
async fn a_gift_num_beyond_64_bits_is_out_of_range_not_a_non_integer() {
    let server = TestServer::start().await;
    enter(&server, 1911, "inputs", 7, json!({})).await;
    let send = |num: &'static str| server.api_text("POST", "/api/v1/actions", gift_body(num));
    // 2^63 is a u64 the parser accepts; the gift plugin reads an i64.
    assert_refused_with(
        send("9223372036854775808").await,
        400,
        1001,
        "`gift.num` is out of range",
    );
    assert_refused_with(
        send("18446744073709551615").await,
        400,
        1001,
        "`gift.num` is out of range",
    );
    // 2^64 is beyond every 64-bit integer: the parser says so.
    assert_refused_with(
        send("18446744073709551616").await,
        400,
        1001,
        "field `gift.num` is out of range",
    );
    // A float stays a float, and a count below one is the plugin's rule.
    assert_refused_with(
        send("1.5").await,
        400,
        1001,
        "field `gift.num` must be an integer",
    );
    assert_refused_with(send("0").await, 422, 2001, "`gift.num` must be at least 1");
    let (status, body) = send("9223372036854775807").await;
    assert_eq!(status, 200, "{body}");
    server.stop().await;
}

#[tokio::test]
async fn every_integer_field_names_its_range_or_its_values() {
    let server = TestServer::start().await;
    enter(&server, 1921, "inputs", 7, json!({})).await;
    let enter_with = |extra: &str| {
        format!(
            r#"{{"action":"enter_room","user_id":1921,"channel_name":"inputs","room_id":7,"nickname":"n","sex":1,"avatar_url":"a","avatar_small_url":"s","i_segment":"newcomer"{extra}}}"#
        )
    };
    for (extra, status, code, reason) in [
        (
            r#","user_id":18446744073709551616"#,
            400,
            1001,
            "field `user_id` is out of range: ids are 0 to 18446744073709551615",
        ),
        (
            r#","room_id":-1"#,
            400,
            1001,
            "field `room_id` must be a non-negative integer",
        ),
        (
            r#","room_id":1e30"#,
            400,
            1001,
            "field `room_id` is out of range",
        ),
        (
            r#","cars":[{"id":1,"gift_type":9223372036854775808}]"#,
            400,
            1001,
            "`cars[0].gift_type` is out of range",
        ),
        (
            r#","cars":[{"id":1,"gift_type":2,"expire_time":-99999999999999999999}]"#,
            400,
            1001,
            "field `cars[0].expire_time` is out of range",
        ),
        (
            r#","cars":[{"id":1,"show_rank":2.5}]"#,
            400,
            1001,
            "field `cars[0].show_rank` must be an integer",
        ),
        (
            r#","room_seat":{"status":3}"#,
            400,
            1001,
            "field `room_seat.status` must be one of 0 (free), 1 (occupied), 2 (locked)",
        ),
        (
            r#","room_seat":{"microphone":2}"#,
            400,
            1001,
            "field `room_seat.microphone` must be one of 0 (closed), 1 (open)",
        ),
    ] {
        let answer = server
            .api_text("POST", "/api/v1/actions", enter_with(extra))
            .await;
        assert_refused_with(answer, status, code, reason);
    }
    let answer = server
        .action(json!({"action": "up", "user_id": 1921, "channel_name": "inputs", "seat_id": 4294967297u64,
            "nickname": "n", "sex": 1, "avatar_url": "a", "avatar_small_url": "s"}))
        .await;
    // A seat id is an id (any u64) and then a rule: seats are 1 to N.
    assert_refused_with(answer, 422, 2001, "seat 4294967297 does not exist");
    // The client's own timestamp beyond 64 bits: out of range, 1001.
    let mut client = server.connect(1922).await;
    client
        .send_text(r#"{"action":"ping","online_token":"t","timestamp":18446744073709551616,"sid":"s","sign":"g"}"#)
        .await;
    let answer = client.recv().await.unwrap();
    assert_eq!(answer["error_code"], 1001, "{answer}");
    assert!(
        answer["error_reason"]
            .as_str()
            .unwrap()
            .contains("`timestamp` is out of range"),
        "{answer}"
    );
    server.stop().await;
}

/// Writes `bytes` to `dir/name` through a temporary file and a rename.
fn install(dir: &Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

#[tokio::test]
async fn a_symlinked_plugin_reloads_when_its_target_is_replaced_outside_the_folder() {
    let plugins = tempfile::tempdir().unwrap();
    let deploy = tempfile::tempdir().unwrap();
    let artifact = |name: &str| std::fs::read(artifacts().join(format!("{name}.wasm"))).unwrap();
    install(deploy.path(), "echo.wasm", &artifact("echo_v1"));
    std::os::unix::fs::symlink(
        deploy.path().join("echo.wasm"),
        plugins.path().join("echo.wasm"),
    )
    .unwrap();
    let path = plugins.path().to_path_buf();
    let server = TestServer::with(move |c| c.plugins.dir = Some(path)).await;
    let version = || async {
        let (status, body) = server.action(json!({"action": "echo"})).await;
        (status, body["result"]["version"].clone())
    };
    assert_eq!(version().await, (200, json!("1.0.0")));
    // The deploy folder gets a new version; the plugin folder sees no event.
    install(deploy.path(), "echo.wasm", &artifact("echo_v2"));
    let reloaded = eventually_within(Duration::from_secs(20), || async {
        version().await.1 == "2.0.0"
    })
    .await;
    assert!(reloaded, "the symlink's new target was not picked up");
    // And back, to show the watch on the target folder stays.
    install(deploy.path(), "echo.wasm", &artifact("echo_v1"));
    let reloaded = eventually_within(Duration::from_secs(20), || async {
        version().await.1 == "1.0.0"
    })
    .await;
    assert!(reloaded, "the second replacement was not picked up");
    server.stop().await;
}

/// Polls `check` every 50 ms until it holds or `wait` passes (longer than
/// [`WAIT`]: a reload compiles a plugin, slow on a loaded machine).
async fn eventually_within<F, Fut>(wait: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + wait;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Arbitrary text frames and binary frames through a real socket: each
/// is answered with an error frame of code 1001 or 1002 and the socket
/// stays open (item 2, at the front door). 15 frames per connection, below
/// the 20 bad frames in 10 s that close with 4008.
#[tokio::test]
async fn arbitrary_frames_answer_1001_or_1002_and_keep_the_socket() {
    let server = TestServer::start().await;
    let frames = prop::collection::vec(
        prop_oneof![
            ".{0,64}",
            r#"\{"action":"[a-z]{0,6}"(,"(user_id|sex|num|timestamp|sid)":(-?[0-9]{1,22}|"x"|null|\[\]|1\.5))*\}"#,
        ],
        60,
    );
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let frames = frames.new_tree(&mut runner).unwrap().current();
    for (batch, chunk) in frames.chunks(15).enumerate() {
        let mut client = server.connect(1930 + batch as u64).await;
        for text in chunk {
            client.send_text(text).await;
            let answer = client
                .recv()
                .await
                .unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(answer["action"], "error", "{text:?}: {answer}");
            let code = answer["error_code"].as_u64().unwrap();
            assert!(code == 1001 || code == 1002, "{text:?}: {answer}");
        }
        client.ping().await;
    }
    let creds: ClientCredentials = server.credentials(1939);
    let mut client = Client::connect(&server.ws_url(&creds), creds)
        .await
        .unwrap();
    client
        .ws
        .send(Message::Binary(vec![0xff, 0x00, 0x7b].into()))
        .await
        .unwrap();
    let answer = client.recv().await.unwrap();
    assert_eq!(answer["error_code"], 1001, "{answer}");
    client.ping().await;
    server.stop().await;
}

/// Arbitrary `X-Chorus-*` headers on the server API (item 2, at the front
/// door): each request, with any header missing, empty, malformed or
/// merely wrong, is refused with HTTP 401 and error 1003, and one with
/// the right signature of a stale timestamp with 1004.
#[tokio::test]
async fn arbitrary_server_api_headers_answer_401_with_1003() {
    use chorus_protocol::server_api::{NONCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};

    let server = TestServer::start().await;
    let header = prop::option::of(prop_oneof!["[ -~]{0,70}", "[0-9]{1,12}", "[a-f0-9]{64}"]);
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let cases = prop::collection::vec((header.clone(), header.clone(), header), 40)
        .new_tree(&mut runner)
        .unwrap()
        .current();
    for (timestamp, nonce, signature) in cases {
        let mut request = server
            .http
            .post(server.url("/api/v1/actions"))
            .body(r#"{"action":"room_notice","content":"x"}"#);
        for (name, value) in [
            (TIMESTAMP_HEADER, &timestamp),
            (NONCE_HEADER, &nonce),
            (SIGNATURE_HEADER, &signature),
        ] {
            if let Some(value) = value {
                request = request.header(name, value.trim());
            }
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let case = format!("{timestamp:?} {nonce:?} {signature:?}");
        assert_eq!(
            (status, body["error_code"].as_u64()),
            (401, Some(1003)),
            "{case}: {body}"
        );
    }
    // The right signature over a timestamp an hour old: stale, 1004.
    let stale = (now() - 3600).to_string();
    let body = r#"{"action":"room_notice","content":"x"}"#;
    let headers = chorus_protocol::server_api::signed_headers(
        SECRET.as_bytes(),
        &stale,
        &nonce(),
        "POST",
        "/api/v1/actions",
        body.as_bytes(),
    );
    let mut request = server.http.post(server.url("/api/v1/actions")).body(body);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["error_code"], 1004, "{answer}");
    server.stop().await;
}

#[tokio::test]
async fn a_query_integer_beyond_its_range_is_out_of_range_not_a_non_integer() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let cases = [
        (
            "user_id=18446744073709551616&sid=x&timestamp=1&sign=x",
            "user_id is out of range",
        ),
        (
            "user_id=1&sid=x&timestamp=9223372036854775808&sign=x",
            "timestamp is out of range",
        ),
        (
            "user_id=one&sid=x&timestamp=1&sign=x",
            "user_id must be an unsigned integer",
        ),
        (
            "user_id=1&sid=x&timestamp=1.5&sign=x",
            "timestamp must be an integer",
        ),
    ];
    for (query, reason) in cases {
        let url = server.url(&format!("/iapi/websocket/end_point?{query}"));
        let response = http.get(url).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 400, "{query}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error_code"], 1001, "{query}: {body}");
        assert_eq!(body["error_reason"], reason, "{query}: {body}");
    }
    server.stop().await;
}
