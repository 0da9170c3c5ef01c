//! The bare baseline: a WebSocket room broadcast as a tokio/axum tutorial would write
//! it, with no accounts, no storage and no limits. `bare-broadcast 127.0.0.1:PORT`;
//! a socket joins the room named by `/ws?room=…` and everything it sends goes to
//! everyone in that room, itself included.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    extract::{
        Query, State,
        ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade},
    },
    response::Response,
    routing::get,
    serve::ListenerExt,
};
use futures::{SinkExt, StreamExt};
use tokio::sync::broadcast;

type Rooms = Arc<Mutex<HashMap<String, broadcast::Sender<Utf8Bytes>>>>;

#[derive(serde::Deserialize)]
struct Join {
    room: String,
}

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .expect("usage: bare-broadcast ADDRESS:PORT");
    let rooms: Rooms = Arc::default();
    let app = Router::new().route("/ws", get(upgrade)).with_state(rooms);
    // Small frames go out at once, as in the other servers measured (Node and Parley
    // both turn Nagle's algorithm off).
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .expect("bind")
        .tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
    axum::serve(listener, app).await.expect("serve");
}

async fn upgrade(
    upgrade: WebSocketUpgrade,
    Query(join): Query<Join>,
    State(rooms): State<Rooms>,
) -> Response {
    upgrade.on_upgrade(move |socket| serve(socket, join.room, rooms))
}

async fn serve(socket: WebSocket, room: String, rooms: Rooms) {
    let room_tx = rooms
        .lock()
        .unwrap()
        .entry(room.clone())
        .or_insert_with(|| broadcast::channel(1024).0)
        .clone();
    let mut heard = room_tx.subscribe();
    let (mut sink, mut frames) = socket.split();
    let greeting = serde_json::json!({ "joined": room }).to_string();
    if sink.send(Message::text(greeting)).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            frame = frames.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    let _ = room_tx.send(text);
                }
                Some(Ok(_)) => {}
                _ => return,
            },
            next = heard.recv() => match next {
                Ok(text) => {
                    if sink.send(Message::Text(text)).await.is_err() {
                        return;
                    }
                }
                // A reader too slow for the channel loses messages, as in the tutorial
                // code this stands for; the generator would report them as lost.
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}
