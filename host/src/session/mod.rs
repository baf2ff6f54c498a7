//! One WebSocket session: the task that owns a connection from the
//! `connected` frame to its close, with heartbeat, frame checks and the
//! outbound queue.
//!
//! The task reads and writes the socket itself (no second task per
//! connection: idle memory matters at 19,000 connections). It ends for
//! exactly one [`End`], and the end decides what follows: a replaced or
//! shut-down session leaves the user's room alone; any other end is a
//! disconnect (after `heartbeat.grace`, unless the user is back).
//!
//! A session's registration (connection entry, gauge, presence) is held
//! by a [`Registration`] guard: however the task ends (returned,
//! cancelled, panicked), the registration is undone and the disconnect
//! flow runs.
//!
//! Layer: the top, beside `http`; uses `app` and everything below it.

pub(crate) mod inbound;
pub mod resume;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant;

use crate::admission::Ticket;
use crate::app::App;
use crate::connections::SessionHandle;
use crate::webhooks::DisconnectReason;
use chorus_protocol::{CloseCode, Disconnect, ServerFrame};
pub use inbound::MAX_REPLAY_ENTRIES;
use inbound::{Inbound, Verdict};
use resume::{Floors, Resume};

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The client closed, or the connection dropped or was reset.
    ClientGone,
    /// The server is shutting down (closed with 1001).
    Shutdown,
    /// The server closed it with this code and reason: heartbeat timeout,
    /// misbehaviour, slow consumer, replacement, kick, or a node that must
    /// be left.
    Closed(Disconnect),
}

impl End {
    /// The metrics label of this end.
    fn label(&self) -> &'static str {
        match self {
            End::ClientGone => "client_gone",
            End::Shutdown => "shutdown",
            End::Closed(_) => "closed",
        }
    }
}

/// Who the session is, as established by the upgrade's signed query.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The authenticated user.
    pub user_id: u64,
    /// The session token the connection was opened with.
    pub sid: String,
    /// Derived from the sid; signs this session's frames.
    pub sign_key: String,
    /// The sid's expiry (unix seconds): the session is closed with 4001
    /// then.
    pub expires_at: u64,
}

/// Runs a session to its end, then cleans up after it. With `resume`
/// (the upgrade query's `resume_*`), what the client missed is sent right
/// after `connected`, before anything else ([`resume`]). `ticket` (the
/// connection's admission place) is held until the session ends.
///
/// Not an `async fn`: everything that can be done without waiting (the
/// registration, splitting the socket, the session state) is done here,
/// and the future returned holds only what the session keeps. An `async
/// fn` would keep a slot for each argument (the socket alone is about 370
/// bytes) in every session's task for its whole life, next to the state
/// built from them: idle memory per connection (issue 20 item 2).
pub fn run(
    app: Arc<App>,
    socket: WebSocket,
    who: Principal,
    resume: Option<Resume>,
    ticket: Ticket,
) -> impl Future<Output = ()> + Send {
    let registration = Registration::new(&app, who.user_id, who.sid);
    let handle = Arc::clone(registration.handle());
    let (sink, stream) = socket.split();
    let mut session = Session {
        app,
        handle,
        sink,
        inbound: Inbound::new(who.sign_key),
        close_plan: None,
        sid_expires_at: who.expires_at,
        resume: resume.map(Box::new),
        floors: Floors::default(),
    };
    async move {
        let _ticket = ticket;
        registration.announce().await;
        // No span for the session's whole life (one is about 400 bytes in
        // the subscriber's registry): each action a client sends runs in a
        // `chorus.session` span of its own (`inbound::answer`).
        let end = session.drive(stream).await;
        // The close frame goes out on its own (bounded) task, so a client
        // that reads slowly delays nobody's `exit_room`, and shutdown waits
        // for it at most [`CLOSE_TIMEOUT`].
        if let Some(plan) = session.close_plan.take() {
            let handle = Arc::clone(&session.handle);
            session
                .app
                .tracker
                .spawn(send_close(session.sink, handle, *plan));
        }
        // Boxed: the disconnect runs plugins; see `drive` for why not inline.
        Box::pin(registration.finish(end)).await;
    }
}

