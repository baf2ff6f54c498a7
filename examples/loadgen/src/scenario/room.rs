//! `room`: one audio room of the shape LiveKit publishes for its audio
//! rooms, 10 users on mic seats and 3,000 listeners, under the traffic
//! of a voice room at a messaging budget (Tencent Cloud IM's 40 messages
//! per second per group), all of it on one node (issue 20 item 5).
//!
//! Setup: every member enters the room through the server API before it
//! connects (as in `fanout`), the seat users take seats 1 to `--seated`
//! (`up`, server API), then everyone connects and reads. For
//! `--seconds`, open loops at fixed rates send, with the real actions of
//! the bundled plugins:
//! - chat: `send_topic_msg` over a seat user's own WebSocket (signed, as
//!   the SDK sends it; the `chat` plugin accepts it from clients), the
//!   seat users in turn;
//! - gifts: `send_gift` `bc` through the server API (the app backend
//!   takes the payment), from a random listener to a random seat user;
//! - seat changes: `up` through the server API (seats come from the app
//!   backend), a random seat user moving to a random free seat: the room
//!   gets a `down` for the old seat and an `up` for the new one, two
//!   notifications (so `--seat-moves-per-s` 2 is 4 messages a second);
//! - and every member's heartbeat, a signed `ping` every
//!   `--ping-interval-s` (spread evenly), as the SDK keeps it.
//!
//! Each chat, gift and `up` carries its sequence number (`bench-<seq>`
//! in the content, the gift's `name`, the seat user's `nickname`). The
//! latency of a message runs from just before it is sent (the API call or
//! the WebSocket write) to each member's receipt; "to the last member" is
//! per message, over the messages every member received. A delivery is
//! any notification a member reads (the `down`s included; `pong`s, `ack`s
//! and the session's own frames not); the server's CPU over the traffic
//! (user + system, `/proc/<pid>/stat`) is given as % of a core and per
//! delivery.
//!
//! Against a peer (Node `ws`, bare), which has no seats or chat, every
//! message is a `send_gift` broadcast through its API at the same total
//! rate, with the same heartbeats: the plain broadcast equivalent.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use futures_util::{SinkExt, StreamExt};
use rand::seq::IndexedRandom;
use serde_json::{Map, Value, json};
use tokio::sync::{Semaphore, mpsc};
use tokio_tungstenite::tungstenite::Message;

use super::{Ctx, Outcome};
use crate::api::Api;
use crate::net::Ws;
use crate::report::Metric;
use crate::stats::{Summary, micros};
use crate::sys::CpuWindow;
use crate::target::{Signer, TargetKind, profile};

/// Server-API calls outstanding at once at most.
const MAX_IN_FLIGHT: usize = 64;

/// The marker before a message's sequence number.
const MARKER: &str = "bench-";

/// Arguments of `room`.
#[derive(Debug, clap::Args)]
pub struct RoomArgs {
    /// Listeners: members without a seat, who only read (and ping).
    #[arg(long, default_value_t = 3000)]
    pub listeners: usize,
    /// Members on mic seats (the server's `rooms.seats` must exceed it,
    /// so that seat changes find a free seat).
    #[arg(long, default_value_t = 10)]
    pub seated: usize,
    /// The room's seats, as the server is configured (`rooms.seats`).
    #[arg(long, default_value_t = 12)]
    pub seats: usize,
    /// Chat messages per second (`send_topic_msg` over WebSocket).
    #[arg(long, default_value_t = 24.0)]
    pub chat_per_s: f64,
    /// Gifts per second (`send_gift` through the server API).
    #[arg(long, default_value_t = 12.0)]
    pub gifts_per_s: f64,
    /// Seat changes per second (`up` to a free seat: two notifications).
    #[arg(long, default_value_t = 2.0)]
    pub seat_moves_per_s: f64,
    /// Every member pings this often, in seconds (0: no heartbeat).
    #[arg(long, default_value_t = 15.0)]
    pub ping_interval_s: f64,
    /// How long the traffic runs, in seconds.
    #[arg(long, default_value_t = 30.0)]
    pub seconds: f64,
    /// How long to wait for the last deliveries after the last message.
    #[arg(long, default_value_t = 5.0)]
    pub drain_seconds: f64,
    /// The first user id.
    #[arg(long, default_value_t = 5_000_000)]
    pub user_base: u64,
}

