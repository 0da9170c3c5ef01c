//! The chat socket: checks at the handshake, then one task that reads requests and
//! writes the connection's outbound queue.
//!
//! The handshake refuses a foreign `Origin` (403) and a user or address over its socket
//! allowance (429). A page speaking an older protocol version is let through the
//! handshake and closed at once with 4009 (a newer one with 1013), and a missing or
//! dead session with 4001: a browser cannot read the status of a refused handshake, and
//! without a close code it could not tell "reload" or "log in again" from "server
//! down". After the handshake every frame is metered (token buckets), oversized frames
//! close the socket with 1009, and a client that keeps pushing after being refused is
//! closed with 1008. A request that panics is answered with an `internal` error and the
//! socket goes on.
//!
//! Everything sent to a client (replies and events alike) goes through its bounded
//! queue in the hub, so replies keep their place among events and a client that stops
//! reading is found out in one place. The socket pings every `heartbeat_interval` and
//! closes a peer silent for `heartbeat_timeout`, so dead connections do not linger.

use std::{future::Future, net::IpAddr, panic::AssertUnwindSafe, pin::Pin, sync::Arc, task::Poll, time::Duration};

use app::protocol::{ClientMsg, ErrorCode, ServerMsg, PROTOCOL_VERSION};
use axum::{
    extract::{
        ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade},
        FromRequestParts, Request, State,
    },
    http::header::ORIGIN,
    response::Response,
};
use futures::{FutureExt, Sink, SinkExt, StreamExt};
use tokio::time::{sleep_until, Instant, Sleep};
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::{
    accounts::{session_token, Accounts},
    chat::{Caller, Chat},
    config::Config,
    error::AppError,
    hub::{CloseReason, CloseSignal, Connection, Hub, OutboundReceiver, Outgoing},
    limits::{ConnectionLimits, Limiters, Slot, Verdict},
    metrics::{self, Limit},
    net,
    state::AppState,
    storage::{SessionRecord, Store},
};

/// Per-connection buffer sizes. The library defaults (128 KiB write buffer) would cost
/// far more per idle connection than chat frames ever need. The read buffer is filled
/// with zeros up to its size before every read, so all of it is resident for every
/// idle socket: 512 bytes hold a typical chat request, and a longer frame grows it
/// (read 512 bytes at a time: a 16 KiB message takes 32 reads, rare enough to cost
/// little).
const READ_BUFFER_BYTES: usize = 512;
const WRITE_BUFFER_BYTES: usize = 8 * 1024;
/// How long the close frame may wait behind unread data. Long enough for a client that
/// was only paused (a phone waking up) to read its way to the reason; short enough
/// that a dead peer does not keep its buffers.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a socket closed by a limit waits for its peer's close frame (see
/// `close_and_linger`): a peer that is reading answers within a round trip.
const LINGER_TIMEOUT: Duration = Duration::from_secs(2);
/// Frames gathered into one write at most, so a long backlog still lets the writer
/// notice a close signal between writes.
const MAX_FRAMES_PER_WRITE: usize = 64;
/// Close code when the server cannot serve the connection (RFC 6455 1011).
const CLOSE_INTERNAL_ERROR: u16 = 1011;

/// Who is connecting, for the logs.
#[derive(Debug, Clone)]
struct Peer {
    ip: IpAddr,
    origin: String,
    /// The page had a socket before this one (`&resume=1`).
    reconnecting: bool,
}

/// The value of `key` in a request's query, if present.
fn query_value<'q>(query: Option<&'q str>, key: &str) -> Option<&'q str> {
    query?.split('&').find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
}

