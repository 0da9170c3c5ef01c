//! The socket loop in the browser: connect, greet, read, and on any failure try again
//! with exponential backoff and jitter until the session is known to be over.

use futures::{SinkExt, StreamExt};
use gloo_net::websocket::{futures::WebSocket, Message};
use leptos::{prelude::*, task::spawn_local};

use super::{ChatClient, ConnState};
use crate::protocol::ServerMsg;

/// Longest wait between attempts; a server back after an outage sees clients return
/// spread over this window rather than all at once.
const MAX_BACKOFF_MS: f64 = 30_000.0;
const FIRST_BACKOFF_MS: f64 = 500.0;
/// Close code the server uses when the session was logged out or expired.
const CLOSE_SESSION_ENDED: u16 = 4001;

enum Ended {
    /// The connection worked for a while, then dropped.
    AfterGreeting,
    /// It never got as far as the server's greeting.
    BeforeGreeting,
    /// The server said the session is over.
    SessionEnded,
}

pub(super) fn run(chat: ChatClient) {
    spawn_local(async move {
        let mut failures: u32 = 0;
        loop {
            match connect_once(chat).await {
                Ended::AfterGreeting => failures = 0,
                Ended::BeforeGreeting => {
                    // A refused handshake looks the same as a dead server from here;
                    // ask over HTTP whether the session is still good.
                    if matches!(crate::auth::session_user().await, Ok(None)) {
                        signed_out(chat);
                        return;
                    }
                }
                Ended::SessionEnded => {
                    signed_out(chat);
                    return;
                }
            }
            chat.conn.try_set(ConnState::Reconnecting);
            failures = failures.saturating_add(1);
            gloo_timers::future::TimeoutFuture::new(backoff_ms(failures) as u32).await;
        }
    });
}

fn signed_out(chat: ChatClient) {
    chat.conn.try_set(ConnState::SignedOut);
    chat.stopped();
    let here = window().location();
    let path = here.pathname().unwrap_or_default() + &here.search().unwrap_or_default();
    if path.starts_with("/r/") || path == "/" {
        let next: String = js_sys::encode_uri_component(&path).into();
        let _ = here.assign(&format!("/login?next={next}"));
    }
}

/// Exponential backoff with full jitter, capped.
fn backoff_ms(failures: u32) -> f64 {
    let ceiling = (FIRST_BACKOFF_MS * 2f64.powi(failures.min(16) as i32)).min(MAX_BACKOFF_MS);
    FIRST_BACKOFF_MS / 2.0 + js_sys::Math::random() * ceiling
}

async fn connect_once(chat: ChatClient) -> Ended {
    let Ok(ws) = WebSocket::open(&socket_url()) else {
        return Ended::BeforeGreeting;
    };
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = futures::channel::mpsc::unbounded();
    chat.link.try_set_value(Some(tx));
    spawn_local(async move {
        while let Some(msg) = rx.next().await {
            let frame = serde_json::to_string(&msg).expect("client messages always serialise");
            if sink.send(Message::Text(frame)).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });

    let mut greeted = false;
    let mut ended = None;
    while let Some(frame) = stream.next().await {
        match frame {
            Ok(Message::Text(text)) => match serde_json::from_str::<ServerMsg>(&text) {
                Ok(msg) => {
                    greeted |= matches!(msg, ServerMsg::Hello { .. });
                    chat.apply(msg);
                }
                Err(err) => leptos::logging::warn!("ignoring a frame this client does not understand: {err}"),
            },
            Ok(Message::Bytes(_)) => {}
            Err(gloo_net::websocket::WebSocketError::ConnectionClose(close)) => {
                if close.code == CLOSE_SESSION_ENDED {
                    ended = Some(Ended::SessionEnded);
                }
                break;
            }
            // An `error` event is followed by the `close` event that says why.
            Err(gloo_net::websocket::WebSocketError::ConnectionError) => continue,
            Err(_) => break,
        }
    }
    // Dropping the sender ends the writer task, which closes the socket.
    chat.link.try_set_value(None);
    ended.unwrap_or(if greeted { Ended::AfterGreeting } else { Ended::BeforeGreeting })
}

fn socket_url() -> String {
    let location = window().location();
    let scheme = match location.protocol().as_deref() {
        Ok("https:") => "wss:",
        _ => "ws:",
    };
    format!("{scheme}//{}/ws", location.host().unwrap_or_default())
}
