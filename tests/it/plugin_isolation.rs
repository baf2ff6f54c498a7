//! Issue 12 through the front door: clients whose plugin calls loop until
//! their deadline must not starve anyone else's pings, and a plugin that
//! keeps looping is tripped (its calls answered 2002 at once).
//!
//! The node runs on a two-worker runtime of its own, as the server
//! process on the 2-core machines the issue was seen on, and the clients
//! on another: clients sharing the node's runtime would be starved along
//! with it, stop sending, and so hide the starvation. The tests assert
//! outcomes (every pong within the heartbeat timeout, no one closed, the
//! breaker open) rather than tight latencies.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::runtime::Runtime;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::*;

/// The heartbeat timeout of these nodes: a few seconds, as in the issue.
const PING_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the bystanders ping.
const PING_EVERY: Duration = Duration::from_millis(500);
/// How often a looping client sends `fx_loop`.
const LOOP_EVERY: Duration = Duration::from_millis(50);
/// How long the looping clients keep at it.
const LOOP_FOR: Duration = Duration::from_secs(3);

/// The node's runtime: two workers, as `chorus serve` on a 2-core machine
/// (with its global queue interval).
fn node_runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .global_queue_interval(4)
        .thread_name("node")
        .enable_all()
        .build()
        .unwrap()
}

/// The clients' runtime.
fn client_runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("clients")
        .enable_all()
        .build()
        .unwrap()
}

/// A node serving the `faulty` fixture with the heartbeat, and
/// `configure` applied.
async fn faulty_node(
    configure: impl FnOnce(&mut chorus::config::Config),
) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    copy_plugins(dir.path(), &["faulty"]);
    let path = dir.path().to_path_buf();
    let server = TestServer::with(move |c| {
        c.plugins.dir = Some(path);
        c.heartbeat.ping_timeout = PING_TIMEOUT;
        configure(c);
    })
    .await;
    (server, dir)
}

/// What a bystander saw.
#[derive(Debug)]
struct Pings {
    /// Pongs received.
    pongs: u32,
    /// The slowest pong.
    slowest: Duration,
    /// Why it stopped early (a missing pong, a close), if it did.
    broke: Option<String>,
}

/// Pings every [`PING_EVERY`] for `period`, waiting at most
/// [`PING_TIMEOUT`] for each pong.
async fn ping_for(mut client: Client, period: Duration) -> Pings {
    let mut seen = Pings {
        pongs: 0,
        slowest: Duration::ZERO,
        broke: None,
    };
    let end = Instant::now() + period;
    let mut tick = tokio::time::interval(PING_EVERY);
    while Instant::now() < end {
        tick.tick().await;
        let sent = Instant::now();
        client.send("ping", json!({})).await;
        match client.recv_within(PING_TIMEOUT).await {
            Ok(frame) if frame["action"] == "pong" => {
                seen.pongs += 1;
                seen.slowest = seen.slowest.max(sent.elapsed());
            }
            Ok(frame) => {
                seen.broke = Some(format!("expected a pong, got {frame}"));
                break;
            }
            Err(e) => {
                seen.broke = Some(format!("{e:#}"));
                break;
            }
        }
    }
    seen
}