pub async fn upgrade(State(state): State<AppState>, request: Request) -> Result<Response, AppError> {
    let (mut parts, _body) = request.into_parts();
    let headers = &parts.headers;
    let peer = Peer {
        ip: net::client_ip(&parts.extensions, headers, state.config.security.trust_forwarded_for),
        origin: headers.get(ORIGIN).and_then(|o| o.to_str().ok()).unwrap_or("-").to_string(),
        reconnecting: query_value(parts.uri.query(), "resume") == Some("1"),
    };
    // The version the page speaks (`/ws?protocol=N`, see `app::protocol::socket_path`).
    let spoken: Option<u32> = query_value(parts.uri.query(), "protocol").and_then(|version| version.parse().ok());
    let tls = net::over_tls(headers, state.config.tls.enabled(), state.config.security.trust_forwarded_for);
    if !net::origin_allowed(headers, tls, &state.config.security.allowed_origins) {
        tracing::warn!(ip = %peer.ip, origin = %peer.origin, "socket refused: origin not allowed");
        return Err(AppError::Forbidden("This origin may not open a chat socket."));
    }
    let ws = WebSocketUpgrade::from_request_parts(&mut parts, &state).await.map_err(|rejection| {
        tracing::info!(ip = %peer.ip, "not a WebSocket handshake: {rejection}");
        AppError::Invalid("Expected a WebSocket handshake.".into())
    })?;
    // The address's allowance first: sockets turned away (another protocol, no
    // session) count against it too while they are being closed.
    let Some(ip_slot) = state.limiters.socket_slot(peer.ip) else {
        metrics::rate_limited(Limit::SocketsPerAddress);
        tracing::warn!(ip = %peer.ip, "socket refused: too many sockets from this address");
        return Err(AppError::RateLimited(crate::limits::RetryAfter(Duration::from_secs(5))));
    };
    // An older page is told to reload; a newer one (a deploy is rolling and this
    // node is not updated yet) to come back, most likely to an updated node.
    let refused = match spoken {
        Some(version) if version == PROTOCOL_VERSION => None,
        Some(version) if version > PROTOCOL_VERSION => Some(CloseReason::PageNewer),
        _ => Some(CloseReason::Outdated),
    };
    if let Some(reason) = refused {
        tracing::info!(ip = %peer.ip, ?spoken, "socket refused: the page speaks another protocol version");
        return Ok(ws.on_upgrade(move |socket| refuse(socket, reason, ip_slot)));
    }
    let session = match session_token(&parts.headers) {
        Some(token) => state.accounts.authenticate(&token).await?.map(|record| Session { token, record }),
        None => None,
    };
    let Some(session) = session else {
        tracing::info!(ip = %peer.ip, origin = %peer.origin, "socket refused: no live session");
        return Ok(ws.on_upgrade(move |socket| refuse(socket, CloseReason::SessionEnded, ip_slot)));
    };
    let limits = &state.config.limits;
    let user_id = session.record.user.id;
    // The allowance counts the person's sockets on every node (as they last said).
    let elsewhere_full = state.cluster.is_some() && state.hub.sockets_of(user_id) >= limits.sockets_per_user;
    let Some(user_slot) = state.limiters.user_socket_slot(user_id).filter(|_| !elsewhere_full) else {
        metrics::rate_limited(Limit::SocketsPerUser);
        tracing::warn!(user = user_id, ip = %peer.ip, "socket refused: too many sockets for this user");
        return Err(AppError::RateLimited(crate::limits::RetryAfter(Duration::from_secs(5))));
    };
    let ws = ws
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_write_buffer_size(limits.outbound_queue_bytes.max(WRITE_BUFFER_BYTES * 2))
        .max_message_size(limits.max_ws_message_bytes)
        .max_frame_size(limits.max_ws_message_bytes);
    let opened = Box::new(Opened { services: SocketServices::of(&state), session, peer, _slots: (user_slot, ip_slot) });
    Ok(ws.on_upgrade(move |socket| serve(Box::new(socket), opened)))
}

/// Closes a socket that may not be served, with the reason, without reading from it.
/// `_ip_slot` holds the address's allowance until it is closed.
async fn refuse(mut socket: WebSocket, reason: CloseReason, _ip_slot: Slot<IpAddr>) {
    let _ = close(&mut socket, reason.code(), reason.text()).await;
    metrics::socket_closed(reason);
}

/// Removes the connection from the hub however the task ends.
struct Registered<'a> {
    hub: &'a Hub,
    id: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.hub.disconnect(self.id);
    }
}

/// What an open socket uses of the application: seven pointers, where all of
/// [`AppState`] (272 bytes, most of it for rendering pages) would be kept by every
/// idle socket.
struct SocketServices {
    config: Arc<Config>,
    hub: Arc<Hub>,
    accounts: Arc<Accounts>,
    chat: Arc<Chat>,
    limiters: Arc<Limiters>,
    store: Arc<dyn Store>,
    tasks: TaskTracker,
}

impl SocketServices {
    fn of(state: &AppState) -> Self {
        SocketServices {
            config: state.config.clone(),
            hub: state.hub.clone(),
            accounts: state.accounts.clone(),
            chat: state.chat.clone(),
            limiters: state.limiters.clone(),
            store: state.store.clone(),
            tasks: state.tasks.clone(),
        }
    }
}

/// What the handshake found out about a socket, kept for as long as it is open. It
/// lives in one box that the socket's task points to: an async fn keeps its
/// arguments in its future beside the locals they are moved to, and the upgrade's
/// callback keeps what it captured, so passed by value this would be stored three
/// times over in every open socket's task.
struct Opened {
    services: SocketServices,
    session: Session,
    peer: Peer,
    /// The user's and the address's socket allowance, held while the socket lives.
    _slots: (Slot<i64>, Slot<IpAddr>),
}

