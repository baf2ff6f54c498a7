//! Delegated relay (PROTOCOL section 6, seed section 2.4) through real
//! clients: reports, silent and killed delegates, ordering, limits.

use std::time::Duration;

use tokio::time::Instant;

use serde_json::json;

use crate::harness::*;
use crate::rooms::enter_ok;

/// The report timeout of these tests, on a paused clock; shorter than the
/// harness's wait for a frame ([`WAIT`]), so a failover is awaited.
const TIMEOUT: Duration = Duration::from_secs(3);

/// A node in relay mode with a short report timeout; `enter_room` is
/// broadcast so that only the notification under test is relayed.
async fn relay_server() -> TestServer {
    relay_server_with(TIMEOUT).await
}

/// The same with another report timeout (long, to show that a failover
/// did not wait for it).
async fn relay_server_with(report_timeout: Duration) -> TestServer {
    TestServer::with(move |c| {
        c.delivery.mode = chorus::config::DeliveryMode::Relay;
        c.delivery
            .actions
            .insert("enter_room".into(), chorus::config::DeliveryMode::Broadcast);
        c.relay.report_timeout = report_timeout;
    })
    .await
}

/// Connects `users`, enters them into `channel` in order and drains the
/// `enter_room` frames.
async fn room_of(server: &TestServer, channel: &str, users: &[u64]) -> Vec<Client> {
    let mut clients = Vec::new();
    for user in users {
        clients.push(server.connect(*user).await);
        enter_ok(server, *user, channel, 1).await;
    }
    for c in clients.iter_mut() {
        while c.recv_within(Duration::from_millis(150)).await.is_ok() {}
    }
    clients
}

async fn exit(server: &TestServer, user: u64, channel: &str) -> String {
    let (status, body) = server
        .action(json!({"action": "exit_room", "user_id": user, "channel_name": channel}))
        .await;
    assert_eq!(status, 200, "{body}");
    body["msg_ids"][0].as_str().unwrap().to_string()
}

/// Reads frames until the relayed `exit_room` about `user` arrives (a
/// killed delegate's own `exit_room` may be relayed on the same member).
async fn exit_about(client: &mut Client, user: u64) -> serde_json::Value {
    loop {
        let frame = client.expect("exit_room").await;
        if frame["user_id"] == user {
            assert_eq!(frame["relay"], true, "{frame}");
            return frame;
        }
    }
}

