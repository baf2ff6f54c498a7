//! The scenarios, one module each, and what they share: the target, the
//! dialer, the server API client and the server process to watch.
//!
//! Every scenario runs on one thread (a `LocalSet` on a current-thread
//! runtime): the load generator is pinned to one core, and a single
//! thread lets its tasks share counters through `Rc` and `Cell` without
//! atomics. Each returns its table metrics and a JSON object of details.

pub mod failover;
pub mod fanout;
pub mod idle;
pub mod ping;
pub mod room;
pub mod soak;
pub mod storm;
pub mod timers;

use std::time::Instant;

use anyhow::Result;
use futures_util::StreamExt;
use serde_json::Value;

use crate::api::Api;
use crate::net::Dialer;
use crate::report::Metric;
use crate::sys::ServerProcess;
use crate::target::{Client, Target};

/// What a scenario returns: table metrics and details.
pub type Outcome = (Vec<Metric>, Value);

/// Handshakes in flight at once while connecting many clients: enough
/// to connect thousands per second, few enough not to overflow the
/// server's accept backlog.
const CONNECT_CONCURRENCY: usize = 128;

/// A drain ends early after this long without a new delivery.
const DRAIN_QUIET: std::time::Duration = std::time::Duration::from_millis(1000);

/// Waits until `seen()` (deliveries counted so far) reaches `expected`,
/// nothing new arrived for [`DRAIN_QUIET`], or `limit` passed; looks every
/// 10 ms. The scenarios' shared drain after their last message.
pub(crate) async fn wait_for_deliveries(
    expected: u64,
    limit: std::time::Duration,
    seen: impl Fn() -> u64,
) {
    let limit = Instant::now() + limit;
    let mut last = seen();
    let mut progress = Instant::now();
    while last < expected && Instant::now() < limit && progress.elapsed() < DRAIN_QUIET {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        let now = seen();
        if now > last {
            last = now;
            progress = Instant::now();
        }
    }
}

/// What every scenario works with.
pub struct Ctx {
    /// The server under load.
    pub target: Target,
    /// Opens client sockets.
    pub dialer: Dialer,
    /// The server API.
    pub api: Api,
    /// The server process, when its pid was given.
    pub server: Option<ServerProcess>,
}

/// Clients that connected, and how many did not.
pub struct Connected {
    /// The clients, in no particular order.
    pub clients: Vec<Client>,
    /// Connections that failed.
    pub failed: usize,
    /// The first failure, for the details.
    pub first_error: Option<String>,
    /// Connections per second achieved.
    pub per_second: f64,
}

impl Ctx {
    /// Connects every user of `users`, [`CONNECT_CONCURRENCY`] at a time.
    pub async fn connect_many(&self, users: impl Iterator<Item = u64>) -> Connected {
        self.connect_across(std::slice::from_ref(&self.target), users)
            .await
    }

    /// Connects every user of `users`, the i-th to `targets[i % len]`
    /// (nodes of one cluster), [`CONNECT_CONCURRENCY`] at a time.
    pub async fn connect_across(
        &self,
        targets: &[Target],
        users: impl Iterator<Item = u64>,
    ) -> Connected {
        let started = Instant::now();
        let results: Vec<Result<Client>> = futures_util::stream::iter(users.enumerate())
            .map(|(i, user)| Client::connect(&self.dialer, &targets[i % targets.len()], user))
            .buffer_unordered(CONNECT_CONCURRENCY)
            .collect()
            .await;
        let mut connected = Connected {
            clients: Vec::with_capacity(results.len()),
            failed: 0,
            first_error: None,
            per_second: 0.0,
        };
        for result in results {
            match result {
                Ok(client) => connected.clients.push(client),
                Err(e) => {
                    connected.failed += 1;
                    connected
                        .first_error
                        .get_or_insert_with(|| format!("{e:#}"));
                }
            }
        }
        connected.per_second =
            connected.clients.len() as f64 / started.elapsed().as_secs_f64().max(1e-9);
        if let Some(e) = &connected.first_error {
            eprintln!(
                "loadgen: {} connections failed; first: {e}",
                connected.failed
            );
        }
        connected
    }

    /// Enters every user of `users` into `channel` through the server API,
    /// a few calls at a time.
    pub async fn enter_all(&self, users: &[u64], channel: &str) -> Result<()> {
        let results: Vec<Result<()>> = futures_util::stream::iter(users)
            .map(|user| self.api.enter_room(*user, channel))
            .buffer_unordered(16)
            .collect()
            .await;
        results.into_iter().collect()
    }
}
