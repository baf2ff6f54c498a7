//! Profiles from the app backend (contract 1.1, issue 13 item 5): the
//! `profile` of `POST /api/v1/sessions`, `POST /api/v1/profiles`, and the
//! bundled plugins filling notifications from them, so a client can no
//! longer show another name.

use serde_json::{Value, json};

use crate::harness::*;
use crate::rooms::{enter_ok, profile};

/// The profile the app backend stores for `user_id` in these tests.
pub fn backend_profile(user_id: u64, nickname: &str) -> Value {
    json!({
        "nickname": nickname,
        "sex": 2,
        "avatar_url": format!("https://cdn.example/{user_id}.png"),
        "avatar_small_url": format!("https://cdn.example/{user_id}_s.png"),
        "i_segment": "stars",
    })
}

/// `POST /api/v1/sessions` with a profile; asserts success.
pub async fn session_with_profile(server: &TestServer, user_id: u64, profile: Value) {
    let body = json!({"user_id": user_id, "ttl_s": 3600, "profile": profile});
    let (status, answer) = server.api("POST", "/api/v1/sessions", Some(body)).await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer["sid"].as_str().is_some_and(|s| !s.is_empty()),
        "{answer}"
    );
}

/// `enter_room` from the app backend with only the fields it must name.
async fn enter_bare(server: &TestServer, user_id: u64, channel: &str) -> (u16, Value) {
    server
        .action(json!({"action": "enter_room", "user_id": user_id, "channel_name": channel, "room_id": 1}))
        .await
}

#[tokio::test]
async fn a_backend_profile_fills_notifications_and_overrides_a_forged_client_nickname() {
    // Client gifts allowed (they are server-only by default), with gift 9
    // in the catalog, so a client's forged gift names can be tried.
    let dir = bundled_with(&[("gift.toml", "[catalog.9]\nname = \"rose\"\n")]);
    let server = TestServer::with(move |c| {
        c.plugins.dir = Some(dir);
        allow_client_gifts(c);
    })
    .await;
    session_with_profile(&server, 601, backend_profile(601, "Alice")).await;
    session_with_profile(&server, 602, backend_profile(602, "Bob")).await;
    let mut alice = server.connect(601).await;
    let mut bob = server.connect(602).await;
    // enter_room without any profile field: the stored one is shown.
    let (status, body) = enter_bare(&server, 602, "room_p1").await;
    assert_eq!(status, 200, "{body}");
    bob.expect("enter_room").await;
    let (status, body) = enter_bare(&server, 601, "room_p1").await;
    assert_eq!(status, 200, "{body}");
    let entered = bob.expect("enter_room").await;
    assert_eq!(entered["nickname"], "Alice", "{entered}");
    assert_eq!(entered["sex"], 2);
    assert_eq!(entered["avatar_url"], "https://cdn.example/601.png");
    assert_eq!(entered["avatar_small_url"], "https://cdn.example/601_s.png");
    assert_eq!(
        (&entered["i_segment"], &entered["i_segment_text"]),
        (&json!("stars"), &json!("明星"))
    );
    alice.expect("enter_room").await;
    // up without profile fields: the stored profile in room_seat.
    let (status, body) = server
        .action(json!({"action": "up", "user_id": 601, "channel_name": "room_p1"}))
        .await;
    assert_eq!(status, 200, "{body}");
    let up = bob.expect("up").await;
    assert_eq!(up["room_seat"]["nickname"], "Alice", "{up}");
    assert_eq!(up["room_seat"]["avatar_url"], "https://cdn.example/601.png");
    alice.expect("up").await;
    // A client forging its name in chat: the room sees the stored one.
    let forged = json!({"channel_name": "room_p1", "content": "hi", "nickname": "Mallory", "sex": 1, "avatar_url": "https://evil.example/x.png"});
    alice.send("send_topic_msg", forged).await;
    let chat = bob.expect("send_topic_msg").await;
    assert_eq!(chat["nickname"], "Alice", "{chat}");
    assert_eq!(chat["sex"], 2);
    assert_eq!(chat["avatar_url"], "https://cdn.example/601.png");
    assert_eq!(alice.expect("send_topic_msg").await["nickname"], "Alice");
    alice.expect("ack").await;
    // A gift naming another sender and receiver: the stored names.
    let gift = json!({"channel_name": "room_p1", "notify_type": "bc", "gift": {
        "id": 9, "receiver_id": 602, "num": 1, "name": "rose",
        "sender_nickname": "Mallory", "receiver_nickname": "Eve"}});
    alice.send("send_gift", gift).await;
    let sent = bob.expect("send_gift").await;
    assert_eq!(sent["gift"]["sender_nickname"], "Alice", "{sent}");
    assert_eq!(sent["gift"]["receiver_nickname"], "Bob");
    // The app backend naming a field in its own request keeps it.
    let mut body = json!({"action": "send_topic_msg", "user_id": 602, "channel_name": "room_p1", "content": "host"});
    body.as_object_mut().unwrap().extend(as_object(
        json!({"nickname": "Stage name", "sex": 0, "avatar_url": "", "avatar_small_url": ""}),
    ));
    let (status, answer) = server.action(body).await;
    assert_eq!(status, 200, "{answer}");
    alice.expect("send_gift").await;
    alice.expect("ack").await;
    let heard = alice.expect("send_topic_msg").await;
    assert_eq!(heard["nickname"], "Stage name", "{heard}");
    server.stop().await;
}

