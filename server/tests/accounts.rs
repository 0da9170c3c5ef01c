//! Accounts and sessions over HTTP, and what they mean for sockets and pages.

mod support;

use app::protocol::{close_code, ServerMsg, PROTOCOL_VERSION};
use support::{
    databases::TestDb,
    server::{relaxed, session_cookie, TestServer, WsClient, PASSWORD},
};

#[tokio::test]
async fn registration_checks_its_input_and_refuses_taken_names() {
    let server = TestServer::start().await;
    let response = server.try_register("al", PASSWORD).await;
    assert_eq!(response.status(), 422);
    assert!(response.text().await.unwrap().contains("Username must be 3 to 32 characters"));
    let response = server.try_register("alice", "short").await;
    assert_eq!(response.status(), 422);
    assert!(session_cookie(&response).is_none());

    server.register("Alice").await;
    let response = server.try_register("ALICE", PASSWORD).await;
    assert_eq!(response.status(), 409);
    assert!(response.text().await.unwrap().contains("That username is taken."));
    server.stop().await;
}

#[tokio::test]
async fn the_session_cookie_is_http_only_and_same_site() {
    let server = TestServer::start().await;
    let response = server.try_register("alice", PASSWORD).await;
    let set_cookie = response.headers().get("set-cookie").unwrap().to_str().unwrap().to_string();
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(set_cookie.contains("SameSite=Lax"), "{set_cookie}");
    assert!(set_cookie.contains("Path=/"), "{set_cookie}");
    let token = set_cookie.split(';').next().unwrap().trim_start_matches("parley_session=");
    assert_eq!(token.len(), 64, "256 random bits, hex");
    server.stop().await;
}

#[tokio::test]
async fn login_needs_the_right_password_and_ignores_username_case() {
    let server = TestServer::start().await;
    server.register("alice").await;
    for (username, password) in [("alice", "wrong password"), ("nobody", PASSWORD)] {
        let response = server.try_login(username, password).await;
        assert_eq!(response.status(), 401, "{username}");
        assert!(session_cookie(&response).is_none());
        // Same words for both, so the form does not reveal which accounts exist.
        assert!(response.text().await.unwrap().contains("Wrong username or password."));
    }
    let cookie = server.login("ALICE").await;
    server.connect(&cookie).await;
    server.stop().await;
}

#[tokio::test]
async fn a_page_speaking_an_older_protocol_is_told_to_reload() {
    // A tab loaded before a deploy that changed the protocol is closed at once with
    // 4009, session or not, so that it offers a reload instead of misreading frames.
    let server = TestServer::start().await;
    let cookie = server.register("alice").await;
    let older = format!("/ws?protocol={}", PROTOCOL_VERSION - 1);
    for path in ["/ws", "/ws?resume=1", &older, "/ws?protocol=x&resume=1", "/ws?resume=1&protocol=-1"] {
        assert_eq!(server.refusal_at(path, Some(&cookie)).await, close_code::OUTDATED, "{path}");
        assert_eq!(server.refusal_at(path, None).await, close_code::OUTDATED, "{path}, no session");
    }
    // A page newer than this node (it was loaded from an updated node while a deploy
    // rolls) is not out of date: it is told to try again later (1013), and will most
    // likely reach an updated node; a reload could fetch this node's older page.
    let newer = format!("/ws?resume=1&protocol={}", PROTOCOL_VERSION + 1);
    assert_eq!(server.refusal_at(&newer, Some(&cookie)).await, 1013);
    assert_eq!(server.refusal_at(&newer, None).await, 1013, "no session");
    let current = format!("/ws?resume=1&protocol={PROTOCOL_VERSION}");
    let mut socket = WsClient::open_at(server.addr(), &current, Some(&cookie)).await.unwrap();
    assert!(matches!(socket.next().await, ServerMsg::Hello { .. }), "the query's order does not matter");
    server.stop().await;
}

#[tokio::test]
async fn sockets_need_a_live_session() {
    // The handshake goes through and the socket closes at once with 4001: a browser
    // cannot see a refused handshake's status, but it can see this.
    let server = TestServer::start().await;
    assert_eq!(server.refusal(None).await, 4001);
    assert_eq!(server.refusal(Some("parley_session=forged")).await, 4001);
    let cookie = server.register("alice").await;
    let mut tampered = cookie.clone();
    tampered.pop();
    tampered.push(if cookie.ends_with('0') { '1' } else { '0' });
    assert_eq!(server.refusal(Some(&tampered)).await, 4001);
    server.connect(&cookie).await;
    server.stop().await;
}