/// Serves one socket to its end. The socket stays in its box (for the reason above),
/// and one task both reads and writes it: a second task would cost every idle socket
/// its own future, tokio's header and a lock around the shared socket.
async fn serve(mut socket: Box<WebSocket>, opened: Box<Opened>) {
    let Opened { services, session, peer, .. } = &*opened;
    let _in_flight = services.tasks.token();
    // Boxed, as the rarer steps below: what runs once or seldom would otherwise size
    // this future, which every open socket keeps (test: `an_idle_socket_keeps_a_small_task`).
    let (hello, connection) = match Box::pin(services.chat.connect(&session.record.user, session.record.session_id)).await {
        Ok((hello, connection)) => (Message::text(hello.encode()), connection),
        Err(err) => {
            tracing::error!(user = session.record.user.id, error = %err, "cannot greet a new connection");
            let _ = Box::pin(close(&mut socket, CLOSE_INTERNAL_ERROR, "internal error")).await;
            return;
        }
    };
    let Connection { id, outbound, close: close_signal } = connection;
    let _registered = Registered { hub: &services.hub, id };
    // Every line logged about this socket carries its id and user. The span is entered
    // only where something may be logged (a request, a frame read, closing), not on
    // every wake-up to write: that is a measurable share of a delivery's cost.
    let span = tracing::info_span!("socket", conn = id, user = session.record.user.id);
    // The greeting goes straight to the socket, ahead of anything already queued.
    if socket.send(hello).await.is_err() {
        return;
    }
    metrics::socket_greeted(peer.reconnecting);
    span.in_scope(|| tracing::info!(ip = %peer.ip, origin = %peer.origin, reconnecting = peer.reconnecting, "socket connected"));
    let caller = Caller { conn: id, user: session.record.user.clone() };
    let talk = Conversation { services, caller: &caller, token: &session.token, close_signal: &close_signal, span: &span };
    let reason = talk.run(&mut socket, outbound).await;
    metrics::socket_closed(reason);
    span.in_scope(|| {
        if matches!(reason, CloseReason::PeerClosed | CloseReason::ShuttingDown | CloseReason::SessionEnded) {
            tracing::info!(ip = %peer.ip, ?reason, "socket closed");
        } else {
            tracing::warn!(ip = %peer.ip, ?reason, "socket closed by a limit");
        }
    });
}

/// Waits, on shutdown, until the posts this socket queued are answered, so that its
/// queue is drained after their answers and its sender is told of what was stored
/// (within the time a close may take; a sender not told retries, and a retry is
/// answered as the same).
async fn settle_posts(services: &SocketServices) {
    match tokio::time::timeout(CLOSE_TIMEOUT, services.store.posts_settled()).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::warn!(error = %err, "posts did not settle before closing"),
        Err(_) => tracing::warn!("posts did not settle in time before closing"),
    }
}

/// The session a socket was opened with, kept to check that it is still live.
struct Session {
    token: String,
    record: SessionRecord,
}

/// Whether the socket's session is still live. Logout closes its sockets at once (on
/// another node, through the cluster link; one racing this socket's handshake as it
/// registers), but a session can also end unseen (idle expiry, an event the link
/// lost): checking at every heartbeat bounds how long a dead session's socket goes on.
async fn session_ended(services: &SocketServices, token: &str) -> bool {
    match services.accounts.authenticate(token).await {
        Ok(live) => live.is_none(),
        // A database hiccup is not a reason to drop everyone; the next check decides.
        Err(err) => {
            tracing::warn!(error = %err, "cannot recheck a socket's session");
            false
        }
    }
}

/// Whether a read error is a frame over the size limit.
fn is_too_big(err: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(current) = source {
        if let Some(tungstenite::Error::Capacity(_)) = current.downcast_ref::<tungstenite::Error>() {
            return true;
        }
        source = current.source();
    }
    false
}

/// A request being answered, or the session being rechecked. Boxed while it runs (see
/// [`serve`]); the socket goes on writing meanwhile (a blocked write included).
type Busy<'a> = Pin<Box<dyn Future<Output = Done> + Send + 'a>>;

/// What the socket's [`Busy`] work came to.
enum Done {
    /// A request's answer, if it has one.
    Answered(Option<ServerMsg>),
    SessionChecked { ended: bool },
}

/// The socket's work besides reading and writing: the request being answered (the
/// next is read once it is done) and the session being rechecked (reading goes on).
#[derive(Default)]
struct Work<'a> {
    answering: Option<Busy<'a>>,
    checking: Option<Busy<'a>>,
}

impl<'a> Work<'a> {
    fn is_some(&self) -> bool {
        self.answering.is_some() || self.checking.is_some()
    }

