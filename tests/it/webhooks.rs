//! Webhooks (issue 16; README, "Webhooks"): real nodes recording events,
//! delivering them over real HTTP to the example receiver
//! (`examples/webhook-receiver`, in process), which checks every
//! signature and nonce and deduplicates by `event_id`. The Redis test
//! needs Redis (`CHORUS_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chorus::config::WebhookEndpoint;
use example_webhook_receiver::Receiver;
use serde_json::{Value, json};

use crate::harness::*;
use crate::rooms::{enter_ok, up};

/// The secret of every test endpoint.
const HOOK_SECRET: &str = "webhook-test-secret-0123456789";

/// A receiver serving on a free port.
struct Hook {
    receiver: Arc<Receiver>,
    addr: SocketAddr,
}

async fn hook() -> Hook {
    let receiver = Receiver::new(HOOK_SECRET, false);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = receiver.router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    Hook { receiver, addr }
}

/// An endpoint at `hook` with short batching and back-off, for tests.
fn endpoint(hook: &Hook) -> WebhookEndpoint {
    WebhookEndpoint {
        name: "backend".into(),
        url: format!("http://{}/hooks?app=test", hook.addr),
        secret: HOOK_SECRET.into(),
        batch_wait: Duration::from_millis(20),
        backoff_max: Duration::from_millis(500),
        ..WebhookEndpoint::default()
    }
}

