//! `fanout`: broadcast of `send_gift` (`notify_type` `bc`) to one room.
//!
//! Every member enters the room through the server API before it
//! connects (so setting up a room of N costs N calls, not N² deliveries),
//! then connects and reads. The sender then calls `send_gift` at a fixed
//! rate per step of a sweep (open loop, at most [`MAX_IN_FLIGHT`] calls
//! outstanding). Each gift carries its sequence number in its `name`
//! (`bench-<seq>`); a member's receipt of it is one delivery, timed from
//! just before the API call. Per step: deliveries/s, delivery ratio
//! (deliveries over gifts sent times members: a call that failed counts),
//! latency percentiles per delivery, the latency to the last member, and
//! deliveries per CPU-second of the server (its user + system time over the
//! step, from `/proc/<pid>/stat`): the cost of a delivery, whatever the
//! load generator could absorb.
//!
//! With `--addr2` the room spans several nodes of one cluster (one Redis):
//! members connect to `--addr` and each address of `--addr2` in turn,
//! while every server API call still goes to `--addr`, so with two nodes
//! half the deliveries cross the store, with three two thirds.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

use super::{Ctx, Outcome};
use crate::api::Api;
use crate::net::Ws;
use crate::report::{Goal, Metric};
use crate::stats::{Summary, micros};
use crate::sys::{CpuWindow, ServerProcess};
use crate::target::Target;

/// Calls to the server API outstanding at once at most; past it the
/// sender waits, and the achieved rate falls below the offered one.
const MAX_IN_FLIGHT: usize = 64;

/// The marker before a gift's sequence number, in its `name`.
const MARKER: &str = r#""name":"bench-"#;

/// Arguments of `fanout`.
#[derive(Debug, clap::Args)]
pub struct FanoutArgs {
    /// Members of the room (the sender is one of them).
    #[arg(long, default_value_t = 1000)]
    pub members: usize,
    /// Broadcasts per second, one step each.
    #[arg(long, value_delimiter = ',', default_value = "50,100,200,400")]
    pub rates: Vec<f64>,
    /// Length of each step, in seconds.
    #[arg(long, default_value_t = 5.0)]
    pub step_seconds: f64,
    /// Calls kept in flight, one closed-loop step each (run before the
    /// rate steps): each of N loops sends the next gift when the previous
    /// answer came back.
    #[arg(long, value_delimiter = ',')]
    pub in_flight: Vec<usize>,
    /// Length of each `--in-flight` step, in seconds (default: `--step-seconds`).
    #[arg(long)]
    pub in_flight_seconds: Option<f64>,
    /// How long a step waits for its last deliveries after its last
    /// call; a server still behind then starts the next step late.
    #[arg(long, default_value_t = 10.0)]
    pub drain_seconds: f64,
    /// The first user id.
    #[arg(long, default_value_t = 3_000_000)]
    pub user_base: u64,
    /// Other nodes of the same cluster (loopback only, comma-separated):
    /// members connect to `--addr` and these in turn; server API calls
    /// still go to `--addr`.
    #[arg(long, value_delimiter = ',')]
    pub addr2: Vec<SocketAddr>,
    /// Seconds to wait between the members' connection and the first
    /// step, so that the servers finish the connections' work first (a
    /// measurement of the store's traffic per gift starts at the line
    /// `loadgen: fanout sweep starts`).
    #[arg(long, default_value_t = 0.0)]
    pub settle_seconds: f64,
    /// The other nodes' process ids (comma-separated), for their CPU
    /// reading (summed as `server2_cpu`).
    #[arg(long, value_delimiter = ',', requires = "addr2")]
    pub server_pid2: Vec<u32>,
}

/// What the sender and the members share, on the load generator's one
/// thread. Indexed by sequence number, issued as gifts are sent.
struct Board {
    /// Time zero of the run.
    t0: Instant,
    /// When each gift's API call started, since `t0`.
    sent_at: RefCell<Vec<Duration>>,
    /// Members that received each gift.
    delivered: RefCell<Vec<u32>>,
    /// When the last member received each gift, since `t0`.
    last_at: RefCell<Vec<Duration>>,
    /// First sequence number of each step.
    step_starts: RefCell<Vec<usize>>,
    /// Per step, the latency of every delivery, µs.
    latencies: RefCell<Vec<Vec<u32>>>,
    /// Frames and bytes the members received, and members whose socket
    /// the server closed.
    frames: Cell<u64>,
    bytes: Cell<u64>,
    closed: Cell<usize>,
}

