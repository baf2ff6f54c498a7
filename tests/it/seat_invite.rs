//! The bundled `seat_invite` plugin (contract 1.1, issue 13 item 9a):
//! `invite_to_seat`, `accept_seat_invite`, `decline_seat_invite`, expiry
//! by timer and either side disconnecting, through the front door.

use serde_json::{Value, json};

use crate::attributes::set_attrs_ok;
use crate::harness::*;
use crate::profiles::{backend_profile, session_with_profile};
use crate::rooms::enter_ok;

/// `seat_invite.toml` with a one-second invitation and the shipped grants.
const SHORT_TIMEOUT: &str = "invite_timeout = 1\n[grants]\n\
    effects = [\"seats\", \"kv\", \"timers\"]\n\
    imports = [\"room-state\", \"profiles\", \"kv\", \"config\", \"log\"]\n";

/// A room `channel` with owner `owner` and members `members` (the owner
/// included), each connected; the clients in that order.
async fn room_with(server: &TestServer, channel: &str, owner: u64, members: &[u64]) -> Vec<Client> {
    set_attrs_ok(server, channel, json!({"owner": owner.to_string()})).await;
    for user in members {
        enter_ok(server, *user, channel, 1).await;
    }
    let mut clients = Vec::new();
    for user in members {
        clients.push(server.connect(*user).await);
    }
    clients
}

/// Seat `id` of `channel` as `GET /api/v1/rooms/{channel}` shows it.
async fn seat(server: &TestServer, channel: &str, id: usize) -> Value {
    let (status, room) = server
        .api("GET", &format!("/api/v1/rooms/{channel}"), None)
        .await;
    assert_eq!(status, 200, "{room}");
    room["seats"][id - 1].clone()
}

/// Waits until seat `id` of `channel` is free (status 0, nobody).
async fn until_free(server: &TestServer, channel: &str, id: usize) -> bool {
    eventually(|| async {
        let seat = seat(server, channel, id).await;
        seat["status"] == 0 && seat["user_id"].is_null()
    })
    .await
}

/// A node serving the bundled plugins from a folder, `seat_invite` with a
/// one-second `invite_timeout`.
async fn node_with_short_invites(dir: &std::path::Path) -> TestServer {
    copy_plugins(dir, &["room", "seat", "seat_invite"]);
    std::fs::write(dir.join("seat_invite.toml"), SHORT_TIMEOUT).unwrap();
    let path = dir.to_path_buf();
    TestServer::with(move |c| c.plugins.dir = Some(path)).await
}

#[tokio::test]
async fn the_owner_invites_a_member_who_accepts_and_the_room_sees_up_with_its_profile() {
    let server = TestServer::start().await;
    session_with_profile(&server, 702, backend_profile(702, "Guest")).await;
    let mut clients = room_with(&server, "room_i1", 701, &[701, 702, 703]).await;
    let [owner, invitee, other] = &mut clients[..] else {
        unreachable!()
    };
    let ack = owner
        .call(
            "invite_to_seat",
            json!({"channel_name": "room_i1", "receiver_id": 702}),
        )
        .await;
    assert_eq!(ack["action"], "ack", "{ack}");
    assert_eq!(
        ack["result"],
        json!({"channel_name": "room_i1", "receiver_id": 702, "seat_id": 1, "expire_time": 30})
    );
    let invite = invitee.expect("seat_invite").await;
    assert!(invite["msg_id"].is_string(), "{invite}");
    assert_eq!(
        (
            &invite["channel_name"],
            &invite["user_id"],
            &invite["receiver_id"],
            &invite["seat_id"],
            &invite["expire_time"]
        ),
        (
            &json!("room_i1"),
            &json!(701),
            &json!(702),
            &json!(1),
            &json!(30)
        ),
        "{invite}"
    );
    // The seat is held: locked, so nobody else takes it.
    assert_eq!(seat(&server, "room_i1", 1).await["status"], 2);
    let mut up = as_object(crate::rooms::profile(703));
    up.extend(as_object(
        json!({"action": "up", "user_id": 703, "channel_name": "room_i1", "seat_id": 1}),
    ));
    let (status, body) = server.action(Value::Object(up)).await;
    assert_eq!(
        (status, body["error_code"].as_u64()),
        (409, Some(2003)),
        "{body}"
    );
    // Accepting seats the invitee; the room hears the standard `up` with
    // the profile the app backend stored.
    invitee
        .send("accept_seat_invite", json!({"nickname": "Forged"}))
        .await;
    let heard = other.expect("up").await;
    assert_eq!(heard["channel_name"], "room_i1");
    let room_seat = &heard["room_seat"];
    assert_eq!(
        (
            &room_seat["user_id"],
            &room_seat["id"],
            &room_seat["status"],
            &room_seat["microphone"],
            &room_seat["nickname"],
            &room_seat["sex"]
        ),
        (
            &json!(702),
            &json!(1),
            &json!(1),
            &json!(1),
            &json!("Guest"),
            &json!(2)
        ),
        "{heard}"
    );
    assert_eq!(invitee.expect("up").await["room_seat"]["user_id"], 702);
    assert_eq!(
        invitee.expect("ack").await["result"],
        json!({"channel_name": "room_i1", "seat_id": 1})
    );
    owner.expect("up").await;
    let taken = seat(&server, "room_i1", 1).await;
    assert_eq!(
        (&taken["user_id"], &taken["status"]),
        (&json!(702), &json!(1))
    );
    // Nothing is pending any more.
    let again = invitee.call("accept_seat_invite", json!({})).await;
    assert_eq!(
        (&again["error_code"], &again["error_reason"]),
        (&json!(2004), &json!("user 702 has no pending seat invite")),
        "{again}"
    );
    server.stop().await;
}

