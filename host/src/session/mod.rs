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

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{SinkExt, StreamExt};
use tokio::time::{Instant, Sleep};

use crate::admission::Ticket;
use crate::app::App;
use crate::connections::{Asked, SessionHandle};
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
/// after `connected`, before anything else ([`resume`]).
///
/// Not an `async fn`: the arguments of one would keep their slots (the
/// socket alone is 368 bytes) in every session's task for its whole life;
/// they are handed over boxed, and moved out at the start (issue 20 item 2).
pub fn run(
    app: Arc<App>,
    socket: WebSocket,
    who: Principal,
    resume: Option<Resume>,
    ticket: Ticket,
) -> impl Future<Output = ()> {
    run_started(Box::new(Start {
        app,
        socket,
        who,
        resume,
        ticket,
    }))
}

/// What [`run`] is given.
struct Start {
    app: Arc<App>,
    socket: WebSocket,
    who: Principal,
    resume: Option<Resume>,
    /// The connection's place under the caps, held until the session ends.
    ticket: Ticket,
}

/// [`run`], once its arguments are boxed.
async fn run_started(start: Box<Start>) {
    let Start {
        app,
        socket,
        who,
        resume,
        ticket,
    } = *start;
    let _ticket = ticket;
    // Boxed: it runs once, and inline its state would be part of every
    // session's task for the session's whole life (issue 20 item 2).
    let registration = Box::pin(Registration::open(&app, &who)).await;
    let handle = Arc::clone(registration.handle());
    // The credentials are kept once: the sid in the handle, the sign_key
    // in the frame checks (a second copy was 264 bytes per connection).
    let Principal {
        sid,
        sign_key,
        expires_at,
        ..
    } = who;
    drop(sid);
    let mut session = Session {
        app: Arc::clone(&app),
        handle: Arc::clone(&handle),
        socket,
        inbound: Inbound::new(sign_key),
        close_plan: None,
        sid_expires_at: expires_at,
        resume: resume.map(Box::new),
        floors: Floors::default(),
    };
    // No span for the session's whole life (one is about 400 bytes in the
    // subscriber's registry, issue 20 item 2): each action a client sends
    // runs in a `chorus.session` span of its own (`inbound::answer`).
    let end = session.drive().await;
    // The close frame goes out on its own (bounded) task, so a client that
    // reads slowly delays nobody's `exit_room`, and shutdown waits for it
    // at most [`CLOSE_TIMEOUT`].
    if let Some(plan) = session.close_plan.take() {
        app.tracker
            .spawn(send_close(session.socket, Arc::clone(&handle), *plan));
    }
    // Boxed: the disconnect runs plugins; see `drive` for why not inline.
    Box::pin(registration.finish(end)).await;
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
        let handle = SessionHandle::new(
            who.user_id,
            app.ids.conn_id(),
            crate::ids::OnlineToken::random(),
            who.sid.clone(),
            app.config.limits.outbound_queue,
        );
        if let Some(old) = app.connections.insert(Arc::clone(&handle)) {
            old.replace();
        }
        // After the insert: either the shutdown sweep (`shut_sessions`)
        // finds this handle in the table, or the token is cancelled already.
        if app.shutdown.is_cancelled() {
            handle.shut_down();
        }
        metrics::gauge!("chorus_connections").increment(1.0);
        metrics::counter!("chorus_connections_opened_total").increment(1);
        // Armed before the first await, so a cancelled open undoes itself.
        let registration = Self {
            app: Arc::clone(app),
            handle,
            armed: true,
        };
        match app.store.set_online(who.user_id, &app.node_id).await {
            Ok(Some(before)) => {
                if let Some(cluster) = &app.cluster {
                    cluster.replace_on(&before, who.user_id);
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(user_id = who.user_id, error = %e, "presence not recorded"),
        }
        // Recorded before `connected` is sent (issue 16).
        if let Some(hooks) = &app.webhooks
            && let Err(e) = hooks.session_connected(who.user_id).await
        {
            tracing::error!(user_id = who.user_id, error = %e, "session.connected not recorded");
        }
        registration
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
        // A client that is back already (a quick reconnect, here or on
        // another node) keeps its room: see `App::disconnect_unless_back`.
        _ if app.config.heartbeat.grace.is_zero() => {
            app.disconnect_unless_back(user_id, reason).await;
        }
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
    /// The client's socket, read and written by this task alone (not
    /// split: no lock between the two halves). Only the loop's writing
    /// and `send_close` write to it; replies go through the outbox like
    /// any frame.
    socket: WebSocket,
    /// Checks of client frames (token, signature, replay, bad-frame count).
    inbound: Inbound,
    /// The close frame to send once the loop ended, if any.
    close_plan: Option<Box<ClosePlan>>,
    /// When the sid expires (unix seconds): the loop closes with 4001.
    sid_expires_at: u64,
    /// The resume the client asked for, until it is answered (boxed: most
    /// sessions have none, and it would be 88 bytes of every one).
    resume: Option<Box<Resume>>,
    /// Duplicates of a resume's replay to drop from the outbox.
    floors: Floors,
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

/// What the session loop woke up for, in the order it looks (the first
/// that holds wins).
#[derive(Debug)]
enum Event {
    /// The node is shutting down.
    Shutdown,
    /// Another task asked to close (kick, replacement, slow consumer).
    Close,
    /// The sid expired.
    SidExpired,
    /// Nothing from the client for `heartbeat.ping_timeout`.
    HeartbeatTimeout,
    /// The socket took nothing for `limits.write_timeout`.
    WriteStalled,
    /// The client sent something, or the stream ended.
    Incoming(Option<Result<Message, axum::Error>>),
    /// Writing failed: the connection is gone.
    WriteFailed,
}

/// The session's deadlines behind one timer: the heartbeat's and the
/// sid's, and while a write is blocked, the stall's. The timer is set to
/// the earliest of them or earlier: a renewed heartbeat only moves its
/// deadline here, and the timer, when it fires first, is set again.
/// Nothing of this runs per frame written: the stall deadline is set only
/// when the socket stops taking bytes.
#[derive(Debug)]
struct Deadlines {
    /// Closes with 4000 when reached.
    heartbeat: Instant,
    /// Closes with 4001 when reached.
    sid: Instant,
    /// While the socket takes nothing: closes with 4011 when reached.
    stall: Option<Instant>,
}

impl Deadlines {
    /// The earliest deadline.
    fn next(&self) -> Instant {
        let first = self.heartbeat.min(self.sid);
        self.stall.map_or(first, |stall| stall.min(first))
    }

    /// The deadline passed, if one did, in the loop's order (sid,
    /// heartbeat, stall); pending until then, with the task woken by the
    /// timer.
    fn poll(&self, mut timer: Pin<&mut Sleep>, cx: &mut Context<'_>) -> Poll<Event> {
        loop {
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            if now >= self.sid {
                return Poll::Ready(Event::SidExpired);
            }
            if now >= self.heartbeat {
                return Poll::Ready(Event::HeartbeatTimeout);
            }
            if self.stall.is_some_and(|stall| now >= stall) {
                return Poll::Ready(Event::WriteStalled);
            }
            timer.as_mut().reset(self.next());
        }
    }

    /// The socket stopped taking bytes: the write stalls at `at` unless
    /// it makes progress before.
    fn arm_stall(&mut self, at: Instant, timer: Pin<&mut Sleep>) {
        self.stall = Some(at);
        if at < timer.deadline() {
            timer.reset(at);
        }
    }
}

/// `now + after`, or about 30 years from now if that overflows (as
/// `tokio::time::sleep` does).
fn deadline_after(now: Instant, after: Duration) -> Instant {
    now.checked_add(after)
        .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30))
}

impl Session {
    /// The session loop: waits for the next [`Event`] and handles it with
    /// a named method.
    ///
    /// The loop is woken by the socket, by its one timer ([`Deadlines`])
    /// and by the handle (a frame queued on an empty queue, a close asked,
    /// shutdown: one waker, read as flags). No event awaits the socket's
    /// write side: writing happens inside the wait, only for as long as
    /// the socket takes bytes, so a client that stops reading never stops
    /// this loop from reading, answering, keeping its heartbeat or
    /// closing. A write that makes no progress for `limits.write_timeout`
    /// closes the connection (4011).
    async fn drive(&mut self) -> End {
        let write_timeout = self.app.config.limits.write_timeout;
        // Boxed, like every await that runs once: inline, the largest of
        // them sets the size of every idle session's task (issue 20 item 2).
        match tokio::time::timeout(write_timeout, Box::pin(self.send_connected())).await {
            Ok(Ok(())) => {}
            _ => return End::ClientGone,
        }
        if let Some(resume) = self.resume.take() {
            match tokio::time::timeout(write_timeout, Box::pin(self.send_resume(*resume))).await {
                Ok(Ok(())) => {}
                _ => return End::ClientGone,
            }
        }
        let timeout = self.app.config.heartbeat.ping_timeout;
        let now = Instant::now();
        let mut deadlines = Deadlines {
            heartbeat: deadline_after(now, timeout),
            sid: deadline_after(now, self.sid_lifetime()),
            stall: None,
        };
        // One timer, created once: a timer per deadline, or a fresh one per
        // wake-up, would be polled (or registered) for every frame delivered.
        let timer = tokio::time::sleep_until(deadlines.next());
        tokio::pin!(timer);
        let mut writing = false;
        loop {
            let event = std::future::poll_fn(|cx| {
                self.poll_event(&mut deadlines, timer.as_mut(), &mut writing, cx)
            })
            .await;
            match event {
                Event::Shutdown => {
                    self.close(Disconnect::new(CloseCode::GoingAway), writing, false);
                    return End::Shutdown;
                }
                Event::Close => return self.close_as_asked(writing),
                Event::SidExpired => return self.sid_expired(writing),
                Event::HeartbeatTimeout => {
                    metrics::counter!("chorus_heartbeat_timeouts_total").increment(1);
                    return self.close(Disconnect::new(CloseCode::HeartbeatTimeout), writing, true);
                }
                Event::WriteStalled => return self.write_timed_out(),
                Event::WriteFailed => return End::ClientGone,
                // Boxed: handling a frame may run a plugin call, whose
                // future is large; inline it would sit in every idle
                // session's task for nothing.
                Event::Incoming(incoming) => match Box::pin(self.on_incoming(incoming)).await {
                    Verdict::Renew => {
                        deadlines.heartbeat = deadline_after(Instant::now(), timeout);
                        // The client is heard from: a queue emptied since
                        // gives back its burst-sized buffer.
                        self.handle.shrink_idle();
                    }
                    Verdict::Keep => {}
                    Verdict::Close(how) => return self.close(how, writing, true),
                    Verdict::Gone => return End::ClientGone,
                },
            }
        }
    }

    /// One wake-up of the loop: the handle's flags, the timer, the
    /// client's frames, then writing what is queued while the socket takes
    /// it. Ready with the first [`Event`] found; pending once the queue is
    /// written (or the socket is full) and nothing else happened.
    fn poll_event(
        &mut self,
        deadlines: &mut Deadlines,
        mut timer: Pin<&mut Sleep>,
        writing: &mut bool,
        cx: &mut Context<'_>,
    ) -> Poll<Event> {
        match self.handle.watch(cx) {
            Asked::Shutdown => return Poll::Ready(Event::Shutdown),
            Asked::Close => return Poll::Ready(Event::Close),
            Asked::Nothing => {}
        }
        if let Poll::Ready(event) = deadlines.poll(timer.as_mut(), cx) {
            return Poll::Ready(event);
        }
        loop {
            if let Poll::Ready(incoming) = self.socket.poll_next_unpin(cx) {
                return Poll::Ready(Event::Incoming(incoming));
            }
            if !*writing {
                if !self.handle.has_frames() {
                    return Poll::Pending;
                }
                *writing = true;
            }
            match poll_write(&mut self.socket, &self.handle, &mut self.floors, cx) {
                Poll::Ready(Ok(Written::All)) => {
                    *writing = false;
                    deadlines.stall = None;
                }
                // Progress: look at the client's side, then write on (a
                // full socket answers pending next, and the stall starts).
                Poll::Ready(Ok(Written::Some)) => deadlines.stall = None,
                Poll::Ready(Err(_)) => return Poll::Ready(Event::WriteFailed),
                Poll::Pending => {
                    if deadlines.stall.is_none() {
                        let at =
                            deadline_after(Instant::now(), self.app.config.limits.write_timeout);
                        deadlines.arm_stall(at, timer.as_mut());
                        return deadlines.poll(timer, cx);
                    }
                    return Poll::Pending;
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
            online_token: self.handle.online_token.as_str().to_string(),
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
        self.socket.send(Message::Text(frame.encode().into())).await
    }

    /// Answers the client's resume: the missed frames, `room_state` if
    /// needed, `resumed`; all written before any queued frame.
    async fn send_resume(&mut self, resume: Resume) -> Result<(), axum::Error> {
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
            self.socket.feed(Message::Text(frame.into())).await?;
        }
        self.socket.flush().await
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
async fn send_close(mut sink: WebSocket, handle: Arc<SessionHandle>, plan: ClosePlan) {
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
/// [`WRITE_BATCH`] per turn, and flushes once the queue is empty. Ready
/// when all is flushed ([`Written::All`]) or when some frames went in and
/// the socket is full or the batch is done ([`Written::Some`], so the loop
/// can note the progress and look at the client's side); pending while the
/// socket takes nothing. A full batch is not flushed: the write buffer goes
/// out as it fills (4 KiB), and what is left with the queue's last frame.
fn poll_write(
    sink: &mut WebSocket,
    handle: &SessionHandle,
    floors: &mut Floors,
    cx: &mut Context<'_>,
) -> Poll<Result<Written, axum::Error>> {
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
    if fed == WRITE_BATCH {
        return Poll::Ready(Ok(Written::Some));
    }
    match sink.poll_flush_unpin(cx) {
        Poll::Ready(Ok(())) => Poll::Ready(Ok(Written::All)),
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Pending if fed > 0 => Poll::Ready(Ok(Written::Some)),
        Poll::Pending => Poll::Pending,
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;

    /// The size of the future `run` returns: most of a session's task,
    /// which every idle connection keeps (issue 20 item 2).
    fn run_future_size<F: Future>(
        _: fn(Arc<App>, WebSocket, Principal, Option<Resume>, Ticket) -> F,
    ) -> usize {
        std::mem::size_of::<F>()
    }

    /// Release only (`cargo test --release -p chorus --lib
    /// session::size_tests`): an unoptimized build lays futures out larger.
    #[test]
    #[cfg_attr(debug_assertions, ignore = "future sizes are those of a release build")]
    fn the_session_future_stays_small() {
        fn drive_size<'a, F: Future>(_: impl FnOnce(&'a mut Session) -> F) -> usize {
            std::mem::size_of::<F>()
        }
        let (run, drive) = (run_future_size(run), drive_size(Session::drive));
        eprintln!(
            "run future: {run} bytes; drive future: {drive}; Session: {}; WebSocket: {}; Resume: {}; Principal: {}",
            std::mem::size_of::<Session>(),
            std::mem::size_of::<WebSocket>(),
            std::mem::size_of::<Option<Resume>>(),
            std::mem::size_of::<Principal>(),
        );
        // 1,240 bytes in a release build (2026-11-30); a debug build is
        // larger. A regression to the 2.5 KB of before fails here.
        assert!(run <= 2048, "the session future grew to {run} bytes");
    }
}
