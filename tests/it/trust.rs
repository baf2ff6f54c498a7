//! The client trust boundary (issue 21, item 4), hole by hole: what a
//! client may decide and what only the app backend or the operator may.
//! `SECURITY.md` names each test with the guarantee it proves.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;
use crate::rooms::enter_ok;

/// Reads and drops whatever frames are pending (room notifications of
/// the set-up), until 300 ms pass without one.
async fn drain(clients: &mut [&mut Client]) {
    for client in clients.iter_mut() {
        while client.recv_within(Duration::from_millis(300)).await.is_ok() {}
    }
}

/// A gift object from `sender` to `receiver` with the catalog fields a
/// client would like to choose.
fn greedy_gift(id: u64, sender: u64, receiver: u64) -> Value {
    json!({"id": id, "sender_id": sender, "receiver_id": receiver, "num": 1,
        "name": "a gift worth a fortune", "image_url": "https://evil.example/x.png",
        "dynamic_image_url": "https://evil.example/x.webp", "image_big_url": "https://evil.example/b.png",
        "image_small_url": "https://evil.example/s.png", "sender_nickname": "me", "receiver_nickname": "you"})
}

/// Without configuration a client's `send_gift` is refused as an action
/// no plugin serves from clients (1007), while the app backend's works.
#[tokio::test]
async fn a_client_gift_is_refused_unless_the_operator_allows_it() {
    let server = TestServer::start().await;
    let mut a = server.connect(2201).await;
    let mut b = server.connect(2202).await;
    enter_ok(&server, 2201, "trust_g", 1).await;
    enter_ok(&server, 2202, "trust_g", 1).await;
    drain(&mut [&mut a, &mut b]).await;
    let gift =
        json!({"channel_name": "trust_g", "notify_type": "bc", "gift": greedy_gift(7, 2201, 2202)});
    let error = a.call("send_gift", gift).await;
    assert_eq!(
        (
            &error["action"],
            &error["error_code"],
            &error["error_reason"]
        ),
        (
            &json!("error"),
            &json!(1007),
            &json!("unknown action send_gift")
        ),
        "{error}"
    );
    // The same answer as an action nobody serves.
    let unknown = a.call("zz_send_nothing", json!({})).await;
    assert_eq!(unknown["error_code"], 1007, "{unknown}");
    b.expect_silence(Duration::from_millis(300)).await;
    let (status, body) = server
        .action(json!({"action": "send_gift", "channel_name": "trust_g", "notify_type": "bc", "gift": greedy_gift(7, 2201, 2202)}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        b.expect("send_gift").await["gift"]["name"],
        "a gift worth a fortune"
    );
    server.stop().await;
}

/// Allowed from clients (`[actions.send_gift] sources`), a client's gift
/// takes its catalog fields from `gift.toml`, never from the client; a
/// gift id the catalog does not hold is refused (2001).
#[tokio::test]
async fn an_allowed_client_gift_takes_its_catalog_fields_from_gift_toml() {
    let catalog = "[catalog.7]\nname = \"rose\"\nimage_url = \"https://cdn.example/rose.png\"\n";
    let dir = bundled_with(&[("gift.toml", catalog)]);
    let d = dir.clone();
    let server = TestServer::with(move |c| {
        c.plugins.dir = Some(d);
        allow_client_gifts(c);
    })
    .await;
    let mut a = server.connect(2211).await;
    let mut b = server.connect(2212).await;
    enter_ok(&server, 2211, "trust_c", 1).await;
    enter_ok(&server, 2212, "trust_c", 1).await;
    drain(&mut [&mut a, &mut b]).await;
    a.send(
        "send_gift",
        json!({"channel_name": "trust_c", "notify_type": "bc", "gift": greedy_gift(7, 1, 2212)}),
    )
    .await;
    // The sender, a member, gets the broadcast before its ack.
    a.expect("send_gift").await;
    a.expect("ack").await;
    let gift = b.expect("send_gift").await["gift"].clone();
    assert_eq!(
        (
            &gift["name"],
            &gift["image_url"],
            &gift["dynamic_image_url"],
            &gift["image_big_url"],
            &gift["image_small_url"]
        ),
        (
            &json!("rose"),
            &json!("https://cdn.example/rose.png"),
            &json!(""),
            &json!(""),
            &json!("")
        ),
        "{gift}"
    );
    assert_eq!(
        gift["sender_id"], 2211,
        "the sender is the connection's user: {gift}"
    );
    let error = a
        .call("send_gift", json!({"channel_name": "trust_c", "notify_type": "bc", "gift": greedy_gift(99, 2211, 2212)}))
        .await;
    assert_eq!(
        (&error["error_code"], &error["error_reason"]),
        (&json!(2001), &json!("unknown gift id 99")),
        "{error}"
    );
    b.expect_silence(Duration::from_millis(300)).await;
    server.stop().await;
    std::fs::remove_dir_all(dir).ok();
}

/// A point-to-point gift to a user in another room is refused (2004),
/// from the app backend too; nothing reaches that user.
#[tokio::test]
async fn a_ptp_gift_to_a_user_in_another_room_is_refused() {
    let server = TestServer::start().await;
    let mut elsewhere = server.connect(2222).await;
    enter_ok(&server, 2221, "trust_p1", 1).await;
    enter_ok(&server, 2222, "trust_p2", 2).await;
    drain(&mut [&mut elsewhere]).await;
    let (status, body) = server
        .action(json!({"action": "send_gift", "channel_name": "trust_p1", "notify_type": "ptp", "gift": greedy_gift(7, 2221, 2222)}))
        .await;
    assert_eq!(
        (status, &body["error_code"], &body["error_reason"]),
        (403, &json!(2004), &json!("user 2222 is not in `trust_p1`")),
        "{body}"
    );
    elsewhere.expect_silence(Duration::from_millis(300)).await;
    server.stop().await;
}

/// `hang_up` ends only a call the sender is in, with the peer it names:
/// a third user's `hang_up` and a `hang_up` naming someone else are 2004
/// and change nothing; the real hang-up reaches the peer.
#[tokio::test]
async fn hang_up_only_for_the_senders_own_call_and_the_peer_is_told() {
    let server = TestServer::start().await;
    let mut a = server.connect(2231).await;
    let mut b = server.connect(2232).await;
    let mut c = server.connect(2233).await;
    for user in [2231, 2232, 2233] {
        enter_ok(&server, user, "trust_h", 1).await;
    }
    drain(&mut [&mut a, &mut b, &mut c]).await;
    let ack = a
        .call(
            "call_start",
            json!({"receiver_id": 2232, "channel_name": "trust_h"}),
        )
        .await;
    assert_eq!(ack["action"], "ack", "{ack}");
    let answered = b
        .call(
            "call_answer",
            json!({"receiver_id": 2231, "channel_name": "trust_h"}),
        )
        .await;
    assert_eq!(answered["action"], "ack", "{answered}");

    let error = c
        .call(
            "hang_up",
            json!({"receiver_id": 2232, "channel_name": "trust_h"}),
        )
        .await;
    assert_eq!(
        (&error["error_code"], &error["error_reason"]),
        (&json!(2004), &json!("you are not in a call with user 2232")),
        "{error}"
    );
    let error = a
        .call(
            "hang_up",
            json!({"receiver_id": 2233, "channel_name": "trust_h"}),
        )
        .await;
    assert_eq!(error["error_code"], 2004, "{error}");
    b.expect_silence(Duration::from_millis(300)).await;
    c.expect_silence(Duration::from_millis(100)).await;

    // The call is still there: the real hang-up ends it and tells B.
    let ack = a
        .call(
            "hang_up",
            json!({"receiver_id": 2232, "channel_name": "trust_h"}),
        )
        .await;
    assert_eq!(ack["action"], "ack", "{ack}");
    let frame = b.expect("hang_up").await;
    assert_eq!(
        (
            &frame["user_id"],
            &frame["receiver_id"],
            &frame["channel_name"]
        ),
        (&json!(2231), &json!(2232), &json!("trust_h")),
        "{frame}"
    );
    server.stop().await;
}

/// A client's `call_start` needs a caller and a callee in the same room,
/// and its refusals never tell a user's call state: calling a user who is
/// busy, ringing, or not in the room gets the same 2004 and reason.
#[tokio::test]
async fn call_start_needs_the_same_room_and_never_reveals_call_state() {
    let server = TestServer::start().await;
    let mut a = server.connect(2241).await;
    let mut b = server.connect(2242).await;
    let mut c = server.connect(2243).await;
    let mut d = server.connect(2244).await;
    for user in [2241, 2242, 2243] {
        enter_ok(&server, user, "trust_s", 1).await;
    }
    enter_ok(&server, 2244, "trust_s2", 2).await;
    drain(&mut [&mut a, &mut b, &mut c, &mut d]).await;
    let refusal = |user: u64| json!([2004, format!("user {user} cannot be called now")]);
    let code_and_reason = |frame: &Value| json!([frame["error_code"], frame["error_reason"]]);

    // Another room, and a caller calling into a room it is not in.
    let error = a
        .call(
            "call_start",
            json!({"receiver_id": 2244, "channel_name": "trust_s"}),
        )
        .await;
    assert_eq!(code_and_reason(&error), refusal(2244), "{error}");
    let error = d
        .call(
            "call_start",
            json!({"receiver_id": 2241, "channel_name": "trust_s"}),
        )
        .await;
    assert_eq!(
        code_and_reason(&error),
        json!([2004, "you are not in `trust_s`"]),
        "{error}"
    );
    // A ringing callee, then a busy one: the same answer as another room.
    let ack = a
        .call(
            "call_start",
            json!({"receiver_id": 2242, "channel_name": "trust_s"}),
        )
        .await;
    assert_eq!(ack["action"], "ack", "{ack}");
    let error = c
        .call(
            "call_start",
            json!({"receiver_id": 2242, "channel_name": "trust_s"}),
        )
        .await;
    assert_eq!(code_and_reason(&error), refusal(2242), "ringing: {error}");
    let answered = b
        .call(
            "call_answer",
            json!({"receiver_id": 2241, "channel_name": "trust_s"}),
        )
        .await;
    assert_eq!(answered["action"], "ack", "{answered}");
    let error = c
        .call(
            "call_start",
            json!({"receiver_id": 2242, "channel_name": "trust_s"}),
        )
        .await;
    assert_eq!(code_and_reason(&error), refusal(2242), "busy: {error}");
    // Nobody was told anything, and the third caller is free.
    for client in [&mut a, &mut b, &mut d] {
        client.expect_silence(Duration::from_millis(200)).await;
    }
    let ack = c
        .call(
            "call_start",
            json!({"receiver_id": 2241, "channel_name": "trust_s"}),
        )
        .await;
    assert_eq!(
        code_and_reason(&ack),
        refusal(2241),
        "the caller is busy too: {ack}"
    );
    server.stop().await;
}

/// A call a client starts and the callee never answers ends by itself
/// after `calls.ring_timeout`, both users told with `hang_up`
/// (`"reason":"no_answer"`); an answered call does not.
#[tokio::test]
async fn an_unanswered_call_ends_by_itself_and_both_sides_are_told() {
    let server = TestServer::with(|c| c.calls.ring_timeout = Duration::from_secs(1)).await;
    let mut a = server.connect(2251).await;
    let mut b = server.connect(2252).await;
    enter_ok(&server, 2251, "trust_r", 1).await;
    enter_ok(&server, 2252, "trust_r", 1).await;
    drain(&mut [&mut a, &mut b]).await;
    let ack = a
        .call(
            "call_start",
            json!({"receiver_id": 2252, "channel_name": "trust_r"}),
        )
        .await;
    assert_eq!(ack["action"], "ack", "{ack}");
    let to_callee = b.expect("hang_up").await;
    let to_caller = a.expect("hang_up").await;
    let shape = |f: &Value| {
        json!([
            f["user_id"],
            f["receiver_id"],
            f["channel_name"],
            f["reason"]
        ])
    };
    assert_eq!(
        shape(&to_callee),
        json!([2251, 2252, "trust_r", "no_answer"])
    );
    assert_eq!(
        shape(&to_caller),
        json!([2252, 2251, "trust_r", "no_answer"])
    );

    // Answered: the call outlives several ring timeouts.
    let ack = a
        .call(
            "call_start",
            json!({"receiver_id": 2252, "channel_name": "trust_r"}),
        )
        .await;
    assert_eq!(ack["action"], "ack", "the first call ended: {ack}");
    let answered = b
        .call(
            "call_answer",
            json!({"receiver_id": 2251, "channel_name": "trust_r"}),
        )
        .await;
    assert_eq!(answered["action"], "ack", "{answered}");
    a.expect_silence(Duration::from_secs(3)).await;
    b.expect_silence(Duration::from_millis(100)).await;
    let ack = b
        .call(
            "hang_up",
            json!({"receiver_id": 2251, "channel_name": "trust_r"}),
        )
        .await;
    assert_eq!(
        ack["action"], "ack",
        "the answered call was still there: {ack}"
    );
    assert_eq!(a.expect("hang_up").await["user_id"], 2252);
    server.stop().await;
}

/// The ring timeouts of a node are entries in one queue, not a task per
/// call: calls started and hung up leave no task behind, and each leaves
/// one small entry until its timeout.
#[tokio::test]
async fn ring_timeouts_take_no_task_per_call() {
    let server = TestServer::with(|c| c.calls.ring_timeout = Duration::from_secs(3600)).await;
    let mut a = server.connect(2261).await;
    let mut b = server.connect(2262).await;
    enter_ok(&server, 2261, "trust_q", 1).await;
    enter_ok(&server, 2262, "trust_q", 1).await;
    drain(&mut [&mut a, &mut b]).await;
    let app = &server.node.app;
    let tasks = app.tracker.len();
    for _ in 0..20 {
        let ack = a
            .call(
                "call_start",
                json!({"receiver_id": 2262, "channel_name": "trust_q"}),
            )
            .await;
        assert_eq!(ack["action"], "ack", "{ack}");
        let ack = a
            .call(
                "hang_up",
                json!({"receiver_id": 2262, "channel_name": "trust_q"}),
            )
            .await;
        assert_eq!(ack["action"], "ack", "{ack}");
    }
    assert_eq!(app.tracker.len(), tasks, "no task per call");
    assert_eq!(app.ringing.len(), 20);
    server.stop().await;
}