    /// The next piece of work to finish. Cancel-safe: unfinished work stays.
    async fn next_done(&mut self) -> Done {
        std::future::poll_fn(|cx| {
            for slot in [&mut self.answering, &mut self.checking] {
                if let Some(work) = slot {
                    if let Poll::Ready(done) = work.as_mut().poll(cx) {
                        *slot = None;
                        return Poll::Ready(done);
                    }
                }
            }
            Poll::Pending
        })
        .await
    }

    /// Finishes what is under way, whatever it comes to.
    async fn finish(self) -> Option<ServerMsg> {
        if let Some(checking) = self.checking {
            checking.await;
        }
        match self.answering {
            Some(answering) => match answering.await {
                Done::Answered(answer) => answer,
                Done::SessionChecked { .. } => None,
            },
            None => None,
        }
    }
}

/// What one frame read from the socket asks for.
enum Read {
    /// Nothing to answer (a ping or pong).
    Nothing,
    /// An answer known at once: a refusal.
    Answer(ServerMsg),
    /// A request to handle.
    Request(ClientMsg),
    Close(CloseReason),
}

/// Who is on the socket, and what serving them needs.
struct Conversation<'a> {
    services: &'a SocketServices,
    caller: &'a Caller,
    token: &'a str,
    close_signal: &'a CloseSignal,
    span: &'a tracing::Span,
}

/// How writing ended early.
enum WriteStopped {
    /// The connection is broken: no close frame can go out.
    Broken,
    /// A reason to close came first; the close frame is still due.
    Closing(CloseReason),
}

impl<'a> Conversation<'a> {
    /// Reads and answers requests, writes the connection's queue, pings and rechecks
    /// the session, until the connection ends; then sends the close frame where one
    /// is due. Returns why it ended.
    async fn run(&self, socket: &mut WebSocket, mut outbound: OutboundReceiver) -> CloseReason {
        let limits_config = &self.services.config.limits;
        // Every heartbeat pings the peer and rechecks the session. It was checked in
        // the handshake, and a logout since then closed this socket as it registered
        // (the hub remembers sessions ended lately).
        let mut heartbeat = Heartbeat::new(
            Duration::from_secs(limits_config.heartbeat_interval_secs.max(1)),
            Duration::from_secs(limits_config.heartbeat_timeout_secs.max(1)),
            Instant::now(),
        );
        let wake = sleep_until(heartbeat.next_wake());
        tokio::pin!(wake);
        // One wait for the close signal, shared by every select below, rather than a
        // new waiter registered (and dropped) for each frame.
        let closed = self.close_signal.closed();
        tokio::pin!(closed);
        let mut limits = self.services.limiters.connection();
        let mut work = Work::default();
        let stopped = loop {
            let written = tokio::select! {
                biased;
                reason = &mut closed => break WriteStopped::Closing(reason),
                // Early: a socket kept busy reading or writing still pings, and notices
                // silence and a session that ended unseen.
                () = &mut wake => {
                    let now = Instant::now();
                    // Frames are not read while a request is answered: silence then
                    // is not the peer's.
                    if work.answering.is_some() {
                        heartbeat.heard(now);
                    }
                    let due = heartbeat.due(now);
                    wake.as_mut().reset(heartbeat.next_wake());
                    match due {
                        Due::Silent => break WriteStopped::Closing(CloseReason::HeartbeatTimeout),
                        Due::Nothing => continue,
                        Due::Ping => {
                            if work.checking.is_none() {
                                work.checking = Some(self.check_session());
                            }
                            self.write_before_closing(socket, None, &mut outbound, closed.as_mut(), wake.as_mut(), &mut heartbeat, &mut work).await
                        }
                    }
                }
                done = work.next_done(), if work.is_some() => {
                    if matches!(done, Done::Answered(_)) {
                        // Reading starts again: what the peer sent meanwhile is still
                        // to be read.
                        heartbeat.heard(Instant::now());
                    }
                    if self.take_done(done) {
                        break WriteStopped::Closing(CloseReason::SessionEnded);
                    }
                    continue;
                }
                // Before the queue: a queue kept busy must not keep requests waiting.
                frame = socket.next(), if work.answering.is_none() => {
                    heartbeat.heard(Instant::now());
                    match self.span.in_scope(|| read(frame, &mut limits)) {
                        Read::Nothing => {}
                        Read::Answer(answer) => self.services.hub.send_to(self.caller.conn, &answer),
                        Read::Request(msg) => work.answering = Some(self.answer(msg)),
                        Read::Close(reason) => break WriteStopped::Closing(reason),
                    }
                    continue;
                }
                next = outbound.recv() => match next {
                    Some(first) => {
                        self.write_before_closing(socket, Some(first), &mut outbound, closed.as_mut(), wake.as_mut(), &mut heartbeat, &mut work).await
                    }
                    // The hub let go of the connection: it was told why first.
                    None => break WriteStopped::Closing(self.close_signal.reason().unwrap_or(CloseReason::PeerClosed)),
                },
            };
            if let Err(stopped) = written {
                break stopped;
            }
        };
        let reason = match stopped {
            WriteStopped::Broken => CloseReason::PeerClosed,
            WriteStopped::Closing(reason) => reason,
        };
        // The first reason given wins: one the hub gave may have come before ours.
        self.close_signal.close(reason);
        let reason = self.close_signal.reason().unwrap_or(reason);
        let send_close = matches!(stopped, WriteStopped::Closing(_));
        Box::pin(self.finish(socket, outbound, work, reason, send_close).instrument(self.span.clone())).await;
        reason
    }