/// Waits (up to `wait`) until `done` holds for the events received.
async fn received_when(hook: &Hook, wait: Duration, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + wait;
    loop {
        let events = hook.receiver.events();
        if done(&events) {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "events not all received within {wait:?}; got {}: {:#?}",
            events.len(),
            events.iter().rev().take(5).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn name(e: &Value) -> &str {
    e["event"].as_str().unwrap_or_default()
}

/// One cycle of user `user` in `room`: enter, take a seat, leave; four
/// events (`room.entered`, `seat.taken`, `seat.freed`, `room.exited`).
async fn cycle(server: &TestServer, user: u64, room: &str) {
    enter_ok(server, user, room, 77).await;
    let (status, body) = up(server, user, room, None).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .action(json!({"action": "exit_room", "user_id": user, "channel_name": room}))
        .await;
    assert_eq!(status, 200, "{body}");
}

/// Per room, in arrival order, each event's `room_seq` is one more than
/// the one before (none missing, none out of order); the events of each
/// room, counted.
fn check_rooms_in_order(events: &[Value]) -> HashMap<String, usize> {
    let mut last: HashMap<String, u64> = HashMap::new();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for e in events {
        let Some(room) = e["channel_name"].as_str() else {
            continue;
        };
        let seq = e["room_seq"].as_u64().expect("room events carry room_seq");
        if let Some(before) = last.get(room) {
            assert_eq!(seq, before + 1, "room {room}: {e} after seq {before}");
        }
        last.insert(room.to_string(), seq);
        *counts.entry(room.to_string()).or_default() += 1;
    }
    counts
}

/// A client killed in a room with a seat: once its grace passed, the
/// receiver has `seat.freed`, `room.exited` (reason `disconnect`) and
/// `session.disconnected` (reason `connection_closed`), once each, in that
/// order, after the events of its entering; the room is reported vacated
/// after `events.vacated_delay`.
#[tokio::test]
async fn a_killed_client_is_reported_out_of_its_seat_room_and_session() {
    let hook = hook().await;
    let server = TestServer::with(|c| {
        c.webhooks = vec![endpoint(&hook)];
        c.heartbeat.grace = Duration::from_millis(300);
        c.events.vacated_delay = Duration::from_millis(200);
    })
    .await;
    let client = server.connect(4101).await;
    enter_ok(&server, 4101, "wh_kill", 41).await;
    let (status, body) = up(&server, 4101, "wh_kill", Some(2)).await;
    assert_eq!(status, 200, "{body}");
    drop(client);
    let events = received_when(&hook, Duration::from_secs(20), |events| {
        events.iter().any(|e| name(e) == "room.vacated")
            && events.iter().any(|e| name(e) == "session.disconnected")
    })
    .await;
    let names: Vec<&str> = events.iter().map(name).collect();
    assert_eq!(
        names,
        [
            "session.connected",
            "room.occupied",
            "room.entered",
            "seat.taken",
            "seat.freed",
            "room.exited",
            "session.disconnected",
            "room.vacated",
        ],
        "{events:#?}"
    );
    let by_name = |n: &str| events.iter().find(|e| name(e) == n).unwrap().clone();
    let freed = by_name("seat.freed");
    assert_eq!(freed["user_id"], 4101);
    assert_eq!(freed["seat_id"], 2);
    assert_eq!(freed["channel_name"], "wh_kill");
    assert_eq!(freed["reason"], "disconnect");
    let exited = by_name("room.exited");
    assert_eq!(exited["reason"], "disconnect");
    assert_eq!(exited["user_id"], 4101);
    assert_eq!(
        by_name("session.disconnected")["reason"],
        "connection_closed"
    );
    assert_eq!(by_name("room.entered")["room_id"], 41);
    for e in &events {
        assert_eq!(e["event_id"].as_str().unwrap().len(), 32, "{e}");
        assert_eq!(e["node"], server.node.app.node_id.as_str());
        assert!(e["ts_ms"].as_u64().unwrap() > 1_700_000_000_000, "{e}");
    }
    let counts = check_rooms_in_order(&events);
    assert_eq!(counts["wh_kill"], 6);
    // The receiver stores a batch before it answers, so the sender counts
    // it a moment after the events arrived.
    assert!(
        eventually(|| async {
            let (status, body) = server.admin("GET", "/admin/webhooks").await;
            status == 200 && body["endpoints"][0]["sent"] == 8
        })
        .await
    );
    let (_, body) = server.admin("GET", "/admin/webhooks").await;
    let endpoint = &body["endpoints"][0];
    assert_eq!(endpoint["name"], "backend");
    assert_eq!(endpoint["failed"], 0, "{body}");
    assert_eq!(endpoint["last_error"], Value::Null, "{body}");
    // The recorder is one per process, shared by the tests running
    // beside this one: the series exist; their counts are the admin's.
    let metrics = server.metrics_text().await;
    for series in ["sent_total", "lag_seconds", "queue_depth"] {
        let line = format!("chorus_webhook_{series}{{endpoint=\"backend\"}}");
        assert!(metrics.contains(&line), "{line} missing");
    }
    server.stop().await;
}

/// The receiver answers 503 for ten seconds while 300 actions run, then
/// comes back: every event arrives, each room's in order with no gap.
#[tokio::test]
async fn events_recorded_while_the_receiver_is_down_all_arrive_in_order() {
    let hook = hook().await;
    let server = TestServer::with(|c| c.webhooks = vec![endpoint(&hook)]).await;
    let rooms = ["wh_down_a", "wh_down_b", "wh_down_c"];
    // A member who stays, so no room empties (no occupied/vacated churn).
    for (i, room) in rooms.iter().enumerate() {
        enter_ok(&server, 4200 + i as u64, room, 42).await;
    }
    hook.receiver.set_down(true);
    let down_since = Instant::now();
    for i in 0..100u64 {
        cycle(&server, 4210 + i % 20, rooms[(i % 3) as usize]).await;
    }
    if let Some(left) = Duration::from_secs(10).checked_sub(down_since.elapsed()) {
        tokio::time::sleep(left).await;
    }
    let (_, body) = server.admin("GET", "/admin/webhooks").await;
    assert_eq!(body["endpoints"][0]["state"], "retrying", "{body}");
    assert!(
        body["endpoints"][0]["last_error"]["error"]
            .as_str()
            .unwrap()
            .contains("503")
    );
    hook.receiver.set_down(false);
    // Per room: occupied + the stayer's entered + 4 per cycle.
    let expected = 3 * 2 + 100 * 4;
    let events = received_when(&hook, Duration::from_secs(60), |e| e.len() >= expected).await;
    assert_eq!(events.len(), expected);
    let counts = check_rooms_in_order(&events);
    assert_eq!(counts["wh_down_a"], 2 + 34 * 4);
    assert_eq!(counts["wh_down_b"], 2 + 33 * 4);
    assert_eq!(counts["wh_down_c"], 2 + 33 * 4);
    server.stop().await;
}

/// A node stopped with undelivered events (the receiver down) and
/// started again on the same data folder delivers them all.
#[tokio::test]
async fn a_restarted_node_delivers_what_it_had_not() {
    let hook = hook().await;
    hook.receiver.set_down(true);
    let data = std::env::temp_dir().join("chorus-test-data").join(nonce());
    let configure = |c: &mut chorus::Config| {
        c.webhooks = vec![endpoint(&hook)];
        c.server.data_dir = Some(data.clone());
    };
    let first = TestServer::with(configure).await;
    enter_ok(&first, 4300, "wh_restart", 43).await;
    for i in 0..10 {
        cycle(&first, 4301 + i, "wh_restart").await;
    }
    first.stop().await;
    hook.receiver.set_down(false);
    let second = TestServer::with(configure).await;
    // 4300 (in the room through the server API, no session) was still in
    // the room when the first run's state ended with it: the next start
    // reports it leaving, numbered from the new run.
    let expected = 2 + 10 * 4 + 1;
    let events = received_when(&hook, Duration::from_secs(30), |e| e.len() >= expected).await;
    assert_eq!(events.len(), expected);
    let last = events.last().unwrap();
    assert_eq!(
        (name(last), &last["user_id"]),
        ("room.exited", &json!(4300))
    );
    assert_eq!(
        check_rooms_in_order(&events[..expected - 1])["wh_restart"],
        expected - 1
    );
    check_rooms_in_order_allowing_jumps(&events);
    second.stop().await;
}

/// Two nodes on Redis: the first delivers for the endpoint; it dies (as
/// by SIGKILL) with events it recorded and never delivered (the receiver
/// down); the survivor takes the endpoint over and delivers them all.
#[tokio::test]
async fn a_survivor_delivers_what_a_dead_node_had_not() {
    let hook = hook().await;
    hook.receiver.set_down(true);
    let url = redis_url();
    let prefix = format!("chorus-test:webhooks:{}:", nonce());
    let hook_endpoint = endpoint(&hook);
    let first =
        crate::cluster::node_on(&url, &prefix, |c| c.webhooks = vec![hook_endpoint.clone()]).await;
    // The first node holds the endpoint's lease before the second starts.
    assert!(
        eventually(|| async {
            let (_, body) = first.admin("GET", "/admin/webhooks").await;
            body["endpoints"][0]["state"] != "standby"
        })
        .await
    );
    let hook_endpoint2 = endpoint(&hook);
    let second =
        crate::cluster::node_on(&url, &prefix, |c| c.webhooks = vec![hook_endpoint2]).await;
    enter_ok(&first, 4400, "wh_failover", 44).await;
    for i in 0..10 {
        cycle(&first, 4401 + i, "wh_failover").await;
    }
    assert!(
        eventually(|| async {
            let (_, body) = second.admin("GET", "/admin/webhooks").await;
            body["endpoints"][0]["state"] == "standby"
        })
        .await,
        "the second node waits while the first holds the endpoint"
    );
    first.node.kill_for_tests().await;
    hook.receiver.set_down(false);
    let expected = 2 + 10 * 4;
    let events = received_when(&hook, Duration::from_secs(30), |e| e.len() >= expected).await;
    assert_eq!(events.len(), expected);
    assert_eq!(check_rooms_in_order(&events)["wh_failover"], expected);
    assert!(events.iter().all(|e| e["room_seq"].as_u64().unwrap() >= 1));
    second.stop().await;
}

/// The example receiver refuses a bad signature (401) and a replayed
/// request (409), and keeps an event once however often it comes.
#[tokio::test]
async fn the_example_receiver_refuses_bad_signatures_and_replays() {
    let hook = hook().await;
    let http = reqwest::Client::new();
    let url = format!("http://{}/hooks?app=test", hook.addr);
    let body = r#"[{"event_id":"00000000000000000000000000000001","event":"room.entered"}]"#;
    let send = |secret: &'static str, nonce: String, signed: &'static str, sent: &'static str| {
        let ts = now().to_string();
        let headers = chorus_protocol::server_api::signed_headers(
            secret.as_bytes(),
            &ts,
            &nonce,
            "POST",
            "/hooks?app=test",
            signed.as_bytes(),
        );
        let mut request = http.post(&url).body(sent);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let first = nonce();
    assert_eq!(send(HOOK_SECRET, first.clone(), body, body).await, 200);
    assert_eq!(
        send(HOOK_SECRET, first, body, body).await,
        409,
        "a replayed nonce"
    );
    assert_eq!(
        send("another-secret-0123456789", nonce(), body, body).await,
        401
    );
    let tampered = r#"[{"event_id":"00000000000000000000000000000002","event":"room.entered"}]"#;
    assert_eq!(send(HOOK_SECRET, nonce(), body, tampered).await, 401);
    assert_eq!(send(HOOK_SECRET, nonce(), body, body).await, 200, "a retry");
    assert_eq!(hook.receiver.events().len(), 1, "deduplicated by event_id");
    let unsigned = http.post(&url).body(body).send().await.unwrap();
    assert_eq!(unsigned.status().as_u16(), 401);
}

/// An endpoint that answers only after 30 s (past its timeout): actions
/// keep completing promptly (the p99 comparison is in BENCHMARKS.md).
#[tokio::test]
async fn a_slow_endpoint_does_not_slow_actions() {
    let hook = hook().await;
    hook.receiver.set_delay(Duration::from_secs(30));
    let server = TestServer::with(|c| c.webhooks = vec![endpoint(&hook)]).await;
    enter_ok(&server, 4500, "wh_slow", 45).await;
    let started = Instant::now();
    for i in 0..30 {
        let one = Instant::now();
        cycle(&server, 4501 + i, "wh_slow").await;
        assert!(
            one.elapsed() < Duration::from_secs(3),
            "cycle {i} took {:?}",
            one.elapsed()
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let (_, body) = server.admin("GET", "/admin/webhooks").await;
    assert!(
        body["endpoints"][0]["queue_depth"].as_u64().is_some(),
        "{body}"
    );
    server.stop().await;
}

/// Replay: after everything was delivered, `POST
/// /admin/webhooks/{name}/replay?since=` sends it again (the receiver
/// sees the same event ids, so it keeps no duplicates); an unknown
/// endpoint is 404 and a missing `since` 400.
#[tokio::test]
async fn replay_sends_again_from_a_point_in_time() {
    let hook = hook().await;
    let server = TestServer::with(|c| c.webhooks = vec![endpoint(&hook)]).await;
    enter_ok(&server, 4600, "wh_replay", 46).await;
    received_when(&hook, Duration::from_secs(10), |e| e.len() >= 2).await;
    let accepted = hook.receiver.accepted();
    let (status, body) = server
        .admin("POST", "/admin/webhooks/backend/replay?since=0")
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body, json!({"name": "backend", "since": 0}));
    assert!(eventually(|| async { hook.receiver.accepted() > accepted }).await);
    assert_eq!(hook.receiver.events().len(), 2);
    let (status, _) = server
        .admin("POST", "/admin/webhooks/nobody/replay?since=0")
        .await;
    assert_eq!(status, 404);
    let (status, _) = server.admin("POST", "/admin/webhooks/backend/replay").await;
    assert_eq!(status, 400);
    // Review: a `since` in the future moved the endpoint past everything
    // not yet delivered; refused, and a later event still arrives.
    let future = (now() + 3600) * 1000;
    let (status, body) = server
        .admin(
            "POST",
            &format!("/admin/webhooks/backend/replay?since={future}"),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = server
        .action(json!({"action": "exit_room", "user_id": 4600, "channel_name": "wh_replay"}))
        .await;
    assert_eq!(status, 200, "{body}");
    received_when(&hook, Duration::from_secs(10), |e| {
        e.iter().any(|e| name(e) == "room.exited")
    })
    .await;
    server.stop().await;
}

/// The p50 and p99 of `samples`, in ms.
fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    (
        at(0.50).as_secs_f64() * 1000.0,
        at(0.99).as_secs_f64() * 1000.0,
    )
}

/// Action latency through the server API, one at a time: `rounds` of
/// `up` then `down` (one event each), and `rounds` `send_gift` (none).
async fn action_latency(server: &TestServer, rounds: usize) -> ((f64, f64), (f64, f64)) {
    enter_ok(server, 4900, "wh_bench", 49).await;
    enter_ok(server, 4901, "wh_bench", 49).await;
    let mut seats = Vec::new();
    let mut gifts = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        let (status, body) = up(server, 4900, "wh_bench", None).await;
        assert_eq!(status, 200, "{body}");
        seats.push(t.elapsed());
        let t = Instant::now();
        let (status, body) = server
            .action(json!({"action": "down", "user_id": 4900, "channel_name": "wh_bench"}))
            .await;
        assert_eq!(status, 200, "{body}");
        seats.push(t.elapsed());
        let t = Instant::now();
        let (status, body) = server
            .action(
                json!({"action": "send_gift", "channel_name": "wh_bench", "notify_type": "bc",
                           "gift": crate::rooms::gift(4900, 4901, 1)}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        gifts.push(t.elapsed());
    }
    (percentiles(seats), percentiles(gifts))
}

/// `tasks` users at once, each in a room of its own, each doing `rounds`
/// of `up` then `down`: the p50 and p99 of every action (ms) and the
/// actions per second of all of them together.
async fn concurrent_latency(server: &TestServer, tasks: u64, rounds: usize) -> (f64, f64, f64) {
    let server = Arc::new(server);
    let started = Instant::now();
    let runs = (0..tasks).map(|k| {
        let server = Arc::clone(&server);
        async move {
            let (user, room) = (4950 + k, format!("wh_bench_{k}"));
            enter_ok(&server, user, &room, 50).await;
            let mut samples = Vec::new();
            for _ in 0..rounds {
                let t = Instant::now();
                assert_eq!(up(&server, user, &room, None).await.0, 200);
                samples.push(t.elapsed());
                let t = Instant::now();
                let down = json!({"action": "down", "user_id": user, "channel_name": room});
                assert_eq!(server.action(down).await.0, 200);
                samples.push(t.elapsed());
            }
            samples
        }
    });
    let samples: Vec<Duration> = futures_util::future::join_all(runs)
        .await
        .into_iter()
        .flatten()
        .collect();
    let rate = samples.len() as f64 / started.elapsed().as_secs_f64();
    let (p50, p99) = percentiles(samples);
    (p50, p99, rate)
}

/// BENCHMARKS.md, "Webhooks": delivery throughput of one node to one
/// endpoint, and the latency webhooks add to actions. Run with
/// `cargo test -p chorus-tests --test it webhooks::bench -- --ignored --nocapture`
/// (add `--release` for release figures).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn bench() {
    for batch_max in [20, 100] {
        let hook = hook().await;
        hook.receiver.set_down(true);
        let server = TestServer::with(|c| {
            let mut e = endpoint(&hook);
            e.batch_max = batch_max;
            e.batch_wait = Duration::from_millis(250);
            c.webhooks = vec![e];
        })
        .await;
        let hooks = server.node.app.webhooks.clone().unwrap();
        let total = 20_000;
        for chunk in 0..total / 100 {
            let events: Vec<_> = (0..100)
                .map(|i| {
                    let mut e = hooks.event("room.entered");
                    e.user_id = Some(chunk * 100 + i);
                    e
                })
                .collect();
            hooks.record(&events).await.unwrap();
        }
        let t = Instant::now();
        hook.receiver.set_down(false);
        received_when(&hook, Duration::from_secs(600), |e| {
            e.len() >= total as usize
        })
        .await;
        let secs = t.elapsed().as_secs_f64();
        println!(
            "throughput batch_max={batch_max}: {total} events in {secs:.2} s = {:.0} events/s",
            total as f64 / secs
        );
        server.stop().await;
    }
    let rounds = 500;
    let off = TestServer::start().await;
    let (seat_off, gift_off) = action_latency(&off, rounds).await;
    off.stop().await;
    let hook = hook().await;
    let on = TestServer::with(|c| c.webhooks = vec![endpoint(&hook)]).await;
    let (seat_on, gift_on) = action_latency(&on, rounds).await;
    on.stop().await;
    let memory = TestServer::with(|c| {
        c.webhooks = vec![endpoint(&hook)];
        c.events.outbox = chorus::config::OutboxKind::Memory;
    })
    .await;
    let (seat_mem, gift_mem) = action_latency(&memory, rounds).await;
    memory.stop().await;
    let slow_hook = self::hook().await;
    slow_hook.receiver.set_delay(Duration::from_secs(30));
    let slow = TestServer::with(|c| c.webhooks = vec![endpoint(&slow_hook)]).await;
    let (seat_slow, gift_slow) = action_latency(&slow, rounds).await;
    slow.stop().await;
    let tasks = 8;
    let off = TestServer::start().await;
    let concurrent_off = concurrent_latency(&off, tasks, 100).await;
    off.stop().await;
    let on = TestServer::with(|c| c.webhooks = vec![endpoint(&hook)]).await;
    let concurrent_on = concurrent_latency(&on, tasks, 100).await;
    on.stop().await;
    for (label, (p50, p99, rate)) in [
        ("webhooks off", concurrent_off),
        ("disk outbox", concurrent_on),
    ] {
        println!(
            "{tasks} at once, up/down: {label}: p50 {p50:.2} ms, p99 {p99:.2} ms, {rate:.0} actions/s"
        );
    }
    println!("p50/p99 ms, {rounds} x up+down (1 event each) and {rounds} x send_gift (none):");
    for (label, seat, gift) in [
        ("webhooks off", seat_off, gift_off),
        ("disk outbox, receiver up", seat_on, gift_on),
        ("memory outbox, receiver up", seat_mem, gift_mem),
        (
            "disk outbox, endpoint answering in 30 s",
            seat_slow,
            gift_slow,
        ),
    ] {
        println!(
            "{label}: up/down {:.2}/{:.2}  send_gift {:.2}/{:.2}",
            seat.0, seat.1, gift.0, gift.1
        );
    }
}

/// Both stores report the same facts for the same batches (the events
/// follow the state whichever store holds it), numbered per room without
/// gaps; a refused batch reports nothing.
#[tokio::test]
async fn both_stores_report_the_same_facts() {
    use chorus::store::memory::MemoryStore;
    use chorus::store::redis::RedisStore;
    use chorus::store::{ApplyError, StateChange, Store};
    let join = |user: u64, channel: &str| StateChange::JoinRoom {
        user_id: user,
        channel_name: channel.into(),
        room_id: 5,
    };
    let seat = |user: u64, seat_id: u32| StateChange::TakeSeat {
        channel_name: "f1".into(),
        seat_id,
        user_id: user,
    };
    let batches = vec![
        vec![join(1, "f1")],
        vec![join(2, "f1"), seat(1, 3)],
        vec![seat(1, 4)],
        vec![StateChange::StartCall {
            user_id: 1,
            receiver_id: 2,
            channel_name: "f1".into(),
        }],
        vec![join(1, "f2")],
        vec![StateChange::EndCall { user_id: 2 }],
        vec![StateChange::LeaveRoom {
            user_id: 2,
            channel_name: "f1".into(),
        }],
    ];
    let prefix = format!("chorus-test:facts:{}:", nonce());
    let redis = RedisStore::connect(&redis_url(), &prefix, 9)
        .await
        .expect("redis");
    let memory = MemoryStore::new(9);
    let mut reported = Vec::new();
    for store in [&memory as &dyn Store, &redis as &dyn Store] {
        let mut facts = Vec::new();
        for batch in &batches {
            facts.extend(store.apply_reported(batch, &[]).await.unwrap().facts);
        }
        let refused = store
            .apply_reported(
                &[StateChange::FreeSeat {
                    channel_name: "f2".into(),
                    user_id: 1,
                }],
                &[],
            )
            .await;
        assert!(
            matches!(refused, Err(ApplyError::NotAllowed(_))),
            "{refused:?}"
        );
        let mut last: HashMap<String, u64> = HashMap::new();
        for f in &facts {
            if let Some(before) = last.get(&f.channel_name) {
                assert_eq!(f.room_seq, before + 1, "{f:?}");
            }
            last.insert(f.channel_name.clone(), f.room_seq);
        }
        // Numbers start at the time in ms times 1000 (never lower after a
        // restart or a swept counter).
        let started_ms = facts[0].room_seq / 1000;
        assert!(
            started_ms + 60_000 > now() * 1000 && started_ms <= now() * 1000 + 1000,
            "{}",
            facts[0].room_seq
        );
        let shape: Vec<String> = facts
            .iter()
            .map(|f| {
                format!(
                    "{:?} {} {:?} {:?} {:?} {:?}",
                    f.kind, f.channel_name, f.user_id, f.seat_id, f.peer_id, f.room_id
                )
            })
            .collect();
        reported.push(shape);
    }
    // Redis keeps a room's counter a day after its last fact, not for ever.
    let mut conn = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("{prefix}roomseq:f1"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 23 * 3600 * 1000 && ttl <= 24 * 3600 * 1000, "{ttl}");
    assert_eq!(reported[0], reported[1]);
    assert_eq!(
        reported[0],
        [
            "Occupied f1 None None None Some(5)",
            "Entered f1 Some(1) None None Some(5)",
            "Entered f1 Some(2) None None Some(5)",
            "SeatTaken f1 Some(1) Some(3) None None",
            "SeatFreed f1 Some(1) Some(3) None None",
            "SeatTaken f1 Some(1) Some(4) None None",
            "CallStarted f1 Some(1) None Some(2) None",
            "SeatFreed f1 Some(1) Some(4) None None",
            "Exited f1 Some(1) None None None",
            "Occupied f2 None None None Some(5)",
            "Entered f2 Some(1) None None Some(5)",
            "CallEnded f1 Some(2) None Some(1) None",
            "Exited f1 Some(2) None None None",
            "Vacated f1 None None None None",
        ]
    );
}

/// A kick through the server API: `room.exited` and `seat.freed` say
/// `kick`, `session.disconnected` says `kicked`, with no grace.
#[tokio::test]
async fn a_kicked_user_is_reported_with_reason_kick() {
    let hook = hook().await;
    let server = TestServer::with(|c| {
        c.webhooks = vec![endpoint(&hook)];
        c.heartbeat.grace = Duration::from_secs(60);
    })
    .await;
    let mut client = server.connect(4701).await;
    enter_ok(&server, 4701, "wh_kick", 47).await;
    let (status, body) = up(&server, 4701, "wh_kick", Some(1)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .api(
            "POST",
            "/api/v1/users/4701/kick",
            Some(json!({"reason": "bye"})),
        )
        .await;
    assert_eq!(
        (status, body["kicked"].clone()),
        (200, json!(true)),
        "{body}"
    );
    assert_eq!(client.expect_close().await, 4010);
    let events = received_when(&hook, Duration::from_secs(20), |e| {
        e.iter().any(|e| name(e) == "session.disconnected")
    })
    .await;
    let tail: Vec<(&str, &str)> = events
        .iter()
        .skip_while(|e| name(e) != "seat.freed")
        .filter(|e| name(e) != "room.vacated")
        .map(|e| (name(e), e["reason"].as_str().unwrap_or_default()))
        .collect();
    assert_eq!(
        tail,
        [
            ("seat.freed", "kick"),
            ("room.exited", "kick"),
            ("session.disconnected", "kicked")
        ],
        "{events:#?}"
    );
    server.stop().await;
}

/// Two nodes on Redis: a room emptied through one node and entered again
/// through the other within `events.vacated_delay` is neither vacated nor
/// occupied again; emptied for good, it is vacated once. The events,
/// written by the batch's own script, carry the same fields as one
/// node's.
#[tokio::test]
async fn a_quick_return_through_another_node_does_not_flap() {
    let hook = hook().await;
    let url = redis_url();
    let prefix = format!("chorus-test:webhooks:{}:", nonce());
    let configure = |c: &mut chorus::Config| {
        c.webhooks = vec![endpoint(&hook)];
        c.events.vacated_delay = Duration::from_millis(1500);
    };
    let a = crate::cluster::node_on(&url, &prefix, configure).await;
    let b = crate::cluster::node_on(&url, &prefix, configure).await;
    enter_ok(&a, 4800, "wh_flap", 48).await;
    let exit = json!({"action": "exit_room", "user_id": 4800, "channel_name": "wh_flap"});
    assert_eq!(a.action(exit.clone()).await.0, 200);
    enter_ok(&b, 4800, "wh_flap", 48).await;
    assert_eq!(b.action(exit).await.0, 200);
    let events = received_when(&hook, Duration::from_secs(20), |e| {
        e.iter().any(|e| name(e) == "room.vacated")
    })
    .await;
    let mut sorted = events.clone();
    sorted.sort_by_key(|e| e["room_seq"].as_u64());
    let names: Vec<&str> = sorted.iter().map(name).collect();
    assert_eq!(
        names,
        [
            "room.occupied",
            "room.entered",
            "room.exited",
            "room.entered",
            "room.exited",
            "room.vacated"
        ],
        "{events:#?}"
    );
    let entered = &sorted[1];
    assert_eq!(entered["user_id"], 4800);
    assert_eq!(entered["room_id"], 48);
    assert_eq!(entered["event_id"].as_str().unwrap().len(), 32);
    assert_eq!(sorted[2]["reason"], "action");
    a.stop().await;
    b.stop().await;
}

/// Events older than the endpoint's `max_age` are dropped undelivered and
/// counted; later ones still arrive.
#[tokio::test]
async fn events_past_max_age_are_dropped_and_counted() {
    let hook = hook().await;
    hook.receiver.set_down(true);
    let server = TestServer::with(|c| {
        let mut e = endpoint(&hook);
        e.max_age = Duration::from_millis(800);
        c.webhooks = vec![e];
    })
    .await;
    enter_ok(&server, 4990, "wh_age", 49).await;
    // Past max_age while the receiver refuses them.
    assert!(
        eventually(|| async {
            let (_, body) = server.admin("GET", "/admin/webhooks").await;
            body["endpoints"][0]["dropped"] == 2
        })
        .await
    );
    hook.receiver.set_down(false);
    enter_ok(&server, 4991, "wh_age", 49).await;
    let events = received_when(&hook, Duration::from_secs(10), |e| !e.is_empty()).await;
    let names: Vec<&str> = events.iter().map(name).collect();
    assert_eq!(names, ["room.entered"], "{events:#?}");
    assert_eq!(events[0]["user_id"], 4991);
    server.stop().await;
}

/// A call started and hung up through the server API: `call.started`
/// (with `receiver_id`) and `call.ended` (with `peer_id`, reason
/// `action`), numbered in the call's room.
#[tokio::test]
async fn a_call_is_reported_started_and_ended() {
    let hook = hook().await;
    let server = TestServer::with(|c| c.webhooks = vec![endpoint(&hook)]).await;
    let _a = server.connect(4981).await;
    let _b = server.connect(4982).await;
    enter_ok(&server, 4981, "wh_call", 48).await;
    enter_ok(&server, 4982, "wh_call", 48).await;
    let call = json!({"action": "call_start", "user_id": 4981, "receiver_id": 4982, "channel_name": "wh_call"});
    assert_eq!(server.action(call).await.0, 200);
    let hang = json!({"action": "hang_up", "user_id": 4981, "receiver_id": 4982, "channel_name": "wh_call"});
    assert_eq!(server.action(hang).await.0, 200);
    let events = received_when(&hook, Duration::from_secs(10), |e| {
        e.iter().any(|e| name(e) == "call.ended")
    })
    .await;
    let started = events.iter().find(|e| name(e) == "call.started").unwrap();
    assert_eq!(started["user_id"], 4981);
    assert_eq!(started["receiver_id"], 4982);
    assert_eq!(started["channel_name"], "wh_call");
    let ended = events.iter().find(|e| name(e) == "call.ended").unwrap();
    assert_eq!(ended["peer_id"], 4982);
    assert_eq!(ended["reason"], "action");
    assert_eq!(
        ended["room_seq"].as_u64().unwrap(),
        started["room_seq"].as_u64().unwrap() + 1
    );
    server.stop().await;
}

/// Contract 1.2 `emit` reaches the app backend: the bundled gift plugin
/// emits `gift.sent`, recorded before the action is answered and delivered
/// as `plugin.gift.gift.sent` with the action's sender and room and the
/// plugin's body under `data`, once; a refused gift emits nothing.
#[tokio::test]
async fn an_event_a_plugin_emits_reaches_the_app_backend() {
    let hook = hook().await;
    let server = TestServer::with(|c| c.webhooks = vec![endpoint(&hook)]).await;
    enter_ok(&server, 4991, "wh_emit", 49).await;
    enter_ok(&server, 4992, "wh_emit", 49).await;
    let gift = |num: i64| {
        json!({"action": "send_gift", "channel_name": "wh_emit", "notify_type": "bc",
            "gift": {"id": 3, "sender_id": 4991, "receiver_id": 4992, "num": num, "name": "rose"}})
    };
    let (status, body) = server.action(gift(0)).await;
    assert_eq!(status, 422, "a gift of 0 is refused: {body}");
    let (status, body) = server.action(gift(2)).await;
    assert_eq!(status, 200, "{body}");
    let events = received_when(&hook, Duration::from_secs(10), |e| {
        e.iter().any(|e| name(e) == "plugin.gift.gift.sent")
    })
    .await;
    let sent: Vec<&Value> = events
        .iter()
        .filter(|e| name(e) == "plugin.gift.gift.sent")
        .collect();
    assert_eq!(sent.len(), 1, "{sent:#?}");
    let sent = sent[0];
    assert_eq!(sent["user_id"], 4991, "{sent}");
    assert_eq!(sent["channel_name"], "wh_emit", "{sent}");
    assert_eq!(sent["data"]["num"], 2, "{sent}");
    assert_eq!(sent["data"]["gift_id"], 3, "{sent}");
    assert_eq!(sent["data"]["receiver_id"], 4992, "{sent}");
    assert!(
        sent["event_id"].is_string() && sent["ts_ms"].is_u64(),
        "{sent}"
    );
    server.stop().await;
}

/// Review of issue 16: a graceful stop of a single node (a deploy) ends
/// its room state with the process; its connected users are taken through
/// the disconnect flow first, so the app backend hears them leave their
/// seat and room (`session.disconnected` reason `server_shutdown`), the
/// events recorded before the process ends and delivered after the
/// restart.
#[tokio::test]
async fn a_deploy_of_a_single_node_reports_its_users_leaving() {
    let hook = hook().await;
    hook.receiver.set_down(true);
    let data = std::env::temp_dir().join("chorus-test-data").join(nonce());
    let configure = |c: &mut chorus::Config| {
        c.webhooks = vec![endpoint(&hook)];
        c.server.data_dir = Some(data.clone());
    };
    let first = TestServer::with(configure).await;
    let _client = first.connect(4700).await;
    enter_ok(&first, 4700, "wh_deploy", 47).await;
    let (status, body) = up(&first, 4700, "wh_deploy", None).await;
    assert_eq!(status, 200, "{body}");
    first.stop().await;
    hook.receiver.set_down(false);
    let second = TestServer::with(configure).await;
    let events = received_when(&hook, Duration::from_secs(30), |e| {
        e.iter().any(|e| name(e) == "session.disconnected")
    })
    .await;
    let names: Vec<&str> = events
        .iter()
        .filter(|e| e["user_id"] == 4700)
        .map(name)
        .collect();
    assert_eq!(
        names,
        [
            "session.connected",
            "room.entered",
            "seat.taken",
            "seat.freed",
            "room.exited",
            "session.disconnected"
        ],
        "{events:#?}"
    );
    let exited = events.iter().find(|e| name(e) == "room.exited").unwrap();
    assert_eq!(exited["reason"], "disconnect");
    let gone = events
        .iter()
        .find(|e| name(e) == "session.disconnected")
        .unwrap();
    assert_eq!(gone["reason"], "server_shutdown");
    check_rooms_in_order(&events);
    second.stop().await;
}

/// Review of issue 16: a single node killed (no graceful stop) never
/// recorded its users' exits; the disk outbox remembers who its events
/// left where, and the next start reports them: the seat freed, the call
/// ended, the room left (reason `disconnect`), the session gone (reason
/// `server_lost`), numbered after the lost run's events of the room.
#[tokio::test]
async fn a_killed_single_node_reports_its_users_leaving_at_the_next_start() {
    let hook = hook().await;
    hook.receiver.set_down(true);
    let data = std::env::temp_dir().join("chorus-test-data").join(nonce());
    let configure = |c: &mut chorus::Config| {
        c.webhooks = vec![endpoint(&hook)];
        c.server.data_dir = Some(data.clone());
    };
    let first = TestServer::with(configure).await;
    let _a = first.connect(4801).await;
    let _b = first.connect(4802).await;
    enter_ok(&first, 4801, "wh_lost", 48).await;
    enter_ok(&first, 4802, "wh_lost", 48).await;
    let (status, body) = up(&first, 4801, "wh_lost", None).await;
    assert_eq!(status, 200, "{body}");
    let call = json!({"action": "call_start", "user_id": 4801, "receiver_id": 4802, "channel_name": "wh_lost"});
    assert_eq!(first.action(call).await.0, 200);
    // Left by a graceful exit before the kill: not reported twice.
    let (status, body) = first
        .action(json!({"action": "exit_room", "user_id": 4802, "channel_name": "wh_lost"}))
        .await;
    assert_eq!(status, 200, "{body}");
    first.node.kill_for_tests().await;
    hook.receiver.set_down(false);
    let second = TestServer::with(configure).await;
    let events = received_when(&hook, Duration::from_secs(30), |e| {
        e.iter()
            .filter(|e| name(e) == "session.disconnected")
            .count()
            >= 2
    })
    .await;
    let after_kill: Vec<String> = events
        .iter()
        .skip_while(|e| !(name(e) == "room.exited" && e["user_id"] == 4802))
        .skip(1)
        .map(|e| format!("{} {}", name(e), e["user_id"]))
        .collect();
    assert_eq!(
        after_kill,
        [
            "seat.freed 4801",
            "call.ended 4801",
            "room.exited 4801",
            "session.disconnected 4801",
            "session.disconnected 4802"
        ],
        "{events:#?}"
    );
    let lost = events
        .iter()
        .filter(|e| name(e) == "session.disconnected")
        .all(|e| e["reason"] == "server_lost");
    assert!(lost, "{events:#?}");
    let ended = events.iter().find(|e| name(e) == "call.ended").unwrap();
    assert_eq!(ended["peer_id"], 4802);
    check_rooms_in_order_allowing_jumps(&events);
    // Nothing is owed any more: a graceful restart reports nothing new.
    let count = hook.receiver.events().len();
    second.stop().await;
    let third = TestServer::with(configure).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(hook.receiver.events().len(), count);
    third.stop().await;
}

/// Per room, in arrival order, `room_seq` only grows (a new run of a
/// node numbers from a higher point).
fn check_rooms_in_order_allowing_jumps(events: &[Value]) {
    let mut last: HashMap<String, u64> = HashMap::new();
    for e in events {
        let Some(room) = e["channel_name"].as_str() else {
            continue;
        };
        let seq = e["room_seq"].as_u64().expect("room events carry room_seq");
        if let Some(before) = last.get(room) {
            assert!(seq > *before, "room {room}: {e} after seq {before}");
        }
        last.insert(room.to_string(), seq);
    }
}

/// Review of issue 16: a client that drops, comes back and drops again
/// within `heartbeat.grace` is disconnected once (one `session.disconnected`),
/// and not before a whole grace after its last drop: the first drop's
/// timer no longer fires on the second session's behalf.
#[tokio::test]
async fn a_client_dropping_twice_within_the_grace_is_disconnected_once() {
    let hook = hook().await;
    let grace = Duration::from_millis(1500);
    let server = TestServer::with(|c| {
        c.webhooks = vec![endpoint(&hook)];
        c.heartbeat.grace = grace;
    })
    .await;
    let first = server.connect(4901).await;
    enter_ok(&server, 4901, "wh_flap", 49).await;
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = server.connect(4901).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(second);
    let dropped_last = Instant::now();
    let events = received_when(&hook, Duration::from_secs(20), |e| {
        e.iter().any(|e| name(e) == "session.disconnected")
    })
    .await;
    // A whole grace after the last drop (the first drop's timer, due
    // 400 ms earlier, gave way to it).
    assert!(
        dropped_last.elapsed() >= grace,
        "{:?}",
        dropped_last.elapsed()
    );
    let exited = events.iter().filter(|e| name(e) == "room.exited").count();
    assert_eq!(exited, 1, "{events:#?}");
    // Another grace: no second disconnect arrives.
    tokio::time::sleep(grace + Duration::from_millis(500)).await;
    let gone = hook
        .receiver
        .events()
        .iter()
        .filter(|e| name(e) == "session.disconnected")
        .count();
    assert_eq!(gone, 1);
    server.stop().await;
}
