//! Contract 1.1 timers and grants on one node, through the front door: the
//! `echo` fixture sets and cancels timers (`echo_timer`) and notifies a
//! user `echo_timer` when its `timer` system event arrives.
//!
//! Timers are due by the wall clock (they live in the state store, which
//! is Redis with several nodes), so these tests cannot run on a paused
//! tokio clock: they use the shortest delays the contract allows and
//! generous waits for what must arrive.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::*;

/// `echo.toml` granting what `echo` uses, timers included.
pub const ECHO_GRANTS: &str = "[grants]\n\
    effects = [\"kv\", \"timers\", \"seats\"]\n\
    imports = [\"room-state\", \"kv\", \"config\", \"clock\", \"log\"]\n";

/// A plugin folder with `echo_v1` as `echo.wasm` and, with `grants`, an
/// `echo.toml` holding them.
pub fn echo_dir(grants: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    install_echo(dir.path(), "echo_v1");
    if let Some(grants) = grants {
        std::fs::write(dir.path().join("echo.toml"), grants).unwrap();
    }
    dir
}

/// Puts artifact `name` in place as `echo.wasm` (written aside, renamed).
fn install_echo(dir: &Path, name: &str) {
    let tmp = dir.join(".echo.wasm.tmp");
    std::fs::copy(artifacts().join(format!("{name}.wasm")), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("echo.wasm")).unwrap();
}

/// A node serving the plugins of `dir`, with `configure` applied.
async fn node(dir: &tempfile::TempDir, configure: impl FnOnce(&mut chorus::Config)) -> TestServer {
    let path = dir.path().to_path_buf();
    TestServer::with(move |c| {
        c.plugins.dir = Some(path);
        configure(c);
    })
    .await
}

/// The value of the metric line starting with `name` (0 without one).
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
        .sum()
}

/// `echo_timer` through the server API.
pub async fn set_timer(server: &TestServer, fields: Value) -> (u16, Value) {
    let mut body = json!({"action": "echo_timer"});
    body.as_object_mut().unwrap().extend(as_object(fields));
    server.action(body).await
}

/// The `timer_calls` counter `echo_timer` increments in every applied
/// batch.
async fn timer_calls(server: &TestServer) -> Value {
    let (status, body) = server
        .action(json!({"action": "echo_kv", "key": "timer_calls"}))
        .await;
    assert_eq!(status, 200, "{body}");
    body["result"]["entry"]["value"].clone()
}

#[tokio::test]
async fn a_timer_arrives_as_a_system_event_after_its_delay() {
    let dir = echo_dir(Some(ECHO_GRANTS));
    let server = node(&dir, |_| {}).await;
    let mut client = server.connect(7101).await;
    let set_at = Instant::now();
    let ack = client
        .call(
            "echo_timer",
            json!({"key": "t1", "delay_ms": 150, "value": {"n": 7}}),
        )
        .await;
    assert_eq!(ack["action"], "ack", "{ack}");
    let fired = client.expect("echo_timer").await;
    assert!(
        set_at.elapsed() >= Duration::from_millis(150),
        "not before its delay"
    );
    assert_eq!(fired["source"], "system", "{fired}");
    assert_eq!(fired["key"], "t1", "{fired}");
    assert_eq!(fired["value"], json!({"n": 7}), "{fired}");
    assert_eq!(fired["channel_name"], Value::Null, "{fired}");
    assert!(fired["due_ms"].as_u64().is_some(), "{fired}");
    assert!(fired["msg_id"].is_string(), "{fired}");
    // The metrics recorder is shared by every node of this test process:
    // other tests count too.
    let metrics = server.metrics_text().await;
    for name in [
        "chorus_timers_scheduled_total{plugin=\"echo\"}",
        "chorus_timers_fired_total{plugin=\"echo\",outcome=\"ok\"}",
        "chorus_timer_lateness_seconds_count",
    ] {
        assert!(metric(&metrics, name) >= 1.0, "{name}: {metrics}");
    }
    client.expect_silence(Duration::from_millis(400)).await;
    server.stop().await;
}

#[tokio::test]
async fn reusing_a_key_replaces_the_timer_and_cancel_removes_it() {
    let dir = echo_dir(Some(ECHO_GRANTS));
    let server = node(&dir, |_| {}).await;
    let mut client = server.connect(7102).await;
    for (key, delay, value) in [("a", 300, 1), ("a", 200, 2), ("b", 200, 3)] {
        let ack = client
            .call(
                "echo_timer",
                json!({"key": key, "delay_ms": delay, "value": value}),
            )
            .await;
        assert_eq!(ack["action"], "ack", "{ack}");
    }
    let ack = client
        .call("echo_timer", json!({"key": "b", "cancel": true}))
        .await;
    assert_eq!(ack["action"], "ack", "{ack}");
    // Cancelling a key with no timer is no error.
    let ack = client
        .call("echo_timer", json!({"key": "none", "cancel": true}))
        .await;
    assert_eq!(ack["action"], "ack", "{ack}");
    let fired = client.expect("echo_timer").await;
    assert_eq!(
        (fired["key"].clone(), fired["value"].clone()),
        (json!("a"), json!(2))
    );
    // Neither the replaced timer nor the cancelled one fires.
    client.expect_silence(Duration::from_millis(800)).await;
    server.stop().await;
}

