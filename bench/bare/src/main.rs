//! The bare peer: the physical limit the benchmarks hold Chorus to (issue
//! 20 item 0). A plain tokio + tokio-tungstenite broadcast server speaking
//! exactly the plain-JSON protocol of the Node.js `ws` peer
//! (`bench/peer/server.js`, whose header documents it): the same routes,
//! the same frames, the same `/healthz`. No signatures, no plugins, no
//! store, no replay window, no recovery: what is left is what a delivery
//! physically costs on this machine with this WebSocket library.
//!
//! Run with: `target/release/bare-peer --port 9902 [--queue 4096]`
//!
//! How it delivers, as a strong engineer would write a broadcast server:
//! - one task per WebSocket, owning its socket; broadcasting never writes
//!   to a socket, it puts a frame into each member's bounded queue
//!   (`--queue`, default 4096 frames, as `scripts/bench` gives Chorus);
//!   a member whose queue is full is disconnected (4011), as in Chorus;
//! - a notification is serialized once into a reference-counted
//!   [`Utf8Bytes`]; each member's queue gets a clone of the pointer;
//! - the connection task writes every frame already queued with `feed`
//!   into tungstenite's 4 KiB write buffer, which goes out in one write
//!   when full, and `flush`es once when the queue is empty;
//! - 4 KiB read and write buffers (tungstenite's defaults are 128 KiB);
//! - HTTP (the server API, `/healthz`, the upgrade) through hyper 1, the
//!   library under Chorus's axum; after the upgrade the raw `TcpStream` is
//!   taken back from hyper, so frames go straight to the socket.
//!
//! It runs on tokio's multi-thread runtime with default settings; pinned
//! to one CPU (`taskset`, as `scripts/bench` does), that is one worker.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// Close code of a connection replaced by a newer one of the same user.
const CLOSE_REPLACED: u16 = 4009;
/// Close code of a connection whose queue overflowed (Chorus's code).
const CLOSE_TOO_SLOW: u16 = 4011;
/// Frames written in one go before the task looks at its socket again.
const MAX_BATCH: usize = 256;
/// tungstenite's read and write buffers.
const BUFFER_BYTES: usize = 4096;
/// Largest client frame accepted.
const MAX_FRAME_BYTES: usize = 64 * 1024;

/// A WebSocket on the raw TCP stream.
type Ws = WebSocketStream<TcpStream>;
/// Every HTTP answer.
type Answer = Response<Full<Bytes>>;

/// A connected user: the sending half of its connection's queue.
struct Member {
    /// Which connection of the user this is.
    conn: u64,
    /// Its queue of serialized frames.
    tx: mpsc::Sender<Utf8Bytes>,
    /// The code its task closes with once `tx` is dropped.
    close_code: Arc<AtomicU16>,
}

/// Who is connected and who is in which room.
#[derive(Default)]
struct Registry {
    /// user_id -> the user's live connection.
    sockets: HashMap<u64, Member>,
    /// channel_name -> member user_ids.
    rooms: HashMap<String, HashSet<u64>>,
    /// user_id -> the channel the user is in.
    room_of: HashMap<u64, String>,
    /// Counter behind each connection's `conn`.
    next_conn: u64,
}

impl Registry {
    /// Makes `user` a member of `channel`, leaving any other room first.
    fn enter_room(&mut self, user: u64, channel: &str) {
        self.leave_room(user);
        self.rooms
            .entry(channel.to_owned())
            .or_default()
            .insert(user);
        self.room_of.insert(user, channel.to_owned());
    }

    /// Removes `user` from its room, if any.
    fn leave_room(&mut self, user: u64) {
        let Some(channel) = self.room_of.remove(&user) else {
            return;
        };
        if let Some(members) = self.rooms.get_mut(&channel) {
            members.remove(&user);
            if members.is_empty() {
                self.rooms.remove(&channel);
            }
        }
    }

    /// Registers a new connection of `user`; an older one is closed
    /// (dropping its queue's sender ends its task).
    fn connect(&mut self, user: u64, tx: mpsc::Sender<Utf8Bytes>, code: Arc<AtomicU16>) -> u64 {
        self.next_conn += 1;
        let member = Member {
            conn: self.next_conn,
            tx,
            close_code: code,
        };
        if let Some(old) = self.sockets.insert(user, member) {
            old.close_code.store(CLOSE_REPLACED, Ordering::Relaxed);
        }
        self.next_conn
    }