/// Sends `fx_loop` every [`LOOP_EVERY`] for [`LOOP_FOR`] without waiting
/// for the answers, then collects them; returns (sent, the `error_code` of
/// each answer).
async fn loop_for(client: Client) -> (usize, Vec<Value>) {
    let Client {
        creds,
        ws,
        online_token,
        ..
    } = client;
    let (mut sink, mut stream) = ws.split();
    // How many were sent, once the sending is over.
    let (total_tx, mut total_rx) = tokio::sync::watch::channel(None::<usize>);
    let reader = tokio::spawn(async move {
        let mut codes = Vec::new();
        loop {
            if total_rx
                .borrow_and_update()
                .is_some_and(|n| codes.len() >= n)
            {
                break;
            }
            // Answers may lag well behind the sends: the loops are what
            // gets held back here, by design.
            let next = tokio::select! {
                next = tokio::time::timeout(Duration::from_secs(10), stream.next()) => next,
                _ = total_rx.changed() => continue,
            };
            match next {
                Ok(Some(Ok(Message::Text(text)))) => {
                    let frame: Value = serde_json::from_str(&text).unwrap();
                    codes.push(frame["error_code"].clone());
                }
                Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) | Err(_) => break,
                Ok(Some(Ok(_))) => {}
            }
        }
        codes
    });
    let mut tick = tokio::time::interval(LOOP_EVERY);
    let end = Instant::now() + LOOP_FOR;
    let mut sent = 0;
    while Instant::now() < end {
        tick.tick().await;
        let mut fields = serde_json::Map::new();
        fields.insert("nonce".into(), Value::String(nonce()));
        let frame = creds
            .signed_frame("fx_loop", &online_token, now(), fields)
            .unwrap();
        sink.send(Message::Text(frame.into())).await.unwrap();
        sent += 1;
    }
    total_tx.send(Some(sent)).unwrap();
    let codes = reader.await.unwrap();
    let _ = sink.close().await;
    (sent, codes)
}

/// Starts pinging with each of `clients` for `period`, concurrently.
fn bystanders(clients: Vec<Client>, period: Duration) -> Vec<tokio::task::JoinHandle<Pings>> {
    clients
        .into_iter()
        .map(|client| tokio::spawn(ping_for(client, period)))
        .collect()
}

/// Asserts every bystander got every pong in time and nobody was closed.
async fn assert_no_one_starved(pingers: Vec<tokio::task::JoinHandle<Pings>>) {
    for (i, pinger) in pingers.into_iter().enumerate() {
        let seen = pinger.await.unwrap();
        assert!(seen.broke.is_none(), "bystander {i}: {seen:?}");
        assert!(seen.pongs >= 5, "bystander {i}: {seen:?}");
        assert!(seen.slowest < PING_TIMEOUT, "bystander {i}: {seen:?}");
        eprintln!(
            "bystander {i}: {} pongs, slowest {:?}",
            seen.pongs, seen.slowest
        );
    }
}

