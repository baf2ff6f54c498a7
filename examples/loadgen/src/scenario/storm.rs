//! `storm`: every client reconnecting at once after a server restart or
//! a node's death, and getting back into its room.
//!
//! With `--room-sizes`, the clients are first spread over rooms of those
//! sizes in turn (entered through the server API before they connect, as
//! in `fanout`). Then `--conns` clients connect, the load generator writes
//! `--ready-file` and waits: the bench script restarts the server
//! (SIGTERM, then a fresh process on the same port) or, with `--addr2`,
//! SIGKILLs the node at `--addr2`. Each client that loses its socket
//! reconnects the way the SDK does (`clients/js/src/backoff.ts`: attempt k
//! waits `min(max, initial * 2^k)` times a random factor in [0.5, 1),
//! "equal jitter"), with a fresh signed query, until it reads `connected`
//! again. With two nodes, each attempt first asks for an endpoint
//! (`GET /iapi/websocket/end_point`, PROTOCOL section 3), as the SDK does,
//! at its own node and then at the other (an SDK given two base
//! addresses), and connects where the answer says.
//!
//! Back in its room: when `connected` names the client's room (a node
//! that died leaves its users' presence to its lease, so a client back on
//! a survivor within `store.lease_ttl` keeps its room), or else when the
//! app backend's `enter_room` for it (the server API, as the app would do
//! on seeing `current_room_id` empty) answers 200. A resume (`resume_*`)
//! would not put it back: it replays what was missed in a room the user
//! is still in, and no notification flows during the storm. Until the run
//! ends every client's socket is read (the re-entries' `enter_room`
//! broadcasts reach the members already back), and a socket that ends
//! then is counted as dropped. After `--check-after-seconds` from the
//! first loss, Chorus's room membership is read back through the server
//! API and compared with the rooms the clients were given.
//!
//! Measured, from the first loss the load generator saw: the time until
//! 99% and 100% of the clients that lost their socket were reconnected,
//! and back in their rooms; the latency of each successful attempt, from
//! its TCP connect (or its endpoint request) to its `connected` frame;
//! failed attempts by cause (a refused connection while the server is
//! down is expected; anything else is an error).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use rand::Rng;
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use super::{Ctx, Outcome};
use crate::net::Ws;
use crate::report::{Goal, Metric};
use crate::stats::Summary;
use crate::target::{Client, Target, TargetKind};

/// Arguments of `storm`.
#[derive(Debug, clap::Args)]
pub struct StormArgs {
    /// Connections that reconnect together.
    #[arg(long, default_value_t = 19_000)]
    pub conns: usize,
    /// Written (empty) once every connection is open: the signal to
    /// restart the server, or kill the node at `--addr2`.
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
    /// Sizes of the rooms the clients are spread over, used in turn
    /// (`50,100,150,200`); none: the clients are in no room.
    #[arg(long, value_delimiter = ',')]
    pub room_sizes: Vec<usize>,
    /// A second node of the same cluster (loopback, Chorus only): clients
    /// connect to `--addr` and `--addr2` in turn, and the bench kills the
    /// node at `--addr2`; its clients find a live node by endpoint
    /// discovery. Server API calls go to `--addr`.
    #[arg(long)]
    pub addr2: Option<SocketAddr>,
    /// Room membership is read back (Chorus only) no earlier than this many
    /// seconds after the first loss: with `--addr2`, past the dead node's
    /// `store.lease_ttl` and its cleanup.
    #[arg(long, default_value_t = 0)]
    pub check_after_seconds: u64,
    /// Re-entries (`enter_room` calls of the app backend) in flight at
    /// once at most: the backend's connection pool.
    #[arg(long, default_value_t = 64)]
    pub api_in_flight: usize,
}

