//! Broker and node faults under load (issue 19 item 4; RELIABILITY.md,
//! section 4): two nodes on a private `redis-server` while 24 users run
//! about 100 actions per second (`enter_room`, `up`, `down`, `exit_room`)
//! through both nodes' server APIs, then one fault: Redis restarted
//! without persistence, Redis restarted with an append-only file, Redis
//! paused for 5 s (`CLIENT PAUSE`), one node killed.
//!
//! Every answer is kept in a ledger. Afterwards:
//!
//! - every action the server acknowledged (HTTP 200) is reflected in the
//!   state read back, unless a later action of the same user has an
//!   unknown outcome (2005, or no answer at all) and its result is what is
//!   there instead, or the loss is reported by the nodes themselves
//!   (`GET /admin/cluster`: `state_lost` or `users_cleaned`) and the
//!   action was acknowledged before the fault;
//! - an action answered 2002 ("nothing was applied") is taken at its word:
//!   if it was applied after all, the state shows it and the check fails;
//! - nobody is a member of two rooms or holds two seats, and every seated
//!   user is a member of the seat's room;
//! - both nodes (the survivor, after a kill) are ready again, and the
//!   time from the end of the fault to the first acknowledged action and
//!   to readiness is printed (`FAULT-RESULT {…}`), for RELIABILITY.md.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cluster::{PrivateRedis, node_on, ready, until};
use crate::harness::*;
use crate::rooms::profile;

/// Users under load; each runs one action every [`STEP`]: 100 per second.
const USERS: u64 = 24;
const STEP: Duration = Duration::from_millis(240);
/// Rooms the users move between.
const ROOMS: usize = 4;
/// First user id (ids of no other test).
const FIRST_USER: u64 = 9_100;
/// Load before the fault, and after the nodes are ready again.
const BEFORE: Duration = Duration::from_secs(3);
const AFTER: Duration = Duration::from_secs(4);

/// Where a user is: a room (index into the scenario's rooms) and a seat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Place {
    room: Option<usize>,
    seat: Option<u32>,
}

/// One step of a user's cycle and the place it leads to when applied.
#[derive(Debug, Clone, Copy)]
enum Op {
    Enter(usize),
    Up(usize, u32),
    Down(usize),
    Exit(usize),
}

impl Op {
    /// The place after this action applied: every acknowledged action
    /// fixes the user's place whatever it was before.
    fn place(self) -> Place {
        match self {
            Op::Enter(room) | Op::Down(room) => Place {
                room: Some(room),
                seat: None,
            },
            Op::Up(room, seat) => Place {
                room: Some(room),
                seat: Some(seat),
            },
            Op::Exit(_) => Place::default(),
        }
    }

    fn body(self, user: u64, rooms: &[String]) -> Value {
        let mut body = as_object(profile(user));
        let (action, room) = match self {
            Op::Enter(r) => {
                body.insert("i_segment".into(), json!("regular"));
                ("enter_room", r)
            }
            Op::Up(r, seat) => {
                body.insert("seat_id".into(), json!(seat));
                ("up", r)
            }
            Op::Down(r) => ("down", r),
            Op::Exit(r) => ("exit_room", r),
        };
        body.insert("action".into(), json!(action));
        body.insert("user_id".into(), json!(user));
        body.insert("channel_name".into(), json!(rooms[room]));
        body.insert("room_id".into(), json!(room as u64 + 1));
        Value::Object(body)
    }
}

/// A user's cycle: enter A, sit, enter B (leaving A and its seat), sit,
/// stand up, leave. Two users share each seat number in a room, so some
/// `up`s are refused as conflicts, as in a real room.
fn cycle(index: u64) -> [Op; 6] {
    let a = index as usize % ROOMS;
    let b = (a + 1) % ROOMS;
    let seat = (index / ROOMS as u64) as u32 + 1;
    [
        Op::Enter(a),
        Op::Up(a, seat),
        Op::Enter(b),
        Op::Up(b, seat),
        Op::Down(b),
        Op::Exit(b),
    ]
}

/// What a user's actions came to.
#[derive(Debug, Default)]
struct Ledger {
    /// The place after the last acknowledged action.
    acked: Place,
    /// When that action was acknowledged.
    acked_at: Option<Instant>,
    /// Places of actions after it whose outcome is unknown.
    maybe: Vec<Place>,
    acks: u64,
    refused: u64,
    unknown: u64,
}

