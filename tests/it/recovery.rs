//! Recovery after a dropped link (issue 17): `epoch`/`seq` on every room
//! and point-to-point notification, the resume of the upgrade query
//! (`resume_*`), `room_state` and `room_attributes`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;
use crate::rooms::{enter_ok, gift, up};

/// A node that keeps a dropped user's room for 60 s.
async fn server() -> TestServer {
    TestServer::with(|c| c.heartbeat.grace = Duration::from_secs(60)).await
}

/// Every frame that arrives within 300 ms of the last one.
async fn drain(client: &mut Client) -> Vec<Value> {
    let mut frames = Vec::new();
    while let Ok(frame) = client.recv_within(Duration::from_millis(300)).await {
        frames.push(frame);
    }
    frames
}

/// `(epoch, seq)` of a stamped frame.
fn stamp(frame: &Value) -> (String, u64) {
    let epoch = frame["epoch"].as_str().expect("epoch").to_string();
    let seq = frame["seq"].as_u64().expect("seq");
    (epoch, seq)
}

/// Reconnects `user_id` with these `resume_*` parameters; the client
/// hands over `room_state` frames.
async fn reconnect(server: &TestServer, user_id: u64, resume: &[(&str, &str)]) -> Client {
    let creds = server.credentials(user_id);
    let url = server.ws_url_with(&creds, resume);
    let mut client = Client::connect(&url, creds).await.expect("reconnects");
    client.room_states = true;
    client
}

