//! Nothing acknowledged is lost and nothing is duplicated, whatever happens to the
//! connection or the server process.

#[macro_use]
mod support;

use std::{
    collections::{BTreeMap, HashSet},
    time::Duration,
};

use app::protocol::{ChatMessage, ClientMsg, ServerMsg};
use futures::{SinkExt, StreamExt};
use support::{
    databases::TestDb,
    process::ServerProcess,
    server::{session_cookie, TestServer, WsClient, PASSWORD},
};
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, http::HeaderValue, Message};

/// A small deterministic generator, so a failing run can be replayed.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

async fn create_room(client: &mut WsClient, name: &str) -> i64 {
    match client.request(|id| ClientMsg::CreateRoom { id, name: name.into() }).await {
        ServerMsg::RoomJoined { room, .. } => room.id,
        other => panic!("{other:?}"),
    }
}

/// What a reader holds: messages appended strictly in sequence, as the browser's
/// timeline does, each marked with how it arrived. A live message beyond the next
/// expected one reveals a gap, filled by a catch-up request. The only copy a reader may
/// see twice is a live message that a catch-up on the same connection also returned
/// (it was published while the catch-up was being answered); any other repeat is the
/// server sending something twice, counted in `unexpected_repeats`.
#[derive(Default)]
struct Reader {
    held: Vec<ChatMessage>,
    taken_live: usize,
    taken_from_catch_up: usize,
    /// This connection's catch-up answers and live messages, by sequence number.
    caught_up_here: HashSet<i64>,
    live_here: HashSet<i64>,
    unexpected_repeats: Vec<i64>,
}

impl Reader {
    fn last_seq(&self) -> i64 {
        self.held.last().map_or(0, |m| m.seq)
    }

    fn new_connection(&mut self) {
        self.caught_up_here.clear();
        self.live_here.clear();
    }

    /// A live message; false if it reveals a gap (catch up, which will bring it).
    fn live(&mut self, message: ChatMessage) -> bool {
        let seq = message.seq;
        if !self.live_here.insert(seq) || (seq <= self.last_seq() && !self.caught_up_here.contains(&seq)) {
            self.unexpected_repeats.push(seq);
            return true;
        }
        if seq <= self.last_seq() {
            return true;
        }
        if seq > self.last_seq() + 1 {
            return false;
        }
        self.held.push(message);
        self.taken_live += 1;
        true
    }

    /// Asks for everything after what is held, page by page, until complete.
    async fn catch_up(&mut self, socket: &mut WsClient, room_id: i64) {
        loop {
            let after_seq = self.last_seq();
            match socket.request(|id| ClientMsg::Catchup { id, room_id, after_seq }).await {
                ServerMsg::Catchup { messages, has_more, .. } => {
                    for message in messages {
                        assert_eq!(message.seq, self.last_seq() + 1, "catch-up pages are contiguous and start after what is held");
                        self.caught_up_here.insert(message.seq);
                        self.held.push(message);
                        self.taken_from_catch_up += 1;
                    }
                    if !has_more {
                        return;
                    }
                }
                other => panic!("catch-up: {other:?}"),
            }
        }
    }