/// The answer to one action.
enum Answer {
    /// HTTP 200.
    Acked,
    /// Refused with a code that says nothing was applied (4xx, 2002).
    Refused,
    /// 2005, or no answer: applied or not.
    Unknown,
}

/// Shared by the load's tasks.
struct Load {
    rooms: Vec<String>,
    /// Node addresses; `alive[i]` false once node i was killed.
    nodes: Vec<SocketAddr>,
    alive: Vec<AtomicBool>,
    ledgers: Vec<Mutex<Ledger>>,
    /// When each acknowledgement arrived, to find the first after a fault.
    acks: Mutex<Vec<Instant>>,
    reconnects: AtomicUsize,
    /// Refusals by `error_code` and reason, for the result line.
    refusals: Mutex<HashMap<String, u64>>,
    stop: AtomicBool,
    http: reqwest::Client,
}

impl Load {
    fn live_node(&self, turn: usize) -> SocketAddr {
        for k in 0..self.nodes.len() {
            let i = (turn + k) % self.nodes.len();
            if self.alive[i].load(Ordering::Relaxed) {
                return self.nodes[i];
            }
        }
        panic!("no node is alive");
    }

    async fn call(&self, node: SocketAddr, body: &Value) -> Answer {
        let body = body.to_string();
        let path = "/api/v1/actions";
        let headers = chorus_protocol::server_api::signed_headers(
            SECRET.as_bytes(),
            &now().to_string(),
            &nonce(),
            "POST",
            path,
            body.as_bytes(),
        );
        let mut request = self
            .http
            .post(format!("http://{node}{path}"))
            .timeout(Duration::from_secs(15))
            .body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let Ok(response) = request.send().await else {
            return Answer::Unknown;
        };
        let status = response.status().as_u16();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        let kind = match (status, answer["error_code"].as_u64()) {
            (200, _) => return Answer::Acked,
            (400..=499, _) | (503, Some(2002)) => Answer::Refused,
            _ => Answer::Unknown,
        };
        let reason = answer["error_reason"].as_str().unwrap_or_default();
        // Room names and ids vary; the reason's first words say enough.
        let reason: String = reason
            .split_whitespace()
            .take(5)
            .map(|w| {
                if w.starts_with(|c: char| c.is_ascii_digit() || c == '`') {
                    "…"
                } else {
                    w
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
        *self
            .refusals
            .lock()
            .unwrap()
            .entry(format!("{status} {} {reason}", answer["error_code"]))
            .or_default() += 1;
        kind
    }
}

/// One user's actions, one every [`STEP`], until the load stops.
async fn run_user(load: Arc<Load>, index: u64) {
    let user = FIRST_USER + index;
    let ops = cycle(index);
    let mut turn = index as usize;
    while !load.stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let op = ops[turn % ops.len()];
        let node = load.live_node(turn);
        let answer = load.call(node, &op.body(user, &load.rooms)).await;
        {
            let mut ledger = load.ledgers[index as usize].lock().unwrap();
            match answer {
                Answer::Acked => {
                    ledger.acked = op.place();
                    ledger.acked_at = Some(Instant::now());
                    ledger.maybe.clear();
                    ledger.acks += 1;
                    load.acks.lock().unwrap().push(Instant::now());
                }
                Answer::Refused => ledger.refused += 1,
                Answer::Unknown => {
                    ledger.maybe.push(op.place());
                    ledger.unknown += 1;
                }
            }
        }
        turn += 1;
        tokio::time::sleep(STEP.saturating_sub(started.elapsed())).await;
    }
}

/// Keeps one user's WebSocket open, as an app does: reads everything and
/// reconnects (to its own node first, else any live one) when closed.
async fn hold_connection(load: Arc<Load>, index: u64) {
    let user = FIRST_USER + index;
    let token = chorus::token::mint(SECRET.as_bytes(), user, 3600).expect("mint");
    let creds =
        chorus_protocol::ClientCredentials::new(user, token.sid.clone(), token.sign_key.clone());
    let mut client: Option<Client> = None;
    let mut turn = index as usize;
    while !load.stop.load(Ordering::Relaxed) {
        match client.as_mut() {
            Some(c) => match c.recv_within(Duration::from_millis(300)).await {
                Ok(_) => {}
                Err(e) if e.to_string().starts_with("no frame") => {}
                Err(_) => {
                    client = None;
                    load.reconnects.fetch_add(1, Ordering::Relaxed);
                }
            },
            None => {
                let node = load.live_node(turn);
                let url = format!(
                    "ws://{node}/?{}",
                    creds.signed_query_with_nonce(now(), &nonce())
                );
                match Client::connect(&url, creds.clone()).await {
                    Ok(c) => client = Some(c),
                    Err(_) => {
                        turn += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
    }
}

/// The fault injected between the two phases of load.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    /// SIGKILL Redis, start it again on an empty data folder.
    RedisRestartEmpty,
    /// SIGKILL Redis, start it again from its append-only file
    /// (`appendfsync always`).
    RedisRestartAof,
    /// `CLIENT PAUSE 5000 ALL`.
    RedisPause,
    /// Kill node 1 (its Redis link is cut first, so it writes nothing
    /// more, as after SIGKILL; its sockets close).
    KillNode,
}

async fn run_fault(fault: Fault) {
    let mut redis = PrivateRedis::start(fault != Fault::RedisRestartEmpty).await;
    let url = redis.url();
    let prefix = format!("chorus-fault:{}:", nonce());
    let (lease_ttl, lease_interval) = match fault {
        // A pause shorter than the lease must not make anyone dead.
        Fault::RedisPause => (Duration::from_secs(10), Duration::from_secs(1)),
        _ => (Duration::from_secs(3), Duration::from_millis(250)),
    };
    let configure = move |c: &mut chorus::Config| {
        c.store.lease_ttl = lease_ttl;
        c.store.lease_interval = lease_interval;
        // Room for a debug build on a loaded machine: a call that only
        // waits for the CPU must not time out (nor trip a breaker); one
        // that waits for a stalled Redis (2 s answer timeout) still does.
        c.plugins.call_timeout = Duration::from_secs(1);
        c.heartbeat.grace = Duration::from_secs(10);
        c.heartbeat.ping_timeout = Duration::from_secs(300);
        c.heartbeat.ping_interval = Duration::from_secs(100);
    };
    let mut nodes = vec![
        Some(node_on(&url, &prefix, configure).await),
        Some(node_on(&url, &prefix, configure).await),
    ];
    let tag = nonce();
    let load = Arc::new(Load {
        rooms: (0..ROOMS).map(|k| format!("fault-{tag}-{k}")).collect(),
        nodes: nodes
            .iter()
            .map(|n| n.as_ref().unwrap().node.addr)
            .collect(),
        alive: vec![AtomicBool::new(true), AtomicBool::new(true)],
        ledgers: (0..USERS).map(|_| Mutex::new(Ledger::default())).collect(),
        acks: Mutex::new(Vec::new()),
        reconnects: AtomicUsize::new(0),
        refusals: Mutex::new(HashMap::new()),
        stop: AtomicBool::new(false),
        http: reqwest::Client::new(),
    });
    let mut sockets = Vec::new();
    for index in 0..USERS {
        sockets.push(tokio::spawn(hold_connection(Arc::clone(&load), index)));
    }
    // Everyone is connected before the first action.
    assert!(
        until(Duration::from_secs(20), || async {
            let (_, body) = nodes[0]
                .as_ref()
                .unwrap()
                .admin("GET", "/admin/connections")
                .await;
            let (_, other) = nodes[1]
                .as_ref()
                .unwrap()
                .admin("GET", "/admin/connections")
                .await;
            count_connections(&body) + count_connections(&other) == USERS as usize
        })
        .await,
        "all {USERS} users connect"
    );
    let mut users = Vec::new();
    for index in 0..USERS {
        users.push(tokio::spawn(run_user(Arc::clone(&load), index)));
    }
    tokio::time::sleep(BEFORE).await;

    let fault_at = Instant::now();
    match fault {
        Fault::RedisRestartEmpty | Fault::RedisRestartAof => {
            redis.kill();
            tokio::time::sleep(Duration::from_secs(2)).await;
            redis.run().await;
        }
        Fault::RedisPause => {
            let client = redis::Client::open(url.as_str()).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            let _: () = redis::cmd("CLIENT")
                .arg("PAUSE")
                .arg(5000)
                .arg("ALL")
                .query_async(&mut conn)
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        Fault::KillNode => {
            load.alive[1].store(false, Ordering::Relaxed);
            let dead = nodes[1].take().unwrap();
            dead.node.kill_for_tests().await;
        }
    }
    let fault_over = Instant::now();
    let live: Vec<&TestServer> = nodes.iter().flatten().collect();
    assert!(
        until(Duration::from_secs(30), || async {
            for node in &live {
                if ready(node).await != 200 {
                    return false;
                }
            }
            true
        })
        .await,
        "the live nodes are ready again after {fault:?}"
    );
    let ready_after = fault_over.elapsed();
    tokio::time::sleep(AFTER).await;
    load.stop.store(true, Ordering::Relaxed);
    for task in users.into_iter().chain(sockets) {
        task.await.expect("load task");
    }

    // The nodes' own account of the fault.
    let mut state_lost = 0;
    let mut users_cleaned = 0;
    for node in &live {
        let (status, body) = node.admin("GET", "/admin/cluster").await;
        assert_eq!(status, 200, "{body}");
        state_lost += body["faults"]["state_lost"].as_u64().unwrap();
        users_cleaned += body["faults"]["users_cleaned"].as_u64().unwrap();
    }
    let reported = state_lost > 0 || users_cleaned > 0;
    // A store outage is not a plugin's fault: no breaker tripped.
    for node in &live {
        let (_, body) = node.admin("GET", "/admin/plugins").await;
        for plugin in body["plugins"].as_array().unwrap() {
            assert_ne!(
                plugin["breaker"]["state"], "open",
                "{fault:?} tripped the breaker of {}",
                plugin["name"]
            );
        }
    }

    // The state as it is now.
    let reader = live[0];
    let mut rooms_of: HashMap<u64, Vec<usize>> = HashMap::new();
    let mut seats_of: HashMap<u64, Vec<(usize, u32)>> = HashMap::new();
    for (k, channel) in load.rooms.iter().enumerate() {
        let (status, room) = reader
            .api("GET", &format!("/api/v1/rooms/{channel}"), None)
            .await;
        if status == 404 {
            continue;
        }
        assert_eq!(status, 200, "{room}");
        for member in room["members"].as_array().unwrap() {
            rooms_of
                .entry(member.as_u64().unwrap())
                .or_default()
                .push(k);
        }
        for seat in room["seats"].as_array().unwrap() {
            if let Some(user) = seat["user_id"].as_u64() {
                seats_of
                    .entry(user)
                    .or_default()
                    .push((k, seat["id"].as_u64().unwrap() as u32));
            }
        }
    }
    let (mut acks, mut refused, mut unknown) = (0, 0, 0);
    let (mut reflected, mut unknown_resolved, mut lost_reported) = (0, 0, 0);
    let mut silent = Vec::new();
    for index in 0..USERS {
        let user = FIRST_USER + index;
        let rooms = rooms_of.get(&user).cloned().unwrap_or_default();
        let seats = seats_of.get(&user).cloned().unwrap_or_default();
        assert!(rooms.len() <= 1, "user {user} is in rooms {rooms:?}");
        assert!(seats.len() <= 1, "user {user} holds seats {seats:?}");
        if let Some((room, _)) = seats.first() {
            assert_eq!(
                rooms.first(),
                Some(room),
                "user {user} sits in a room it is not in"
            );
        }
        let actual = Place {
            room: rooms.first().copied(),
            seat: seats.first().map(|&(_, seat)| seat),
        };
        let ledger = load.ledgers[index as usize].lock().unwrap();
        acks += ledger.acks;
        refused += ledger.refused;
        unknown += ledger.unknown;
        if actual == ledger.acked {
            reflected += 1;
        } else if ledger.maybe.contains(&actual) {
            unknown_resolved += 1;
        } else if reported && ledger.acked_at.is_none_or(|at| at < fault_over) {
            lost_reported += 1;
        } else {
            silent.push(format!(
                "user {user}: acknowledged {:?}, then maybe {:?}, but is at {actual:?}",
                ledger.acked, ledger.maybe
            ));
        }
    }
    let first_ack = load
        .acks
        .lock()
        .unwrap()
        .iter()
        .filter(|&&at| at > fault_over)
        .min()
        .map(|at| at.duration_since(fault_over));
    let result = json!({
        "fault": format!("{fault:?}"),
        "fault_ms": fault_over.duration_since(fault_at).as_millis() as u64,
        "ready_after_ms": ready_after.as_millis() as u64,
        "first_ack_after_ms": first_ack.map(|d| d.as_millis() as u64),
        "acked": acks, "refused": refused, "unknown": unknown,
        "users_reflected": reflected, "users_unknown_resolved": unknown_resolved,
        "users_lost_reported": lost_reported, "users_lost_silently": silent.len(),
        "state_lost": state_lost, "users_cleaned": users_cleaned,
        "reconnects": load.reconnects.load(Ordering::Relaxed),
        "answers": load.refusals.lock().unwrap().clone(),
    });
    println!("FAULT-RESULT {result}");
    // Plugin failures of the whole test process (the recorder is shared),
    // to tell a store outage from a plugin's fault when reading the line.
    for line in live[0].metrics_text().await.lines() {
        if line.starts_with("chorus_plugin_failures_total") && !line.ends_with(" 0") {
            println!("FAULT-PLUGIN-FAILURES {line}");
        }
    }
    assert!(
        silent.is_empty(),
        "acknowledged state lost without the nodes saying so: {silent:#?}\n{result}"
    );
    assert!(acks > 100, "the load ran: {result}");
    assert!(
        first_ack.is_some(),
        "actions are acknowledged again: {result}"
    );
    match fault {
        // Redis came back empty: the nodes must say so.
        Fault::RedisRestartEmpty => assert!(state_lost >= 2, "{result}"),
        // Nothing was lost: every user is where its answers put it.
        Fault::RedisRestartAof | Fault::RedisPause => {
            assert_eq!(state_lost, 0, "{result}");
            assert_eq!(lost_reported, 0, "{result}");
        }
        Fault::KillNode => assert_eq!(state_lost, 0, "{result}"),
    }
    for node in nodes.into_iter().flatten() {
        node.stop().await;
    }
}

/// `connections` of `GET /admin/connections`.
fn count_connections(body: &Value) -> usize {
    body["connections"].as_u64().unwrap_or(0) as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_without_persistence_loses_state_and_the_nodes_say_so() {
    run_fault(Fault::RedisRestartEmpty).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_from_its_append_only_file_loses_nothing_acknowledged() {
    run_fault(Fault::RedisRestartAof).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_for_five_seconds_loses_nothing_acknowledged() {
    run_fault(Fault::RedisPause).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_loses_nothing_acknowledged_on_the_survivor() {
    run_fault(Fault::KillNode).await;
}

/// A batch Redis holds past the store's answer timeout (2 s) fails as an
/// unknown outcome (answered 2005, never 2002 "nothing was applied"): the
/// script was sent, and whether Redis ran it depends on whether the
/// connection was still open when Redis got to it. (Here the client drops
/// the timed-out connection, and a paused Redis discards a closed client's
/// held commands, so this batch is not applied; a batch Redis had started
/// would be.) `CLIENT PAUSE … WRITE` holds the batch's script. Through a
/// node, the hold would stop the plugin's reads first (they share the
/// connection), which fails the call before anything is sent: 2002.
#[tokio::test]
async fn a_batch_redis_holds_past_the_timeout_has_an_unknown_outcome() {
    use chorus::store::{ApplyError, StateChange, Store};
    let redis = PrivateRedis::start(false).await;
    let url = redis.url();
    let prefix = format!("chorus-fault:{}:", nonce());
    let store = chorus::store::redis::RedisStore::connect(&url, &prefix, 3)
        .await
        .expect("store");
    let join = |user_id| StateChange::JoinRoom {
        user_id,
        channel_name: "fault-held".into(),
        room_id: 1,
    };
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(3_000)
        .arg("WRITE")
        .query_async(&mut conn)
        .await
        .unwrap();
    match store.apply(&[join(9_190)]).await {
        Err(ApplyError::Store(e)) => assert!(e.outcome_unknown(), "{e}"),
        other => panic!("expected a store error, got {other:?}"),
    }
    // Once Redis resumes, the store works again.
    assert!(
        until(Duration::from_secs(10), || async {
            store.apply(&[join(9_191)]).await.is_ok()
        })
        .await,
        "the store applies batches once Redis resumes"
    );
    let member = store.membership_of(9_191).await.expect("read");
    assert_eq!(member.map(|m| m.channel_name), Some("fault-held".into()));
    // Redis gone: the requests in flight on the dropped connection may
    // have run; once reconnecting is refused, nothing can have been sent.
    drop(redis);
    assert!(
        until(Duration::from_secs(10), || async {
            match store.apply(&[join(9_192)]).await {
                Err(ApplyError::Store(e)) => !e.outcome_unknown(),
                other => panic!("expected a store error, got {other:?}"),
            }
        })
        .await,
        "a refused connection is a definite failure"
    );
}
