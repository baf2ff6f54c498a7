//! Notification history for recovery (issue 17): every notification to a
//! room carries the room's `seq`, every point-to-point one the user's own,
//! with the stream's `epoch`; each stream keeps its last
//! `recovery.history_size` notifications for `recovery.history_ttl`.
//!
//! A notification is logged once (not once per recipient), in the same
//! atomic step as the batch that produced it ([`super::Store::apply_logged`]),
//! and its frame is stamped there: the stamped text is what every
//! recipient's queue shares and what a replay sends again. The stamp is
//! spliced onto the end of the frame's JSON object (`…,"stream":"room","epoch":"E","seq":N}`),
//! so stamping copies a frame once and never re-serializes it.
//!
//! [`MemoryHistory`] is the history of one node (held inside the memory
//! store's state, under its one lock); the Redis store keeps the same in
//! `P hist:<stream>` (a capped list) and `P histpos:<stream>` (epoch, seq),
//! written by `lua/apply.lua`.

use std::collections::{HashMap, VecDeque};

/// A stream of notifications with its own `seq`: a room's or a user's.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Stream {
    /// The notifications to a room (`channel_name`).
    Room(String),
    /// The point-to-point notifications to a user.
    User(u64),
}

impl Stream {
    /// The stream's name in Redis keys: `r:<channel>` or `u:<user>`.
    pub fn key(&self) -> String {
        match self {
            Stream::Room(channel) => format!("r:{channel}"),
            Stream::User(user) => format!("u:{user}"),
        }
    }
}

/// One notification to log: its stream and its frame (a JSON object's
/// text, `msg_id` included, without `epoch` and `seq`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// Whose sequence numbers it takes.
    pub stream: Stream,
    /// The frame before stamping.
    pub frame: String,
}

/// A place in a stream: its epoch and the `seq` of the last notification
/// (0 when none yet in this epoch).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Position {
    /// Changes whenever the stream's history is lost (a restarted memory
    /// node, an expired stream in Redis); a short string of `[0-9a-z]`.
    pub epoch: String,
    /// The last notification's number; the first is 1.
    pub seq: u64,
}

/// A logged notification: its place and the stamped frame to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamped {
    /// Where it sits in its stream.
    pub at: Position,
    /// The frame with `epoch` and `seq`.
    pub frame: String,
}

/// What a stream holds after a client's last position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay {
    /// Every notification after the position, in order (possibly none),
    /// and the stream's position now.
    Recovered {
        /// The stamped frames.
        frames: Vec<String>,
        /// The stream's position after them.
        at: Position,
    },
    /// The gap cannot be filled (another epoch, older than the history, a
    /// `seq` from the future): the client needs a snapshot.
    Lost {
        /// The stream's position now.
        at: Position,
    },
}

/// How long a stream's position (`epoch`, `seq`) outlives its last
/// notification: 24 hours, or the history TTL if longer. Notifications
/// expire after the TTL, but a client that missed nothing since then still
/// recovers (with nothing to replay) instead of getting a new epoch.
pub const POSITION_TTL_MS: u64 = 24 * 3600 * 1000;

/// `recovery.history_size` and `recovery.history_ttl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Notifications kept per stream (default 200).
    pub size: usize,
    /// How long one is kept, in milliseconds (default 120 000).
    pub ttl_ms: u64,
}

impl HistoryLimits {
    /// How long a silent stream keeps its epoch and seq (ms).
    pub fn position_ttl_ms(&self) -> u64 {
        self.ttl_ms.max(POSITION_TTL_MS)
    }
}

impl Default for HistoryLimits {
    fn default() -> Self {
        Self::from_config(&crate::config::RecoveryConfig::default())
    }
}