    fn answer(&self, msg: ClientMsg) -> Busy<'a> {
        let (services, caller) = (self.services, self.caller);
        Box::pin(async move { Done::Answered(handle_contained(services, caller, msg).await) }.instrument(self.span.clone()))
    }

    fn check_session(&self) -> Busy<'a> {
        let (services, token) = (self.services, self.token);
        Box::pin(async move { Done::SessionChecked { ended: session_ended(services, token).await } }.instrument(self.span.clone()))
    }

    /// Sends a finished request's answer; true if the session was found ended.
    fn take_done(&self, done: Done) -> bool {
        match done {
            Done::Answered(Some(answer)) => {
                self.services.hub.send_to(self.caller.conn, &answer);
                false
            }
            Done::Answered(None) => false,
            Done::SessionChecked { ended } => ended,
        }
    }

    /// Ends the connection. The request being answered is finished first, whatever
    /// the reason and however long it takes (as it would be with the socket open):
    /// it may have stored something, and the rest of what it does (the hub's view of
    /// rooms, the person's other sockets) must follow. For most reasons the close
    /// frame goes out meanwhile (a slow consumer could not take the rest of its queue
    /// anyway). On shutdown nothing queued is dropped: the request's answer and those
    /// of posts still being committed join the queue, every queued frame is written,
    /// then the close (1012: come back).
    async fn finish(&self, socket: &mut WebSocket, mut outbound: OutboundReceiver, work: Work<'a>, reason: CloseReason, send_close: bool) {
        let answered = async {
            if let Some(answer) = work.finish().await {
                self.services.hub.send_to(self.caller.conn, &answer);
            }
        };
        if !send_close {
            return answered.await;
        }
        if reason != CloseReason::ShuttingDown {
            tokio::join!(answered, close_and_linger(socket, reason));
            return;
        }
        answered.await;
        let flushed = async {
            settle_posts(self.services).await;
            while let Some(outgoing) = outbound.try_recv() {
                write(socket, Some(outgoing), &mut outbound).await?;
            }
            Ok::<(), axum::Error>(())
        };
        if matches!(tokio::time::timeout(CLOSE_TIMEOUT, flushed).await, Ok(Ok(()))) {
            // Not lingering: the server is going, and its peers will come back anyway.
            let _ = close(socket, reason.code(), reason.text()).await;
        }
    }

    /// Writes `first` (a ping when `None`) and the frames queued behind it. A peer that
    /// stopped reading blocks the write, so a reason to close (slow consumer, shutdown,
    /// the peer's silence) must still get through: the write is raced against them,
    /// and the socket's busy work goes on beside it. The write in flight is never
    /// started over: once begun, its frame may already sit in the socket's buffer. On
    /// shutdown it is part of what must go out: it may finish.
    #[allow(clippy::too_many_arguments)]
    async fn write_before_closing(
        &self,
        socket: &mut WebSocket,
        first: Option<Outgoing>,
        outbound: &mut OutboundReceiver,
        mut closed: Pin<&mut impl Future<Output = CloseReason>>,
        mut wake: Pin<&mut Sleep>,
        heartbeat: &mut Heartbeat,
        work: &mut Work<'a>,
    ) -> Result<(), WriteStopped> {
        let written = write(socket, first, outbound);
        tokio::pin!(written);
        // Set once the timer finds the write held up (the clock is not read for a
        // write that goes straight through): when the peer counts as silent.
        let mut held_up_until: Option<Instant> = None;
        let reason = loop {
            tokio::select! {
                biased;
                result = &mut written => {
                    if held_up_until.is_some() {
                        // A peer that took a write it had held up is reading: alive.
                        heartbeat.heard(Instant::now());
                        wake.as_mut().reset(heartbeat.next_wake());
                    }
                    return result.map_err(|_| WriteStopped::Broken);
                }
                reason = &mut closed => break reason,
                done = work.next_done(), if work.is_some() => {
                    if self.take_done(done) {
                        break CloseReason::SessionEnded;
                    }
                }
                () = wake.as_mut() => {
                    let now = Instant::now();
                    // Nothing is read while the write is held up, so what the peer sent
                    // meanwhile is not seen: its silence counts from here at the earliest.
                    let silent_after =
                        *held_up_until.get_or_insert_with(|| heartbeat.silent_after().max(now + heartbeat.timeout));
                    if now >= silent_after {
                        break CloseReason::HeartbeatTimeout;
                    }
                    // A ping due waits too: it goes once this write is done.
                    wake.as_mut().reset(silent_after);
                }
            }
        };
        if reason == CloseReason::ShuttingDown && !Box::pin(self.finish_write(written, work)).await {
            return Err(WriteStopped::Broken);
        }
        Err(WriteStopped::Closing(reason))
    }

    /// Lets a write finish on shutdown, within the time a close may take, with the
    /// socket's work going on beside it. True if it was written.
    async fn finish_write(&self, mut written: Pin<&mut impl Future<Output = Result<(), axum::Error>>>, work: &mut Work<'a>) -> bool {
        let give_up = tokio::time::sleep(CLOSE_TIMEOUT);
        tokio::pin!(give_up);
        loop {
            tokio::select! {
                biased;
                result = &mut written => return result.is_ok(),
                done = work.next_done(), if work.is_some() => {
                    // Closing already: a session found ended changes nothing.
                    self.take_done(done);
                }
                () = &mut give_up => return false,
            }
        }
    }
}

