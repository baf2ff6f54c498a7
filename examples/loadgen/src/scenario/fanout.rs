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
//! latency percentiles per delivery, and the latency to the last member.
//!
//! With `--addr2` the room spans two nodes of one cluster (one Redis):
//! members connect to `--addr` and `--addr2` in turn, while every server
//! API call still goes to `--addr`, so half the deliveries cross the store.

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

/// A step's drain ends early after this long without a new delivery.
const DRAIN_QUIET: Duration = Duration::from_millis(1000);

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
    /// How long a step waits for its last deliveries after its last
    /// call; a server still behind then starts the next step late.
    #[arg(long, default_value_t = 10.0)]
    pub drain_seconds: f64,
    /// The first user id.
    #[arg(long, default_value_t = 3_000_000)]
    pub user_base: u64,
    /// A second node of the same cluster (loopback only): every other
    /// member connects there; server API calls still go to `--addr`.
    #[arg(long)]
    pub addr2: Option<SocketAddr>,
    /// The second node's process id, for its CPU reading.
    #[arg(long, requires = "addr2")]
    pub server_pid2: Option<u32>,
}

/// What the sender and the members share, on the load generator's one
/// thread. Indexed by sequence number.
struct Board {
    /// Time zero of the run.
    t0: Instant,
    /// When each gift's API call started, since `t0`.
    sent_at: RefCell<Vec<Option<Duration>>>,
    /// Members that received each gift.
    delivered: RefCell<Vec<u32>>,
    /// When the last member received each gift, since `t0`.
    last_at: RefCell<Vec<Duration>>,
    /// First sequence number of each step.
    step_starts: Vec<usize>,
    /// Per step, the latency of every delivery, µs.
    latencies: RefCell<Vec<Vec<u32>>>,
    /// Frames and bytes the members received, and members whose socket
    /// the server closed.
    frames: Cell<u64>,
    bytes: Cell<u64>,
    closed: Cell<usize>,
}

impl Board {
    /// A board for steps starting at `step_starts` and `total` gifts.
    fn new(step_starts: Vec<usize>, total: usize) -> Self {
        let steps = step_starts.len();
        Self {
            t0: Instant::now(),
            sent_at: RefCell::new(vec![None; total]),
            delivered: RefCell::new(vec![0; total]),
            last_at: RefCell::new(vec![Duration::ZERO; total]),
            step_starts,
            latencies: RefCell::new(vec![Vec::new(); steps]),
            frames: Cell::new(0),
            bytes: Cell::new(0),
            closed: Cell::new(0),
        }
    }

    /// The step `seq` belongs to.
    fn step_of(&self, seq: usize) -> usize {
        self.step_starts.partition_point(|&start| start <= seq) - 1
    }