/// One client's way back.
#[derive(Default)]
struct Trip {
    /// When its socket ended; `None` if it never did (a client of the
    /// surviving node).
    lost: Option<Instant>,
    /// When it read `connected` again; `None` if it gave up.
    back: Option<Instant>,
    /// When it was back in its room (or back, when it has none).
    in_room: Option<Instant>,
    /// `connected` named its room: nothing to re-enter.
    kept_room: bool,
    /// The successful attempt, endpoint request or connect to `connected`.
    latency: Duration,
    /// The `enter_room` call that put it back, when one did.
    enter_latency: Option<Duration>,
    /// Failed attempts (connect, discovery or re-entry) by cause.
    failures: BTreeMap<String, u32>,
    /// The first failure, in full.
    first_error: Option<String>,
    /// Endpoint answers that named the killed node.
    discovered_dead: u32,
}

/// What every client's task shares.
struct Shared {
    /// Set when the run has measured what it needs: sockets that end
    /// after it are not counted.
    done: Cell<bool>,
    /// Sockets that ended after their client was back (or, with two
    /// nodes, of the surviving node's clients, which should never end).
    dropped: Cell<usize>,
    /// The readers of every live socket, aborted at the end.
    readers: RefCell<Vec<JoinHandle<()>>>,
}

/// How clients reconnect: the nodes and the SDK's back-off.
struct Plan<'a> {
    /// The run's context (the first node, the dialer, the server API).
    ctx: &'a Ctx,
    /// The back-off and the give-up time.
    args: &'a StormArgs,
    /// The killed node, with two nodes.
    killed: Option<SocketAddr>,
    /// Asks for endpoints.
    http: reqwest::Client,
    /// Bounds the re-entries in flight (`--api-in-flight`).
    api_slots: tokio::sync::Semaphore,
}

/// Runs `storm`.
pub async fn run(ctx: &Ctx, args: &StormArgs) -> Result<Outcome> {
    let n = args.conns;
    let users: Vec<u64> = (0..n as u64).map(|i| args.user_base + i).collect();
    let rooms = assign_rooms(n, &args.room_sizes);
    let tag = rand::random::<u32>();
    let channel_of = |room: usize| format!("storm_{tag}_{room}");
    let room_count = rooms.iter().flatten().max().map_or(0, |r| r + 1);
    let entered = Instant::now();
    for room in 0..room_count {
        let members: Vec<u64> = users
            .iter()
            .zip(&rooms)
            .filter(|(_, r)| **r == Some(room))
            .map(|(u, _)| *u)
            .collect();
        ctx.enter_all(&members, &channel_of(room)).await?;
    }
    if room_count > 0 {
        eprintln!(
            "loadgen: storm: {n} users entered {room_count} rooms in {:.1} s",
            entered.elapsed().as_secs_f64()
        );
    }
    let mut nodes = vec![ctx.target.clone()];
    if let Some(addr) = args.addr2 {
        if !addr.ip().is_loopback() || ctx.target.kind != TargetKind::Chorus {
            bail!("--addr2 is a second Chorus node on loopback");
        }
        nodes.push(Target {
            addr,
            ..ctx.target.clone()
        });
    }
    let connected = ctx.connect_across(&nodes, users.iter().copied()).await;
    if connected.failed > 0 {
        bail!(
            "{} of {n} clients did not connect before the restart",
            connected.failed
        );
    }
    std::fs::write(&args.ready_file, b"")
        .with_context(|| format!("write {}", args.ready_file.display()))?;
    eprintln!(
        "loadgen: storm {n} connected to {} node(s); waiting for the {}",
        nodes.len(),
        if args.addr2.is_some() {
            "kill"
        } else {
            "restart"
        }
    );
    let plan = Plan {
        ctx,
        args,
        killed: args.addr2,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(64)
            .build()?,
        api_slots: tokio::sync::Semaphore::new(args.api_in_flight.max(1)),
    };
    let shared = Rc::new(Shared {
        done: Cell::new(false),
        dropped: Cell::new(0),
        readers: RefCell::default(),
    });
    let index: BTreeMap<u64, usize> = users.iter().enumerate().map(|(i, u)| (*u, i)).collect();
    let mut trips = Vec::with_capacity(n);
    let mut riders = FuturesUnordered::new();
    for client in connected.clients {
        let room = rooms[index[&client.user_id]].map(channel_of);
        // With two nodes, only the killed node's clients lose their socket.
        let on_killed = args
            .addr2
            .is_some_and(|_| index[&client.user_id] % nodes.len() == 1);
        if args.addr2.is_none() || on_killed {
            riders.push(ride(&plan, client, room, shared.clone()));
        } else {
            read_until_done(client.ws, shared.clone());
            trips.push(Trip::default());
        }
    }
    while let Some(trip) = riders.next().await {
        trips.push(trip);
    }
    let first_lost = trips
        .iter()
        .filter_map(|t| t.lost)
        .min()
        .context("no client lost its socket")?;
    let check_at = first_lost + Duration::from_secs(args.check_after_seconds);
    tokio::time::sleep_until(check_at.into()).await;
    let membership = if ctx.target.kind == TargetKind::Chorus && room_count > 0 {
        check_rooms(ctx, &users, &rooms, room_count, &channel_of).await
    } else {
        None
    };
    shared.done.set(true);
    for reader in shared.readers.borrow_mut().drain(..) {
        reader.abort();
    }
    Ok(summarize(
        args, &trips, first_lost, &shared, membership, room_count,
    ))
}

