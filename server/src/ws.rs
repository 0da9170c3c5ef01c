//! The chat socket: one task per connection, reading client frames and answering.

use std::time::{SystemTime, UNIX_EPOCH};

use app::protocol::{ClientMsg, ServerMsg, PROTOCOL_VERSION};
use axum::{
    extract::{
        ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade},
        State,
    },
    response::Response,
};

use crate::state::AppState;

/// Per-connection buffer sizes. The library defaults (128 KiB write buffer) would cost
/// far more per idle connection than chat frames ever need.
const READ_BUFFER_BYTES: usize = 8 * 1024;
const WRITE_BUFFER_BYTES: usize = 8 * 1024;
const MAX_WRITE_BUFFER_BYTES: usize = 256 * 1024;
const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Close code telling the client the server is shutting down (RFC 6455 "going away").
const CLOSE_GOING_AWAY: u16 = 1001;

pub async fn upgrade(ws: WebSocketUpgrade, State(state): State<AppState>) -> Response {
    ws.read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_write_buffer_size(MAX_WRITE_BUFFER_BYTES)
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| serve_socket(socket, state))
}

async fn serve_socket(mut socket: WebSocket, state: AppState) {
    let hello = ServerMsg::Hello { protocol: PROTOCOL_VERSION, server_time: unix_millis() };
    if socket.send(Message::text(hello.encode())).await.is_err() {
        return;
    }
    loop {
        let frame = tokio::select! {
            frame = socket.recv() => frame,
            () = state.shutdown.cancelled() => {
                let _ = socket
                    .send(Message::Close(Some(CloseFrame { code: CLOSE_GOING_AWAY, reason: "server shutting down".into() })))
                    .await;
                return;
            }
        };
        let reply = match frame {
            Some(Ok(Message::Text(text))) => answer(&text),
            Some(Ok(Message::Binary(_))) => Some(ServerMsg::Error {
                id: None,
                code: app::protocol::ErrorCode::BadRequest,
                message: "frames must be JSON text, not binary".into(),
            }),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => None,
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
        };
        if let Some(reply) = reply {
            if socket.send(Message::text(reply.encode())).await.is_err() {
                return;
            }
        }
    }
}

fn answer(text: &str) -> Option<ServerMsg> {
    match ClientMsg::decode(text) {
        Ok(ClientMsg::Ping { id }) => Some(ServerMsg::Pong { id }),
        Err(err) => Some(err.into_reply()),
    }
}

fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}