/// The kinds of message, as the table names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `send_topic_msg` over a seat user's WebSocket.
    Chat,
    /// `send_gift` through the server API.
    Gift,
    /// `up` (with its `down`) through the server API.
    Seat,
}

impl Kind {
    /// Every kind, in table order.
    const ALL: [Kind; 3] = [Kind::Chat, Kind::Gift, Kind::Seat];

    /// Its name in keys and labels.
    fn name(self) -> &'static str {
        match self {
            Kind::Chat => "chat",
            Kind::Gift => "gift",
            Kind::Seat => "seat",
        }
    }
}

/// What the senders and the members share, on the load generator's one
/// thread, indexed by sequence number.
struct Board {
    /// Time zero of the run.
    t0: Instant,
    /// When each message was sent, since `t0`, and its kind.
    sent: RefCell<Vec<(Duration, Kind)>>,
    /// Members that received each message.
    delivered: RefCell<Vec<u32>>,
    /// When the last member received each message, since `t0`.
    last_at: RefCell<Vec<Duration>>,
    /// Latency of every delivery, µs.
    latencies: RefCell<Vec<u32>>,
    /// Notifications the members read (timed or not, e.g. `down`).
    notifications: Cell<u64>,
    /// Members whose socket ended.
    closed: Cell<usize>,
    /// Server-API calls that failed, and the first failure.
    failed: Cell<usize>,
    first_error: RefCell<Option<String>>,
}

impl Board {
    /// An empty board.
    fn new() -> Self {
        Self {
            t0: Instant::now(),
            sent: RefCell::default(),
            delivered: RefCell::default(),
            last_at: RefCell::default(),
            latencies: RefCell::default(),
            notifications: Cell::new(0),
            closed: Cell::new(0),
            failed: Cell::new(0),
            first_error: RefCell::default(),
        }
    }

    /// The sequence number of a message of `kind` about to be sent, its
    /// clock started.
    fn issue(&self, kind: Kind) -> usize {
        let mut sent = self.sent.borrow_mut();
        sent.push((self.t0.elapsed(), kind));
        self.delivered.borrow_mut().push(0);
        self.last_at.borrow_mut().push(Duration::ZERO);
        sent.len() - 1
    }

    /// A member read `text`.
    fn record(&self, text: &str) {
        if !is_notification(text) {
            return;
        }
        let now = self.t0.elapsed();
        self.notifications.set(self.notifications.get() + 1);
        let Some(seq) = seq_of(text) else { return };
        let Some((sent, _)) = self.sent.borrow().get(seq).copied() else {
            return;
        };
        self.latencies
            .borrow_mut()
            .push(micros(now.saturating_sub(sent)));
        self.delivered.borrow_mut()[seq] += 1;
        let mut last = self.last_at.borrow_mut();
        last[seq] = last[seq].max(now);
    }

    /// Records a failed server-API call.
    fn fail(&self, error: String) {
        self.failed.set(self.failed.get() + 1);
        self.first_error.borrow_mut().get_or_insert(error);
    }
}

/// Whether a frame is a notification to the room rather than the
/// session's own (`pong`, `ack`, `error`, `connected`, `room_state`).
fn is_notification(text: &str) -> bool {
    const OWN: [&str; 5] = [
        r#""action":"pong""#,
        r#""action":"ack""#,
        r#""action":"error""#,
        r#""action":"connected""#,
        r#""action":"room_state""#,
    ];
    !OWN.iter().any(|own| text.contains(own))
}

/// The sequence number of a timed message: the digits after the first
/// `bench-`. A `down` names no one's nickname and carries none.
fn seq_of(text: &str) -> Option<usize> {
    let at = text.find(MARKER)? + MARKER.len();
    let digits = text[at..].split(|c: char| !c.is_ascii_digit()).next()?;
    digits.parse().ok()
}

/// The room's members and seats as the load generator keeps them.
struct Room {
    /// The room's name.
    channel: String,
    /// The listeners' user ids.
    listeners: Vec<u64>,
    /// Who sits on each seat (index 0 is seat 1).
    seats: RefCell<Vec<Option<u64>>>,
}

impl Room {
    /// A random seat user.
    fn random_seated(&self) -> Option<u64> {
        let seats = self.seats.borrow();
        let seated: Vec<u64> = seats.iter().flatten().copied().collect();
        seated.choose(&mut rand::rng()).copied()
    }