#[tokio::test]
async fn without_a_profile_the_fields_sent_are_used_as_the_seed_does() {
    let server = TestServer::start().await;
    enter_ok(&server, 611, "room_p2", 1).await;
    enter_ok(&server, 612, "room_p2", 1).await;
    let mut a = server.connect(611).await;
    let mut b = server.connect(612).await;
    a.send(
        "send_topic_msg",
        json!({"channel_name": "room_p2", "content": "hi", "nickname": "Zed", "sex": 1}),
    )
    .await;
    let chat = b.expect("send_topic_msg").await;
    assert_eq!(
        (&chat["nickname"], &chat["sex"], &chat["avatar_url"]),
        (&json!("Zed"), &json!(1), &json!(""))
    );
    a.expect("send_topic_msg").await;
    a.expect("ack").await;
    // The app backend must still name them without a stored profile.
    let (status, body) = server
        .action(json!({"action": "up", "user_id": 611, "channel_name": "room_p2"}))
        .await;
    assert_eq!(
        (status, body["error_code"].as_u64()),
        (400, Some(1002)),
        "{body}"
    );
    assert_eq!(body["error_reason"], "`nickname` is required");
    let mut up = as_object(profile(611));
    up.extend(as_object(
        json!({"action": "up", "user_id": 611, "channel_name": "room_p2"}),
    ));
    let (status, body) = server.action(Value::Object(up)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(b.expect("up").await["room_seat"]["nickname"], "user611");
    server.stop().await;
}

#[tokio::test]
async fn a_profile_with_wrong_types_or_sizes_is_refused_naming_the_field() {
    let server = TestServer::start().await;
    let cases = [
        (json!("Alice"), "`profile` must be an object"),
        (
            json!({"nickname": 3}),
            "field `profile.nickname` must be a string",
        ),
        (
            json!({"sex": "2"}),
            "field `profile.sex` must be an integer",
        ),
        (
            json!({"sex": 7}),
            "field `profile.sex` must be one of 0 (unknown), 1 (male), 2 (female), not 7",
        ),
        (
            json!({"sex": 1.5}),
            "field `profile.sex` must be an integer",
        ),
        (
            json!({"avatar_url": ["x"]}),
            "field `profile.avatar_url` must be a string",
        ),
        // The bounds of frames (`bounds`): a stored nickname fits where a
        // client's would.
        (
            json!({"nickname": "n".repeat(65)}),
            "field `profile.nickname` is longer than 64 bytes",
        ),
        (
            json!({"i_segment": "s".repeat(33)}),
            "field `profile.i_segment` is longer than 32 bytes",
        ),
        (
            json!({"nickname": null}),
            "field `profile.nickname` must be a string",
        ),
        (
            json!({"avatar_url": null}),
            "field `profile.avatar_url` must be a string",
        ),
        (json!({"cars": {}}), "field `profile.cars` must be an array"),
        (
            json!({"cars": [1]}),
            "field `profile.cars[0]` must be an object",
        ),
        (
            json!({"cars": [{"show_rank": "high"}]}),
            "field `profile.cars[0].show_rank` must be an integer",
        ),
        (json!({"vip": true}), "unknown profile field `profile.vip`"),
    ];
    for (profile, reason) in cases {
        let body = json!({"user_id": 621, "ttl_s": 60, "profile": profile});
        let (status, answer) = server
            .api("POST", "/api/v1/sessions", Some(body.clone()))
            .await;
        assert_eq!(
            (status, &answer["error_code"], &answer["error_reason"]),
            (400, &json!(1001), &json!(reason)),
            "{body}"
        );
        let update = json!({"user_id": 621, "profile": profile});
        let (status, answer) = server.api("POST", "/api/v1/profiles", Some(update)).await;
        assert_eq!(
            (status, &answer["error_reason"]),
            (400, &json!(reason)),
            "{answer}"
        );
    }
    let others = [
        (json!({"profile": {}}), 1002, "`user_id` is required"),
        (json!({"user_id": 621}), 1002, "`profile` is required"),
        (
            json!({"user_id": -1, "profile": {}}),
            1001,
            "field `user_id` must be a non-negative integer",
        ),
        (
            json!({"user_id": 621, "profile": {}, "ttl_s": 0}),
            1001,
            "field `ttl_s` must be an integer from 1 to 31536000",
        ),
        (
            json!({"user_id": 621, "profile": {}, "nick": "x"}),
            1001,
            "unknown field `nick`",
        ),
    ];
    for (body, code, reason) in others {
        let (status, answer) = server
            .api("POST", "/api/v1/profiles", Some(body.clone()))
            .await;
        assert_eq!(
            (status, &answer["error_code"], &answer["error_reason"]),
            (400, &json!(code), &json!(reason)),
            "{body}"
        );
    }
    // Nothing was stored: the client's own name is shown.
    enter_ok(&server, 621, "room_p3", 1).await;
    enter_ok(&server, 622, "room_p3", 1).await;
    let mut a = server.connect(621).await;
    let mut b = server.connect(622).await;
    a.send(
        "send_topic_msg",
        json!({"channel_name": "room_p3", "content": "hi", "nickname": "Own"}),
    )
    .await;
    assert_eq!(b.expect("send_topic_msg").await["nickname"], "Own");
    server.stop().await;
}

#[tokio::test]
async fn a_profile_update_takes_effect_for_the_next_notification() {
    let server = TestServer::start().await;
    session_with_profile(&server, 631, backend_profile(631, "Before")).await;
    enter_ok(&server, 631, "room_p4", 1).await;
    enter_ok(&server, 632, "room_p4", 1).await;
    let mut a = server.connect(631).await;
    let mut b = server.connect(632).await;
    let say = json!({"channel_name": "room_p4", "content": "hi", "nickname": "Forged"});
    a.send("send_topic_msg", say.clone()).await;
    assert_eq!(b.expect("send_topic_msg").await["nickname"], "Before");
    let update = json!({"user_id": 631, "profile": backend_profile(631, "After"), "ttl_s": 600});
    let (status, answer) = server.api("POST", "/api/v1/profiles", Some(update)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["profile"]["nickname"], "After");
    a.send("send_topic_msg", say.clone()).await;
    assert_eq!(b.expect("send_topic_msg").await["nickname"], "After");
    // Deleting it gives the client its own fields back.
    let delete = json!({"user_id": 631, "profile": null});
    let (status, answer) = server.api("POST", "/api/v1/profiles", Some(delete)).await;
    assert_eq!(
        (status, &answer["profile"]),
        (200, &Value::Null),
        "{answer}"
    );
    a.send("send_topic_msg", say).await;
    assert_eq!(b.expect("send_topic_msg").await["nickname"], "Forged");
    server.stop().await;
}
