//! The Chorus load generator: the client side of every benchmark in
//! `BENCHMARKS.md`, against Chorus, the Node.js `ws` peer of `bench/peer`
//! or the bare tokio-tungstenite peer of `bench/bare`, one scenario per
//! run, bounded in count and time.
//!
//! Run with (after `cargo build --release -p chorus -p example-loadgen`
//! and `target/release/chorus serve --dev`):
//!
//! ```sh
//! target/release/loadgen ping --target chorus --addr 127.0.0.1:9999 --clients 1000 --seconds 5
//! ```
//!
//! `scripts/bench` runs every scenario against the servers, pinned to
//! separate cores, and prints the table (`loadgen report`).
//!
//! A run prints progress on stderr and one JSON line on stdout: the
//! scenario's metrics, with the load generator's own CPU use, so that a
//! saturated client shows next to the numbers it limits.

mod api;
mod net;
mod report;
mod scenario;
mod stats;
mod sys;
mod target;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::api::Api;
use crate::net::Dialer;
use crate::report::RunResult;
use crate::scenario::{Ctx, Outcome};
use crate::sys::ServerProcess;
use crate::target::{Target, TargetKind};

/// Benchmark load generator for Chorus and its peers (Node.js `ws`, bare tokio-tungstenite).
#[derive(Parser)]
#[command(about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Memory per idle connection (server RSS delta / connections).
    Idle(Run<scenario::idle::IdleArgs>),
    /// Round trips of signed pings, one in flight per client.
    Ping(Run<scenario::ping::PingArgs>),
    /// Broadcast of `send_gift` to one room: N calls in flight, then a sweep of rates.
    Fanout(Run<scenario::fanout::FanoutArgs>),
    /// Relay failover: a killed member to the first delegate's `exit_room`.
    Failover(Run<scenario::failover::FailoverArgs>),
    /// Every client reconnecting at once after a server restart or a node's
    /// death, and back in its room.
    Storm(Run<scenario::storm::StormArgs>),
    /// An audio room: seat users and listeners under a voice room's chat,
    /// gifts and seat changes.
    Room(Run<scenario::room::RoomArgs>),
    /// Lateness of plugin timers (contract 1.1), end to end.
    Timers(Run<scenario::timers::TimersArgs>),
    /// Mixed realistic load for minutes, the server sampled (`scripts/soak`).
    Soak(Run<scenario::soak::SoakArgs>),
    /// Reads the JSON lines of runs and prints the markdown table.
    Report(ReportArgs),
}

/// A scenario's own arguments and the common ones.
#[derive(Args)]
struct Run<S: Args> {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    scenario: S,
}

/// Arguments of every scenario.
#[derive(Args)]
struct Common {
    /// The server under load.
    #[arg(long, value_enum)]
    target: TargetKind,
    /// Its WebSocket and server-API address (loopback only).
    #[arg(long, default_value = "127.0.0.1:9999")]
    addr: SocketAddr,
    /// Its process id, for memory and CPU readings.
    #[arg(long)]
    server_pid: Option<u32>,
    /// The app secret credentials are minted with.
    #[arg(long, default_value = "chorus-dev-secret")]
    secret: String,
    /// Source addresses to spread sockets over: 127.0.0.1 to 127.0.0.N.
    #[arg(long, default_value_t = 4)]
    sources: u8,
    /// Read buffer of each client socket, in bytes.
    #[arg(long, default_value_t = 16 * 1024)]
    read_buffer: usize,
    /// The whole run stops after this many seconds, finished or not.
    #[arg(long, default_value_t = 600)]
    max_seconds: u64,
}

/// Arguments of `report`.
#[derive(Args)]
struct ReportArgs {
    /// Files of JSON lines written by runs.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Idle(run) => execute("idle", run, scenario::idle::run),
        Command::Ping(run) => execute("ping", run, scenario::ping::run),
        Command::Fanout(run) => execute("fanout", run, scenario::fanout::run),
        Command::Failover(run) => execute("failover", run, scenario::failover::run),
        Command::Storm(run) => execute("storm", run, scenario::storm::run),
        Command::Room(run) => execute("room", run, scenario::room::run),
        Command::Timers(run) => execute("timers", run, scenario::timers::run),
        Command::Soak(run) => execute("soak", run, scenario::soak::run),
        Command::Report(args) => {
            print!("{}", report::render(&args.inputs)?);
            Ok(())
        }
    }
}

/// Runs one scenario on a single-threaded runtime, within
/// `--max-seconds`, and prints its result as one JSON line.
fn execute<S: Args>(
    name: &str,
    run: Run<S>,
    scenario: impl AsyncFn(&Ctx, &S) -> Result<Outcome>,
) -> Result<()> {
    if !run.common.addr.ip().is_loopback() {
        anyhow::bail!("the load generator only targets loopback addresses");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let ctx = context(&run.common)?;
    let limit = Duration::from_secs(run.common.max_seconds);
    let (metrics, details) = local
        .block_on(&runtime, async {
            tokio::time::timeout(limit, scenario(&ctx, &run.scenario)).await
        })
        .with_context(|| format!("{name} did not finish within {limit:?}"))??;
    let result = RunResult {
        target: serde_json::to_value(run.common.target)?
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        scenario: name.to_owned(),
        metrics,
        details,
    };
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}

/// The context of a run from its common arguments.
fn context(common: &Common) -> Result<Ctx> {
    let target = Target {
        kind: common.target,
        addr: common.addr,
        secret: common.secret.clone(),
    };
    Ok(Ctx {
        api: Api::new(&target)?,
        dialer: Dialer::new(common.sources, common.read_buffer),
        server: common.server_pid.map(|pid| ServerProcess { pid }),
        target,
    })
}
