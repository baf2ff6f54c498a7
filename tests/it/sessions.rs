//! Sessions (PROTOCOL sections 1 to 5): discovery, the upgrade, the error
//! table of section 4 over a real socket, close codes, heartbeat,
//! replacement and shutdown.

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::{Map, Value, json};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use crate::harness::*;

/// A signed frame as a map, before `sign` is added.
fn envelope(client: &Client, action: &str) -> Map<String, Value> {
    as_object(json!({
        "action": action,
        "online_token": client.online_token,
        "timestamp": now(),
        "sid": client.creds.sid,
        "nonce": nonce(),
    }))
}

/// Sends `text` and expects an error frame with `code`, then checks the
/// connection still answers a ping.
async fn expect_error_then_ping(client: &mut Client, code: u16) -> Value {
    let frame = client.expect("error").await;
    assert_eq!(frame["error_code"], code, "{frame}");
    assert!(
        frame["error_reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty())
    );
    client.ping().await;
    frame
}

/// Asserts an upgrade was refused with HTTP 401 and a JSON `error_code`.
fn assert_refused(err: tokio_tungstenite::tungstenite::Error, code: u16) {
    match err {
        tokio_tungstenite::tungstenite::Error::Http(response) => {
            assert_eq!(response.status().as_u16(), 401);
            let body: Value =
                serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
            assert_eq!(body["error_code"], code);
        }
        other => panic!("expected HTTP 401, got {other}"),
    }
}

#[tokio::test]
async fn connected_frame_has_the_contract_shape_and_ping_answers() {
    let server = TestServer::start().await;
    let mut client = server.connect(1233).await;
    let c = &client.connected;
    assert_eq!(c["user_id"], 1233);
    assert_eq!(c["ping_interval"], 15);
    assert_eq!(c["ping_timeout"], 20);
    assert_eq!(c["current_room_id"], "");
    assert_eq!(c["channel_name"], "");
    assert_eq!(client.online_token.len(), 32, "128 bits in hex");
    assert!(c["server_time"].as_u64().unwrap().abs_diff(now()) <= 2);
    client.send("ping", json!({})).await;
    let pong = client.expect("pong").await;
    assert!(pong["server_time"].is_u64());
    server.stop().await;
}

#[tokio::test]
async fn every_1xxx_row_of_the_error_table_answers_its_code_and_keeps_the_connection() {
    let server = TestServer::start().await;
    let mut client = server.connect(7).await;

    // 1001: not JSON, not an object, a float, a wrong type, a binary frame.
    client.send_text("hello").await;
    expect_error_then_ping(&mut client, 1001).await;
    client.send_text("[1,2]").await;
    expect_error_then_ping(&mut client, 1001).await;
    // A float cannot even be signed; type checks come before the signature.
    let mut float = envelope(&client, "ping");
    float.insert("extra".into(), json!({"price": 1.5}));
    float.insert("sign".into(), json!("0".repeat(64)));
    client.send_text(&Value::Object(float).to_string()).await;
    expect_error_then_ping(&mut client, 1001).await;
    let mut wrong_type = envelope(&client, "send_topic_msg");
    wrong_type.insert("user_id".into(), json!("7"));
    client.send_signed(wrong_type).await;
    let e = expect_error_then_ping(&mut client, 1001).await;
    assert_eq!(e["ref_action"], "send_topic_msg");
    client
        .ws
        .send(Message::Binary(vec![1u8, 2, 3].into()))
        .await
        .unwrap();
    expect_error_then_ping(&mut client, 1001).await;

    // 1002: a required field missing.
    let mut missing = envelope(&client, "ping");
    missing.remove("sid");
    client.send_signed(missing).await;
    expect_error_then_ping(&mut client, 1002).await;

    // 1003: a bad signature, and a valid sid of another user.
    let mut tampered = envelope(&client, "ping");
    client.creds.sign_frame(&mut tampered).unwrap();
    tampered.insert("timestamp".into(), json!(now() + 1));
    client.send_text(&Value::Object(tampered).to_string()).await;
    expect_error_then_ping(&mut client, 1003).await;
    let other = server.credentials(8);
    let mut foreign = envelope(&client, "ping");
    foreign.insert("sid".into(), json!(other.sid));
    client.send_signed(foreign).await;
    expect_error_then_ping(&mut client, 1003).await;

    // 1004: a stale timestamp, correctly signed.
    let mut stale = envelope(&client, "ping");
    stale.insert("timestamp".into(), json!(now() - 1000));
    client.send_signed(stale).await;
    expect_error_then_ping(&mut client, 1004).await;

    // 1005: the same signed frame twice.
    let mut once = envelope(&client, "ping");
    client.creds.sign_frame(&mut once).unwrap();
    let text = Value::Object(once).to_string();
    client.send_text(&text).await;
    client.expect("pong").await;
    client.send_text(&text).await;
    expect_error_then_ping(&mut client, 1005).await;

    // 1006: another connection's online_token.
    let mut token = envelope(&client, "ping");
    token.insert(
        "online_token".into(),
        json!("00000000000000000000000000000000"),
    );
    client.send_signed(token).await;
    expect_error_then_ping(&mut client, 1006).await;

    // 1007: an action no plugin handles.
    client.send("no_such_action", json!({})).await;
    let e = expect_error_then_ping(&mut client, 1007).await;
    assert_eq!(e["ref_action"], "no_such_action");
    server.stop().await;
}

#[tokio::test]
async fn the_twentieth_bad_frame_within_ten_seconds_closes_with_4008() {
    let server = TestServer::start().await;
    let mut client = server.connect(9).await;
    for i in 1..20 {
        client.send_text("not json").await;
        let e = client.expect("error").await;
        assert_eq!(e["error_code"], 1001, "bad frame {i}");
    }
    client.send_text("not json").await;
    assert_eq!(client.expect_close().await, 4008);
    server.stop().await;
}

#[tokio::test]
async fn a_frame_over_the_limit_closes_with_1009() {
    let server = TestServer::with(|c| c.limits.max_frame_bytes = 4096).await;
    let mut client = server.connect(10).await;
    let mut big = envelope(&client, "ping");
    big.insert("padding".into(), json!("x".repeat(5000)));
    client.send_signed(big).await;
    assert_eq!(client.expect_close().await, 1009);
    server.stop().await;
}

#[tokio::test]
async fn a_text_frame_that_is_not_utf8_closes_with_1007() {
    let server = TestServer::start().await;
    let mut client = server.connect(11).await;
    let frame = Frame::message(vec![0x7b, 0xff, 0xfe, 0x7d], OpCode::Data(Data::Text), true);
    client.ws.send(Message::Frame(frame)).await.unwrap();
    assert_eq!(client.expect_close().await, 1007);
    server.stop().await;
}

#[tokio::test]
async fn upgrade_without_or_with_bad_credentials_is_refused_before_the_socket() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let missing = http.get(server.url("/")).send().await.unwrap();
    assert_eq!(missing.status().as_u16(), 400);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error_code"], 1002);

    let creds = server.credentials(12);
    let query = creds.signed_query(now()).replace("sign=", "sign=0");
    let err = tokio_tungstenite::connect_async(format!("ws://{}/?{query}", server.node.addr))
        .await
        .unwrap_err();
    assert_refused(err, 1003);
    server.stop().await;
}