async fn relays_in_flight(server: &TestServer) -> u64 {
    server.admin("GET", "/admin/connections").await.1["relays_in_flight"]
        .as_u64()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_report_from_the_delegate_completes_the_relay() {
    let server = relay_server().await;
    let mut c = room_of(&server, "r1", &[401, 402, 403]).await;
    let msg_id = exit(&server, 401, "r1").await;
    let frame = c[1].expect("exit_room").await;
    assert_eq!(frame["relay"], true);
    assert_eq!(frame["msg_id"], msg_id.as_str());
    assert_eq!(frame["user_id"], 401);
    c[1].send(
        "exit_room_report",
        json!({"user_id": 401, "msg_id": msg_id}),
    )
    .await;
    c[2].expect_silence(TIMEOUT * 2).await;
    c[1].expect_silence(Duration::from_millis(1)).await;
    assert_eq!(relays_in_flight(&server).await, 0);
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_report_without_msg_id_matches_by_action_and_user() {
    let server = relay_server().await;
    let mut c = room_of(&server, "r2", &[411, 412, 413]).await;
    exit(&server, 411, "r2").await;
    c[1].expect("exit_room").await;
    c[1].send("exit_room_report", json!({"user_id": 411})).await;
    c[2].expect_silence(TIMEOUT * 2).await;
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_silent_delegate_is_replaced_after_the_report_timeout() {
    let server = relay_server().await;
    let mut c = room_of(&server, "r3", &[421, 422, 423]).await;
    let msg_id = exit(&server, 421, "r3").await;
    let first = c[1].expect("exit_room").await;
    let started = Instant::now();
    let second = c[2].expect("exit_room").await;
    assert!(
        started.elapsed() >= TIMEOUT - Duration::from_millis(100),
        "not before the timeout"
    );
    assert_eq!(first, second, "the same frame, the same msg_id");
    assert_eq!(second["msg_id"], msg_id.as_str());
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_killed_delegate_is_replaced_at_once() {
    let server = relay_server_with(Duration::from_secs(10)).await;
    let mut c = room_of(&server, "r4", &[431, 432, 433]).await;
    exit(&server, 431, "r4").await;
    c[1].expect("exit_room").await;
    let killed = Instant::now();
    let b = c.remove(1);
    drop(b);
    exit_about(&mut c[1], 431).await;
    assert!(
        killed.elapsed() < Duration::from_secs(2),
        "well before the 10 s timeout: {:?}",
        killed.elapsed()
    );
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_report_from_anyone_but_the_delegate_does_not_complete_it() {
    let server = relay_server().await;
    let mut c = room_of(&server, "r5", &[441, 442, 443]).await;
    let msg_id = exit(&server, 441, "r5").await;
    c[1].expect("exit_room").await;
    c[2].send(
        "exit_room_report",
        json!({"user_id": 441, "msg_id": msg_id}),
    )
    .await;
    let retry = c[2].expect("exit_room").await;
    assert_eq!(
        retry["msg_id"],
        msg_id.as_str(),
        "the relay went on to the next member"
    );
    // A late report from the first delegate, whose turn timed out, does
    // not complete it either; the current delegate's does.
    c[0].expect_silence(Duration::from_millis(1)).await;
    c[1].send(
        "exit_room_report",
        json!({"user_id": 441, "msg_id": msg_id}),
    )
    .await;
    assert_eq!(relays_in_flight(&server).await, 1);
    c[2].send(
        "exit_room_report",
        json!({"user_id": 441, "msg_id": msg_id}),
    )
    .await;
    assert!(eventually(|| async { relays_in_flight(&server).await == 0 }).await);
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn seated_members_are_chosen_first_and_the_subject_never() {
    let server = relay_server().await;
    let mut c = room_of(&server, "r6", &[451, 452, 453, 454]).await;
    for (user, seat) in [(451, 1), (454, 2)] {
        let (status, _) = server.action(json!({"action": "up", "user_id": user, "channel_name": "r6", "seat_id": seat, "nickname": "n", "sex": 0, "avatar_url": "", "avatar_small_url": ""})).await;
        assert_eq!(status, 200);
        // The up notification is itself relayed: report it so it ends.
        let delegate = if user == 451 { 1 } else { 0 };
        let up = c[delegate].expect("up").await;
        c[delegate]
            .send(
                "up_deport",
                json!({"user_id": user, "msg_id": up["msg_id"]}),
            )
            .await;
    }
    assert!(
        eventually(|| async { relays_in_flight(&server).await == 0 }).await,
        "up_deport completes the relay"
    );
    // Subject 451 holds seat 1, so the first delegate is 454 (seat 2),
    // then 452 and 453 by join time.
    exit(&server, 451, "r6").await;
    c[3].expect("exit_room").await;
    c[1].expect("exit_room").await;
    c[2].expect("exit_room").await;
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn at_most_max_attempts_members_are_tried() {
    let server = relay_server().await;
    let mut c = room_of(&server, "r7", &[461, 462, 463, 464, 465]).await;
    exit(&server, 461, "r7").await;
    for member in &mut c[1..=3] {
        member.expect("exit_room").await;
    }
    c[4].expect_silence(TIMEOUT * 2).await;
    assert!(eventually(|| async { relays_in_flight(&server).await == 0 }).await);
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_relay_with_no_other_member_online_ends() {
    let server = relay_server().await;
    let mut c = room_of(&server, "r8", &[471]).await;
    enter_ok(&server, 472, "r8", 1).await; // a member who is not connected
    c[0].expect("enter_room").await;
    exit(&server, 471, "r8").await;
    assert!(eventually(|| async { relays_in_flight(&server).await == 0 }).await);
    c[0].expect_silence(Duration::from_millis(200)).await;
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn two_delegates_dying_in_a_row_leave_the_third_to_relay() {
    let server = relay_server_with(Duration::from_secs(10)).await;
    let mut c = room_of(&server, "r9", &[481, 482, 483, 484]).await;
    let msg_id = exit(&server, 481, "r9").await;
    let started = Instant::now();
    exit_about(&mut c[1], 481).await;
    drop(c.remove(1));
    exit_about(&mut c[1], 481).await;
    drop(c.remove(1));
    let last = exit_about(&mut c[1], 481).await;
    assert_eq!(last["msg_id"], msg_id.as_str());
    assert!(started.elapsed() < Duration::from_secs(3));
    c[1].send(
        "exit_room_report",
        json!({"user_id": 481, "msg_id": msg_id}),
    )
    .await;
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_killed_member_is_relayed_as_exit_room_and_its_call_peer_gets_hang_up_directly() {
    let server = relay_server().await;
    let mut c = room_of(&server, "r10", &[491, 492, 493]).await;
    let (status, _) = server.action(json!({"action": "call_start", "user_id": 491, "receiver_id": 493, "channel_name": "r10"})).await;
    assert_eq!(status, 200);
    drop(c.remove(0));
    let mut got_b = vec![];
    while let Ok(f) = c[0].recv_within(Duration::from_millis(400)).await {
        got_b.push(f);
    }
    let mut got_c = vec![];
    while let Ok(f) = c[1].recv_within(Duration::from_millis(100)).await {
        got_c.push(f);
    }
    let exit = got_b
        .iter()
        .find(|f| f["action"] == "exit_room")
        .expect("B is the delegate of exit_room");
    assert_eq!(
        (exit["relay"].clone(), exit["user_id"].clone()),
        (json!(true), json!(491))
    );
    let hang_up = got_c
        .iter()
        .find(|f| f["action"] == "hang_up")
        .expect("the peer gets hang_up");
    assert_eq!(
        hang_up["relay"],
        serde_json::Value::Null,
        "point to point, not relayed"
    );
    assert_eq!(
        (hang_up["user_id"].clone(), hang_up["receiver_id"].clone()),
        (json!(491), json!(493))
    );
    server.stop().await;
}

/// A relay node whose plugins folder holds the bundled `room` plugin,
/// `echo` (a 1.1 plugin) and `legacy` (a 1.0 plugin): actions the host
/// has never heard of.
async fn relay_server_with_new_actions() -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    copy_plugins(dir.path(), &["room", "legacy"]);
    std::fs::copy(
        artifacts().join("echo_v1.wasm"),
        dir.path().join("echo.wasm"),
    )
    .unwrap();
    let path = dir.path().to_path_buf();
    let server = TestServer::with(move |c| {
        c.plugins.dir = Some(path);
        c.delivery.mode = chorus::config::DeliveryMode::Relay;
        c.delivery
            .actions
            .insert("enter_room".into(), chorus::config::DeliveryMode::Broadcast);
        c.relay.report_timeout = TIMEOUT;
    })
    .await;
    (server, dir)
}

/// Issue 13 item 6: a new action's room notification goes out in the
/// default relay mode and its delegate's `<action>_report` completes it
/// (it used to be refused with 1007 and the relay never completed).
#[tokio::test]
async fn a_new_actions_relay_is_completed_by_its_action_report() {
    let (server, _dir) = relay_server_with_new_actions().await;
    let mut c = room_of(&server, "r-new", &[461, 462, 463]).await;
    let ack = c[0].call("legacy_echo", json!({})).await;
    let msg_id = ack["msg_ids"][0]
        .as_str()
        .unwrap_or_else(|| panic!("one notification: {ack}"))
        .to_string();
    let frame = c[1].expect("legacy_echo").await;
    assert_eq!(frame["relay"], true, "{frame}");
    assert_eq!(frame["msg_id"], msg_id.as_str());
    c[1].send(
        "legacy_echo_report",
        json!({"user_id": 461, "msg_id": msg_id}),
    )
    .await;
    c[1].expect_silence(TIMEOUT * 2).await;
    c[2].expect_silence(Duration::from_millis(1)).await;
    assert_eq!(relays_in_flight(&server).await, 0);
    // Without msg_id: matched by action and subject.
    c[0].call("legacy_echo", json!({})).await;
    c[1].expect("legacy_echo").await;
    c[1].send("legacy_echo_report", json!({"user_id": 461}))
        .await;
    c[2].expect_silence(TIMEOUT * 2).await;
    assert_eq!(relays_in_flight(&server).await, 0);
    server.stop().await;
}

/// A 1.1 plugin chooses per notification: `broadcast` reaches every
/// member at once, `relay` one delegate, whatever the configured mode.
#[tokio::test]
async fn a_notification_says_how_it_goes_to_the_room() {
    let (server, _dir) = relay_server_with_new_actions().await;
    let mut c = room_of(&server, "r-via", &[471, 472, 473]).await;
    let fields = json!({"channel_name": "r-via", "delivery": "broadcast"});
    c[0].send("echo", fields).await;
    let mut heard = 0;
    for member in c.iter_mut() {
        // The caller gets its own notification and its ack, in any order.
        while let Ok(frame) = member.recv_within(Duration::from_millis(300)).await {
            if frame["action"] == "echo" {
                assert_eq!(frame.get("relay"), None, "{frame}");
                heard += 1;
            }
        }
    }
    assert_eq!(heard, 3, "every member heard the broadcast");
    let fields = json!({"channel_name": "r-via", "delivery": "relay"});
    c[0].call("echo", fields).await;
    let frame = c[1].expect("echo").await;
    assert_eq!(frame["relay"], true, "{frame}");
    c[2].expect_silence(Duration::from_millis(100)).await;
    c[1].send("echo_report", json!({"user_id": 471})).await;
    c[2].expect_silence(TIMEOUT * 2).await;
    assert_eq!(relays_in_flight(&server).await, 0);
    server.stop().await;
}
