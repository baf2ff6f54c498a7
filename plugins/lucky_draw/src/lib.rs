//! The `lucky_draw` plugin (contract 1.1): a random winner among the users
//! seated in the sender's room, draws numbered per room per day.
//!
//! Action `lucky_draw` (clients; the app backend with `user_id`):
//! - the sender must be a member of a room (else not-allowed, 2004); with
//!   `channel_name`, it must be that room (else not-allowed);
//! - any member may draw (no owner rule yet: room roles are another
//!   branch's work; see README);
//! - among the occupied seats (none: rejected, 2001) one user is drawn
//!   uniformly from WASI `random`, the host's secure source;
//! - the draw gets the next number of the room's day, the day taken in the
//!   configured time zone (`utc_offset_minutes` in `lucky_draw.toml`,
//!   -720..=840, default 0). The counter is the kv key
//!   `draws:<channel>:<YYYY-MM-DD>`, read with its version and written
//!   back with `kv-put` on that version and a TTL of 2 days: a concurrent
//!   draw on any node makes the host re-run this call on fresh state, so
//!   numbers never repeat or skip;
//! - the room hears `{"action":"lucky_draw","channel_name","winner_id",
//!   "draw_no"}` by broadcast, and the caller gets the same fields as
//!   `result`.

use chorus_plugin_sdk::Source::{Client, Server};
use chorus_plugin_sdk::event::acting;
use chorus_plugin_sdk::reply::{notify_room_via, reply};
use chorus_plugin_sdk::{
    Config, Delivery, Effect, Error, Event, KvPut, Reply, Router, Seat, clock, kv, payload, random,
    room_state,
};
use serde::Deserialize;
use serde_json::json;

/// Seat status: occupied.
const OCCUPIED: u8 = 1;
/// How long a day's counter is kept: two days, so it outlives its day in
/// every time zone.
const COUNTER_TTL_MS: u64 = 2 * 24 * 3600 * 1000;
/// Milliseconds in a day.
const DAY_MS: i64 = 24 * 3600 * 1000;

/// The plugin's actions.
fn router() -> Router {
    Router::new("lucky_draw", env!("CARGO_PKG_VERSION")).action(
        "lucky_draw",
        &[Client, Server],
        draw,
    )
}

chorus_plugin_sdk::plugin!(Component, router());

/// `lucky_draw`'s payload: `user_id` from the app backend only; a
/// `channel_name`, when given, must be the user's room.
#[derive(Deserialize)]
struct LuckyDraw {
    user_id: Option<u64>,
    channel_name: Option<String>,
}

/// `lucky_draw`: see the module docs.
fn draw(event: &Event) -> Result<Reply, Error> {
    let request: LuckyDraw = payload::parse(&event.payload)?;
    let user = acting(event, request.user_id)?;
    let membership = room_state::membership_of(user)
        .ok_or_else(|| Error::NotAllowed(format!("user {user} is not in a room")))?;
    let channel = membership.channel_name;
    if let Some(named) = request.channel_name
        && named != channel
    {
        return Err(Error::NotAllowed(format!(
            "user {user} is not in room {named}"
        )));
    }
    let seated = seated_users(&room_state::room_seats(&channel));
    let winner = pick(&seated)?
        .ok_or_else(|| Error::Rejected(format!("nobody is seated in room {channel}")))?;
    let offset = Config::load().i64_in("utc_offset_minutes", -720..=840, 0);
    let key = format!("draws:{channel}:{}", local_date(clock::now_ms(), offset));
    let (drawn, version) = match kv::entry(&key) {
        Some(entry) => (entry.value.parse::<u64>().unwrap_or(0), entry.version),
        None => (0, 0),
    };
    let draw_no = drawn + 1;
    let counter = Effect::KvPut(KvPut {
        key,
        value: draw_no.to_string(),
        if_version: Some(version),
        ttl_ms: Some(COUNTER_TTL_MS),
    });
    let body = json!({
        "action": "lucky_draw",
        "channel_name": channel,
        "winner_id": winner,
        "draw_no": draw_no,
    });
    let notice = notify_room_via(&channel, &body, Some(winner), Delivery::Broadcast);
    let mut result = body;
    if let Some(fields) = result.as_object_mut() {
        fields.remove("action");
    }
    Ok(reply(result, vec![counter, notice]))
}

