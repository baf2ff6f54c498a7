//! The bundled `lucky_draw` plugin (contract 1.1) on one node: a random
//! winner among the seated users of the sender's room, numbered per room
//! per day, the room notified by broadcast. The numbering across two
//! nodes is tested in `cluster.rs`.

use serde_json::{Value, json};

use crate::harness::*;
use crate::rooms::{enter_ok, up};

/// A lucky draw by `user_id` through the server API.
pub async fn draw(server: &TestServer, user_id: u64, channel: &str) -> (u16, Value) {
    server
        .action(json!({"action": "lucky_draw", "user_id": user_id, "channel_name": channel}))
        .await
}

#[tokio::test]
async fn a_draw_picks_a_seated_user_numbers_it_and_tells_the_room() {
    let server = TestServer::start().await;
    let mut watcher = server.connect(7301).await;
    for (user, seat) in [(7301, None), (7302, Some(1)), (7303, Some(2))] {
        enter_ok(&server, user, "room_ld", 55).await;
        if let Some(seat) = seat {
            let (status, body) = up(&server, user, "room_ld", Some(seat)).await;
            assert_eq!(status, 200, "{body}");
        }
    }
    while watcher
        .recv_within(std::time::Duration::from_millis(300))
        .await
        .is_ok()
    {}
    for n in 1..=3u64 {
        // A member who is not seated may draw (any member may).
        watcher
            .send("lucky_draw", json!({"channel_name": "room_ld"}))
            .await;
        // The room's notification and the caller's ack, in either order.
        let mut frames = [watcher.recv().await.unwrap(), watcher.recv().await.unwrap()];
        frames.sort_by_key(|f| f["action"] != "ack");
        let [answer, note] = frames;
        assert_eq!(answer["action"], "ack", "{answer}");
        let result = &answer["result"];
        assert_eq!(result["draw_no"], n, "{answer}");
        assert!(
            [7302, 7303].contains(&result["winner_id"].as_u64().unwrap()),
            "{answer}"
        );
        assert_eq!(note["action"], "lucky_draw", "{note}");
        assert_eq!(note["channel_name"], "room_ld", "{note}");
        assert_eq!(note["draw_no"], n, "{note}");
        assert_eq!(note["winner_id"], result["winner_id"], "{note}");
        assert!(note["msg_id"].is_string(), "{note}");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_draw_outside_a_room_is_2004_and_in_a_room_with_nobody_seated_2001() {
    let server = TestServer::start().await;
    let (status, body) = draw(&server, 7311, "room_le").await;
    assert_eq!(
        (status, body["error_code"].clone()),
        (403, json!(2004)),
        "{body}"
    );
    enter_ok(&server, 7311, "room_le", 56).await;
    let (status, body) = draw(&server, 7311, "room_le").await;
    assert_eq!(
        (status, body["error_code"].clone()),
        (422, json!(2001)),
        "{body}"
    );
    // Naming another room than the sender's is not allowed either.
    let (status, body) = draw(&server, 7311, "room_other").await;
    assert_eq!(
        (status, body["error_code"].clone()),
        (403, json!(2004)),
        "{body}"
    );
    server.stop().await;
}