/// The room (an index) of each of `n` clients: the first `sizes[0]`
/// clients fill room 0, the next `sizes[1]` room 1, and so on through
/// `sizes` again and again; the last room may be smaller. No sizes (or a
/// size of 0): no rooms.
pub fn assign_rooms(n: usize, sizes: &[usize]) -> Vec<Option<usize>> {
    if sizes.is_empty() || sizes.contains(&0) {
        return vec![None; n];
    }
    let mut rooms = Vec::with_capacity(n);
    let mut room = 0;
    while rooms.len() < n {
        let size = sizes[room % sizes.len()].min(n - rooms.len());
        rooms.extend(std::iter::repeat_n(Some(room), size));
        room += 1;
    }
    rooms
}

/// Reads `ws` until the run ends; a socket that ends before is dropped.
fn read_until_done(mut ws: Ws, shared: Rc<Shared>) {
    let task_shared = shared.clone();
    let reader = tokio::task::spawn_local(async move {
        while let Some(Ok(message)) = ws.next().await {
            if let Message::Close(_) = message {
                break;
            }
        }
        if !task_shared.done.get() {
            task_shared.dropped.set(task_shared.dropped.get() + 1);
        }
    });
    shared.readers.borrow_mut().push(reader);
}

/// Waits for `client`'s socket to end, then reconnects it with the SDK's
/// back-off until it is back and in `room`, or gives up.
async fn ride(
    plan: &Plan<'_>,
    mut client: Client,
    room: Option<String>,
    shared: Rc<Shared>,
) -> Trip {
    loop {
        match client.ws.next().await {
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
            Some(Ok(_)) => continue,
        }
    }
    let lost = Instant::now();
    let user_id = client.user_id;
    drop(client);
    let args = plan.args;
    let give_up = lost + Duration::from_secs(args.give_up_seconds);
    let mut trip = Trip {
        lost: Some(lost),
        ..Trip::default()
    };
    let mut attempt = 0u32;
    while Instant::now() < give_up {
        tokio::time::sleep(backoff(attempt, args.initial_ms, args.max_ms)).await;
        attempt += 1;
        let started = Instant::now();
        match reconnect(plan, user_id, &mut trip).await {
            Ok(client) => {
                trip.back = Some(Instant::now());
                trip.latency = started.elapsed();
                let kept = room.as_ref().is_none_or(|r| *r == client.channel_name);
                read_until_done(client.ws, shared.clone());
                if kept {
                    trip.kept_room = room.is_some();
                    trip.in_room = trip.back;
                    return trip;
                }
                break;
            }
            Err(e) => fail(&mut trip, &e),
        }
    }
    let Some(room) = room.filter(|_| trip.back.is_some()) else {
        return trip;
    };
    // Back but out of its room: the app backend enters it again, retrying
    // with the same back-off.
    let mut attempt = 0u32;
    while Instant::now() < give_up {
        let Ok(slot) = plan.api_slots.acquire().await else {
            break;
        };
        let started = Instant::now();
        let entered = plan.ctx.api.enter_room(user_id, &room).await;
        drop(slot);
        match entered {
            Ok(()) => {
                trip.in_room = Some(Instant::now());
                trip.enter_latency = Some(started.elapsed());
                break;
            }
            Err(e) => fail(&mut trip, &e.context("enter_room")),
        }
        tokio::time::sleep(backoff(attempt, args.initial_ms, args.max_ms)).await;
        attempt += 1;
    }
    trip
}