#[tokio::test]
async fn logout_revokes_the_session_and_closes_its_sockets() {
    let server = TestServer::start().await;
    let cookie = server.register("alice").await;
    let other_device = server.login("alice").await;
    let mut socket = server.connect(&cookie).await;
    let mut other_socket = server.connect(&other_device).await;

    let response = server.logout(&cookie).await;
    let cleared = response.headers().get("set-cookie").unwrap().to_str().unwrap();
    assert!(cleared.starts_with("parley_session=;") && cleared.contains("Max-Age=0"), "{cleared}");
    assert_eq!(socket.closed().await, Some(4001));
    assert_eq!(server.refusal(Some(&cookie)).await, 4001);

    // The other device's session is untouched.
    assert!(matches!(
        other_socket.request(|id| app::protocol::ClientMsg::Ping { id }).await,
        app::protocol::ServerMsg::Pong { .. }
    ));
    server.stop().await;
}

#[tokio::test]
async fn a_socket_closes_when_its_session_ends_elsewhere() {
    let mut config = relaxed();
    config.limits.heartbeat_interval_secs = 1;
    let server = TestServer::start_with(TestDb::sqlite().await, config).await;
    let cookie = server.register("alice").await;
    let mut socket = server.connect(&cookie).await;
    let mut bystander = server.connect(&server.register("bob").await).await;

    // Revoked in the database only, as a logout on another server node would.
    let token = cookie.split_once('=').unwrap().1;
    let token_hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(token.as_bytes()));
    let store = server.db.open().await;
    assert!(store.revoke_session(&token_hash, now_millis()).await.unwrap().is_some());

    assert_eq!(socket.closed().await, Some(4001), "closed at the next session check");
    assert!(matches!(
        bystander.request(|id| app::protocol::ClientMsg::Ping { id }).await,
        app::protocol::ServerMsg::Pong { .. }
    ));
    server.stop().await;
}

#[tokio::test]
async fn sessions_expire_when_idle_and_at_their_absolute_limit() {
    for tweak in [|c: &mut server::config::Config| c.session.idle_hours = 0, |c: &mut server::config::Config| c.session.max_days = 0] {
        let mut config = relaxed();
        tweak(&mut config);
        let server = TestServer::start_with(TestDb::sqlite().await, config).await;
        let cookie = server.register("alice").await;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        assert_eq!(server.refusal(Some(&cookie)).await, 4001);
        server.stop().await;
    }
}

#[tokio::test]
async fn chat_pages_send_visitors_without_a_session_to_login_and_back() {
    let server = TestServer::start().await;
    let response = server.get("/r/general?focus=1", None).await;
    assert!(response.status().is_redirection());
    assert_eq!(response.headers()["location"], "/login?next=%2Fr%2Fgeneral%3Ffocus%3D1");

    let cookie = server.register("alice").await;
    let response = server.get("/r/general", Some(&cookie)).await;
    assert_eq!(response.status(), 200);
    let response = server.get("/login?next=%2Fr%2Fgeneral", Some(&cookie)).await;
    assert!(response.status().is_redirection());
    assert_eq!(response.headers()["location"], "/r/general");
    let response = server.get("/login?next=https%3A%2F%2Fevil.example", Some(&cookie)).await;
    assert_eq!(response.headers()["location"], "/", "never off-site");
    assert_eq!(server.get("/login", None).await.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn shutdown_tells_open_sockets_the_server_is_going_away() {
    let server = TestServer::start().await;
    let mut socket = server.connect(&server.register("alice").await).await;
    let stopping = tokio::spawn(server.stop());
    assert_eq!(socket.closed().await, Some(1012), "service restart: come back");
    drop(socket);
    stopping.await.unwrap();
}

fn now_millis() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Pages are rendered on a multi-threaded runtime, where a response may finish on
/// another worker than the one that started it; state made during rendering must not
/// be tied to a thread (it once panicked when dropped elsewhere, resetting the
/// connection). Many concurrent page loads give the scheduler every chance to move one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_render_on_any_worker_thread() {
    let server = TestServer::start().await;
    let cookie = server.register("alice").await;
    let loads = (0..500).map(|n| {
        let path = if n % 2 == 0 { "/r/general" } else { "/login" };
        let cookie = (n % 2 == 0).then_some(cookie.as_str());
        server.get(path, cookie)
    });
    let statuses: Vec<u16> = futures::future::join_all(loads).await.iter().map(|r| r.status().as_u16()).collect();
    assert!(statuses.iter().all(|status| *status == 200), "{statuses:?}");
    server.stop().await;
}
