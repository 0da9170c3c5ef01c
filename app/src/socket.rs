//! The browser's end of the WebSocket: one connection per page, reconnecting by itself.
//!
//! On the server this only creates the signals the markup reads (their initial values
//! are what the HTML shows); the connection itself is made after hydration.

use leptos::prelude::*;

use crate::protocol::{ClientMsg, RequestId};

/// What the connection indicator shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// First attempt since the page loaded; also what the server renders.
    Connecting,
    /// The server has greeted this connection.
    Online,
    /// The connection dropped; a new attempt is scheduled.
    #[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
    Reconnecting,
}

/// A handle to the page's connection, cheap to copy into event handlers.
#[derive(Clone, Copy)]
pub struct Socket {
    pub state: ReadSignal<ConnState>,
    pub last_round_trip_ms: ReadSignal<Option<f64>>,
    set_round_trip: WriteSignal<Option<f64>>,
    /// Frames for the writer task; `None` while there is no open connection.
    outgoing: StoredValue<Option<futures::channel::mpsc::UnboundedSender<ClientMsg>>, LocalStorage>,
    /// Send times of pings still waiting for their pong, by request id.
    pending_pings: StoredValue<Vec<(RequestId, f64)>, LocalStorage>,
    next_request: StoredValue<RequestId>,
}

impl Socket {
    /// Creates the handle and, in the browser, starts connecting once hydrated.
    pub fn connect() -> Self {
        let (state, set_state) = signal(ConnState::Connecting);
        let (last_round_trip_ms, set_round_trip) = signal(None);
        let socket = Socket {
            state,
            last_round_trip_ms,
            set_round_trip,
            outgoing: StoredValue::new_local(None),
            pending_pings: StoredValue::new_local(Vec::new()),
            next_request: StoredValue::new(1),
        };
        #[cfg(feature = "hydrate")]
        browser::start(socket, set_state);
        #[cfg(not(feature = "hydrate"))]
        let _ = set_state;
        socket
    }

    /// Sends a ping and records when, so the pong can be turned into a round-trip time.
    pub fn ping(&self) {
        let id = self.allocate_request_id();
        self.pending_pings
            .update_value(|pings| pings.push((id, now_ms())));
        self.send(ClientMsg::Ping { id });
    }

    fn allocate_request_id(&self) -> RequestId {
        let id = self.next_request.get_value();
        self.next_request.set_value(id + 1);
        id
    }

    fn send(&self, msg: ClientMsg) {
        self.outgoing.with_value(|outgoing| {
            if let Some(tx) = outgoing {
                let _ = tx.unbounded_send(msg);
            }
        });
    }

    #[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
    fn pong_received(&self, id: RequestId) {
        let mut sent_at = None;
        self.pending_pings.update_value(|pings| {
            if let Some(pos) = pings.iter().position(|(ping, _)| *ping == id) {
                sent_at = Some(pings.swap_remove(pos).1);
            }
        });
        if let Some(sent_at) = sent_at {
            self.set_round_trip.set(Some(now_ms() - sent_at));
        }
    }
}

#[cfg(feature = "hydrate")]
fn now_ms() -> f64 {
    js_sys::Date::now()
}

#[cfg(not(feature = "hydrate"))]
fn now_ms() -> f64 {
    0.0
}

#[cfg(feature = "hydrate")]
mod browser {
    use std::sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    };

    use futures::{SinkExt, StreamExt};
    use gloo_net::websocket::{futures::WebSocket, Message};
    use leptos::{prelude::*, task::spawn_local};

    use super::{ConnState, Socket};
    use crate::protocol::ServerMsg;

    /// Longest wait between reconnect attempts.
    const MAX_BACKOFF_MS: f64 = 30_000.0;
    const FIRST_BACKOFF_MS: f64 = 500.0;

    pub(super) fn start(socket: Socket, set_state: WriteSignal<ConnState>) {
        let alive = Arc::new(AtomicBool::new(true));
        on_cleanup({
            let alive = alive.clone();
            move || alive.store(false, Ordering::Relaxed)
        });
        spawn_local(async move {
            let mut failures: u32 = 0;
            while alive.load(Ordering::Relaxed) {
                if run_connection(socket, set_state, &alive).await {
                    failures = 0;
                }
                if !alive.load(Ordering::Relaxed) {
                    break;
                }
                set_state.try_set(ConnState::Reconnecting);
                failures = failures.saturating_add(1);
                gloo_timers::future::TimeoutFuture::new(backoff_ms(failures) as u32).await;
            }
        });
    }

    /// Exponential backoff with full jitter, so a server restart is not met by every
    /// client reconnecting in the same instant.
    fn backoff_ms(failures: u32) -> f64 {
        let ceiling = (FIRST_BACKOFF_MS * 2f64.powi(failures.min(16) as i32)).min(MAX_BACKOFF_MS);
        FIRST_BACKOFF_MS / 2.0 + js_sys::Math::random() * ceiling
    }

    /// Runs one connection until it closes. Returns whether the server greeted it, which
    /// resets the backoff.
    async fn run_connection(socket: Socket, set_state: WriteSignal<ConnState>, alive: &AtomicBool) -> bool {
        let Ok(ws) = WebSocket::open(&socket_url()) else {
            return false;
        };
        let (mut sink, mut stream) = ws.split();
        let (tx, mut rx) = futures::channel::mpsc::unbounded();
        socket.outgoing.try_set_value(Some(tx));
        spawn_local(async move {
            while let Some(msg) = rx.next().await {
                let frame = serde_json::to_string(&msg).expect("client messages always serialise");
                if sink.send(Message::Text(frame)).await.is_err() {
                    break;
                }
            }
        });

        let mut greeted = false;
        while let Some(Ok(frame)) = stream.next().await {
            if !alive.load(Ordering::Relaxed) {
                break;
            }
            let Message::Text(text) = frame else { continue };
            let Ok(msg) = serde_json::from_str::<ServerMsg>(&text) else {
                leptos::logging::warn!("ignoring a frame this client does not understand");
                continue;
            };
            match msg {
                ServerMsg::Hello { .. } => {
                    greeted = true;
                    set_state.try_set(ConnState::Online);
                }
                ServerMsg::Pong { id } => socket.pong_received(id),
                ServerMsg::Error { message, .. } => {
                    leptos::logging::warn!("server refused a request: {message}");
                }
            }
        }
        // Dropping the sender ends the writer task, which drops the socket.
        socket.outgoing.try_set_value(None);
        greeted
    }

    fn socket_url() -> String {
        let location = window().location();
        let scheme = match location.protocol().as_deref() {
            Ok("https:") => "wss:",
            _ => "ws:",
        };
        format!("{scheme}//{}/ws", location.host().unwrap_or_default())
    }
}
