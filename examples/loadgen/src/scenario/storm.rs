//! `storm`: every client reconnecting at once after a server restart.
//!
//! Opens `--conns` idle connections, then writes `--ready-file` and waits:
//! the bench script restarts the server (SIGTERM, then a fresh process on
//! the same port). Each client notices its socket end and reconnects the
//! way the SDK does (`clients/js/src/backoff.ts`: attempt k waits
//! `min(max, initial * 2^k)` times a random factor in [0.5, 1), "equal
//! jitter"), with a fresh signed query, until it reads `connected` again.
//!
//! Measured: the time from the first client back to the last
//! (`all_back_ms`: how long the server takes to readmit everyone once it
//! accepts again), the time from the first loss to the last client back
//! (details), and the latency of each successful attempt, from its TCP
//! connect to its `connected` frame (`connect_p50_ms`, `connect_p99_ms`).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use rand::Rng;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use super::{Ctx, Outcome};
use crate::report::{Goal, Metric};
use crate::stats::Summary;
use crate::target::Client;

/// Arguments of `storm`.
#[derive(Debug, clap::Args)]
pub struct StormArgs {
    /// Connections that reconnect together.
    #[arg(long, default_value_t = 19_000)]
    pub conns: usize,
    /// Written (empty) once every connection is open: the signal to
    /// restart the server.
    #[arg(long)]
    pub ready_file: std::path::PathBuf,
    /// The first reconnection delay's upper bound, ms (the SDK's default).
    #[arg(long, default_value_t = 500)]
    pub initial_ms: u64,
    /// The largest reconnection delay, ms (the SDK's default).
    #[arg(long, default_value_t = 30_000)]
    pub max_ms: u64,
    /// A client still out after this many seconds from its loss counts as
    /// never back.
    #[arg(long, default_value_t = 120)]
    pub give_up_seconds: u64,
    /// The first user id.
    #[arg(long, default_value_t = 3_000_000)]
    pub user_base: u64,
}

/// One client's way back.
struct Trip {
    /// When its socket ended.
    lost: Instant,
    /// When it read `connected` again; `None` if it gave up.
    back: Option<Instant>,
    /// The successful attempt, connect to `connected`.
    latency: Duration,
    /// Attempts that failed before it.
    failures: u32,
    /// The first failure's cause.
    first_error: Option<String>,
    /// The new connection, kept open until every client is back.
    _client: Option<Client>,
}

