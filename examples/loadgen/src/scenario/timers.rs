//! `timers`: lateness of contract 1.1 plugin timers, end to end. Needs the
//! `echo` fixture in the server's `plugins.dir` with `timers` (and `kv`)
//! granted in `echo.toml` (see BENCHMARKS.md for the setup).
//!
//! One client connects as the user to notify; the server API then sets
//! `--timers` timers (`echo_timer`, each its own key, `--delay-ms` ahead)
//! at `--rate` per second (open loop, at most [`MAX_IN_FLIGHT`] calls
//! outstanding). When one fires, `echo` notifies the client
//! `{"action":"echo_timer","key","due_ms",…}`; its lateness is the client's
//! receipt time minus `due_ms` (the unix ms the store set it due at, on
//! the same machine's clock), so it includes the claim, the plugin call
//! and the delivery. Run it beside `fanout` to measure under load.

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Result, bail};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

use super::{Ctx, Outcome};
use crate::report::{Goal, Metric};
use crate::stats::Summary;
use crate::target::Client;

/// Server API calls outstanding at once at most.
const MAX_IN_FLIGHT: usize = 64;

/// Arguments of `timers`.
#[derive(Debug, clap::Args)]
pub struct TimersArgs {
    /// Timers to set.
    #[arg(long, default_value_t = 2000)]
    pub timers: usize,
    /// Timers set per second.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Delay of each timer, in ms (100 ..= 86400000).
    #[arg(long, default_value_t = 200)]
    pub delay_ms: u64,
    /// The user notified.
    #[arg(long, default_value_t = 5_000_000)]
    pub user: u64,
    /// How long to wait for the last timers after the last was set.
    #[arg(long, default_value_t = 10.0)]
    pub drain_seconds: f64,
}

/// Runs `timers`.
pub async fn run(ctx: &Ctx, args: &TimersArgs) -> Result<Outcome> {
    let client = Client::connect(&ctx.dialer, &ctx.target, args.user).await?;
    let lateness = Rc::new(RefCell::new(Vec::with_capacity(args.timers)));
    let reader = tokio::task::spawn_local(read(client, args.timers, Rc::clone(&lateness)));
    let failed = set_all(ctx, args).await;
    let drain = Duration::from_secs_f64(args.drain_seconds);
    let keys =
        match tokio::time::timeout(drain + Duration::from_millis(args.delay_ms), reader).await {
            Ok(joined) => joined??,
            Err(_) => bail!("timers did not all fire within the drain"),
        };
    let micros: Vec<u32> = lateness.borrow().clone();
    let summary = Summary::of(micros);
    let fired = keys.len();
    eprintln!(
        "loadgen: timers {fired}/{} fired, lateness p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        args.timers,
        summary.p50 / 1000.0,
        summary.p99 / 1000.0,
        summary.max / 1000.0
    );
    let metrics = vec![
        Metric::new(
            "timers.lateness_p50",
            "timer lateness, p50",
            "ms",
            summary.p50 / 1000.0,
        ),
        Metric::new(
            "timers.lateness_p99",
            "timer lateness, p99",
            "ms",
            summary.p99 / 1000.0,
        )
        .goal(Goal::AtMost(50.0)),
    ];
    let details = json!({
        "timers": args.timers, "fired": fired, "set_failed": failed, "rate": args.rate,
        "delay_ms": args.delay_ms, "max_ms": summary.max / 1000.0,
    });
    Ok((metrics, details))
}

/// Sets every timer at the rate; the calls that failed.
async fn set_all(ctx: &Ctx, args: &TimersArgs) -> usize {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let failed = Rc::new(RefCell::new(0usize));
    let started = Instant::now();
    let mut calls = Vec::with_capacity(args.timers);
    for i in 0..args.timers {
        let at = started + Duration::from_secs_f64(i as f64 / args.rate);
        tokio::time::sleep_until(at.into()).await;
        let permit = Arc::clone(&slots)
            .acquire_owned()
            .await
            .expect("never closed");
        let body = json!({"action": "echo_timer", "key": format!("bench-{i}"),
                          "delay_ms": args.delay_ms, "notify": args.user});
        let failed = Rc::clone(&failed);
        let api = ctx.api.clone();
        calls.push(tokio::task::spawn_local(async move {
            let ok = matches!(api.action(&body).await, Ok((200, _)));
            if !ok {
                *failed.borrow_mut() += 1;
            }
            drop(permit);
        }));
    }
    for call in calls {
        let _ = call.await;
    }
    *failed.borrow()
}

/// Reads `echo_timer` frames until `expected` distinct keys arrived;
/// records each one's lateness in µs.
async fn read(
    mut client: Client,
    expected: usize,
    lateness: Rc<RefCell<Vec<u32>>>,
) -> Result<HashSet<String>> {
    let mut keys = HashSet::new();
    while keys.len() < expected {
        let Some(message) = client.ws.next().await else {
            bail!("the socket ended");
        };
        let Message::Text(text) = message? else {
            continue;
        };
        let now_us = SystemTime::now().duration_since(UNIX_EPOCH)?.as_micros() as u64;
        let frame: Value = serde_json::from_str(&text)?;
        if frame["action"] != "echo_timer" {
            continue;
        }
        let due_us = frame["due_ms"].as_u64().unwrap_or_default() * 1000;
        let late = u32::try_from(now_us.saturating_sub(due_us)).unwrap_or(u32::MAX);
        if keys.insert(frame["key"].as_str().unwrap_or_default().to_string()) {
            lateness.borrow_mut().push(late);
        }
    }
    Ok(keys)
}
