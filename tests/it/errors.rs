//! One error path for client frames (issue 11): every 1xxx error a frame
//! earns counts toward 4008 and does not renew the heartbeat, whether the
//! frame checks, dispatch (1007) or the action's plugin (1002) found it;
//! and a session's registration is undone however its task ends.

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::*;
use crate::rooms::{enter_ok, profile};

/// The value of `chorus_client_errors_total{code="N"}` in the node's
/// metrics (0 before the first).
async fn client_errors(server: &TestServer, code: u16) -> u64 {
    let text = server.metrics_text().await;
    let prefix = format!("chorus_client_errors_total{{code=\"{code}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().parse::<f64>().unwrap() as u64)
        .unwrap_or(0)
}

#[tokio::test]
async fn errors_from_dispatch_and_plugins_count_toward_4008_like_frame_errors() {
    let server = TestServer::start().await;
    let mut client = server.connect(401).await;
    let unknown_before = client_errors(&server, 1007).await;
    let missing_before = client_errors(&server, 1002).await;
    // 10 unknown actions (dispatch), 9 chat messages without content (the
    // chat plugin's 1002): 19 errors, the connection stays.
    for _ in 0..10 {
        let answer = client.call("no_such_action", json!({})).await;
        assert_eq!(answer["error_code"], 1007, "{answer}");
    }
    for _ in 0..9 {
        let answer = client
            .call("send_topic_msg", json!({"channel_name": "e_room"}))
            .await;
        assert_eq!(answer["error_code"], 1002, "{answer}");
    }
    // The 20th, from the frame checks (binary frame), closes with 4008.
    client
        .ws
        .send(Message::Binary(vec![1u8].into()))
        .await
        .unwrap();
    assert_eq!(client.expect("error").await["error_code"], 1001);
    assert_eq!(client.expect_close().await, 4008);
    assert!(client_errors(&server, 1007).await >= unknown_before + 10);
    assert!(client_errors(&server, 1002).await >= missing_before + 9);
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_1xxx_error_does_not_renew_the_heartbeat_and_a_2xxx_error_does() {
    // The default 20 s timeout, on a paused clock; frames every 5 s.
    let server = TestServer::start().await;
    let mut bad = server.connect(411).await;
    let mut refused = server.connect(412).await;
    // Every 5 s: `bad` earns 1007 (not renewing), `refused` earns 2004
    // from the chat plugin (a valid frame, renewing). `bad` stops before
    // its timeout would pass even from its last frame.
    for round in 0..8 {
        tokio::time::sleep(Duration::from_secs(5)).await;
        refused
            .send(
                "send_topic_msg",
                json!({"channel_name": "elsewhere", "content": "hi"}),
            )
            .await;
        let answer = refused.recv().await.expect("an answer");
        assert_eq!(answer["error_code"], 2004, "{answer}");
        if round < 2 {
            bad.send("no_such_action", json!({})).await;
        }
        if round == 3 {
            // 20 s after connecting, 10 s after its last frame.
            assert_eq!(bad.expect_close_within(Duration::from_secs(15)).await, 4000);
        }
    }
    refused.ping().await;
    server.stop().await;
}

/// Runs `body` as a session task would: registered as user 431 while
/// `body` runs; the task is then cancelled (or panics) mid-way.
async fn registered_then_ended(server: &TestServer, abort: bool) {
    let app = server.node.app.clone();
    let who = chorus::session::Principal {
        user_id: 431,
        sid: server.credentials(431).sid,
        sign_key: String::new(),
        expires_at: chorus::ids::unix_now() + 3600,
    };
    let (opened_tx, opened) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let registration = chorus::session::Registration::open(&app, &who).await;
        let _ = opened_tx.send(());
        if !abort {
            panic!("a session task panics mid-action (test)");
        }
        // An action in flight that never finishes.
        std::future::pending::<()>().await;
        drop(registration);
    });
    opened.await.ok();
    if abort {
        task.abort();
    }
    assert!(task.await.is_err(), "the task ended abnormally");
}

#[tokio::test]
async fn a_cancelled_or_panicking_session_leaves_no_ghost() {
    let server = TestServer::start().await;
    let mut other = server.connect(430).await;
    enter_ok(&server, 430, "ghost_room", 1).await;
    other.expect("enter_room").await;
    for abort in [true, false] {
        enter_ok(&server, 431, "ghost_room", 1).await;
        other.expect("enter_room").await;
        let mut up = as_object(profile(431));
        up.extend(as_object(
            json!({"action": "up", "user_id": 431, "channel_name": "ghost_room"}),
        ));
        let (status, body) = server.action(serde_json::Value::Object(up)).await;
        assert_eq!(status, 200, "{body}");
        other.expect("up").await;
        registered_then_ended(&server, abort).await;
        // The guard undid the registration and ran the disconnect.
        let exit = other.expect("exit_room").await;
        assert_eq!(exit["user_id"], 431, "{exit}");
        assert_eq!(exit["room_seat"]["status"], 0, "the seat is freed: {exit}");
        assert!(server.node.app.connections.get(431).is_none());
        let (_, user) = server.api("GET", "/api/v1/users/431", None).await;
        assert_eq!(user["online"], false, "{user}");
    }
    server.stop().await;
}