/// Runs `storm`.
pub async fn run(ctx: &Ctx, args: &StormArgs) -> Result<Outcome> {
    let users = args.user_base..args.user_base + args.conns as u64;
    let connected = ctx.connect_many(users).await;
    if connected.failed > 0 {
        bail!(
            "{} of {} clients did not connect before the restart",
            connected.failed,
            args.conns
        );
    }
    std::fs::write(&args.ready_file, b"")
        .with_context(|| format!("write {}", args.ready_file.display()))?;
    eprintln!(
        "loadgen: storm {} connected; waiting for the restart",
        args.conns
    );
    let trips: Vec<Trip> = connected
        .clients
        .into_iter()
        .map(|client| ride(ctx, args, client))
        .collect::<FuturesUnordered<_>>()
        .collect()
        .await;

    let first_lost = trips.iter().map(|t| t.lost).min().context("no clients")?;
    let last_lost = trips.iter().map(|t| t.lost).max().context("no clients")?;
    let lost_spread_ms = last_lost.duration_since(first_lost).as_secs_f64() * 1e3;
    let mut back_after_ms: Vec<u32> = trips
        .iter()
        .filter_map(|t| {
            t.back
                .map(|b| b.duration_since(first_lost).as_millis() as u32)
        })
        .collect();
    back_after_ms.sort_unstable();
    let back_p50_ms = crate::stats::percentile(&back_after_ms, 50.0);
    let back_p90_ms = crate::stats::percentile(&back_after_ms, 90.0);
    let backs: Vec<Instant> = trips.iter().filter_map(|t| t.back).collect();
    let never_back = trips.len() - backs.len();
    let (Some(first_back), Some(last_back)) = (backs.iter().min(), backs.iter().max()) else {
        bail!("no client came back");
    };
    let latencies = Summary::of(
        trips
            .iter()
            .filter(|t| t.back.is_some())
            .map(|t| u32::try_from(t.latency.as_micros()).unwrap_or(u32::MAX))
            .collect(),
    );
    let failures: u64 = trips.iter().map(|t| u64::from(t.failures)).sum();
    let first_error = trips.iter().find_map(|t| t.first_error.clone());
    let all_back_ms = last_back.duration_since(*first_back).as_secs_f64() * 1e3;
    let outage_ms = last_back.duration_since(first_lost).as_secs_f64() * 1e3;
    let n = args.conns;
    eprintln!(
        "loadgen: storm {n}: all back {all_back_ms:.0} ms after the first, {outage_ms:.0} ms after \
         the loss; connect p99 {:.1} ms; {failures} failed attempts; {never_back} never back",
        latencies.p99 / 1e3
    );
    if never_back > 0 {
        bail!(
            "{never_back} clients were not back within {} s",
            args.give_up_seconds
        );
    }
    let metrics = vec![
        Metric::new(
            format!("storm.{n}.all_back_ms"),
            format!("reconnect storm of {n}: first back to last back"),
            "ms",
            all_back_ms,
        )
        .goal(Goal::RatioAtMost(1.0)),
        Metric::new(
            format!("storm.{n}.connect_p50_ms"),
            format!("reconnect storm of {n}: connect p50"),
            "ms",
            latencies.p50 / 1e3,
        ),
        Metric::new(
            format!("storm.{n}.connect_p99_ms"),
            format!("reconnect storm of {n}: connect p99"),
            "ms",
            latencies.p99 / 1e3,
        )
        .goal(Goal::RatioAtMost(1.0)),
    ];
    let details = json!({
        "conns": n, "outage_ms": outage_ms, "all_back_ms": all_back_ms,
        "failed_attempts": failures, "first_error": first_error,
        "lost_spread_ms": lost_spread_ms, "back_p50_ms_after_loss": back_p50_ms,
        "back_p90_ms_after_loss": back_p90_ms,
        "connect_max_ms": latencies.max / 1e3,
        "backoff": {"initial_ms": args.initial_ms, "max_ms": args.max_ms},
    });
    Ok((metrics, details))
}

/// Waits for `client`'s socket to end, then reconnects it with the SDK's
/// back-off until it is back or gives up.
async fn ride(ctx: &Ctx, args: &StormArgs, mut client: Client) -> Trip {
    loop {
        match client.ws.next().await {
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
            Some(Ok(_)) => continue,
        }
    }
    let lost = Instant::now();
    let user_id = client.user_id;
    drop(client);
    let give_up = lost + Duration::from_secs(args.give_up_seconds);
    let mut trip = Trip {
        lost,
        back: None,
        latency: Duration::ZERO,
        failures: 0,
        first_error: None,
        _client: None,
    };
    for attempt in 0u32.. {
        tokio::time::sleep(backoff(attempt, args.initial_ms, args.max_ms)).await;
        if Instant::now() > give_up {
            break;
        }
        let started = Instant::now();
        match Client::connect(&ctx.dialer, &ctx.target, user_id).await {
            Ok(client) => {
                trip.back = Some(Instant::now());
                trip.latency = started.elapsed();
                trip._client = Some(client);
                break;
            }
            Err(e) => {
                trip.failures += 1;
                trip.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    trip
}

/// The SDK's delay before attempt `attempt` (0 for the first).
fn backoff(attempt: u32, initial_ms: u64, max_ms: u64) -> Duration {
    let bound = initial_ms
        .saturating_mul(1u64 << attempt.min(32))
        .min(max_ms) as f64;
    let factor: f64 = rand::rng().random_range(0.5..1.0);
    Duration::from_secs_f64(bound * factor / 1e3)
}