    /// A member received `text`.
    fn record(&self, text: &str) {
        let now = self.t0.elapsed();
        self.frames.set(self.frames.get() + 1);
        self.bytes.set(self.bytes.get() + text.len() as u64);
        let Some(seq) = seq_of(text) else { return };
        let Some(Some(sent)) = self.sent_at.borrow().get(seq).copied() else {
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
    rate: f64,
    seqs: std::ops::Range<usize>,
    ok: usize,
    failed: usize,
    first_error: Option<String>,
    started: Duration,
    send_span: Duration,
    client_cpu: f64,
    server_cpu: Option<f64>,
    /// CPU of the second node, when its pid was given.
    server2_cpu: Option<f64>,
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
    let (step_starts, total) = plan(&args.rates, args.step_seconds);
    let board = Rc::new(Board::new(step_starts, total));
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
    let mut steps = Vec::new();
    for (i, &rate) in args.rates.iter().enumerate() {
        let plan = StepPlan {
            rate,
            seqs: board.step_starts[i]..board.step_starts.get(i + 1).copied().unwrap_or(total),
            drain: Duration::from_secs_f64(args.drain_seconds),
        };
        steps.push(run_step(ctx, args, &board, &gift, plan, members).await);
    }
    for reader in readers {
        reader.abort();
    }
    Ok(summarize(args, &board, &steps, members, connected.failed))
}

/// The nodes members connect to: `--addr`, then `--addr2` when given.
fn nodes(ctx: &Ctx, args: &FanoutArgs) -> Result<Vec<Target>> {
    let mut nodes = vec![ctx.target.clone()];
    if let Some(addr) = args.addr2 {
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

/// The first sequence number of each step, and the total count.
fn plan(rates: &[f64], seconds: f64) -> (Vec<usize>, usize) {
    let mut starts = Vec::with_capacity(rates.len());
    let mut total = 0;
    for rate in rates {
        starts.push(total);
        total += (rate * seconds).round().max(1.0) as usize;
    }
    (starts, total)
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
    /// Calls per second.
    rate: f64,
    /// The gifts it sends.
    seqs: std::ops::Range<usize>,
    /// How long it waits for late deliveries.
    drain: Duration,
}

/// Sends the plan's gifts at its rate, waits for the calls and the
/// deliveries, and measures CPU over the step.
async fn run_step(
    ctx: &Ctx,
    args: &FanoutArgs,
    board: &Rc<Board>,
    gift: &GiftCall,
    plan: StepPlan,
    members: usize,
) -> Step {
    let StepPlan {
        rate,
        seqs,
        drain: drain_limit,
    } = plan;
    let calls = Rc::new(Calls::default());
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let window = CpuWindow::open(ctx.server);
    let window2 = CpuWindow::open(args.server_pid2.map(|pid| ServerProcess { pid }));
    let started = Instant::now();
    for (k, seq) in seqs.clone().enumerate() {
        tokio::time::sleep_until((started + Duration::from_secs_f64(k as f64 / rate)).into()).await;
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        board.sent_at.borrow_mut()[seq] = Some(board.t0.elapsed());
        let (api, body, calls) = (gift.api.clone(), gift.body(seq), calls.clone());
        tokio::task::spawn_local(async move {
            record_call(&calls, api.action(&body).await);
            drop(permit);
        });
    }
    let send_span = started.elapsed();
    let _all = in_flight.acquire_many(MAX_IN_FLIGHT as u32).await;
    // A call that timed out may still have been broadcast: expect every
    // gift sent, and report failed calls next to the ratio.
    let expected = ((calls.ok.get() + calls.failed.get()) * members) as u64;
    drain(board, seqs.clone(), expected, drain_limit).await;
    let (client_cpu, server_cpu) = window.close();
    let (_, server2_cpu) = window2.close();
    let step = Step {
        rate,
        seqs,
        ok: calls.ok.get(),
        failed: calls.failed.get(),
        first_error: calls.first_error.borrow_mut().take(),
        started: started.duration_since(board.t0),
        send_span,
        client_cpu,
        server_cpu,
        server2_cpu,
    };
    eprintln!(
        "loadgen: fanout step {rate}/s: {} calls ok, {} failed, {} of {expected} delivered",
        step.ok,
        step.failed,
        board.delivered_in(step.seqs.clone())
    );
    step
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
/// for [`DRAIN_QUIET`], or `limit` passed.
async fn drain(board: &Board, seqs: std::ops::Range<usize>, expected: u64, limit: Duration) {
    let limit = Instant::now() + limit;
    let mut seen = board.delivered_in(seqs.clone());
    let mut last_progress = Instant::now();
    while seen < expected && Instant::now() < limit && last_progress.elapsed() < DRAIN_QUIET {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let now_seen = board.delivered_in(seqs.clone());
        if now_seen > seen {
            seen = now_seen;
            last_progress = Instant::now();
        }
    }
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
    let r = step.rate;
    let at = format!("fan-out to {n} at {r}/s");
    let key = format!("fanout.{n}.r{r}");
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
        metric("p99_ms", "latency p99", "ms", per_delivery.p99 / 1000.0)
            .goal(Goal::RatioAtMost(0.5)),
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
    if let Some(cpu) = step.server2_cpu {
        metrics.push(metric(
            "server2_cpu",
            "second node CPU",
            "% of a core",
            cpu * 100.0,
        ));
    }
    let details = json!({
        "rate": r, "offered_deliveries_per_s": r * members as f64,
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
        .filter_map(|seq| Some(micros(last[seq].saturating_sub(sent[seq]?))))
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
    fn plans_steps_and_finds_them() {
        let (starts, total) = plan(&[10.0, 20.0], 2.0);
        assert_eq!((starts.clone(), total), (vec![0, 20], 60));
        let board = Board::new(starts, total);
        assert_eq!(board.step_of(0), 0);
        assert_eq!(board.step_of(19), 0);
        assert_eq!(board.step_of(20), 1);
        assert_eq!(board.step_of(59), 1);
    }
}