/// The users on occupied seats, in seat order.
fn seated_users(seats: &[Seat]) -> Vec<u64> {
    seats
        .iter()
        .filter(|s| s.status == OCCUPIED)
        .filter_map(|s| s.user_id)
        .collect()
}

/// One of `users`, uniformly, from the host's secure randomness
/// ([`random::below`]: no modulo bias); `None` for none.
fn pick(users: &[u64]) -> Result<Option<u64>, Error> {
    if users.is_empty() {
        return Ok(None);
    }
    let index = random::below(users.len() as u64) as usize;
    Ok(users.get(index).copied())
}

/// The date (`YYYY-MM-DD`) at unix ms `now_ms` in the zone `offset_minutes`
/// east of UTC.
fn local_date(now_ms: u64, offset_minutes: i64) -> String {
    let local = i64::try_from(now_ms).unwrap_or(i64::MAX) + offset_minutes * 60_000;
    let (y, m, d) = civil_from_days(local.div_euclid(DAY_MS));
    format!("{y:04}-{m:02}-{d:02}")
}

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chorus_plugin_sdk::testing::FakeHost;
    use chorus_plugin_sdk::{Delivery, Target};
    use serde_json::Value;

    fn room() -> FakeHost {
        FakeHost::new()
            .member(1, "r1", 88)
            .member(2, "r1", 88)
            .member(3, "r1", 88)
            .seated(2, "r1", 1)
            .seated(3, "r1", 4)
    }

    #[test]
    fn a_seated_user_wins_and_draws_are_numbered_per_room_and_day() {
        let mut host = room().seed(42);
        let first = host.client::<Component>(1, "lucky_draw", json!({}));
        let sent = first.notifications();
        assert_eq!(sent[0].target, Target::Room("r1".into()));
        assert_eq!(sent[0].delivery, Delivery::Broadcast);
        let winner = sent[0].body["winner_id"].as_u64().unwrap_or_default();
        assert!([2, 3].contains(&winner), "{winner}");
        assert_eq!(sent[0].body["draw_no"], 1);
        assert_eq!(first.output()["winner_id"], Value::from(winner));
        let second = host.client::<Component>(1, "lucky_draw", json!({}));
        assert_eq!(second.bodies()[0]["draw_no"], 2);
        // The next day starts again at 1.
        host.advance::<Component>(24 * 3600 * 1000);
        assert_eq!(
            host.client::<Component>(1, "lucky_draw", json!({}))
                .bodies()[0]["draw_no"],
            1
        );
    }

    #[test]
    fn the_same_seed_draws_the_same_winners() {
        let winners = |seed| {
            let mut host = room().seed(seed);
            (0..8)
                .map(|_| {
                    host.client::<Component>(1, "lucky_draw", json!({}))
                        .bodies()[0]["winner_id"]
                        .clone()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(winners(7), winners(7));
        let all = winners(7);
        assert!(
            all.contains(&json!(2)) && all.contains(&json!(3)),
            "{all:?}"
        );
    }

    #[test]
    fn nobody_seated_is_rejected_and_outsiders_are_not_allowed() {
        let mut host = FakeHost::new().member(1, "r1", 88).member(9, "r2", 89);
        assert_eq!(
            host.client::<Component>(1, "lucky_draw", json!({})).code(),
            2001
        );
        assert_eq!(
            host.client::<Component>(5, "lucky_draw", json!({})).code(),
            2004
        );
        let wrong_room = host.client::<Component>(1, "lucky_draw", json!({"channel_name": "r2"}));
        assert_eq!(wrong_room.code(), 2004);
    }

    #[test]
    fn dates_follow_the_configured_zone() {
        assert_eq!(local_date(0, 0), "1970-01-01");
        // 2026-11-30T23:30:00Z
        let t = 1_796_081_400_000;
        assert_eq!(local_date(t, 0), "2026-11-30");
        assert_eq!(local_date(t, 60), "2026-12-01");
        assert_eq!(local_date(t, -720), "2026-11-30");
        assert_eq!(local_date(951_782_400_000, 0), "2000-02-29");
    }

    #[test]
    fn only_occupied_seats_count() {
        let seat = |id, user_id, status| Seat {
            id,
            user_id,
            status,
            microphone: 1,
        };
        let seats = [
            seat(1, Some(5), 1),
            seat(2, None, 0),
            seat(3, None, 2),
            seat(4, Some(9), 1),
        ];
        assert_eq!(seated_users(&seats), vec![5, 9]);
    }
}
