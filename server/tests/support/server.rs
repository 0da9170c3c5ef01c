//! A real Parley server on 127.0.0.1:0 and real clients for it: HTTP (reqwest) for
//! accounts, WebSocket (tokio-tungstenite) for chat.

use std::time::Duration;

use app::protocol::{ClientMsg, RequestId, RoomSummary, ServerMsg};
use futures::{SinkExt, StreamExt};
use server::{config::Config, RunningServer};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    tungstenite::{client::IntoClientRequest, http::HeaderValue, protocol::CloseFrame, Message},
    MaybeTlsStream, WebSocketStream,
};

use super::databases::TestDb;

pub const PASSWORD: &str = "correct horse battery staple";
const WAIT: Duration = Duration::from_secs(10);

pub struct TestServer {
    running: Option<RunningServer>,
    pub db: TestDb,
    pub config: Config,
}

impl TestServer {
    /// A server on a fresh SQLite database, with rate limits out of the way of tests
    /// that are about something else (the security tests use the real defaults).
    pub async fn start() -> Self {
        Self::start_with(TestDb::sqlite().await, relaxed()).await
    }

    /// A server on the given database, with rate limits out of the way.
    pub async fn start_on(db: TestDb) -> Self {
        Self::start_with(db, relaxed()).await
    }

    pub async fn start_with(db: TestDb, mut config: Config) -> Self {
        config.chat.database_url = db.url();
        config.chat.sqlite_full_sync = false;
        let running = Some(Self::launch(&config).await);
        TestServer { running, db, config }
    }

    async fn launch(config: &Config) -> RunningServer {
        let listener = server::bind_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        server::start(config.clone(), listener).await.expect("server starts")
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.running.as_ref().expect("server running").addr()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    /// Where the metrics listener is, if the config asked for one.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.running.as_ref().expect("server running").metrics_addr()
    }

    /// Starts stopping, as SIGTERM would; [`TestServer::stop`] waits for the rest.
    pub fn begin_shutdown(&self) {
        self.running.as_ref().expect("server running").begin_shutdown();
    }

    /// Stops the server and starts a new one on the same database (and a new port).
    pub async fn restart(&mut self) {
        self.running.take().expect("server running").shutdown().await.unwrap();
        self.running = Some(Self::launch(&self.config).await);
    }

    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await.unwrap();
        }
        self.db.remove().await;
    }

    pub fn http_client() -> reqwest::Client {
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
    }

    /// Posts the register form the way a browser without JavaScript would.
    pub async fn try_register(&self, username: &str, password: &str) -> reqwest::Response {
        Self::http_client()
            .post(self.url("/api/register"))
            .form(&[("username", username), ("display_name", ""), ("password", password), ("next", "/")])
            .send()
            .await
            .unwrap()
    }

    pub async fn try_login(&self, username: &str, password: &str) -> reqwest::Response {
        Self::http_client()
            .post(self.url("/api/login"))
            .form(&[("username", username), ("password", password), ("next", "/")])
            .send()
            .await
            .unwrap()
    }

    /// Registers `username` and returns its session cookie (`name=value`).
    pub async fn register(&self, username: &str) -> String {
        let response = self.try_register(username, PASSWORD).await;
        assert!(response.status().is_success() || response.status().is_redirection(), "register {username}: {}", response.status());
        session_cookie(&response).expect("registration sets a session cookie")
    }

    pub async fn login(&self, username: &str) -> String {
        let response = self.try_login(username, PASSWORD).await;
        session_cookie(&response).expect("login sets a session cookie")
    }

    pub async fn logout(&self, cookie: &str) -> reqwest::Response {
        Self::http_client().post(self.url("/api/logout")).header("cookie", cookie).send().await.unwrap()
    }

    pub async fn get(&self, path: &str, cookie: Option<&str>) -> reqwest::Response {
        let request = Self::http_client().get(self.url(path));
        let request = match cookie {
            Some(cookie) => request.header("cookie", cookie),
            None => request,
        };
        request.send().await.unwrap()
    }

    /// Opens a socket with a session cookie and reads the hello.
    pub async fn connect(&self, cookie: &str) -> WsClient {
        let mut client = self.try_connect(Some(cookie)).await.expect("socket opens");
        match client.next().await {
            ServerMsg::Hello { .. } => {}
            other => panic!("expected hello, got {other:?}"),
        }
        client
    }

    /// How a socket with this cookie is turned away: the handshake's HTTP status, or the
    /// close code a socket gets at once (4001 when the session is not live). Panics if
    /// the socket is greeted instead.
    pub async fn refusal(&self, cookie: Option<&str>) -> u16 {
        self.refusal_at(&app::protocol::socket_path(false), cookie).await
    }

    /// [`TestServer::refusal`] for a socket opened at `path` (with its query).
    pub async fn refusal_at(&self, path: &str, cookie: Option<&str>) -> u16 {
        match WsClient::open_at(self.addr(), path, cookie).await {
            Err(status) => status,
            Ok(mut socket) => match socket.read().await {
                Frame::Closed(close) => close.map_or(1006, |frame| u16::from(frame.code)),
                Frame::Msg(msg) => panic!("expected a refusal, got {msg:?}"),
            },
        }
    }

    /// Opens a socket; the handshake's HTTP status if it is refused.
    pub async fn try_connect(&self, cookie: Option<&str>) -> Result<WsClient, u16> {
        WsClient::open(self.addr(), cookie).await
    }
}

