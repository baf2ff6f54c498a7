//! Rooms, seats, gifts, chat, calls and notices (PROTOCOL sections 6 to 8)
//! through the server API and real clients, in broadcast mode.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

/// The profile fields every test user sends.
pub fn profile(user_id: u64) -> Value {
    json!({
        "nickname": format!("user{user_id}"),
        "sex": 1,
        "avatar_url": format!("https://a.example/{user_id}.png"),
        "avatar_small_url": format!("https://a.example/{user_id}_s.png"),
    })
}

/// `enter_room` for `user_id` with extra fields merged in.
pub async fn enter(
    server: &TestServer,
    user_id: u64,
    channel: &str,
    room_id: u64,
    extra: Value,
) -> (u16, Value) {
    let mut body = as_object(profile(user_id));
    body.insert("action".into(), json!("enter_room"));
    body.insert("user_id".into(), json!(user_id));
    body.insert("channel_name".into(), json!(channel));
    body.insert("room_id".into(), json!(room_id));
    body.insert("i_segment".into(), json!("newcomer"));
    body.extend(as_object(extra));
    server.action(Value::Object(body)).await
}

/// Enters and asserts success.
pub async fn enter_ok(server: &TestServer, user_id: u64, channel: &str, room_id: u64) {
    let (status, body) = enter(server, user_id, channel, room_id, json!({})).await;
    assert_eq!(status, 200, "{body}");
}

/// `up` for `user_id`, with an optional seat.
pub async fn up(
    server: &TestServer,
    user_id: u64,
    channel: &str,
    seat: Option<u32>,
) -> (u16, Value) {
    let mut body = as_object(profile(user_id));
    body.insert("action".into(), json!("up"));
    body.insert("user_id".into(), json!(user_id));
    body.insert("channel_name".into(), json!(channel));
    if let Some(seat) = seat {
        body.insert("seat_id".into(), json!(seat));
    }
    server.action(Value::Object(body)).await
}

/// Removes `msg_id` after checking it is a non-empty string, and the
/// stream's `epoch` (a non-empty string) and `seq` (an integer from 1) of
/// issue 17.
pub fn without_msg_id(mut frame: Value) -> Value {
    let object = frame.as_object_mut().unwrap();
    let id = object.remove("msg_id").expect("msg_id present");
    assert!(id.as_str().is_some_and(|s| !s.is_empty()));
    let epoch = object.remove("epoch").expect("epoch present");
    assert!(epoch.as_str().is_some_and(|s| !s.is_empty()));
    let seq = object.remove("seq").expect("seq present");
    assert!(seq.as_u64().is_some_and(|n| n >= 1));
    let stream = object.remove("stream").expect("stream present");
    assert!(stream == "room" || stream == "user", "{stream}");
    frame
}

