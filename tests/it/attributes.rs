//! Room attributes and roles (contract 1.1, issue 13 item 4): the server
//! API's `/api/v1/rooms/{channel_name}/attributes`, the plugins'
//! `set-room-attr` effect and `room-attributes` read, their lifetime, and
//! the bundled plugins' owner/admin rules for client actions.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;
use crate::rooms::enter_ok;

/// `POST /api/v1/rooms/{channel}/attributes` with `body`.
pub async fn set_attrs(server: &TestServer, channel: &str, body: Value) -> (u16, Value) {
    let path = format!("/api/v1/rooms/{channel}/attributes");
    server.api("POST", &path, Some(body)).await
}

/// `GET /api/v1/rooms/{channel}/attributes`.
pub async fn get_attrs(server: &TestServer, channel: &str) -> (u16, Value) {
    let path = format!("/api/v1/rooms/{channel}/attributes");
    server.api("GET", &path, None).await
}

/// Sets attributes and asserts success; the answer.
pub async fn set_attrs_ok(server: &TestServer, channel: &str, set: Value) -> Value {
    let (status, body) = set_attrs(server, channel, json!({ "set": set })).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// What `echo_attr` reads of `room_d1`.
async fn read(server: &TestServer) -> Value {
    let (status, body) = server
        .action(json!({"action": "echo_attr", "channel_name": "room_d1"}))
        .await;
    assert_eq!(status, 200, "{body}");
    body["result"].clone()
}

/// `echo.toml` granting what `echo_attr` uses: room attributes.
pub const ECHO_ATTR_GRANTS: &str = "[grants]\n\
    effects = [\"kv\", \"room-attributes\"]\n\
    imports = [\"room-state\", \"kv\", \"config\", \"clock\", \"log\"]\n";

/// A node with the echo fixture (granted room attributes) beside the
/// bundled plugins it needs.
async fn node_with_echo(dir: &std::path::Path) -> TestServer {
    copy_plugins(dir, &["room", "seat", "notice"]);
    std::fs::copy(artifacts().join("echo_v1.wasm"), dir.join("echo.wasm")).unwrap();
    std::fs::write(dir.join("echo.toml"), ECHO_ATTR_GRANTS).unwrap();
    let path = dir.to_path_buf();
    TestServer::with(move |c| {
        c.plugins.dir = Some(path);
        // The request's `value` may pass the attribute bound (1024 bytes),
        // so that the effect's own bound is what refuses an oversized one.
        c.limits.fields.insert("value".into(), 4096);
    })
    .await
}

#[tokio::test]
async fn the_app_backend_sets_reads_and_conditionally_changes_attributes() {
    let server = TestServer::start().await;
    // Before anyone is in the room: version 0, nothing.
    let (status, body) = get_attrs(&server, "room_a1").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"error_code": 0, "error_reason": "", "channel_name": "room_a1", "version": 0, "attributes": {}})
    );
    // The owner is set before anyone enters, and stays when someone does.
    let first = set_attrs_ok(
        &server,
        "room_a1",
        json!({"owner": "501", "title": "Friday"}),
    )
    .await;
    let v1 = first["version"].as_u64().expect("a version");
    assert!(v1 > 0, "{first}");
    assert_eq!(
        first["attributes"],
        json!({"owner": "501", "title": "Friday"})
    );
    enter_ok(&server, 502, "room_a1", 1).await;
    let (_, read) = get_attrs(&server, "room_a1").await;
    assert_eq!(read["version"], v1, "{read}");
    assert_eq!(read["attributes"]["owner"], "501");
    // A condition on an old version is refused and changes nothing.
    let stale = json!({"set": {"mode": "ktv"}, "if_version": v1 + 100});
    let (status, body) = set_attrs(&server, "room_a1", stale).await;
    assert_eq!(
        (status, body["error_code"].as_u64()),
        (409, Some(2003)),
        "{body}"
    );
    assert_eq!(
        body["error_reason"],
        format!(
            "room room_a1 attributes are at version {v1}, not {}",
            v1 + 100
        )
    );
    // On the version read, delete and set in one request.
    let write =
        json!({"set": {"mode": "ktv", "admins": "503,504"}, "delete": ["title"], "if_version": v1});
    let (status, body) = set_attrs(&server, "room_a1", write).await;
    assert_eq!(status, 200, "{body}");
    let v2 = body["version"].as_u64().unwrap();
    assert!(v2 > v1, "{body}");
    assert_eq!(
        body["attributes"],
        json!({"admins": "503,504", "mode": "ktv", "owner": "501"})
    );
    // `if_version` 0 means "has none": refused now.
    let (status, _) = set_attrs(
        &server,
        "room_a1",
        json!({"set": {"x": "1"}, "if_version": 0}),
    )
    .await;
    assert_eq!(status, 409);
    // `clear` removes everything; the version is 0 again.
    let (status, body) =
        set_attrs(&server, "room_a1", json!({"clear": true, "if_version": v2})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["version"].as_u64(), &body["attributes"]),
        (Some(0), &json!({}))
    );
    server.stop().await;
}