/// Decodes a frame and meters it: what it asks for, or why to close.
fn read(frame: Option<Result<Message, axum::Error>>, limits: &mut ConnectionLimits) -> Read {
    let decoded = match frame {
        Some(Ok(Message::Text(text))) => ClientMsg::decode(&text).map_err(|err| err.into_reply()),
        Some(Ok(Message::Binary(_))) => Err(ServerMsg::Error {
            id: None,
            code: ErrorCode::BadRequest,
            message: "frames must be JSON text, not binary".into(),
            retry_after_ms: None,
        }),
        // Not answered, but not free either: a flood of them is metered like any frame
        // (it would otherwise keep the socket reading instead of writing).
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
            return match limits.check(false) {
                Verdict::Abusive => Read::Close(CloseReason::PolicyViolation),
                Verdict::Allowed | Verdict::Refused(_) => Read::Nothing,
            };
        }
        Some(Ok(Message::Close(_))) | None => return Read::Close(CloseReason::PeerClosed),
        Some(Err(err)) if is_too_big(&err) => return Read::Close(CloseReason::TooBig),
        Some(Err(err)) => {
            tracing::info!(error = %err, "socket read failed");
            return Read::Close(CloseReason::PeerClosed);
        }
    };
    // Requests that write to the database draw on the stricter message bucket.
    let verdict = match &decoded {
        Ok(ClientMsg::Send { client_id, .. }) => limits.check_post(client_id),
        Ok(ClientMsg::CreateRoom { .. } | ClientMsg::JoinRoom { .. } | ClientMsg::LeaveRoom { .. } | ClientMsg::OpenDirect { .. }) => {
            limits.check(true)
        }
        _ => limits.check(false),
    };
    match verdict {
        Verdict::Abusive => Read::Close(CloseReason::PolicyViolation),
        Verdict::Refused(retry) => {
            metrics::rate_limited(Limit::SocketFrames);
            tracing::debug!("frame refused: rate limited");
            let id = decoded.as_ref().map(ClientMsg::id).unwrap_or(0);
            Read::Answer(AppError::RateLimited(retry).into_reply(id))
        }
        Verdict::Allowed => match decoded {
            Ok(msg) => Read::Request(msg),
            Err(refusal) => Read::Answer(refusal),
        },
    }
}

/// Answers one request. A panic inside it (a bug reached by some input) is contained
/// here: logged with the request's type, answered with an `internal` error, and the
/// socket reads on. Locks taken inside are async or poison-tolerant and transactions
/// roll back when dropped, so nothing is left half-done.
async fn handle_contained(services: &SocketServices, caller: &Caller, msg: ClientMsg) -> Option<ServerMsg> {
    let (id, kind) = (msg.id(), msg.kind());
    // Lines logged while handling it carry the request's id and type.
    let span = tracing::info_span!("request", id, kind);
    let handled = async {
        let reply = services.chat.handle(caller, msg).await;
        tracing::debug!(refused = matches!(reply, Some(ServerMsg::Error { .. })), "request handled");
        reply
    };
    match AssertUnwindSafe(handled.instrument(span)).catch_unwind().await {
        Ok(reply) => reply,
        Err(_panic) => {
            // The panic's own message is not logged: it can quote the request's text.
            metrics::request_panicked();
            tracing::error!(request = kind, id, "request panicked");
            Some(AppError::internal(std::io::Error::other("the request panicked")).into_reply(id))
        }
    }
}

