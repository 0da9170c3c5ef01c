//! The chat socket: checks at the handshake, then one task reading requests and one
//! writing the connection's outbound queue.
//!
//! The handshake refuses a foreign `Origin` (403) and a user or address over its socket
//! allowance (429). A missing or dead session is let through the handshake and closed
//! at once with 4001: a browser cannot read the status of a refused handshake, and
//! without a close code it could not tell "log in again" from "server down". After
//! the handshake every frame is metered (token buckets), oversized frames close the
//! socket with 1009, and a client that keeps pushing after being refused is closed
//! with 1008. A request that panics is answered with an `internal` error and the
//! socket goes on.
//!
//! Everything sent to a client (replies and events alike) goes through its bounded
//! queue in the hub, so replies keep their place among events and a client that stops
//! reading is found out in one place. The socket pings every `heartbeat_interval` and
//! closes a peer silent for `heartbeat_timeout`, so dead connections do not linger.

use std::{net::IpAddr, panic::AssertUnwindSafe, time::Duration};

use app::protocol::{ClientMsg, ErrorCode, ServerMsg};
use axum::{
    extract::{
        ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade},
        FromRequestParts, Request, State,
    },
    http::header::ORIGIN,
    response::Response,
};
use futures::{stream::SplitSink, FutureExt, Sink, SinkExt, StreamExt};
use tokio::time::{sleep_until, Instant};

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    accounts::session_token,
    chat::Caller,
    error::AppError,
    hub::{CloseReason, CloseSignal, Connection, Hub, OutboundReceiver, Outgoing},
    limits::{Slot, Verdict},
    metrics::{self, Limit},
    net,
    state::AppState,
    storage::SessionRecord,
};

/// Per-connection buffer sizes. The library defaults (128 KiB write buffer) would cost
/// far more per idle connection than chat frames ever need. The read buffer is filled
/// with zeros up to its size before every read, so all of it is resident for every
/// idle socket: 1 KiB holds a typical chat request, and a longer frame grows it (read
/// 1 KiB at a time: a 16 KiB message takes 16 reads, rare enough to cost little).
const READ_BUFFER_BYTES: usize = 1024;
const WRITE_BUFFER_BYTES: usize = 8 * 1024;
/// How long the close frame may wait behind unread data. Long enough for a client that
/// was only paused (a phone waking up) to read its way to the reason; short enough
/// that a dead peer does not keep its buffers.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
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
    /// The page had a socket before this one (`/ws?resume=1`).
    reconnecting: bool,
}

pub async fn upgrade(State(state): State<AppState>, request: Request) -> Result<Response, AppError> {
    let (mut parts, _body) = request.into_parts();
    let headers = &parts.headers;
    let peer = Peer {
        ip: net::client_ip(&parts.extensions, headers, state.config.security.trust_forwarded_for),
        origin: headers.get(ORIGIN).and_then(|o| o.to_str().ok()).unwrap_or("-").to_string(),
        reconnecting: parts.uri.query().is_some_and(|query| query.split('&').any(|pair| pair == "resume=1")),
    };
    let tls = net::over_tls(headers, state.config.tls.enabled(), state.config.security.trust_forwarded_for);
    if !net::origin_allowed(headers, tls, &state.config.security.allowed_origins) {
        tracing::warn!(ip = %peer.ip, origin = %peer.origin, "socket refused: origin not allowed");
        return Err(AppError::Forbidden("This origin may not open a chat socket."));
    }
    let ws = WebSocketUpgrade::from_request_parts(&mut parts, &state).await.map_err(|rejection| {
        tracing::info!(ip = %peer.ip, "not a WebSocket handshake: {rejection}");
        AppError::Invalid("Expected a WebSocket handshake.".into())
    })?;
    // The address's allowance first: sockets turned away for want of a session count
    // against it too while they are being closed.
    let Some(ip_slot) = state.limiters.socket_slot(peer.ip) else {
        metrics::rate_limited(Limit::SocketsPerAddress);
        tracing::warn!(ip = %peer.ip, "socket refused: too many sockets from this address");
        return Err(AppError::RateLimited(crate::limits::RetryAfter(Duration::from_secs(5))));
    };
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
    let opened = Box::new(Opened { state, session, peer, _slots: (user_slot, ip_slot) });
    Ok(ws.on_upgrade(move |socket| serve(Box::new(socket), opened)))
}

