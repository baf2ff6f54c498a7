//! Plugin rollout through the front door (issue 18): kept versions and
//! activation under load, pause, canary by room, automatic rollback,
//! shadow runs and the allow-list.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use chorus::config::{Config, PluginObjectives};
use serde_json::{Value, json};

use crate::harness::*;
use crate::rooms::enter_ok;

/// Writes `bytes` to `dir/name` through a rename, as operators should.
fn install(dir: &Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

fn artifact(name: &str) -> Vec<u8> {
    std::fs::read(artifacts().join(format!("{name}.wasm"))).unwrap()
}

/// A plugin call's deadline in these tests: they count failed calls under
/// load, and on a starved machine the default 50 ms can pass for a call
/// that is merely waiting for a core.
const GENEROUS_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A node over a fresh folder holding `room` and `echo_v1` as `echo.wasm`.
async fn echo_node(configure: impl FnOnce(&mut Config)) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    copy_plugins(dir.path(), &["room"]);
    install(dir.path(), "echo.wasm", &artifact("echo_v1"));
    let path = dir.path().to_path_buf();
    let server = TestServer::with(move |c| {
        c.plugins.dir = Some(path);
        c.plugins.call_timeout = GENEROUS_CALL_TIMEOUT;
        configure(c);
    })
    .await;
    (server, dir)
}

/// `GET /admin/plugins/{name}`'s `plugin`.
async fn detail(server: &TestServer, name: &str) -> Value {
    let (status, body) = server.admin("GET", &format!("/admin/plugins/{name}")).await;
    assert_eq!(status, 200, "{body}");
    body["plugin"].clone()
}

/// The version that answered `echo` in `room` (HTTP status, version).
async fn echo_in(server: &TestServer, room: &str, n: u64) -> (u16, Value) {
    let (status, body) = server
        .action(json!({"action": "echo", "channel_name": room, "n": n}))
        .await;
    (status, body["result"]["version"].clone())
}

