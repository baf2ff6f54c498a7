//! `ping`: round trips of signed pings. Every client keeps one ping in
//! flight (send, wait for the `pong`, send the next) for a fixed time;
//! the result is pings per second and the round-trip percentiles.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use futures_util::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use super::{Ctx, Outcome};
use crate::report::Metric;
use crate::stats::{Summary, micros};
use crate::sys::CpuWindow;
use crate::target::Client;

/// A round trip at least this long is placed in time in the details.
const SLOW: Duration = Duration::from_millis(50);

/// How long a client waits for one pong before giving up on the run.
const PONG_TIMEOUT: Duration = Duration::from_secs(5);

/// Arguments of `ping`.
#[derive(Debug, clap::Args)]
pub struct PingArgs {
    /// Clients, each with one ping in flight.
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// How long to ping, in seconds.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Pings each client signs before the clock starts, so that signing
    /// (an HMAC and a canonical string per frame) does not load the
    /// client during the run; past them it signs as it goes.
    #[arg(long, default_value_t = 400)]
    pub presign: usize,
    /// The first user id.
    #[arg(long, default_value_t = 2_000_000)]
    pub user_base: u64,
}

/// What the clients record, shared on the load generator's one thread.
#[derive(Default)]
struct Tally {
    /// Round trips, µs.
    rtts: RefCell<Vec<u32>>,
    /// Error frames received instead of a pong.
    errors: Cell<usize>,
    /// Clients that stopped early (socket closed, pong timed out).
    broken: Cell<usize>,
    /// Pings signed during the run, past the presigned ones.
    signed_live: Cell<usize>,
    /// When the run started, to place slow pings in time.
    started: Cell<Option<Instant>>,
    /// Pings slower than [`SLOW`], by the 100 ms slice of the run they
    /// were sent in: clustered slices mean the server stalled as a whole,
    /// spread ones that some connections wait longer than others.
    slow_by_slice: RefCell<BTreeMap<u64, u32>>,
}

impl Tally {
    /// Records a round trip of a ping sent at `sent`.
    fn record(&self, sent: Instant, rtt: Duration) {
        self.rtts.borrow_mut().push(micros(rtt));
        if rtt >= SLOW {
            let start = self.started.get().unwrap_or(sent);
            let slice = (sent.saturating_duration_since(start).as_millis() / 100) as u64;
            *self.slow_by_slice.borrow_mut().entry(slice).or_default() += 1;
        }
    }
}

/// Runs `ping`.
pub async fn run(ctx: &Ctx, args: &PingArgs) -> Result<Outcome> {
    let connected = ctx
        .connect_many(args.user_base..args.user_base + args.clients as u64)
        .await;
    if connected.clients.is_empty() {
        bail!("no client connected: {:?}", connected.first_error);
    }
    let tally = Rc::new(Tally::default());
    let presigned: Vec<(Client, Vec<String>)> = connected
        .clients
        .into_iter()
        .map(|client| {
            let frames = (0..args.presign).map(|_| client.ping()).collect();
            (client, frames)
        })
        .collect();
    let window = CpuWindow::open(ctx.server);
    let started = Instant::now();
    tally.started.set(Some(started));
    let deadline = started + Duration::from_secs_f64(args.seconds);
    let tasks: Vec<_> = presigned
        .into_iter()
        .map(|(client, frames)| {
            tokio::task::spawn_local(ping_loop(client, frames, deadline, tally.clone()))
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (client_cpu, server_cpu) = window.close();
    let rtt = Summary::of(std::mem::take(&mut *tally.rtts.borrow_mut()));
    let per_second = rtt.count as f64 / elapsed;
    eprintln!(
        "loadgen: ping {per_second:.0}/s, p50 {:.0} µs, p99 {:.0} µs, client CPU {:.0}%",
        rtt.p50,
        rtt.p99,
        client_cpu * 100.0
    );
    let n = args.clients;
    let mut metrics = vec![
        Metric::new(
            format!("ping.{n}.per_s"),
            format!("pings/s, {n} clients"),
            "1/s",
            per_second,
        ),
        Metric::new(
            format!("ping.{n}.p50_ms"),
            format!("ping round trip p50, {n} clients"),
            "ms",
            rtt.p50 / 1000.0,
        ),
        Metric::new(
            format!("ping.{n}.p99_ms"),
            format!("ping round trip p99, {n} clients"),
            "ms",
            rtt.p99 / 1000.0,
        ),
        Metric::new(
            format!("ping.{n}.max_ms"),
            format!("ping round trip max, {n} clients"),
            "ms",
            rtt.max / 1000.0,
        ),
        Metric::new(
            format!("ping.{n}.client_cpu"),
            format!("ping, {n} clients: load generator CPU"),
            "% of a core",
            client_cpu * 100.0,
        ),
    ];
    if let Some(cpu) = server_cpu {
        metrics.push(Metric::new(
            format!("ping.{n}.server_cpu"),
            format!("ping, {n} clients: server CPU"),
            "% of a core",
            cpu * 100.0,
        ));
    }
    let details = json!({
        "clients": n, "connect_failed": connected.failed, "pings": rtt.count,
        "seconds": elapsed, "max_ms": rtt.max / 1000.0, "errors": tally.errors.get(),
        "broken_clients": tally.broken.get(), "signed_live": tally.signed_live.get(),
        "server_cpu": server_cpu,
        "slow_pings_by_100ms_slice": *tally.slow_by_slice.borrow(),
    });
    Ok((metrics, details))
}

/// One client's closed loop of pings until `deadline`: its presigned
/// `frames` first, then pings signed as it goes.
async fn ping_loop(mut client: Client, frames: Vec<String>, deadline: Instant, tally: Rc<Tally>) {
    let mut frames = frames.into_iter();
    while Instant::now() < deadline {
        let frame = frames.next().unwrap_or_else(|| {
            tally.signed_live.set(tally.signed_live.get() + 1);
            client.ping()
        });
        let sent = Instant::now();
        if client.send(frame).await.is_err() {
            tally.broken.set(tally.broken.get() + 1);
            return;
        }
        match tokio::time::timeout(PONG_TIMEOUT, next_answer(&mut client)).await {
            Ok(Some(true)) => tally.record(sent, sent.elapsed()),
            Ok(Some(false)) => tally.errors.set(tally.errors.get() + 1),
            Ok(None) | Err(_) => {
                tally.broken.set(tally.broken.get() + 1);
                return;
            }
        }
    }
}

/// Waits for the answer to a ping: `Some(true)` for a pong, `Some(false)`
/// for an error frame, `None` when the socket ends.
async fn next_answer(client: &mut Client) -> Option<bool> {
    loop {
        match client.ws.next().await? {
            Ok(Message::Text(text)) if text.contains(r#""action":"pong""#) => return Some(true),
            Ok(Message::Text(text)) if text.contains(r#""action":"error""#) => {
                return Some(false);
            }
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}
