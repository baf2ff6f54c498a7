//! Connection abuse (issue 19, item 3): the connection caps at the upgrade.
//! A client that never reads, half-open sockets and heads that never end
//! are covered in `sessions.rs` and `isolation.rs`.

use std::net::IpAddr;

use serde_json::json;

use crate::harness::*;

fn refused(body: &serde_json::Value, reason: &str) {
    assert_eq!(body, &json!({"error_code": 1008, "error_reason": reason}));
}

/// Over `limits.max_connections` the upgrade is 503 with 1008, counted
/// under the cap's name; a closed connection frees its place.
#[tokio::test]
async fn the_node_cap_refuses_one_more_with_503_and_frees_places() {
    let server = TestServer::with(|c| c.limits.max_connections = 2).await;
    let first = server.connect(1).await;
    let _second = server.connect(2).await;

    let creds = server.credentials(3);
    let err = Client::connect(&server.ws_url(&creds), creds.clone())
        .await
        .err()
        .expect("a third connection is over the cap")
        .downcast::<tokio_tungstenite::tungstenite::Error>()
        .expect("an HTTP refusal");
    let body = assert_http_refused_with(err, 503, 1008);
    refused(
        &body,
        "this server holds as many connections as it may; retry later",
    );
    // A full node checks nothing else first: a bad signature is refused
    // the same way, without a signature check.
    let err = tokio_tungstenite::connect_async(format!("ws://{}/?sid=x", server.node.addr))
        .await
        .expect_err("over the cap");
    assert_http_refused_with(err, 503, 1008);
    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains("chorus_connections_refused_total{cap=\"max_connections\"} 2"),
        "{metrics}"
    );

    drop(first);
    assert!(
        eventually(|| async {
            let creds = server.credentials(3);
            Client::connect(&server.ws_url(&creds), creds).await.is_ok()
        })
        .await,
        "a closed connection gives its place back"
    );
    server.stop().await;
}

/// `limits.max_connections_per_ip` counts each client address apart: the
/// second socket from 127.0.0.1 is refused while 127.0.0.2 still connects.
#[tokio::test]
async fn the_address_cap_counts_each_address_apart() {
    let server = TestServer::with(|c| c.limits.max_connections_per_ip = 1).await;
    let here: IpAddr = "127.0.0.1".parse().unwrap();
    let there: IpAddr = "127.0.0.2".parse().unwrap();
    let creds = server.credentials(1);
    let mut first = Client::connect_from(here, &server.ws_url(&creds), creds)
        .await
        .expect("first from 127.0.0.1");

    let creds = server.credentials(2);
    let err = Client::connect_from(here, &server.ws_url(&creds), creds)
        .await
        .err()
        .expect("a second from the same address")
        .downcast::<tokio_tungstenite::tungstenite::Error>()
        .expect("an HTTP refusal");
    let body = assert_http_refused_with(err, 503, 1008);
    refused(&body, "too many connections from this address; retry later");

    let creds = server.credentials(2);
    let mut other = Client::connect_from(there, &server.ws_url(&creds), creds)
        .await
        .expect("another address has its own place");
    // Both admitted sessions work.
    first.ping().await;
    other.ping().await;
    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains("chorus_connections_refused_total{cap=\"max_connections_per_ip\"} 1"),
        "{metrics}"
    );
    server.stop().await;
}