    /// A random seat user and a random free seat (1-based) to move to.
    fn random_move(&self) -> Option<(u64, usize)> {
        let seats = self.seats.borrow();
        let free: Vec<usize> = (0..seats.len()).filter(|&i| seats[i].is_none()).collect();
        let to = *free.choose(&mut rand::rng())?;
        drop(seats);
        Some((self.random_seated()?, to + 1))
    }

    /// Records that `user` now sits on `seat` (1-based).
    fn moved(&self, user: u64, seat: usize) {
        let mut seats = self.seats.borrow_mut();
        for s in seats.iter_mut() {
            if *s == Some(user) {
                *s = None;
            }
        }
        seats[seat - 1] = Some(user);
    }
}

/// Runs `room`.
pub async fn run(ctx: &Ctx, args: &RoomArgs) -> Result<Outcome> {
    if args.seated == 0 || args.seats <= args.seated || args.listeners == 0 {
        bail!("room needs listeners, seat users, and more seats than seat users");
    }
    let chorus = ctx.target.kind == TargetKind::Chorus;
    let seated: Vec<u64> = (0..args.seated as u64)
        .map(|i| args.user_base + i)
        .collect();
    let listeners: Vec<u64> = (0..args.listeners as u64)
        .map(|i| args.user_base + args.seated as u64 + i)
        .collect();
    let channel = format!("bench_room_{}", rand::random::<u32>());
    let everyone: Vec<u64> = seated.iter().chain(&listeners).copied().collect();
    ctx.enter_all(&everyone, &channel).await?;
    let room = Rc::new(Room {
        channel: channel.clone(),
        listeners,
        seats: RefCell::new(vec![None; args.seats]),
    });
    if chorus {
        for (i, &user) in seated.iter().enumerate() {
            let (status, answer) = ctx
                .api
                .action(&up_body(&channel, user, i + 1, None))
                .await?;
            if status != 200 {
                bail!("seating {user}: HTTP {status} {answer}");
            }
            room.moved(user, i + 1);
        }
    } else {
        seated
            .iter()
            .enumerate()
            .for_each(|(i, &u)| room.moved(u, i + 1));
    }
    let connected = ctx.connect_many(everyone.iter().copied()).await;
    if connected.failed > 0 {
        bail!("{} members did not connect", connected.failed);
    }
    let members = connected.clients.len();
    eprintln!(
        "loadgen: room {channel}: {} seated, {} listening, connected",
        args.seated, args.listeners
    );
    let board = Rc::new(Board::new());
    // One writer owns every socket's sending half: pings and chat reach it
    // as (member index, frame) over a channel.
    let (to_writer, mut writes) = mpsc::unbounded_channel::<(usize, String)>();
    let mut sinks = Vec::with_capacity(members);
    let mut signers = Vec::with_capacity(members);
    let mut tasks = Vec::new();
    for client in connected.clients {
        let user = client.user_id;
        let (signer, ws) = client.into_parts();
        let (sink, stream) = ws.split();
        sinks.push(sink);
        signers.push((user, signer));
        tasks.push(tokio::task::spawn_local(read(stream, board.clone())));
    }
    tasks.push(tokio::task::spawn_local(async move {
        while let Some((i, frame)) = writes.recv().await {
            let _ = sinks[i].send(Message::Text(frame.into())).await;
        }
    }));
    let signers = Rc::new(signers);
    let seconds = args.seconds;
    let window = CpuWindow::open(ctx.server);
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(seconds);
    let calls = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let (chat_kind, seat_kind) = if chorus {
        (Kind::Chat, Kind::Seat)
    } else {
        (Kind::Gift, Kind::Gift)
    };
    let loops = futures_util::future::join4(
        every(args.chat_per_s, end, |_| {
            send(ctx, &board, &room, &signers, &to_writer, &calls, chat_kind)
        }),
        every(args.gifts_per_s, end, |_| {
            send(ctx, &board, &room, &signers, &to_writer, &calls, Kind::Gift)
        }),
        every(args.seat_moves_per_s, end, |_| {
            send(ctx, &board, &room, &signers, &to_writer, &calls, seat_kind)
        }),
        heartbeat(args.ping_interval_s, end, &signers, &to_writer),
    );
    loops.await;
    let send_span = started.elapsed();
    let _all = calls.acquire_many(MAX_IN_FLIGHT as u32).await;
    drain(&board, members, Duration::from_secs_f64(args.drain_seconds)).await;
    let cpu = window.close_raw();
    for task in tasks {
        task.abort();
    }
    Ok(summarize(args, &board, members, send_span, &cpu, chorus))
}

