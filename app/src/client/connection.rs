//! The socket loop in the browser: connect, greet, read, and on any failure try again
//! after a growing, jittered pause until the server says the session is over or the
//! page is out of date.
//!
//! The pause doubles from [`FIRST_CEILING_MS`] up to [`MAX_CEILING_MS`], half of it
//! fixed and half random: one tab never retries faster than the schedule (a server
//! that is down sees at most six attempts in its first 20 seconds), and a crowd of
//! tabs coming back after a restart spreads over the window instead of arriving at
//! once. The count of failures only starts over once a connection has been heard from
//! for [`STABLE_MS`] after its greeting, so a server that greets and then drops every
//! socket, or a proxy that passes the greeting and then nothing, is not hammered.
//! A server that says it is restarting (1001, 1012) gets each tab back after a random
//! wait of up to [`RESTART_SPREAD_MS`], since all its tabs hear it at the same moment.
//!
//! The browser's own network events matter only when it really was offline: going
//! offline drops the socket at once (instead of waiting for TCP to notice), and coming
//! back online after that reconnects without waiting out the pause. A connection that
//! dies without a word (no event, no close) is found by its silence: after 20–30 s
//! the page pings, and after as long again with no answer it connects anew.

use futures::{channel::mpsc, FutureExt, SinkExt, StreamExt};
use gloo_net::websocket::{futures::WebSocket, Message, WebSocketError};
use leptos::{prelude::*, task::spawn_local};

use super::{platform, ChatClient, ConnState};
use crate::protocol::{close_code, socket_path, ClientMsg, ServerMsg};

/// Ceiling of the first pause; each failure doubles it.
const FIRST_CEILING_MS: f64 = 1_000.0;
const MAX_CEILING_MS: f64 = 30_000.0;
/// A connection that lasted this long was healthy: the next failure starts the
/// schedule over.
const STABLE_MS: f64 = 10_000.0;
/// Close codes a server uses when it is going away or restarting (RFC 6455 1001, 1012).
const CLOSE_RESTARTING: [u16; 2] = [1001, 1012];
/// After a restart notice, each tab waits a random time up to this before its first
/// attempt, so thousands of tabs do not all return in the same instant.
const RESTART_SPREAD_MS: f64 = 5_000.0;
/// A connection that says nothing for 20–30 s is asked whether it is alive; one that
/// stays silent as long again is dropped and made anew. Random within the range:
/// the last frame a room's pages heard came to all of them at once, and their pings
/// must not all come back at once too.
const SILENCE_MS: f64 = 20_000.0;
const SILENCE_SPREAD_MS: f64 = 10_000.0;

enum Ended {
    /// The connection closed or failed: how long after the greeting (if it got one)
    /// the server was last heard, and whether it said it is restarting.
    Dropped { heard_for_ms: Option<f64>, server_restarting: bool },
    /// The server said the session is over.
    SessionEnded,
    /// The server speaks another protocol version: only a reload can help.
    Outdated,
    /// The browser went offline.
    Offline,
}

pub(super) fn run(chat: ChatClient) {
    let (mut network, listening) = network_events();
    spawn_local(async move {
        // Listened to for as long as this loop runs: a loop ended by signing out and
        // started again by the next login must not leave its listeners behind.
        let _listening = listening;
        let mut failures: u32 = 0;
        let mut resuming = false;
        loop {
            if !online() {
                chat.conn.try_set(ConnState::Reconnecting);
                wait_until_online(&mut network).await;
            }
            let ended = connect_once(chat, &mut network, resuming).await;
            resuming = true;
            match ended {
                Ended::SessionEnded => {
                    signed_out(chat);
                    return;
                }
                // Left started: the chat page opening again must not start another
                // loop, since only a reload can help.
                Ended::Outdated => {
                    chat.conn.try_set(ConnState::Outdated);
                    return;
                }
                // Reconnect as soon as the browser is back online (top of the loop).
                Ended::Offline => continue,
                Ended::Dropped { heard_for_ms, server_restarting } => {
                    if heard_for_ms.is_some_and(|lasted| lasted >= STABLE_MS) {
                        failures = 0;
                    }
                    if server_restarting {
                        // Every tab hears this at the same moment: spread the first
                        // attempts of all of them over a few seconds.
                        chat.conn.try_set(ConnState::Reconnecting);
                        let spread = js_sys::Math::random() * RESTART_SPREAD_MS;
                        pause_unless_back_online(spread, &mut network).await;
                        continue;
                    }
                }
            }
            chat.conn.try_set(ConnState::Reconnecting);
            failures = failures.saturating_add(1);
            pause_unless_back_online(backoff_ms(failures), &mut network).await;
        }
    });
}

fn online() -> bool {
    window().navigator().on_line()
}

/// `true` for each `online` event, `false` for each `offline` event, until the
/// returned listeners are dropped.
fn network_events() -> (mpsc::UnboundedReceiver<bool>, Listening) {
    let (tx, rx) = mpsc::unbounded();
    let on_online = tx.clone();
    let online = window_event_listener(leptos::ev::online, move |_| {
        let _ = on_online.unbounded_send(true);
    });
    let offline = window_event_listener(leptos::ev::offline, move |_| {
        let _ = tx.unbounded_send(false);
    });
    (rx, Listening(vec![online, offline]))
}

/// Window listeners removed when this is dropped.
struct Listening(Vec<WindowListenerHandle>);

impl Drop for Listening {
    fn drop(&mut self) {
        self.0.drain(..).for_each(WindowListenerHandle::remove);
    }
}

async fn wait_until_online(network: &mut mpsc::UnboundedReceiver<bool>) {
    while !online() {
        if network.next().await.is_none() {
            return;
        }
    }
}

