//! Many people at once: accounts made straight in storage (hashing thousands of
//! passwords would take minutes on two cores and test nothing here), and sockets opened
//! from several loopback addresses so each address stays within its socket allowance.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use app::protocol::{ClientMsg, ServerMsg};
use futures::{SinkExt, StreamExt};
use server::storage::{self, StoreOptions};
use sha2::{Digest, Sha256};
use tokio::{net::TcpSocket, sync::mpsc, task::JoinHandle};
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, http::HeaderValue, Message};

/// Sockets opened from each loopback address (the server's default allowance is 100).
pub const SOCKETS_PER_ADDRESS: usize = 90;

/// Creates `count` accounts in the database at `url`, each a member of the default
/// room `general`, and a live session for each; returns their cookies.
pub async fn seed_people(url: &str, count: usize) -> Vec<String> {
    seed_people_last_seen(url, count, Duration::ZERO).await
}

/// As [`seed_people`], with sessions last used `ago` (as after a restart).
pub async fn seed_people_last_seen(url: &str, count: usize, ago: Duration) -> Vec<String> {
    let store = storage::open(url, &StoreOptions { max_connections: 4, sqlite_full_sync: false }).await.unwrap();
    let general = store.ensure_public_room("general", 1).await.unwrap();
    let mut cookies = Vec::with_capacity(count);
    for n in 0..count {
        let user = store.create_user(&format!("person{n:05}"), &format!("Person {n:05}"), "not-a-hash", 1).await.unwrap();
        store.join(general.id, &user, 2).await.unwrap();
        let token = format!("{n:064x}");
        let token_hash = hex::encode(Sha256::digest(token.as_bytes()));
        store.create_session(user.id, &token_hash, now_millis() - ago.as_millis() as i64, i64::MAX).await.unwrap();
        cookies.push(format!("parley_session={token}"));
    }
    cookies
}

fn now_millis() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// The loopback address the `n`th socket connects from: 127.0.1.1, 127.0.1.2, … with
/// [`SOCKETS_PER_ADDRESS`] sockets each (all of 127.0.0.0/8 routes to loopback).
pub fn source_address(n: usize) -> IpAddr {
    let address = n / SOCKETS_PER_ADDRESS;
    IpAddr::V4(Ipv4Addr::new(127, 0, 1 + (address / 250) as u8, 1 + (address % 250) as u8))
}

/// What one socket saw, kept up to date by its reading task.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    pub greeted: bool,
    /// The newest presence count per room.
    pub online: HashMap<i64, u32>,
    /// The close code, once the server closed the socket.
    pub closed: Option<u16>,
    pub frames: usize,
    /// Read receipts heard, and the newest message seen.
    pub receipts: usize,
    pub last_message_seq: Option<i64>,
}

/// A socket whose frames are read (and summed up in `seen`) by a task of its own.
pub struct Member {
    pub seen: Arc<Mutex<Seen>>,
    outgoing: mpsc::UnboundedSender<ClientMsg>,
    tasks: [JoinHandle<()>; 2],
}

impl Member {
    /// Sends a request; its answer, if any, is only counted.
    pub fn send(&self, msg: ClientMsg) {
        let _ = self.outgoing.send(msg);
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

/// Opens a socket from `from` to `server` with `cookie` and starts reading it.
pub async fn join_crowd(server: SocketAddr, from: IpAddr, cookie: &str) -> Result<Member, String> {
    let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket.bind(SocketAddr::new(from, 0)).map_err(|e| e.to_string())?;
    let stream = socket.connect(server).await.map_err(|e| e.to_string())?;
    let mut request = format!("ws://{server}{}", app::protocol::socket_path(false)).into_client_request().unwrap();
    request.headers_mut().insert("cookie", HeaderValue::from_str(cookie).unwrap());
    let (ws, _) = tokio_tungstenite::client_async(request, stream).await.map_err(|e| e.to_string())?;
    let (mut sink, mut ws) = ws.split();
    let (outgoing, mut to_send) = mpsc::unbounded_channel::<ClientMsg>();
    let writer = tokio::spawn(async move {
        while let Some(msg) = to_send.recv().await {
            if sink.send(Message::text(serde_json::to_string(&msg).unwrap())).await.is_err() {
                return;
            }
        }
    });
    let seen = Arc::new(Mutex::new(Seen::default()));
    let reader = tokio::spawn({
        let seen = seen.clone();
        async move {
            while let Some(frame) = ws.next().await {
                let mut seen = seen.lock().unwrap();
                match frame {
                    Ok(Message::Text(text)) => {
                        seen.frames += 1;
                        match serde_json::from_str::<ServerMsg>(&text) {
                            Ok(ServerMsg::Hello { .. }) => seen.greeted = true,
                            Ok(ServerMsg::Presence { room_id, total, .. }) => {
                                seen.online.insert(room_id, total);
                            }
                            Ok(ServerMsg::Receipt { .. }) => seen.receipts += 1,
                            Ok(ServerMsg::Message { message }) => seen.last_message_seq = Some(message.seq),
                            _ => {}
                        }
                    }
                    Ok(Message::Close(close)) => {
                        seen.closed = Some(close.map_or(1005, |frame| u16::from(frame.code)));
                        return;
                    }
                    Ok(_) => {}
                    Err(_) => {
                        seen.closed.get_or_insert(1006);
                        return;
                    }
                }
            }
            seen.lock().unwrap().closed.get_or_insert(1006);
        }
    });
    Ok(Member { seen, outgoing, tasks: [reader, writer] })
}

/// Opens one socket per cookie, all at once (a reconnect storm), and waits until every
/// one is greeted or `within` passes; returns the members and how long it took.
pub async fn storm(server: SocketAddr, cookies: &[String], within: Duration) -> (Vec<Member>, Duration) {
    let started = std::time::Instant::now();
    let opening: Vec<_> = cookies
        .iter()
        .enumerate()
        .map(|(n, cookie)| {
            let cookie = cookie.clone();
            tokio::spawn(async move { join_crowd(server, source_address(n), &cookie).await })
        })
        .collect();
    let mut members = Vec::with_capacity(cookies.len());
    for (n, opened) in opening.into_iter().enumerate() {
        match opened.await.unwrap() {
            Ok(member) => members.push(member),
            Err(err) => panic!("socket {n} did not open: {err}"),
        }
    }
    let deadline = started + within;
    while members.iter().any(|m| !m.seen.lock().unwrap().greeted) {
        assert!(std::time::Instant::now() < deadline, "not every socket was greeted within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (members, started.elapsed())
}

/// Close codes the crowd received, with how many got each.
pub fn closes(members: &[Member]) -> HashMap<u16, usize> {
    let mut codes = HashMap::new();
    for member in members {
        if let Some(code) = member.seen.lock().unwrap().closed {
            *codes.entry(code).or_insert(0) += 1;
        }
    }
    codes
}
