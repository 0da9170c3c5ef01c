//! The chat socket: authentication at the handshake, then one task reading requests
//! and one writing the connection's outbound queue.
//!
//! Everything sent to a client (replies and events alike) goes through its bounded
//! queue in the hub, so replies keep their place among events and a client that stops
//! reading is found out in one place. The socket pings every `heartbeat_interval` and
//! closes a peer silent for `heartbeat_timeout`, so dead connections do not linger.

use std::time::Duration;

use app::protocol::{ClientMsg, ErrorCode, ServerMsg};
use axum::{
    extract::{
        ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade},
        State,
    },
    http::HeaderMap,
    response::Response,
};
use futures::{stream::SplitSink, SinkExt, StreamExt};
use tokio::time::{sleep_until, Instant};

use crate::{
    accounts::session_token,
    chat::Caller,
    error::AppError,
    hub::{CloseReason, CloseSignal, Connection, Hub, OutboundReceiver},
    state::AppState,
    storage::SessionRecord,
};

/// Per-connection buffer sizes. The library defaults (128 KiB write buffer) would cost
/// far more per idle connection than chat frames ever need.
const READ_BUFFER_BYTES: usize = 8 * 1024;
const WRITE_BUFFER_BYTES: usize = 8 * 1024;
/// A close frame to a peer that has stopped reading must not hang the task.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Close code when the server cannot serve the connection (RFC 6455 1011).
const CLOSE_INTERNAL_ERROR: u16 = 1011;

pub async fn upgrade(ws: WebSocketUpgrade, State(state): State<AppState>, headers: HeaderMap) -> Result<Response, AppError> {
    let token = session_token(&headers).ok_or(AppError::Unauthorized)?;
    let session = state.accounts.authenticate(&token).await?.ok_or(AppError::Unauthorized)?;
    let limits = &state.config.limits;
    Ok(ws
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_write_buffer_size(limits.outbound_queue_bytes.max(WRITE_BUFFER_BYTES * 2))
        .max_message_size(limits.max_ws_message_bytes)
        .max_frame_size(limits.max_ws_message_bytes)
        .on_upgrade(move |socket| serve(socket, state, session)))
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

async fn serve(socket: WebSocket, state: AppState, session: SessionRecord) {
    let _in_flight = state.tasks.token();
    let user = session.user;
    let (mut sink, stream) = socket.split();
    let hello = match state.chat.hello(&user).await {
        Ok(hello) => hello,
        Err(err) => {
            tracing::error!(user = user.id, error = %err, "cannot greet a new connection");
            let _ = close(&mut sink, CLOSE_INTERNAL_ERROR, "internal error").await;
            return;
        }
    };
    let ServerMsg::Hello { rooms, .. } = &hello else { unreachable!("hello() returns a Hello") };
    let room_ids: Vec<i64> = rooms.iter().map(|room| room.id).collect();
    if sink.send(Message::text(hello.encode())).await.is_err() {
        return;
    }

    let Connection { id, outbound, close: close_signal } = state.hub.connect(&user, session.session_id, &room_ids);
    let _registered = Registered { hub: &state.hub, id };
    tracing::info!(conn = id, user = user.id, "socket connected");
    // Who is online in each room, so the client starts with a full picture.
    for room_id in room_ids {
        state.hub.send_to(id, &ServerMsg::Presence { room_id, online: state.hub.online(room_id) });
    }

    let heartbeat = Duration::from_secs(state.config.limits.heartbeat_interval_secs.max(1));
    let writer = tokio::spawn(write_loop(sink, outbound, close_signal.clone(), heartbeat));
    let caller = Caller { conn: id, user };
    let timeout = Duration::from_secs(state.config.limits.heartbeat_timeout_secs.max(1));
    if let Some(reason) = read_loop(stream, &state, &caller, &close_signal, timeout).await {
        close_signal.close(reason);
    }
    let _ = writer.await;
    tracing::info!(conn = id, user = caller.user.id, reason = ?close_signal.reason(), "socket closed");
}

async fn read_loop(
    mut stream: futures::stream::SplitStream<WebSocket>,
    state: &AppState,
    caller: &Caller,
    close_signal: &CloseSignal,
    timeout: Duration,
) -> Option<CloseReason> {
    let mut deadline = Instant::now() + timeout;
    loop {
        let frame = tokio::select! {
            frame = stream.next() => frame,
            _ = close_signal.closed() => return None,
            () = sleep_until(deadline) => return Some(CloseReason::HeartbeatTimeout),
        };
        deadline = Instant::now() + timeout;
        let reply = match frame {
            Some(Ok(Message::Text(text))) => match ClientMsg::decode(&text) {
                Ok(msg) => state.chat.handle(caller, msg).await,
                Err(err) => Some(err.into_reply()),
            },
            Some(Ok(Message::Binary(_))) => Some(ServerMsg::Error {
                id: None,
                code: ErrorCode::BadRequest,
                message: "frames must be JSON text, not binary".into(),
            }),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(_))) | None => return Some(CloseReason::PeerClosed),
            Some(Err(err)) => {
                tracing::info!(conn = caller.conn, error = %err, "socket read failed");
                return Some(CloseReason::PeerClosed);
            }
        };
        if let Some(reply) = reply {
            state.hub.send_to(caller.conn, &reply);
        }
    }
}

async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    mut outbound: OutboundReceiver,
    close_signal: CloseSignal,
    heartbeat: Duration,
) {
    let mut ping = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
    loop {
        tokio::select! {
            biased;
            reason = close_signal.closed() => {
                let _ = close(&mut sink, reason.code(), reason.text()).await;
                return;
            }
            frame = outbound.recv() => {
                let Some(frame) = frame else { return };
                if sink.send(Message::Text(frame)).await.is_err() {
                    return;
                }
            }
            _ = ping.tick() => {
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn close(sink: &mut SplitSink<WebSocket, Message>, code: u16, reason: &'static str) -> Result<(), ()> {
    let frame = Message::Close(Some(CloseFrame { code, reason: reason.into() }));
    match tokio::time::timeout(CLOSE_TIMEOUT, sink.send(frame)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}