impl HistoryLimits {
    /// The limits `[recovery]` sets.
    pub fn from_config(config: &crate::config::RecoveryConfig) -> Self {
        Self {
            size: config.history_size,
            ttl_ms: u64::try_from(config.history_ttl.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// `frame` (a JSON object's text) with `,"stream":"room"` (or `"user"`),
/// `"epoch":"E","seq":N` before its closing brace; the Redis script builds
/// the same text.
pub fn stamp(frame: &str, stream: &Stream, epoch: &str, seq: u64) -> String {
    let body = frame.trim_end();
    let body = body.strip_suffix('}').unwrap_or(body);
    let sep = if body.trim_end().ends_with('{') {
        ""
    } else {
        ","
    };
    let kind = match stream {
        Stream::Room(_) => "room",
        Stream::User(_) => "user",
    };
    format!("{body}{sep}\"stream\":\"{kind}\",\"epoch\":\"{epoch}\",\"seq\":{seq}}}")
}

/// The stamp at the end of a frame built by [`stamp`] (possibly followed
/// by `,"relay":true`): `(epoch, seq)`. `None` for a frame without one.
/// Reads only the frame's tail.
pub fn stamp_of(frame: &str) -> Option<(&str, u64)> {
    let body = frame.strip_suffix('}')?;
    let body = body.strip_suffix(",\"relay\":true").unwrap_or(body);
    let at = body.rfind(",\"seq\":")?;
    let seq = body[at + 7..].parse().ok()?;
    let head = body[..at].strip_suffix('"')?;
    let open = head.rfind("\"epoch\":\"")?;
    Some((&head[open + 9..], seq))
}

/// Whether `epoch` has the shape of one this server hands out (1 to 32
/// ASCII letters or digits); a resume naming anything else is malformed.
pub fn valid_epoch(epoch: &str) -> bool {
    (1..=32).contains(&epoch.len()) && epoch.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// One stream of a node's memory.
#[derive(Debug)]
struct StreamLog {
    epoch: String,
    seq: u64,
    /// (seq, logged at unix ms, stamped frame), oldest first.
    entries: VecDeque<(u64, u64, String)>,
    /// Unix ms of the last append.
    touched_ms: u64,
}

/// The history of one node: every stream, bounded by [`HistoryLimits`].
#[derive(Debug, Default)]
pub struct MemoryHistory {
    streams: HashMap<Stream, StreamLog>,
    /// Makes epochs unique within this process; the process's random
    /// prefix makes them unique across restarts.
    epochs: u64,
    prefix: String,
}

impl MemoryHistory {
    fn new_epoch(&mut self) -> String {
        if self.prefix.is_empty() {
            self.prefix = format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
        }
        self.epochs += 1;
        format!("{}{:x}", self.prefix, self.epochs)
    }

    /// Logs one notification at `now` (unix ms) and returns it stamped.
    pub fn append(&mut self, limits: &HistoryLimits, entry: &LogEntry, now: u64) -> Stamped {
        let stale = self
            .streams
            .get(&entry.stream)
            .is_some_and(|s| now.saturating_sub(s.touched_ms) >= limits.position_ttl_ms());
        if stale || !self.streams.contains_key(&entry.stream) {
            let epoch = self.new_epoch();
            self.streams.insert(
                entry.stream.clone(),
                StreamLog {
                    epoch,
                    seq: 0,
                    entries: VecDeque::new(),
                    touched_ms: now,
                },
            );
        }
        // Just inserted when absent.
        let Some(log) = self.streams.get_mut(&entry.stream) else {
            unreachable!("stream inserted above")
        };
        log.seq += 1;
        log.touched_ms = now;
        let frame = stamp(&entry.frame, &entry.stream, &log.epoch, log.seq);
        log.entries.push_back((log.seq, now, frame.clone()));
        while log.entries.len() > limits.size {
            log.entries.pop_front();
        }
        Stamped {
            at: Position {
                epoch: log.epoch.clone(),
                seq: log.seq,
            },
            frame,
        }
    }

    /// The stream's position now (a fresh epoch with seq 0 for a stream
    /// with no live history, created so later notifications follow it).
    pub fn position(&mut self, limits: &HistoryLimits, stream: &Stream, now: u64) -> Position {
        let live = self
            .streams
            .get(stream)
            .is_some_and(|s| now.saturating_sub(s.touched_ms) < limits.position_ttl_ms());
        if !live {
            let epoch = self.new_epoch();
            self.streams.insert(
                stream.clone(),
                StreamLog {
                    epoch,
                    seq: 0,
                    entries: VecDeque::new(),
                    touched_ms: now,
                },
            );
        }
        let log = &self.streams[stream];
        Position {
            epoch: log.epoch.clone(),
            seq: log.seq,
        }
    }

    /// Everything after `from` in `stream`, or [`Replay::Lost`] when the
    /// history cannot fill the gap.
    pub fn since(
        &mut self,
        limits: &HistoryLimits,
        stream: &Stream,
        from: &Position,
        now: u64,
    ) -> Replay {
        let at = self.position(limits, stream, now);
        let log = &self.streams[stream];
        replay_from(
            &at,
            from,
            log.entries
                .iter()
                .filter(|(_, logged, _)| now.saturating_sub(*logged) < limits.ttl_ms)
                .map(|(seq, _, frame)| (*seq, frame.as_str())),
        )
    }

    /// Drops notifications older than the TTL, and forgets streams
    /// silent for longer than [`HistoryLimits::position_ttl_ms`].
    pub fn sweep(&mut self, limits: &HistoryLimits, now: u64) {
        let keep = limits.position_ttl_ms();
        self.streams.retain(|_, s| {
            while s
                .entries
                .front()
                .is_some_and(|(_, at, _)| now.saturating_sub(*at) >= limits.ttl_ms)
            {
                s.entries.pop_front();
            }
            if s.entries.is_empty() {
                s.entries = VecDeque::new();
            }
            now.saturating_sub(s.touched_ms) < keep
        });
    }
}

/// The replay rule shared by both stores: same epoch, `seq` not ahead of
/// the stream, and every notification after it still held (in order,
/// without a hole); anything else is [`Replay::Lost`].
pub fn replay_from<'a>(
    at: &Position,
    from: &Position,
    entries: impl Iterator<Item = (u64, &'a str)>,
) -> Replay {
    if from.epoch != at.epoch || from.seq > at.seq {
        return Replay::Lost { at: at.clone() };
    }
    let mut frames = Vec::new();
    let mut next = from.seq + 1;
    for (seq, frame) in entries {
        if seq < next {
            continue;
        }
        if seq != next {
            return Replay::Lost { at: at.clone() };
        }
        frames.push(frame.to_string());
        next += 1;
    }
    if next != at.seq + 1 {
        return Replay::Lost { at: at.clone() };
    }
    Replay::Recovered {
        frames,
        at: at.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(text: &str) -> LogEntry {
        LogEntry {
            stream: Stream::Room("r".into()),
            frame: text.into(),
        }
    }

    #[test]
    fn stamps_and_reads_back() {
        let s = stamp(
            r#"{"action":"x","msg_id":"m"}"#,
            &Stream::Room("r".into()),
            "ab1",
            42,
        );
        assert_eq!(
            s,
            r#"{"action":"x","msg_id":"m","stream":"room","epoch":"ab1","seq":42}"#
        );
        assert_eq!(stamp_of(&s), Some(("ab1", 42)));
        let relayed = format!("{},\"relay\":true}}", &s[..s.len() - 1]);
        assert_eq!(stamp_of(&relayed), Some(("ab1", 42)));
        assert_eq!(stamp_of(r#"{"action":"pong"}"#), None);
        let user = stamp("{}", &Stream::User(7), "e", 1);
        assert_eq!(user, r#"{"stream":"user","epoch":"e","seq":1}"#);
        assert_eq!(stamp_of(&user), Some(("e", 1)));
    }

    #[test]
    fn replays_in_order_or_says_lost() {
        let limits = HistoryLimits {
            size: 3,
            ttl_ms: 1000,
        };
        let mut h = MemoryHistory::default();
        let first = h.append(&limits, &entry(r#"{"n":1}"#), 0);
        for n in 2..=4 {
            h.append(&limits, &entry(&format!(r#"{{"n":{n}}}"#)), 0);
        }
        let stream = Stream::Room("r".into());
        let epoch = first.at.epoch.clone();
        let at = |seq| Position {
            epoch: epoch.clone(),
            seq,
        };
        match h.since(&limits, &stream, &at(1), 10) {
            Replay::Recovered { frames, at } => {
                assert_eq!(frames.len(), 3);
                assert_eq!(at.seq, 4);
            }
            lost => panic!("{lost:?}"),
        }
        // Seq 1 fell out of the 3 kept: starting before it is lost.
        assert!(matches!(
            h.since(&limits, &stream, &at(0), 10),
            Replay::Lost { .. }
        ));
        assert!(matches!(
            h.since(&limits, &stream, &at(9), 10),
            Replay::Lost { .. }
        ));
        let other = Position {
            epoch: "zz".into(),
            seq: 2,
        };
        assert!(matches!(
            h.since(&limits, &stream, &other, 10),
            Replay::Lost { .. }
        ));
        // Up to date: recovered with nothing, even once the notifications
        // expired; a gap over expired ones is lost.
        assert!(matches!(
            h.since(&limits, &stream, &at(4), 10),
            Replay::Recovered { frames, .. } if frames.is_empty()
        ));
        assert!(matches!(
            h.since(&limits, &stream, &at(4), 5000),
            Replay::Recovered { frames, .. } if frames.is_empty()
        ));
        assert!(matches!(
            h.since(&limits, &stream, &at(3), 5000),
            Replay::Lost { .. }
        ));
        // Silent past the position's TTL, the stream starts a new epoch.
        let later = POSITION_TTL_MS + 10;
        assert!(matches!(
            h.since(&limits, &stream, &at(4), later),
            Replay::Lost { .. }
        ));
    }
}