    /// Connection `conn` of `user` ended: unless a newer one replaced it,
    /// the user leaves its room.
    fn disconnect(&mut self, user: u64, conn: u64) {
        if self.sockets.get(&user).is_some_and(|m| m.conn == conn) {
            self.sockets.remove(&user);
            self.leave_room(user);
        }
    }

    /// Queues `frame` for every connected member of `channel`; members
    /// whose queue is full are disconnected. Returns how many got it.
    fn broadcast(&mut self, channel: &str, frame: &Utf8Bytes) -> usize {
        let Some(members) = self.rooms.get(channel) else {
            return 0;
        };
        let mut sent = 0;
        let mut slow = Vec::new();
        for user in members {
            let Some(member) = self.sockets.get(user) else {
                continue;
            };
            match member.tx.try_send(frame.clone()) {
                Ok(()) => sent += 1,
                Err(TrySendError::Full(_)) => slow.push(*user),
                Err(TrySendError::Closed(_)) => {}
            }
        }
        for user in slow {
            if let Some(member) = self.sockets.remove(&user) {
                member.close_code.store(CLOSE_TOO_SLOW, Ordering::Relaxed);
            }
            self.leave_room(user);
        }
        sent
    }
}

/// What every connection shares.
struct State {
    registry: Mutex<Registry>,
    /// Counter behind each notification's `msg_id`.
    next_msg_id: AtomicU64,
    /// Capacity of each connection's queue, in frames.
    queue: usize,
}

impl State {
    /// The registry (a panic while holding it leaves it usable).
    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A `send_gift` notification, in the Node peer's field order.
#[derive(Serialize)]
struct GiftFrame<'a> {
    action: &'static str,
    notify_type: &'a Value,
    channel_name: &'a str,
    gift: &'a Value,
    msg_id: &'a str,
}

/// The only field of a client frame the server looks at.
#[derive(Deserialize)]
struct ClientFrame<'a> {
    #[serde(borrow)]
    action: Cow<'a, str>,
}

fn main() -> std::io::Result<()> {
    let (port, queue) = args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(port, queue))
}

/// `--port` (default 9902) and `--queue` (default 4096).
fn args() -> (u16, usize) {
    let argv: Vec<String> = std::env::args().collect();
    let value = |name: &str| {
        argv.iter()
            .position(|a| a == name)
            .and_then(|i| argv.get(i + 1))
            .map(|v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{name}: not a number: {v}"))
            })
    };
    let port = value("--port").map_or(9902, |p: usize| p as u16);
    (port, value("--queue").unwrap_or(4096))
}

/// Accepts connections on `127.0.0.1:port` until SIGTERM or SIGINT.
async fn serve(port: u16, queue: usize) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let (mut term, mut int) = (
        signal(SignalKind::terminate())?,
        signal(SignalKind::interrupt())?,
    );
    eprintln!("bare peer listening on 127.0.0.1:{port}");
    let state = Arc::new(State {
        registry: Mutex::default(),
        next_msg_id: AtomicU64::new(1),
        queue: queue.max(1),
    });
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(http_connection(state.clone(), stream));
                }
                // Usually EMFILE: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            },
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
        }
    }
}

/// Serves HTTP/1.1 on `stream` until it closes or upgrades.
async fn http_connection(state: Arc<State>, stream: TcpStream) {
    let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades()
        .await;
}

/// Routes one request.
async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Answer, Infallible> {
    let answer = match (req.method(), req.uri().path()) {
        (&Method::GET, _) if req.headers().contains_key(header::SEC_WEBSOCKET_KEY) => {
            upgrade(state, req)
        }
        (&Method::GET, "/healthz") => Response::new(Full::new(Bytes::from_static(b"ok"))),
        (&Method::POST, "/api/v1/actions") => actions(&state, req).await,
        _ => json_answer(404, &error(1007, "no such route")),
    };
    Ok(answer)
}