#[tokio::test]
async fn invitations_outside_the_rules_are_refused_with_their_codes() {
    let server = TestServer::start().await;
    let mut clients = room_with(&server, "room_i2", 711, &[711, 712, 713]).await;
    enter_ok(&server, 714, "room_other", 1).await;
    let mut up = as_object(crate::rooms::profile(713));
    up.extend(as_object(
        json!({"action": "up", "user_id": 713, "channel_name": "room_i2", "seat_id": 2}),
    ));
    assert_eq!(server.action(Value::Object(up)).await.0, 200);
    for client in &mut clients {
        client.expect("up").await;
    }
    let member = &mut clients[1];
    let refused = member
        .call(
            "invite_to_seat",
            json!({"channel_name": "room_i2", "receiver_id": 711}),
        )
        .await;
    assert_eq!(
        (&refused["error_code"], &refused["error_reason"]),
        (
            &json!(2004),
            &json!("user 712 is neither the owner nor an admin of `room_i2`")
        ),
        "{refused}"
    );
    let owner = &mut clients[0];
    let cases = [
        (
            json!({"receiver_id": 714}),
            2004,
            "user 714 is not in `room_i2`",
        ),
        (
            json!({"receiver_id": 711}),
            2001,
            "a user cannot invite themselves",
        ),
        (
            json!({"receiver_id": 713}),
            2003,
            "user 713 is already seated",
        ),
        (
            json!({"receiver_id": 712, "seat_id": 99}),
            2001,
            "seat 99 does not exist: the room has seats 1 to 9",
        ),
        (
            json!({"receiver_id": 712, "seat_id": 2}),
            2003,
            "seat 2 is not free",
        ),
        (
            json!({"receiver_id": "712"}),
            1001,
            "field `receiver_id` must be a non-negative integer",
        ),
        (json!({}), 1002, "`receiver_id` is required"),
    ];
    for (fields, code, reason) in cases {
        let mut body = as_object(fields.clone());
        body.insert("channel_name".into(), json!("room_i2"));
        let refused = owner.call("invite_to_seat", Value::Object(body)).await;
        assert_eq!(
            (&refused["error_code"], &refused["error_reason"]),
            (&json!(code), &json!(reason)),
            "{fields}"
        );
    }
    // One pending invitation per invitee.
    let ack = owner
        .call(
            "invite_to_seat",
            json!({"channel_name": "room_i2", "receiver_id": 712, "seat_id": 3}),
        )
        .await;
    assert_eq!(ack["result"]["seat_id"], 3, "{ack}");
    let twice = owner
        .call(
            "invite_to_seat",
            json!({"channel_name": "room_i2", "receiver_id": 712}),
        )
        .await;
    assert_eq!(
        (&twice["error_code"], &twice["error_reason"]),
        (
            &json!(2003),
            &json!("user 712 already has a pending seat invite")
        ),
        "{twice}"
    );
    // The app backend invites for an owner the same way.
    let (status, body) = server
        .action(json!({"action": "invite_to_seat", "user_id": 711, "channel_name": "room_i2", "receiver_id": 712}))
        .await;
    assert_eq!(
        (status, body["error_code"].as_u64()),
        (409, Some(2003)),
        "{body}"
    );
    server.stop().await;
}