#[tokio::test]
async fn malformed_or_oversized_attributes_are_refused_by_name_and_change_nothing() {
    let server = TestServer::with(|c| {
        c.rooms.attributes.max_keys = 3;
        c.rooms.attributes.max_key_bytes = 8;
        c.rooms.attributes.max_value_bytes = 16;
    })
    .await;
    set_attrs_ok(&server, "room_b1", json!({"owner": "7", "title": "t"})).await;
    let cases = [
        (
            json!({"set": {"title": 3}}),
            400,
            1001,
            "`set.title` must be a string",
        ),
        (
            json!({"set": ["x"]}),
            400,
            1001,
            "`set` must be an object of strings",
        ),
        (
            json!({"delete": "title"}),
            400,
            1001,
            "`delete` must be an array of strings",
        ),
        (
            json!({"delete": ["a", 1]}),
            400,
            1001,
            "`delete[1]` must be a string",
        ),
        (
            json!({"clear": 1}),
            400,
            1001,
            "`clear` must be true or false",
        ),
        (
            json!({"set": {"a": "1"}, "if_version": -1}),
            400,
            1001,
            "`if_version` must be a non-negative integer",
        ),
        (
            json!({"set": {"a": "1"}, "colour": "red"}),
            400,
            1001,
            "unknown field `colour`",
        ),
        (
            json!({}),
            400,
            1002,
            "one of `set`, `delete` or `clear` is required",
        ),
        (
            json!({"set": {"a": "1"}, "delete": ["a"]}),
            400,
            1001,
            "`a` is both set and deleted",
        ),
        (
            json!({"set": {"longerkey": "1"}}),
            400,
            1001,
            "attribute key `longerkey…` is longer than 8 bytes",
        ),
        (
            json!({"set": {"": "1"}}),
            400,
            1001,
            "an attribute key must not be empty",
        ),
        (
            json!({"set": {"title": "x".repeat(17)}}),
            400,
            1001,
            "attribute `title` is longer than 16 bytes",
        ),
        (
            json!({"set": {"owner": "seven"}}),
            400,
            1001,
            "attribute `owner` must be a user id in decimal",
        ),
        (
            json!({"set": {"admins": "1, 2"}}),
            400,
            1001,
            "attribute `admins` must be user ids in decimal separated by commas",
        ),
        (
            json!({"set": {"a": "1", "b": "2"}}),
            409,
            2003,
            "room room_b1 already has 3 attributes, the most allowed",
        ),
    ];
    for (body, status, code, reason) in cases {
        let (got, answer) = set_attrs(&server, "room_b1", body.clone()).await;
        assert_eq!(
            (got, &answer["error_code"], &answer["error_reason"]),
            (status, &json!(code), &json!(reason)),
            "{body}"
        );
    }
    let (status, answer) = server
        .api_text(
            "POST",
            "/api/v1/rooms/room_b1/attributes",
            "{not json".into(),
        )
        .await;
    assert_eq!(
        (status, answer["error_code"].as_u64()),
        (400, Some(1001)),
        "{answer}"
    );
    let long = "r".repeat(129);
    let (status, answer) = get_attrs(&server, &long).await;
    assert_eq!(
        (status, answer["error_code"].as_u64()),
        (400, Some(1001)),
        "{answer}"
    );
    // Nothing of the refused requests was applied; exactly 3 keys fit
    // (replacing one is not adding one).
    let (_, read) = get_attrs(&server, "room_b1").await;
    assert_eq!(read["attributes"], json!({"owner": "7", "title": "t"}));
    set_attrs_ok(&server, "room_b1", json!({"a": "1", "title": "u"})).await;
    server.stop().await;
}