/// Accepts a WebSocket upgrade of `?user_id=N` and spawns its task.
fn upgrade(state: Arc<State>, mut req: Request<Incoming>) -> Answer {
    let Some(user) = user_id_of(req.uri().query().unwrap_or_default()) else {
        return json_answer(400, &error(1001, "user_id required"));
    };
    let accept = derive_accept_key(req.headers()[header::SEC_WEBSOCKET_KEY].as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        // The raw socket back from hyper: frames skip its I/O wrapper.
        let Ok(parts) = upgraded.downcast::<TokioIo<TcpStream>>() else {
            return;
        };
        let config = WebSocketConfig::default()
            .read_buffer_size(BUFFER_BYTES)
            .write_buffer_size(BUFFER_BYTES)
            .max_message_size(Some(MAX_FRAME_BYTES))
            .max_frame_size(Some(MAX_FRAME_BYTES));
        let ws = WebSocketStream::from_partially_read(
            parts.io.into_inner(),
            parts.read_buf.to_vec(),
            Role::Server,
            Some(config),
        )
        .await;
        session(&state, ws, user).await;
    });
    let mut answer = Response::new(Full::default());
    *answer.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = answer.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).expect("base64 is a valid header value"),
    );
    answer
}

/// `N` of a query `…user_id=N…`.
fn user_id_of(query: &str) -> Option<u64> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("user_id="))
        .and_then(|v| v.parse().ok())
}

/// One WebSocket, from registration to close.
async fn session(state: &State, mut ws: Ws, user: u64) {
    let (tx, mut rx) = mpsc::channel(state.queue);
    let close_code = Arc::new(AtomicU16::new(CLOSE_REPLACED));
    let conn = state.registry().connect(user, tx, close_code.clone());
    // Registered first, greeted first: anything broadcast in between waits
    // in the queue behind `connected`.
    let hello = format!(r#"{{"action":"connected","user_id":{user}}}"#);
    if ws.send(Message::text(hello)).await.is_ok() {
        run(&mut ws, &mut rx, &close_code).await;
    }
    state.registry().disconnect(user, conn);
}

/// Writes queued frames and answers pings until either side closes.
async fn run(ws: &mut Ws, rx: &mut mpsc::Receiver<Utf8Bytes>, close_code: &AtomicU16) {
    loop {
        tokio::select! {
            frame = rx.recv() => {
                let Some(frame) = frame else {
                    // The registry dropped us: replaced, or too slow.
                    let code = close_code.load(Ordering::Relaxed);
                    let reason = if code == CLOSE_TOO_SLOW { "too slow" } else { "replaced" };
                    let close = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
                    let _ = ws.close(Some(close)).await;
                    return;
                };
                if write_batch(ws, frame, rx).await.is_err() {
                    return;
                }
            }
            incoming = ws.next() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    if is_ping(&text) && ws.send(Message::text(pong())).await.is_err() {
                        return;
                    }
                }
                // tungstenite answers a WebSocket ping or close by itself,
                // at the next write or flush.
                Some(Ok(Message::Close(_))) => {
                    let _ = ws.flush().await;
                    return;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            },
        }
    }
}

/// Writes `first` and whatever else is queued (up to [`MAX_BATCH`]) into
/// the write buffer, which goes out each time it passes 4 KiB, then
/// flushes the rest: one `write` per 4 KiB, not one per frame.
async fn write_batch(
    ws: &mut Ws,
    first: Utf8Bytes,
    rx: &mut mpsc::Receiver<Utf8Bytes>,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    ws.feed(Message::Text(first)).await?;
    for _ in 1..MAX_BATCH {
        let Ok(frame) = rx.try_recv() else { break };
        ws.feed(Message::Text(frame)).await?;
    }
    ws.flush().await
}

/// Whether a client frame is `{"action":"ping",…}`.
fn is_ping(text: &str) -> bool {
    serde_json::from_str::<ClientFrame>(text).is_ok_and(|f| f.action == "ping")
}

/// `{"action":"pong","server_time":<unix s>}`.
fn pong() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!(r#"{{"action":"pong","server_time":{now}}}"#)
}