impl Board {
    /// An empty board.
    fn new() -> Self {
        Self {
            t0: Instant::now(),
            sent_at: RefCell::default(),
            delivered: RefCell::default(),
            last_at: RefCell::default(),
            step_starts: RefCell::default(),
            latencies: RefCell::default(),
            frames: Cell::new(0),
            bytes: Cell::new(0),
            closed: Cell::new(0),
        }
    }

    /// Gifts issued so far.
    fn issued(&self) -> usize {
        self.sent_at.borrow().len()
    }

    /// Starts a step: the gifts issued from now on belong to it.
    fn open_step(&self) -> usize {
        let start = self.issued();
        self.step_starts.borrow_mut().push(start);
        self.latencies.borrow_mut().push(Vec::new());
        start
    }

    /// The sequence number of a gift about to be sent, its clock started.
    fn issue(&self) -> usize {
        let now = self.t0.elapsed();
        let mut sent = self.sent_at.borrow_mut();
        sent.push(now);
        self.delivered.borrow_mut().push(0);
        self.last_at.borrow_mut().push(Duration::ZERO);
        sent.len() - 1
    }

    /// The step `seq` belongs to.
    fn step_of(&self, seq: usize) -> usize {
        self.step_starts
            .borrow()
            .partition_point(|&start| start <= seq)
            - 1
    }

    /// A member received `text`.
    fn record(&self, text: &str) {
        let now = self.t0.elapsed();
        self.frames.set(self.frames.get() + 1);
        self.bytes.set(self.bytes.get() + text.len() as u64);
        let Some(seq) = seq_of(text) else { return };
        let Some(sent) = self.sent_at.borrow().get(seq).copied() else {
            return;
        };
        let step = self.step_of(seq);
        self.latencies.borrow_mut()[step].push(micros(now.saturating_sub(sent)));
        self.delivered.borrow_mut()[seq] += 1;
        let mut last = self.last_at.borrow_mut();
        last[seq] = last[seq].max(now);
    }

    /// Deliveries of the gifts `seqs`.
    fn delivered_in(&self, seqs: std::ops::Range<usize>) -> u64 {
        self.delivered.borrow()[seqs]
            .iter()
            .map(|&d| u64::from(d))
            .sum()
    }
}

/// The sequence number of a gift frame, from `"name":"bench-<seq>"`.
fn seq_of(text: &str) -> Option<usize> {
    let at = text.find(MARKER)? + MARKER.len();
    let digits = text[at..].split(|c: char| !c.is_ascii_digit()).next()?;
    digits.parse().ok()
}

/// What one step measured.
struct Step {
    kind: StepKind,
    seqs: std::ops::Range<usize>,
    ok: usize,
    failed: usize,
    first_error: Option<String>,
    started: Duration,
    send_span: Duration,
    client_cpu: f64,
    server_cpu: Option<f64>,
    /// The server's CPU time over the step, seconds.
    server_cpu_seconds: Option<f64>,
    /// CPU of the other nodes together, when their pids were given.
    server2_cpu: Option<f64>,
}

/// How a step sends its gifts.
#[derive(Debug, Clone, Copy)]
enum StepKind {
    /// At a fixed rate (open loop), so many per second.
    Rate(f64),
    /// This many calls kept in flight (closed loop).
    InFlight(usize),
}

impl StepKind {
    /// The stable part of its metrics' keys, after `fanout.<members>.`.
    fn key(self) -> String {
        match self {
            Self::Rate(r) => format!("r{r}"),
            Self::InFlight(k) => format!("f{k}"),
        }
    }

    /// How the table names it, after `fan-out to <members>`.
    fn label(self) -> String {
        match self {
            Self::Rate(r) => format!(" at {r}/s"),
            Self::InFlight(k) => format!(", {k} in flight"),
        }
    }
}