/// The faulty plugin's entry in `/admin/plugins`.
async fn faulty_status(server: &TestServer) -> Value {
    let (status, body) = server.admin("GET", "/admin/plugins").await;
    assert_eq!(status, 200, "{body}");
    body["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "faulty")
        .cloned()
        .unwrap_or_else(|| panic!("faulty is listed: {body}"))
}

#[test]
fn as_many_looping_clients_as_workers_starve_no_one() {
    let node = node_runtime();
    client_runtime().block_on(async {
        // The breaker off: this is about where guest code runs, not about
        // cutting the plugin off.
        let started = node.spawn(faulty_node(|c| c.plugins.breaker_threshold = 0));
        looping_clients_as_workers(started.await.unwrap()).await;
    });
}

async fn looping_clients_as_workers((server, _dir): (TestServer, tempfile::TempDir)) {
    let mut clients = Vec::new();
    for user in 0..10 {
        clients.push(server.connect(1201 + user).await);
    }
    let loopers = [server.connect(1251).await, server.connect(1252).await];
    let pingers = bystanders(clients, LOOP_FOR + Duration::from_millis(500));
    let loops: Vec<_> = loopers
        .into_iter()
        .map(|c| tokio::spawn(loop_for(c)))
        .collect();
    assert_no_one_starved(pingers).await;
    for handle in loops {
        let (sent, codes) = handle.await.unwrap();
        assert!(sent >= 20, "{sent}");
        assert!(codes.iter().all(|c| *c == 2002), "{codes:?}");
        assert!(!codes.is_empty());
    }
    let faulty = faulty_status(&server).await;
    assert_eq!(faulty["breaker"]["state"], "closed", "{faulty}");
    server.stop().await;
}

#[test]
fn a_looping_plugin_is_tripped_and_starves_no_one() {
    let node = node_runtime();
    client_runtime().block_on(async {
        let started = node.spawn(faulty_node(|_| {}));
        looping_plugin_tripped(started.await.unwrap()).await;
    });
}

async fn looping_plugin_tripped((server, _dir): (TestServer, tempfile::TempDir)) {
    let mut clients = Vec::new();
    for user in 0..10 {
        clients.push(server.connect(1301 + user).await);
    }
    let looper = server.connect(1351).await;
    let pingers = bystanders(clients, LOOP_FOR + Duration::from_millis(500));
    let (sent, codes) = loop_for(looper).await;
    assert_no_one_starved(pingers).await;
    assert!(sent >= 20, "{sent}");
    assert_eq!(codes.len(), sent, "every fx_loop was answered: {codes:?}");
    assert!(codes.iter().all(|c| *c == 2002), "{codes:?}");

    let faulty = faulty_status(&server).await;
    let breaker = &faulty["breaker"];
    assert_eq!(breaker["state"], "open", "{faulty}");
    let until = breaker["open_until_ms"].as_u64().expect("open until");
    let now_ms = now() * 1000;
    assert!(until > now_ms, "open until {until}, now {now_ms}");
    assert!(breaker["trips"].as_u64().unwrap() >= 1, "{faulty}");
    // Most calls never ran: they were answered at once.
    let refused = breaker["short_circuited"].as_u64().unwrap();
    assert!(refused as usize >= sent - 10, "{faulty}");

    // Any call of the tripped plugin is answered 2002 without running.
    let mut other = server.connect(1352).await;
    let answer = other.call("fx_ok", json!({})).await;
    assert_eq!(answer["error_code"], 2002, "{answer}");
    let after = faulty_status(&server).await;
    assert_eq!(
        after["breaker"]["short_circuited"].as_u64().unwrap(),
        refused + 1,
        "{after}"
    );
    other.ping().await;
    server.stop().await;
}

/// Issue 12's latency goal: the p99 pong round trip of paced bystanders
/// with looping clients against the same run without them (at most 2×).
/// 100 bystanders each ping every 100 ms for [`LOOP_FOR`]; the node on a
/// two-worker runtime, the clients on another, in one process. Release
/// only:
/// `cargo test --release -p chorus-tests -- --ignored --nocapture pong_latency_under_looping_clients`
#[ignore = "a measurement, not a test"]
#[test]
fn pong_latency_under_looping_clients() {
    eprintln!(
        "| looping clients | breaker | pongs | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|---|"
    );
    for (loopers, breaker) in [(0, 5), (1, 0), (2, 0), (1, 5), (0, 5)] {
        let node = node_runtime();
        client_runtime().block_on(async {
            let started = node.spawn(faulty_node(move |c| c.plugins.breaker_threshold = breaker));
            let (server, _dir) = started.await.unwrap();
            let mut rtts = paced_pings(&server, loopers).await;
            rtts.sort_unstable();
            let at = |q: f64| rtts[((rtts.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
            let breaker = if breaker == 0 { "off" } else { "on" };
            eprintln!(
                "| {loopers} | {breaker} | {} | {:.2} | {:.2} | {:.2} |",
                rtts.len(),
                at(0.5),
                at(0.99),
                at(1.0)
            );
            server.stop().await;
        });
    }
}

/// Round trips of 100 bystanders pinging every 100 ms while `loopers`
/// clients send `fx_loop` every 50 ms.
async fn paced_pings(server: &TestServer, loopers: u64) -> Vec<Duration> {
    let mut clients = Vec::new();
    for user in 0..100 {
        clients.push(server.connect(1400 + user).await);
    }
    let mut loops = Vec::new();
    for user in 0..loopers {
        loops.push(tokio::spawn(loop_for(server.connect(1500 + user).await)));
    }
    let pingers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut client)| {
            tokio::spawn(async move {
                // Staggered, so the pings do not all arrive together.
                tokio::time::sleep(Duration::from_millis(i as u64)).await;
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                let end = Instant::now() + LOOP_FOR;
                let mut rtts = Vec::new();
                while Instant::now() < end {
                    tick.tick().await;
                    let sent = Instant::now();
                    client.ping().await;
                    rtts.push(sent.elapsed());
                }
                rtts
            })
        })
        .collect();
    let mut rtts = Vec::new();
    for pinger in pingers {
        rtts.extend(pinger.await.unwrap());
    }
    for handle in loops {
        handle.await.unwrap();
    }
    rtts
}
