//! `failover` (Chorus only): how fast a killed client's room learns it
//! left, in relay mode. Rooms of 50 members whose clients act as
//! delegates (they report every relayed frame, PROTOCOL section 6); one
//! member at a time is killed (its socket reset, as when the app is
//! killed) and the time until the first delegate receives the relayed
//! `exit_room` about it is measured. The killed user then reconnects and
//! re-enters, so rooms stay at 50.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use super::{Ctx, Outcome};
use crate::report::{Goal, Metric};
use crate::stats::{Summary, micros};
use crate::target::{Client, TargetKind};

/// How long to wait for the `exit_room` of one kill.
const KILL_TIMEOUT: Duration = Duration::from_secs(3);

/// Arguments of `failover`.
#[derive(Debug, clap::Args)]
pub struct FailoverArgs {
    /// Rooms; kills go round robin over them.
    #[arg(long, default_value_t = 4)]
    pub rooms: usize,
    /// Members per room.
    #[arg(long, default_value_t = 50)]
    pub members: usize,
    /// Kills to time.
    #[arg(long, default_value_t = 200)]
    pub kills: usize,
    /// Pause after each kill's re-entry, in milliseconds.
    #[arg(long, default_value_t = 10)]
    pub gap_ms: u64,
    /// The first user id.
    #[arg(long, default_value_t = 4_000_000)]
    pub user_base: u64,
}

/// A delegate received the relayed `exit_room` about `user` at `at`.
struct ExitSeen {
    user: u64,
    at: Instant,
}

/// The rooms and the task of every connected member.
struct Rooms {
    /// Channel name and member user ids of each room.
    rooms: Vec<(String, Vec<u64>)>,
    /// Each member's task, which owns its socket.
    tasks: HashMap<u64, JoinHandle<()>>,
    /// Where member tasks report the `exit_room` frames they see.
    seen: mpsc::UnboundedSender<ExitSeen>,
}

/// Runs `failover`.
pub async fn run(ctx: &Ctx, args: &FailoverArgs) -> Result<Outcome> {
    if ctx.target.kind != TargetKind::Chorus {
        bail!("failover measures Chorus's relay; the peer has none");
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut rooms = Rooms {
        rooms: Vec::new(),
        tasks: HashMap::new(),
        seen: tx,
    };
    let tag = rand::random::<u32>();
    for r in 0..args.rooms {
        let first = args.user_base + (r * args.members) as u64;
        let users: Vec<u64> = (first..first + args.members as u64).collect();
        let channel = format!("bench_failover_{tag}_{r}");
        ctx.enter_all(&users, &channel).await?;
        rooms.rooms.push((channel, users));
    }
    let all: Vec<u64> = rooms.rooms.iter().flat_map(|(_, u)| u.clone()).collect();
    let connected = ctx.connect_many(all.into_iter()).await;
    if connected.failed > 0 {
        bail!(
            "{} members did not connect: {:?}",
            connected.failed,
            connected.first_error
        );
    }
    for client in connected.clients {
        rooms.spawn_member(client);
    }
    let mut times = Vec::with_capacity(args.kills);
    let mut timeouts = 0;
    for k in 0..args.kills {
        match kill_one(ctx, &mut rooms, &mut rx, k % args.rooms).await? {
            Some(latency) => times.push(micros(latency)),
            None => timeouts += 1,
        }
        tokio::time::sleep(Duration::from_millis(args.gap_ms)).await;
    }
    for task in rooms.tasks.values() {
        task.abort();
    }
    Ok(summarize(args, Summary::of(times), timeouts))
}

impl Rooms {
    /// Starts the task of a connected member.
    fn spawn_member(&mut self, client: Client) {
        let user = client.user_id;
        let task = tokio::task::spawn_local(delegate(client, self.seen.clone()));
        self.tasks.insert(user, task);
    }
}

/// Kills a random member of room `room`, times the first relayed
/// `exit_room` about it, then reconnects and re-enters it.
async fn kill_one(
    ctx: &Ctx,
    rooms: &mut Rooms,
    seen: &mut mpsc::UnboundedReceiver<ExitSeen>,
    room: usize,
) -> Result<Option<Duration>> {
    let (channel, users) = &rooms.rooms[room];
    let (channel, user) = (
        channel.clone(),
        users[rand::rng().random_range(0..users.len())],
    );
    while seen.try_recv().is_ok() {}
    let task = rooms
        .tasks
        .remove(&user)
        .context("every member has a task")?;
    let killed_at = Instant::now();
    // Aborting drops the socket, which SO_LINGER 0 turns into a reset.
    task.abort();
    let latency = first_exit_of(seen, user, killed_at).await;
    let client = Client::connect(&ctx.dialer, &ctx.target, user).await?;
    rooms.spawn_member(client);
    ctx.api.enter_room(user, &channel).await?;
    Ok(latency)
}

/// Waits for a delegate to see `exit_room` about `user`.
async fn first_exit_of(
    seen: &mut mpsc::UnboundedReceiver<ExitSeen>,
    user: u64,
    killed_at: Instant,
) -> Option<Duration> {
    let deadline = killed_at + KILL_TIMEOUT;
    loop {
        let event = tokio::time::timeout_at(deadline.into(), seen.recv())
            .await
            .ok()??;
        if event.user == user && event.at >= killed_at {
            return Some(event.at - killed_at);
        }
    }
}

/// A member's task: reports every relayed frame, as a delegate does, and
/// tells the run about every relayed `exit_room`.
async fn delegate(mut client: Client, seen: mpsc::UnboundedSender<ExitSeen>) {
    while let Some(Ok(message)) = client.ws.next().await {
        let Message::Text(text) = message else {
            continue;
        };
        let at = Instant::now();
        let Ok(frame) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        if frame["action"] == "exit_room"
            && frame["relay"] == true
            && let Some(user) = frame["user_id"].as_u64()
        {
            let _ = seen.send(ExitSeen { user, at });
        }
        if let Some(report) = client.report_for(&frame)
            && client.send(report).await.is_err()
        {
            break;
        }
    }
}

/// The metrics and details of all kills.
fn summarize(args: &FailoverArgs, times: Summary, timeouts: usize) -> Outcome {
    let m = args.members;
    let metrics = vec![
        Metric::new(
            format!("failover.{m}.p50_ms"),
            format!("relay failover, rooms of {m}: kill to first delegate's exit_room, p50"),
            "ms",
            times.p50 / 1000.0,
        ),
        Metric::new(
            format!("failover.{m}.p99_ms"),
            format!("relay failover, rooms of {m}: kill to first delegate's exit_room, p99"),
            "ms",
            times.p99 / 1000.0,
        )
        .goal(Goal::AtMost(50.0)),
        Metric::new(
            format!("failover.{m}.max_ms"),
            format!("relay failover, rooms of {m}: kill to first delegate's exit_room, max"),
            "ms",
            times.max / 1000.0,
        ),
        Metric::new(
            format!("failover.{m}.timeouts"),
            format!("relay failover, rooms of {m}: kills without exit_room within 3 s"),
            "kills",
            timeouts as f64,
        ),
    ];
    let details = json!({
        "rooms": args.rooms, "members": m, "kills": args.kills, "timed": times.count,
        "timeouts": timeouts, "max_ms": times.max / 1000.0,
    });
    (metrics, details)
}