/// Closes a socket that may not be served, with the reason, without reading from it.
/// `_ip_slot` holds the address's allowance until it is closed.
async fn refuse(socket: WebSocket, reason: CloseReason, _ip_slot: Slot<IpAddr>) {
    let (mut sink, _stream) = socket.split();
    let _ = close(&mut sink, reason.code(), reason.text()).await;
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

/// What the handshake found out about a socket, kept for as long as it is open. It
/// lives in one box that the socket's task points to: an async fn keeps its
/// arguments in its future beside the locals they are moved to, and the upgrade's
/// callback keeps what it captured, so passed by value this would be stored three
/// times over in every open socket's task.
struct Opened {
    state: AppState,
    session: Session,
    peer: Peer,
    /// The user's and the address's socket allowance, held while the socket lives.
    _slots: (Slot<i64>, Slot<IpAddr>),
}

/// Serves one socket to its end. The socket comes boxed for the reason above; it is
/// moved out as it is split.
async fn serve(socket: Box<WebSocket>, opened: Box<Opened>) {
    let Opened { state, session, peer, .. } = &*opened;
    let _in_flight = state.tasks.token();
    // Moved out of its box in a block of its own, so that the box is freed now rather
    // than when this function ends.
    let (mut sink, stream) = {
        let socket = socket;
        (*socket).split()
    };
    // Boxed, as the rarer steps below: what runs once or seldom would otherwise size
    // this future, which every open socket keeps (test: `an_idle_socket_keeps_small_tasks`).
    let (hello, connection) = match Box::pin(state.chat.connect(&session.record.user, session.record.session_id)).await {
        Ok((hello, connection)) => (Message::text(hello.encode()), connection),
        Err(err) => {
            tracing::error!(user = session.record.user.id, error = %err, "cannot greet a new connection");
            let _ = Box::pin(close(&mut sink, CLOSE_INTERNAL_ERROR, "internal error")).await;
            return;
        }
    };
    let Connection { id, outbound, close: close_signal } = connection;
    let _registered = Registered { hub: &state.hub, id };
    // Every line logged about this socket carries its id and user.
    let span = tracing::info_span!("socket", conn = id, user = session.record.user.id);
    async move {
        // The greeting goes straight to the socket, ahead of anything already queued.
        if sink.send(hello).await.is_err() {
            return;
        }
        metrics::socket_greeted(peer.reconnecting);
        tracing::info!(ip = %peer.ip, origin = %peer.origin, reconnecting = peer.reconnecting, "socket connected");

        let heartbeat = Duration::from_secs(state.config.limits.heartbeat_interval_secs.max(1));
        let reader_done = CancellationToken::new();
        // Not in the socket's span: the writer logs nothing, and entering a span on
        // every wake-up is a measurable share of a delivery's cost.
        let writer = tokio::spawn(write_loop(sink, outbound, close_signal.clone(), reader_done.clone(), heartbeat));
        let caller = Caller { conn: id, user: session.record.user.clone() };
        if let Some(reason) = read_loop(stream, state, &caller, &session.token, &close_signal).await {
            close_signal.close(reason);
        }
        if close_signal.reason() == Some(CloseReason::ShuttingDown) {
            Box::pin(settle_posts(state)).await;
        }
        reader_done.cancel();
        if let Err(failed) = writer.await {
            if failed.is_panic() {
                tracing::error!("the socket's writer panicked");
            }
        }
        let reason = close_signal.reason().unwrap_or(CloseReason::PeerClosed);
        metrics::socket_closed(reason);
        if matches!(reason, CloseReason::PeerClosed | CloseReason::ShuttingDown | CloseReason::SessionEnded) {
            tracing::info!(ip = %peer.ip, ?reason, "socket closed");
        } else {
            tracing::warn!(ip = %peer.ip, ?reason, "socket closed by a limit");
        }
    }
    .instrument(span)
    .await
}

/// Waits, on shutdown, until the posts this socket queued are answered, so that its
/// queue is drained after their answers and its sender is told of what was stored
/// (within the time a close may take; a sender not told retries, and a retry is
/// answered as the same).
async fn settle_posts(state: &AppState) {
    match tokio::time::timeout(CLOSE_TIMEOUT, state.store.posts_settled()).await {
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
async fn session_ended(state: &AppState, token: &str) -> bool {
    match state.accounts.authenticate(token).await {
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

async fn read_loop(
    mut stream: futures::stream::SplitStream<WebSocket>,
    state: &AppState,
    caller: &Caller,
    token: &str,
    close_signal: &CloseSignal,
) -> Option<CloseReason> {
    let limits_config = &state.config.limits;
    let timeout = Duration::from_secs(limits_config.heartbeat_timeout_secs.max(1));
    // One timer, pushed back by every frame, rather than a new one per frame.
    let silence = sleep_until(Instant::now() + timeout);
    tokio::pin!(silence);
    // The session was checked in the handshake, and a logout since then closed this
    // socket as it registered (the hub remembers sessions ended lately); the next
    // check is a heartbeat away.
    let check_every = Duration::from_secs(limits_config.heartbeat_interval_secs.max(1));
    let mut session_check = tokio::time::interval_at(Instant::now() + check_every, check_every);
    session_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut limits = state.limiters.connection();
    loop {
        let frame = tokio::select! {
            frame = stream.next() => frame,
            _ = close_signal.closed() => return None,
            () = &mut silence => return Some(CloseReason::HeartbeatTimeout),
            _ = session_check.tick() => {
                if Box::pin(session_ended(state, token)).await {
                    return Some(CloseReason::SessionEnded);
                }
                continue;
            }
        };
        silence.as_mut().reset(Instant::now() + timeout);
        let decoded = match frame {
            Some(Ok(Message::Text(text))) => ClientMsg::decode(&text).map_err(|err| err.into_reply()),
            Some(Ok(Message::Binary(_))) => Err(ServerMsg::Error {
                id: None,
                code: ErrorCode::BadRequest,
                message: "frames must be JSON text, not binary".into(),
                retry_after_ms: None,
            }),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(_))) | None => return Some(CloseReason::PeerClosed),
            Some(Err(err)) if is_too_big(&err) => return Some(CloseReason::TooBig),
            Some(Err(err)) => {
                tracing::info!(conn = caller.conn, error = %err, "socket read failed");
                return Some(CloseReason::PeerClosed);
            }
        };
        // Requests that write to the database draw on the stricter message bucket.
        let is_message = matches!(
            decoded,
            Ok(ClientMsg::Send { .. }
                | ClientMsg::CreateRoom { .. }
                | ClientMsg::JoinRoom { .. }
                | ClientMsg::LeaveRoom { .. }
                | ClientMsg::OpenDirect { .. })
        );
        let reply = match limits.check(is_message) {
            Verdict::Abusive => return Some(CloseReason::PolicyViolation),
            Verdict::Refused(retry) => {
                metrics::rate_limited(Limit::SocketFrames);
                tracing::debug!("frame refused: rate limited");
                let id = decoded.as_ref().map(ClientMsg::id).unwrap_or(0);
                Some(AppError::RateLimited(retry).into_reply(id))
            }
            Verdict::Allowed => match decoded {
                Ok(msg) => Box::pin(handle_contained(state, caller, msg)).await,
                Err(error_reply) => Some(error_reply),
            },
        };
        if let Some(reply) = reply {
            state.hub.send_to(caller.conn, &reply);
        }
    }
}

/// Answers one request. A panic inside it (a bug reached by some input) is contained
/// here: logged with the request's type, answered with an `internal` error, and the
/// socket reads on. Locks taken inside are async or poison-tolerant and transactions
/// roll back when dropped, so nothing is left half-done.
async fn handle_contained(state: &AppState, caller: &Caller, msg: ClientMsg) -> Option<ServerMsg> {
    let (id, kind) = (msg.id(), msg.kind());
    // Lines logged while handling it carry the request's id and type.
    let span = tracing::info_span!("request", id, kind);
    let handled = async {
        let reply = state.chat.handle(caller, msg).await;
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

/// Writes the connection's queue to its socket, with pings, until the connection
/// ends. For most reasons to close, the close frame goes out at once (a slow consumer
/// could not take the rest anyway). On shutdown nothing queued is dropped: the reader
/// first finishes the request it is handling (so its reply joins the queue), then
/// every queued frame is written, then the close (1012: come back).
async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    mut outbound: OutboundReceiver,
    close_signal: CloseSignal,
    reader_done: CancellationToken,
    heartbeat: Duration,
) {
    // However writing ends, the connection is over: the reader stops too.
    let _stop_reader = CloseOnDrop(close_signal.clone());
    let mut ping = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
    // One wait for the close signal, shared by every select below, rather than a new
    // waiter registered (and dropped) for each frame.
    let closed = close_signal.closed();
    tokio::pin!(closed);
    loop {
        let next = tokio::select! {
            biased;
            reason = &mut closed => break Box::pin(finish(&mut sink, &mut outbound, &reader_done, reason)).await,
            next = outbound.recv() => match next {
                Some(outgoing) => Some(outgoing),
                None => return,
            },
            _ = ping.tick() => None,
        };
        // A peer that stopped reading blocks this write (a ping as much as a frame);
        // the close signal (slow consumer, heartbeat, shutdown) must still get through,
        // so the write is raced against it. The write in flight is never started over:
        // once begun, its frame may already sit in the socket's buffer.
        let interrupted = {
            let written = write(&mut sink, next, &mut outbound);
            tokio::pin!(written);
            tokio::select! {
                result = &mut written => match result {
                    Ok(()) => None,
                    Err(_) => return,
                },
                reason = &mut closed => {
                    // On shutdown the frame is part of what must go out: let it finish.
                    if reason == CloseReason::ShuttingDown
                        && !matches!(Box::pin(tokio::time::timeout(CLOSE_TIMEOUT, &mut written)).await, Ok(Ok(())))
                    {
                        return;
                    }
                    Some(reason)
                }
            }
        };
        if let Some(reason) = interrupted {
            break Box::pin(finish(&mut sink, &mut outbound, &reader_done, reason)).await;
        }
    }
}

/// Closes the connection (as closed by its peer, unless a reason came first) when
/// dropped.
struct CloseOnDrop(CloseSignal);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close(CloseReason::PeerClosed);
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

/// Sends the close frame for `reason`; on shutdown, after everything queued.
async fn finish(
    sink: &mut SplitSink<WebSocket, Message>,
    outbound: &mut OutboundReceiver,
    reader_done: &CancellationToken,
    reason: CloseReason,
) {
    if reason == CloseReason::ShuttingDown {
        let flushed = async {
            reader_done.cancelled().await;
            while let Some(outgoing) = outbound.try_recv() {
                write(sink, Some(outgoing), outbound).await?;
            }
            Ok::<(), axum::Error>(())
        };
        if !matches!(tokio::time::timeout(CLOSE_TIMEOUT, flushed).await, Ok(Ok(()))) {
            return;
        }
    }
    let _ = close(sink, reason.code(), reason.text()).await;
}

async fn close(sink: &mut SplitSink<WebSocket, Message>, code: u16, reason: &'static str) -> Result<(), ()> {
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

    /// The size of what `function` returns, without calling it: for an async fn, the
    /// state its task keeps for as long as the socket is open.
    fn returned_size<A, B, C, D, E, R>(_function: fn(A, B, C, D, E) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    fn returned_size_2<A, B, R>(_function: fn(A, B) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    /// Every open socket keeps its reader's and its writer's futures, sized for their
    /// largest moment (a request being handled, the greeting, closing). An idle
    /// socket should pay for waiting, not for those: they are boxed while they run.
    #[test]
    fn an_idle_socket_keeps_small_tasks() {
        let (reader, writer) = (returned_size_2(serve), returned_size(write_loop));
        // 1,464 and 912 bytes when this was written (4,024 and 856 before the boxing);
        // the bounds leave a little room to grow.
        assert!(reader <= 1_600, "the reading task's future is {reader} bytes");
        assert!(writer <= 1_024, "the writing task's future is {writer} bytes");
    }
}
