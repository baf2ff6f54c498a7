//! The holes of issue 21, each as a front-door test: replay windows from
//! the request's own timestamp, revocation that lasts, bounds on what a
//! client or caller can send, and refusals at start. Tests that need two
//! nodes are in `cluster.rs`. `SECURITY.md` names each test with the
//! guarantee it proves.

use std::time::Duration;

use chorus_protocol::ClientCredentials;
use serde_json::json;

use crate::harness::*;

/// A short skew, so a window that closes too early shows within seconds.
const SKEW: u64 = 4;

/// A request dated `max_skew` ahead is still fresh `2 * max_skew` after
/// the clock it was dated at; a window measured from arrival forgot it
/// after `max_skew`. Frames, upgrade queries and server-API nonces alike.
#[tokio::test]
async fn a_request_dated_max_skew_ahead_cannot_be_replayed_after_an_arrival_window() {
    let server = TestServer::with(|c| c.signing.max_skew = Duration::from_secs(SKEW)).await;
    let t0 = now();
    let ahead = t0 + SKEW;
    // A frame.
    let mut client = server.connect(2101).await;
    let frame = client
        .creds
        .signed_frame(
            "ping",
            &client.online_token,
            ahead,
            as_object(json!({"nonce": "dated-ahead"})),
        )
        .unwrap();
    client.send_text(&frame).await;
    client.expect("pong").await;
    // An upgrade query (of another user, so the session above stays).
    let creds = server.credentials(2102);
    let url = format!(
        "ws://{}/?{}",
        server.node.addr,
        creds.signed_query_with_nonce(ahead, "dated-ahead")
    );
    drop(Client::connect(&url, creds.clone()).await.unwrap());
    // A server-API request.
    let (ts, nonce) = (ahead.to_string(), "dated-ahead-nonce".to_string());
    let path = "/api/v1/users/2101";
    let (status, _) = api_signed_as(&server, "GET", path, "", &ts, &nonce).await;
    assert_eq!(status, 200);

    // Past the window an arrival clock would have kept (arrival + skew,
    // arrival at t0 or t0 + 1), still fresh (|ahead - now| <= skew).
    sleep_until_unix(t0 + SKEW + 2).await;
    assert!(
        now() <= ahead + SKEW,
        "the test ran too slowly to prove anything"
    );
    client.send_text(&frame).await;
    let error = client.expect("error").await;
    assert_eq!(error["error_code"], 1005, "{error}");
    let err = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap_err();
    assert_http_refused(err, 1005);
    let (status, body) = api_signed_as(&server, "GET", path, "", &ts, &nonce).await;
    assert_eq!((status, &body["error_code"]), (401, &json!(1005)), "{body}");
    server.stop().await;
}

/// Revoking a connected user's sid survives a restart of a single node:
/// the data folder holds it (issue 21).
#[tokio::test]
async fn a_revoked_sid_stays_refused_after_a_single_node_restarts() {
    let data = std::env::temp_dir().join("chorus-test-data").join(nonce());
    let dir = data.clone();
    let server = TestServer::with(move |c| c.server.data_dir = Some(dir)).await;
    let mut client = server.connect(2120).await;
    let creds = client.creds.clone();
    let (status, body) = server
        .api(
            "POST",
            "/api/v1/users/2120/kick",
            Some(json!({"revoke": true})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["kicked"], &body["revoked"]),
        (&json!(true), &json!(true))
    );
    assert_eq!(client.expect_close().await, 4010);
    server.stop().await;

    let dir = data.clone();
    let server = TestServer::with(move |c| c.server.data_dir = Some(dir)).await;
    let err = tokio_tungstenite::connect_async(server.ws_url(&creds).as_str())
        .await
        .unwrap_err();
    assert_http_refused(err, 1003);
    // Another sid of the same user still connects.
    server.connect(2120).await.ping().await;
    server.stop().await;
    std::fs::remove_dir_all(&data).ok();
}