    /// Reads live messages of the room for up to `frames` frames or until `until` is
    /// held (whichever first), catching up when a gap shows.
    async fn read_live(&mut self, socket: &mut WsClient, room_id: i64, frames: u64, until: Option<i64>, wait: Duration) {
        for _ in 0..frames {
            if until.is_some_and(|last| self.last_seq() >= last) {
                return;
            }
            match tokio::time::timeout(wait, socket.next()).await {
                Ok(ServerMsg::Message { message }) if message.room_id == room_id => {
                    if !self.live(message) {
                        self.catch_up(socket, room_id).await;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    }
}

async fn a_reader_cut_off_again_and_again_ends_with_all_500_messages_once_in_order(db: TestDb) {
    let server = TestServer::start_on(db).await;
    let writer_cookie = server.register("writer").await;
    let reader_cookie = server.register("reader").await;
    let mut writer = server.connect(&writer_cookie).await;
    let room_id = create_room(&mut writer, "firehose").await;
    let mut setup = server.connect(&reader_cookie).await;
    assert!(matches!(setup.request(|id| ClientMsg::JoinRoom { id, room_id }).await, ServerMsg::RoomJoined { .. }));
    drop(setup);

    let writing = tokio::spawn(async move {
        let mut last_seq = 0;
        for n in 0..500 {
            match writer.request(|id| ClientMsg::Send { id, room_id, client_id: format!("w{n}"), text: format!("message {n}") }).await {
                ServerMsg::Sent { message, .. } => last_seq = message.seq,
                other => panic!("send {n}: {other:?}"),
            }
            if n % 50 == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        last_seq
    });

    let mut rng = XorShift(0x5eed_1234_abcd_0042);
    let mut reader = Reader::default();
    let mut cuts = 0;
    let mut socket = loop {
        let mut socket = server.connect(&reader_cookie).await;
        reader.new_connection();
        reader.catch_up(&mut socket, room_id).await;
        if writing.is_finished() || cuts >= 12 {
            break socket;
        }
        // Read live for a random while, then the connection is cut without warning.
        reader.read_live(&mut socket, room_id, rng.below(40), None, Duration::from_millis(200)).await;
        drop(socket);
        cuts += 1;
    };
    // The last connection stays: what is still being written must arrive live.
    let last_seq = writing.await.unwrap();
    let live_before_the_end = reader.taken_live;
    reader.read_live(&mut socket, room_id, u64::MAX, Some(last_seq), Duration::from_secs(5)).await;
    assert_eq!(reader.last_seq(), last_seq, "the rest arrived live on the open connection");

    // The room's join notices come first; then the 500, each once, in order.
    let texts: Vec<&str> = reader.held.iter().filter(|m| m.client_id.is_some()).map(|m| m.text.as_str()).collect();
    let expected: Vec<String> = (0..500).map(|n| format!("message {n}")).collect();
    assert_eq!(texts, expected);
    assert!(reader.held.windows(2).all(|w| w[0].seq + 1 == w[1].seq));
    assert_eq!(reader.unexpected_repeats, Vec::<i64>::new(), "the server sent nothing twice");
    assert_eq!(reader.taken_live + reader.taken_from_catch_up, reader.held.len(), "each message taken once");
    assert!(cuts >= 3, "the connection was cut {cuts} times");
    assert!(live_before_the_end > 0, "messages arrived live between the cuts too");
    server.stop().await;
}

async fn a_retry_after_a_lost_acknowledgement_does_not_duplicate(db: TestDb) {
    let server = TestServer::start_on(db).await;
    let cookie = server.register("alice").await;
    let mut first = server.connect(&cookie).await;
    let room_id = create_room(&mut first, "flaky").await;
    let mut witness = server.connect(&server.register("bob").await).await;
    assert!(matches!(witness.request(|id| ClientMsg::JoinRoom { id, room_id }).await, ServerMsg::RoomJoined { .. }));
    // Send, and lose the connection once the message is stored (a member hears it) but
    // before its acknowledgement is read.
    first.send(&ClientMsg::Send { id: 77, room_id, client_id: "lost-ack".into(), text: "did it arrive?".into() }).await;
    witness
        .wait_for(|m| matches!(m, ServerMsg::Message { message } if message.client_id.as_deref() == Some("lost-ack")))
        .await;
    drop(first);

    let mut second = server.connect(&cookie).await;
    // It was stored although its acknowledgement was lost: the retry is a real retry.
    let stored_before_retry = match second.request(|id| ClientMsg::History { id, room_id, before_seq: None }).await {
        ServerMsg::History { messages, .. } => messages.into_iter().filter(|m| m.text == "did it arrive?").collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    assert_eq!(stored_before_retry.len(), 1, "the first send was stored");
    let retried = second.request(|id| ClientMsg::Send { id, room_id, client_id: "lost-ack".into(), text: "did it arrive?".into() }).await;
    let ServerMsg::Sent { message, .. } = retried else { panic!("{retried:?}") };
    match second.request(|id| ClientMsg::History { id, room_id, before_seq: None }).await {
        ServerMsg::History { messages, .. } => {
            let copies: Vec<&ChatMessage> = messages.iter().filter(|m| m.text == "did it arrive?").collect();
            assert_eq!(copies, vec![&message], "one stored copy, returned to the retry");
            assert_eq!(message, stored_before_retry[0], "the retry got the original back");
        }
        other => panic!("{other:?}"),
    }
    server.stop().await;
}

/// A post whose commit was reported failed though it landed (the connection to the
/// database dropped with the answer) is stored but was announced to nobody. Its
/// retry finds it stored: the room must hear it then, or it would learn of it only
/// from the next message or a reload.
async fn a_retry_of_a_post_stored_but_never_announced_reaches_the_room(db: TestDb) {
    let server = TestServer::start_on(db).await;
    let mut alice = server.connect(&server.register("alice").await).await;
    let room_id = create_room(&mut alice, "unannounced").await;
    let mut bob = server.connect(&server.register("bob").await).await;
    assert!(matches!(bob.request(|id| ClientMsg::JoinRoom { id, room_id }).await, ServerMsg::RoomJoined { .. }));
    let greeting = alice.request(|id| ClientMsg::Send { id, room_id, client_id: "first".into(), text: "olá".into() }).await;
    let ServerMsg::Sent { message: first, .. } = greeting else { panic!("{greeting:?}") };
    bob.wait_for(|m| matches!(m, ServerMsg::Message { message } if message.seq == first.seq)).await;

    // Stored behind the server's back, as the failed batch left it.
    let store = server.db.open().await;
    let stored = store.post(room_id, &first.sender, "landed-unheard", "Ótimo! ação 😀", first.sent_at + 1).await.unwrap();
    assert!(matches!(stored, server::storage::Posted::New(_)));

    let retried =
        alice.request(|id| ClientMsg::Send { id, room_id, client_id: "landed-unheard".into(), text: "Ótimo! ação 😀".into() }).await;
    let ServerMsg::Sent { message, .. } = retried else { panic!("{retried:?}") };
    let heard = bob.wait_for(|m| matches!(m, ServerMsg::Message { message } if message.client_id.as_deref() == Some("landed-unheard"))).await;
    assert_eq!(heard, ServerMsg::Message { message: message.clone() }, "the room hears the stored original");
    // Retried again, now that everyone has it: nobody hears it twice.
    let again =
        alice.request(|id| ClientMsg::Send { id, room_id, client_id: "landed-unheard".into(), text: "Ótimo! ação 😀".into() }).await;
    assert!(matches!(again, ServerMsg::Sent { message: ref m, .. } if *m == message), "{again:?}");
    let is_text = |m: &ServerMsg| matches!(m, ServerMsg::Message { .. });
    assert!(bob.is_quiet(Duration::from_millis(300), |m| !is_text(m)).await, "the second retry was not broadcast");
    server.stop().await;
}

async fn socket(addr: std::net::SocketAddr, cookie: &str) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let mut request = format!("ws://{addr}{}", app::protocol::socket_path(false)).into_client_request().unwrap();
    request.headers_mut().insert("cookie", HeaderValue::from_str(cookie).unwrap());
    tokio_tungstenite::connect_async(request).await.unwrap().0
}

async fn next_msg(ws: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>) -> ServerMsg {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await.unwrap() {
            Some(Ok(Message::Text(text))) => return serde_json::from_str(&text).unwrap(),
            Some(Ok(_)) => continue,
            other => panic!("socket ended: {other:?}"),
        }
    }
}

/// This test is about durability, not rate limits.
const DURABILITY_ONLY: &[(&str, &str)] = &[("PARLEY_LIMITS_MESSAGES_BURST", "100000"), ("PARLEY_LIMITS_FRAMES_BURST", "100000")];

async fn every_acknowledged_message_survives_sigkill(db: TestDb) {
    let data = tempfile::tempdir().unwrap();
    let database_url = db.url();
    let settings: Vec<(&str, &str)> =
        DURABILITY_ONLY.iter().copied().chain([("PARLEY_CHAT_DATABASE_URL", database_url.as_str())]).collect();
    let server = ServerProcess::start(data.path(), &settings).await;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let response = http
        .post(format!("http://{}/api/register", server.addr))
        .form(&[("username", "durable"), ("display_name", ""), ("password", PASSWORD), ("next", "/")])
        .send()
        .await
        .unwrap();
    let cookie = session_cookie(&response).expect("registered");
    let mut ws = socket(server.addr, &cookie).await;
    let ServerMsg::Hello { rooms, .. } = next_msg(&mut ws).await else { panic!("hello") };
    let room_id = rooms[0].id;

    // Pipeline 300 sends and kill the process the moment 150 are acknowledged.
    for n in 0..300u64 {
        let frame = ClientMsg::Send { id: n + 1, room_id, client_id: format!("k{n}"), text: format!("kill test {n}") };
        ws.send(Message::text(serde_json::to_string(&frame).unwrap())).await.unwrap();
    }
    let mut acknowledged = BTreeMap::new();
    while acknowledged.len() < 150 {
        if let ServerMsg::Sent { message, .. } = next_msg(&mut ws).await {
            acknowledged.insert(message.client_id.clone().unwrap(), message);
        }
    }
    server.kill_hard();
    drop(ws);

    let restarted = ServerProcess::start(data.path(), &settings).await;
    let mut ws = socket(restarted.addr, &cookie).await;
    let _hello = next_msg(&mut ws).await;
    let mut stored = BTreeMap::new();
    let mut after_seq = 0;
    loop {
        let frame = ClientMsg::Catchup { id: 1, room_id, after_seq };
        ws.send(Message::text(serde_json::to_string(&frame).unwrap())).await.unwrap();
        let ServerMsg::Catchup { messages, has_more, .. } = (loop {
            let msg = next_msg(&mut ws).await;
            if matches!(msg, ServerMsg::Catchup { .. }) {
                break msg;
            }
        }) else {
            unreachable!()
        };
        after_seq = messages.last().map_or(after_seq, |m| m.seq);
        for message in messages {
            if let Some(client_id) = message.client_id.clone() {
                assert!(stored.insert(client_id, message).is_none(), "no message is stored twice");
            }
        }
        if !has_more {
            break;
        }
    }
    for (client_id, message) in &acknowledged {
        assert_eq!(stored.get(client_id), Some(message), "acknowledged {client_id} is stored as acknowledged");
    }
    restarted.kill_hard();
    db.remove().await;
}

on_both_databases!(
    a_reader_cut_off_again_and_again_ends_with_all_500_messages_once_in_order,
    a_retry_after_a_lost_acknowledgement_does_not_duplicate,
    a_retry_of_a_post_stored_but_never_announced_reaches_the_room,
    every_acknowledged_message_survives_sigkill,
);
