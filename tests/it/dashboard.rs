//! The bundled Grafana dashboard (`docs/grafana/chorus-plugins.json`)
//! against a live node: every metric name its queries use is exported by
//! `/metrics` once a node has done the work each panel charts, so the
//! dashboard cannot silently rot when a metric is renamed or removed.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

/// The dashboard, parsed.
fn dashboard() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/grafana/chorus-plugins.json"
    );
    let text = std::fs::read_to_string(path).expect("the dashboard is in docs/grafana");
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// Every PromQL expression of the dashboard: panel targets' `expr` and
/// the query variables' `definition`.
fn expressions(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr" | "definition", Value::String(e)) => out.push(e.clone()),
                    _ => expressions(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| expressions(v, out)),
        _ => {}
    }
}

/// The `chorus_*` metric names an expression uses.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("chorus_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// The sample names of a Prometheus exposition (`name{…} value` or
/// `name value` lines).
fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

/// The dashboard is importable (a Prometheus datasource variable that
/// every panel and target uses, a uid, panels) and every metric its
/// queries name is exported by a node that served the traffic the
/// panels chart: connections and frames, API requests, plugin calls of
/// the bundled plugins (gift counts `gifts_sent` and emits `gift.sent`),
/// a shadow version beside the live `echo`, a plugin histogram and a
/// refused metric record.
///
/// The metrics recorder is the process's: other tests' series show too,
/// so this test only ever asserts that names are present.
#[tokio::test]
async fn every_metric_the_dashboard_charts_is_exported() {
    let dashboard = dashboard();
    assert_eq!(dashboard["uid"], "chorus-plugins");
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    assert!(
        variables.iter().any(|v| v["name"] == "datasource"
            && v["type"] == "datasource"
            && v["query"] == "prometheus"),
        "a Prometheus datasource variable"
    );
    let panels = dashboard["panels"].as_array().expect("panels");
    let charts: Vec<&Value> = panels.iter().filter(|p| p["type"] != "row").collect();
    assert!(charts.len() >= 15, "{} panels", charts.len());
    for panel in &charts {
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "{}",
            panel["title"]
        );
        for target in panel["targets"].as_array().expect("targets") {
            assert_eq!(
                target["datasource"]["uid"], "${datasource}",
                "{}",
                panel["title"]
            );
        }
    }
    let mut exprs = Vec::new();
    expressions(&dashboard, &mut exprs);
    let used: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    assert!(used.len() >= 15, "{used:?}");

    let dir = bundled_with(&[]);
    std::fs::copy(artifacts().join("echo_v1.wasm"), dir.join("echo.wasm")).unwrap();
    std::fs::copy(
        artifacts().join("echo_v2.wasm"),
        dir.join("echo.shadow.wasm"),
    )
    .unwrap();
    let path = dir.clone();
    let server = TestServer::with(move |c| c.plugins.dir = Some(path)).await;
    let mut sender = server.connect(1931).await;
    let mut receiver = server.connect(1932).await;
    crate::rooms::enter_ok(&server, 1931, "dashboard-room", 93).await;
    crate::rooms::enter_ok(&server, 1932, "dashboard-room", 93).await;
    let gift = json!({"action": "send_gift", "channel_name": "dashboard-room", "notify_type": "bc",
        "gift": {"id": 5, "sender_id": 1931, "receiver_id": 1932, "num": 1, "name": "rose"}});
    let (status, body) = server.action(gift).await;
    assert_eq!(status, 200, "{body}");
    receiver.expect_skipping("send_gift").await;
    sender.send("echo", json!({"n": 1})).await;
    let echo = sender.expect_skipping("ack").await;
    assert_eq!(echo["result"]["version"], "1.0.0", "{echo}");
    // A histogram, and 65 records in one call: the last is refused
    // (`per_call_limit`). Names and reasons unlike those of the plugins
    // tests, which share this process's recorder.
    let mut records = vec![json!({"name": "dashboard_size", "labels": {}, "value": "1.5"})];
    records.extend((0..64).map(|_| json!({"name": "dashboard_hits", "labels": {}, "delta": 1})));
    let metrics = Value::Array(records);
    let (status, body) = server
        .action(json!({"action": "echo_emit", "metrics": metrics}))
        .await;
    assert_eq!(status, 200, "{body}");
    // The shadow's comparison is counted after the live reply returned.
    let shadowed = eventually(|| async {
        let (_, detail) = server.admin("GET", "/admin/plugins/echo").await;
        detail["plugin"]["shadow"]["events"].as_u64() >= Some(1)
    })
    .await;
    assert!(shadowed, "the shadow saw the echo");
    sender.ping().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let text = server.metrics_text().await;
    let names = exported(&text);
    let missing: Vec<&String> = used.iter().filter(|n| !names.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard charts metrics /metrics does not export: {missing:?}"
    );
    server.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}
