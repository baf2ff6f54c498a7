//! `soak`: mixed, realistic load for minutes on one node or two, with the
//! server sampled every `--sample-seconds` (issue 19 item 7; run by
//! `scripts/soak`, which starts the servers and plots the samples).
//!
//! `--rooms` rooms of `--members` users each, arriving over the first
//! 10 s; every user holds a WebSocket (to the node `i % nodes`), enters its room through the
//! server API, pings every 10 s, answers relay frames with their report,
//! and sends a chat message (`send_topic_msg`) about every
//! `--chat-seconds`. Beside them, an open loop at `--rate` per second runs
//! server-API actions on random members: broadcast gifts (40%), `up` or
//! `down` (30%), chat (20%), `call_start` or `hang_up` (10%), through
//! either node. Every `--kill-seconds` a random member's socket is
//! dropped without a close (a killed app) and reconnected a second later,
//! entering its room again; every `--reload-seconds` the plugins are
//! reloaded through the admin API.
//!
//! Answers are counted by kind: acknowledged; refused by the rules (2001,
//! 2003, 2004: a seat taken, a user mid-reconnect not in the room, a
//! callee busy); failed (anything else: 2002, 2005, 5xx, no answer). The
//! pass criteria the script applies: no failure, flat memory after
//! warm-up, no panic in the server logs.
//!
//! Each sample is one CSV line per node in `--samples`:
//! `elapsed_s,node,rss_kib,fds,threads,connections,tasks,outbound_frames,acked,refused,failed`.

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures_util::StreamExt;
use rand::Rng;
use serde_json::{Map, Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::{Ctx, Outcome};
use crate::api::Api;
use crate::report::{Goal, Metric};
use crate::sys::ServerProcess;
use crate::target::{Client, Target, profile};

/// First user id of the soak (ids of no other scenario).
const FIRST_USER: u64 = 7_000_000;

/// Arguments of `soak`.
#[derive(Debug, clap::Args)]
pub struct SoakArgs {
    /// How long to run, in minutes.
    #[arg(long, default_value_t = 30.0)]
    pub minutes: f64,
    /// Rooms.
    #[arg(long, default_value_t = 10)]
    pub rooms: usize,
    /// Members per room.
    #[arg(long, default_value_t = 20)]
    pub members: usize,
    /// Server-API actions per second.
    #[arg(long, default_value_t = 40.0)]
    pub rate: f64,
    /// Each member sends a chat message about this often, in seconds.
    #[arg(long, default_value_t = 30.0)]
    pub chat_seconds: f64,
    /// A member's socket is dropped this often, in seconds.
    #[arg(long, default_value_t = 2.0)]
    pub kill_seconds: f64,
    /// Plugins are reloaded this often, in seconds.
    #[arg(long, default_value_t = 60.0)]
    pub reload_seconds: f64,
    /// Samples are taken this often, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub sample_seconds: f64,
    /// The admin address of the (first) node, for reloads and metrics.
    #[arg(long, default_value = "127.0.0.1:9998")]
    pub admin: SocketAddr,
    /// The admin bearer token.
    #[arg(long, default_value = "chorus-dev-admin")]
    pub admin_token: String,
    /// A second node of the same cluster: its WebSocket/API address.
    #[arg(long)]
    pub also: Option<SocketAddr>,
    /// The second node's admin address.
    #[arg(long)]
    pub also_admin: Option<SocketAddr>,
    /// The second node's process id.
    #[arg(long)]
    pub also_pid: Option<u32>,
    /// Where the samples go (CSV).
    #[arg(long, default_value = "soak-samples.csv")]
    pub samples: PathBuf,
}

/// Counts of answers, shared by the load's tasks.
#[derive(Default)]
struct Tally {
    acked: Cell<u64>,
    refused: Cell<u64>,
    failed: Cell<u64>,
    /// Failures by kind (`what: HTTP status code N`), for the details.
    failures: RefCell<std::collections::BTreeMap<String, u64>>,
    kills: Cell<u64>,
    reconnects: Cell<u64>,
    reloads: Cell<u64>,
}

impl Tally {
    /// Counts an answer: `Ok(code)` with the `error_code` (0 for an ack)
    /// or `Err` when none came.
    fn count(&self, what: &str, answer: Result<(u16, u64)>) {
        match answer {
            Ok((_, 0)) => self.acked.set(self.acked.get() + 1),
            Ok((_, 2001 | 2003 | 2004)) => self.refused.set(self.refused.get() + 1),
            Ok((status, code)) => self.fail(format!("{what}: HTTP {status} code {code}")),
            Err(e) => self.fail(format!("{what}: {}", e.root_cause())),
        }
    }

    fn fail(&self, why: String) {
        self.failed.set(self.failed.get() + 1);
        let mut failures = self.failures.borrow_mut();
        if !failures.contains_key(&why) {
            eprintln!("loadgen: soak failure: {why}");
        }
        // Kinds, not instances: user ids and addresses vary.
        if failures.len() < 50 || failures.contains_key(&why) {
            *failures.entry(why).or_default() += 1;
        }
    }
}

/// One node: where its clients and API calls go, and what is sampled.
struct Node {
    target: Target,
    api: Api,
    admin: SocketAddr,
    server: Option<ServerProcess>,
}

/// Runs `soak`.
pub async fn run(ctx: &Ctx, args: &SoakArgs) -> Result<Outcome> {
    let mut nodes = vec![Node {
        target: ctx.target.clone(),
        api: ctx.api.clone(),
        admin: args.admin,
        server: ctx.server,
    }];
    if let Some(addr) = args.also {
        let target = Target {
            addr,
            ..ctx.target.clone()
        };
        nodes.push(Node {
            api: Api::new(&target)?,
            target,
            admin: args.also_admin.context("--also needs --also-admin")?,
            server: args.also_pid.map(|pid| ServerProcess { pid }),
        });
    }
    let nodes = Rc::new(nodes);
    let users = args.rooms * args.members;
    let tally = Rc::new(Tally::default());
    let stop = Rc::new(Cell::new(false));
    let kill: Rc<Vec<Cell<bool>>> = Rc::new((0..users).map(|_| Cell::new(false)).collect());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;

    // The members' own dialer: their tasks outlive any borrow of `ctx`.
    let dialer = Rc::new(crate::net::Dialer::new(4, 16 * 1024));
    let mut tasks = Vec::new();
    for i in 0..users {
        tasks.push(tokio::task::spawn_local(member(
            Rc::clone(&dialer),
            Rc::clone(&nodes),
            i,
            args.members,
            args.chat_seconds,
            Rc::clone(&tally),
            Rc::clone(&stop),
            Rc::clone(&kill),
        )));
    }
    let started = Instant::now();
    let run_for = Duration::from_secs_f64(args.minutes * 60.0);
    let mut file = std::fs::File::create(&args.samples)
        .with_context(|| format!("create {}", args.samples.display()))?;
    writeln!(
        file,
        "elapsed_s,node,rss_kib,fds,threads,connections,tasks,outbound_frames,acked,refused,failed"
    )?;

    let mut rng = rand::rng();
    let mut next_action = Instant::now();
    let mut next_kill = Instant::now() + Duration::from_secs_f64(args.kill_seconds);
    let mut next_reload = Instant::now() + Duration::from_secs_f64(args.reload_seconds);
    let mut next_sample = Instant::now();
    let action_gap = Duration::from_secs_f64(1.0 / args.rate.max(0.001));
    let mut rss_series: Vec<(f64, u64)> = Vec::new();
    while started.elapsed() < run_for {
        let now = Instant::now();
        if now >= next_sample {
            next_sample += Duration::from_secs_f64(args.sample_seconds);
            let elapsed = started.elapsed().as_secs_f64();
            for (n, node) in nodes.iter().enumerate() {
                let sample = sample(&http, node, &args.admin_token).await;
                if n == 0 {
                    rss_series.push((elapsed, sample.rss_kib));
                }
                writeln!(
                    file,
                    "{elapsed:.1},{n},{},{},{},{},{},{},{},{},{}",
                    sample.rss_kib,
                    sample.fds,
                    sample.threads,
                    sample.connections,
                    sample.tasks,
                    sample.outbound,
                    tally.acked.get(),
                    tally.refused.get(),
                    tally.failed.get()
                )?;
            }
            file.flush()?;
            eprintln!(
                "loadgen: soak {:.0} s: rss {} KiB, acked {}, refused {}, failed {}",
                elapsed,
                rss_series.last().map_or(0, |s| s.1),
                tally.acked.get(),
                tally.refused.get(),
                tally.failed.get()
            );
        }
        if now >= next_kill {
            next_kill += Duration::from_secs_f64(args.kill_seconds);
            kill[rng.random_range(0..users)].set(true);
            tally.kills.set(tally.kills.get() + 1);
        }
        if now >= next_reload {
            next_reload += Duration::from_secs_f64(args.reload_seconds);
            let url = format!("http://{}/admin/plugins/reload", args.admin);
            match http.post(url).bearer_auth(&args.admin_token).send().await {
                Ok(r) if r.status().is_success() => tally.reloads.set(tally.reloads.get() + 1),
                Ok(r) => tally.fail(format!("reload: HTTP {}", r.status())),
                Err(e) => tally.fail(format!("reload: {e}")),
            }
        }
        if now >= next_action {
            next_action += action_gap;
            let user_index = rng.random_range(0..users);
            let node = &nodes[rng.random_range(0..nodes.len())];
            let (what, body) = random_action(&mut rng, user_index, args.members);
            let api = node.api.clone();
            let tally = Rc::clone(&tally);
            tokio::task::spawn_local(async move {
                let answer = api.action(&body).await.map(|(status, answer)| {
                    (status, answer["error_code"].as_u64().unwrap_or(u64::MAX))
                });
                tally.count(what, answer);
            });
        }
        let wake = [next_sample, next_kill, next_reload, next_action]
            .into_iter()
            .min()
            .unwrap_or(now);
        tokio::time::sleep_until(wake.into()).await;
    }
    stop.set(true);
    for task in tasks {
        let _ = task.await;
    }

    // Memory after warm-up: the mean of the samples from 20% to 30% of
    // the run against the mean of the last 10%.
    let total = run_for.as_secs_f64();
    let mean = |from: f64, to: f64| {
        let picked: Vec<u64> = rss_series
            .iter()
            .filter(|(t, _)| *t >= from * total && *t <= to * total)
            .map(|(_, rss)| *rss)
            .collect();
        picked.iter().sum::<u64>() as f64 / picked.len().max(1) as f64
    };
    let warm = mean(0.2, 0.3);
    let end = mean(0.9, 1.0);
    let growth = if warm > 0.0 {
        (end - warm) / warm * 100.0
    } else {
        0.0
    };
    let metrics = vec![
        Metric::new(
            "soak.acked",
            "acknowledged actions",
            "",
            tally.acked.get() as f64,
        ),
        Metric::new(
            "soak.failed",
            "failed actions",
            "",
            tally.failed.get() as f64,
        )
        .goal(Goal::AtMost(0.0)),
        Metric::new("soak.rss_growth", "RSS growth after warm-up", "%", growth)
            .goal(Goal::AtMost(10.0)),
    ];
    let details = json!({
        "minutes": args.minutes,
        "nodes": nodes.len(),
        "users": users,
        "acked": tally.acked.get(),
        "refused": tally.refused.get(),
        "failed": tally.failed.get(),
        "failures": *tally.failures.borrow(),
        "kills": tally.kills.get(),
        "reconnects": tally.reconnects.get(),
        "reloads": tally.reloads.get(),
        "rss_warm_kib": warm,
        "rss_end_kib": end,
        "rss_growth_percent": growth,
        "samples": args.samples,
    });
    Ok((metrics, details))
}

/// One random server-API action on member `index` and the label it is
/// counted under.
fn random_action(rng: &mut impl Rng, index: usize, members: usize) -> (&'static str, Value) {
    let user = FIRST_USER + index as u64;
    let room = index / members;
    let channel = format!("soak-{room}");
    let other = FIRST_USER + (room * members + rng.random_range(0..members)) as u64;
    let roll = rng.random_range(0..100);
    let mut body: Map<String, Value> = profile(user);
    body.insert("user_id".into(), user.into());
    body.insert("channel_name".into(), channel.into());
    let what = match roll {
        0..40 => {
            body.insert("notify_type".into(), "bc".into());
            body.insert(
                "gift".into(),
                json!({"id": 5, "sender_id": user, "receiver_id": other, "num": 1,
                       "sender_room_seat_id": 0, "receiver_room_seat_id": 0}),
            );
            "send_gift"
        }
        40..55 => {
            body.insert("seat_id".into(), (rng.random_range(1..=9u32)).into());
            "up"
        }
        55..70 => "down",
        70..90 => {
            body.insert("content".into(), "soak chat message".into());
            "send_topic_msg"
        }
        90..95 => {
            body.insert("receiver_id".into(), other.into());
            "call_start"
        }
        _ => {
            body.insert("receiver_id".into(), other.into());
            "hang_up"
        }
    };
    body.insert("action".into(), what.into());
    (what, Value::Object(body))
}

/// What a sample reads of one node.
#[derive(Default)]
struct Sample {
    rss_kib: u64,
    fds: u64,
    threads: u64,
    connections: u64,
    tasks: u64,
    outbound: u64,
}

/// Reads `/proc/<pid>` and the node's `/metrics`.
async fn sample(http: &reqwest::Client, node: &Node, _token: &str) -> Sample {
    let mut sample = Sample::default();
    if let Some(server) = node.server {
        sample.rss_kib = server.rss_kib().unwrap_or(0);
        sample.fds = std::fs::read_dir(format!("/proc/{}/fd", server.pid))
            .map(|d| d.count() as u64)
            .unwrap_or(0);
        sample.threads = std::fs::read_to_string(format!("/proc/{}/status", server.pid))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Threads:"))
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(0);
    }
    let url = format!("http://{}/metrics", node.admin);
    if let Ok(response) = http.get(url).send().await
        && let Ok(text) = response.text().await
    {
        for line in text.lines() {
            let mut parts = line.split_whitespace();
            let (Some(name), Some(value)) = (parts.next(), parts.next()) else {
                continue;
            };
            let value = value.parse::<f64>().unwrap_or(0.0) as u64;
            match name {
                "chorus_connections" => sample.connections = value,
                "chorus_tasks" => sample.tasks = value,
                "chorus_outbound_frames" => sample.outbound = value,
                _ => {}
            }
        }
    }
    sample
}

/// One member: connects, enters its room, reads, pings, chats; when its
/// kill flag is set, drops the socket without a close and comes back a
/// second later.
#[allow(clippy::too_many_arguments)]
async fn member(
    dialer: Rc<crate::net::Dialer>,
    nodes: Rc<Vec<Node>>,
    index: usize,
    members: usize,
    chat_seconds: f64,
    tally: Rc<Tally>,
    stop: Rc<Cell<bool>>,
    kill: Rc<Vec<Cell<bool>>>,
) {
    let user = FIRST_USER + index as u64;
    let node = &nodes[index % nodes.len()];
    let channel = format!("soak-{}", index / members);
    // Members arrive over the first ten seconds, as users do; everyone
    // at once is the reconnect storm, measured apart (`storm`).
    tokio::time::sleep(Duration::from_millis(index as u64 * 50 % 10_000)).await;
    let mut first = true;
    while !stop.get() {
        let mut client = match Client::connect(&dialer, &node.target, user).await {
            Ok(client) => client,
            Err(e) => {
                tally.fail(format!("connect: {}", e.root_cause()));
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if !first {
            tally.reconnects.set(tally.reconnects.get() + 1);
        }
        first = false;
        let mut body: Map<String, Value> = profile(user);
        body.insert("action".into(), "enter_room".into());
        body.insert("user_id".into(), user.into());
        body.insert("channel_name".into(), channel.clone().into());
        body.insert("room_id".into(), ((index / members) as u64 + 1).into());
        body.insert("i_segment".into(), "regular".into());
        let answer = node
            .api
            .action(&Value::Object(body))
            .await
            .map(|(status, answer)| (status, answer["error_code"].as_u64().unwrap_or(u64::MAX)));
        tally.count("enter_room", answer);
        let mut ping = tokio::time::interval(Duration::from_secs(10));
        let chat_gap = Duration::from_secs_f64(chat_seconds * rand::rng().random_range(0.5..1.5));
        let mut chat = tokio::time::interval_at((Instant::now() + chat_gap).into(), chat_gap);
        let mut check = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                frame = client.ws.next() => match frame {
                    Some(Ok(Message::Text(text))) => {
                        let Ok(frame) = serde_json::from_str::<Value>(&text) else { continue };
                        if frame["action"] == "error" {
                            let code = frame["error_code"].as_u64().unwrap_or(0);
                            tally.count("client frame", Ok((0, code)));
                        } else if frame["action"] == "ack" {
                            tally.count("client frame", Ok((200, 0)));
                        } else if let Some(report) = client.report_for(&frame) {
                            let _ = client.send(report).await;
                        }
                    }
                    Some(Ok(_)) => {}
                    // Closed by the server (a replaced or slow session):
                    // connect again.
                    Some(Err(_)) | None => break,
                },
                _ = ping.tick() => {
                    let frame = client.ping();
                    if client.send(frame).await.is_err() { break; }
                }
                _ = chat.tick() => {
                    let mut fields = Map::new();
                    fields.insert("channel_name".into(), channel.clone().into());
                    fields.insert("content".into(), "hello from the soak".into());
                    let frame = client.frame("send_topic_msg", fields);
                    if client.send(frame).await.is_err() { break; }
                }
                _ = check.tick() => {
                    if stop.get() {
                        return;
                    }
                    if kill[index].replace(false) {
                        // A killed app: the socket goes without a close.
                        drop(client);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        break;
                    }
                }
            }
        }
    }
}
