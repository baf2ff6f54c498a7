//! Operations (PROTOCOL section 9): the admin listener, its auth, the
//! plugin view, and Prometheus metrics that move with traffic.

use serde_json::{Value, json};
use sha2_check::sha256_hex;

use crate::harness::*;
use crate::rooms::enter_ok;

mod sha2_check {
    /// Hex sha256 via the protocol crate's HMAC-free path: the admin API
    /// must report the sha256 of the file's bytes.
    pub fn sha256_hex(bytes: &[u8]) -> String {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(bytes))
    }
}

/// Checks that `text` is Prometheus exposition text: comments, and
/// `name{labels} value` lines whose value is a number.
fn assert_prometheus(text: &str) {
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        assert!(
            value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
            "bad value: {line}"
        );
        let name = series.split('{').next().unwrap();
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad name: {line}"
        );
        if series.contains('{') {
            assert!(series.ends_with('}'), "bad labels: {line}");
        }
    }
}

/// The value of the first series of `name` whose labels contain `labels`.
fn sample(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

#[tokio::test]
async fn health_readiness_and_metrics_need_no_token_and_metrics_move_with_traffic() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    for path in ["/healthz", "/readyz"] {
        let response = http.get(server.admin_url(path)).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "{path}");
    }
    let before = server.metrics_text().await;
    assert_prometheus(&before);
    let mut client = server.connect(601).await;
    for _ in 0..3 {
        client.ping().await;
    }
    enter_ok(&server, 601, "room_m", 1).await;
    client.expect("enter_room").await;
    let after = server.metrics_text().await;
    assert_prometheus(&after);
    let pings = |t: &str| sample(t, "chorus_frames_in_total", "action=\"ping\"");
    assert!(pings(&after) >= pings(&before) + 3.0, "frames in moved");
    for name in [
        "chorus_connections_opened_total",
        "chorus_plugin_calls_total",
        "chorus_http_requests_total",
        "chorus_plugin_call_duration_seconds_bucket",
    ] {
        assert!(after.contains(name), "{name} is exported");
    }
    assert!(
        sample(
            &after,
            "chorus_http_requests_total",
            "route=\"/api/v1/actions\""
        ) >= 1.0
    );
    server.stop().await;
}

#[tokio::test]
async fn admin_routes_refuse_a_missing_or_wrong_token() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    for path in [
        "/admin/plugins",
        "/admin/connections",
        "/admin/users/1",
        "/admin/rooms/x",
    ] {
        let none = http.get(server.admin_url(path)).send().await.unwrap();
        assert_eq!(none.status().as_u16(), 401, "{path}");
        let wrong = http
            .get(server.admin_url(path))
            .bearer_auth("nope")
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status().as_u16(), 401, "{path}");
    }
    let reload = http
        .post(server.admin_url("/admin/plugins/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(reload.status().as_u16(), 401);
    server.stop().await;
}

#[tokio::test]
async fn admin_plugins_lists_every_plugin_with_its_file_hash_and_counters() {
    let dir = tempfile::tempdir().unwrap();
    copy_plugins(dir.path(), &["room", "chat"]);
    let path = dir.path().to_path_buf();
    let server = TestServer::with(move |c| c.plugins.dir = Some(path)).await;
    enter_ok(&server, 611, "room_p", 2).await;
    let (status, body) = server.admin("GET", "/admin/plugins").await;
    assert_eq!(status, 200);
    let plugins = body["plugins"].as_array().unwrap();
    let names: Vec<_> = plugins
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let room = plugins.iter().find(|p| p["name"] == "room").unwrap();
    let bytes = std::fs::read(dir.path().join("room.wasm")).unwrap();
    assert_eq!(room["sha256"], sha256_hex(&bytes));
    assert_eq!(room["status"], "active");
    assert_eq!(room["last_error"], Value::Null);
    assert!(
        room["actions"]
            .as_array()
            .unwrap()
            .contains(&json!("enter_room")),
        "{room}"
    );
    assert!(room["calls"].as_u64().unwrap() >= 1);
    assert_eq!(room["errors"], 0);
    assert!(room["loaded_at"].as_u64().unwrap().abs_diff(now()) < 60);
    assert!(room["version"].is_string());
    let (status, body) = server.admin("POST", "/admin/plugins/reload").await;
    assert_eq!(status, 200, "{body}");
    server.stop().await;
}

#[tokio::test]
async fn admin_rooms_users_and_connections_show_live_state() {
    let server = TestServer::start().await;
    let _client = server.connect(621).await;
    enter_ok(&server, 621, "room_a", 3).await;
    let (status, room) = server.admin("GET", "/admin/rooms/room_a").await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            room["members"].clone(),
            room["online_here"].clone(),
            room["room_id"].clone()
        ),
        (json!([621]), json!([621]), json!(3))
    );
    let (status, user) = server.admin("GET", "/admin/users/621").await;
    assert_eq!(status, 200);
    assert_eq!(
        (user["online"].clone(), user["channel_name"].clone()),
        (json!(true), json!("room_a"))
    );
    let (status, conns) = server.admin("GET", "/admin/connections").await;
    assert_eq!(status, 200);
    assert_eq!(conns["connections"], 1);
    assert_eq!(server.admin("GET", "/admin/rooms/nobody_here").await.0, 404);
    server.stop().await;
}

