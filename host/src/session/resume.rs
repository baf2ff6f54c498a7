//! Resuming after a dropped link (issue 17): a client that reconnects
//! names, in the upgrade's signed query, the last `epoch`/`seq` it saw of
//! its room and of its own point-to-point stream; before anything else
//! reaches it, the session sends what it missed, in order, and
//! `{"action":"resumed","recovered":true,…}`, or, when the history cannot
//! fill the gap, a `room_state` snapshot and `"recovered":false`. Never a
//! partial replay presented as complete.
//!
//! Frames of those streams queued for the session meanwhile (between its
//! registration and the history read) are in the replay already: the
//! session drops them by their stamp ([`Floors`]), so each arrives once.

use std::collections::BTreeMap;

use crate::delivery::is_relayed;
use crate::store::history::{stamp_of, valid_epoch};
use crate::store::{Position, Replay, Store, Stream};

/// What a reconnecting client says it last saw.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Resume {
    /// The room (`resume_channel`) and its last `epoch`/`seq`
    /// (`resume_epoch`, `resume_seq`).
    pub room: Option<(String, Position)>,
    /// The user's own stream (`resume_user_epoch`, `resume_user_seq`).
    pub user: Option<Position>,
}

/// The query parameters of a resume.
pub const PARAMS: [&str; 5] = [
    "resume_channel",
    "resume_epoch",
    "resume_seq",
    "resume_user_epoch",
    "resume_user_seq",
];

/// The largest `seq` a resume may name: 2^53 - 1, what a JSON number
/// carries exactly.
const MAX_SEQ: u64 = (1 << 53) - 1;

impl Resume {
    /// The resume the upgrade query asks for: `None` without any
    /// `resume_*` parameter; `Err` (a reason for 1001) when one is
    /// malformed: an epoch not of 1 to 32 letters or digits, a seq not a
    /// decimal integer up to 2^53 - 1, an epoch without its seq (or the
    /// other way round), a room part without `resume_channel`, or a
    /// channel over 128 bytes.
    pub fn from_query(params: &BTreeMap<String, String>) -> Result<Option<Self>, String> {
        if !PARAMS.iter().any(|p| params.contains_key(*p)) {
            return Ok(None);
        }
        let room = position(params, "resume_epoch", "resume_seq")?;
        let channel = params.get("resume_channel");
        let room = match (channel, room) {
            (Some(c), Some(at)) => {
                if c.is_empty() || c.len() > crate::store::MAX_CHANNEL_NAME_BYTES {
                    return Err("resume_channel must be 1 to 128 bytes".into());
                }
                Some((c.clone(), at))
            }
            (None, None) => None,
            _ => {
                return Err("resume_channel, resume_epoch and resume_seq go together".into());
            }
        };
        let user = position(params, "resume_user_epoch", "resume_user_seq")?;
        Ok(Some(Self { room, user }))
    }
}

/// An epoch and seq parameter pair, both or neither.
fn position(
    params: &BTreeMap<String, String>,
    epoch: &str,
    seq: &str,
) -> Result<Option<Position>, String> {
    match (params.get(epoch), params.get(seq)) {
        (None, None) => Ok(None),
        (Some(e), Some(s)) => {
            if !valid_epoch(e) {
                return Err(format!("{epoch} must be 1 to 32 letters or digits"));
            }
            let n: u64 = s
                .parse()
                .ok()
                .filter(|n| *n <= MAX_SEQ && s.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| format!("{seq} must be an integer from 0 to 2^53 - 1"))?;
            Ok(Some(Position {
                epoch: e.clone(),
                seq: n,
            }))
        }
        _ => Err(format!("{epoch} and {seq} go together")),
    }
}

/// The last `seq` of each stream already sent by a resume: a queued frame
/// of that stream at or below it is a duplicate and is dropped. A stream's
/// floor is lifted at its first newer frame, after which frames arrive in
/// order; with no floor, frames are not inspected at all.
#[derive(Debug, Default)]
pub struct Floors {
    /// (epoch, seq) of each resumed stream (at most two).
    floors: Vec<(String, u64)>,
}

impl Floors {
    /// Drops frames of the stream at `at` up to its `seq`.
    pub fn add(&mut self, at: &Position) {
        self.floors.push((at.epoch.clone(), at.seq));
    }

