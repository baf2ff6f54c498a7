//! The holes of issue 21, each as a front-door test: replay windows from
//! the request's own timestamp, revocation that lasts, bounds on what a
//! client or caller can send, and refusals at start. Tests that need two
//! nodes are in `cluster.rs`. `SECURITY.md` names each test with the
//! guarantee it proves.

use std::time::Duration;

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