/// One attempt to reconnect `user_id`: straight to the server, or, with
/// two nodes, where endpoint discovery says (asking the client's own node
/// first, then the other).
async fn reconnect(plan: &Plan<'_>, user_id: u64, trip: &mut Trip) -> Result<Client> {
    let ctx = plan.ctx;
    let Some(killed) = plan.killed else {
        return Client::connect(&ctx.dialer, &ctx.target, user_id).await;
    };
    let home = Target {
        addr: killed,
        ..ctx.target.clone()
    };
    let addr = match home.discover(&plan.http, user_id).await {
        Ok(addr) => addr,
        Err(e) => {
            // Not a failed attempt yet: the SDK's second address.
            *trip
                .failures
                .entry(format!(
                    "discovery at its own node: {}",
                    cause(&format!("{e:#}"))
                ))
                .or_default() += 1;
            ctx.target
                .discover(&plan.http, user_id)
                .await
                .context("discovery at the other node")?
        }
    };
    if addr == killed {
        trip.discovered_dead += 1;
    }
    let target = Target {
        addr,
        ..ctx.target.clone()
    };
    Client::connect(&ctx.dialer, &target, user_id)
        .await
        .context(if addr == killed {
            "connect to the node end_point named (the killed one)"
        } else {
            "connect"
        })
}

/// Records a failed attempt.
fn fail(trip: &mut Trip, error: &anyhow::Error) {
    let text = format!("{error:#}");
    let what = text.split(':').next().unwrap_or_default().trim();
    let what = if what.starts_with("user ") {
        "connect"
    } else {
        what
    };
    *trip
        .failures
        .entry(format!("{what}: {}", cause(&text)))
        .or_default() += 1;
    trip.first_error.get_or_insert(text);
}

/// The short cause of a failure, from its message: `refused` (nothing
/// listening: the server is down), `timeout`, `HTTP <status>`, `closed`
/// (the socket ended before `connected`), `reset`, or `other`.
pub fn cause(message: &str) -> String {
    if message.contains("Connection refused") || message.contains("connection refused") {
        return "refused".into();
    }
    if message.contains("timed out") || message.contains("timeout") {
        return "timeout".into();
    }
    let status_after = |marker: &str| {
        let at = message.find(marker)? + marker.len();
        let digits = message.as_bytes().get(at..at + 3)?;
        digits
            .iter()
            .all(u8::is_ascii_digit)
            .then(|| format!("HTTP {}", String::from_utf8_lossy(digits)))
    };
    if let Some(status) = status_after("HTTP error: ").or_else(|| status_after("HTTP ")) {
        return status;
    }
    if message.contains("before `connected`") {
        return "closed".into();
    }
    if message.contains("reset") {
        return "reset".into();
    }
    "other".into()
}