/// Revoking a user who is offline revokes the sid the app backend names:
/// `{"kicked":false,"revoked":true}`, and that sid no longer connects.
#[tokio::test]
async fn revoking_an_offline_users_sid_refuses_it() {
    let server = TestServer::start().await;
    let creds = server.credentials(2121);
    let (status, body) = server
        .api(
            "POST",
            "/api/v1/users/2121/kick",
            Some(json!({"revoke": true, "sid": creds.sid})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["kicked"], &body["revoked"]),
        (&json!(false), &json!(true))
    );
    let err = tokio_tungstenite::connect_async(server.ws_url(&creds).as_str())
        .await
        .unwrap_err();
    assert_http_refused(err, 1003);
    // Another user's sid is not this user's to revoke.
    let other = server.credentials(2122);
    let (status, _) = server
        .api(
            "POST",
            "/api/v1/users/2121/kick",
            Some(json!({"revoke": true, "sid": other.sid})),
        )
        .await;
    assert_eq!(status, 400);
    server.stop().await;
}

/// A session whose sid expires while it is open is closed with 4001.
#[tokio::test]
async fn an_open_session_whose_sid_expires_is_closed_with_4001() {
    let server = TestServer::start().await;
    let token = chorus::token::mint(SECRET.as_bytes(), 2123, 2).unwrap();
    let creds = ClientCredentials::new(2123, token.sid, token.sign_key);
    let mut client = Client::connect(&server.ws_url(&creds), creds)
        .await
        .unwrap();
    let code = client.expect_close_within(Duration::from_secs(5)).await;
    assert_eq!(code, 4001);
    server.stop().await;
}

/// Metric labels come only from bounded sets: an action no plugin serves
/// is counted as `other` before routing, and a rollback of an unknown
/// plugin is refused before it reaches the runtime's metrics.
#[tokio::test]
async fn unknown_actions_and_plugin_names_never_become_metric_labels() {
    let server = TestServer::start().await;
    let mut client = server.connect(2130).await;
    client.send("zz_made_up_action_2130", json!({})).await;
    assert_eq!(client.expect("error").await["error_code"], 1007);
    // Any name ending in `_report` is a report (contract 1.1): it is a
    // label only when a loaded plugin serves the reported action.
    client
        .send("zz_made_up_action_2130_report", json!({"user_id": 1}))
        .await;
    client.ping().await;
    let (status, _) = server
        .admin("POST", "/admin/plugins/zz_no_such_plugin_2130/rollback")
        .await;
    assert_eq!(status, 404);
    let metrics = server.metrics_text().await;
    assert!(!metrics.contains("zz_made_up_action_2130"), "{metrics}");
    assert!(!metrics.contains("zz_no_such_plugin_2130"), "{metrics}");
    assert!(metrics.contains("action=\"other\""), "{metrics}");
    assert!(metrics.contains("action=\"ping\""), "{metrics}");
    server.stop().await;
}

/// The replay memory of a session is capped: past
/// `MAX_REPLAY_ENTRIES` fresh signatures within the skew window, frames
/// are refused with 1008 and the 20th such refusal closes with 4008.
#[tokio::test]
async fn a_ping_flood_past_the_replay_cap_is_closed_with_4008() {
    let server = TestServer::start().await;
    let mut client = server.connect(2131).await;
    let cap = chorus::session::MAX_REPLAY_ENTRIES;
    for _ in 0..cap {
        client.ping().await;
    }
    for _ in 0..19 {
        client.send("ping", json!({})).await;
        assert_eq!(client.expect("error").await["error_code"], 1008);
    }
    client.send("ping", json!({})).await;
    assert_eq!(client.expect_close().await, 4008);
    server.stop().await;
}

/// The server API checks its headers before it reads the body: a request
/// without them is 401 (1003) even with a body over the size limit, which
/// is still refused when the headers are fine.
#[tokio::test]
async fn server_api_headers_are_checked_before_the_body_is_read() {
    let server = TestServer::start().await;
    let big = "x".repeat(2 << 20);
    let response = server
        .http
        .post(server.url("/api/v1/actions"))
        .body(big.clone())
        .send()
        .await;
    if let Ok(response) = response {
        assert_eq!(response.status().as_u16(), 401);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error_code"], 1003, "{body}");
    }
    // Well-signed headers, a body over the limit: refused (400, 1001).
    let (status, body) = api_signed_as(
        &server,
        "POST",
        "/api/v1/actions",
        &big,
        &now().to_string(),
        &nonce(),
    )
    .await;
    assert_eq!((status, &body["error_code"]), (400, &json!(1001)), "{body}");
    server.stop().await;
}