/// Runs `fanout`.
pub async fn run(ctx: &Ctx, args: &FanoutArgs) -> Result<Outcome> {
    let users: Vec<u64> = (0..args.members as u64)
        .map(|i| args.user_base + i)
        .collect();
    if users.len() < 2 {
        bail!("fanout needs at least 2 members");
    }
    let channel = format!("bench_fanout_{}_{}", args.members, rand::random::<u32>());
    ctx.enter_all(&users, &channel).await?;
    let nodes = nodes(ctx, args)?;
    let connected = ctx.connect_across(&nodes, users.iter().copied()).await;
    let members = connected.clients.len();
    eprintln!(
        "loadgen: fanout room {channel}: {members} members connected to {} node(s)",
        nodes.len()
    );
    let board = Rc::new(Board::new());
    let readers: Vec<_> = connected
        .clients
        .into_iter()
        .map(|c| tokio::task::spawn_local(read_deliveries(c.ws, board.clone())))
        .collect();
    let gift = GiftCall {
        api: ctx.api.clone(),
        channel: channel.clone(),
        sender: users[0],
        receiver: users[1],
    };
    if args.settle_seconds > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(args.settle_seconds)).await;
    }
    eprintln!("loadgen: fanout sweep starts");
    let drain = Duration::from_secs_f64(args.drain_seconds);
    let in_flight_seconds = args.in_flight_seconds.unwrap_or(args.step_seconds);
    // Closed-loop steps first: an overloaded rate step can leave a slow
    // server behind, which would then be billed to them.
    let plans = args
        .in_flight
        .iter()
        .map(|&k| StepPlan {
            kind: StepKind::InFlight(k.max(1)),
            seconds: in_flight_seconds,
            drain,
        })
        .chain(args.rates.iter().map(|&r| StepPlan {
            kind: StepKind::Rate(r),
            seconds: args.step_seconds,
            drain,
        }));
    let mut steps = Vec::new();
    for plan in plans {
        steps.push(run_step(ctx, args, &board, &gift, plan, members).await);
    }
    for reader in readers {
        reader.abort();
    }
    Ok(summarize(args, &board, &steps, members, connected.failed))
}

/// The nodes members connect to: `--addr`, then those of `--addr2`.
fn nodes(ctx: &Ctx, args: &FanoutArgs) -> Result<Vec<Target>> {
    let mut nodes = vec![ctx.target.clone()];
    for &addr in &args.addr2 {
        if !addr.ip().is_loopback() {
            bail!("the load generator only targets loopback addresses");
        }
        nodes.push(Target {
            addr,
            ..ctx.target.clone()
        });
    }
    Ok(nodes)
}