impl WsClient {
    /// Opens a socket to the server at `addr`; the handshake's HTTP status if refused.
    pub async fn open(addr: std::net::SocketAddr, cookie: Option<&str>) -> Result<WsClient, u16> {
        WsClient::open_at(addr, &app::protocol::socket_path(false), cookie).await
    }

    /// [`WsClient::open`] at `path` (with its query).
    pub async fn open_at(addr: std::net::SocketAddr, path: &str, cookie: Option<&str>) -> Result<WsClient, u16> {
        let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
        if let Some(cookie) = cookie {
            request.headers_mut().insert("cookie", HeaderValue::from_str(cookie).unwrap());
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((socket, _)) => Ok(WsClient { socket, next_id: 1, buffered: Vec::new() }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
            Err(err) => panic!("connect failed: {err}"),
        }
    }
}

/// Default settings with every rate limit far above what a test does.
pub fn relaxed() -> Config {
    let mut config = Config::default();
    let limits = &mut config.limits;
    limits.messages_burst = 1_000_000;
    limits.frames_burst = 1_000_000;
    limits.http_burst = 1_000_000;
    limits.logins_per_minute = 1_000_000;
    limits.registrations_per_hour = 1_000_000;
    config
}

/// Kept with the process helpers, which the benchmarks include on their own.
pub use super::process::session_cookie;

pub struct WsClient {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: RequestId,
    /// Events that arrived while waiting for a reply, in arrival order.
    buffered: Vec<ServerMsg>,
}

pub enum Frame {
    Msg(ServerMsg),
    Closed(Option<CloseFrame>),
}

impl WsClient {
    /// Wraps a socket opened some other way (through a proxy, over TLS).
    pub fn from_socket(socket: WebSocketStream<MaybeTlsStream<TcpStream>>) -> WsClient {
        WsClient { socket, next_id: 1, buffered: Vec::new() }
    }

    pub async fn send_raw(&mut self, frame: Message) {
        self.socket.send(frame).await.unwrap();
    }

    /// As [`WsClient::send_raw`], reporting a socket the server has closed.
    pub async fn try_send_raw(&mut self, frame: Message) -> Result<(), ()> {
        self.socket.send(frame).await.map_err(|_| ())
    }

    pub async fn send(&mut self, msg: &ClientMsg) {
        self.send_raw(Message::text(serde_json::to_string(msg).unwrap())).await;
    }

    /// Sends, reporting (rather than panicking on) a socket the server has closed.
    pub async fn try_send(&mut self, msg: &ClientMsg) -> Result<(), ()> {
        self.socket.send(Message::text(serde_json::to_string(msg).unwrap())).await.map_err(|_| ())
    }

