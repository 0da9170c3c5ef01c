//! Attacks, one test each: the server refuses what it must, keeps serving everyone
//! else, and loses nothing.

mod support;

use std::time::Duration;

use app::protocol::{ClientMsg, ErrorCode, MessageKind, ServerMsg};
use futures::{SinkExt, StreamExt};
use server::config::Config;
use support::{
    databases::TestDb,
    process::ServerProcess,
    server::{relaxed, session_cookie, TestServer, WsClient, PASSWORD},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, http::HeaderValue, Message};

async fn server_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
    let mut config = relaxed();
    tweak(&mut config);
    TestServer::start_with(TestDb::sqlite().await, config).await
}

async fn handshake_status(server: &TestServer, headers: &[(&str, &str)]) -> u16 {
    let mut request = format!("ws://{}{}", server.addr(), app::protocol::socket_path(false)).into_client_request().unwrap();
    for (name, value) in headers {
        let name = tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap();
        request.headers_mut().insert(name, HeaderValue::from_str(value).unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((_, response)) => response.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(err) => panic!("{err}"),
    }
}

#[tokio::test]
async fn a_foreign_origin_cannot_open_a_socket() {
    let server = server_with(|c| c.security.allowed_origins = vec!["https://app.example".into()]).await;
    let cookie = server.register("alice").await;
    let own = format!("http://{}", server.addr());
    assert_eq!(handshake_status(&server, &[("cookie", &cookie), ("origin", "http://evil.example")]).await, 403);
    assert_eq!(handshake_status(&server, &[("cookie", &cookie), ("origin", &own.replace("http:", "https:"))]).await, 403);
    assert_eq!(handshake_status(&server, &[("cookie", &cookie), ("origin", &own)]).await, 101);
    assert_eq!(handshake_status(&server, &[("cookie", &cookie), ("origin", "https://app.example")]).await, 101);
    server.stop().await;
}

#[tokio::test]
async fn compression_is_never_negotiated() {
    let server = TestServer::start().await;
    let cookie = server.register("alice").await;
    let mut request = format!("ws://{}{}", server.addr(), app::protocol::socket_path(false)).into_client_request().unwrap();
    request.headers_mut().insert("cookie", HeaderValue::from_str(&cookie).unwrap());
    request.headers_mut().insert("sec-websocket-extensions", HeaderValue::from_static("permessage-deflate; client_max_window_bits"));
    let (_, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert!(response.headers().get("sec-websocket-extensions").is_none());
    server.stop().await;
}

#[tokio::test]
async fn a_frame_one_byte_over_64_kib_closes_the_socket_with_1009() {
    let server = TestServer::start().await;
    let cookie = server.register("alice").await;
    let mut socket = server.connect(&cookie).await;
    // Exactly the limit is read (and refused as a bad message); the socket stays.
    let at_limit = format!("{{\"type\":\"ping\",\"id\":1,\"pad\":\"{}\"}}", "x".repeat(64 * 1024 - 31));
    assert_eq!(at_limit.len(), 64 * 1024);
    socket.send_raw(Message::text(at_limit)).await;
    let reply = socket.wait_for(|m| matches!(m, ServerMsg::Error { .. })).await;
    assert!(matches!(reply, ServerMsg::Error { code: ErrorCode::BadRequest, .. }), "{reply:?}");
    socket.send_raw(Message::text("x".repeat(64 * 1024 + 1))).await;
    assert_eq!(socket.closed().await, Some(1009));
    // The server carries on.
    server.connect(&cookie).await;
    server.stop().await;
}

#[tokio::test]
async fn a_burst_of_50_messages_is_rate_limited_and_the_socket_recovers() {
    let server = server_with(|c| {
        c.limits.messages_burst = 10;
        c.limits.messages_per_second = 1.0;
    })
    .await;
    let cookie = server.register("alice").await;
    let mut socket = server.connect(&cookie).await;
    let room_id = socket.general_room_id().await;
    for n in 0..50u64 {
        socket.send(&ClientMsg::Send { id: 100 + n, room_id, client_id: format!("b{n}"), text: format!("burst {n}") }).await;
    }
    let (mut stored, mut limited, mut wait_ms) = (0, 0, 0);
    for n in 0..50u64 {
        match socket.reply_to(100 + n).await {
            ServerMsg::Sent { .. } => stored += 1,
            ServerMsg::Error { code: ErrorCode::RateLimited, retry_after_ms: Some(ms), .. } => {
                limited += 1;
                wait_ms = wait_ms.max(ms);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((stored, limited), (10, 40));
    assert!(wait_ms > 0 && wait_ms <= 1_000, "{wait_ms}");
    tokio::time::sleep(Duration::from_millis(wait_ms + 50)).await;
    // As the page does: the first refused goes again once the wait is over.
    let later = socket.request(|id| ClientMsg::Send { id, room_id, client_id: "b10".into(), text: "burst 10".into() }).await;
    assert!(matches!(later, ServerMsg::Sent { .. }), "{later:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_message_refused_as_too_fast_is_stored_before_one_sent_after_it() {
    let server = server_with(|c| {
        c.limits.messages_burst = 1;
        c.limits.messages_per_second = 2.0;
    })
    .await;
    let mut socket = server.connect(&server.register("alice").await).await;
    let room_id = socket.general_room_id().await;
    let post = |client_id: &str| {
        let (client_id, text) = (client_id.to_string(), format!("mensagem {client_id} ✓"));
        move |id| ClientMsg::Send { id, room_id, client_id, text }
    };
    assert!(matches!(socket.request(post("1")).await, ServerMsg::Sent { .. }));
    let wait_ms = match socket.request(post("2")).await {
        ServerMsg::Error { code: ErrorCode::RateLimited, retry_after_ms: Some(ms), .. } => ms,
        other => panic!("{other:?}"),
    };
    // The third was on its way when the page heard that the second was refused, and
    // arrives once the allowance is back: the second is owed it.
    tokio::time::sleep(Duration::from_millis(wait_ms + 20)).await;
    let third = socket.request(post("3")).await;
    assert!(matches!(third, ServerMsg::Error { code: ErrorCode::RateLimited, .. }), "{third:?}");
    assert!(matches!(socket.request(post("2")).await, ServerMsg::Sent { .. }));
    tokio::time::sleep(Duration::from_millis(550)).await;
    assert!(matches!(socket.request(post("3")).await, ServerMsg::Sent { .. }));
    let texts: Vec<String> = match socket.request(|id| ClientMsg::History { id, room_id, before_seq: None }).await {
        ServerMsg::History { messages, .. } => messages.into_iter().filter(|m| m.kind == MessageKind::Text).map(|m| m.text).collect(),
        other => panic!("{other:?}"),
    };
    assert_eq!(texts, ["mensagem 1 ✓", "mensagem 2 ✓", "mensagem 3 ✓"]);
    server.stop().await;
}

#[tokio::test]
async fn room_changes_draw_on_the_message_allowance() {
    // Creating, joining and leaving rooms write to the database like posting does, so
    // a loop of them is limited like a flood of messages.
    let server = server_with(|c| {
        c.limits.messages_burst = 4;
        c.limits.messages_per_second = 0.5;
    })
    .await;
    let mut socket = server.connect(&server.register("alice").await).await;
    let mut verdicts = Vec::new();
    for n in 0..6 {
        let reply = socket.request(|id| ClientMsg::CreateRoom { id, name: format!("room-{n}") }).await;
        verdicts.push(matches!(reply, ServerMsg::RoomJoined { .. }));
    }
    assert_eq!(verdicts, [true, true, true, true, false, false]);
    let refused = socket.request(|id| ClientMsg::LeaveRoom { id, room_id: 1 }).await;
    assert!(matches!(refused, ServerMsg::Error { code: ErrorCode::RateLimited, .. }), "{refused:?}");
    // Reading is not a write: still answered.
    assert!(matches!(socket.request(|id| ClientMsg::ListRooms { id }).await, ServerMsg::Rooms { .. }));
    server.stop().await;
}

/// A server that allows 20 frames at once, then one a second, and closes a socket
/// refused 30 times in a row.
async fn strict_about_frames() -> TestServer {
    server_with(|c| {
        c.limits.frames_burst = 20;
        c.limits.frames_per_second = 1.0;
        c.limits.abuse_close_after = 30;
    })
    .await
}

#[tokio::test]
async fn a_client_that_ignores_refusals_is_closed_with_1008() {
    let server = strict_about_frames().await;
    let mut socket = server.connect(&server.register("alice").await).await;
    for id in 0..200 {
        if socket_send_ignoring_close(&mut socket, id).await.is_err() {
            break;
        }
    }
    assert_eq!(socket.closed().await, Some(1008));
    server.stop().await;
}

/// WebSocket pings are not requests, but a flood of them is metered all the same: it
/// would keep the socket reading instead of writing, and cost work for nothing.
#[tokio::test]
async fn a_flood_of_websocket_pings_is_closed_with_1008() {
    let server = strict_about_frames().await;
    let mut socket = server.connect(&server.register("alice").await).await;
    for _ in 0..200 {
        if socket.try_send_raw(Message::Ping(Default::default())).await.is_err() {
            break;
        }
    }
    assert_eq!(socket.closed().await, Some(1008));
    server.stop().await;
}

async fn socket_send_ignoring_close(socket: &mut WsClient, id: u64) -> Result<(), ()> {
    socket.try_send(&ClientMsg::Ping { id }).await
}

#[tokio::test]
async fn sockets_beyond_100_per_address_are_refused_and_the_first_100_keep_working() {
    let server = TestServer::start().await;
    let mut cookies = Vec::new();
    for n in 0..15 {
        cookies.push(server.register(&format!("user{n:02}")).await);
    }
    let mut open = Vec::new();
    let mut refused = 0;
    for n in 0..150 {
        // Ten per user: per-user limits are not what this test is about.
        match server.try_connect(Some(&cookies[n / 10])).await {
            Ok(socket) => open.push(socket),
            Err(status) => {
                assert_eq!(status, 429);
                refused += 1;
            }
        }
    }
    assert_eq!((open.len(), refused), (100, 50));
    for socket in &mut open {
        assert!(matches!(socket.request(|id| ClientMsg::Ping { id }).await, ServerMsg::Pong { .. }));
    }
    server.stop().await;
}

#[tokio::test]
async fn an_eleventh_socket_for_one_user_is_refused() {
    let server = TestServer::start().await;
    let cookie = server.register("alice").await;
    let mut open = Vec::new();
    for _ in 0..10 {
        open.push(server.try_connect(Some(&cookie)).await.unwrap());
    }
    assert_eq!(server.try_connect(Some(&cookie)).await.err(), Some(429));
    server.stop().await;
}

#[tokio::test]
async fn six_rapid_logins_get_429_even_with_the_right_password() {
    let server = server_with(|c| c.limits.logins_per_minute = 5).await;
    server.register("alice").await;
    for attempt in 0..5 {
        let password = if attempt % 2 == 0 { "wrong password" } else { PASSWORD };
        assert_ne!(server.try_login("alice", password).await.status(), 429, "attempt {attempt}");
    }
    let response = server.try_login("alice", PASSWORD).await;
    assert_eq!(response.status(), 429);
    assert!(session_cookie(&response).is_none());
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    server.stop().await;
}

#[tokio::test]
async fn registrations_per_address_are_limited() {
    let server = server_with(|c| c.limits.registrations_per_hour = 3).await;
    for n in 0..3 {
        server.register(&format!("member{n}")).await;
    }
    assert_eq!(server.try_register("member3", PASSWORD).await.status(), 429);
    server.stop().await;
}

#[tokio::test]
async fn http_floods_get_429_with_retry_after() {
    let server = server_with(|c| {
        c.limits.http_burst = 20;
        c.limits.http_per_second = 1.0;
    })
    .await;
    let mut statuses = Vec::new();
    for _ in 0..25 {
        statuses.push(server.get("/login", None).await);
    }
    let limited = statuses.iter().filter(|r| r.status() == 429).count();
    assert_eq!(limited, 5);
    let refused = statuses.iter().find(|r| r.status() == 429).unwrap();
    assert!(refused.headers().contains_key("retry-after"));
    server.stop().await;
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let server = TestServer::start().await;
    let response = reqwest::Client::new()
        .post(server.url("/api/login"))
        .form(&[("username", "alice"), ("password", &"p".repeat(100 * 1024)), ("next", "/")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    server.stop().await;
}

#[tokio::test]
async fn a_slow_header_client_does_not_stop_the_site_and_is_cut_off() {
    let server = server_with(|c| c.limits.header_read_timeout_secs = 1).await;
    let mut slow = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let started = std::time::Instant::now();
    assert_eq!(server.get("/login", None).await.status(), 200);
    assert!(started.elapsed() < Duration::from_millis(500));
    // The trickling connection is closed once the header timeout passes.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the slow connection was closed");
    server.stop().await;
}

/// A page asked for with a `Host` that is not a host name is refused as a bad
/// request: not failed as a server error (the page renderer cannot read `a b`), and
/// not rendered as another page (`x/r/1?` would read as the chat page at `/r/1`).
#[tokio::test]
async fn a_page_asked_for_with_an_unreadable_host_is_a_bad_request() {
    let server = server_with(|_| {}).await;
    for host in ["a b", "xn--.example", "x/r/1?"] {
        let mut peer = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
        let request = format!("GET /login HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        peer.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        peer.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 400"), "{host}: {answer}");
        assert!(answer.contains("not a valid host name"), "{host}: {answer}");
    }
    assert_eq!(server.get("/login", None).await.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn a_silent_peer_is_closed_after_the_heartbeat_timeout() {
    let server = server_with(|c| {
        c.limits.heartbeat_interval_secs = 1;
        c.limits.heartbeat_timeout_secs = 2;
    })
    .await;
    let cookie = server.register("alice").await;
    // A bare TCP client: a WebSocket library would answer the pings on reading them
    // (and fail writing to the closed socket before reaching the close frame).
    let mut peer = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    let handshake = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nCookie: {cookie}\r\n\r\n",
        app::protocol::socket_path(false),
        server.addr()
    );
    peer.write_all(handshake.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), peer.read_to_end(&mut received))
        .await
        .expect("the server hangs up on a silent peer")
        .unwrap();
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    let frames_start = text.find("\r\n\r\n").unwrap() + 4;
    let close_codes: Vec<u16> = server_frames(&received[frames_start..])
        .into_iter()
        .filter(|(opcode, _)| *opcode == 0x8)
        .map(|(_, payload)| u16::from_be_bytes([payload[0], payload[1]]))
        .collect();
    assert_eq!(close_codes, vec![4000]);
    server.stop().await;
}

/// Splits unmasked server-to-client WebSocket frames into (opcode, payload).
fn server_frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while bytes.len() >= 2 {
        let opcode = bytes[0] & 0x0f;
        let (length, header) = match bytes[1] & 0x7f {
            126 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
            127 => (u64::from_be_bytes(bytes[2..10].try_into().unwrap()) as usize, 10),
            short => (short as usize, 2),
        };
        frames.push((opcode, bytes[header..header + length].to_vec()));
        bytes = &bytes[header + length..];
    }
    frames
}

#[tokio::test]
async fn static_files_cannot_be_reached_outside_the_site_folder() {
    let site = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(site.path().join("pkg")).unwrap();
    std::fs::write(site.path().join("pkg/app.js"), "ok").unwrap();
    std::fs::write(site.path().parent().unwrap().join("parley-secret.txt"), "secret").ok();
    let root = site.path().to_string_lossy().to_string();
    let server = server_with(|c| c.site.root = root).await;
    assert_eq!(server.get("/pkg/app.js", None).await.text().await.unwrap(), "ok");
    for path in ["/pkg/../../parley-secret.txt", "/pkg/%2e%2e/%2e%2e/parley-secret.txt", "/..%2fparley-secret.txt", "/pkg/..%5c..%5cparley-secret.txt"] {
        let response = server.get(path, None).await;
        assert_eq!(response.status(), 404, "{path}");
        assert!(!response.text().await.unwrap().contains("secret"), "{path}");
    }
    server.stop().await;
}

#[tokio::test]
async fn injection_strings_are_data_byte_for_byte() {
    let server = TestServer::start().await;
    let nasty = "Robert'); DROP TABLE users;-- <script>alert(1)</script> \\ %_ \u{1F600}";
    // Usernames have a strict alphabet: such a name is refused and nothing is stored.
    let refused = server.try_register("x'; DROP TABLE users;--", PASSWORD).await;
    assert_eq!(refused.status(), 422);
    // Display names and messages keep every byte.
    let response = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(server.url("/api/register"))
        .form(&[("username", "robert"), ("display_name", nasty), ("password", PASSWORD), ("next", "/")])
        .send()
        .await
        .unwrap();
    let cookie = session_cookie(&response).unwrap();
    let mut socket = server.try_connect(Some(&cookie)).await.unwrap();
    let ServerMsg::Hello { me, rooms, .. } = socket.next().await else { panic!() };
    assert_eq!(me.display_name, nasty);
    let room_id = rooms[0].id;
    let nasty_id = "Robert'); DROP TABLE messages;--";
    let sent = socket.request(|id| ClientMsg::Send { id, room_id, client_id: nasty_id.into(), text: nasty.into() }).await;
    let ServerMsg::Sent { message, .. } = sent else { panic!("{sent:?}") };
    let page: serde_json::Value = server.get(&format!("/api/rooms/{room_id}/messages"), Some(&cookie)).await.json().await.unwrap();
    let last = page["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!((last["text"].as_str(), last["client_id"].as_str()), (Some(nasty), Some(nasty_id)));
    assert_eq!(message.text, nasty);
    server.stop().await;
}

#[tokio::test]
async fn pages_carry_a_strict_content_security_policy_and_safety_headers() {
    let server = TestServer::start().await;
    let response = server.get("/login", None).await;
    let headers = response.headers().clone();
    let csp = headers["content-security-policy"].to_str().unwrap().to_string();
    let html = response.text().await.unwrap();
    let nonce = csp.split("'nonce-").nth(1).unwrap().split('\'').next().unwrap();
    assert!(csp.contains("script-src 'self' 'nonce-") && csp.contains("'wasm-unsafe-eval'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'") && csp.contains("object-src 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert!(html.contains(&format!("nonce=\"{nonce}\"")), "the hydration script carries the nonce");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["referrer-policy"], "same-origin");
    assert!(headers.get("strict-transport-security").is_none(), "not over plain HTTP");
    let again = server.get("/login", None).await.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert_ne!(again, csp, "a fresh nonce per response");
    server.stop().await;
}

#[tokio::test]
async fn a_user_cannot_join_more_rooms_than_allowed() {
    let server = server_with(|c| c.limits.rooms_per_user = 3).await;
    let mut socket = server.connect(&server.register("alice").await).await;
    for name in ["two", "three"] {
        assert!(matches!(socket.request(|id| ClientMsg::CreateRoom { id, name: name.into() }).await, ServerMsg::RoomJoined { .. }));
    }
    match socket.request(|id| ClientMsg::CreateRoom { id, name: "four".into() }).await {
        ServerMsg::Error { code: ErrorCode::Invalid, message, .. } => assert!(message.contains("most allowed"), "{message}"),
        other => panic!("{other:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn a_reader_that_never_reads_is_dropped_and_memory_stays_bounded() {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(
        data.path(),
        &[
            ("PARLEY_LIMITS_MESSAGES_BURST", "1000000"),
            ("PARLEY_LIMITS_FRAMES_BURST", "1000000"),
            ("PARLEY_LIMITS_REGISTRATIONS_PER_HOUR", "100"),
            ("PARLEY_CHAT_SQLITE_FULL_SYNC", "false"),
        ],
    )
    .await;
    let register = |name| server.register(name, PASSWORD);
    let (writer_cookie, reader_cookie, stalled_cookie) = (register("writer").await, register("reader").await, register("stalled").await);

    // The stalled client completes the handshake with a tiny receive buffer, then never reads.
    let stalled_tcp = {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.connect(server.addr).await.unwrap()
    };
    let mut request = format!("ws://{}{}", server.addr, app::protocol::socket_path(false)).into_client_request().unwrap();
    request.headers_mut().insert("cookie", HeaderValue::from_str(&stalled_cookie).unwrap());
    let (stalled, _) = tokio_tungstenite::client_async(request, stalled_tcp).await.unwrap();

    let connect = |cookie: String| {
        let addr = server.addr;
        async move {
            let mut request = format!("ws://{addr}{}", app::protocol::socket_path(false)).into_client_request().unwrap();
            request.headers_mut().insert("cookie", HeaderValue::from_str(&cookie).unwrap());
            tokio_tungstenite::connect_async(request).await.unwrap().0
        }
    };
    // A socket hears the room once it has been greeted: the reader must be, before
    // anything is written (what came before is in the history its greeting points to).
    let greeted = |mut socket: tokio_tungstenite::WebSocketStream<_>| async move {
        loop {
            match socket.next().await {
                Some(Ok(Message::Text(text))) => {
                    if let Ok(ServerMsg::Hello { rooms, .. }) = serde_json::from_str(&text) {
                        return (socket, rooms[0].id);
                    }
                }
                Some(Ok(_)) => {}
                other => panic!("a socket ended before its greeting: {other:?}"),
            }
        }
    };
    let (writer, room_id) = greeted(connect(writer_cookie).await).await;
    let (mut reader, _) = greeted(connect(reader_cookie).await).await;

    // 10,000 messages of 1 KiB: far more than socket buffers and the outbound queue hold.
    const COUNT: usize = 10_000;
    let filler = "m".repeat(1024);
    // The writer reads its acknowledgements as they come, like any healthy client.
    let (mut writer_sink, mut writer_stream) = writer.split();
    let acknowledging = tokio::spawn(async move {
        let mut acks = 0;
        while acks < COUNT {
            let frame = tokio::time::timeout(Duration::from_secs(60), writer_stream.next()).await;
            match frame.expect("acknowledgements keep coming") {
                Some(Ok(Message::Text(text))) => match serde_json::from_str::<ServerMsg>(&text) {
                    Ok(ServerMsg::Sent { .. }) => acks += 1,
                    Ok(ServerMsg::Error { message, .. }) => panic!("a post was refused: {message}"),
                    _ => {}
                },
                Some(Ok(_)) => {}
                other => panic!("writer socket ended after {acks} acknowledgements: {other:?}"),
            }
        }
    });
    // The writer stays at most a window ahead of the healthy reader, as a person typing
    // would: on a busy machine an unpaced writer could outrun this test's own reading by
    // the whole queue, and the healthy reader would rightly be dropped too.
    const WINDOW: usize = 200;
    let (received_count, mut reader_progress) = tokio::sync::watch::channel(0usize);
    let writing = tokio::spawn(async move {
        for n in 0..COUNT {
            reader_progress.wait_for(|&read| n < read + WINDOW).await.expect("the reader is still reading");
            let frame = ClientMsg::Send { id: n as u64 + 1, room_id, client_id: format!("f{n}"), text: format!("{n} {filler}") };
            writer_sink.send(Message::text(serde_json::to_string(&frame).unwrap())).await.unwrap();
        }
        acknowledging.await.unwrap();
    });
    let mut received = Vec::with_capacity(COUNT);
    let mut stalled = Some(stalled);
    let mut stalled_reading = None;
    let mut unreadable = Vec::new();
    // The server's pings would keep a per-frame timeout from ever firing.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while received.len() < COUNT {
        let Ok(frame) = tokio::time::timeout_at(deadline, reader.next()).await else {
            let missing: Vec<usize> = (0..COUNT).filter(|n| !received.contains(n)).take(10).collect();
            panic!(
                "the reader has {} of {COUNT} messages, missing {missing:?}; unreadable frames: {unreadable:?}; the writer {}",
                received.len(),
                if writing.is_finished() { "finished" } else { "did not finish" }
            );
        };
        let mut stalled_went_offline = false;
        match frame {
            Some(Ok(Message::Text(text))) => match serde_json::from_str::<ServerMsg>(&text) {
                Ok(ServerMsg::Message { message }) if message.client_id.is_some() => {
                    received.push(message.text.split(' ').next().unwrap().parse::<usize>().unwrap());
                    received_count.send_replace(received.len());
                }
                Ok(ServerMsg::Presence { total, .. }) => {
                    // All three are online once the reader is greeted, and only the
                    // stalled one goes. (Not "fewer than the most seen": when it goes
                    // within a presence window of the reader coming, the reader's
                    // first notice already counts two.)
                    stalled_went_offline = total < 3;
                }
                Ok(_) => {}
                Err(err) => unreadable.push((err.to_string(), text.chars().take(120).collect::<String>())),
            },
            Some(Ok(_)) => {}
            other => panic!("the healthy reader's socket ended after {} messages: {other:?}", received.len()),
        }
        // Once the server has dropped it (its user goes offline for the others: its
        // queue overflowed, well past what socket buffers hold), the stalled client
        // wakes up and reads what it was sent, ending with the reason it was dropped.
        if stalled_went_offline && stalled.is_some() {
            // The queue's byte limit (1 MiB by default) fills first: each of these
            // frames is under 1,300 bytes, so at least 800 were queued for it.
            assert!(received.len() > 800, "dropped only after its queue filled ({} messages in)", received.len());
            let mut socket = stalled.take().unwrap();
            stalled_reading = Some(tokio::spawn(async move {
                loop {
                    match tokio::time::timeout(Duration::from_secs(20), socket.next()).await {
                        Ok(Some(Ok(Message::Close(close)))) => return close.map(|c| u16::from(c.code)),
                        Ok(Some(Ok(_))) => continue,
                        _ => return None,
                    }
                }
            }));
        }
    }
    tokio::time::timeout(Duration::from_secs(120), writing).await.expect("the writer finished").unwrap();
    assert_eq!(received, (0..COUNT).collect::<Vec<_>>(), "all 10,000, in order, once");

    // The stalled client was disconnected as a slow consumer, and told so (4008)...
    assert_eq!(stalled_reading.expect("the stalled client was dropped").await.unwrap(), Some(4008));
    // ...and the server never held more than this in memory.
    let peak_mib = server.peak_rss_kib() / 1024;
    assert!(peak_mib < 150, "peak RSS {peak_mib} MiB");
}

/// `next` after logging in can only name a path on this site: browsers drop tabs and
/// newlines from addresses and read `\` as `/`, so `/<tab>/evil.example` would go to
/// `//evil.example`. Each is answered with `/`, never with an error.
#[tokio::test]
async fn login_redirects_never_leave_the_site() {
    let server = TestServer::start().await;
    let cookie = server.register("alice").await;
    let hostile = [
        "/%09/evil.example",
        "/%0a/evil.example",
        "/%0d%0a/evil.example",
        "%09//evil.example",
        "//evil.example",
        "/%5Cevil.example",
        "/%5C/evil.example",
        "%2F%2Fevil.example",
        "https%3A%2F%2Fevil.example",
        "/%20/evil.example",
        "/%E2%80%A8/evil.example",
        "/%00",
    ];
    for next in hostile {
        let response = server.get(&format!("/login?next={next}"), Some(&cookie)).await;
        assert_eq!(response.status(), 303, "{next}");
        assert_eq!(response.headers()["location"], "/", "{next}");
        // The login form's own redirect follows the same rule.
        let response = TestServer::http_client()
            .post(server.url("/api/login"))
            .form(&[("username", "alice"), ("password", PASSWORD), ("next", &percent_decoded(next))])
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers().get("location").map(|l| l.to_str().unwrap()), Some("/"), "login with next={next}");
    }
    let response = server.get("/login?next=%2Fr%2Fgeneral%3Fx%3D%252F%252Fy", Some(&cookie)).await;
    assert_eq!(response.headers()["location"], "/r/general?x=%2F%2Fy", "an encoded slash in a path is fine");
    server.stop().await;
}

/// A form posted before the page's script has loaded asks for HTML; refused, it goes
/// back to the form with a code the page turns into a sentence, where it used to land
/// on the server function's raw answer (`ServerError|Wrong username or password.`).
/// The page's own post asks for something else and gets the status and the sentence.
#[tokio::test]
async fn a_refused_plain_form_post_goes_back_to_the_form_with_a_code() {
    let server = TestServer::start().await;
    server.register("alice").await;
    let post = |path: &'static str, accept: &'static str, form: Vec<(&'static str, &'static str)>| {
        TestServer::http_client()
            .post(server.url(path))
            .header("accept", accept)
            .header("referer", server.url("/login?next=%2Fr%2Fgeneral"))
            .form(&form)
            .send()
    };
    const BROWSER: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
    let wrong = vec![("username", "alice"), ("password", "wrong password"), ("next", "/r/general")];
    let response = post("/api/login", BROWSER, wrong.clone()).await.unwrap();
    assert_eq!(response.status(), 302);
    assert_eq!(response.headers()["location"], "/login?next=%2Fr%2Fgeneral&error=wrong_login");
    let taken = vec![("username", "alice"), ("display_name", "Ótimo"), ("password", PASSWORD), ("next", "")];
    let response = post("/api/register", BROWSER, taken).await.unwrap();
    assert_eq!(response.status(), 302);
    assert_eq!(response.headers()["location"], "/register?error=taken");

    let page = server.get("/login?next=%2Fr%2Fgeneral&error=wrong_login", None).await.text().await.unwrap();
    assert!(page.contains("Wrong username or password."), "the form says why");
    for crafted in ["Your+account+is+locked", "wrong_login%20", "WRONG_LOGIN"] {
        let page = server.get(&format!("/login?error={crafted}"), None).await.text().await.unwrap();
        for said in ["locked", "Wrong username", "taken", "Too many", "Check what", "went wrong"] {
            assert!(!page.contains(said), "only known codes are shown: {crafted} showed {said:?}");
        }
    }

    let response = post("/api/login", "application/json", wrong).await.unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.text().await.unwrap().contains("Wrong username or password."));
    server.stop().await;
}

fn percent_decoded(value: &str) -> String {
    form_urlencoded::parse(format!("v={value}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
}

/// Logging in, registering and logging out change state, so they must come from this
/// site: another site's page cannot post them on a visitor's behalf.
#[tokio::test]
async fn state_changing_requests_from_other_sites_are_refused() {
    let server = TestServer::start().await;
    let cookie = server.register("alice").await;
    let own_origin = format!("http://{}", server.addr());
    let client = TestServer::http_client();
    let forms: [(&str, Vec<(&str, &str)>); 3] = [
        ("/api/login", vec![("username", "alice"), ("password", PASSWORD), ("next", "/")]),
        ("/api/register", vec![("username", "mallory"), ("display_name", ""), ("password", PASSWORD), ("next", "/")]),
        ("/api/logout", vec![]),
    ];
    for (path, form) in &forms {
        for headers in [vec![("origin", "https://evil.example")], vec![("sec-fetch-site", "cross-site")], vec![("origin", "null")]] {
            let mut request = client.post(server.url(path)).header("cookie", &cookie).form(form);
            for (name, value) in &headers {
                request = request.header(*name, *value);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 403, "{path} with {headers:?}");
        }
    }
    // Nothing happened: no account was made, and the session still works.
    assert_eq!(server.try_login("mallory", PASSWORD).await.status(), 401);
    server.connect(&cookie).await;
    // From the site itself, the same requests go through.
    let response = client
        .post(server.url("/api/login"))
        .header("origin", &own_origin)
        .header("sec-fetch-site", "same-origin")
        .form(&forms[0].1)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "from the site itself");
    assert!(session_cookie(&response).is_some(), "logged in");
    server.stop().await;
}
