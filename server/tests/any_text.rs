//! Any text is a valid message: accents, emoji, right-to-left marks, NUL. Each is
//! stored and handed back byte for byte, over the socket and the HTTP API, on both
//! databases, and none of it can break the socket.

#[macro_use]
mod support;

use std::time::Duration;

use app::protocol::{ChatMessage, ClientMsg, ErrorCode, ServerMsg};
use support::{databases::TestDb, server::TestServer};

/// What a Portuguese-speaking team writes, and what breaks code that counts bytes.
fn samples() -> Vec<String> {
    vec![
        "Ótimo, tudo bem?".into(),
        "😀 hi".into(),
        "¡Hola!".into(),
        "« citação »".into(),
        "\u{200f}שלום @bob".into(),
        "ação\u{202e}desrever".into(),
        "before\0after".into(),
        "\0".into(),
        "e\u{301}\u{301} 👨\u{200d}👩\u{200d}👧 🇧🇷 \u{10ffff}".into(),
        "😀".repeat(4000),
    ]
}

async fn any_text_is_stored_and_shown_byte_for_byte(db: TestDb) {
    let server = TestServer::start_on(db).await;
    let ana_cookie = server.register("ana").await;
    let mut ana = server.connect(&ana_cookie).await;
    let bob_cookie = server.register("bob").await;
    let mut bob = server.connect(&bob_cookie).await;
    let room_id = ana.general_room_id().await;

    let mut sent: Vec<ChatMessage> = Vec::new();
    for (n, text) in samples().into_iter().enumerate() {
        match ana.request(|id| ClientMsg::Send { id, room_id, client_id: format!("t{n}"), text: text.clone() }).await {
            ServerMsg::Sent { message, .. } => {
                assert_eq!(message.text, text, "acknowledged as sent");
                sent.push(message);
            }
            other => panic!("{text:?}: {other:?}"),
        }
        let heard = bob.wait_for(|m| matches!(m, ServerMsg::Message { message } if message.client_id.as_deref() == Some(&format!("t{n}")))).await;
        let ServerMsg::Message { message } = heard else { unreachable!() };
        assert_eq!(message.text, text, "delivered as sent");
    }

    // Read back from storage, over the socket and over HTTP.
    let history = match ana.request(|id| ClientMsg::History { id, room_id, before_seq: None }).await {
        ServerMsg::History { messages, .. } => messages,
        other => panic!("{other:?}"),
    };
    let stored: Vec<&ChatMessage> = history.iter().filter(|m| m.client_id.is_some()).collect();
    assert_eq!(stored, sent.iter().collect::<Vec<_>>());
    let page: serde_json::Value =
        server.get(&format!("/api/rooms/{room_id}/messages"), Some(&ana_cookie)).await.json().await.unwrap();
    let texts: Vec<&str> = page["messages"].as_array().unwrap().iter().filter_map(|m| m["text"].as_str()).collect();
    for message in &sent {
        assert!(texts.contains(&message.text.as_str()), "{:?} over HTTP", message.text);
    }

    // The mention after a right-to-left mark counts for bob.
    let mut bob_again = server.try_connect(Some(&bob_cookie)).await.unwrap();
    let ServerMsg::Hello { rooms, .. } = bob_again.next().await else { panic!("hello first") };
    assert_eq!(rooms.iter().find(|r| r.id == room_id).unwrap().mention_seqs.len(), 1, "mentioned after an RTL mark");

    // The limit counts characters: 4,000 emoji pass (above), 4,001 do not.
    match ana.request(|id| ClientMsg::Send { id, room_id, client_id: "over".into(), text: "😀".repeat(4001) }).await {
        ServerMsg::Error { code: ErrorCode::Invalid, message, .. } => assert!(message.contains("4001 characters"), "{message}"),
        other => panic!("{other:?}"),
    }
    server.stop().await;
}