/// A session's place in the node: its entry in the connections table, the
/// connection gauge and the user's presence. Undone exactly once: by
/// [`Registration::finish`], or, if the task is cancelled or panics first,
/// by `Drop`, which treats it as a connection that dropped.
pub struct Registration {
    /// The node.
    app: Arc<App>,
    /// The connection's handle.
    handle: Arc<SessionHandle>,
    /// Still to be undone.
    armed: bool,
}

impl Registration {
    /// Registers a new connection of `who`: replaces (4009) an older one
    /// of the same user here, and through presence on another node.
    pub async fn open(app: &Arc<App>, who: &Principal) -> Self {
        let registration = Self::new(app, who.user_id, who.sid.clone());
        registration.announce().await;
        registration
    }

    /// The part of [`Registration::open`] that does not wait: the handle
    /// of a new connection of `user_id` (opened with `sid`) in the
    /// connections table, replacing (4009) an older one of the same user
    /// here, and the gauge. [`Registration::announce`] does the rest.
    pub fn new(app: &Arc<App>, user_id: u64, sid: String) -> Self {
        let handle = SessionHandle::new(
            user_id,
            app.ids.conn_id(),
            crate::ids::online_token(),
            sid,
            app.config.limits.outbound_queue,
            app.shutdown.child_token(),
        );
        if let Some(old) = app.connections.insert(Arc::clone(&handle)) {
            old.replace();
        }
        metrics::gauge!("chorus_connections").increment(1.0);
        metrics::counter!("chorus_connections_opened_total").increment(1);
        // Armed at once, so a session dropped before it ran undoes itself.
        Self {
            app: Arc::clone(app),
            handle,
            armed: true,
        }
    }

    /// Records the user online on this node (replacing, through the
    /// cluster, a connection on another node) and, with webhooks,
    /// `session.connected`; both before `connected` is sent (issue 16).
    pub async fn announce(&self) {
        let (app, user_id) = (&self.app, self.handle.user_id);
        match app.store.set_online(user_id, &app.node_id).await {
            Ok(Some(before)) => {
                if let Some(cluster) = &app.cluster {
                    cluster.replace_on(&before, user_id);
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(user_id, error = %e, "presence not recorded"),
        }
        if let Some(hooks) = &app.webhooks
            && let Err(e) = hooks.session_connected(user_id).await
        {
            tracing::error!(user_id, error = %e, "session.connected not recorded");
        }
    }

    /// The connection's handle.
    pub fn handle(&self) -> &Arc<SessionHandle> {
        &self.handle
    }

    /// Undoes the registration after the session ended for `end`, and
    /// runs what follows: nothing, a disconnect now, or one after the
    /// grace (PROTOCOL section 5).
    pub async fn finish(mut self, end: End) {
        self.armed = false;
        let registered = self.unregister(&end);
        if registered {
            after(&self.app, self.handle.user_id, end).await;
        }
    }

    /// The synchronous part: the handle refuses new frames, the gauge goes
    /// down, the table entry goes (if still this connection's); whether it
    /// was still registered (false once replaced).
    fn unregister(&self, end: &End) -> bool {
        self.handle.mark_ended();
        metrics::gauge!("chorus_connections").decrement(1.0);
        let code = match end {
            End::Closed(how) => how.code.code().to_string(),
            End::Shutdown => CloseCode::GoingAway.code().to_string(),
            End::ClientGone => "none".to_string(),
        };
        metrics::counter!("chorus_connections_closed_total", "end" => end.label(), "code" => code)
            .increment(1);
        tracing::debug!(user_id = self.handle.user_id, ?end, "session ended");
        self.app
            .connections
            .remove(self.handle.user_id, self.handle.conn_id)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // The session task was cancelled or panicked: a dropped connection.
        tracing::warn!(
            user_id = self.handle.user_id,
            "session task ended abnormally"
        );
        if self.unregister(&End::ClientGone) {
            let app = Arc::clone(&self.app);
            let user_id = self.handle.user_id;
            let cleanup = async move { after(&app, user_id, End::ClientGone).await };
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                self.app.tracker.spawn_on(cleanup, &runtime);
            }
        }
    }
}

/// After a registered session ended: presence, then the disconnect, now
/// or after the grace, or none.
async fn after(app: &Arc<App>, user_id: u64, end: End) {
    // A node of a cluster shutting down leaves its users' presence to its
    // lease: they have `store.lease_ttl` to reconnect elsewhere before a
    // survivor removes them from their rooms.
    let handover = end == End::Shutdown && app.cluster.is_some();
    if !handover && let Err(e) = app.store.set_offline(user_id, &app.node_id).await {
        tracing::warn!(user_id, error = %e, "presence not cleared");
    }
    let reason = match &end {
        End::Closed(how) if how.code == CloseCode::HeartbeatTimeout => {
            DisconnectReason::HeartbeatTimeout
        }
        End::Closed(how) if how.code == CloseCode::Kicked => DisconnectReason::Kicked,
        _ => DisconnectReason::ConnectionClosed,
    };
    match end {
        End::Shutdown => {}
        // Replacement is not a disconnect (PROTOCOL section 4).
        End::Closed(how) if how.code == CloseCode::Replaced => {}
        // A kick is a disconnect with no grace (PROTOCOL section 8).
        End::Closed(how) if how.code == CloseCode::Kicked => app.disconnect(user_id, reason).await,
        _ if app.config.heartbeat.grace.is_zero() => app.disconnect(user_id, reason).await,
        _ => app.disconnect_after_grace(user_id, reason),
    }
}

/// How long closing may take: queued frames that must go first (the
/// `kicked` frame, the last error) and the close frame. A client that
/// stopped reading does not hold the socket longer.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Most frames written in one turn of the loop before reading again.
const WRITE_BATCH: usize = 64;

/// What one turn of writing achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Written {
    /// Everything queued is written and flushed.
    All,
    /// Some frames went into the socket; more are waiting for it.
    Some,
}