/// The `.cwasm` files of a cache folder.
fn cached_artifacts(cache: &std::path::Path) -> Vec<std::path::PathBuf> {
    let entries = std::fs::read_dir(cache).expect("cache folder").flatten();
    entries
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect()
}

/// Starts a node serving only `plugin` (from a folder of its own) with
/// the artifact cache in `cache`, and returns it.
async fn node_with_only(plugin: &str, cache: &std::path::Path) -> (TestServer, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("chorus-test-only-{plugin}-{}", nonce()));
    std::fs::create_dir_all(&dir).unwrap();
    copy_plugins(&dir, &[plugin]);
    let (d, c) = (dir.clone(), cache.to_path_buf());
    let server = TestServer::with(move |config| {
        config.plugins.dir = Some(d);
        config.plugins.cache_dir = Some(c);
    })
    .await;
    (server, dir)
}

/// Issue 21, item 1: a cached artifact replaced by another valid compiled
/// artifact (the `notice` plugin's, tag and all, over `chat`'s) is not
/// run. The node serves what `chat.wasm` does, and the log and
/// `chorus_plugin_cache_discarded_total` say the artifact was discarded.
#[tokio::test]
async fn a_cached_artifact_replaced_by_another_plugins_is_not_run() {
    let cache = std::env::temp_dir().join(format!("chorus-test-swap-cache-{}", nonce()));
    let (notice, notice_dir) = node_with_only("notice", &cache).await;
    notice.stop().await;
    let notice_artifact = cached_artifacts(&cache);
    assert_eq!(notice_artifact.len(), 1, "{notice_artifact:?}");
    let (chat, chat_dir) = node_with_only("chat", &cache).await;
    chat.stop().await;
    let chat_artifact: Vec<_> = cached_artifacts(&cache)
        .into_iter()
        .filter(|p| *p != notice_artifact[0])
        .collect();
    assert_eq!(chat_artifact.len(), 1, "{chat_artifact:?}");
    std::fs::copy(&notice_artifact[0], &chat_artifact[0]).unwrap();

    let dir = chat_dir.clone();
    let server = TestServer::with(move |config| {
        config.plugins.dir = Some(dir);
        config.plugins.cache_dir = Some(cache.clone());
    })
    .await;
    let (status, body) = server.admin("GET", "/admin/plugins").await;
    assert_eq!(status, 200, "{body}");
    let plugins = body["plugins"].as_array().unwrap();
    assert_eq!(plugins.len(), 1, "{body}");
    assert_eq!(
        (
            &plugins[0]["name"],
            &plugins[0]["status"],
            &plugins[0]["actions"]
        ),
        (&json!("chat"), &json!("active"), &json!(["send_topic_msg"])),
        "{body}"
    );
    // chat's behaviour: its rule on content, not notice's absence of one.
    let mut client = server.connect(2140).await;
    client
        .send(
            "send_topic_msg",
            json!({"channel_name": "room_2140", "content": ""}),
        )
        .await;
    let error = client.expect("error").await;
    assert_ne!(error["error_code"], 1007, "{error}");
    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains(
            "chorus_plugin_cache_discarded_total{plugin=\"chat\",reason=\"unauthenticated\"}"
        ),
        "{metrics}"
    );
    server.stop().await;
    for dir in [notice_dir, chat_dir] {
        std::fs::remove_dir_all(dir).ok();
    }
}