/// The longest texts escape to the most JSON: 4,000 control characters are 24,000
/// bytes in a frame. A page of fifty of them outgrew what a socket may hold for one
/// reader, so every reader of that room lost its socket on asking for history, came
/// back and asked again. Pages carry fewer such messages instead, and paging through
/// history and catch-up still hands over each message once, in order.
async fn a_room_of_the_longest_texts_still_pages_through(db: TestDb) {
    let server = TestServer::start_with(db, support::server::relaxed()).await;
    let mut ana = server.connect(&server.register("ana").await).await;
    let room_id = ana.general_room_id().await;
    let longest = "\u{1}".repeat(4000);
    let mut sent = Vec::new();
    for n in 0..60 {
        match ana.request(|id| ClientMsg::Send { id, room_id, client_id: format!("long{n}"), text: longest.clone() }).await {
            ServerMsg::Sent { message, .. } => sent.push(message.seq),
            other => panic!("{other:?}"),
        }
    }

    let mut reader = server.connect(&server.register("bob").await).await;
    let mut heard_back = Vec::new();
    let mut before_seq = None;
    loop {
        let (messages, has_more) = match reader.request(|id| ClientMsg::History { id, room_id, before_seq }).await {
            ServerMsg::History { messages, has_more, .. } => (messages, has_more),
            other => panic!("{other:?}"),
        };
        assert!(!messages.is_empty(), "a page holds at least one message");
        before_seq = Some(messages[0].seq);
        heard_back.splice(0..0, messages.iter().filter(|m| m.text == longest).map(|m| m.seq));
        if !has_more {
            break;
        }
    }
    assert_eq!(heard_back, sent, "history pages, newest first, hand over each message once");

    let mut caught_up = Vec::new();
    let mut after_seq = 0;
    loop {
        let (messages, has_more) = match reader.request(|id| ClientMsg::Catchup { id, room_id, after_seq }).await {
            ServerMsg::Catchup { messages, has_more, .. } => (messages, has_more),
            other => panic!("{other:?}"),
        };
        assert!(!messages.is_empty() || !has_more, "a page that promises more holds something");
        if let Some(last) = messages.last() {
            after_seq = last.seq;
        }
        caught_up.extend(messages.iter().filter(|m| m.text == longest).map(|m| m.seq));
        if !has_more {
            break;
        }
    }
    assert_eq!(caught_up, sent, "catch-up pages hand over each message once, in order");
    assert!(matches!(reader.request(|id| ClientMsg::Ping { id }).await, ServerMsg::Pong { .. }), "the socket goes on");
    server.stop().await;
}

/// A request that panics inside the server (a bug reached by some input) gets an
/// `internal` error; the socket and the server go on.
#[tokio::test]
async fn a_panicking_request_costs_one_error_reply_and_nothing_more() {
    let server = TestServer::start().await;
    let mut ana = server.connect(&server.register("ana").await).await;
    let mut bob = server.connect(&server.register("bob").await).await;
    let room_id = ana.general_room_id().await;

    let reply = ana
        .request(|id| ClientMsg::Send { id, room_id, client_id: "boom".into(), text: server::PANIC_FOR_TESTS.into() })
        .await;
    assert!(matches!(reply, ServerMsg::Error { code: ErrorCode::Internal, .. }), "{reply:?}");
    assert!(matches!(ana.request(|id| ClientMsg::Ping { id }).await, ServerMsg::Pong { .. }), "the socket goes on");
    let after = ana.request(|id| ClientMsg::Send { id, room_id, client_id: "after".into(), text: "still here".into() }).await;
    assert!(matches!(after, ServerMsg::Sent { .. }), "{after:?}");
    bob.wait_for(|m| matches!(m, ServerMsg::Message { message } if message.text == "still here")).await;
    assert!(bob.is_quiet(Duration::from_millis(200), |m| !matches!(m, ServerMsg::Message { .. })).await);
    // Nothing of the panicking request was stored.
    let history = match ana.request(|id| ClientMsg::History { id, room_id, before_seq: None }).await {
        ServerMsg::History { messages, .. } => messages,
        other => panic!("{other:?}"),
    };
    assert!(history.iter().all(|m| m.client_id.as_deref() != Some("boom")));
    server.stop().await;
}

on_both_databases!(any_text_is_stored_and_shown_byte_for_byte, a_room_of_the_longest_texts_still_pages_through);