#[tokio::test]
async fn the_query_that_opens_a_socket_is_single_use() {
    let server = TestServer::start().await;
    let creds = server.credentials(13);
    let url = server.ws_url(&creds);
    let first = Client::connect(&url, creds.clone()).await.unwrap();
    let err = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap_err();
    assert_refused(err, 1005);
    drop(first);
    server.stop().await;
}

#[tokio::test]
async fn a_second_connection_replaces_the_first_with_kicked_and_4009() {
    let server = TestServer::start().await;
    let mut first = server.connect(14).await;
    let mut second = server.connect(14).await;
    let kicked = first.expect("kicked").await;
    assert_eq!(kicked["reason"], "replaced");
    assert_eq!(first.expect_close().await, 4009);
    second.ping().await;
    server.stop().await;
}

// On a paused clock (as every test that waits on heartbeat, grace or relay
// timeouts): the contract's default 20 s timeout, instantly and exactly.
#[tokio::test(start_paused = true)]
async fn silence_past_ping_timeout_closes_with_4000_and_control_pings_do_not_renew() {
    let server = TestServer::start().await;
    let mut quiet = server.connect(15).await;
    let mut pinger = server.connect(16).await;
    for _ in 0..3 {
        pinger
            .ws
            .send(Message::Ping(vec![1u8].into()))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let past_timeout = Duration::from_secs(30);
    assert_eq!(quiet.expect_close_within(past_timeout).await, 4000);
    assert_eq!(pinger.expect_close_within(past_timeout).await, 4000);
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn valid_frames_renew_the_session() {
    // The defaults: a ping every 15 s against a 20 s timeout, for 90 s.
    let server = TestServer::start().await;
    let mut client = server.connect(17).await;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_secs(15)).await;
        client.ping().await;
    }
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_half_open_handshake_does_not_hold_up_anyone_and_is_dropped() {
    // The default 10 s `heartbeat.handshake_timeout`.
    let server = TestServer::start().await;
    let mut raw = tokio::net::TcpStream::connect(server.node.addr)
        .await
        .unwrap();
    raw.write_all(b"GET /?user_id=1 HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut client = server.connect(18).await;
    client.ping().await;
    let mut buf = [0u8; 256];
    let wait = Duration::from_secs(15);
    let read = tokio::time::timeout(wait, tokio::io::AsyncReadExt::read(&mut raw, &mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(_))),
        "the half-open connection is closed by the server"
    );
    server.stop().await;
}

#[tokio::test]
async fn shutdown_closes_every_session_with_1001() {
    let server = TestServer::start().await;
    let mut a = server.connect(19).await;
    let mut b = server.connect(20).await;
    let stop = tokio::spawn(server.stop());
    assert_eq!(a.expect_close().await, 1001);
    assert_eq!(b.expect_close().await, 1001);
    stop.await.unwrap();
}

#[tokio::test]
async fn end_point_and_user_info_answer_signed_queries() {
    let server = TestServer::start().await;
    let creds = server.credentials(21);
    let http = reqwest::Client::new();
    let url = server.url(&format!(
        "/iapi/websocket/end_point?{}",
        creds.signed_query(now())
    ));
    let body: Value = http.get(url).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        body,
        json!({"error_code":0,"error_reason":"","end_point":format!("ws://{}", server.node.addr),"ping_interval":15})
    );

    let url = server.url(&format!("/iapi/user/info?{}", creds.signed_query(now())));
    let body: Value = http.get(url).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        body,
        json!({"error_code":0,"error_reason":"","user_id":21,"online":false,"current_room_id":"","channel_name":""})
    );

    let stale = server.url(&format!(
        "/iapi/user/info?{}",
        creds.signed_query(now() - 1000)
    ));
    let response = http.get(stale).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 401);
    assert_eq!(response.json::<Value>().await.unwrap()["error_code"], 1004);

    let malformed = server.url("/iapi/user/info?user_id=abc&sid=x&timestamp=1&sign=y");
    let response = http.get(malformed).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 400);
    assert_eq!(response.json::<Value>().await.unwrap()["error_code"], 1001);
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_with_4011_and_others_keep_receiving() {
    // 60 KB notices (`content` raised from its 2048-byte bound) fill the
    // socket buffers quickly.
    let server = TestServer::with(|c| {
        c.limits.outbound_queue = 8;
        c.limits.fields.insert("content".into(), 65536);
    })
    .await;
    let mut stuck = server.connect(22).await;
    let mut healthy = server.connect(23).await;
    let content = "n".repeat(60_000);
    // 300 frames of 60 KB are far more than the socket buffers and the
    // 8-frame queue hold, so the stuck client overflows early on.
    for _ in 0..300 {
        let (status, _) = server
            .action(
                json!({"action":"room_notice","expire_time":5,"content":content,"client_url":""}),
            )
            .await;
        assert_eq!(status, 200);
        healthy.expect("room_notice").await;
    }
    assert_eq!(stuck.expect_close().await, 4011);
    assert!(
        eventually(|| async { server.node.app.connections.get(22).is_none() }).await,
        "the stuck client is dropped"
    );
    healthy.ping().await;
    server.stop().await;
}
