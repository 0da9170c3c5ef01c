//! The socket loop in the browser: connect, greet, read, and on any failure try again
//! with exponential backoff and jitter until the session is known to be over. The
//! browser's own online/offline events cut the wait short: going offline drops the
//! socket at once (instead of waiting for TCP to notice), coming back reconnects at once.

use futures::{channel::mpsc, FutureExt, SinkExt, StreamExt};
use gloo_net::websocket::{futures::WebSocket, Message, WebSocketError};
use leptos::{prelude::*, task::spawn_local};
use wasm_bindgen::{closure::Closure, JsCast};

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
    /// The browser went offline.
    Offline,
}

pub(super) fn run(chat: ChatClient) {
    let mut network = network_events();
    spawn_local(async move {
        let mut failures: u32 = 0;
        loop {
            if !online() {
                chat.conn.try_set(ConnState::Reconnecting);
                wait_until_online(&mut network).await;
            }
            match connect_once(chat, &mut network).await {
                Ended::AfterGreeting => failures = 0,
                Ended::Offline => {
                    failures = 0;
                    continue;
                }
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
            let pause = gloo_timers::future::TimeoutFuture::new(backoff_ms(failures) as u32);
            futures::select! {
                () = pause.fuse() => {}
                // Back online: no reason to keep waiting.
                _ = wait_until_online(&mut network).fuse() => {}
            }
        }
    });
}

fn online() -> bool {
    window().navigator().on_line()
}

/// `true` for each `online` event, `false` for each `offline` event.
fn network_events() -> mpsc::UnboundedReceiver<bool> {
    let (tx, rx) = mpsc::unbounded();
    for (event, value) in [("online", true), ("offline", false)] {
        let tx = tx.clone();
        let listener = Closure::<dyn FnMut()>::new(move || {
            let _ = tx.unbounded_send(value);
        });
        let _ = window().add_event_listener_with_callback(event, listener.as_ref().unchecked_ref());
        // The listener lives as long as the page.
        listener.forget();
    }
    rx
}

async fn wait_until_online(network: &mut mpsc::UnboundedReceiver<bool>) {
    while !online() {
        if network.next().await.is_none() {
            return;
        }
    }
}

fn signed_out(chat: ChatClient) {
    chat.conn.try_set(ConnState::SignedOut);
    chat.stopped();
    let here = window().location();
    let path = here.pathname().unwrap_or_default() + &here.search().unwrap_or_default();
    if path.starts_with("/r/") || path.starts_with("/dm/") || path == "/" {
        let next: String = js_sys::encode_uri_component(&path).into();
        let _ = here.assign(&format!("/login?next={next}"));
    }
}

/// Exponential backoff with full jitter, capped.
fn backoff_ms(failures: u32) -> f64 {
    let ceiling = (FIRST_BACKOFF_MS * 2f64.powi(failures.min(16) as i32)).min(MAX_BACKOFF_MS);
    FIRST_BACKOFF_MS / 2.0 + js_sys::Math::random() * ceiling
}

async fn connect_once(chat: ChatClient, network: &mut mpsc::UnboundedReceiver<bool>) -> Ended {
    let Ok(ws) = WebSocket::open(&socket_url()) else {
        return Ended::BeforeGreeting;
    };
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded();
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
    let ended = loop {
        let frame = futures::select! {
            frame = stream.next().fuse() => frame,
            change = network.next().fuse() => match change {
                Some(false) => break Some(Ended::Offline),
                _ => continue,
            },
        };
        match frame {
            Some(Ok(Message::Text(text))) => match serde_json::from_str::<ServerMsg>(&text) {
                Ok(msg) => {
                    greeted |= matches!(msg, ServerMsg::Hello { .. });
                    chat.apply(msg);
                }
                Err(err) => leptos::logging::warn!("ignoring a frame this client does not understand: {err}"),
            },
            Some(Ok(Message::Bytes(_))) => {}
            Some(Err(WebSocketError::ConnectionClose(close))) => {
                break (close.code == CLOSE_SESSION_ENDED).then_some(Ended::SessionEnded);
            }
            // An `error` event is followed by the `close` event that says why.
            Some(Err(WebSocketError::ConnectionError)) => continue,
            Some(Err(_)) | None => break None,
        }
    };
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