/// When the socket's one timer should wake it: to ping the peer (and recheck the
/// session) every heartbeat, and to close once the peer has been silent too long. A
/// frame read only notes the time; the timer moves when it fires. (Two timers, one
/// pushed back by every frame, cost every idle socket another allocation and every
/// frame a timer update.)
#[derive(Debug)]
struct Heartbeat {
    every: Duration,
    timeout: Duration,
    next_ping: Instant,
    last_heard: Instant,
}

/// What the heartbeat's timer found due.
#[derive(Debug, PartialEq, Eq)]
enum Due {
    Ping,
    /// Nothing heard from the peer for the whole timeout.
    Silent,
    /// Woken early: the peer was heard since the timer was set.
    Nothing,
}

impl Heartbeat {
    fn new(every: Duration, timeout: Duration, now: Instant) -> Self {
        Heartbeat { every, timeout, next_ping: now + every, last_heard: now }
    }

    fn heard(&mut self, now: Instant) {
        self.last_heard = now;
    }

    fn silent_after(&self) -> Instant {
        self.last_heard + self.timeout
    }

    fn next_wake(&self) -> Instant {
        self.next_ping.min(self.silent_after())
    }

    /// What is due at `now`; a ping found due is taken (the next is a heartbeat later).
    fn due(&mut self, now: Instant) -> Due {
        if now >= self.silent_after() {
            Due::Silent
        } else if now >= self.next_ping {
            self.next_ping = now + self.every;
            Due::Ping
        } else {
            Due::Nothing
        }
    }
}

/// Writes one frame (a ping when `None`) and the frames queued behind it, then flushes
/// once: a socket with a backlog gets one system call for many frames instead of one
/// each. Measures how long each stored message took to get here.
async fn write<S>(sink: &mut S, first: Option<Outgoing>, outbound: &mut OutboundReceiver) -> Result<(), axum::Error>
where
    S: Sink<Message, Error = axum::Error> + Unpin,
{
    let Some(first) = first else {
        return sink.send(Message::Ping(Default::default())).await;
    };
    let mut next = Some(first);
    let mut fed = 0;
    while let Some(outgoing) = next {
        sink.feed(Message::Text(outgoing.frame)).await?;
        if let Some(committed_at) = outgoing.committed_at {
            metrics::delivery_latency(committed_at.elapsed());
        }
        fed += 1;
        next = if fed < MAX_FRAMES_PER_WRITE { outbound.try_recv() } else { None };
    }
    sink.flush().await
}

/// Sends the close frame for `reason`, then reads (and drops) what the peer still
/// sends until its own close frame: closing a connection with data unread makes the
/// kernel reset it, and a reset can cost the peer the close frame and its reason (a
/// client flooding the socket would see no 1008).
async fn close_and_linger(socket: &mut WebSocket, reason: CloseReason) {
    if close(socket, reason.code(), reason.text()).await.is_err() {
        return;
    }
    let peer_closed = async {
        while let Some(Ok(message)) = socket.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIMEOUT, peer_closed).await;
}