#[tokio::test]
async fn a_failed_call_schedules_nothing() {
    let dir = echo_dir(Some(ECHO_GRANTS));
    let server = node(&dir, |_| {}).await;
    let mut client = server.connect(7103).await;
    let answer = client
        .call(
            "echo_timer",
            json!({"key": "f", "delay_ms": 100, "fail": true}),
        )
        .await;
    assert_eq!(answer["action"], "error", "{answer}");
    assert_eq!(answer["error_code"], 2004, "{answer}");
    assert_eq!(
        timer_calls(&server).await,
        Value::Null,
        "the batch wrote nothing"
    );
    client.expect_silence(Duration::from_millis(600)).await;
    server.stop().await;
}

#[tokio::test]
async fn a_delay_outside_100_ms_to_24_h_fails_with_2002_and_applies_nothing() {
    let dir = echo_dir(Some(ECHO_GRANTS));
    let server = node(&dir, |_| {}).await;
    for delay in [0i64, -1, -86_400_000, 99, 86_400_001, i64::MAX] {
        let (status, body) =
            set_timer(&server, json!({"key": "d", "delay_ms": delay, "notify": 1})).await;
        assert_eq!(status, 503, "{delay}: {body}");
        assert_eq!(body["error_code"], 2002, "{delay}: {body}");
        let reason = body["error_reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains(&format!(
                "timer delay {delay} ms is outside 100 ..= 86400000 ms"
            )),
            "{delay}: {body}"
        );
    }
    assert_eq!(
        timer_calls(&server).await,
        Value::Null,
        "nothing was applied"
    );
    for delay in [100, 86_400_000] {
        let (status, body) = set_timer(
            &server,
            json!({"key": format!("ok{delay}"), "delay_ms": delay, "notify": 1}),
        )
        .await;
        assert_eq!(status, 200, "{delay}: {body}");
    }
    server.stop().await;
}