/// The state of a running session task.
struct Session {
    /// The node.
    app: Arc<App>,
    /// This connection's shared handle.
    handle: Arc<SessionHandle>,
    /// Where frames to the client go. Only the loop's write arm and
    /// `close` write to it; replies go through the outbox like any frame.
    sink: SplitSink<WebSocket, Message>,
    /// Checks of client frames (token, signature, replay, bad-frame count).
    inbound: Inbound,
    /// The close frame to send once the loop ended, if any.
    close_plan: Option<Box<ClosePlan>>,
    /// When the sid expires (unix seconds): the loop closes with 4001.
    sid_expires_at: u64,
    /// The resume the client asked for, until it is answered. Boxed: most
    /// sessions have none, and the box costs them 8 bytes instead of 88.
    resume: Option<Box<Resume>>,
    /// Duplicates of a resume's replay to drop from the outbox.
    floors: Floors,
}

/// The session's deadlines, served by one timer in [`Session::drive`].
#[derive(Debug, Clone, Copy)]
struct Deadlines {
    /// No valid frame since `heartbeat.ping_timeout`: 4002.
    heartbeat: Instant,
    /// The sid's expiry: 4001.
    sid_expires: Instant,
    /// A write in progress made no progress since `limits.write_timeout`:
    /// 4011. `None` while nothing is being written.
    stalled: Option<Instant>,
}

/// Which deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    SidExpired,
    Heartbeat,
    Stalled,
}

impl Deadlines {
    /// The earliest deadline.
    fn next(&self) -> Instant {
        let soonest = self.heartbeat.min(self.sid_expires);
        self.stalled.map_or(soonest, |stalled| stalled.min(soonest))
    }

    /// The deadline passed at `now`, if any; when several did, the one
    /// checked first wins: the sid's expiry, the heartbeat, the stalled
    /// write (the order of the arms before they shared a timer).
    fn due(&self, now: Instant) -> Option<Due> {
        if self.sid_expires <= now {
            Some(Due::SidExpired)
        } else if self.heartbeat <= now {
            Some(Due::Heartbeat)
        } else if self.stalled.is_some_and(|stalled| stalled <= now) {
            Some(Due::Stalled)
        } else {
            None
        }
    }
}

/// `now + after`, or about 30 years from now if that overflows (as
/// `tokio::time::sleep` does).
fn later(after: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(after)
        .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30))
}