/// A member's task: record every frame until the run aborts it.
async fn read_deliveries(mut ws: Ws, board: Rc<Board>) {
    while let Some(message) = ws.next().await {
        match message {
            Ok(Message::Text(text)) => board.record(&text),
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    board.closed.set(board.closed.get() + 1);
}

/// How the sender calls `send_gift`.
struct GiftCall {
    api: Api,
    channel: String,
    sender: u64,
    receiver: u64,
}

impl GiftCall {
    /// The body of gift `seq`: the seed's gift object, with the sequence
    /// number in `name` and `id`.
    fn body(&self, seq: usize) -> Value {
        json!({
            "action": "send_gift", "channel_name": self.channel, "notify_type": "bc",
            "gift": {
                "id": seq, "sender_id": self.sender, "receiver_id": self.receiver,
                "sender_nickname": "sender", "receiver_nickname": "receiver",
                "name": format!("bench-{seq}"),
                "dynamic_image_url": "https://cdn.example/gifts/rose.webp",
                "image_url": "https://cdn.example/gifts/rose.png",
                "image_big_url": "https://cdn.example/gifts/rose_big.png",
                "image_small_url": "https://cdn.example/gifts/rose_small.png",
                "num": 1, "sender_room_seat_id": 0, "receiver_room_seat_id": 0,
            },
        })
    }
}

/// Outcome of the calls of one step, shared with the call tasks.
#[derive(Default)]
struct Calls {
    ok: Cell<usize>,
    failed: Cell<usize>,
    first_error: RefCell<Option<String>>,
}

/// What one step of the sweep sends.
struct StepPlan {
    /// At a rate or with so many calls in flight.
    kind: StepKind,
    /// How long it sends.
    seconds: f64,
    /// How long it waits for late deliveries.
    drain: Duration,
}

/// Sends the plan's gifts, waits for the calls and the deliveries, and
/// measures CPU over the step.
async fn run_step(
    ctx: &Ctx,
    args: &FanoutArgs,
    board: &Rc<Board>,
    gift: &GiftCall,
    plan: StepPlan,
    members: usize,
) -> Step {
    let calls = Rc::new(Calls::default());
    let first = board.open_step();
    let window = CpuWindow::open(ctx.server);
    let others: Vec<CpuWindow> = args
        .server_pid2
        .iter()
        .map(|&pid| CpuWindow::open(Some(ServerProcess { pid })))
        .collect();
    let started = Instant::now();
    match plan.kind {
        StepKind::Rate(rate) => send_at_rate(board, gift, &calls, rate, plan.seconds).await,
        StepKind::InFlight(k) => send_in_flight(board, gift, &calls, k, plan.seconds).await,
    }
    let send_span = started.elapsed();
    let seqs = first..board.issued();
    // A call that timed out may still have been broadcast: expect every
    // gift sent, and report failed calls next to the ratio.
    let expected = ((calls.ok.get() + calls.failed.get()) * members) as u64;
    drain(board, seqs.clone(), expected, plan.drain).await;
    let cpu = window.close_raw();
    let server2_cpu = if others.is_empty() {
        None
    } else {
        others
            .iter()
            .map(|w| w.close().1)
            .try_fold(0.0, |sum, cpu| cpu.map(|c| sum + c))
    };
    let wall = cpu.wall.as_secs_f64().max(1e-9);
    let step = Step {
        kind: plan.kind,
        seqs,
        ok: calls.ok.get(),
        failed: calls.failed.get(),
        first_error: calls.first_error.borrow_mut().take(),
        started: started.duration_since(board.t0),
        send_span,
        client_cpu: cpu.own.as_secs_f64() / wall,
        server_cpu: cpu.server.map(|s| s.as_secs_f64() / wall),
        server_cpu_seconds: cpu.server.map(|s| s.as_secs_f64()),
        server2_cpu,
    };
    eprintln!(
        "loadgen: fanout step{}: {} calls ok, {} failed, {} of {expected} delivered",
        step.kind.label(),
        step.ok,
        step.failed,
        board.delivered_in(step.seqs.clone())
    );
    step
}

/// Calls `send_gift` `rate` times a second for `seconds` (open loop, at
/// most [`MAX_IN_FLIGHT`] outstanding), and waits for the answers.
async fn send_at_rate(board: &Board, gift: &GiftCall, calls: &Rc<Calls>, rate: f64, seconds: f64) {
    let count = (rate * seconds).round().max(1.0) as usize;
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let started = Instant::now();
    for k in 0..count {
        tokio::time::sleep_until((started + Duration::from_secs_f64(k as f64 / rate)).into()).await;
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let seq = board.issue();
        let (api, body, calls) = (gift.api.clone(), gift.body(seq), calls.clone());
        tokio::task::spawn_local(async move {
            record_call(&calls, api.action(&body).await);
            drop(permit);
        });
    }
    let _all = in_flight.acquire_many(MAX_IN_FLIGHT as u32).await;
}

/// Keeps `k` calls of `send_gift` in flight for `seconds`: `k` loops, each
/// sending the next gift when the previous answer came back.
async fn send_in_flight(board: &Board, gift: &GiftCall, calls: &Calls, k: usize, seconds: f64) {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let one_loop = || async {
        while Instant::now() < deadline {
            let seq = board.issue();
            record_call(calls, gift.api.action(&gift.body(seq)).await);
        }
    };
    futures_util::future::join_all((0..k).map(|_| one_loop())).await;
}

/// Counts a call's outcome.
fn record_call(calls: &Calls, result: Result<(u16, Value)>) {
    let error = match result {
        Ok((200, _)) => None,
        Ok((status, body)) => Some(format!("HTTP {status} {body}")),
        Err(e) => Some(format!("{e:#}")),
    };
    match error {
        None => calls.ok.set(calls.ok.get() + 1),
        Some(e) => {
            calls.failed.set(calls.failed.get() + 1);
            calls.first_error.borrow_mut().get_or_insert(e);
        }
    }
}

/// Waits until `expected` deliveries of `seqs` arrived, nothing arrived
/// for a second, or `limit` passed ([`super::wait_for_deliveries`]).
async fn drain(board: &Board, seqs: std::ops::Range<usize>, expected: u64, limit: Duration) {
    super::wait_for_deliveries(expected, limit, || board.delivered_in(seqs.clone())).await;
}

/// The metrics and details of the whole sweep.
fn summarize(
    args: &FanoutArgs,
    board: &Board,
    steps: &[Step],
    members: usize,
    connect_failed: usize,
) -> Outcome {
    let n = args.members;
    let mut metrics = Vec::new();
    let mut details = Vec::new();
    let mut peak: f64 = 0.0;
    let mut latencies = board.latencies.take();
    for (i, step) in steps.iter().enumerate() {
        let (m, d, per_second) =
            step_metrics(n, board, step, std::mem::take(&mut latencies[i]), members);
        peak = peak.max(per_second);
        metrics.extend(m);
        details.push(d);
    }
    metrics.insert(
        0,
        Metric::new(
            format!("fanout.{n}.peak_per_s"),
            format!("fan-out to {n}: best deliveries/s of the sweep"),
            "1/s",
            peak,
        )
        .goal(Goal::RatioAtLeast(3.0)),
    );
    let frames = board.frames.get().max(1);
    let details = json!({
        "members": members, "connect_failed": connect_failed,
        "closed_by_server": board.closed.get(),
        "mean_frame_bytes": board.bytes.get() as f64 / frames as f64,
        "steps": details,
    });
    (metrics, details)
}

/// One step's metrics, details, and deliveries per second.
fn step_metrics(
    n: usize,
    board: &Board,
    step: &Step,
    latencies: Vec<u32>,
    members: usize,
) -> (Vec<Metric>, Value, f64) {
    let delivered = board.delivered_in(step.seqs.clone());
    let expected = ((step.ok + step.failed) * members) as u64;
    let ratio = delivered as f64 / expected.max(1) as f64;
    let last = board.last_at.borrow()[step.seqs.clone()]
        .iter()
        .copied()
        .max()
        .unwrap_or_default();
    let span = last.saturating_sub(step.started).max(step.send_span);
    let per_second = delivered as f64 / span.as_secs_f64().max(1e-9);
    // The sender waits once MAX_IN_FLIGHT calls are outstanding, so a
    // server that answers slowly is offered fewer gifts than the step asks.
    let calls_per_second = (step.ok + step.failed) as f64 / step.send_span.as_secs_f64().max(1e-9);
    let per_delivery = Summary::of(latencies);
    let to_last = last_member_latencies(board, step, members);
    let at = format!("fan-out to {n}{}", step.kind.label());
    let key = format!("fanout.{n}.{}", step.kind.key());
    let metric = |suffix: &str, what: &str, unit: &str, value: f64| {
        Metric::new(
            format!("{key}.{suffix}"),
            format!("{at}: {what}"),
            unit,
            value,
        )
    };
    let mut metrics = vec![
        metric("per_s", "deliveries/s", "1/s", per_second),
        metric(
            "calls_per_s",
            "gifts sent/s (API calls achieved)",
            "1/s",
            calls_per_second,
        ),
        metric("p50_ms", "latency p50", "ms", per_delivery.p50 / 1000.0),
        // Latency is compared at equal offered load: the rate steps. With
        // calls in flight, a faster server is offered more.
        match step.kind {
            StepKind::Rate(_) => metric("p99_ms", "latency p99", "ms", per_delivery.p99 / 1000.0)
                .goal(Goal::RatioAtMost(0.5)),
            StepKind::InFlight(_) => {
                metric("p99_ms", "latency p99", "ms", per_delivery.p99 / 1000.0)
            }
        },
        metric("max_ms", "latency max", "ms", per_delivery.max / 1000.0),
        metric(
            "last_p99_ms",
            "latency to the last member, p99",
            "ms",
            to_last.p99 / 1000.0,
        ),
        metric("ratio", "delivery ratio", "fraction", ratio),
        metric(
            "client_cpu",
            "load generator CPU",
            "% of a core",
            step.client_cpu * 100.0,
        ),
    ];
    if let Some(cpu) = step.server_cpu {
        metrics.push(metric(
            "server_cpu",
            "server CPU",
            "% of a core",
            cpu * 100.0,
        ));
    }
    // The cost of a delivery, whatever the load generator could absorb:
    // held to 0.8x the bare server's with calls in flight (issue 20).
    let per_cpu_second = step
        .server_cpu_seconds
        .filter(|&s| s > 0.0)
        .map(|s| delivered as f64 / s);
    if let Some(per_cpu) = per_cpu_second {
        let m = metric(
            "per_cpu_s",
            "deliveries per server CPU-second",
            "1/CPU-s",
            per_cpu,
        );
        metrics.push(match step.kind {
            StepKind::InFlight(_) => m.goal(Goal::BareRatioAtLeast(0.8)),
            StepKind::Rate(_) => m,
        });
    }
    if let Some(cpu) = step.server2_cpu {
        metrics.push(metric(
            "server2_cpu",
            "second node CPU",
            "% of a core",
            cpu * 100.0,
        ));
    }
    let (rate, in_flight) = match step.kind {
        StepKind::Rate(r) => (Some(r), None),
        StepKind::InFlight(k) => (None, Some(k)),
    };
    let details = json!({
        "rate": rate, "in_flight": in_flight,
        "offered_deliveries_per_s": rate.map(|r| r * members as f64),
        "server_cpu_seconds": step.server_cpu_seconds,
        "deliveries_per_server_cpu_s": per_cpu_second,
        "server_cpu_us_per_delivery": per_cpu_second.map(|d| 1e6 / d),
        "calls_ok": step.ok, "calls_failed": step.failed, "first_error": step.first_error,
        "achieved_calls_per_s": calls_per_second,
        "delivered": delivered, "expected": expected, "deliveries_per_s": per_second,
        "p50_ms": per_delivery.p50 / 1000.0, "p99_ms": per_delivery.p99 / 1000.0,
        "max_ms": per_delivery.max / 1000.0,
        "last_member_p50_ms": to_last.p50 / 1000.0, "last_member_p99_ms": to_last.p99 / 1000.0,
        "client_cpu": step.client_cpu, "server_cpu": step.server_cpu,
        "server2_cpu": step.server2_cpu,
    });
    (metrics, details, per_second)
}

/// Latency from the call to the last member's receipt, over the gifts of
/// `step` that reached every member.
fn last_member_latencies(board: &Board, step: &Step, members: usize) -> Summary {
    let sent = board.sent_at.borrow();
    let delivered = board.delivered.borrow();
    let last = board.last_at.borrow();
    let micros_each = step
        .seqs
        .clone()
        .filter(|&seq| delivered[seq] as usize >= members)
        .map(|seq| micros(last[seq].saturating_sub(sent[seq])))
        .collect();
    Summary::of(micros_each)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_sequence_number() {
        let frame =
            r#"{"action":"send_gift","gift":{"id":7,"name":"bench-12345","num":1},"msg_id":"x"}"#;
        assert_eq!(seq_of(frame), Some(12345));
        assert_eq!(seq_of(r#"{"action":"pong"}"#), None);
    }

    #[test]
    fn issues_gifts_into_steps_and_finds_them() {
        let board = Board::new();
        assert_eq!(board.open_step(), 0);
        let first: Vec<usize> = (0..20).map(|_| board.issue()).collect();
        assert_eq!(board.open_step(), 20);
        (0..40).for_each(|_| {
            board.issue();
        });
        assert_eq!((first[19], board.issued()), (19, 60));
        assert_eq!(board.step_of(0), 0);
        assert_eq!(board.step_of(19), 0);
        assert_eq!(board.step_of(20), 1);
        assert_eq!(board.step_of(59), 1);
        board.record(r#"{"gift":{"name":"bench-25"}}"#);
        board.record(r#"{"gift":{"name":"bench-99"}}"#); // never issued
        assert_eq!(board.delivered_in(20..60), 1);
        assert_eq!(board.latencies.borrow()[1].len(), 1);
        assert_eq!(board.frames.get(), 2);
    }

    #[test]
    fn names_steps() {
        assert_eq!(StepKind::Rate(100.0).key(), "r100");
        assert_eq!(StepKind::InFlight(4).key(), "f4");
        assert_eq!(StepKind::InFlight(4).label(), ", 4 in flight");
        assert_eq!(StepKind::Rate(1600.0).label(), " at 1600/s");
    }
}
