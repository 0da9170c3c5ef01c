//! How the generator speaks to each server: opening an authenticated (Parley) or
//! anonymous socket in a room, the frame that posts a message there, and the frames
//! that need an answer. Everything else a server says is only searched for markers.

use std::net::{IpAddr, SocketAddr};

use app::protocol::ClientMsg;
use futures::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{Message, client::IntoClientRequest, http::HeaderValue},
};

use crate::servers::Kind;

pub type Socket = WebSocketStream<TcpStream>;

/// One socket's place in a run: its room (numbered by the generator) and, for Parley,
/// the session of the account it belongs to.
#[derive(Debug, Clone)]
pub struct Seat {
    pub room: usize,
    pub cookie: Option<String>,
}

/// A server's dialect: Parley's rooms have the ids its storage gave them.
#[derive(Debug, Clone)]
pub struct Dialect {
    pub kind: Kind,
    pub parley_room_ids: Vec<i64>,
}

impl Dialect {
    /// Opens a socket from `from` and waits until it hears its room: Parley's hello,
    /// Socket.IO's answer to joining, the bare server's greeting.
    pub async fn open(
        &self,
        server: SocketAddr,
        from: IpAddr,
        seat: &Seat,
    ) -> Result<Socket, String> {
        let tcp = TcpSocket::new_v4().map_err(|e| e.to_string())?;
        tcp.bind(SocketAddr::new(from, 0))
            .map_err(|e| format!("bind {from}: {e}"))?;
        let stream = tcp
            .connect(server)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let url = match self.kind {
            Kind::Parley => format!("ws://{server}{}", app::protocol::socket_path(false)),
            Kind::Socketio => format!("ws://{server}/socket.io/?EIO=4&transport=websocket"),
            Kind::Bare => format!("ws://{server}/ws?room=r{}", seat.room),
        };
        let mut request = url.into_client_request().map_err(|e| e.to_string())?;
        if let Some(cookie) = &seat.cookie {
            request.headers_mut().insert(
                "cookie",
                HeaderValue::from_str(cookie).map_err(|e| e.to_string())?,
            );
        }
        let (mut socket, _) = tokio_tungstenite::client_async(request, stream)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        match self.kind {
            Kind::Parley => {
                next_text_starting(&mut socket, r#"{"hello":"#).await?;
            }
            Kind::Socketio => {
                next_text_starting(&mut socket, "0").await?;
                socket
                    .send(Message::text("40"))
                    .await
                    .map_err(|e| e.to_string())?;
                next_text_starting(&mut socket, "40").await?;
                socket
                    .send(Message::text(format!(r#"42["join","r{}"]"#, seat.room)))
                    .await
                    .map_err(|e| e.to_string())?;
                next_text_starting(&mut socket, r#"42["joined""#).await?;
            }
            Kind::Bare => {
                next_text_starting(&mut socket, r#"{"joined""#).await?;
            }
        }
        Ok(socket)
    }

    /// The frame that posts `text` to `room` as message `number` of sender `sender`.
    pub fn post(&self, room: usize, sender: u32, number: u64, text: String) -> String {
        match self.kind {
            Kind::Parley => serde_json::to_string(&ClientMsg::Send {
                id: number + 1,
                room_id: self.parley_room_ids[room],
                client_id: format!("b{sender}-{number}"),
                text,
            })
            .expect("requests serialise"),
            Kind::Socketio => {
                format!(
                    "42{}",
                    serde_json::json!(["chat", { "room": format!("r{room}"), "text": text }])
                )
            }
            Kind::Bare => serde_json::json!({ "text": text }).to_string(),
        }
    }

    /// The answer a frame needs from the client, if any: Socket.IO's server pings at
    /// the application level and drops clients that do not answer.
    pub fn answer(&self, frame: &str) -> Option<&'static str> {
        (self.kind == Kind::Socketio && frame == "2").then_some("3")
    }
}

async fn next_text_starting(socket: &mut Socket, prefix: &str) -> Result<(), String> {
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) if text.starts_with(prefix) => return Ok(()),
            Some(Ok(Message::Close(close))) => {
                return Err(format!("closed before {prefix}: {close:?}"));
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(format!("waiting for {prefix}: {e}")),
            None => return Err(format!("closed before {prefix}")),
        }
    }
}

/// The loopback address the `n`th socket connects from. Each source address has its
/// own ~28,000 ephemeral ports towards one server port, so spreading over 127.0.x.y
/// lets a run hold more sockets than one address could.
pub fn source_address(n: usize) -> IpAddr {
    const SOCKETS_PER_ADDRESS: usize = 5_000;
    let address = n / SOCKETS_PER_ADDRESS;
    IpAddr::V4(std::net::Ipv4Addr::new(
        127,
        0,
        2,
        1 + (address % 250) as u8,
    ))
}
