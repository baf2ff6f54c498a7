//! One WebSocket session: the task that owns a connection from the
//! `connected` frame to its close, with heartbeat, frame checks and the
//! outbound queue.
//!
//! The task reads and writes the socket itself (no second task per
//! connection: idle memory matters at 19,000 connections). It ends for
//! exactly one [`End`] reason, and the reason decides what follows: a
//! replaced or shut-down session leaves the user's room alone; any other
//! end is a disconnect (after `heartbeat.grace`, unless the user is back).

pub(crate) mod inbound;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::time::Instant;
use tracing::Instrument;

use crate::app::App;
use crate::registry::SessionHandle;
use chorus_protocol::codes::close;
use inbound::{Inbound, Verdict};

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The client closed or the connection dropped.
    ClientGone,
    /// No valid frame within `heartbeat.ping_timeout` (4000).
    HeartbeatTimeout,
    /// A newer connection of the same user took over (4009).
    Replaced,
    /// The app backend kicked the user (4010).
    Kicked,
    /// Closed by the server for the client's behaviour (1009, 4008, 4011).
    Misbehaved,
    /// The server is shutting down (1001).
    Shutdown,
}

/// Who the session is, as established by the upgrade's query.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The authenticated user.
    pub user_id: u64,
    /// The session token the connection was opened with.
    pub sid: String,
    /// Derived from the sid; signs this session's frames.
    pub sign_key: String,
}