/// Reads every room's members back and counts, over all rooms, the
/// clients missing from their room and the users in a room that is not
/// theirs; `None` when a read failed.
async fn check_rooms(
    ctx: &Ctx,
    users: &[u64],
    rooms: &[Option<usize>],
    room_count: usize,
    channel_of: &impl Fn(usize) -> String,
) -> Option<(usize, usize)> {
    let mut expected: Vec<std::collections::BTreeSet<u64>> = vec![Default::default(); room_count];
    for (user, room) in users.iter().zip(rooms) {
        if let Some(room) = room {
            expected[*room].insert(*user);
        }
    }
    let (mut missing, mut extra) = (0, 0);
    for (room, want) in expected.iter().enumerate() {
        let members = match ctx.api.room_members(&channel_of(room)).await {
            Ok(members) => members,
            Err(e) => {
                eprintln!("loadgen: storm: membership check failed: {e:#}");
                return None;
            }
        };
        let have: std::collections::BTreeSet<u64> = members.into_iter().collect();
        let gone: Vec<&u64> = want.difference(&have).collect();
        if !gone.is_empty() {
            // Named in the log, to be looked up in the server's.
            eprintln!(
                "loadgen: storm: missing from {}: {gone:?}",
                channel_of(room)
            );
        }
        missing += gone.len();
        extra += have.difference(want).count();
    }
    Some((missing, extra))
}

/// The time from `zero` until `fraction` of `total` clients had reached
/// a point, given when each that reached it did (`None` when too few
/// did), in ms.
pub fn time_to_fraction(
    zero: Instant,
    reached: &[Instant],
    total: usize,
    fraction: f64,
) -> Option<f64> {
    let needed = ((total as f64 * fraction).ceil() as usize).max(1);
    if reached.len() < needed {
        return None;
    }
    let mut after: Vec<Duration> = reached
        .iter()
        .map(|t| t.saturating_duration_since(zero))
        .collect();
    after.sort_unstable();
    Some(after[needed - 1].as_secs_f64() * 1e3)
}