#[tokio::test]
async fn attributes_never_expire_while_anyone_is_in_the_room_and_expire_once_it_is_empty() {
    let server =
        TestServer::with(|c| c.rooms.attributes.idle_ttl = Duration::from_millis(300)).await;
    enter_ok(&server, 521, "room_c1", 1).await;
    set_attrs_ok(&server, "room_c1", json!({"owner": "521"})).await;
    // Well past the idle time, a member keeps them.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let (_, read) = get_attrs(&server, "room_c1").await;
    assert_eq!(read["attributes"], json!({"owner": "521"}), "{read}");
    let (status, body) = server
        .action(json!({"action": "exit_room", "user_id": 521, "channel_name": "room_c1"}))
        .await;
    assert_eq!(status, 200, "{body}");
    let gone = eventually(|| async {
        let (_, read) = get_attrs(&server, "room_c1").await;
        read["version"] == 0 && read["attributes"] == json!({})
    })
    .await;
    assert!(
        gone,
        "the attributes of an empty room expire after rooms.attributes.idle_ttl"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_plugin_reads_and_writes_attributes_with_a_version_condition() {
    let dir = tempfile::tempdir().unwrap();
    let server = node_with_echo(dir.path()).await;
    assert_eq!(read(&server).await, json!({"version": 0, "entries": []}));
    let set = json!({"action": "echo_attr", "channel_name": "room_d1", "key": "title", "value": "hi", "if_version": 0});
    let (status, body) = server.action(set.clone()).await;
    assert_eq!(status, 200, "{body}");
    let seen = read(&server).await;
    assert_eq!(seen["entries"], json!([["title", "hi"]]));
    let (_, api) = get_attrs(&server, "room_d1").await;
    assert_eq!(
        api["version"], seen["version"],
        "one version for plugins and the API"
    );
    // The same condition again is stale: re-run on fresh state, still
    // stale (the payload names the version), so 2003 after the retries.
    let (status, body) = server.action(set).await;
    assert_eq!(
        (status, body["error_code"].as_u64()),
        (409, Some(2003)),
        "{body}"
    );
    // A read-modify-write the host re-runs: counts exactly.
    for expected in 1..=3 {
        let incr =
            json!({"action": "echo_attr", "channel_name": "room_d1", "key": "n", "incr": true});
        let (status, body) = server.action(incr).await;
        assert_eq!(
            (status, body["result"]["n"].as_u64()),
            (200, Some(expected)),
            "{body}"
        );
    }
    // A value over the bound is a plugin bug: 2002, nothing applied.
    let big = json!({"action": "echo_attr", "channel_name": "room_d1", "key": "title", "value": "x".repeat(1025)});
    let (status, body) = server.action(big).await;
    assert_eq!(
        (status, body["error_code"].as_u64()),
        (503, Some(2002)),
        "{body}"
    );
    let delete =
        json!({"action": "echo_attr", "channel_name": "room_d1", "key": "title", "delete": true});
    assert_eq!(server.action(delete).await.0, 200);
    assert_eq!(read(&server).await["entries"], json!([["n", "3"]]));
    server.stop().await;
}

#[tokio::test]
async fn only_the_owner_or_an_admin_locks_seats_and_posts_notices_from_a_client() {
    let server = TestServer::start().await;
    for user in [531, 532, 533] {
        enter_ok(&server, user, "room_e1", 1).await;
    }
    set_attrs_ok(&server, "room_e1", json!({"owner": "531", "admins": "532"})).await;
    let mut owner = server.connect(531).await;
    let mut admin = server.connect(532).await;
    let mut member = server.connect(533).await;
    // A member who manages nothing is refused, and nothing changes.
    let refused = member
        .call(
            "lock_seat",
            json!({"channel_name": "room_e1", "seat_id": 2}),
        )
        .await;
    assert_eq!(refused["action"], "error", "{refused}");
    assert_eq!(refused["error_code"], 2004);
    assert_eq!(
        refused["error_reason"],
        "user 533 is neither the owner nor an admin of `room_e1`"
    );
    let ack = owner
        .call(
            "lock_seat",
            json!({"channel_name": "room_e1", "seat_id": 2}),
        )
        .await;
    assert_eq!(ack["action"], "ack", "{ack}");
    let (_, room) = server.api("GET", "/api/v1/rooms/room_e1", None).await;
    assert_eq!(room["seats"][1]["status"], 2, "{room}");
    let ack = admin
        .call(
            "unlock_seat",
            json!({"channel_name": "room_e1", "seat_id": 2}),
        )
        .await;
    assert_eq!(ack["action"], "ack", "{ack}");
    let (_, room) = server.api("GET", "/api/v1/rooms/room_e1", None).await;
    assert_eq!(room["seats"][1]["status"], 0, "{room}");
    // The app backend's lock is unchanged: no role needed.
    let (status, body) = server
        .action(json!({"action": "lock_seat", "channel_name": "room_e1", "seat_id": 3}))
        .await;
    assert_eq!(status, 200, "{body}");
    // Notices: an admin posts to the room it manages; the room hears it.
    let notice = json!({"channel_name": "room_e1", "content": "welcome", "expire_time": 5});
    let ack = admin.call("room_notice", notice.clone()).await;
    let heard = member.expect("room_notice").await;
    assert_eq!(heard["content"], "welcome");
    assert_eq!(heard["channel_name"], "room_e1");
    let own = admin.expect("ack").await;
    assert_eq!(
        ack["action"], "room_notice",
        "the admin hears its notice first: {ack}"
    );
    assert_eq!(own["ref_action"], "room_notice");
    owner.expect("room_notice").await;
    let refused = member.call("room_notice", notice).await;
    assert_eq!(refused["error_code"], 2004, "{refused}");
    // A client cannot post to everyone.
    let refused = owner.call("room_notice", json!({"content": "all"})).await;
    assert_eq!(refused["error_code"], 1002, "{refused}");
    server.stop().await;
}