/// Issue 21, item 5: the audit's 60 KB nickname, which got slower members
/// of the room closed with 4011, is refused before any plugin or member
/// sees it (1001 naming the field and its bound), from a client and from
/// the server API alike; the connection stays.
#[tokio::test]
async fn a_60_kb_nickname_is_refused_before_the_room_hears_it() {
    let server = TestServer::start().await;
    let mut a = server.connect(2150).await;
    let mut b = server.connect(2151).await;
    crate::rooms::enter_ok(&server, 2150, "bounds_room", 1).await;
    crate::rooms::enter_ok(&server, 2151, "bounds_room", 1).await;
    for c in [&mut a, &mut b] {
        while c.recv_within(Duration::from_millis(300)).await.is_ok() {}
    }
    let huge = "n".repeat(60 * 1024);
    let error = a
        .call(
            "send_topic_msg",
            json!({"channel_name": "bounds_room", "content": "hi", "nickname": huge}),
        )
        .await;
    assert_eq!(
        (
            &error["action"],
            &error["error_code"],
            &error["error_reason"]
        ),
        (
            &json!("error"),
            &json!(1001),
            &json!("`nickname` is longer than 64 bytes")
        ),
        "{error}"
    );
    b.expect_silence(Duration::from_millis(300)).await;
    a.ping().await;
    // The action's own name is bounded before routing: 1001, not a 1007
    // that echoes 2,000 bytes back (the review of issue 21's change).
    let long_action = "x".repeat(2000);
    let error = a.call(&long_action, json!({})).await;
    assert_eq!(
        (&error["error_code"], &error["error_reason"]),
        (&json!(1001), &json!("`action` is longer than 64 bytes")),
        "{error}"
    );
    let (status, body) = server
        .action(json!({"action": long_action, "user_id": 2150}))
        .await;
    assert_eq!((status, &body["error_code"]), (400, &json!(1001)), "{body}");
    a.ping().await;

    let mut enter = as_object(crate::rooms::profile(2152));
    enter.extend(as_object(json!({"action": "enter_room", "user_id": 2152,
        "channel_name": "bounds_room", "room_id": 1, "i_segment": "newcomer", "nickname": huge})));
    let (status, body) = server.action(serde_json::Value::Object(enter)).await;
    assert_eq!(
        (status, &body["error_code"], &body["error_reason"]),
        (
            400,
            &json!(1001),
            &json!("`nickname` is longer than 64 bytes")
        ),
        "{body}"
    );
    let gift = json!({"action": "send_gift", "channel_name": "bounds_room", "notify_type": "bc",
        "gift": {"id": 1, "sender_id": 2150, "receiver_id": 2151, "num": 1, "name": "g".repeat(65)}});
    let (status, body) = server.action(gift).await;
    assert_eq!(
        (status, &body["error_reason"]),
        (400, &json!("`gift.name` is longer than 64 bytes")),
        "{body}"
    );
    let (_, room) = server.api("GET", "/api/v1/rooms/bounds_room", None).await;
    assert_eq!(room["members"], json!([2150, 2151]), "{room}");
    b.expect_silence(Duration::from_millis(200)).await;
    server.stop().await;
}

/// A kick reason over its bound (256 bytes) is refused (400, 1001) and
/// kicks nobody; one within it but longer than a close frame holds (123
/// bytes) still closes with 4010, the reason cut to fit.
#[tokio::test]
async fn a_kick_reason_is_bounded_and_a_long_one_still_closes_with_4010() {
    let server = TestServer::start().await;
    let mut client = server.connect(2155).await;
    let (status, body) = server
        .api(
            "POST",
            "/api/v1/users/2155/kick",
            Some(json!({"reason": "r".repeat(257)})),
        )
        .await;
    assert_eq!(
        (status, &body["error_code"], &body["error_reason"]),
        (
            400,
            &json!(1001),
            &json!("`reason` is longer than 256 bytes")
        ),
        "{body}"
    );
    client.ping().await;
    let (status, body) = server
        .api(
            "POST",
            "/api/v1/users/2155/kick",
            Some(json!({"reason": "é".repeat(100)})),
        )
        .await;
    assert_eq!((status, &body["kicked"]), (200, &json!(true)), "{body}");
    assert_eq!(client.expect_close().await, 4010);
    server.stop().await;
}
