//! `idle`: memory per idle connection. Opens connections in steps (10,000
//! then 19,000 by default) and reads the server's resident set size after
//! each step: `(RSS now - RSS before the first connection) / connections`.
//!
//! The connections send nothing after `connected`; the bench script gives
//! Chorus a long `heartbeat.ping_timeout` so that they stay open.

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;

use super::{Ctx, Outcome};
use crate::report::{Goal, Metric};
use crate::target::Client;

/// Arguments of `idle`.
#[derive(Debug, clap::Args)]
pub struct IdleArgs {
    /// Connection counts to measure at, ascending; each step adds to the
    /// previous one.
    #[arg(long, value_delimiter = ',', default_value = "10000,19000")]
    pub conns: Vec<usize>,
    /// Pause before each RSS reading, so the server finishes its work.
    #[arg(long, default_value_t = 2000)]
    pub settle_ms: u64,
    /// The first user id.
    #[arg(long, default_value_t = 1_000_000)]
    pub user_base: u64,
}

/// Runs `idle`.
pub async fn run(ctx: &Ctx, args: &IdleArgs) -> Result<Outcome> {
    let server = ctx.server.context("idle needs --server-pid")?;
    let settle = Duration::from_millis(args.settle_ms);
    tokio::time::sleep(settle).await;
    let baseline = server.rss_kib()?;
    let mut steps = args.conns.clone();
    steps.sort_unstable();
    let mut clients: Vec<Client> = Vec::new();
    let mut metrics = Vec::new();
    let mut details = Vec::new();
    for n in steps {
        let from = args.user_base + clients.len() as u64;
        let to = args.user_base + n as u64;
        let connected = ctx.connect_many(from..to).await;
        clients.extend(connected.clients);
        tokio::time::sleep(settle).await;
        let rss = server.rss_kib()?;
        let open = clients.len().max(1);
        let per_conn = rss.saturating_sub(baseline) as f64 / open as f64;
        eprintln!("loadgen: idle {open} open, RSS {rss} KiB, {per_conn:.2} KiB per connection");
        metrics.push(
            Metric::new(
                format!("idle.{n}.kib_per_conn"),
                format!("idle memory per connection at {n}"),
                "KiB",
                per_conn,
            )
            .goal(Goal::RatioAtMost(0.9)),
        );
        metrics.push(Metric::new(
            format!("idle.{n}.connect_per_s"),
            format!("connections opened per second, up to {n}"),
            "conn/s",
            connected.per_second,
        ));
        details.push(json!({
            "conns": n, "open": clients.len(), "failed": connected.failed,
            "first_error": connected.first_error, "rss_kib": rss, "baseline_kib": baseline,
        }));
    }
    Ok((metrics, json!({ "steps": details })))
}