/// `plugins.bundled` (default true): a folder adds to the bundled plugins;
/// a file of a bundled plugin's name replaces it, and removing the file
/// brings the bundled one back, all without a restart.
#[tokio::test]
async fn the_bundled_plugins_serve_beside_a_plugins_folder() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        artifacts().join("echo_v1.wasm"),
        dir.path().join("echo.wasm"),
    )
    .unwrap();
    let path = dir.path().to_path_buf();
    let server = TestServer::with(move |c| {
        c.plugins.dir = Some(path);
        c.plugins.bundled = true;
    })
    .await;
    // The folder's plugin and the bundled ones serve together.
    let (status, body) = server.action(json!({"action": "echo"})).await;
    assert_eq!(status, 200, "{body}");
    enter_ok(&server, 631, "room_b", 1).await;
    let sha_of = |body: &Value, name: &str| {
        body["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .map(|p| p["sha256"].as_str().unwrap().to_string())
    };
    let (_, listed) = server.admin("GET", "/admin/plugins").await;
    let bundled_gift = sha_of(&listed, "gift").expect("the bundled gift serves");
    assert!(sha_of(&listed, "room").is_some(), "{listed}");

    // A file named like a bundled plugin replaces it...
    let v2 = std::fs::read(artifacts().join("gift_v2.wasm")).unwrap();
    let tmp = dir.path().join(".gift.wasm.tmp");
    std::fs::write(&tmp, &v2).unwrap();
    std::fs::rename(&tmp, dir.path().join("gift.wasm")).unwrap();
    let (status, _) = server.admin("POST", "/admin/plugins/reload").await;
    assert_eq!(status, 200);
    let (_, listed) = server.admin("GET", "/admin/plugins").await;
    assert_eq!(sha_of(&listed, "gift"), Some(sha256_hex(&v2)), "{listed}");
    // ...and removing the file brings the bundled one back.
    std::fs::remove_file(dir.path().join("gift.wasm")).unwrap();
    let (status, _) = server.admin("POST", "/admin/plugins/reload").await;
    assert_eq!(status, 200);
    let (_, listed) = server.admin("GET", "/admin/plugins").await;
    assert_eq!(sha_of(&listed, "gift"), Some(bundled_gift), "{listed}");
    server.stop().await;

    // `plugins.bundled = false`: the folder's plugins only.
    let path = dir.path().to_path_buf();
    let server = TestServer::with(move |c| c.plugins.dir = Some(path)).await;
    let (status, body) = server.action(json!({"action": "echo"})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = crate::rooms::enter(&server, 632, "room_b", 1, json!({})).await;
    assert_eq!(
        (status, body["error_code"].clone()),
        (404, json!(1007)),
        "{body}"
    );
    server.stop().await;
}