#[tokio::test]
async fn enter_room_notifies_the_room_in_the_seed_shape_with_msg_id() {
    let server = TestServer::start().await;
    let mut a = server.connect(101).await;
    let mut b = server.connect(102).await;
    enter_ok(&server, 101, "room_88", 88).await;
    a.expect("enter_room").await;
    let (status, body) = enter(
        &server,
        102,
        "room_88",
        88,
        json!({"i_segment": "professional"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["error_code"], 0);
    let frame_a = a.expect("enter_room").await;
    let frame_b = b.expect("enter_room").await;
    assert_eq!(frame_a, frame_b, "every recipient sees the same frame");
    assert_eq!(body["msg_ids"], json!([frame_a["msg_id"]]));
    assert_eq!(
        without_msg_id(frame_a),
        json!({
            "action": "enter_room", "user_id": 102, "nickname": "user102", "sex": 1,
            "avatar_url": "https://a.example/102.png", "avatar_small_url": "https://a.example/102_s.png",
            "channel_name": "room_88", "i_segment": "professional", "i_segment_text": "专家",
            "user_car_gift": null,
        })
    );
    let (_, user) = server.api("GET", "/api/v1/users/102", None).await;
    assert_eq!(user["current_room_id"], "88");
    assert_eq!(user["channel_name"], "room_88");
    assert_eq!(user["online"], true);
    server.stop().await;
}

#[tokio::test]
async fn the_car_shown_is_the_unexpired_car_with_the_highest_show_rank() {
    let server = TestServer::start().await;
    let mut a = server.connect(111).await;
    let future = now() + 3600;
    let car = |name: &str, rank: i64, expire: u64, gift_type: i64| {
        json!({"name": name, "image_url": "", "image_small_url": "", "image_big_url": "", "dynamic_image_url": "",
               "svga_image_name": "", "render_type": "svga", "svga_image_url": "", "show_rank": rank,
               "expire_time": expire, "gift_type": gift_type, "notice_content": ""})
    };
    let cars = json!([
        car("gift, not a car", 99, 0, 1),
        car("expired", 50, now() - 10, 2),
        car("forever", 5, 0, 2),
        car("best", 9, future, 2),
        car("tie loses", 9, 0, 2),
    ]);
    let (status, body) = enter(&server, 111, "room_cars", 7, json!({"cars": cars})).await;
    assert_eq!(status, 200, "{body}");
    let frame = a.expect("enter_room").await;
    let shown = &frame["user_car_gift"];
    assert_eq!(shown["name"], "best");
    assert_eq!(shown["show_rank"], 9);
    assert_eq!(shown["expire_time"], future);
    assert_eq!(shown["notice_content"], "user111 驾驶 best 进入了房间");
    assert_eq!(frame["i_segment_text"], "新人");
    server.stop().await;
}

#[tokio::test]
async fn entering_another_room_leaves_the_first_with_exit_room_and_the_freed_seat() {
    let server = TestServer::start().await;
    let mut a = server.connect(121).await;
    let mut b = server.connect(122).await;
    enter_ok(&server, 121, "room_1", 1).await;
    enter_ok(&server, 122, "room_1", 1).await;
    a.expect("enter_room").await;
    a.expect("enter_room").await;
    b.expect("enter_room").await;
    assert_eq!(up(&server, 121, "room_1", Some(4)).await.0, 200);
    a.expect("up").await;
    b.expect("up").await;
    enter_ok(&server, 121, "room_2", 2).await;
    let exit = b.expect("exit_room").await;
    assert_eq!(
        without_msg_id(exit),
        json!({"action": "exit_room", "user_id": 121, "channel_name": "room_1", "room_seat": {"id": 4, "status": 0, "microphone": 0}})
    );
    a.expect("enter_room").await;
    let (_, room) = server.api("GET", "/api/v1/rooms/room_1", None).await;
    assert_eq!(room["members"], json!([122]));
    assert_eq!(
        room["seats"][3],
        json!({"id": 4, "user_id": null, "status": 0, "microphone": 0, "rank": 4})
    );
    server.stop().await;
}

#[tokio::test]
async fn exit_room_needs_membership_and_notifies_with_null_seat() {
    let server = TestServer::start().await;
    let mut b = server.connect(132).await;
    let (status, body) = server
        .action(json!({"action": "exit_room", "user_id": 131, "channel_name": "room_x"}))
        .await;
    assert_eq!((status, body["error_code"].clone()), (403, json!(2004)));
    enter_ok(&server, 131, "room_x", 3).await;
    enter_ok(&server, 132, "room_x", 3).await;
    b.expect("enter_room").await;
    let (status, _) = server
        .action(json!({"action": "exit_room", "user_id": 131, "channel_name": "room_x"}))
        .await;
    assert_eq!(status, 200);
    let exit = b.expect("exit_room").await;
    assert_eq!(exit["room_seat"], Value::Null);
    assert_eq!(exit["user_id"], 131);
    let (_, user) = server.api("GET", "/api/v1/users/131", None).await;
    assert_eq!(user["current_room_id"], "");
    server.stop().await;
}

#[tokio::test]
async fn up_takes_the_lowest_free_seat_or_the_one_asked_and_refuses_conflicts() {
    let server = TestServer::start().await;
    let mut watcher = server.connect(149).await;
    for user in [149, 141, 142, 143] {
        enter_ok(&server, user, "room_s", 5).await;
    }
    for _ in 0..4 {
        watcher.expect("enter_room").await;
    }
    let (status, body) = up(&server, 148, "room_s", None).await;
    assert_eq!(
        (status, body["error_code"].clone()),
        (403, json!(2004)),
        "not a member"
    );

    let (status, _) = up(&server, 141, "room_s", None).await;
    assert_eq!(status, 200);
    let frame = without_msg_id(watcher.expect("up").await);
    assert_eq!(
        frame,
        json!({"action": "up", "channel_name": "room_s", "room_seat": {
            "user_id": 141, "id": 1, "sex": 1, "avatar_url": "https://a.example/141.png",
            "avatar_small_url": "https://a.example/141_s.png", "nickname": "user141",
            "status": 1, "microphone": 1, "rank": 1, "room_id": 5}})
    );
    assert_eq!(up(&server, 142, "room_s", Some(3)).await.0, 200);
    watcher.expect("up").await;
    let (status, body) = up(&server, 143, "room_s", Some(3)).await;
    assert_eq!(
        (status, body["error_code"].clone()),
        (409, json!(2003)),
        "seat taken"
    );
    let (status, body) = up(&server, 143, "room_s", Some(99)).await;
    assert_eq!(
        (status, body["error_code"].clone()),
        (422, json!(2001)),
        "no such seat"
    );

    let (status, _) = server
        .action(json!({"action": "lock_seat", "channel_name": "room_s", "seat_id": 5}))
        .await;
    assert_eq!(status, 200);
    let (status, body) = up(&server, 143, "room_s", Some(5)).await;
    assert_eq!(
        (status, body["error_code"].clone()),
        (409, json!(2003)),
        "seat locked"
    );
    let (_, room) = server.api("GET", "/api/v1/rooms/room_s", None).await;
    assert_eq!(room["seats"][4]["status"], 2);

    // A seated user moving: a down for the old seat, then the up.
    assert_eq!(up(&server, 141, "room_s", Some(2)).await.0, 200);
    let down = watcher.expect("down").await;
    assert_eq!(down["room_seat"]["id"], 1);
    assert_eq!(down["user_id"], 141);
    let moved = watcher.expect("up").await;
    assert_eq!(moved["room_seat"]["id"], 2);
    watcher.expect_silence(Duration::from_millis(200)).await;
    server.stop().await;
}

#[tokio::test]
async fn twenty_concurrent_ups_for_one_free_seat_have_exactly_one_winner() {
    let server = TestServer::start().await;
    for user in 200..220 {
        enter_ok(&server, user, "room_race", 9).await;
    }
    let calls = (200..220).map(|user| {
        let server = &server;
        async move { up(server, user, "room_race", Some(6)).await }
    });
    let results = futures_util::future::join_all(calls).await;
    let winners: Vec<_> = results.iter().filter(|(s, _)| *s == 200).collect();
    let losers = results
        .iter()
        .filter(|(s, b)| *s == 409 && b["error_code"] == 2003)
        .count();
    assert_eq!((winners.len(), losers), (1, 19), "{results:?}");
    let (_, room) = server.api("GET", "/api/v1/rooms/room_race", None).await;
    assert_eq!(room["seats"][5]["status"], 1);
    server.stop().await;
}

#[tokio::test]
async fn down_frees_the_seat_and_needs_one() {
    let server = TestServer::start().await;
    let mut w = server.connect(152).await;
    enter_ok(&server, 151, "room_d", 4).await;
    enter_ok(&server, 152, "room_d", 4).await;
    w.expect("enter_room").await;
    let (status, body) = server
        .action(json!({"action": "down", "user_id": 151, "channel_name": "room_d"}))
        .await;
    assert_eq!((status, body["error_code"].clone()), (403, json!(2004)));
    assert_eq!(up(&server, 151, "room_d", Some(2)).await.0, 200);
    w.expect("up").await;
    let (status, _) = server
        .action(json!({"action": "down", "user_id": 151, "channel_name": "room_d"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        without_msg_id(w.expect("down").await),
        json!({"action": "down", "user_id": 151, "channel_name": "room_d",
               "room_seat": {"id": 2, "status": 0, "microphone": 0, "rank": 2, "room_id": 4}})
    );
    server.stop().await;
}

pub fn gift(sender: u64, receiver: u64, num: i64) -> Value {
    json!({"id": 5, "sender_id": sender, "receiver_id": receiver, "sender_nickname": "s", "receiver_nickname": "r",
           "name": "rose", "dynamic_image_url": "d", "image_url": "i", "image_big_url": "b", "image_small_url": "m",
           "num": num, "sender_room_seat_id": 77, "receiver_room_seat_id": 77})
}

#[tokio::test]
async fn send_gift_bc_reaches_the_room_and_ptp_only_the_receiver_with_real_seat_ids() {
    let server = TestServer::start().await;
    let mut s = server.connect(161).await;
    let mut r = server.connect(162).await;
    let mut other = server.connect(163).await;
    for user in [161, 162, 163] {
        enter_ok(&server, user, "room_g", 6).await;
    }
    for c in [&mut s, &mut r, &mut other] {
        while c.recv_within(Duration::from_millis(300)).await.is_ok() {}
    }
    assert_eq!(up(&server, 162, "room_g", Some(3)).await.0, 200);
    for c in [&mut s, &mut r, &mut other] {
        c.expect("up").await;
    }
    let (status, body) = server.action(json!({"action": "send_gift", "channel_name": "room_g", "notify_type": "bc", "gift": gift(161, 162, 2)})).await;
    assert_eq!(status, 200, "{body}");
    for c in [&mut s, &mut r, &mut other] {
        let frame = c.expect("send_gift").await;
        assert_eq!(frame["notify_type"], "bc");
        assert_eq!(frame["gift"]["sender_room_seat_id"], 0);
        assert_eq!(frame["gift"]["receiver_room_seat_id"], 3);
        assert_eq!(frame["gift"]["num"], 2);
        assert_eq!(frame["channel_name"], "room_g");
    }
    let (status, _) = server.action(json!({"action": "send_gift", "channel_name": "room_g", "notify_type": "ptp", "gift": gift(161, 162, 1)})).await;
    assert_eq!(status, 200);
    assert_eq!(r.expect("send_gift").await["notify_type"], "ptp");
    s.expect_silence(Duration::from_millis(200)).await;
    other.expect_silence(Duration::from_millis(1)).await;

    let (status, body) = server.action(json!({"action": "send_gift", "channel_name": "room_g", "notify_type": "bc", "gift": gift(161, 162, 0)})).await;
    assert_eq!(
        (status, body["error_code"].clone()),
        (422, json!(2001)),
        "num below 1"
    );
    let (status, body) = server.action(json!({"action": "send_gift", "channel_name": "room_g", "notify_type": "bc", "gift": gift(999, 162, 1)})).await;
    assert_eq!(
        (status, body["error_code"].clone()),
        (403, json!(2004)),
        "sender not in the room"
    );
    r.expect_silence(Duration::from_millis(200)).await;
    server.stop().await;
}

#[tokio::test]
async fn send_topic_msg_from_the_api_and_from_a_client_with_content_rules() {
    let server = TestServer::start().await;
    let mut a = server.connect(171).await;
    let mut b = server.connect(172).await;
    enter_ok(&server, 171, "room_t", 8).await;
    enter_ok(&server, 172, "room_t", 8).await;
    a.expect("enter_room").await;
    a.expect("enter_room").await;
    b.expect("enter_room").await;
    let mut msg = as_object(profile(171));
    msg.extend(as_object(json!({"action": "send_topic_msg", "user_id": 171, "channel_name": "room_t", "content": "hi"})));
    let (status, _) = server.action(Value::Object(msg.clone())).await;
    assert_eq!(status, 200);
    assert_eq!(
        without_msg_id(b.expect("send_topic_msg").await),
        json!({"action": "send_topic_msg", "user_id": 171, "nickname": "user171", "sex": 1,
               "avatar_url": "https://a.example/171.png", "avatar_small_url": "https://a.example/171_s.png",
               "content": "hi", "channel_name": "room_t"})
    );
    a.expect("send_topic_msg").await;
    msg.insert("content".into(), json!("字".repeat(201)));
    let (status, body) = server.action(Value::Object(msg.clone())).await;
    assert_eq!(
        (status, body["error_code"].clone()),
        (422, json!(2001)),
        "too long"
    );
    msg.insert("content".into(), json!(""));
    assert_eq!(server.action(Value::Object(msg)).await.0, 422, "empty");

    // Over the WebSocket the subject is the connection's user, whatever
    // the frame claims.
    // The sender's own copy of the notification was queued before the ack
    // was made, and everything reaches a client in queue order.
    b.send(
        "send_topic_msg",
        json!({"user_id": 171, "channel_name": "room_t", "content": "from b", "nickname": "bee"}),
    )
    .await;
    let own = b.expect("send_topic_msg").await;
    let ack = b.expect("ack").await;
    assert_eq!(ack["ref_action"], "send_topic_msg");
    let frame = a.expect("send_topic_msg").await;
    assert_eq!(frame["user_id"], 172);
    assert_eq!(frame["content"], "from b");
    assert_eq!(ack["msg_ids"], json!([frame["msg_id"]]));
    assert_eq!(own["msg_id"], frame["msg_id"]);
    let e = b
        .call(
            "send_topic_msg",
            json!({"channel_name": "room_other", "content": "x"}),
        )
        .await;
    assert_eq!(e["error_code"], 2004);
    server.stop().await;
}

#[tokio::test]
async fn hang_up_goes_to_the_receiver_only_and_room_notice_to_room_or_everyone() {
    let server = TestServer::start().await;
    let mut a = server.connect(181).await;
    let mut b = server.connect(182).await;
    let mut outsider = server.connect(183).await;
    enter_ok(&server, 181, "room_c", 11).await;
    enter_ok(&server, 182, "room_c", 11).await;
    for c in [&mut a, &mut b] {
        while c.recv_within(Duration::from_millis(300)).await.is_ok() {}
    }
    let (status, body) = server.action(json!({"action": "call_start", "user_id": 181, "receiver_id": 182, "channel_name": "room_c"})).await;
    assert_eq!((status, body["msg_ids"].clone()), (200, json!([])));
    let (status, _) = server.action(json!({"action": "hang_up", "user_id": 181, "receiver_id": 182, "channel_name": "room_c"})).await;
    assert_eq!(status, 200);
    assert_eq!(
        without_msg_id(b.expect("hang_up").await),
        json!({"action": "hang_up", "user_id": 181, "receiver_id": 182, "channel_name": "room_c"})
    );
    a.expect_silence(Duration::from_millis(200)).await;

    let notice = json!({"action": "room_notice", "channel_name": "room_c", "expire_time": 10, "content": "sale", "client_url": "app://rooms/detail?id=11"});
    assert_eq!(server.action(notice).await.0, 200);
    for c in [&mut a, &mut b] {
        assert_eq!(
            without_msg_id(c.expect("room_notice").await),
            json!({"action": "room_notice", "channel_name": "room_c", "expire_time": 10, "content": "sale", "client_url": "app://rooms/detail?id=11"})
        );
    }
    outsider.expect_silence(Duration::from_millis(200)).await;
    assert_eq!(server.action(json!({"action": "room_notice", "expire_time": 3, "content": "all", "client_url": ""})).await.0, 200);
    for c in [&mut a, &mut b, &mut outsider] {
        assert_eq!(c.expect("room_notice").await["content"], "all");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_killed_client_leaves_its_room_and_call_at_once() {
    let server = TestServer::start().await;
    let a = server.connect(191).await;
    let mut b = server.connect(192).await;
    enter_ok(&server, 191, "room_k", 12).await;
    enter_ok(&server, 192, "room_k", 12).await;
    assert_eq!(up(&server, 191, "room_k", Some(2)).await.0, 200);
    let (status, _) = server.action(json!({"action": "call_start", "user_id": 191, "receiver_id": 192, "channel_name": "room_k"})).await;
    assert_eq!(status, 200);
    while b.recv_within(Duration::from_millis(300)).await.is_ok() {}
    drop(a); // the TCP connection closes, as when the app is killed
    let mut frames = [b.recv().await.unwrap(), b.recv().await.unwrap()];
    frames.sort_by_key(|f| f["action"].as_str().unwrap().to_string());
    assert_eq!(
        without_msg_id(frames[0].clone()),
        json!({"action": "exit_room", "user_id": 191, "channel_name": "room_k", "room_seat": {"id": 2, "status": 0, "microphone": 0}})
    );
    assert_eq!(
        without_msg_id(frames[1].clone()),
        json!({"action": "hang_up", "user_id": 191, "receiver_id": 192, "channel_name": "room_k"})
    );
    let (_, user) = server.api("GET", "/api/v1/users/191", None).await;
    assert_eq!(
        (user["online"].clone(), user["current_room_id"].clone()),
        (json!(false), json!(""))
    );
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_reconnect_within_the_grace_keeps_room_and_seat() {
    let server = TestServer::with(|c| c.heartbeat.grace = Duration::from_secs(30)).await;
    let a = server.connect(195).await;
    let mut b = server.connect(196).await;
    enter_ok(&server, 195, "room_gr", 13).await;
    enter_ok(&server, 196, "room_gr", 13).await;
    while b.recv_within(Duration::from_millis(300)).await.is_ok() {}
    drop(a);
    tokio::time::sleep(Duration::from_secs(20)).await;
    let again = server.connect(195).await;
    assert_eq!(again.connected["current_room_id"], "13");
    b.expect_silence(Duration::from_secs(35)).await;
    let (_, room) = server.api("GET", "/api/v1/rooms/room_gr", None).await;
    assert_eq!(room["members"], json!([195, 196]));
    server.stop().await;
}

#[tokio::test]
async fn server_api_refuses_bad_requests_with_the_contract_codes() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let body = r#"{"action":"room_notice","expire_time":1,"content":"x","client_url":""}"#;
    let ts = now().to_string();
    let send = |ts: String, nonce: String, signature: Option<String>, body: &'static str| {
        let http = http.clone();
        let url = server.url("/api/v1/actions");
        async move {
            let sig = signature.unwrap_or_else(|| {
                chorus_protocol::api_signature(
                    SECRET.as_bytes(),
                    &ts,
                    &nonce,
                    "POST",
                    "/api/v1/actions",
                    body.as_bytes(),
                )
            });
            let r = http
                .post(url)
                .header("X-Chorus-Timestamp", ts)
                .header("X-Chorus-Nonce", nonce)
                .header("X-Chorus-Signature", sig)
                .body(body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, b) = send(ts.clone(), nonce(), Some("00".repeat(32)), body).await;
    assert_eq!((status, b["error_code"].clone()), (401, json!(1003)));
    let (status, b) = send((now() - 1000).to_string(), nonce(), None, body).await;
    assert_eq!((status, b["error_code"].clone()), (401, json!(1004)));
    let n = nonce();
    assert_eq!(send(ts.clone(), n.clone(), None, body).await.0, 200);
    let (status, b) = send(ts.clone(), n, None, body).await;
    assert_eq!((status, b["error_code"].clone()), (401, json!(1005)));
    let (status, b) = send(ts.clone(), nonce(), None, r#"{"action":"nope"}"#).await;
    assert_eq!((status, b["error_code"].clone()), (404, json!(1007)));
    let (status, b) = send(ts.clone(), nonce(), None, r#"{"content":"x"}"#).await;
    assert_eq!((status, b["error_code"].clone()), (400, json!(1002)));
    let (status, b) = send(ts.clone(), nonce(), None, "not json").await;
    assert_eq!((status, b["error_code"].clone()), (400, json!(1001)));
    let (status, b) = send(
        ts.clone(),
        nonce(),
        None,
        r#"{"action":"exit_room","user_id":"1","channel_name":"r"}"#,
    )
    .await;
    assert_eq!((status, b["error_code"].clone()), (400, json!(1001)));
    let (status, b) = send(ts, nonce(), None, r#"{"action":"exit_room","user_id":1}"#).await;
    assert_eq!(
        (status, b["error_code"].clone()),
        (400, json!(1002)),
        "a missing channel_name is 1002 from the plugin: {b}"
    );
    let (status, b) = server.api("GET", "/api/v1/rooms/empty_room", None).await;
    assert_eq!((status, b["error_code"].clone()), (404, json!(2004)));
    server.stop().await;
}

#[tokio::test]
async fn sessions_endpoint_mints_working_credentials_and_kick_closes_with_4010() {
    let server = TestServer::start().await;
    let (status, minted) = server
        .api(
            "POST",
            "/api/v1/sessions",
            Some(json!({"user_id": 301, "ttl_s": 600})),
        )
        .await;
    assert_eq!(status, 200, "{minted}");
    let creds = chorus_protocol::ClientCredentials::new(
        301,
        minted["sid"].as_str().unwrap(),
        minted["sign_key"].as_str().unwrap(),
    );
    assert!(minted["expires_at"].as_u64().unwrap() >= now() + 590);
    let mut client = Client::connect(&server.ws_url(&creds), creds.clone())
        .await
        .unwrap();
    client.ping().await;
    enter_ok(&server, 301, "room_kick", 30).await;
    client.expect("enter_room").await;

    let (status, body) = server
        .api(
            "POST",
            "/api/v1/users/301/kick",
            Some(json!({"revoke": true, "reason": "banned"})),
        )
        .await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({"error_code": 0, "kicked": true, "revoked": true})
        )
    );
    let kicked = client.expect("kicked").await;
    assert_eq!(kicked["reason"], "banned");
    assert_eq!(client.expect_close().await, 4010);
    assert!(
        eventually(|| async {
            server.api("GET", "/api/v1/users/301", None).await.1["current_room_id"] == ""
        })
        .await,
        "a kick is a disconnect"
    );
    assert!(
        Client::connect(&server.ws_url(&creds), creds.clone())
            .await
            .is_err(),
        "revoked sid refused"
    );
    let (_, body) = server.api("POST", "/api/v1/users/301/kick", None).await;
    assert_eq!(body["kicked"], false);
    server.stop().await;
}