#[tokio::test]
async fn declining_tells_the_inviter_and_frees_the_seat() {
    let server = TestServer::start().await;
    let mut clients = room_with(&server, "room_i3", 721, &[721, 722]).await;
    set_attrs_ok(&server, "room_i3", json!({"owner": "799", "admins": "721"})).await;
    // Members hear of the new roles (issue 17).
    for client in clients.iter_mut() {
        client.expect("room_attributes").await;
    }
    let [admin, invitee] = &mut clients[..] else {
        unreachable!()
    };
    let ack = admin
        .call(
            "invite_to_seat",
            json!({"channel_name": "room_i3", "receiver_id": 722, "seat_id": 4}),
        )
        .await;
    assert_eq!(ack["action"], "ack", "an admin may invite: {ack}");
    invitee.expect("seat_invite").await;
    assert_eq!(seat(&server, "room_i3", 4).await["status"], 2);
    let ack = invitee
        .call("decline_seat_invite", json!({"channel_name": "room_i3"}))
        .await;
    assert_eq!(ack["action"], "ack", "{ack}");
    let mut declined = admin.expect("seat_invite_declined").await;
    assert_eq!(declined["stream"], "user", "to one user: {declined}");
    let declined_object = declined.as_object_mut().unwrap();
    for stamp in ["msg_id", "stream", "epoch", "seq"] {
        assert!(declined_object.remove(stamp).is_some(), "{stamp}");
    }
    assert_eq!(
        declined,
        json!({"action": "seat_invite_declined", "channel_name": "room_i3", "user_id": 721, "receiver_id": 722, "seat_id": 4})
    );
    let freed = seat(&server, "room_i3", 4).await;
    assert_eq!(
        (&freed["status"], &freed["user_id"]),
        (&json!(0), &Value::Null)
    );
    let late = invitee.call("accept_seat_invite", json!({})).await;
    assert_eq!(late["error_code"], 2004, "{late}");
    server.stop().await;
}

#[tokio::test]
async fn an_unanswered_invitation_expires_by_itself_and_tells_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    let server = node_with_short_invites(dir.path()).await;
    let mut clients = room_with(&server, "room_i4", 731, &[731, 732]).await;
    let [owner, invitee] = &mut clients[..] else {
        unreachable!()
    };
    let ack = owner
        .call(
            "invite_to_seat",
            json!({"channel_name": "room_i4", "receiver_id": 732}),
        )
        .await;
    assert_eq!(ack["result"]["expire_time"], 1, "{ack}");
    invitee.expect("seat_invite").await;
    // Nobody answers: the plugin's timer expires it, with no outside help.
    let mut expired = owner.expect("seat_invite_expired").await;
    assert_eq!(expired["stream"], "user", "to one user: {expired}");
    let expired_object = expired.as_object_mut().unwrap();
    for stamp in ["msg_id", "stream", "epoch", "seq"] {
        assert!(expired_object.remove(stamp).is_some(), "{stamp}");
    }
    assert_eq!(
        expired,
        json!({"action": "seat_invite_expired", "channel_name": "room_i4", "user_id": 731,
               "receiver_id": 732, "seat_id": 1, "reason": "timeout"})
    );
    assert_eq!(
        invitee.expect("seat_invite_expired").await["reason"],
        "timeout"
    );
    assert!(
        until_free(&server, "room_i4", 1).await,
        "the held seat is freed"
    );
    let late = invitee.call("accept_seat_invite", json!({})).await;
    assert_eq!(late["error_code"], 2004, "{late}");
    server.stop().await;
}