#[tokio::test]
async fn pending_timers_are_bounded_per_plugin_and_per_room() {
    let dir = echo_dir(Some(ECHO_GRANTS));
    let server = node(&dir, |c| {
        c.plugins.max_timers_per_plugin = 3;
        c.plugins.max_timers_per_room = 2;
    })
    .await;
    let long = 60_000;
    let timer = |key: &str, room: Option<&str>| json!({"key": key, "delay_ms": long, "notify": 1, "channel_name": room});
    for key in ["r1", "r2"] {
        let (status, body) = set_timer(&server, timer(key, Some("room_t"))).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = set_timer(&server, timer("r3", Some("room_t"))).await;
    assert_eq!(
        (status, body["error_code"].clone()),
        (409, json!(2003)),
        "{body}"
    );
    assert!(
        body["error_reason"]
            .as_str()
            .unwrap()
            .contains("plugins.max_timers_per_room"),
        "{body}"
    );
    // Replacing a pending key does not count twice.
    let (status, body) = set_timer(&server, timer("r2", Some("room_t"))).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = set_timer(&server, timer("free", None)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = set_timer(&server, timer("free2", Some("room_u"))).await;
    assert_eq!(
        (status, body["error_code"].clone()),
        (409, json!(2003)),
        "{body}"
    );
    assert!(
        body["error_reason"]
            .as_str()
            .unwrap()
            .contains("plugins.max_timers_per_plugin"),
        "{body}"
    );
    // A cancelled timer frees its place.
    let (status, _) = set_timer(&server, json!({"key": "free", "cancel": true})).await;
    assert_eq!(status, 200);
    let (status, body) = set_timer(&server, timer("free2", Some("room_u"))).await;
    assert_eq!(status, 200, "{body}");
    server.stop().await;
}

#[tokio::test]
async fn an_ungranted_effect_fails_with_2002_naming_the_grant_and_applies_nothing() {
    // No `echo.toml`: the contract 1.0 set, which has no `timers`.
    let dir = echo_dir(None);
    let server = node(&dir, |_| {}).await;
    let mut client = server.connect(7104).await;
    let answer = client
        .call("echo_timer", json!({"key": "u", "delay_ms": 100}))
        .await;
    assert_eq!(answer["action"], "error", "{answer}");
    assert_eq!(answer["error_code"], 2002, "{answer}");
    let reason = answer["error_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("not granted `timers` (`effects` of [grants]"),
        "{answer}"
    );
    assert_eq!(
        timer_calls(&server).await,
        Value::Null,
        "nothing was applied"
    );
    let metrics = server.metrics_text().await;
    let ungranted =
        "chorus_plugin_ungranted_total{plugin=\"echo\",kind=\"effects\",grant=\"timers\"}";
    assert!(metric(&metrics, ungranted) >= 1.0, "{metrics}");
    client.expect_silence(Duration::from_millis(400)).await;
    // Granted, the same call works.
    std::fs::write(dir.path().join("echo.toml"), ECHO_GRANTS).unwrap();
    assert!(
        eventually(|| async {
            set_timer(
                &server,
                json!({"key": "u", "delay_ms": 100, "notify": 7104}),
            )
            .await
            .0 == 200
        })
        .await,
        "granted once echo.toml says so"
    );
    assert_eq!(client.expect("echo_timer").await["key"], "u");
    server.stop().await;
}

#[tokio::test]
async fn an_ungranted_import_fails_the_call_with_2002_naming_it() {
    let grants = "[grants]\neffects = [\"kv\", \"timers\"]\nimports = [\"config\", \"log\"]\n";
    let dir = echo_dir(Some(grants));
    let server = node(&dir, |_| {}).await;
    // `echo` reads its call counter through the `kv` import.
    let (status, body) = server.action(json!({"action": "echo"})).await;
    assert_eq!(
        (status, body["error_code"].clone()),
        (503, json!(2002)),
        "{body}"
    );
    assert!(
        body["error_reason"]
            .as_str()
            .unwrap()
            .contains("not granted `kv` (`imports` of [grants]"),
        "{body}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_timer_fires_on_the_version_live_when_it_is_due() {
    let dir = echo_dir(Some(ECHO_GRANTS));
    let server = node(&dir, |_| {}).await;
    let mut client = server.connect(7105).await;
    let delay = Duration::from_millis(2500);
    // A reload normally takes well under a second; on a starved machine
    // the timer may fire before the swap, and the attempt is repeated.
    for (attempt, (to, want)) in [
        ("echo_v2", "2.0.0"),
        ("echo_v1", "1.0.0"),
        ("echo_v2", "2.0.0"),
    ]
    .into_iter()
    .enumerate()
    {
        let key = format!("reload{attempt}");
        let set_at = Instant::now();
        let ack = client
            .call(
                "echo_timer",
                json!({"key": key, "delay_ms": delay.as_millis() as u64}),
            )
            .await;
        assert_eq!(ack["action"], "ack", "{ack}");
        install_echo(dir.path(), to);
        assert!(
            eventually(|| async {
                server.action(json!({"action": "echo"})).await.1["result"]["version"] == want
            })
            .await,
            "{to} serves"
        );
        let swapped_in_time = set_at.elapsed() < delay - Duration::from_millis(300);
        let fired = client.expect("echo_timer").await;
        assert_eq!(fired["key"], key.as_str());
        if swapped_in_time {
            assert_eq!(fired["version"], want, "{fired}");
            server.stop().await;
            return;
        }
    }
    panic!("no reload finished within 2.2 s in three attempts");
}

#[tokio::test]
async fn a_timer_of_a_removed_plugin_is_dropped_and_counted() {
    let dir = echo_dir(Some(ECHO_GRANTS));
    let server = node(&dir, |_| {}).await;
    let mut client = server.connect(7106).await;
    let ack = client
        .call("echo_timer", json!({"key": "gone", "delay_ms": 3000}))
        .await;
    assert_eq!(ack["action"], "ack", "{ack}");
    std::fs::remove_file(dir.path().join("echo.wasm")).unwrap();
    assert!(
        eventually(|| async { server.action(json!({"action": "echo"})).await.0 == 404 }).await,
        "echo is unloaded"
    );
    let dropped = "chorus_timers_dropped_total{plugin=\"echo\",reason=\"plugin_missing\"}";
    assert!(
        eventually(|| async { metric(&server.metrics_text().await, dropped) >= 1.0 }).await,
        "the timer is dropped when due"
    );
    client.expect_silence(Duration::from_millis(300)).await;
    server.stop().await;
}

#[tokio::test]
async fn timers_due_together_each_fire_once_none_lost_to_overload() {
    // One plugin call sets 300 timers in one batch, so all come due at the
    // same moment; a plugin version takes 2 calls at once. Fired all at
    // once, 298 of them would fail as overloaded and be lost; the node
    // runs one timer call at a time (half of 2) and each fires once.
    const N: usize = 300;
    let dir = echo_dir(Some(ECHO_GRANTS));
    let server = node(&dir, |c| {
        c.plugins.max_concurrent_calls = 2;
        c.limits.outbound_queue = 4 * N;
    })
    .await;
    let mut client = server.connect(7120).await;
    let ack = client
        .call(
            "echo_timer",
            json!({"key": "burst", "delay_ms": 300, "count": N}),
        )
        .await;
    assert_eq!(ack["action"], "ack", "{ack}");
    let mut fired = std::collections::BTreeSet::new();
    for _ in 0..N {
        let frame = client.expect("echo_timer").await;
        let key = frame["key"].as_str().expect("key").to_string();
        assert!(fired.insert(key.clone()), "{key} fired twice");
    }
    let expected: std::collections::BTreeSet<String> =
        (0..N).map(|i| format!("burst-{i}")).collect();
    assert_eq!(fired, expected);
    for i in [0, N / 2, N - 1] {
        let (status, body) = server
            .action(json!({"action": "echo_kv", "key": format!("fired:burst-{i}")}))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["result"]["entry"]["value"], "1", "{body}");
    }
    server.stop().await;
}