async fn close<S>(sink: &mut S, code: u16, reason: &'static str) -> Result<(), ()>
where
    S: Sink<Message, Error = axum::Error> + Unpin,
{
    let frame = Message::Close(Some(CloseFrame { code, reason: reason.into() }));
    match tokio::time::timeout(CLOSE_TIMEOUT, sink.send(frame)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

#[cfg(test)]
mod tests {
    use std::{
        pin::Pin,
        task::{Context, Poll},
    };

    use axum::extract::ws::Utf8Bytes;

    use super::*;
    use crate::hub::outbound::{queue, QueueLimits};

    /// A socket that records what it was asked to do.
    #[derive(Default)]
    struct RecordingSink {
        frames: Vec<String>,
        flushes: usize,
        flushed_frames: usize,
    }

    impl Sink<Message> for RecordingSink {
        type Error = axum::Error;

        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn start_send(mut self: Pin<&mut Self>, message: Message) -> Result<(), Self::Error> {
            if let Message::Text(text) = message {
                self.frames.push(text.to_string());
            }
            Ok(())
        }

        fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            self.flushes += 1;
            self.flushed_frames = self.frames.len();
            Poll::Ready(Ok(()))
        }

        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
    }

    fn outgoing(text: &str) -> Outgoing {
        Outgoing { frame: Utf8Bytes::from(text.to_string()), committed_at: None }
    }

    #[tokio::test]
    async fn frames_waiting_behind_the_first_go_out_in_one_flush_in_order() {
        let (tx, mut rx) = queue(QueueLimits { max_frames: 1_000, max_bytes: 1 << 20 });
        for n in 1..=4 {
            tx.push(Utf8Bytes::from(format!("frame {n}")), None).unwrap();
        }
        let mut sink = RecordingSink::default();
        write(&mut sink, Some(outgoing("frame 0")), &mut rx).await.unwrap();
        assert_eq!(sink.frames, ["frame 0", "frame 1", "frame 2", "frame 3", "frame 4"]);
        assert_eq!((sink.flushes, sink.flushed_frames), (1, 5), "one flush, after every frame");
        assert!(rx.try_recv().is_none());
    }

    #[tokio::test]
    async fn a_long_backlog_is_written_in_bounded_batches() {
        let (tx, mut rx) = queue(QueueLimits { max_frames: 1_000, max_bytes: 1 << 20 });
        for n in 0..MAX_FRAMES_PER_WRITE + 10 {
            tx.push(Utf8Bytes::from(format!("frame {n}")), None).unwrap();
        }
        let mut sink = RecordingSink::default();
        let first = rx.try_recv();
        write(&mut sink, first, &mut rx).await.unwrap();
        assert_eq!((sink.frames.len(), sink.flushes), (MAX_FRAMES_PER_WRITE, 1));
        let next = rx.try_recv();
        write(&mut sink, next, &mut rx).await.unwrap();
        assert_eq!((sink.frames.len(), sink.flushes), (MAX_FRAMES_PER_WRITE + 10, 2));
        let in_order: Vec<String> = (0..MAX_FRAMES_PER_WRITE + 10).map(|n| format!("frame {n}")).collect();
        assert_eq!(sink.frames, in_order);
    }

    #[test]
    fn the_heartbeat_pings_on_time_and_gives_up_on_a_silent_peer() {
        let (every, timeout) = (Duration::from_secs(25), Duration::from_secs(35));
        let start = Instant::now();
        let mut heartbeat = Heartbeat::new(every, timeout, start);
        assert_eq!(heartbeat.next_wake(), start + every);
        assert_eq!(heartbeat.due(start + Duration::from_secs(10)), Due::Nothing, "woken early");
        assert_eq!(heartbeat.due(start + every), Due::Ping);
        // The next ping would be at 50 s, but the peer goes silent at 35 s.
        assert_eq!(heartbeat.next_wake(), start + timeout);
        assert_eq!(heartbeat.due(start + timeout), Due::Silent);
    }

    #[test]
    fn hearing_from_the_peer_puts_off_its_silence_but_not_the_ping() {
        let (every, timeout) = (Duration::from_secs(25), Duration::from_secs(35));
        let start = Instant::now();
        let mut heartbeat = Heartbeat::new(every, timeout, start);
        assert_eq!(heartbeat.due(start + every), Due::Ping);
        heartbeat.heard(start + Duration::from_secs(30));
        // Woken at 35 s for a silence that was put off: nothing is due yet.
        assert_eq!(heartbeat.due(start + timeout), Due::Nothing);
        assert_eq!(heartbeat.next_wake(), start + every * 2, "the next ping comes first");
        assert_eq!(heartbeat.due(start + every * 2), Due::Ping);
        assert_eq!(heartbeat.due(start + Duration::from_secs(65)), Due::Silent, "35 s after the last frame");
    }

    /// The size of what `function` returns, without calling it: for an async fn, the
    /// state its task keeps for as long as the socket is open.
    fn returned_size<A, B, R>(_function: fn(A, B) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    /// Every open socket keeps its task's future, sized for its largest moment (a
    /// request being handled, the greeting, closing). An idle socket should pay for
    /// waiting, not for those: they are boxed while they run.
    #[test]
    fn an_idle_socket_keeps_a_small_task() {
        let task = returned_size(serve);
        // 1,848 bytes when this was written (1,464 + 912 in two tasks before, 4,024 + 856
        // before the boxing); the bound leaves a little room to grow.
        assert!(task <= 2_048, "the socket's future is {task} bytes");
    }

    #[test]
    fn query_values_are_found_by_their_whole_key() {
        let query = Some("protocol=3&resume=1");
        assert_eq!(query_value(query, "protocol"), Some("3"));
        assert_eq!(query_value(query, "resume"), Some("1"));
        assert_eq!(query_value(Some("xprotocol=3&protocolx=4"), "protocol"), None);
        assert_eq!(query_value(Some("resume"), "resume"), None, "a key without a value");
        assert_eq!(query_value(None, "protocol"), None);
    }

    proptest::proptest! {
        #[test]
        fn any_query_is_read_without_panicking(query in ".*", key in ".*") {
            if let Some(value) = query_value(Some(&query), &key) {
                let pair = format!("{key}={value}");
                proptest::prop_assert!(query.contains(&pair));
            }
        }
    }
}