/// A close frame to send after the session loop ended.
#[derive(Debug)]
struct ClosePlan {
    /// The code and reason.
    how: Disconnect,
    /// Send the queued frames first (`kicked`, the last error frame).
    flush: bool,
    /// A write was in progress: finish it first.
    writing: bool,
}

impl Session {
    /// The select loop; every arm calls a named method.
    ///
    /// No arm awaits the socket's write side: writing is one arm among the
    /// others, polled only for as long as the socket takes bytes, so a
    /// client that stops reading never stops this loop from reading,
    /// answering, keeping its heartbeat or closing. A write that makes no
    /// progress for `limits.write_timeout` closes the connection (4011).
    async fn drive(&mut self, mut stream: SplitStream<WebSocket>) -> End {
        let write_timeout = self.app.config.limits.write_timeout;
        match tokio::time::timeout(write_timeout, self.send_connected()).await {
            Ok(Ok(())) => {}
            _ => return End::ClientGone,
        }
        if let Some(resume) = self.resume.take() {
            // Boxed: answering a resume is the largest state of this
            // future, and inline it would sit in every session's task.
            let answer = Box::pin(self.send_resume(resume));
            match tokio::time::timeout(write_timeout, answer).await {
                Ok(Ok(())) => {}
                _ => return End::ClientGone,
            }
        }
        let timeout = self.app.config.heartbeat.ping_timeout;
        let handle = Arc::clone(&self.handle);
        // Created once, not per wake-up: a fresh timer or cancellation
        // future in every `select!` would register with the timer wheel and
        // the token's waiter list for every frame delivered. The handle's
        // token is a child of the node's shutdown token, so one future
        // serves both (a second one would be 72 more bytes per session).
        let closing = handle.closing();
        // One timer for the three deadlines (heartbeat, sid expiry, a
        // stalled write): each `Sleep` is 112 bytes of every idle session.
        let mut deadlines = Deadlines {
            heartbeat: Instant::now() + timeout,
            sid_expires: later(self.sid_lifetime()),
            stalled: None,
        };
        let timer = tokio::time::sleep_until(deadlines.next());
        tokio::pin!(closing, timer);
        let mut writing = false;
        loop {
            tokio::select! {
                biased;
                _ = &mut closing => {
                    if self.app.shutdown.is_cancelled() {
                        self.close(Disconnect::new(CloseCode::GoingAway), writing, false);
                        return End::Shutdown;
                    }
                    return self.close_as_asked(writing);
                }
                _ = &mut timer => match deadlines.due(Instant::now()) {
                    Some(Due::SidExpired) => return self.sid_expired(writing),
                    Some(Due::Heartbeat) => {
                        metrics::counter!("chorus_heartbeat_timeouts_total").increment(1);
                        return self.close(Disconnect::new(CloseCode::HeartbeatTimeout), writing, true);
                    }
                    Some(Due::Stalled) => return self.write_timed_out(),
                    // A deadline that moved later since the timer was set.
                    None => timer.as_mut().reset(deadlines.next()),
                },
                incoming = stream.next() => match Box::pin(self.on_incoming(incoming)).await {
                    // Boxed: handling a frame may run a plugin call, whose
                    // future is large; inline it would sit in every idle
                    // session's task for nothing.
                    Verdict::Renew => deadlines.heartbeat = Instant::now() + timeout,
                    Verdict::Keep => {}
                    Verdict::Close(how) => return self.close(how, writing, true),
                    Verdict::Gone => return End::ClientGone,
                },
                written = std::future::poll_fn(|cx| poll_write(&mut self.sink, &handle, &mut self.floors, cx)), if writing => {
                    match written {
                        Ok(Written::All) => {
                            writing = false;
                            deadlines.stalled = None;
                        }
                        Ok(Written::Some) => deadlines.stalled = Some(Instant::now() + write_timeout),
                        Err(_) => return End::ClientGone,
                    }
                }
                _ = handle.frame_ready(), if !writing => {
                    writing = true;
                    let stalled = Instant::now() + write_timeout;
                    deadlines.stalled = Some(stalled);
                    // Only an earlier deadline moves the timer; a later one
                    // is found when it fires (above), so a busy session does
                    // not touch the timer wheel for every write.
                    if stalled < timer.deadline() {
                        timer.as_mut().reset(stalled);
                    }
                }
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
        let frame = ServerFrame::Connected {
            online_token: self.handle.online_token.clone(),
            ping_interval: crate::config::whole_seconds(app.config.heartbeat.ping_interval),
            ping_timeout: crate::config::whole_seconds(app.config.heartbeat.ping_timeout),
            server_time: crate::ids::unix_now(),
            user_id: self.handle.user_id,
            current_room_id: membership
                .as_ref()
                .map(|m| m.room_id.to_string())
                .unwrap_or_default(),
            channel_name: membership.map(|m| m.channel_name).unwrap_or_default(),
        };
        self.sink.send(Message::Text(frame.encode().into())).await
    }

    /// Answers the client's resume: the missed frames, `room_state` if
    /// needed, `resumed`; all written before any queued frame.
    async fn send_resume(&mut self, resume: Box<Resume>) -> Result<(), axum::Error> {
        let app = &self.app;
        let outcome = resume::run(
            app.store.as_ref(),
            self.handle.user_id,
            &resume,
            app.config.recovery.snapshot_members,
        )
        .await;
        self.floors = outcome.floors;
        for frame in outcome.frames {
            self.sink.feed(Message::Text(frame.into())).await?;
        }
        self.sink.flush().await
    }

    /// Handles what the client sent; a reply joins the outbox (behind the
    /// notifications already queued: one order for everything).
    async fn on_incoming(&mut self, incoming: Option<Result<Message, axum::Error>>) -> Verdict {
        let (verdict, reply) = match incoming {
            None => return Verdict::Gone,
            Some(Err(e)) => return inbound::transport_error(e),
            Some(Ok(Message::Text(text))) => {
                self.inbound
                    .on_text(&self.app, &self.handle, text.as_str())
                    .await
            }
            Some(Ok(Message::Binary(_))) => self.inbound.on_binary(),
            Some(Ok(Message::Close(_))) => return Verdict::Gone,
            // Control frames do not renew the session (PROTOCOL section 5).
            Some(Ok(_)) => return Verdict::Keep,
        };
        if let Some(reply) = reply {
            self.handle.send(Utf8Bytes::from(reply));
        }
        verdict
    }

    /// How long the session's sid stays valid from now (a sid expiring
    /// within the current second ends the session at once).
    fn sid_lifetime(&self) -> Duration {
        let now = crate::ids::unix_now();
        Duration::from_secs(self.sid_expires_at.saturating_sub(now))
    }

    /// The sid expired while the session was open: 4001, as a sid that
    /// expired before the upgrade is refused (issue 21).
    fn sid_expired(&mut self, writing: bool) -> End {
        let how = Disconnect::with_reason(CloseCode::AuthFailed, "session expired");
        self.close(how, writing, true)
    }

    /// The write stalled for `limits.write_timeout`: 4011, without a close
    /// frame (the socket takes nothing).
    fn write_timed_out(&self) -> End {
        metrics::counter!("chorus_write_timeouts_total").increment(1);
        End::Closed(Disconnect::with_reason(
            CloseCode::SlowConsumer,
            "write timed out",
        ))
    }

    /// Closes as another task asked through the handle (kick, replacement,
    /// slow consumer, node rejoin).
    fn close_as_asked(&mut self, writing: bool) -> End {
        let how = self
            .handle
            .close_reason()
            .unwrap_or(Disconnect::new(CloseCode::GoingAway));
        // Frames queued before a kick or replacement (such as `kicked`) go
        // out first; any other close (a slow consumer's full queue) drops
        // what is queued.
        let flush = matches!(how.code, CloseCode::Replaced | CloseCode::Kicked);
        self.close(how, writing, flush)
    }

    /// Ends the loop with `how`; the close frame (after the queued frames,
    /// with `flush`) is sent by [`send_close`].
    fn close(&mut self, how: Disconnect, writing: bool, flush: bool) -> End {
        self.close_plan = Some(Box::new(ClosePlan {
            how: how.clone(),
            flush,
            writing,
        }));
        End::Closed(how)
    }
}

/// Sends what is queued (with `flush`) and the close frame, within
/// [`CLOSE_TIMEOUT`]; whatever does not fit is dropped with the connection.
async fn send_close(
    mut sink: SplitSink<WebSocket, Message>,
    handle: Arc<SessionHandle>,
    plan: ClosePlan,
) {
    let frame = CloseFrame {
        code: plan.how.code.code(),
        reason: plan.how.reason().to_string().into(),
    };
    let send = async {
        if plan.flush {
            while let Some(queued) = handle.try_next_frame() {
                if sink.feed(Message::Text(queued)).await.is_err() {
                    return;
                }
            }
        }
        if plan.flush || plan.writing {
            let _ = sink.flush().await;
        }
        let _ = sink.send(Message::Close(Some(frame))).await;
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, send).await;
}

/// Writes queued frames while the socket takes them, at most
/// [`WRITE_BATCH`] per turn, then flushes once. Ready when all is flushed
/// ([`Written::All`]) or when some frames went in and the socket is full
/// ([`Written::Some`], so the loop can note the progress); pending while the
/// socket takes nothing.
fn poll_write(
    sink: &mut SplitSink<WebSocket, Message>,
    handle: &SessionHandle,
    floors: &mut Floors,
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<Result<Written, axum::Error>> {
    use std::task::Poll;
    let mut fed = 0;
    while fed < WRITE_BATCH {
        match sink.poll_ready_unpin(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending if fed > 0 => return Poll::Ready(Ok(Written::Some)),
            Poll::Pending => return Poll::Pending,
        }
        let Some(frame) = handle.try_next_frame() else {
            break;
        };
        if !floors.admit(frame.as_str()) {
            continue;
        }
        sink.start_send_unpin(Message::Text(frame))?;
        fed += 1;
    }
    match sink.poll_flush_unpin(cx) {
        Poll::Ready(Ok(())) if fed < WRITE_BATCH => Poll::Ready(Ok(Written::All)),
        Poll::Ready(Ok(())) => Poll::Ready(Ok(Written::Some)),
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Pending if fed > 0 => Poll::Ready(Ok(Written::Some)),
        Poll::Pending => Poll::Pending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future `run` returns: most of a session's task,
    /// which every idle connection keeps.
    fn run_future_size<F: Future>(_: fn(Arc<App>, WebSocket, Principal, Option<Resume>, Ticket) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    #[test]
    fn the_session_future_stays_small() {
        fn drive_size<'a, F: Future>(
            _: impl FnOnce(&'a mut Session, SplitStream<WebSocket>) -> F,
        ) -> usize {
            std::mem::size_of::<F>()
        }
        let (run, drive) = (run_future_size(run), drive_size(Session::drive));
        eprintln!(
            "run future: {run} bytes; drive future: {drive}; Session: {}; WebSocket: {}; Sleep: {}",
            std::mem::size_of::<Session>(),
            std::mem::size_of::<WebSocket>(),
            std::mem::size_of::<tokio::time::Sleep>(),
        );
        assert!(run <= 4096, "the session future grew to {run} bytes");
    }

    #[test]
    fn one_timer_serves_three_deadlines_in_the_order_of_the_arms() {
        let now = Instant::now();
        let s = Duration::from_secs(1);
        let mut d = Deadlines {
            heartbeat: now + 10 * s,
            sid_expires: now + 20 * s,
            stalled: None,
        };
        assert_eq!(d.next(), now + 10 * s);
        assert_eq!(d.due(now + 9 * s), None);
        assert_eq!(d.due(now + 10 * s), Some(Due::Heartbeat));
        d.stalled = Some(now + 5 * s);
        assert_eq!(d.next(), now + 5 * s);
        assert_eq!(d.due(now + 5 * s), Some(Due::Stalled));
        assert_eq!(d.due(now + 20 * s), Some(Due::SidExpired));
        d.heartbeat = now + 30 * s;
        d.stalled = None;
        assert_eq!(d.next(), now + 20 * s);
        assert!(later(Duration::from_secs(u64::MAX)) > now);
    }
}