/// `POST /api/v1/actions`: `enter_room` and `send_gift`.
async fn actions(state: &State, req: Request<Incoming>) -> Answer {
    let Ok(body) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
        return json_answer(400, &error(1001, "body not read"));
    };
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return json_answer(400, &error(1001, "not JSON"));
    };
    match body["action"].as_str() {
        Some("enter_room") => {
            let (Some(user), Some(channel)) =
                (body["user_id"].as_u64(), body["channel_name"].as_str())
            else {
                return json_answer(400, &error(1001, "user_id and channel_name required"));
            };
            state.registry().enter_room(user, channel);
            json_answer(200, &ok(&[]))
        }
        Some("send_gift") => {
            let msg_id = format!("m{}", state.next_msg_id.fetch_add(1, Ordering::Relaxed));
            let channel = body["channel_name"].as_str().unwrap_or_default();
            let frame = GiftFrame {
                action: "send_gift",
                notify_type: &body["notify_type"],
                channel_name: channel,
                gift: &body["gift"],
                msg_id: &msg_id,
            };
            // Serialized once; every member's queue gets the same bytes.
            let frame = Utf8Bytes::from(serde_json::to_string(&frame).expect("JSON values"));
            state.registry().broadcast(channel, &frame);
            json_answer(200, &ok(&[&msg_id]))
        }
        _ => json_answer(404, &error(1007, "unknown action")),
    }
}

/// `{"error_code":0,"error_reason":"","msg_ids":[…]}`.
fn ok(msg_ids: &[&str]) -> Value {
    json!({"error_code": 0, "error_reason": "", "msg_ids": msg_ids})
}

/// `{"error_code":code,"error_reason":reason}`.
fn error(code: u32, reason: &str) -> Value {
    json!({"error_code": code, "error_reason": reason})
}

/// An HTTP answer of `status` with a JSON body.
fn json_answer(status: u16, value: &Value) -> Answer {
    let mut answer = Response::new(Full::new(Bytes::from(value.to_string())));
    *answer.status_mut() = StatusCode::from_u16(status).expect("a valid status");
    answer.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_user_id() {
        assert_eq!(user_id_of("user_id=42"), Some(42));
        assert_eq!(user_id_of("a=1&user_id=7&b=2"), Some(7));
        assert_eq!(user_id_of("a=1"), None);
    }

    #[test]
    fn recognizes_pings() {
        assert!(is_ping(r#"{"action":"ping","nonce":"x","sign":"y"}"#));
        assert!(!is_ping(r#"{"action":"pong"}"#));
        assert!(!is_ping("not json"));
    }

    #[test]
    fn broadcasts_to_connected_members_and_drops_the_slow() {
        let mut registry = Registry::default();
        let (tx1, mut rx1) = mpsc::channel(1);
        let (tx2, _rx2) = mpsc::channel(1);
        let code2 = Arc::new(AtomicU16::new(CLOSE_REPLACED));
        registry.enter_room(1, "r");
        registry.enter_room(2, "r");
        registry.enter_room(3, "r"); // never connects
        registry.connect(1, tx1, Arc::default());
        registry.connect(2, tx2, code2.clone());
        assert_eq!(registry.broadcast("r", &"a".into()), 2);
        assert_eq!(rx1.try_recv().unwrap(), "a");
        // 2 never read its first frame: its queue of 1 is full.
        assert_eq!(registry.broadcast("r", &"b".into()), 1);
        assert_eq!(code2.load(Ordering::Relaxed), CLOSE_TOO_SLOW);
        assert!(!registry.sockets.contains_key(&2));
        assert!(!registry.room_of.contains_key(&2));
    }

    #[test]
    fn a_newer_connection_replaces_the_older() {
        let mut registry = Registry::default();
        let (tx1, mut rx1) = mpsc::channel::<Utf8Bytes>(1);
        let (tx2, _rx2) = mpsc::channel(1);
        registry.enter_room(1, "r");
        let first = registry.connect(1, tx1, Arc::default());
        registry.connect(1, tx2, Arc::default());
        // The older queue is closed; its end leaves the room untouched.
        assert!(rx1.try_recv().is_err() && rx1.is_closed());
        registry.disconnect(1, first);
        assert_eq!(registry.room_of.get(&1).map(String::as_str), Some("r"));
    }
}