    async fn read(&mut self) -> Frame {
        loop {
            let frame = tokio::time::timeout(WAIT, self.socket.next()).await.expect("server answered in time");
            match frame {
                Some(Ok(Message::Text(text))) => return Frame::Msg(serde_json::from_str(&text).expect("protocol frame")),
                Some(Ok(Message::Close(close))) => return Frame::Closed(close),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Frame::Closed(None),
            }
        }
    }

    /// The next frame, buffered or new, or the close.
    pub async fn next_frame(&mut self) -> Frame {
        if !self.buffered.is_empty() {
            return Frame::Msg(self.buffered.remove(0));
        }
        self.read().await
    }

    /// The next message, buffered or new.
    pub async fn next(&mut self) -> ServerMsg {
        if !self.buffered.is_empty() {
            return self.buffered.remove(0);
        }
        match self.read().await {
            Frame::Msg(msg) => msg,
            Frame::Closed(close) => panic!("socket closed: {close:?}"),
        }
    }

    /// Sends a request built around a fresh id and returns the reply carrying it;
    /// events arriving meanwhile are kept for [`WsClient::next`].
    pub async fn request(&mut self, build: impl FnOnce(RequestId) -> ClientMsg) -> ServerMsg {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&build(id)).await;
        self.reply_to(id).await
    }

    /// The rooms the person is in or can see, as the server lists them.
    pub async fn rooms(&mut self) -> Vec<RoomSummary> {
        match self.request(|id| ClientMsg::ListRooms { id }).await {
            ServerMsg::Rooms { rooms, .. } => rooms,
            other => panic!("listing rooms: {other:?}"),
        }
    }

    /// The id of the room everyone starts in.
    pub async fn general_room_id(&mut self) -> i64 {
        self.rooms().await.iter().find(|room| room.name == "general").expect("in general").id
    }

    /// The reply to request `id`, already kept or still to come: replies to different
    /// requests need not come in the order they were asked (a refusal comes at once,
    /// an acknowledgement after its commit).
    pub async fn reply_to(&mut self, id: RequestId) -> ServerMsg {
        if let Some(kept) = self.buffered.iter().position(|msg| msg.reply_to() == Some(id)) {
            return self.buffered.remove(kept);
        }
        loop {
            let msg = match self.read().await {
                Frame::Msg(msg) => msg,
                Frame::Closed(close) => panic!("socket closed while waiting for reply {id}: {close:?}"),
            };
            if msg.reply_to() == Some(id) {
                return msg;
            }
            self.buffered.push(msg);
        }
    }

    /// How many of the events kept while waiting for replies match.
    pub fn buffered_count(&self, matching: impl Fn(&ServerMsg) -> bool) -> usize {
        self.buffered.iter().filter(|msg| matching(msg)).count()
    }

    /// Skips messages until one matches, returning it (presence updates and notices
    /// arrive interleaved with what a test is looking for).
    pub async fn wait_for(&mut self, mut wanted: impl FnMut(&ServerMsg) -> bool) -> ServerMsg {
        loop {
            let msg = self.next().await;
            if wanted(&msg) {
                return msg;
            }
        }
    }

    /// Reads until the server closes the socket; returns the close code.
    pub async fn closed(&mut self) -> Option<u16> {
        loop {
            match self.read().await {
                Frame::Msg(_) => continue,
                Frame::Closed(close) => return close.map(|frame| u16::from(frame.code)),
            }
        }
    }

    /// True when nothing arrives within `quiet` (to check something was *not* sent).
    pub async fn is_quiet(&mut self, quiet: Duration, mut ignore: impl FnMut(&ServerMsg) -> bool) -> bool {
        self.buffered.retain(|msg| !ignore(msg));
        if !self.buffered.is_empty() {
            return false;
        }
        let deadline = tokio::time::Instant::now() + quiet;
        loop {
            match tokio::time::timeout_at(deadline, self.socket.next()).await {
                Err(_) => return true,
                Ok(Some(Ok(Message::Text(text)))) => {
                    let msg: ServerMsg = serde_json::from_str(&text).unwrap();
                    if !ignore(&msg) {
                        self.buffered.push(msg);
                        return false;
                    }
                }
                Ok(Some(Ok(_))) => continue,
                Ok(_) => return false,
            }
        }
    }
}