fn versions_of(detail: &Value) -> Vec<(String, bool)> {
    detail["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_str().unwrap().to_string(),
                v["active"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn kept_versions_are_listed_and_activating_one_under_load_fails_no_call() {
    let (server, dir) = echo_node(|c| c.plugins.keep_versions = 2).await;
    install(dir.path(), "echo.wasm", &artifact("echo_v2"));
    assert!(eventually(|| async { echo_in(&server, "r", 1).await.1 == "2.0.0" }).await);
    install(dir.path(), "echo.wasm", &artifact("echo_flaky"));
    assert!(eventually(|| async { echo_in(&server, "r", 1).await.1 == "3.0.0" }).await);
    // keep_versions = 2: 1.0.0 was dropped, the two newest stay.
    let echo = detail(&server, "echo").await;
    assert_eq!(
        versions_of(&echo),
        [("2.0.0".to_string(), false), ("3.0.0".to_string(), true)],
        "{echo}"
    );
    let kept = &echo["versions"][0];
    assert_eq!(kept["sha256"].as_str().unwrap().len(), 64);
    assert!(kept["loaded_at"].as_u64().unwrap() > 0);
    assert!(kept["calls"].as_u64().unwrap() >= 1, "{kept}");
    assert!(kept["errors"].is_u64() && kept["p99_us"].is_u64(), "{kept}");
    let (status, body) = server
        .admin("POST", "/admin/plugins/echo/activate?version=1.0.0")
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = server
        .admin("POST", "/admin/plugins/nope/activate?version=1.0.0")
        .await;
    assert_eq!(status, 404);
    let (status, _) = server.admin("POST", "/admin/plugins/echo/activate").await;
    assert_eq!(status, 400);

    // Four WebSocket clients and the app backend call `echo` without
    // pause while the kept versions are activated in turn.
    let server = Arc::new(server);
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let mut load = Vec::new();
    for user in 0..4u64 {
        let mut client = server.connect(1800 + user).await;
        let (stop, failures, seen) = (stop.clone(), failures.clone(), seen.clone());
        load.push(tokio::spawn(async move {
            let mut calls = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let answer = client.call("echo", json!({"via": "ws"})).await;
                match answer["result"]["version"].as_str() {
                    Some(version) => {
                        seen.lock().unwrap().insert(version.to_string());
                    }
                    None => {
                        eprintln!("failed: {answer}");
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                calls += 1;
                // A session remembers at most MAX_REPLAY_ENTRIES frames
                // within the skew window and refuses more with 1008 (a
                // flood guard): paced, a fast run stays well below it.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            calls
        }));
    }
    {
        let (server, stop, failures) = (server.clone(), stop.clone(), failures.clone());
        load.push(tokio::spawn(async move {
            let mut calls = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let (status, body) = server.action(json!({"action": "echo"})).await;
                if status != 200 {
                    eprintln!("failed: {status} {body}");
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                calls += 1;
            }
            calls
        }));
    }
    for round in 0..6 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let version = if round % 2 == 0 { "2.0.0" } else { "3.0.0" };
        let (status, body) = server
            .admin(
                "POST",
                &format!("/admin/plugins/echo/activate?version={version}"),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["plugin"]["version"], version, "{body}");
        let (_, answered) = echo_in(&server, "r", 1).await;
        assert_eq!(answered, version, "round {round}: the next call runs on it");
    }
    // By sha256 too.
    let sha = detail(&server, "echo").await["versions"][0]["sha256"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, body) = server
        .admin(
            "POST",
            &format!("/admin/plugins/echo/activate?version={sha}"),
        )
        .await;
    assert_eq!(
        (status, body["plugin"]["version"].clone()),
        (200, json!("2.0.0"))
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    stop.store(true, Ordering::Relaxed);
    let mut calls = 0;
    for task in load {
        calls += task.await.unwrap();
    }
    assert_eq!(failures.load(Ordering::Relaxed), 0, "no call failed");
    assert!(calls >= 20, "the load ran: {calls} calls");
    assert_eq!(
        *seen.lock().unwrap(),
        BTreeSet::from(["2.0.0".to_string(), "3.0.0".to_string()])
    );
    let server = Arc::try_unwrap(server).ok().unwrap();
    server.stop().await;
}

#[tokio::test]
async fn a_paused_plugin_answers_1007_until_resumed() {
    let (server, _dir) = echo_node(|_| {}).await;
    let mut client = server.connect(1811).await;
    let (status, body) = server.admin("POST", "/admin/plugins/echo/pause").await;
    assert_eq!(
        (status, body["plugin"]["paused"].clone()),
        (200, json!(true))
    );
    let (status, body) = server.action(json!({"action": "echo"})).await;
    assert_eq!((status, body["error_code"].clone()), (404, json!(1007)));
    let answer = client.call("echo", json!({})).await;
    assert_eq!(answer["error_code"], 1007, "{answer}");
    let (_, plugins) = server.admin("GET", "/admin/plugins").await;
    let echo = plugins["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "echo")
        .unwrap()
        .clone();
    assert_eq!(
        (echo["paused"].clone(), echo["status"].clone()),
        (json!(true), json!("active"))
    );
    // Another plugin is untouched.
    let _other = server.connect(1812).await;
    enter_ok(&server, 1812, "paused-room", 1).await;
    let (status, _) = server.admin("POST", "/admin/plugins/echo/resume").await;
    assert_eq!(status, 200);
    assert_eq!(
        client.call("echo", json!({})).await["result"]["version"],
        "1.0.0"
    );
    let (status, _) = server.admin("POST", "/admin/plugins/nope/pause").await;
    assert_eq!(status, 404);
    server.stop().await;
}

#[tokio::test]
async fn a_canary_at_20_percent_serves_a_stable_fifth_of_500_rooms() {
    let (server, dir) = echo_node(|c| c.plugins.canary_percent = 20.0).await;
    install(dir.path(), "echo.canary.wasm", &artifact("echo_v2"));
    assert!(
        eventually(|| async { detail(&server, "echo").await["canary"]["version"] == "2.0.0" })
            .await,
        "the canary file is staged"
    );
    let echo = detail(&server, "echo").await;
    assert_eq!(echo["version"], "1.0.0", "{echo}");
    assert_eq!(
        (
            echo["canary"]["percent"].clone(),
            echo["canary"]["source"].clone()
        ),
        (json!(20.0), json!("file"))
    );
    let rooms: Vec<String> = (0..500).map(|i| format!("canary-room-{i}")).collect();
    let server = Arc::new(server);
    // Each room three times, rooms in parallel batches: a room never flips.
    let mut on: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for round in 0..3 {
        for batch in rooms.chunks(8) {
            let calls = batch.iter().map(|room| {
                let (server, room) = (server.clone(), room.clone());
                tokio::spawn(async move {
                    let (status, version) = echo_in(&server, &room, round).await;
                    assert_eq!(status, 200, "{room}");
                    (room, version.as_str().unwrap().to_string())
                })
            });
            for call in calls.collect::<Vec<_>>() {
                let (room, version) = call.await.unwrap();
                on.entry(room).or_default().insert(version);
            }
        }
    }
    assert!(
        on.values().all(|v| v.len() == 1),
        "a room stayed on one version"
    );
    let canary_rooms: BTreeSet<&String> = on
        .iter()
        .filter(|(_, v)| v.contains("2.0.0"))
        .map(|(room, _)| room)
        .collect();
    let share = canary_rooms.len();
    assert!(
        (75..=125).contains(&share),
        "{share} of 500 rooms on the canary"
    );
    // Exactly the rooms of the documented hash.
    for room in &rooms {
        let expected = chorus::plugin::canary_bucket(room) < 2_000;
        assert_eq!(canary_rooms.contains(room), expected, "{room}");
    }
    // Events without a room stay on the live version.
    let (_, body) = server.action(json!({"action": "echo"})).await;
    assert_eq!(body["result"]["version"], "1.0.0");
    let echo = detail(&server, "echo").await;
    assert!(
        echo["canary"]["calls"].as_u64().unwrap() >= 3 * share as u64,
        "{echo}"
    );

    // Raising the share keeps every canary room on the canary.
    let (status, body) = server
        .admin("POST", "/admin/plugins/echo/canary?percent=50")
        .await;
    assert_eq!(
        (status, body["plugin"]["canary"]["percent"].clone()),
        (200, json!(50.0))
    );
    for room in canary_rooms.iter().take(40) {
        assert_eq!(echo_in(&server, room, 9).await.1, "2.0.0", "{room}");
    }
    let (status, _) = server
        .admin("POST", "/admin/plugins/echo/canary?percent=101")
        .await;
    assert_eq!(status, 400);

    // Promote: every room on 2.0.0; nothing staged any more.
    let (status, body) = server.admin("POST", "/admin/plugins/echo/promote").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["plugin"]["version"], "2.0.0");
    assert!(body["plugin"]["canary"].is_null(), "{body}");
    for room in rooms.iter().take(30) {
        assert_eq!(echo_in(&server, room, 1).await.1, "2.0.0", "{room}");
    }
    let (status, _) = server.admin("POST", "/admin/plugins/echo/promote").await;
    assert_eq!(status, 409, "nothing to promote");

    // A kept version as canary by the admin API, then aborted.
    let (status, body) = server
        .admin(
            "POST",
            "/admin/plugins/echo/canary?percent=100&version=1.0.0",
        )
        .await;
    assert_eq!(
        (status, body["plugin"]["canary"]["source"].clone()),
        (200, json!("admin"))
    );
    assert_eq!(echo_in(&server, "any-room", 1).await.1, "1.0.0");
    let (status, body) = server.admin("POST", "/admin/plugins/echo/abort").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(echo_in(&server, "any-room", 1).await.1, "2.0.0");
    let (status, _) = server.admin("POST", "/admin/plugins/echo/abort").await;
    assert_eq!(status, 409, "nothing to abort");
    let server = Arc::try_unwrap(server).ok().unwrap();
    server.stop().await;
}

/// Objectives of `echo` for the rollback tests.
fn echo_objectives(config: &mut Config) {
    config.plugins.objectives.insert(
        "echo".into(),
        PluginObjectives {
            max_error_rate: Some(0.05),
            window: Duration::from_secs(10),
            min_calls: 20,
            ..PluginObjectives::default()
        },
    );
}

/// The first five rooms `canary-rb-<k>` inside a 50 % canary and the first
/// five outside it.
fn split_rooms() -> (Vec<String>, Vec<String>) {
    let (inside, outside): (Vec<String>, Vec<String>) = (0..200)
        .map(|k| format!("canary-rb-{k}"))
        .partition(|room| chorus::plugin::canary_bucket(room) < 5_000);
    (inside[..5].to_vec(), outside[..5].to_vec())
}

#[tokio::test]
async fn a_canary_failing_one_call_in_ten_is_rolled_back_while_traffic_flows() {
    let (server, dir) = echo_node(|c| {
        c.plugins.canary_percent = 50.0;
        echo_objectives(c);
    })
    .await;
    install(dir.path(), "echo.canary.wasm", &artifact("echo_flaky"));
    assert!(
        eventually(|| async { detail(&server, "echo").await["canary"]["version"] == "3.0.0" })
            .await
    );
    let echo = detail(&server, "echo").await;
    assert_eq!(
        (
            echo["canary"]["watch"]["kind"].clone(),
            echo["canary"]["watch"]["judging"].clone()
        ),
        (json!("canary"), json!(true)),
        "{echo}"
    );
    let (inside, outside) = split_rooms();
    let server = Arc::new(server);
    let stop = Arc::new(AtomicBool::new(false));
    let outside_failures = Arc::new(AtomicUsize::new(0));
    let inside_failures = Arc::new(AtomicUsize::new(0));
    // About 100 actions/s: ten rooms, each numbering its calls 1, 2, …;
    // the canary fails each room's 10th, 20th… call.
    let load = {
        let (server, stop) = (server.clone(), stop.clone());
        let (outside_failures, inside_failures) =
            (outside_failures.clone(), inside_failures.clone());
        let rooms: Vec<(String, bool)> = inside
            .iter()
            .map(|r| (r.clone(), true))
            .chain(outside.iter().map(|r| (r.clone(), false)))
            .collect();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let (room, canary) = &rooms[(sent % 10) as usize];
                let n = 1 + sent / 10;
                let (status, _) = echo_in(&server, room, n).await;
                if status != 200 {
                    let counter = if *canary {
                        &inside_failures
                    } else {
                        &outside_failures
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                sent += 1;
            }
            sent
        })
    };
    let mut rolled_back = false;
    for _ in 0..600 {
        if !detail(&server, "echo").await["last_rollback"].is_null() {
            rolled_back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Some more traffic after the rollback, then stop.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let sent = load.await.unwrap();
    assert!(rolled_back, "rolled back within 30 s");
    let echo = detail(&server, "echo").await;
    let record = &echo["last_rollback"];
    assert_eq!(
        (
            record["kind"].clone(),
            record["version"].clone(),
            record["reason"].clone(),
            record["serving_version"].clone()
        ),
        (
            json!("canary"),
            json!("3.0.0"),
            json!("error_rate"),
            json!("1.0.0")
        ),
        "{echo}"
    );
    assert!(
        record["detail"]
            .as_str()
            .unwrap()
            .contains("max_error_rate"),
        "{record}"
    );
    assert!(echo["canary"].is_null(), "the canary is gone: {echo}");
    assert_eq!(echo["version"], "1.0.0");
    assert_eq!(
        outside_failures.load(Ordering::Relaxed),
        0,
        "no failure outside the canary"
    );
    assert!(
        inside_failures.load(Ordering::Relaxed) >= 2,
        "the canary did fail"
    );
    assert!(sent >= 90, "{sent} actions sent");
    // Every room is on 1.0.0 again, even on a call the canary would fail.
    for room in inside.iter().chain(&outside) {
        assert_eq!(
            echo_in(&server, room, 10).await,
            (200, json!("1.0.0")),
            "{room}"
        );
    }
    let metrics = server.metrics_text().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("chorus_plugin_auto_rollbacks_total{")
                && l.contains("plugin=\"echo\"")
                && l.contains("reason=\"error_rate\"")),
        "{metrics}"
    );
    let server = Arc::try_unwrap(server).ok().unwrap();
    server.stop().await;
}

#[tokio::test]
async fn a_new_live_version_breaking_its_objectives_gives_way_to_the_previous_one() {
    let (server, dir) = echo_node(echo_objectives).await;
    install(dir.path(), "echo.wasm", &artifact("echo_flaky"));
    assert!(eventually(|| async { echo_in(&server, "r", 1).await.1 == "3.0.0" }).await);
    let echo = detail(&server, "echo").await;
    assert_eq!(echo["watch"]["kind"], "live", "{echo}");
    let mut n = 1;
    let mut failed = 0;
    while detail(&server, "echo").await["last_rollback"].is_null() && n < 1_000 {
        let (status, _) = echo_in(&server, "r", n).await;
        failed += usize::from(status != 200);
        n += 1;
    }
    let echo = detail(&server, "echo").await;
    assert_eq!(echo["last_rollback"]["kind"], "live", "{echo}");
    assert_eq!(echo["version"], "1.0.0");
    assert!(failed >= 2);
    assert_eq!(echo_in(&server, "r", 10).await, (200, json!("1.0.0")));
    server.stop().await;
}

#[tokio::test]
async fn a_shadow_gift_that_changes_one_field_is_counted_and_sampled_and_reaches_nobody() {
    let dir = bundled_with(&[]);
    std::fs::copy(
        artifacts().join("gift_v2.wasm"),
        dir.join("gift.shadow.wasm"),
    )
    .unwrap();
    let path = dir.clone();
    let server = TestServer::with(move |c| {
        c.plugins.dir = Some(path);
        c.plugins.call_timeout = GENEROUS_CALL_TIMEOUT;
    })
    .await;
    let gift = detail(&server, "gift").await;
    assert_eq!(
        (gift["version"].clone(), gift["shadow"]["version"].clone()),
        (json!("1.0.0"), json!("2.0.0")),
        "{gift}"
    );
    let mut sender = server.connect(1821).await;
    let mut receiver = server.connect(1822).await;
    enter_ok(&server, 1821, "shadow-room", 21).await;
    enter_ok(&server, 1822, "shadow-room", 21).await;
    let body = json!({"action": "send_gift", "channel_name": "shadow-room", "notify_type": "bc",
        "gift": {"id": 5, "sender_id": 1821, "receiver_id": 1822, "num": 3, "name": "rose"}});
    let (status, answer) = server.action(body).await;
    assert_eq!(status, 200, "{answer}");
    for client in [&mut sender, &mut receiver] {
        let frame = client.expect_skipping("send_gift").await;
        assert_eq!(frame["gift"]["num"], 3, "the live version's gift: {frame}");
        client.expect_silence(Duration::from_millis(300)).await;
    }
    // A refused gift (num 0): both versions refuse it alike.
    let refused = json!({"action": "send_gift", "channel_name": "shadow-room", "notify_type": "bc",
        "gift": {"id": 5, "sender_id": 1821, "receiver_id": 1822, "num": 0}});
    let (status, body) = server.action(refused).await;
    assert_eq!(
        (status, body["error_code"].clone()),
        (422, json!(2001)),
        "{body}"
    );
    let shadow = detail(&server, "gift").await["shadow"].clone();
    assert_eq!(
        (
            shadow["events"].clone(),
            shadow["agree"].clone(),
            shadow["differ"].clone()
        ),
        (json!(2), json!(1), json!(1)),
        "{shadow}"
    );
    assert_eq!(
        shadow["summary"],
        "2.0.0 agrees with 1.0.0 on 1 of 2 events (50.0 %); 1 differ"
    );
    let sample = &shadow["samples"][0];
    assert_eq!(sample["action"], "send_gift");
    assert_eq!(
        sample["live"]["notifications"][0]["body"]["gift"]["num"], 3,
        "{sample}"
    );
    assert_eq!(
        sample["shadow"]["notifications"][0]["body"]["gift"]["num"], 4,
        "{sample}"
    );
    assert_eq!(shadow["samples"].as_array().unwrap().len(), 1);
    let (status, body) = server
        .admin("POST", "/admin/plugins/gift/shadow/stop")
        .await;
    assert_eq!((status, body["shadow"]["differ"].clone()), (200, json!(1)));
    assert!(detail(&server, "gift").await["shadow"].is_null());
    server.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_shadow_writes_nothing_to_the_store() {
    // echo counts its calls in the kv key `calls` (a kv-set effect): were
    // the shadow's effects applied, the count would move by two.
    let (server, dir) = echo_node(|_| {}).await;
    install(dir.path(), "echo.wasm", &artifact("echo_v2"));
    assert!(eventually(|| async { echo_in(&server, "r", 1).await.1 == "2.0.0" }).await);
    let (status, body) = server
        .admin("POST", "/admin/plugins/echo/activate?version=1.0.0")
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .admin("POST", "/admin/plugins/echo/shadow?version=2.0.0")
        .await;
    assert_eq!(
        (status, body["plugin"]["shadow"]["source"].clone()),
        (200, json!("admin"))
    );
    let mut counts = Vec::new();
    for _ in 0..5 {
        let (status, body) = server.action(json!({"action": "echo"})).await;
        assert_eq!(status, 200);
        assert_eq!(body["result"]["version"], "1.0.0");
        counts.push(body["result"]["calls"].as_u64().unwrap());
    }
    assert!(counts.windows(2).all(|w| w[1] == w[0] + 1), "{counts:?}");
    let shadow = detail(&server, "echo").await["shadow"].clone();
    assert_eq!(
        (shadow["agree"].clone(), shadow["differ"].clone()),
        (json!(5), json!(0)),
        "{shadow}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_file_outside_the_allow_list_is_refused_like_a_broken_one() {
    let v1 = artifact("echo_v1");
    let v1_sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&v1));
    let room_sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(artifact("room")));
    let (server, dir) =
        echo_node(move |c| c.plugins.allowed_sha256 = Some(vec![v1_sha, room_sha])).await;
    assert_eq!(echo_in(&server, "r", 1).await, (200, json!("1.0.0")));
    install(dir.path(), "echo.wasm", &artifact("echo_v2"));
    assert!(
        eventually(|| async {
            detail(&server, "echo").await["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("plugins.allowed_sha256"))
        })
        .await,
        "refused with a reason"
    );
    let echo = detail(&server, "echo").await;
    assert_eq!(
        (echo["status"].clone(), echo["version"].clone()),
        (json!("active"), json!("1.0.0"))
    );
    assert_eq!(echo_in(&server, "r", 1).await, (200, json!("1.0.0")));
    server.stop().await;
}

/// p50 and p99 of `samples`, in µs.
fn percentiles_us(samples: &mut [Duration]) -> (u128, u128) {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    (at(0.50).as_micros(), at(0.99).as_micros())
}

/// Measures an action's round trip through the front door (a WebSocket
/// client's signed `echo` with a `channel_name`, to its `ack`) without and
/// with a shadow version (issue 18, BENCHMARKS.md):
/// `cargo test -p chorus-tests --test it -- --ignored --nocapture shadow_overhead_through_the_front_door`
#[ignore = "a measurement, not a test"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_overhead_through_the_front_door() {
    let (server, dir) = echo_node(|_| {}).await;
    install(dir.path(), "echo.wasm", &artifact("echo_v2"));
    assert!(eventually(|| async { echo_in(&server, "r", 1).await.1 == "2.0.0" }).await);
    let (status, _) = server
        .admin("POST", "/admin/plugins/echo/activate?version=1.0.0")
        .await;
    assert_eq!(status, 200);
    let mut client = server.connect(1890).await;
    let rounds = 5_000;
    for label in ["echo 1.0.0 alone", "echo 1.0.0 with 2.0.0 shadowing"] {
        if label.contains("shadowing") {
            let (status, _) = server
                .admin("POST", "/admin/plugins/echo/shadow?version=2.0.0")
                .await;
            assert_eq!(status, 200);
        }
        for _ in 0..500 {
            client
                .call("echo", json!({"channel_name": "bench-room"}))
                .await;
        }
        let mut samples = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let started = std::time::Instant::now();
            let answer = client
                .call("echo", json!({"channel_name": "bench-room"}))
                .await;
            samples.push(started.elapsed());
            assert_eq!(answer["result"]["version"], "1.0.0", "{answer}");
        }
        let (p50, p99) = percentiles_us(&mut samples);
        eprintln!("{label}: p50 {p50} µs, p99 {p99} µs over {rounds} actions");
    }
    let shadow = detail(&server, "echo").await["shadow"]["summary"].clone();
    eprintln!("{shadow}");
    server.stop().await;
}

/// `PUT /admin/plugins/{name}/{file}` with `body` and the admin token.
async fn upload(server: &TestServer, path: &str, body: Vec<u8>) -> (u16, Value) {
    let response = reqwest::Client::new()
        .put(server.admin_url(path))
        .bearer_auth(ADMIN_TOKEN)
        .body(body)
        .send()
        .await
        .expect("admin API answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Issue 14 item 5: a plugin uploaded through the admin API goes live at
/// once, is written into `plugins.dir` (a restart finds it), a broken
/// upload is refused with the load error while the serving version keeps
/// answering, a canary can be uploaded too, and a server without a
/// plugins folder, a bad name or a bad config is refused with nothing
/// written.
#[tokio::test]
async fn a_plugin_uploaded_through_the_admin_api_goes_live_and_a_broken_one_changes_nothing() {
    let (server, dir) = echo_node(|_| {}).await;
    assert_eq!(echo_in(&server, "up-1", 1).await, (200, json!("1.0.0")));

    let v2 = artifact("echo_v2");
    let (status, body) = upload(&server, "/admin/plugins/echo/wasm", v2.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"]["outcome"], "loaded", "{body}");
    assert_eq!(body["outcome"]["version"], "2.0.0", "{body}");
    assert_eq!(body["plugin"]["version"], "2.0.0", "{body}");
    // Live at once: the answer came after the load, not before it.
    assert_eq!(echo_in(&server, "up-1", 2).await, (200, json!("2.0.0")));
    assert_eq!(std::fs::read(dir.path().join("echo.wasm")).unwrap(), v2);
    let hidden: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "temporary files left: {hidden:?}");

    // The same bytes again: nothing to do.
    let (status, body) = upload(&server, "/admin/plugins/echo/wasm", v2).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"]["outcome"], "unchanged", "{body}");

    // Not a component: 422 with the load error; 2.0.0 keeps serving and
    // the folder keeps its file (a restart must not load the refused one).
    let (status, body) = upload(&server, "/admin/plugins/echo/wasm", b"not wasm".to_vec()).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["outcome"]["outcome"], "failed", "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
    assert_eq!(body["plugin"]["version"], "2.0.0", "{body}");
    assert_eq!(echo_in(&server, "up-1", 3).await, (200, json!("2.0.0")));
    assert_eq!(
        std::fs::read(dir.path().join("echo.wasm")).unwrap(),
        artifact("echo_v2")
    );

    // A canary beside it.
    let v1 = artifact("echo_v1");
    let (status, body) = upload(&server, "/admin/plugins/echo/wasm?role=canary", v1).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"]["outcome"], "staged", "{body}");
    assert_eq!(body["outcome"]["role"], "canary", "{body}");
    assert!(dir.path().join("echo.canary.wasm").is_file());

    // A config: a bad one is refused before it is written.
    let (status, body) = upload(&server, "/admin/plugins/echo/toml", b"[grants\n".to_vec()).await;
    assert_eq!(status, 422, "{body}");
    assert!(!dir.path().join("echo.toml").exists());
    let (status, body) = upload(
        &server,
        "/admin/plugins/echo/toml",
        b"greeting = \"hi\"\n".to_vec(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["plugin"]["version"], "2.0.0", "{body}");
    assert!(dir.path().join("echo.toml").is_file());

    // Bad names, roles and bodies.
    for (path, body, want) in [
        ("/admin/plugins/Echo/wasm", b"x".to_vec(), 400),
        ("/admin/plugins/..%2Fecho/wasm", b"x".to_vec(), 400),
        ("/admin/plugins/echo/wasm?role=other", b"x".to_vec(), 400),
        ("/admin/plugins/echo/wasm", Vec::new(), 400),
    ] {
        let (status, answer) = upload(&server, path, body).await;
        assert_eq!(status, want, "{path}: {answer}");
        assert!(answer["error"].is_string(), "{path}: {answer}");
    }
    server.stop().await;

    // A restart finds what was uploaded.
    let path = dir.path().to_path_buf();
    let server = TestServer::with(move |c| {
        c.plugins.dir = Some(path);
        c.plugins.call_timeout = GENEROUS_CALL_TIMEOUT;
    })
    .await;
    let plugin = detail(&server, "echo").await;
    assert_eq!(plugin["version"], "2.0.0", "{plugin}");
    server.stop().await;

    // No plugins folder: 409, and it says why.
    let server = TestServer::start().await;
    let (status, body) = upload(&server, "/admin/plugins/echo/wasm", artifact("echo_v1")).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("plugins.dir"),
        "{body}"
    );
    server.stop().await;
}

/// Review of the upload: the folder follows the operator's decisions on a
/// staged file, so neither the watcher nor a restart undoes them: a
/// promoted canary file becomes `<name>.wasm`, an aborted canary's and a
/// stopped shadow's files are removed (and the same file dropped in again
/// is staged again); an empty `.toml` is refused; a `.toml` for a bundled
/// plugin the folder does not replace says it does not apply yet.
#[tokio::test]
async fn promote_abort_and_stop_leave_the_folder_as_decided() {
    // The bundled plugins serve beside the folder, as by default.
    let (server, dir) = echo_node(|c| c.plugins.bundled = true).await;
    let v2 = artifact("echo_v2");
    let (status, body) = upload(&server, "/admin/plugins/echo/wasm?role=canary", v2.clone()).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server.admin("POST", "/admin/plugins/echo/promote").await;
    assert_eq!(status, 200, "{body}");
    assert!(!dir.path().join("echo.canary.wasm").exists());
    assert_eq!(std::fs::read(dir.path().join("echo.wasm")).unwrap(), v2);

    let v1 = artifact("echo_v1");
    let (status, body) = upload(&server, "/admin/plugins/echo/wasm?role=canary", v1.clone()).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server.admin("POST", "/admin/plugins/echo/abort").await;
    assert_eq!(status, 200, "{body}");
    assert!(!dir.path().join("echo.canary.wasm").exists());
    let (status, body) = upload(&server, "/admin/plugins/echo/wasm?role=shadow", v1.clone()).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .admin("POST", "/admin/plugins/echo/shadow/stop")
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(!dir.path().join("echo.shadow.wasm").exists());
    // The same bytes again are staged again, not taken as unchanged.
    let (status, body) = upload(&server, "/admin/plugins/echo/wasm?role=canary", v1).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"]["outcome"], "staged", "{body}");
    let (status, _) = server.admin("POST", "/admin/plugins/echo/abort").await;
    assert_eq!(status, 200);

    let (status, body) = upload(&server, "/admin/plugins/echo/toml", b"  \n".to_vec()).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = upload(&server, "/admin/plugins/gift/toml", b"x = 1\n".to_vec()).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["note"]
            .as_str()
            .is_some_and(|n| n.contains("built-in")),
        "{body}"
    );
    server.stop().await;

    // A restart serves what the operator decided: 2.0.0 live, nothing staged.
    let path = dir.path().to_path_buf();
    let server = TestServer::with(move |c| {
        c.plugins.dir = Some(path);
        c.plugins.call_timeout = GENEROUS_CALL_TIMEOUT;
    })
    .await;
    let plugin = detail(&server, "echo").await;
    assert_eq!(plugin["version"], "2.0.0", "{plugin}");
    assert!(
        plugin["canary"].is_null() && plugin["shadow"].is_null(),
        "{plugin}"
    );
    server.stop().await;
}