#[tokio::test]
async fn killing_either_side_mid_invitation_leaves_no_seat_held() {
    let server = TestServer::start().await;
    let mut clients = room_with(&server, "room_i5", 741, &[741, 742, 743]).await;
    let invitee_b = clients.pop().unwrap();
    let invitee_a = clients.pop().unwrap();
    let mut owner = clients.pop().unwrap();
    // The invitee's app is killed: the inviter hears of it, the seat is free.
    let ack = owner
        .call(
            "invite_to_seat",
            json!({"channel_name": "room_i5", "receiver_id": 742, "seat_id": 5}),
        )
        .await;
    assert_eq!(ack["action"], "ack", "{ack}");
    let mut invitee_a = invitee_a;
    invitee_a.expect("seat_invite").await;
    drop(invitee_a);
    let expired = owner.expect_skipping("seat_invite_expired").await;
    assert_eq!(
        (&expired["receiver_id"], &expired["reason"]),
        (&json!(742), &json!("receiver_disconnected")),
        "{expired}"
    );
    assert!(
        until_free(&server, "room_i5", 5).await,
        "seat 5 is free again"
    );
    // The inviter's app is killed: the invitee hears of it, the seat is free.
    let mut invitee_b = invitee_b;
    let ack = owner
        .call(
            "invite_to_seat",
            json!({"channel_name": "room_i5", "receiver_id": 743, "seat_id": 6}),
        )
        .await;
    assert_eq!(ack["action"], "ack", "{ack}");
    invitee_b.expect_skipping("seat_invite").await;
    assert_eq!(seat(&server, "room_i5", 6).await["status"], 2);
    drop(owner);
    let expired = invitee_b.expect_skipping("seat_invite_expired").await;
    assert_eq!(
        (&expired["user_id"], &expired["reason"]),
        (&json!(741), &json!("inviter_disconnected")),
        "{expired}"
    );
    assert!(
        until_free(&server, "room_i5", 6).await,
        "seat 6 is free again"
    );
    let late = invitee_b.call("accept_seat_invite", json!({})).await;
    assert_eq!(late["error_code"], 2004, "{late}");
    server.stop().await;
}

/// The `up` an accepted invitation sends, as another member hears it.
async fn accept_and_hear_up(
    server: &TestServer,
    channel: &str,
    invitee_id: u64,
    accept: Value,
) -> Value {
    let mut clients = room_with(
        server,
        channel,
        invitee_id - 1,
        &[invitee_id - 1, invitee_id, invitee_id + 1],
    )
    .await;
    let [owner, invitee, other] = &mut clients[..] else {
        unreachable!()
    };
    let ack = owner
        .call(
            "invite_to_seat",
            json!({"channel_name": channel, "receiver_id": invitee_id}),
        )
        .await;
    assert_eq!(ack["action"], "ack", "{ack}");
    invitee.expect("seat_invite").await;
    invitee.send("accept_seat_invite", accept).await;
    other.expect("up").await["room_seat"].clone()
}

#[tokio::test]
async fn accepting_without_a_stored_profile_shows_the_profile_fields_the_invitee_sent() {
    let server = TestServer::start().await;
    let sent = json!({"nickname": "Nina", "sex": 1,
        "avatar_url": "https://cdn.example/n.png", "avatar_small_url": "https://cdn.example/n_s.png"});
    let room_seat = accept_and_hear_up(&server, "room_i6", 762, sent).await;
    assert_eq!(
        (
            &room_seat["user_id"],
            &room_seat["nickname"],
            &room_seat["sex"],
            &room_seat["avatar_url"],
            &room_seat["avatar_small_url"]
        ),
        (
            &json!(762),
            &json!("Nina"),
            &json!(1),
            &json!("https://cdn.example/n.png"),
            &json!("https://cdn.example/n_s.png")
        ),
        "{room_seat}"
    );
    server.stop().await;
}

#[tokio::test]
async fn accepting_with_a_stored_profile_shows_it_over_what_the_invitee_sent() {
    let server = TestServer::start().await;
    session_with_profile(&server, 772, backend_profile(772, "Stored")).await;
    let sent = json!({"nickname": "Forged", "sex": 1,
        "avatar_url": "https://evil.example/a.png", "avatar_small_url": "https://evil.example/s.png"});
    let room_seat = accept_and_hear_up(&server, "room_i7", 772, sent).await;
    assert_eq!(
        (
            &room_seat["nickname"],
            &room_seat["sex"],
            &room_seat["avatar_url"],
            &room_seat["avatar_small_url"]
        ),
        (
            &json!("Stored"),
            &json!(2),
            &json!("https://cdn.example/772.png"),
            &json!("https://cdn.example/772_s.png")
        ),
        "{room_seat}"
    );
    server.stop().await;
}