/// The body of `up` for `user` to `seat`, its nickname carrying `seq`.
fn up_body(channel: &str, user: u64, seat: usize, seq: Option<usize>) -> Value {
    let mut body: Map<String, Value> = profile(user);
    if let Some(seq) = seq {
        body.insert("nickname".into(), format!("{MARKER}{seq}").into());
    }
    body.insert("action".into(), "up".into());
    body.insert("user_id".into(), user.into());
    body.insert("channel_name".into(), channel.into());
    body.insert("seat_id".into(), seat.into());
    Value::Object(body)
}

/// The body of a broadcast `send_gift` from `sender` to `receiver`, its
/// `name` carrying `seq` (the seed's gift object, as in `fanout`).
fn gift_body(channel: &str, sender: u64, receiver: u64, seq: usize) -> Value {
    json!({
        "action": "send_gift", "channel_name": channel, "notify_type": "bc",
        "gift": {
            "id": 7, "sender_id": sender, "receiver_id": receiver,
            "sender_nickname": "listener", "receiver_nickname": "speaker",
            "name": format!("{MARKER}{seq}"),
            "dynamic_image_url": "https://cdn.example/gifts/rose.webp",
            "image_url": "https://cdn.example/gifts/rose.png",
            "image_big_url": "https://cdn.example/gifts/rose_big.png",
            "image_small_url": "https://cdn.example/gifts/rose_small.png",
            "num": 1, "sender_room_seat_id": 0, "receiver_room_seat_id": 0,
        },
    })
}

/// Runs `tick` `rate` times a second, evenly spaced, until `end`.
async fn every<F, Fut>(rate: f64, end: Instant, mut tick: F)
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    if rate <= 0.0 {
        return;
    }
    let started = Instant::now();
    for k in 0.. {
        let at = started + Duration::from_secs_f64(k as f64 / rate);
        if at >= end {
            break;
        }
        tokio::time::sleep_until(at.into()).await;
        tick(k).await;
    }
}

/// Sends one message of `kind`: chat over a seat user's socket; a gift or
/// a seat change through the server API, in a task of its own (at most
/// [`MAX_IN_FLIGHT`] outstanding).
async fn send(
    ctx: &Ctx,
    board: &Rc<Board>,
    room: &Rc<Room>,
    signers: &Rc<Vec<(u64, Signer)>>,
    writer: &mpsc::UnboundedSender<(usize, String)>,
    calls: &Arc<Semaphore>,
    kind: Kind,
) {
    let body = match kind {
        Kind::Chat => {
            let Some(user) = room.random_seated() else {
                return;
            };
            let Some(i) = signers.iter().position(|(u, _)| *u == user) else {
                return;
            };
            let seq = board.issue(kind);
            let mut fields = Map::new();
            fields.insert("channel_name".into(), room.channel.clone().into());
            fields.insert(
                "content".into(),
                format!("{MARKER}{seq} nice song, one more please").into(),
            );
            let _ = writer.send((i, signers[i].1.frame("send_topic_msg", fields)));
            return;
        }
        Kind::Gift => {
            let (Some(&sender), Some(receiver)) = (
                room.listeners.choose(&mut rand::rng()),
                room.random_seated(),
            ) else {
                return;
            };
            gift_body(&room.channel, sender, receiver, board.issue(kind))
        }
        Kind::Seat => {
            let Some((user, seat)) = room.random_move() else {
                return;
            };
            // Taken as done now, so the next move does not pick the same
            // free seat; a refused move is counted as a failure.
            room.moved(user, seat);
            up_body(&room.channel, user, seat, Some(board.issue(kind)))
        }
    };
    let Ok(permit) = calls.clone().acquire_owned().await else {
        return;
    };
    let (api, board): (Api, _) = (ctx.api.clone(), board.clone());
    tokio::task::spawn_local(async move {
        match api.action(&body).await {
            Ok((200, _)) => {}
            Ok((status, answer)) => board.fail(format!("HTTP {status} {answer}")),
            Err(e) => board.fail(format!("{e:#}")),
        }
        drop(permit);
    });
}