async fn send_gift(server: &TestServer, channel: &str, notify: &str, sender: u64, to: u64, n: i64) {
    let (status, body) = server
        .action(json!({"action": "send_gift", "channel_name": channel, "notify_type": notify, "gift": gift(sender, to, n)}))
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_dropped_link_gets_exactly_what_it_missed_in_order_then_recovered() {
    let server = server().await;
    let mut a = server.connect(1701).await;
    enter_ok(&server, 1701, "room_rc", 17).await;
    enter_ok(&server, 1702, "room_rc", 17).await;
    assert_eq!(up(&server, 1701, "room_rc", Some(1)).await.0, 200);
    send_gift(&server, "room_rc", "ptp", 1702, 1701, 1).await;
    let seen = drain(&mut a).await;
    let last_room = seen
        .iter()
        .rfind(|f| f["action"] == "up")
        .expect("a saw its up");
    let (room_epoch, room_seq) = stamp(last_room);
    let ptp = seen
        .iter()
        .rfind(|f| f["notify_type"] == "ptp")
        .expect("a saw the ptp gift");
    let (user_epoch, user_seq) = stamp(ptp);
    assert_eq!(user_seq, 1, "the user's own stream starts at 1");

    // The phone loses its link: the TCP connection ends, no close frame.
    drop(a);
    for n in 1..=10 {
        send_gift(&server, "room_rc", "bc", 1702, 1701, n).await;
    }
    assert_eq!(up(&server, 1702, "room_rc", Some(2)).await.0, 200);
    send_gift(&server, "room_rc", "ptp", 1702, 1701, 99).await;

    let (room_seq_s, user_seq_s) = (room_seq.to_string(), user_seq.to_string());
    let mut a = reconnect(
        &server,
        1701,
        &[
            ("resume_channel", "room_rc"),
            ("resume_epoch", &room_epoch),
            ("resume_seq", &room_seq_s),
            ("resume_user_epoch", &user_epoch),
            ("resume_user_seq", &user_seq_s),
        ],
    )
    .await;
    assert_eq!(a.connected["channel_name"], "room_rc");
    // The user stream first: the one ptp gift.
    let missed_ptp = a.expect("send_gift").await;
    assert_eq!(missed_ptp["gift"]["num"], 99);
    assert_eq!(stamp(&missed_ptp), (user_epoch.clone(), user_seq + 1));
    // Then the room: the 10 gifts and the seat change, in order.
    for n in 1..=10 {
        let frame = a.expect("send_gift").await;
        assert_eq!(frame["gift"]["num"], n, "{frame}");
        assert_eq!(frame["notify_type"], "bc");
        assert_eq!(stamp(&frame), (room_epoch.clone(), room_seq + n as u64));
    }
    let seat = a.expect("up").await;
    assert_eq!(seat["room_seat"]["user_id"], 1702);
    assert_eq!(stamp(&seat), (room_epoch.clone(), room_seq + 11));
    let resumed = a.expect("resumed").await;
    assert_eq!(
        resumed,
        json!({"action": "resumed", "recovered": true, "channel_name": "room_rc",
               "epoch": room_epoch, "seq": room_seq + 11,
               "user_epoch": user_epoch, "user_seq": user_seq + 1})
    );
    // Nothing twice, and the seat kept.
    a.expect_silence(Duration::from_millis(500)).await;
    let (_, room) = server.api("GET", "/api/v1/rooms/room_rc", None).await;
    assert_eq!(room["seats"][0]["user_id"], 1701, "{room}");
    // The stream goes on from there.
    send_gift(&server, "room_rc", "bc", 1702, 1701, 5).await;
    let live = a.expect("send_gift").await;
    assert_eq!(stamp(&live), (room_epoch, room_seq + 12));
    server.stop().await;
}

#[tokio::test]
async fn a_gap_past_the_history_is_recovered_false_with_a_room_state_equal_to_the_api() {
    let server = server().await;
    let mut a = server.connect(1711).await;
    enter_ok(&server, 1711, "room_big", 18).await;
    enter_ok(&server, 1712, "room_big", 18).await;
    assert_eq!(up(&server, 1712, "room_big", Some(4)).await.0, 200);
    let seen = drain(&mut a).await;
    let (epoch, seq) = stamp(seen.last().expect("a saw its room"));
    drop(a);
    for _ in 0..500 {
        send_gift(&server, "room_big", "bc", 1712, 1711, 1).await;
    }
    let seq_s = seq.to_string();
    let mut a = reconnect(
        &server,
        1711,
        &[
            ("resume_channel", "room_big"),
            ("resume_epoch", &epoch),
            ("resume_seq", &seq_s),
        ],
    )
    .await;
    let state = a.expect("room_state").await;
    let resumed = a.expect("resumed").await;
    assert_eq!(resumed["recovered"], false, "{resumed}");
    let (_, room) = server.api("GET", "/api/v1/rooms/room_big", None).await;
    for field in ["channel_name", "room_id", "members", "seats"] {
        assert_eq!(state[field], room[field], "{field}: {state} vs {room}");
    }
    assert_eq!(state["member_count"], 2);
    assert_eq!(state["own_seat_id"], Value::Null);
    assert_eq!(state["call"], Value::Null);
    assert_eq!(state["epoch"], epoch.as_str());
    assert_eq!(state["seq"], seq + 500);
    assert_eq!(
        (resumed["epoch"].clone(), resumed["seq"].clone()),
        (state["epoch"].clone(), state["seq"].clone())
    );
    // No stale gift follows the snapshot; the next one is seq + 1.
    a.expect_silence(Duration::from_millis(500)).await;
    send_gift(&server, "room_big", "bc", 1712, 1711, 2).await;
    let next = a.expect("send_gift").await;
    assert_eq!(next["seq"], seq + 501);
    server.stop().await;
}

#[tokio::test]
async fn forged_future_and_malformed_resumes_get_1001_or_recovered_false_and_no_other_stream() {
    let server = server().await;
    let mut a = server.connect(1721).await;
    let mut b = server.connect(1722).await;
    enter_ok(&server, 1721, "room_f1", 21).await;
    enter_ok(&server, 1722, "room_f2", 22).await;
    send_gift(&server, "room_f2", "bc", 1722, 1722, 7).await;
    let (a_epoch, a_seq) = stamp(drain(&mut a).await.last().expect("a's room"));
    let b_frames = drain(&mut b).await;
    let (b_epoch, _) = stamp(b_frames.last().expect("b's room"));
    drop(a);

    // Malformed: refused before the upgrade with 400 and 1001.
    let creds = server.credentials(1721);
    for bad in [
        vec![
            ("resume_channel", "room_f1"),
            ("resume_epoch", a_epoch.as_str()),
            ("resume_seq", "x1"),
        ],
        vec![
            ("resume_channel", "room_f1"),
            ("resume_epoch", "no-dash"),
            ("resume_seq", "1"),
        ],
        vec![
            ("resume_channel", "room_f1"),
            ("resume_epoch", a_epoch.as_str()),
        ],
        vec![("resume_user_seq", "3")],
    ] {
        let err = tokio_tungstenite::connect_async(server.ws_url_with(&creds, &bad))
            .await
            .expect_err("refused");
        assert_http_refused_with(err, 400, 1001);
    }
    // A resume added to a signed query without signing it: 401, 1003.
    let tampered = format!(
        "{}&resume_user_epoch=ab&resume_user_seq=0",
        server.ws_url(&creds)
    );
    let err = tokio_tungstenite::connect_async(tampered)
        .await
        .expect_err("refused");
    assert_http_refused(err, 1003);

    // Another room's stream (b's epoch, from seq 0): a is in room_f1, so
    // it gets room_f1's snapshot and none of room_f2's gifts.
    let mut again = reconnect(
        &server,
        1721,
        &[
            ("resume_channel", "room_f2"),
            ("resume_epoch", &b_epoch),
            ("resume_seq", "0"),
        ],
    )
    .await;
    let frames = drain(&mut again).await;
    assert_eq!(
        frames
            .iter()
            .map(|f| f["action"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["room_state", "resumed"],
        "{frames:?}"
    );
    assert_eq!(frames[0]["channel_name"], "room_f1");
    assert_eq!(frames[1]["recovered"], false);
    drop(again);

    // Its own room with a seq from the future, or another epoch.
    let future = (a_seq + 1000).to_string();
    let user_future = [
        ("resume_user_epoch", b_epoch.as_str()),
        ("resume_user_seq", "0"),
    ];
    for resume in [
        vec![
            ("resume_channel", "room_f1"),
            ("resume_epoch", a_epoch.as_str()),
            ("resume_seq", future.as_str()),
        ],
        vec![
            ("resume_channel", "room_f1"),
            ("resume_epoch", "zz9"),
            ("resume_seq", "1"),
        ],
        user_future.to_vec(),
    ] {
        let mut again = reconnect(&server, 1721, &resume).await;
        let frames = drain(&mut again).await;
        let actions: Vec<&str> = frames
            .iter()
            .map(|f| f["action"].as_str().unwrap())
            .collect();
        assert_eq!(actions, ["room_state", "resumed"], "{resume:?}: {frames:?}");
        assert_eq!(frames[0]["channel_name"], "room_f1");
        assert_eq!(frames[1]["recovered"], false);
        drop(again);
    }
    server.stop().await;
}

#[tokio::test]
async fn a_client_entering_while_the_room_changes_builds_the_servers_view_from_room_state_and_the_stream()
 {
    let server = server().await;
    let channel = "room_flow";
    for user in 1731..=1736 {
        enter_ok(&server, user, channel, 31).await;
    }
    let mut c = server.connect(1739).await;
    c.room_states = true;
    // Members come and go and gifts flow while 1739 enters.
    let newcomer = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        enter_ok(&server, 1739, channel, 31).await;
    };
    tokio::join!(flow_tolerant(&server, channel), newcomer);
    let frames = drain(&mut c).await;
    let at = frames
        .iter()
        .position(|f| f["action"] == "room_state")
        .expect("a room_state");
    let state = &frames[at];
    let mut members: Vec<u64> = serde_json::from_value(state["members"].clone()).unwrap();
    let mut seq = state["seq"].as_u64().unwrap();
    for frame in &frames[at + 1..] {
        let n = frame["seq"].as_u64().expect("a room frame");
        if n <= seq {
            continue;
        }
        assert_eq!(n, seq + 1, "no gap after the snapshot: {frame}");
        seq = n;
        let user = frame["user_id"].as_u64();
        match frame["action"].as_str() {
            Some("enter_room") => members.push(user.unwrap()),
            Some("exit_room") => members.retain(|m| Some(*m) != user),
            _ => {}
        }
    }
    let (_, room) = server
        .api("GET", &format!("/api/v1/rooms/{channel}"), None)
        .await;
    assert_eq!(json!(members), room["members"]);
    server.stop().await;
}

/// Members leave and come back, and gifts flow, for 60 rounds; a gift
/// refused because its sender has not entered yet is fine.
async fn flow_tolerant(server: &TestServer, channel: &str) {
    for round in 0..60u64 {
        let user = 1731 + round % 6;
        if (round / 6) % 2 == 0 {
            let (status, body) = server
                .action(json!({"action": "exit_room", "user_id": user, "channel_name": channel}))
                .await;
            assert_eq!(status, 200, "{body}");
        } else {
            enter_ok(server, user, channel, 31).await;
        }
        let (status, body) = server
            .action(json!({"action": "send_gift", "channel_name": channel, "notify_type": "bc", "gift": gift(1731 + (round + 3) % 6, 1739, 1)}))
            .await;
        assert!(status == 200 || status == 403, "{status} {body}");
    }
}

#[tokio::test]
async fn attribute_changes_reach_members_with_the_rooms_seq_and_are_in_room_state() {
    let server = server().await;
    let mut a = server.connect(1741).await;
    a.room_states = true;
    enter_ok(&server, 1741, "room_at", 41).await;
    let entered = drain(&mut a).await;
    let state = entered
        .iter()
        .find(|f| f["action"] == "room_state")
        .expect("room_state on entering");
    assert_eq!(state["attributes"], json!({}));
    assert_eq!(state["own_seat_id"], Value::Null);
    let (epoch, seq) = stamp(
        entered
            .iter()
            .rfind(|f| f["action"] == "enter_room")
            .unwrap(),
    );
    let (status, body) = server
        .api(
            "POST",
            "/api/v1/rooms/room_at/attributes",
            Some(json!({"set": {"owner": "1741", "title": "Friday"}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let pushed = a.expect("room_attributes").await;
    assert_eq!(
        pushed["attributes"],
        json!({"owner": "1741", "title": "Friday"})
    );
    assert_eq!(pushed["version"], body["version"]);
    assert_eq!(pushed["channel_name"], "room_at");
    assert_eq!(stamp(&pushed), (epoch.clone(), seq + 1));
    // A newcomer's room_state shows them.
    let mut b = server.connect(1742).await;
    b.room_states = true;
    enter_ok(&server, 1742, "room_at", 41).await;
    let frames = drain(&mut b).await;
    let state = frames
        .iter()
        .find(|f| f["action"] == "room_state")
        .expect("room_state");
    assert_eq!(
        state["attributes"],
        json!({"owner": "1741", "title": "Friday"})
    );
    assert_eq!(state["attributes_version"], body["version"]);
    assert_eq!(state["epoch"], epoch.as_str());
    assert!(state["seq"].as_u64().unwrap() >= seq + 2, "{state}");
    server.stop().await;
}

/// A `send_gift` frame as the bundled gift plugin sends it (about 420
/// bytes once stamped).
fn gift_frame(n: u64) -> String {
    json!({"action": "send_gift", "channel_name": "room_mem", "notify_type": "bc",
           "gift": gift(1761, 1762, 1), "msg_id": format!("{:032x}", n)})
    .to_string()
}

/// Resident memory of this process, bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Run with: `cargo test -p chorus-tests --test it -- --ignored --nocapture recovery::history_memory`
#[tokio::test]
#[ignore = "a measurement; prints memory per room of history"]
async fn history_memory_per_room_at_the_default_size() {
    use chorus::store::{LogEntry, Store, Stream};
    const ROOMS: u64 = 2000;
    let store = chorus::store::memory::MemoryStore::new(9);
    let frame_bytes = gift_frame(0).len();
    let before = rss();
    for room in 0..ROOMS {
        let entries: Vec<LogEntry> = (0..200)
            .map(|n| LogEntry {
                stream: Stream::Room(format!("room_{room}")),
                frame: gift_frame(room * 1000 + n),
            })
            .collect();
        store.apply_logged(&[], &entries).await.unwrap();
    }
    let after = rss();
    let per_room = (after - before) / ROOMS;
    println!(
        "memory store: {ROOMS} rooms x 200 notifications of {frame_bytes} bytes (+ stamp): \
         {per_room} bytes of RSS per room ({} per notification)",
        per_room / 200
    );
    // Redis: MEMORY USAGE of one room's history list at 200.
    let url = redis_url();
    let prefix = format!("chorus-test:histmem:{}:", nonce());
    let redis_store = chorus::store::redis::RedisStore::connect(&url, &prefix, 9)
        .await
        .unwrap();
    let entries: Vec<LogEntry> = (0..200)
        .map(|n| LogEntry {
            stream: Stream::Room("room_mem".into()),
            frame: gift_frame(n),
        })
        .collect();
    redis_store.apply_logged(&[], &entries).await.unwrap();
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let used: u64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(format!("{prefix}hist:r:room_mem"))
        .arg("SAMPLES")
        .arg(0)
        .query_async(&mut conn)
        .await
        .unwrap();
    println!("redis: MEMORY USAGE of one room's history at 200: {used} bytes");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("DEL")
        .arg(keys)
        .query_async(&mut conn)
        .await
        .unwrap();
}

/// Run with: `cargo test -p chorus-tests --test it -- --ignored --nocapture recovery::time_to_recover`
#[tokio::test]
#[ignore = "a measurement; prints the time to recover 200 missed notifications"]
async fn time_to_recover_200_missed_notifications() {
    let server = server().await;
    let mut runs = Vec::new();
    for run in 0..5u64 {
        let (user, channel) = (1770 + run * 2, format!("room_t{run}"));
        let mut a = server.connect(user).await;
        enter_ok(&server, user, &channel, 70).await;
        enter_ok(&server, user + 1, &channel, 70).await;
        let (epoch, seq) = stamp(drain(&mut a).await.last().unwrap());
        drop(a);
        for _ in 0..200 {
            send_gift(&server, &channel, "bc", user + 1, user, 1).await;
        }
        let seq_s = seq.to_string();
        let started = std::time::Instant::now();
        let mut a = reconnect(
            &server,
            user,
            &[
                ("resume_channel", &channel),
                ("resume_epoch", &epoch),
                ("resume_seq", &seq_s),
            ],
        )
        .await;
        for _ in 0..200 {
            a.expect("send_gift").await;
        }
        assert_eq!(a.expect("resumed").await["recovered"], true);
        runs.push(started.elapsed());
    }
    runs.sort();
    println!(
        "time from the upgrade request to `resumed` after 200 replayed gifts: {runs:?} (median {:?})",
        runs[2]
    );
    server.stop().await;
}

/// The room part of a resume for what `frames` last stamped in the room.
fn room_part(frames: &[Value]) -> (String, String) {
    let last = frames
        .iter()
        .rfind(|f| f["stream"] == "room" || f["action"] == "room_state")
        .expect("a room frame");
    let (epoch, seq) = stamp(last);
    (epoch, seq.to_string())
}

#[tokio::test]
async fn a_resume_without_the_user_part_replays_the_user_stream_from_its_start() {
    let server = server().await;
    let mut a = server.connect(1751).await;
    a.room_states = true;
    enter_ok(&server, 1751, "room_h2", 75).await;
    enter_ok(&server, 1752, "room_h2", 75).await;
    let seen = drain(&mut a).await;
    assert!(
        seen.iter().all(|f| f["stream"] != "user"),
        "no point-to-point frame yet: {seen:?}"
    );
    let (epoch, seq) = room_part(&seen);
    drop(a);
    send_gift(&server, "room_h2", "ptp", 1752, 1751, 7).await;
    // Never got a point-to-point frame: the user part is left out.
    let mut a = reconnect(
        &server,
        1751,
        &[
            ("resume_channel", "room_h2"),
            ("resume_epoch", &epoch),
            ("resume_seq", &seq),
        ],
    )
    .await;
    let missed = a.expect("send_gift").await;
    assert_eq!(missed["gift"]["num"], 7);
    assert_eq!(missed["stream"], "user");
    assert_eq!(missed["seq"], 1);
    let resumed = a.expect("resumed").await;
    assert_eq!(resumed["recovered"], true, "{resumed}");
    assert_eq!(resumed["user_seq"], 1);
    assert_eq!(resumed["user_epoch"], missed["epoch"]);
    a.expect_silence(Duration::from_millis(300)).await;
    server.stop().await;
}

#[tokio::test]
async fn a_resume_without_the_user_part_is_not_recovered_once_seq_1_left_the_history() {
    let server = TestServer::with(|c| {
        c.heartbeat.grace = Duration::from_secs(60);
        c.recovery.history_size = 1;
    })
    .await;
    let mut a = server.connect(1753).await;
    a.room_states = true;
    enter_ok(&server, 1753, "room_h2b", 76).await;
    enter_ok(&server, 1754, "room_h2b", 76).await;
    let (epoch, seq) = room_part(&drain(&mut a).await);
    drop(a);
    send_gift(&server, "room_h2b", "ptp", 1754, 1753, 1).await;
    send_gift(&server, "room_h2b", "ptp", 1754, 1753, 2).await;
    let mut a = reconnect(
        &server,
        1753,
        &[
            ("resume_channel", "room_h2b"),
            ("resume_epoch", &epoch),
            ("resume_seq", &seq),
        ],
    )
    .await;
    let frames = drain(&mut a).await;
    let resumed = frames.last().expect("resumed");
    assert_eq!(resumed["action"], "resumed");
    assert_eq!(
        resumed["recovered"], false,
        "a gap is never recovered: {frames:?}"
    );
    assert_eq!(resumed["user_seq"], 2);
    assert!(
        frames.iter().all(|f| f["action"] != "send_gift"),
        "no partial replay: {frames:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn every_stamped_frame_names_its_stream() {
    let server = server().await;
    let mut a = server.connect(1755).await;
    enter_ok(&server, 1755, "room_h3", 77).await;
    enter_ok(&server, 1756, "room_h3", 77).await;
    send_gift(&server, "room_h3", "bc", 1756, 1755, 1).await;
    send_gift(&server, "room_h3", "ptp", 1756, 1755, 2).await;
    let frames = drain(&mut a).await;
    let stamped: Vec<&Value> = frames.iter().filter(|f| f.get("seq").is_some()).collect();
    assert!(stamped.len() >= 3, "{frames:?}");
    for f in stamped {
        if f["action"] == "room_state" {
            continue;
        }
        let want = if f["notify_type"] == "ptp" {
            "user"
        } else {
            "room"
        };
        assert_eq!(f["stream"], want, "{f}");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_resume_never_replays_the_room_from_before_the_user_entered() {
    let server = server().await;
    enter_ok(&server, 1761, "room_m1", 78).await;
    enter_ok(&server, 1762, "room_m1", 78).await;
    send_gift(&server, "room_m1", "bc", 1762, 1761, 41).await;
    let mut d = server.connect(1763).await;
    d.room_states = true;
    enter_ok(&server, 1763, "room_m1", 78).await;
    let (epoch, seq) = room_part(&drain(&mut d).await);
    drop(d);
    // Resuming from before its own entry: not its to replay.
    let mut d = reconnect(
        &server,
        1763,
        &[
            ("resume_channel", "room_m1"),
            ("resume_epoch", &epoch),
            ("resume_seq", "0"),
        ],
    )
    .await;
    let frames = drain(&mut d).await;
    assert!(
        frames.iter().all(|f| f["action"] != "send_gift"),
        "a gift from before the entry was replayed: {frames:?}"
    );
    let state = frames
        .iter()
        .find(|f| f["action"] == "room_state")
        .expect("a room_state instead");
    assert_eq!(state["channel_name"], "room_m1");
    let resumed = frames.last().expect("resumed");
    assert_eq!(resumed["action"], "resumed");
    assert_eq!(resumed["recovered"], false, "{resumed}");
    drop(d);
    // From its own position it recovers, with nothing missed.
    let mut d = reconnect(
        &server,
        1763,
        &[
            ("resume_channel", "room_m1"),
            ("resume_epoch", &epoch),
            ("resume_seq", &seq),
        ],
    )
    .await;
    let resumed = d.expect("resumed").await;
    assert_eq!(resumed["recovered"], true, "{resumed}");
    server.stop().await;
}

#[tokio::test]
async fn a_resume_does_not_replay_what_relay_mode_sent_only_to_a_delegate() {
    let server = TestServer::with(|c| {
        c.heartbeat.grace = Duration::from_secs(60);
        c.delivery.mode = chorus::config::DeliveryMode::Relay;
        c.relay.report_timeout = Duration::from_secs(30);
    })
    .await;
    let mut a = server.connect(1771).await;
    a.room_states = true;
    let mut b = server.connect(1773).await;
    enter_ok(&server, 1771, "room_m2", 79).await;
    enter_ok(&server, 1772, "room_m2", 79).await;
    enter_ok(&server, 1773, "room_m2", 79).await;
    send_gift(&server, "room_m2", "bc", 1772, 1771, 1).await;
    let (epoch, seq) = room_part(&drain(&mut a).await);
    drop(a);
    // Relayed to the one delegate left (the sender is its subject): b.
    send_gift(&server, "room_m2", "bc", 1772, 1771, 2).await;
    let relayed = b.expect_skipping("send_gift").await;
    assert_eq!(relayed["relay"], true, "{relayed}");
    assert_eq!(relayed["stream"], "room", "{relayed}");
    let mut a = reconnect(
        &server,
        1771,
        &[
            ("resume_channel", "room_m2"),
            ("resume_epoch", &epoch),
            ("resume_seq", &seq),
        ],
    )
    .await;
    let frames = drain(&mut a).await;
    assert!(
        frames.iter().all(|f| f["action"] != "send_gift"),
        "a relayed frame was replayed: {frames:?}"
    );
    let resumed = frames.last().expect("resumed");
    assert_eq!(resumed["action"], "resumed");
    assert_eq!(resumed["recovered"], true, "{resumed}");
    assert_eq!(resumed["seq"], relayed["seq"]);
    server.stop().await;
}