/// The metrics and details of the storm.
fn summarize(
    args: &StormArgs,
    trips: &[Trip],
    first_lost: Instant,
    shared: &Shared,
    membership: Option<(usize, usize)>,
    room_count: usize,
) -> Outcome {
    let n = args.conns;
    // The plain reconnect and the one into rooms are rows of their own.
    let (key, what) = match (args.addr2.is_some(), room_count > 0) {
        (true, _) => (format!("storm2.{n}"), format!("node kill under {n}")),
        (false, false) => (format!("storm.{n}"), format!("reconnect storm of {n}")),
        (false, true) => (
            format!("storm.{n}.rooms"),
            format!("reconnect storm of {n} in rooms"),
        ),
    };
    let riders: Vec<&Trip> = trips.iter().filter(|t| t.lost.is_some()).collect();
    let lost = riders.len();
    let backs: Vec<Instant> = riders.iter().filter_map(|t| t.back).collect();
    let in_room: Vec<Instant> = riders.iter().filter_map(|t| t.in_room).collect();
    let never_back = lost - backs.len();
    let never_in_room = lost - in_room.len();
    let last_lost = riders
        .iter()
        .filter_map(|t| t.lost)
        .max()
        .unwrap_or(first_lost);
    let latencies = Summary::of(
        riders
            .iter()
            .filter(|t| t.back.is_some())
            .map(|t| crate::stats::micros(t.latency))
            .collect(),
    );
    let enters = Summary::of(
        riders
            .iter()
            .filter_map(|t| t.enter_latency)
            .map(crate::stats::micros)
            .collect(),
    );
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    for (cause, count) in riders.iter().flat_map(|t| &t.failures) {
        *failures.entry(cause.clone()).or_default() += u64::from(*count);
    }
    let failed_attempts: u64 = failures.values().sum();
    // A refused connection while the server is down is the expected way
    // to wait for it; anything else is an error.
    let errors: u64 = failures
        .iter()
        .filter(|(cause, _)| !cause.ends_with(": refused"))
        .map(|(_, count)| count)
        .sum();
    let first_error = riders.iter().find_map(|t| t.first_error.clone());
    let to = |reached: &[Instant], fraction| time_to_fraction(first_lost, reached, lost, fraction);
    let (back_99, back_100) = (to(&backs, 0.99), to(&backs, 1.0));
    let (room_99, room_100) = (to(&in_room, 0.99), to(&in_room, 1.0));
    let first_back = backs.iter().min();
    let all_back_ms = match (first_back, backs.iter().max()) {
        (Some(first), Some(last)) if never_back == 0 => {
            Some(last.duration_since(*first).as_secs_f64() * 1e3)
        }
        _ => None,
    };
    let kept_room = riders.iter().filter(|t| t.kept_room).count();
    let discovered_dead: u64 = riders.iter().map(|t| u64::from(t.discovered_dead)).sum();
    let dropped = shared.dropped.get();
    eprintln!(
        "loadgen: storm {n}: {lost} lost; 99%/100% back {back_99:?}/{back_100:?} ms, in their \
         rooms {room_99:?}/{room_100:?} ms after the first loss; connect p99 {:.1} ms; \
         {failed_attempts} failed attempts ({errors} errors: {failures:?}); {never_back} never \
         back; {dropped} dropped after; membership (missing, extra) {membership:?}",
        latencies.p99 / 1e3
    );
    let mut metrics = Vec::new();
    let mut push =
        |suffix: &str, label: &str, unit: &str, value: Option<f64>, goal: Option<Goal>| {
            if let Some(value) = value {
                let m = Metric::new(
                    format!("{key}.{suffix}"),
                    format!("{what}: {label}"),
                    unit,
                    value,
                );
                metrics.push(match goal {
                    Some(goal) => m.goal(goal),
                    None => m,
                });
            }
        };
    let at_most_node = Some(Goal::RatioAtMost(1.0));
    push(
        "back_99_ms",
        "99% reconnected, after the first loss",
        "ms",
        back_99,
        None,
    );
    push(
        "back_100_ms",
        "100% reconnected, after the first loss",
        "ms",
        back_100,
        at_most_node,
    );
    if room_count > 0 {
        push(
            "room_99_ms",
            "99% back in their rooms, after the first loss",
            "ms",
            room_99,
            None,
        );
        push(
            "room_100_ms",
            "100% back in their rooms, after the first loss",
            "ms",
            room_100,
            None,
        );
        let enter_p99 = (enters.count > 0).then_some(enters.p99 / 1e3);
        push(
            "enter_p99_ms",
            "re-entry (enter_room call) p99",
            "ms",
            enter_p99,
            None,
        );
    }
    push(
        "all_back_ms",
        "first back to last back",
        "ms",
        all_back_ms,
        at_most_node,
    );
    push(
        "connect_p50_ms",
        "connect p50",
        "ms",
        Some(latencies.p50 / 1e3),
        None,
    );
    push(
        "connect_p99_ms",
        "connect p99",
        "ms",
        Some(latencies.p99 / 1e3),
        at_most_node,
    );
    push(
        "errors",
        "errors (failed attempts other than refused)",
        "count",
        Some(errors as f64),
        None,
    );
    push(
        "never_back",
        "clients never back in their rooms",
        "count",
        Some(never_in_room as f64),
        None,
    );
    let details = json!({
        "conns": n, "lost": lost, "rooms": room_count, "room_sizes": args.room_sizes,
        "two_nodes": args.addr2.is_some(),
        "lost_spread_ms": last_lost.duration_since(first_lost).as_secs_f64() * 1e3,
        "back_99_ms": back_99, "back_100_ms": back_100,
        "in_room_99_ms": room_99, "in_room_100_ms": room_100,
        "all_back_ms": all_back_ms,
        "kept_room": kept_room, "reentered": riders.iter().filter(|t| t.enter_latency.is_some()).count(),
        "enter_p50_ms": enters.p50 / 1e3, "enter_p99_ms": enters.p99 / 1e3,
        "connect_p50_ms": latencies.p50 / 1e3, "connect_p99_ms": latencies.p99 / 1e3,
        "connect_max_ms": latencies.max / 1e3,
        "failed_attempts": failed_attempts, "errors": errors, "failures": failures,
        "first_error": first_error, "never_back": never_back, "never_in_room": never_in_room,
        "dropped_after_back": dropped, "end_point_named_killed_node": discovered_dead,
        "membership_missing": membership.map(|m| m.0), "membership_extra": membership.map(|m| m.1),
        "backoff": {"initial_ms": args.initial_ms, "max_ms": args.max_ms},
    });
    (metrics, details)
}