/// Runs a session to its end, then cleans up after it.
pub async fn run(app: Arc<App>, socket: WebSocket, who: Identity) {
    let conn_id = app.ids.conn_id();
    let handle = SessionHandle::new(
        who.user_id,
        conn_id,
        crate::ids::online_token(),
        who.sid.clone(),
        app.config.limits.outbound_queue,
    );
    if let Some(old) = app.registry.insert(Arc::clone(&handle)) {
        replace(&old);
    }
    match app.store.set_online(who.user_id, &app.node_id).await {
        // One connection per user across nodes: the older one elsewhere
        // gets `kicked` and 4009 through the cluster bus.
        Ok(Some(before)) => {
            if let Some(cluster) = &app.cluster {
                cluster.replace_on(&before, who.user_id);
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(user_id = who.user_id, error = %e, "presence not recorded"),
    }
    metrics::gauge!("chorus_connections").increment(1.0);
    metrics::counter!("chorus_connections_opened_total").increment(1);
    let (sink, stream) = socket.split();
    let mut session = Session {
        app: Arc::clone(&app),
        handle: Arc::clone(&handle),
        sink,
        inbound: Inbound::new(who.clone()),
    };
    let span = tracing::info_span!("chorus.session", user_id = who.user_id, conn_id);
    let end = session.drive(stream).instrument(span).await;
    handle.mark_ended();
    metrics::gauge!("chorus_connections").decrement(1.0);
    // Boxed: the disconnect runs plugins; see `drive` for why not inline.
    Box::pin(finish(&app, &handle, end)).await;
}

/// Tells the old connection of a user it was replaced.
pub(crate) fn replace(old: &SessionHandle) {
    let kicked = json!({"action": "kicked", "reason": "replaced"}).to_string();
    old.send(Utf8Bytes::from(kicked));
    old.close(close::REPLACED, "replaced");
}

/// After the socket closed: presence, then the disconnect, now or after
/// the grace.
async fn finish(app: &Arc<App>, handle: &SessionHandle, end: End) {
    let code = handle.close_reason().map(|r| r.code).unwrap_or(0);
    metrics::counter!("chorus_connections_closed_total", "end" => format!("{end:?}"), "code" => code.to_string()).increment(1);
    let user_id = handle.user_id;
    tracing::debug!(user_id, ?end, "session ended");
    if !app.registry.remove(user_id, handle.conn_id) {
        return; // replaced: the new connection owns the user now
    }
    // A node of a cluster shutting down leaves its users' presence to its
    // lease: they have `store.lease_ttl` to reconnect elsewhere before a
    // survivor removes them from their rooms.
    let handover = end == End::Shutdown && app.cluster.is_some();
    if !handover && let Err(e) = app.store.set_offline(user_id, &app.node_id).await {
        tracing::warn!(user_id, error = %e, "presence not cleared");
    }
    match end {
        End::Shutdown | End::Replaced => {}
        End::Kicked => app.disconnect(user_id).await,
        _ if app.config.heartbeat.grace.is_zero() => app.disconnect(user_id).await,
        _ => schedule_disconnect(app, user_id),
    }
}

/// Disconnects the user after the grace unless they came back.
fn schedule_disconnect(app: &Arc<App>, user_id: u64) {
    let app2 = Arc::clone(app);
    let grace = app.config.heartbeat.grace;
    app.tracker.spawn(async move {
        tokio::select! {
            _ = tokio::time::sleep(grace) => {}
            _ = app2.shutdown.cancelled() => return,
        }
        if !app2.is_online(user_id).await {
            app2.disconnect(user_id).await;
        }
    });
}

/// The state of a running session task.
struct Session {
    /// The node.
    app: Arc<App>,
    /// This connection's shared handle.
    handle: Arc<SessionHandle>,
    /// Where frames to the client go.
    sink: SplitSink<WebSocket, Message>,
    /// Checks of client frames (token, signature, replay, bad-frame count).
    inbound: Inbound,
}

impl Session {
    /// The select loop; every arm calls a named method.
    async fn drive(&mut self, mut stream: SplitStream<WebSocket>) -> End {
        if self.send_connected().await.is_err() {
            return End::ClientGone;
        }
        let timeout = self.app.config.heartbeat.ping_timeout;
        let shutdown = self.app.shutdown.clone();
        let handle = Arc::clone(&self.handle);
        // Created once, not per wake-up: a fresh timer or cancellation
        // future in every `select!` would register with the timer wheel and
        // the shared shutdown token's waiter list for every frame delivered.
        let shutting_down = shutdown.cancelled();
        let closing = handle.closing();
        let heartbeat = tokio::time::sleep(timeout);
        tokio::pin!(shutting_down, closing, heartbeat);
        loop {
            tokio::select! {
                biased;
                _ = &mut shutting_down => return self.close(close::GOING_AWAY, "server shutting down", End::Shutdown).await,
                _ = &mut closing => return self.close_as_asked().await,
                _ = &mut heartbeat => {
                    metrics::counter!("chorus_heartbeat_timeouts_total").increment(1);
                    return self.close(close::HEARTBEAT_TIMEOUT, "heartbeat timeout", End::HeartbeatTimeout).await;
                }
                frame = handle.next_frame() => {
                    if self.write_batch(frame).await.is_err() {
                        return End::ClientGone;
                    }
                }
                // Boxed: handling a frame may run a plugin call, whose
                // future is large; inline it would sit in every idle
                // session's task for nothing.
                incoming = stream.next() => match Box::pin(self.on_incoming(incoming)).await {
                    Verdict::Renew => heartbeat.as_mut().reset(Instant::now() + timeout),
                    Verdict::Keep => {}
                    Verdict::Close(code, reason) => return self.close(code, reason, End::Misbehaved).await,
                    Verdict::Gone => return End::ClientGone,
                },
            }
        }
    }

    async fn send_connected(&mut self) -> Result<(), axum::Error> {
        let app = &self.app;
        let membership = app
            .store
            .membership_of(self.handle.user_id)
            .await
            .ok()
            .flatten();
        let frame = json!({
            "action": "connected",
            "online_token": self.handle.online_token,
            "ping_interval": crate::config::whole_seconds(app.config.heartbeat.ping_interval),
            "ping_timeout": crate::config::whole_seconds(app.config.heartbeat.ping_timeout),
            "server_time": crate::ids::unix_now(),
            "user_id": self.handle.user_id,
            "current_room_id": membership.as_ref().map(|m| m.room_id.to_string()).unwrap_or_default(),
            "channel_name": membership.map(|m| m.channel_name).unwrap_or_default(),
        });
        self.sink
            .send(Message::Text(frame.to_string().into()))
            .await
    }

    /// Writes one queued frame and whatever else is already queued, then
    /// flushes once.
    async fn write_batch(&mut self, first: Utf8Bytes) -> Result<(), axum::Error> {
        self.sink.feed(Message::Text(first)).await?;
        for _ in 0..64 {
            match self.handle.try_next_frame() {
                Some(frame) => self.sink.feed(Message::Text(frame)).await?,
                None => break,
            }
        }
        self.sink.flush().await
    }

    async fn on_incoming(&mut self, incoming: Option<Result<Message, axum::Error>>) -> Verdict {
        match incoming {
            None => Verdict::Gone,
            Some(Err(e)) => inbound::transport_error(&e),
            Some(Ok(Message::Text(text))) => {
                let (verdict, reply) = self
                    .inbound
                    .on_text(&self.app, &self.handle, text.as_str())
                    .await;
                if let Some(reply) = reply
                    && self.sink.send(Message::Text(reply.into())).await.is_err()
                {
                    return Verdict::Gone;
                }
                verdict
            }
            Some(Ok(Message::Binary(_))) => self.inbound.on_binary(&mut self.sink).await,
            Some(Ok(Message::Close(_))) => Verdict::Gone,
            // Control frames do not renew the session (PROTOCOL section 5).
            Some(Ok(_)) => Verdict::Keep,
        }
    }

    async fn close_as_asked(&mut self) -> End {
        let reason = self.handle.close_reason();
        let (code, text) = reason
            .map(|r| (r.code, r.reason))
            .unwrap_or((close::GOING_AWAY, String::new()));
        let end = match code {
            close::REPLACED => End::Replaced,
            close::KICKED => End::Kicked,
            _ => End::Misbehaved,
        };
        // Frames queued before a kick or replacement (such as `kicked`) go
        // out first; a slow consumer's full queue is dropped.
        if end != End::Misbehaved {
            let flush = async {
                while let Some(frame) = self.handle.try_next_frame() {
                    self.sink.feed(Message::Text(frame)).await?;
                }
                self.sink.flush().await
            };
            if !matches!(
                tokio::time::timeout(Duration::from_secs(2), flush).await,
                Ok(Ok(()))
            ) {
                return end;
            }
        }
        self.close(code, &text, end).await
    }

    async fn close(&mut self, code: u16, reason: &str, end: End) -> End {
        let frame = CloseFrame {
            code,
            reason: reason.to_string().into(),
        };
        let send = self.sink.send(Message::Close(Some(frame)));
        // A client that stopped reading must not hold the task forever; a
        // few seconds let one that is only slow still learn why it was closed.
        let _ = tokio::time::timeout(Duration::from_secs(5), send).await;
        end
    }
}
