//! The plugin runtime through the front door: faulty plugins fail only
//! their own call, hot reload under traffic, broken files, removal,
//! rollback and the admin view.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

/// Writes `bytes` to `dir/name` the way operators should: a temporary
/// file renamed into place, so the watcher never sees half a file.
fn install(dir: &Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

fn artifact(name: &str) -> Vec<u8> {
    std::fs::read(artifacts().join(format!("{name}.wasm"))).unwrap()
}

/// A node whose plugins folder is a fresh temporary directory holding
/// `plugins` (artifact names) and, for `echo`, `echo_v1` as `echo.wasm`.
async fn node_with(plugins: &[&str], echo: bool) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    copy_plugins(dir.path(), plugins);
    if echo {
        install(dir.path(), "echo.wasm", &artifact("echo_v1"));
    }
    let path = dir.path().to_path_buf();
    let server = TestServer::with(move |c| c.plugins.dir = Some(path)).await;
    (server, dir)
}

async fn echo_version(server: &TestServer) -> (u16, Value) {
    let (status, body) = server.action(json!({"action": "echo", "n": 1})).await;
    (status, body["result"]["version"].clone())
}

#[tokio::test]
async fn a_trap_a_loop_and_unbounded_allocation_each_fail_only_their_call() {
    let (server, _dir) = node_with(&["faulty", "chat", "room"], false).await;
    let mut client = server.connect(501).await;
    let mut bystander = server.connect(502).await;
    for action in ["fx_trap", "fx_loop", "fx_alloc", "fx_bad_effect"] {
        let answer = client.call(action, json!({})).await;
        assert_eq!(answer["error_code"], 2002, "{action}: {answer}");
        assert_eq!(answer["ref_action"], action);
        let ok = client.call("fx_ok", json!({})).await;
        assert_eq!(
            ok["result"],
            json!({"ok": true}),
            "the same plugin serves after {action}"
        );
        bystander.ping().await;
    }
    let (status, body) = server.action(json!({"action": "fx_trap"})).await;
    assert_eq!((status, body["error_code"].clone()), (503, json!(2002)));
    assert!(
        !body["error_reason"].as_str().unwrap().contains("panicked"),
        "no plugin detail leaks: {body}"
    );
    let (_, plugins) = server.admin("GET", "/admin/plugins").await;
    let faulty = plugins["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "faulty")
        .unwrap()
        .clone();
    assert_eq!(faulty["status"], "active");
    assert!(faulty["errors"].as_u64().unwrap() >= 5, "{faulty}");
    assert!(faulty["calls"].as_u64().unwrap() >= 9, "{faulty}");
    server.stop().await;
}

#[tokio::test]
async fn hot_reload_five_times_under_fifty_actions_per_second_loses_nothing() {
    let (server, dir) = node_with(&["room", "chat"], true).await;
    let server = Arc::new(server);
    let mut client = server.connect(511).await;
    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let versions = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let load = {
        let (server, failures, done, versions) = (
            server.clone(),
            failures.clone(),
            done.clone(),
            versions.clone(),
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            for _ in 0..250 {
                tick.tick().await;
                let (status, version) = echo_version(&server).await;
                if status == 200 {
                    versions
                        .lock()
                        .unwrap()
                        .insert(version.as_str().unwrap_or_default().to_string());
                } else {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    for swap in 0..5 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let next = if swap % 2 == 0 { "echo_v2" } else { "echo_v1" };
        install(dir.path(), "echo.wasm", &artifact(next));
        let want = if next == "echo_v2" { "2.0.0" } else { "1.0.0" };
        assert!(
            eventually(|| async { echo_version(&server).await.1 == want }).await,
            "swap {swap} to {want} live within 5 s"
        );
        let ack = client.call("echo", json!({"via": "ws"})).await;
        assert_eq!(ack["result"]["version"], want, "{ack}");
    }
    load.await.unwrap();
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "no action failed during 5 reloads"
    );
    assert_eq!(done.load(Ordering::Relaxed), 250);
    assert_eq!(versions.lock().unwrap().len(), 2);
    client.ping().await;
    let server = Arc::try_unwrap(server).ok().unwrap();
    server.stop().await;
}

#[tokio::test]
async fn a_broken_file_keeps_the_old_version_and_says_why() {
    let (server, dir) = node_with(&["room"], true).await;
    assert_eq!(echo_version(&server).await, (200, json!("1.0.0")));
    install(dir.path(), "echo.wasm", b"\0asm this is not a component");
    let failed = eventually(|| async {
        let (_, plugins) = server.admin("GET", "/admin/plugins").await;
        plugins["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "echo" && p["last_error"].is_string())
    })
    .await;
    assert!(failed, "the failure is visible in /admin/plugins");
    let (_, plugins) = server.admin("GET", "/admin/plugins").await;
    let echo = plugins["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "echo")
        .unwrap()
        .clone();
    assert_eq!(
        (echo["status"].clone(), echo["version"].clone()),
        (json!("active"), json!("1.0.0")),
        "{echo}"
    );
    assert_eq!(echo_version(&server).await, (200, json!("1.0.0")));
    server.stop().await;
}

#[tokio::test]
async fn removing_a_plugin_unloads_its_actions_and_rollback_restores_the_previous_version() {
    let (server, dir) = node_with(&["room"], true).await;
    install(dir.path(), "echo.wasm", &artifact("echo_v2"));
    assert!(eventually(|| async { echo_version(&server).await.1 == "2.0.0" }).await);
    let (status, body) = server.admin("POST", "/admin/plugins/echo/rollback").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(echo_version(&server).await, (200, json!("1.0.0")));
    std::fs::remove_file(dir.path().join("echo.wasm")).unwrap();
    assert!(
        eventually(|| async { echo_version(&server).await.0 == 404 }).await,
        "removed within 5 s"
    );
    let (status, body) = server.action(json!({"action": "echo"})).await;
    assert_eq!((status, body["error_code"].clone()), (404, json!(1007)));
    server.stop().await;
}

#[tokio::test]
async fn plugin_config_and_kv_reach_the_plugin() {
    let (server, dir) = node_with(&["room"], false).await;
    std::fs::write(dir.path().join("echo.toml"), "greeting = \"salut\"\n").unwrap();
    install(dir.path(), "echo.wasm", &artifact("echo_v1"));
    assert!(eventually(|| async { echo_version(&server).await.0 == 200 }).await);
    let (_, first) = server.action(json!({"action": "echo"})).await;
    let (_, second) = server.action(json!({"action": "echo"})).await;
    assert_eq!(first["result"]["greeting"], "salut");
    assert_eq!(
        second["result"]["calls"].as_u64().unwrap(),
        first["result"]["calls"].as_u64().unwrap() + 1
    );
    server.stop().await;
}

#[tokio::test]
async fn a_second_plugin_claiming_a_served_action_is_refused_and_the_first_keeps_serving() {
    let (server, dir) = node_with(&["room"], true).await;
    install(dir.path(), "echo_clash.wasm", &artifact("echo_clash"));
    let refused = eventually(|| async {
        let (_, plugins) = server.admin("GET", "/admin/plugins").await;
        plugins["plugins"].as_array().unwrap().iter().any(|p| {
            p["name"] == "echo_clash"
                && p["status"] == "failed"
                && p["last_error"].as_str().is_some_and(|e| e.contains("echo"))
        })
    })
    .await;
    assert!(refused, "the newcomer is refused with a clear error");
    assert_eq!(
        echo_version(&server).await,
        (200, json!("1.0.0")),
        "the first plugin keeps the action"
    );
    server.stop().await;
}

/// Contract versioning (ARCHITECTURE.md, "Plugin contract versions"): the
/// `legacy` fixture is built against the frozen `chorus:plugin@1.0.0` WIT
/// and must keep loading and running on every host: imports (kv, config,
/// room-state), effects (kv-set, notify) and both sources.
#[tokio::test]
async fn a_plugin_built_against_contract_1_0_loads_and_runs() {
    let (server, dir) = node_with(&["room", "legacy"], false).await;
    install(dir.path(), "legacy.toml", b"greeting = \"hi\"\n");
    let mut caller = server.connect(951).await;
    let mut member = server.connect(952).await;
    crate::rooms::enter_ok(&server, 951, "legacy-room", 95).await;
    crate::rooms::enter_ok(&server, 952, "legacy-room", 95).await;
    for c in [&mut caller, &mut member] {
        while c.recv_within(Duration::from_millis(150)).await.is_ok() {}
    }
    caller.send("legacy_echo", json!({})).await;
    let first = loop {
        // Its own room notification may come before the ack.
        let frame = caller.recv().await.expect("a frame");
        if frame["action"] == "ack" {
            break frame;
        }
    };
    assert_eq!(first["result"]["calls"], 1, "{first}");
    assert_eq!(first["result"]["online"], true, "{first}");
    let heard = loop {
        let frame = member.recv().await.expect("a frame");
        if frame["action"] == "legacy_echo" {
            break frame;
        }
    };
    assert_eq!(
        (heard["user_id"].clone(), heard["calls"].clone()),
        (json!(951), json!(1)),
        "{heard}"
    );
    let (status, second) = server.action(json!({"action": "legacy_echo"})).await;
    assert_eq!((status, second["result"]["calls"].clone()), (200, json!(2)));
    let config_seen = eventually(|| async {
        let (_, body) = server.action(json!({"action": "legacy_echo"})).await;
        body["result"]["config"]["greeting"] == "hi"
    })
    .await;
    assert!(config_seen, "the 1.0 config import answers");
    server.stop().await;
}

/// Contract versioning: the `legacy11` fixture is built against the
/// frozen `chorus:plugin@1.1.0` WIT and must keep loading and running,
/// with exactly the 1.1 behaviour, beside the 1.0 fixture: its 1.1 imports
/// (`kv.entry`, `room-state.room-attributes`, `membership-of`) and effects
/// (conditional `kv-put` with a TTL, `notify-via` broadcast) from both
/// sources; the admin view names each version's contract.
#[tokio::test]
async fn a_plugin_built_against_contract_1_1_loads_and_runs_beside_1_0() {
    let (server, _dir) = node_with(&["room", "legacy", "legacy11"], false).await;
    for (name, contract) in [
        ("legacy11", "1.1.0"),
        ("legacy", "1.0.0"),
        ("room", "1.2.0"),
    ] {
        let (status, detail) = server.admin("GET", &format!("/admin/plugins/{name}")).await;
        assert_eq!(status, 200, "{detail}");
        assert_eq!(detail["plugin"]["status"], "active", "{detail}");
        assert_eq!(
            detail["plugin"]["versions"][0]["contract"], contract,
            "{detail}"
        );
    }
    let mut caller = server.connect(961).await;
    let mut member = server.connect(962).await;
    crate::rooms::enter_ok(&server, 961, "legacy11-room", 96).await;
    crate::rooms::enter_ok(&server, 962, "legacy11-room", 96).await;
    for c in [&mut caller, &mut member] {
        while c.recv_within(Duration::from_millis(150)).await.is_ok() {}
    }
    caller.send("legacy11_echo", json!({})).await;
    // Its own room notification may come before the ack.
    let ack = caller.expect_skipping("ack").await;
    assert_eq!(
        ack["result"],
        json!({"calls": 1, "contract": "1.1.0"}),
        "{ack}"
    );
    let heard = member.expect_skipping("legacy11_echo").await;
    assert_eq!(
        (
            heard["user_id"].clone(),
            heard["calls"].clone(),
            heard["channel_name"].clone(),
            heard["title"].clone()
        ),
        (json!(961), json!(1), json!("legacy11-room"), Value::Null),
        "{heard}"
    );
    let (status, second) = server.action(json!({"action": "legacy11_echo"})).await;
    assert_eq!(
        (status, second["result"]["calls"].clone()),
        (200, json!(2)),
        "{second}"
    );
    // The 1.0 fixture still runs beside it.
    let (status, legacy) = server.action(json!({"action": "legacy_echo"})).await;
    assert_eq!(
        (status, legacy["result"]["calls"].clone()),
        (200, json!(1)),
        "{legacy}"
    );
    server.stop().await;
}

/// The value of the sample of `name` whose labels include all of `labels`
/// in a Prometheus exposition, if there is one.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let (labelset, value) = rest.strip_prefix('{')?.rsplit_once("} ")?;
        labels
            .iter()
            .all(|(k, v)| {
                labelset
                    .split(',')
                    .any(|pair| pair == format!("{k}=\"{v}\""))
            })
            .then(|| value.trim().parse().ok())?
    })
}

/// Contract 1.2 through the front door: the `metrics` import's records
/// land in `/metrics` under `chorus_plugin_custom_total` and
/// `chorus_plugin_custom_value`; a record past `plugins.max_metric_series`
/// or with a bad name is dropped and counted, and the call still succeeds;
/// a malformed event fails the call (2002) with nothing applied, a good
/// one is counted as handed on; a `[grants]` table without `events` or
/// `metrics` fails calls that use them (2002); the admin view shows fuel
/// per call.
#[tokio::test]
async fn contract_1_2_metrics_are_bounded_and_emitted_events_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    copy_plugins(dir.path(), &["room"]);
    install(dir.path(), "echo.wasm", &artifact("echo_v1"));
    let path = dir.path().to_path_buf();
    let server = TestServer::with(move |c| {
        c.plugins.dir = Some(path);
        c.plugins.max_metric_series = 3;
    })
    .await;
    let emit = |body: Value| {
        let server = &server;
        async move {
            let mut body = as_object(body);
            body.insert("action".into(), json!("echo_emit"));
            server.action(Value::Object(body)).await
        }
    };
    let counter =
        |tier: &str, delta: u64| json!({"name": "hits", "labels": {"tier": tier}, "delta": delta});
    let metrics = json!([counter("a", 2), counter("b", 1), counter("a", 3),
        {"name": "size", "labels": {}, "value": "2.5"},
        counter("c", 1), {"name": "Bad-Name", "labels": {}, "delta": 1}]);
    let (status, body) = emit(json!({"metrics": metrics})).await;
    assert_eq!((status, body["result"].clone()), (200, json!({})), "{body}");
    let text = server.metrics_text().await;
    let echo = [("plugin", "echo"), ("version", "1.0.0")];
    let hits = |tier| {
        let mut labels = echo.to_vec();
        labels.extend([("metric", "hits"), ("tier", tier)]);
        sample(&text, "chorus_plugin_custom_total", &labels)
    };
    assert_eq!(
        (hits("a"), hits("b"), hits("c")),
        (Some(5.0), Some(1.0), None),
        "{text}"
    );
    let mut size = echo.to_vec();
    size.push(("metric", "size"));
    assert_eq!(
        sample(&text, "chorus_plugin_custom_value_count", &size),
        Some(1.0)
    );
    let refused = |reason| {
        sample(
            &text,
            "chorus_plugin_metric_series_refused_total",
            &[("plugin", "echo"), ("reason", reason)],
        )
    };
    assert_eq!(
        (refused("series_limit"), refused("invalid")),
        (Some(1.0), Some(1.0))
    );
    // Without `[grants]` the default grants `events`.
    let event = json!({"events": [{"name": "gift.sent", "body": "{\"n\":1}"}]});
    let (status, body) = emit(event.clone()).await;
    assert_eq!(status, 200, "{body}");
    let text = server.metrics_text().await;
    let emitted = sample(
        &text,
        "chorus_plugin_events_emitted_total",
        &[("plugin", "echo")],
    );
    assert!(emitted.is_some_and(|n| n >= 1.0), "{text}");
    for bad in [
        json!({"name": "Gift.sent", "body": "{}"}),
        json!({"name": "gift.sent", "body": "[1]"}),
        json!({"name": "gift.sent", "pad": 4090}),
    ] {
        let (status, body) = emit(json!({"events": [bad]})).await;
        assert_eq!(
            (status, body["error_code"].clone()),
            (503, json!(2002)),
            "{bad}: {body}"
        );
    }
    // A `[grants]` table grants what it lists: neither `events` nor
    // `metrics` here.
    install(
        dir.path(),
        "echo.toml",
        b"[grants]\neffects = [\"kv\"]\nimports = [\"kv\", \"config\"]\n",
    );
    let refused = eventually(|| async { emit(event.clone()).await.0 == 503 }).await;
    assert!(refused, "the [grants] table applies after the reload");
    let (status, body) = emit(event.clone()).await;
    assert_eq!(
        (status, body["error_code"].clone()),
        (503, json!(2002)),
        "{body}"
    );
    let (status, body) = emit(json!({"metrics": [counter("a", 1)]})).await;
    assert_eq!(
        (status, body["error_code"].clone()),
        (503, json!(2002)),
        "{body}"
    );
    let (_, detail) = server.admin("GET", "/admin/plugins/echo").await;
    let live = detail["plugin"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["active"] == true)
        .unwrap()
        .clone();
    assert_eq!(live["contract"], "1.2.0", "{live}");
    let (p50, p99) = (live["fuel_p50"].as_u64(), live["fuel_p99"].as_u64());
    assert!(p50.is_some_and(|f| f > 0) && p99 >= p50, "{live}");
    server.stop().await;
}

/// Contract 1.1 KV through the front door: versions, a stale condition
/// (re-run, then 2003 since the plugin writes the same stale version
/// every time), counters, TTL expiry, prefix listing, and the bad input
/// of the issue: a TTL of 0 or over 30 days fails the call (2002, a
/// plugin bug), a counter on a non-integer is a conflict (2003).
#[tokio::test]
async fn kv_versions_conditions_counters_ttl_and_bad_input() {
    let (server, _dir) = node_with(&["room"], true).await;
    let kv = |body: Value| {
        let server = &server;
        async move {
            let mut body = as_object(body);
            body.insert("action".into(), json!("echo_kv"));
            server.action(Value::Object(body)).await
        }
    };
    assert_eq!(
        kv(json!({"key": "n", "value": "1", "if_version": 0}))
            .await
            .0,
        200
    );
    let (_, read) = kv(json!({"key": "n"})).await;
    let version = read["result"]["entry"]["version"]
        .as_u64()
        .expect("a version");
    assert_eq!(read["result"]["entry"]["value"], "1");
    let (status, stale) = kv(json!({"key": "n", "value": "2", "if_version": 0})).await;
    assert_eq!(
        (status, stale["error_code"].clone()),
        (409, json!(2003)),
        "{stale}"
    );
    let (status, _) = kv(json!({"key": "n", "value": "2", "if_version": version})).await;
    assert_eq!(status, 200);
    assert_eq!(kv(json!({"key": "n", "delta": 40})).await.0, 200);
    let (_, read) = kv(json!({"key": "n"})).await;
    assert_eq!(read["result"]["entry"]["value"], "42");
    for ttl in [0, 2_592_000_001u64] {
        let (status, body) = kv(json!({"key": "t", "value": "x", "ttl_ms": ttl})).await;
        assert_eq!(
            (status, body["error_code"].clone()),
            (503, json!(2002)),
            "{ttl}: {body}"
        );
    }
    assert_eq!(kv(json!({"key": "s", "value": "word"})).await.0, 200);
    let (status, body) = kv(json!({"key": "s", "delta": 1})).await;
    assert_eq!(
        (status, body["error_code"].clone()),
        (409, json!(2003)),
        "{body}"
    );
    assert_eq!(
        kv(json!({"key": "n_short", "value": "x", "ttl_ms": 100}))
            .await
            .0,
        200
    );
    let (_, read) = kv(json!({"key": "n"})).await;
    assert_eq!(read["result"]["keys"], json!(["n", "n_short"]));
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (_, read) = kv(json!({"key": "n_short"})).await;
    assert_eq!(read["result"]["entry"], Value::Null, "expired");
    let (_, read) = kv(json!({"key": "n"})).await;
    assert_eq!(read["result"]["keys"], json!(["n"]));
    server.stop().await;
}