/// Waits `ms`, or less if the browser goes offline and comes back meanwhile (then the
/// failure was the network's, and it is back).
async fn pause_unless_back_online(ms: f64, network: &mut mpsc::UnboundedReceiver<bool>) {
    let pause = gloo_timers::future::TimeoutFuture::new(ms as u32).fuse();
    futures::pin_mut!(pause);
    let mut was_offline = !online();
    loop {
        futures::select! {
            () = pause => return,
            change = network.next() => match change {
                Some(false) => was_offline = true,
                Some(true) if was_offline => return,
                Some(true) => {}
                None => return pause.await,
            },
        }
    }
}

/// Forgets the person's chat and sends a chat page to the login form, which brings the
/// user back here afterwards. A page already at an account form (its own
/// logout got there before the socket heard of it) stays: sending it on would leave the
/// login form as the place to return to, and only a chat page follows `goto`.
fn signed_out(chat: ChatClient) {
    chat.conn.try_set(ConnState::SignedOut);
    chat.stopped();
    chat.reset();
    let here = window().location();
    let path = here.pathname().unwrap_or_default();
    if ACCOUNT_PAGES.contains(&path.as_str()) {
        return;
    }
    let next: String = js_sys::encode_uri_component(&(path + &here.search().unwrap_or_default())).into();
    chat.goto.try_set(Some(format!("/login?next={next}")));
}

/// Pages that are not the chat: the router's other routes.
const ACCOUNT_PAGES: [&str; 2] = ["/login", "/register"];

fn silence_ms() -> u32 {
    (SILENCE_MS + js_sys::Math::random() * SILENCE_SPREAD_MS) as u32
}

/// The pause before attempt `failures + 1`: between half and all of a ceiling that
/// doubles with each failure, capped.
fn backoff_ms(failures: u32) -> f64 {
    let ceiling = (FIRST_CEILING_MS * 2f64.powi(failures.saturating_sub(1).min(16) as i32)).min(MAX_CEILING_MS);
    ceiling / 2.0 + js_sys::Math::random() * ceiling / 2.0
}

async fn connect_once(chat: ChatClient, network: &mut mpsc::UnboundedReceiver<bool>, resuming: bool) -> Ended {
    let Ok(ws) = WebSocket::open(&socket_url(resuming)) else {
        return Ended::Dropped { heard_for_ms: None, server_restarting: false };
    };
    let (mut sink, mut stream) = ws.split();
    // Handed to the model only once the server has greeted: until then nothing can be
    // known to go out, and frames given to a socket that never opens would be lost.
    let (tx, mut rx) = mpsc::unbounded();
    spawn_local(async move {
        while let Some(msg) = rx.next().await {
            let frame = super::wire::encode(&msg);
            if sink.send(Message::Text(frame)).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });

    let mut greeted_at = None;
    let mut last_heard_at = 0.0;
    let mut server_restarting = false;
    let mut probing = false;
    let ended = loop {
        let frame = futures::select! {
            frame = stream.next().fuse() => frame,
            change = network.next().fuse() => match change {
                Some(false) => break Some(Ended::Offline),
                _ => continue,
            },
            // The server's own pings never reach the page, so a connection that died
            // without a word (a phone moving between networks) would look open for as
            // long as TCP takes to notice, minutes with messages stuck at "Sending…".
            // Silence is asked about once, then taken for a dead connection.
            () = gloo_timers::future::TimeoutFuture::new(silence_ms()).fuse() => {
                if probing {
                    break None;
                }
                probing = true;
                let _ = tx.unbounded_send(ClientMsg::Ping { id: 0 });
                continue;
            },
        };
        probing = false;
        // A close or a failure is not the connection being alive.
        if let Some(Ok(_)) = frame {
            last_heard_at = platform::now_ms();
        }
        match frame {
            Some(Ok(Message::Text(text))) => match super::wire::decode(&text) {
                Some(msg) => {
                    if matches!(msg, ServerMsg::Hello { .. }) {
                        greeted_at = Some(platform::now_ms());
                        chat.link.try_set_value(Some(tx.clone()));
                    }
                    chat.apply(msg);
                }
                // A greeting this page cannot read comes from a server of another
                // version that does not check the page's (one not yet updated, during
                // a deploy): try again later, perhaps reaching an updated one.
                None if greeted_at.is_none() => {
                    leptos::logging::warn!("dropping a socket whose greeting this page cannot read: {text}");
                    break None;
                }
                None => leptos::logging::warn!("ignoring a frame this client does not understand: {text}"),
            },
            Some(Ok(Message::Bytes(_))) => {}
            Some(Err(WebSocketError::ConnectionClose(close))) => {
                server_restarting = CLOSE_RESTARTING.contains(&close.code);
                break match close.code {
                    close_code::SESSION_ENDED => Some(Ended::SessionEnded),
                    close_code::OUTDATED => Some(Ended::Outdated),
                    _ => None,
                };
            }
            // An `error` event is followed by the `close` event that says why.
            Some(Err(WebSocketError::ConnectionError)) => continue,
            Some(Err(_)) | None => break None,
        }
    };
    // Dropping the senders ends the writer task, which closes the socket.
    chat.link.try_set_value(None);
    drop(tx);
    // Up to the last frame heard: a connection the silence check gave up on was
    // dead for the minute it took to notice.
    let heard_for_ms = greeted_at.map(|at| last_heard_at - at);
    ended.unwrap_or(Ended::Dropped { heard_for_ms, server_restarting })
}

/// The socket's address, on this page's host.
fn socket_url(resuming: bool) -> String {
    let location = window().location();
    let scheme = match location.protocol().as_deref() {
        Ok("https:") => "wss:",
        _ => "ws:",
    };
    format!("{scheme}//{}{}", location.host().unwrap_or_default(), socket_path(resuming))
}