/// The SDK's delay before attempt `attempt` (0 for the first).
fn backoff(attempt: u32, initial_ms: u64, max_ms: u64) -> Duration {
    let factor: f64 = rand::rng().random_range(0.5..1.0);
    jittered(backoff_bound(attempt, initial_ms, max_ms), factor)
}

/// The bound of the delay before attempt `attempt`, ms: `min(max_ms,
/// initial_ms * 2^attempt)` (`backoffDelay` in `clients/js/src/backoff.ts`).
pub fn backoff_bound(attempt: u32, initial_ms: u64, max_ms: u64) -> u64 {
    initial_ms
        .saturating_mul(1u64 << attempt.min(62))
        .min(max_ms)
}

/// `bound_ms` times `factor` (in [0.5, 1): the SDK's "equal jitter").
pub fn jittered(bound_ms: u64, factor: f64) -> Duration {
    Duration::from_secs_f64(bound_ms as f64 * factor.clamp(0.5, 1.0) / 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_like_the_sdk() {
        // backoff.ts: min(30 000, 500 * 2^attempt), then [bound/2, bound).
        let bounds: Vec<u64> = (0..8).map(|k| backoff_bound(k, 500, 30_000)).collect();
        assert_eq!(
            bounds,
            [500, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000]
        );
        assert_eq!(backoff_bound(200, 500, 30_000), 30_000);
        assert_eq!(jittered(500, 0.5), Duration::from_millis(250));
        assert_eq!(jittered(1000, 0.75), Duration::from_millis(750));
        assert_eq!(jittered(1000, 0.1), Duration::from_millis(500));
        for _ in 0..1000 {
            let d = backoff(1, 500, 30_000);
            assert!(d >= Duration::from_millis(500) && d < Duration::from_millis(1000));
        }
    }

    #[test]
    fn fills_rooms_of_the_sizes_in_turn() {
        let rooms = assign_rooms(10, &[2, 3]);
        let want = [0, 0, 1, 1, 1, 2, 2, 3, 3, 3].map(Some);
        assert_eq!(rooms, want);
        assert_eq!(assign_rooms(4, &[3]), [0, 0, 0, 1].map(Some));
        assert_eq!(assign_rooms(3, &[]), [None; 3]);
        assert_eq!(assign_rooms(2, &[0]), [None; 2]);
        assert!(assign_rooms(0, &[5]).is_empty());
    }

    #[test]
    fn times_the_share_of_clients_back() {
        let zero = Instant::now();
        let at = |ms: u64| zero + Duration::from_millis(ms);
        let reached: Vec<Instant> = (1..=100).rev().map(|k| at(k * 10)).collect();
        assert_eq!(time_to_fraction(zero, &reached, 100, 0.99), Some(990.0));
        assert_eq!(time_to_fraction(zero, &reached, 100, 1.0), Some(1000.0));
        assert_eq!(time_to_fraction(zero, &reached, 100, 0.5), Some(500.0));
        // Two of 101 never came back: 99% (100 clients) was never reached.
        assert_eq!(time_to_fraction(zero, &reached[..99], 101, 0.99), None);
        assert_eq!(time_to_fraction(zero, &[], 0, 1.0), None);
    }

    #[test]
    fn names_causes() {
        let refused =
            "user 3: connect 127.0.0.1:0 -> 127.0.0.1:19999: Connection refused (os error 111)";
        assert_eq!(cause(refused), "refused");
        assert_eq!(cause("user 3: connect timed out"), "timeout");
        assert_eq!(
            cause("user 3: WebSocket upgrade: HTTP error: 503 Service Unavailable"),
            "HTTP 503"
        );
        assert_eq!(
            cause("enter_room: enter_room of 3: HTTP 503 {}"),
            "HTTP 503"
        );
        assert_eq!(cause("closed before `connected`: None"), "closed");
        assert_eq!(cause("Connection reset by peer (os error 104)"), "reset");
        assert_eq!(cause("something else"), "other");
    }
}