    /// Whether `frame` must go out (not a duplicate of the replay).
    pub fn admit(&mut self, frame: &str) -> bool {
        if self.floors.is_empty() {
            return true;
        }
        let Some((epoch, seq)) = stamp_of(frame) else {
            return true;
        };
        let Some(i) = self.floors.iter().position(|(e, _)| e == epoch) else {
            return true;
        };
        if seq <= self.floors[i].1 {
            return false;
        }
        self.floors.swap_remove(i);
        true
    }
}

/// What a resume sends and where the streams stand after it.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Frames in the order they go out: the user stream's replay, the
    /// room's, then `room_state` if any, then `resumed`.
    pub frames: Vec<String>,
    /// Each resumed stream's position, for [`Floors`].
    pub floors: Floors,
}

/// Reads what `user_id` missed and builds the frames of its resume.
/// `member_limit` is `recovery.snapshot_members`.
pub async fn run(store: &dyn Store, user_id: u64, resume: &Resume, member_limit: usize) -> Outcome {
    let mut out = Outcome::default();
    let mut recovered = true;
    let user_at = match user_replay(store, user_id, resume.user.as_ref()).await {
        Ok(Replay::Recovered { frames, at }) => {
            out.frames.extend(frames);
            // Only a replayed stream's queued frames can be duplicates.
            out.floors.add(&at);
            Some(at)
        }
        Ok(Replay::Lost { at }) => {
            recovered = false;
            Some(at)
        }
        Err(e) => {
            tracing::warn!(error = %e, "user history unavailable");
            recovered = false;
            None
        }
    };
    let membership = store.membership_of(user_id).await;
    let channel = match membership {
        Ok(m) => m.map(|m| m.channel_name),
        Err(e) => {
            tracing::warn!(error = %e, "membership unavailable on resume");
            recovered = false;
            None
        }
    };
    let mut room_at = None;
    let mut snapshot = false;
    match (&channel, &resume.room) {
        (Some(now_in), Some((was_in, from))) if now_in == was_in => {
            match store
                .history_since(&Stream::Room(now_in.clone()), from)
                .await
            {
                // The user entered the room after `from` (its own
                // `enter_room` is in the gap): what came before its
                // membership is not its to replay, so it gets a snapshot.
                Ok(Replay::Recovered { frames, .. })
                    if frames.iter().any(|f| entered(f, user_id)) =>
                {
                    snapshot = true
                }
                Ok(Replay::Recovered { frames, at }) => {
                    // A relayed notification went live to its delegate
                    // only: a member never got it, so it is not replayed.
                    out.frames
                        .extend(frames.into_iter().filter(|f| !is_relayed(f)));
                    room_at = Some(at);
                }
                Ok(Replay::Lost { .. }) | Err(_) => snapshot = true,
            }
        }
        (Some(_), _) => snapshot = true,
        // Removed from the room during the gap: `connected` said so
        // (`current_room_id` empty); what happened there is not replayed.
        (None, Some(_)) => recovered = false,
        (None, None) => {}
    }
    if let (true, Some(ch)) = (snapshot, &channel) {
        recovered = false;
        match crate::dispatch::room_state_frame(store, ch, user_id, member_limit).await {
            Ok(Some((frame, at))) => {
                out.frames.push(frame);
                room_at = Some(at);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "room_state unavailable on resume"),
        }
    }
    if let Some(at) = &room_at {
        out.floors.add(at);
    }
    metrics::counter!("chorus_resumes_total", "recovered" => if recovered { "true" } else { "false" })
        .increment(1);
    out.frames.push(resumed_frame(
        recovered,
        channel.as_deref(),
        room_at.as_ref(),
        user_at.as_ref(),
    ));
    out
}

/// Whether a room frame is `user_id`'s own `enter_room` notification.
/// Frames are a plugin's text as written, so the quick look also lets
/// through any frame with an escape (`"enter\u005froom"` is the same
/// action), which is then parsed.
fn entered(frame: &str, user_id: u64) -> bool {
    if !frame.contains("\"enter_room\"") && !frame.contains("\\u") {
        return false;
    }
    serde_json::from_str::<serde_json::Value>(frame)
        .is_ok_and(|v| v["action"] == "enter_room" && v["user_id"].as_u64() == Some(user_id))
}