/// Every member's heartbeat: one signed `ping` each per `interval_s`,
/// spread evenly over the interval, until `end`.
async fn heartbeat(
    interval_s: f64,
    end: Instant,
    signers: &Rc<Vec<(u64, Signer)>>,
    writer: &mpsc::UnboundedSender<(usize, String)>,
) {
    if interval_s <= 0.0 || signers.is_empty() {
        return;
    }
    let rate = signers.len() as f64 / interval_s;
    every(rate, end, |k| {
        let i = k % signers.len();
        let _ = writer.send((i, signers[i].1.ping()));
        std::future::ready(())
    })
    .await;
}

/// A member's task: record every frame until the run aborts it.
async fn read(mut stream: futures_util::stream::SplitStream<Ws>, board: Rc<Board>) {
    while let Some(message) = stream.next().await {
        match message {
            Ok(Message::Text(text)) => board.record(&text),
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    board.closed.set(board.closed.get() + 1);
}

/// Waits until every message reached every member, nothing arrived for a
/// second, or `limit` passed ([`super::wait_for_deliveries`]).
async fn drain(board: &Board, members: usize, limit: Duration) {
    let expected = (board.sent.borrow().len() * members) as u64;
    let seen = || {
        board
            .delivered
            .borrow()
            .iter()
            .map(|&d| u64::from(d))
            .sum::<u64>()
    };
    super::wait_for_deliveries(expected, limit, seen).await;
}

/// The run's metrics and details.
fn summarize(
    args: &RoomArgs,
    board: &Board,
    members: usize,
    send_span: Duration,
    cpu: &crate::sys::CpuUsed,
    chorus: bool,
) -> Outcome {
    let key = format!("room.{}", args.listeners);
    let what = format!("room of {} + {} seated", args.listeners, args.seated);
    let sent = board.sent.borrow();
    let delivered = board.delivered.borrow();
    let last = board.last_at.borrow();
    let to_last = |kind: Option<Kind>| {
        Summary::of(
            (0..sent.len())
                .filter(|&s| kind.is_none_or(|k| sent[s].1 == k))
                .filter(|&s| delivered[s] as usize >= members)
                .map(|s| micros(last[s].saturating_sub(sent[s].0)))
                .collect(),
        )
    };
    let all = to_last(None);
    let per_delivery = Summary::of(board.latencies.take());
    let timed: u64 = delivered.iter().map(|&d| u64::from(d)).sum();
    let expected = (sent.len() * members) as u64;
    let complete = (0..sent.len())
        .filter(|&s| delivered[s] as usize >= members)
        .count();
    let notifications = board.notifications.get();
    let wall = cpu.wall.as_secs_f64().max(1e-9);
    let server_cpu = cpu.server.map(|s| s.as_secs_f64());
    let messages_per_s = sent.len() as f64 / send_span.as_secs_f64().max(1e-9);
    let mut metrics = Vec::new();
    let mut push = |suffix: &str, label: &str, unit: &str, value: f64| {
        metrics.push(Metric::new(
            format!("{key}.{suffix}"),
            format!("{what}: {label}"),
            unit,
            value,
        ));
    };
    push("messages_per_s", "messages sent/s", "1/s", messages_per_s);
    push(
        "last_p50_ms",
        "latency to the last member, p50",
        "ms",
        all.p50 / 1e3,
    );
    push(
        "last_p99_ms",
        "latency to the last member, p99",
        "ms",
        all.p99 / 1e3,
    );
    if chorus {
        for kind in Kind::ALL {
            let s = to_last(Some(kind));
            push(
                &format!("{}_last_p99_ms", kind.name()),
                &format!("{} to the last member, p99", kind.name()),
                "ms",
                s.p99 / 1e3,
            );
        }
    }
    push(
        "p99_ms",
        "latency per delivery, p99",
        "ms",
        per_delivery.p99 / 1e3,
    );
    push(
        "ratio",
        "delivery ratio",
        "fraction",
        timed as f64 / expected.max(1) as f64,
    );
    push(
        "deliveries_per_s",
        "deliveries/s",
        "1/s",
        notifications as f64 / wall,
    );
    if let Some(s) = server_cpu {
        push("server_cpu", "server CPU", "% of a core", s / wall * 100.0);
        if notifications > 0 {
            push(
                "server_us_per_delivery",
                "server CPU per delivery",
                "µs",
                s * 1e6 / notifications as f64,
            );
        }
    }
    push(
        "client_cpu",
        "load generator CPU",
        "% of a core",
        cpu.own.as_secs_f64() / wall * 100.0,
    );
    let by_kind: Map<String, Value> = Kind::ALL
        .iter()
        .map(|&k| {
            let s = to_last(Some(k));
            let count = sent.iter().filter(|m| m.1 == k).count();
            (
                k.name().to_owned(),
                json!({"sent": count, "last_p50_ms": s.p50 / 1e3, "last_p99_ms": s.p99 / 1e3,
                       "last_max_ms": s.max / 1e3}),
            )
        })
        .collect();
    eprintln!(
        "loadgen: room: {} messages ({messages_per_s:.1}/s), {complete} reached all {members}; \
         to the last p99 {:.1} ms; {} failed calls; server CPU {:?} s over {wall:.1} s",
        sent.len(),
        all.p99 / 1e3,
        board.failed.get(),
        server_cpu,
    );
    let details = json!({
        "members": members, "seated": args.seated, "listeners": args.listeners,
        "seats": args.seats, "seconds": args.seconds,
        "rates": {"chat": args.chat_per_s, "gifts": args.gifts_per_s,
                  "seat_moves": args.seat_moves_per_s, "ping_interval_s": args.ping_interval_s},
        "messages": sent.len(), "complete": complete, "by_kind": by_kind,
        "timed_deliveries": timed, "expected": expected, "notifications": notifications,
        "last_max_ms": all.max / 1e3, "p50_ms": per_delivery.p50 / 1e3,
        "failed_calls": board.failed.get(), "first_error": board.first_error.borrow().clone(),
        "closed_by_server": board.closed.get(),
        "wall_s": wall, "server_cpu_s": server_cpu,
    });
    (metrics, details)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_notifications_from_session_frames() {
        assert!(is_notification(
            r#"{"action":"send_topic_msg","content":"bench-3 hi"}"#
        ));
        assert!(is_notification(r#"{"action":"down","user_id":5}"#));
        assert!(!is_notification(r#"{"action":"pong","server_time":1}"#));
        assert!(!is_notification(
            r#"{"action":"ack","ref_action":"send_topic_msg"}"#
        ));
        assert!(!is_notification(r#"{"action":"room_state","members":[]}"#));
    }

    #[test]
    fn finds_the_sequence_number_of_each_kind() {
        assert_eq!(seq_of(r#"{"content":"bench-12 nice song"}"#), Some(12));
        assert_eq!(seq_of(r#"{"gift":{"name":"bench-7"}}"#), Some(7));
        let up = up_body("r", 5, 3, Some(41));
        assert_eq!(seq_of(&up.to_string()), Some(41));
        assert_eq!(seq_of(&up_body("r", 5, 3, None).to_string()), None);
        assert_eq!(seq_of(&gift_body("r", 1, 2, 9).to_string()), Some(9));
        assert_eq!(seq_of(r#"{"action":"down","room_seat":{"id":2}}"#), None);
    }

    #[test]
    fn moves_seat_users_to_free_seats_only() {
        let room = Room {
            channel: "r".into(),
            listeners: vec![100],
            seats: RefCell::new(vec![None; 3]),
        };
        room.moved(1, 1);
        room.moved(2, 2);
        for _ in 0..50 {
            let (user, seat) = room.random_move().unwrap();
            assert!(user == 1 || user == 2);
            assert_eq!(room.seats.borrow()[seat - 1], None);
            room.moved(user, seat);
            let seats = room.seats.borrow();
            assert_eq!(seats.iter().flatten().count(), 2, "{seats:?}");
        }
        let free = room
            .seats
            .borrow()
            .iter()
            .position(Option::is_none)
            .unwrap();
        room.moved(3, free + 1);
        assert_eq!(room.random_move(), None);
    }

    #[test]
    fn records_deliveries_of_issued_messages() {
        let board = Board::new();
        assert_eq!(board.issue(Kind::Chat), 0);
        assert_eq!(board.issue(Kind::Gift), 1);
        board.record(r#"{"action":"send_gift","gift":{"name":"bench-1"}}"#);
        board.record(r#"{"action":"send_gift","gift":{"name":"bench-1"}}"#);
        board.record(r#"{"action":"down","user_id":1}"#);
        board.record(r#"{"action":"pong"}"#);
        board.record(r#"{"action":"send_gift","gift":{"name":"bench-9"}}"#);
        assert_eq!(*board.delivered.borrow(), [0, 2]);
        assert_eq!(board.notifications.get(), 4);
        assert_eq!(board.latencies.borrow().len(), 2);
    }
}