/// The user stream's replay after `from`; without `from` (a client that
/// never got a point-to-point frame) from the start of the stream's
/// current epoch, so a frame sent while it was away is replayed, or the
/// resume is not recovered when the history no longer holds seq 1.
async fn user_replay(
    store: &dyn Store,
    user_id: u64,
    from: Option<&Position>,
) -> Result<Replay, crate::store::StoreError> {
    let stream = Stream::User(user_id);
    if let Some(from) = from {
        return store.history_since(&stream, from).await;
    }
    // An empty epoch never matches: this reads the stream's position.
    let at = match store.history_since(&stream, &Position::default()).await? {
        Replay::Lost { at } | Replay::Recovered { at, .. } => at,
    };
    let start = Position {
        epoch: at.epoch,
        seq: 0,
    };
    store.history_since(&stream, &start).await
}

/// `{"action":"resumed","recovered":…,"channel_name":…,"epoch":…,"seq":…,
/// "user_epoch":…,"user_seq":…}`: where each stream stands now (`""` and
/// null for a stream it cannot say).
fn resumed_frame(
    recovered: bool,
    channel: Option<&str>,
    room: Option<&Position>,
    user: Option<&Position>,
) -> String {
    serde_json::json!({
        "action": "resumed",
        "recovered": recovered,
        "channel_name": channel.unwrap_or_default(),
        "epoch": room.map(|p| p.epoch.as_str()),
        "seq": room.map(|p| p.seq),
        "user_epoch": user.map(|p| p.epoch.as_str()),
        "user_seq": user.map(|p| p.seq),
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A user's own `enter_room`, however the plugin escaped its action.
    #[test]
    fn an_enter_room_is_found_escaped_or_not() {
        assert!(entered(
            r#"{"action":"enter_room","user_id":7,"msg_id":"m"}"#,
            7
        ));
        assert!(entered(
            r#"{"action":"enter\u005froom","user_id":7,"msg_id":"m"}"#,
            7
        ));
        assert!(!entered(
            r#"{"action":"enter_room","user_id":8,"msg_id":"m"}"#,
            7
        ));
        assert!(!entered(
            r#"{"action":"exit_room","user_id":7,"note":"\u0041"}"#,
            7
        ));
    }

    fn query(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_or_refuses_the_query() {
        assert_eq!(Resume::from_query(&query(&[("user_id", "1")])), Ok(None));
        let full = Resume::from_query(&query(&[
            ("resume_channel", "room_1"),
            ("resume_epoch", "ab12"),
            ("resume_seq", "7"),
            ("resume_user_epoch", "cd"),
            ("resume_user_seq", "0"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(full.room.unwrap().1.seq, 7);
        assert_eq!(full.user.unwrap().epoch, "cd");
        for bad in [
            vec![("resume_epoch", "ab"), ("resume_seq", "1")],
            vec![
                ("resume_channel", "r"),
                ("resume_epoch", "a-b"),
                ("resume_seq", "1"),
            ],
            vec![
                ("resume_channel", "r"),
                ("resume_epoch", "ab"),
                ("resume_seq", "-1"),
            ],
            vec![
                ("resume_channel", "r"),
                ("resume_epoch", "ab"),
                ("resume_seq", "+1"),
            ],
            vec![
                ("resume_channel", "r"),
                ("resume_epoch", "ab"),
                ("resume_seq", "9007199254740992"),
            ],
            vec![("resume_user_epoch", "ab")],
            vec![("resume_channel", "r")],
        ] {
            assert!(Resume::from_query(&query(&bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn floors_drop_duplicates_then_lift() {
        let mut floors = Floors::default();
        floors.add(&Position {
            epoch: "e1".into(),
            seq: 5,
        });
        assert!(!floors.admit(r#"{"a":1,"epoch":"e1","seq":4}"#));
        assert!(!floors.admit(r#"{"a":1,"epoch":"e1","seq":5}"#));
        assert!(floors.admit(r#"{"a":1,"epoch":"e2","seq":1}"#));
        assert!(floors.admit(r#"{"a":1,"epoch":"e1","seq":6}"#));
        assert!(floors.floors.is_empty());
        assert!(floors.admit(r#"{"a":1,"epoch":"e1","seq":3}"#));
    }
}
