//! Direct messages, receipts, unread counts, mentions and typing, over real sockets.

#[macro_use]
mod support;

use std::time::Duration;

use app::protocol::{ClientMsg, ErrorCode, RoomKind, RoomSummary, ServerMsg, UserRef};
use support::{
    databases::TestDb,
    server::{TestServer, WsClient},
};

/// Registers a user and returns (cookie, socket, identity).
async fn user(server: &TestServer, name: &str) -> (String, WsClient, UserRef) {
    let cookie = server.register(name).await;
    let mut socket = server.try_connect(Some(&cookie)).await.unwrap();
    let ServerMsg::Hello { me, .. } = socket.next().await else { panic!("expected hello") };
    (cookie, socket, me)
}

async fn open_direct(client: &mut WsClient, user_id: i64) -> RoomSummary {
    match client.request(|id| ClientMsg::OpenDirect { id, user_id }).await {
        ServerMsg::RoomJoined { room, .. } => room,
        other => panic!("open direct: {other:?}"),
    }
}

async fn send(client: &mut WsClient, room_id: i64, client_id: &str, text: &str) -> app::protocol::ChatMessage {
    match client.request(|id| ClientMsg::Send { id, room_id, client_id: client_id.into(), text: text.into() }).await {
        ServerMsg::Sent { message, .. } => message,
        other => panic!("send: {other:?}"),
    }
}

fn code(msg: &ServerMsg) -> ErrorCode {
    match msg {
        ServerMsg::Error { code, .. } => *code,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn is_about(room_id: i64) -> impl Fn(&ServerMsg) -> bool {
    move |msg| match msg {
        ServerMsg::Message { message } => message.room_id == room_id,
        ServerMsg::Receipt { room_id: r, .. } | ServerMsg::Typing { room_id: r, .. } | ServerMsg::Presence { room_id: r, .. } => *r == room_id,
        ServerMsg::RoomJoined { room, .. } => room.id == room_id,
        _ => false,
    }
}

async fn a_direct_conversation_is_visible_only_to_its_two_people(db: TestDb) {
    let server = TestServer::start_on(db).await;
    let (_, mut alice, _) = user(&server, "alice").await;
    let (bob_cookie, mut bob, bob_ref) = user(&server, "bob").await;
    let (mallory_cookie, mut mallory, _) = user(&server, "mallory").await;

    let dm = open_direct(&mut alice, bob_ref.id).await;
    assert_eq!((dm.kind, dm.peer.as_ref().map(|p| p.username.as_str())), (RoomKind::Direct, Some("bob")));
    // Bob hears about it with Alice as the peer, and opening it from his side is the same room.
    match bob.wait_for(|m| matches!(m, ServerMsg::RoomJoined { .. })).await {
        ServerMsg::RoomJoined { id: None, room } => {
            assert_eq!((room.id, room.peer.unwrap().username.as_str()), (dm.id, "alice"));
        }
        other => panic!("{other:?}"),
    }
    let message = send(&mut alice, dm.id, "a1", "just between us").await;
    match bob.wait_for(|m| matches!(m, ServerMsg::Message { .. })).await {
        ServerMsg::Message { message: got } => assert_eq!(got, message),
        _ => unreachable!(),
    }

    // Mallory gets errors and no data, whatever she tries.
    let attempts: Vec<ClientMsg> = vec![
        ClientMsg::History { id: 1, room_id: dm.id, before_seq: None },
        ClientMsg::Catchup { id: 2, room_id: dm.id, after_seq: 0 },
        ClientMsg::Send { id: 3, room_id: dm.id, client_id: "m1".into(), text: "hi".into() },
        ClientMsg::Receipt { id: 4, room_id: dm.id, delivered_seq: Some(1), read_seq: Some(1) },
        ClientMsg::Typing { id: 5, room_id: dm.id },
        ClientMsg::JoinRoom { id: 6, room_id: dm.id },
        ClientMsg::LeaveRoom { id: 7, room_id: dm.id },
    ];
    for attempt in attempts {
        let want = match attempt {
            ClientMsg::JoinRoom { .. } => ErrorCode::NotFound,
            ClientMsg::LeaveRoom { .. } => ErrorCode::Invalid,
            _ => ErrorCode::Forbidden,
        };
        let id = attempt.id();
        mallory.send(&attempt).await;
        let reply = mallory.reply_to(id).await;
        assert_eq!(code(&reply), want, "{attempt:?}");
    }
    send(&mut alice, dm.id, "a2", "still private").await;
    assert!(mallory.is_quiet(Duration::from_millis(300), |m| !is_about(dm.id)(m)).await, "no events reach her");

    // The same over HTTP.
    let path = format!("/api/rooms/{}/messages", dm.id);
    assert_eq!(server.get(&path, None).await.status(), 401);
    let refused = server.get(&path, Some(&mallory_cookie)).await;
    assert_eq!(refused.status(), 403);
    assert!(!refused.text().await.unwrap().contains("between us"));
    let allowed = server.get(&path, Some(&bob_cookie)).await;
    assert_eq!(allowed.status(), 200);
    let page: serde_json::Value = allowed.json().await.unwrap();
    assert_eq!(page["messages"][0]["text"], "just between us");
    assert_eq!(page["has_more"], false);
    server.stop().await;
}

async fn opening_a_conversation_is_idempotent_and_checked(db: TestDb) {
    let server = TestServer::start_on(db).await;
    let (_, mut alice, alice_ref) = user(&server, "alice").await;
    let (_, mut bob, bob_ref) = user(&server, "bob").await;
    let first = open_direct(&mut alice, bob_ref.id).await;
    let again = open_direct(&mut alice, bob_ref.id).await;
    let from_bob = open_direct(&mut bob, alice_ref.id).await;
    assert_eq!((again.id, from_bob.id), (first.id, first.id));
    assert_eq!(code(&alice.request(|id| ClientMsg::OpenDirect { id, user_id: alice_ref.id }).await), ErrorCode::Invalid);
    assert_eq!(code(&alice.request(|id| ClientMsg::OpenDirect { id, user_id: 999_999 }).await), ErrorCode::NotFound);
    server.stop().await;
}

async fn people_are_found_by_the_start_of_their_names(db: TestDb) {
    let server = TestServer::start_on(db).await;
    let (_, mut alice, _) = user(&server, "alice").await;
    for name in ["albert", "alfred", "bob"] {
        user(&server, name).await;
    }
    let found = |msg: ServerMsg| match msg {
        ServerMsg::Users { users, .. } => users.into_iter().map(|u| u.username).collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    let names = found(alice.request(|id| ClientMsg::FindUsers { id, query: "AL".into() }).await);
    assert_eq!(names, ["albert", "alfred"], "case ignored; the searcher is left out");
    assert!(found(alice.request(|id| ClientMsg::FindUsers { id, query: "%".into() }).await).is_empty(), "% is literal");
    assert!(found(alice.request(|id| ClientMsg::FindUsers { id, query: "_".into() }).await).is_empty(), "_ is literal");
    server.stop().await;
}

async fn the_sender_sees_delivered_then_read_and_positions_never_go_back(db: TestDb) {
    let server = TestServer::start_on(db).await;
    let (_, mut alice, alice_ref) = user(&server, "alice").await;
    let (_, mut bob, bob_ref) = user(&server, "bob").await;
    let dm = open_direct(&mut alice, bob_ref.id).await;
    let m1 = send(&mut alice, dm.id, "a1", "one").await;
    let m2 = send(&mut alice, dm.id, "a2", "two").await;
    let receipt = |m: &ServerMsg| matches!(m, ServerMsg::Receipt { .. });

    bob.send(&ClientMsg::Receipt { id: 1, room_id: dm.id, delivered_seq: Some(m2.seq), read_seq: None }).await;
    assert_eq!(
        alice.wait_for(receipt).await,
        ServerMsg::Receipt { room_id: dm.id, user: bob_ref.clone(), delivered_seq: m2.seq, read_seq: 0 }
    );
    bob.send(&ClientMsg::Receipt { id: 2, room_id: dm.id, delivered_seq: None, read_seq: Some(m1.seq) }).await;
    assert_eq!(
        alice.wait_for(receipt).await,
        ServerMsg::Receipt { room_id: dm.id, user: bob_ref.clone(), delivered_seq: m2.seq, read_seq: m1.seq }
    );
    // Backwards and repeated positions change nothing and announce nothing; a position
    // past the newest message is held to it.
    bob.send(&ClientMsg::Receipt { id: 3, room_id: dm.id, delivered_seq: Some(0), read_seq: Some(0) }).await;
    bob.send(&ClientMsg::Receipt { id: 4, room_id: dm.id, delivered_seq: None, read_seq: Some(m1.seq) }).await;
    bob.send(&ClientMsg::Receipt { id: 5, room_id: dm.id, delivered_seq: None, read_seq: Some(10_000) }).await;
    assert_eq!(
        alice.wait_for(receipt).await,
        ServerMsg::Receipt { room_id: dm.id, user: bob_ref.clone(), delivered_seq: m2.seq, read_seq: m2.seq }
    );
    assert!(alice.is_quiet(Duration::from_millis(300), |m| !receipt(m)).await);

    // A fresh history page carries everyone's positions.
    match alice.request(|id| ClientMsg::History { id, room_id: dm.id, before_seq: None }).await {
        ServerMsg::History { receipts, .. } => {
            let bob_pos = receipts.iter().find(|r| r.user.id == bob_ref.id).unwrap();
            let alice_pos = receipts.iter().find(|r| r.user.id == alice_ref.id).unwrap();
            assert_eq!((bob_pos.delivered_seq, bob_pos.read_seq), (m2.seq, m2.seq));
            assert_eq!(alice_pos.read_seq, m2.seq, "a sender has read their own messages");
        }
        other => panic!("{other:?}"),
    }
    server.stop().await;
}

async fn unread_counts_and_mentions_follow_the_read_position_across_tabs(db: TestDb) {
    let server = TestServer::start_on(db).await;
    let (_, mut alice, _) = user(&server, "alice").await;
    let (bob_cookie, mut bob_tab_1, bob_ref) = user(&server, "bob").await;
    let mut bob_tab_2 = server.connect(&bob_cookie).await;
    let general = |rooms: &[RoomSummary]| rooms.iter().find(|r| r.name == "general").unwrap().clone();

    let general_id = alice.general_room_id().await;
    send(&mut alice, general_id, "a1", "hello everyone").await;
    let mention = send(&mut alice, general_id, "a2", "@bob can you look? cc @nobody").await;
    send(&mut alice, general_id, "a3", "thanks").await;

    // A new connection reports the counts from the database.
    let mut fresh = server.try_connect(Some(&bob_cookie)).await.unwrap();
    let ServerMsg::Hello { rooms, .. } = fresh.next().await else { panic!() };
    let room = general(&rooms);
    assert_eq!(room.unread(), 3);
    assert_eq!(room.mention_seqs, vec![mention.seq]);

    // Reading in one tab moves the position every tab sees.
    bob_tab_1.send(&ClientMsg::Receipt { id: 1, room_id: room.id, delivered_seq: None, read_seq: Some(mention.seq) }).await;
    let seen = bob_tab_2
        .wait_for(|m| matches!(m, ServerMsg::Receipt { user, .. } if user.id == bob_ref.id))
        .await;
    assert_eq!(seen, ServerMsg::Receipt { room_id: room.id, user: bob_ref.clone(), delivered_seq: mention.seq, read_seq: mention.seq });
    let mut after = server.try_connect(Some(&bob_cookie)).await.unwrap();
    let ServerMsg::Hello { rooms, .. } = after.next().await else { panic!() };
    let room = general(&rooms);
    assert_eq!((room.unread(), room.unread_mentions()), (1, 0));
    server.stop().await;
}

/// What the other person read while this client was away arrives with catch-up, so
/// "read" shows without reloading the conversation.
async fn receipts_made_while_away_arrive_with_catch_up(db: TestDb) {
    let server = TestServer::start_on(db).await;
    let (alice_cookie, mut alice, _) = user(&server, "alice").await;
    let (_, mut bob, bob_ref) = user(&server, "bob").await;
    let dm = open_direct(&mut alice, bob_ref.id).await;
    let mine = send(&mut alice, dm.id, "a-1", "are you there?").await;
    drop(alice);

    bob.wait_for(|m| matches!(m, ServerMsg::Message { message } if message.id == mine.id)).await;
    bob.send(&ClientMsg::Receipt { id: 50, room_id: dm.id, delivered_seq: Some(mine.seq), read_seq: Some(mine.seq) }).await;
    bob.wait_for(|m| matches!(m, ServerMsg::Receipt { read_seq, .. } if *read_seq == mine.seq)).await;

    let mut alice = server.connect(&alice_cookie).await;
    match alice.request(|id| ClientMsg::Catchup { id, room_id: dm.id, after_seq: mine.seq }).await {
        ServerMsg::Catchup { messages, has_more, receipts, .. } => {
            assert!(messages.is_empty() && !has_more);
            let bobs = receipts.iter().find(|r| r.user.id == bob_ref.id).expect("bob's position comes along");
            assert_eq!((bobs.delivered_seq, bobs.read_seq), (mine.seq, mine.seq));
        }
        other => panic!("{other:?}"),
    }
    server.stop().await;
}

async fn typing_reaches_the_other_members_only(db: TestDb) {
    let server = TestServer::start_on(db).await;
    let (_, mut alice, alice_ref) = user(&server, "alice").await;
    let (_, mut bob, bob_ref) = user(&server, "bob").await;
    let (_, mut mallory, _) = user(&server, "mallory").await;
    let dm = open_direct(&mut alice, bob_ref.id).await;
    alice.send(&ClientMsg::Typing { id: 9, room_id: dm.id }).await;
    assert_eq!(
        bob.wait_for(|m| matches!(m, ServerMsg::Typing { .. })).await,
        ServerMsg::Typing { room_id: dm.id, users: vec![alice_ref] }
    );
    assert!(mallory.is_quiet(Duration::from_millis(600), |m| !matches!(m, ServerMsg::Typing { .. })).await, "not heard outside");
    mallory.send(&ClientMsg::Typing { id: 10, room_id: dm.id }).await;
    assert_eq!(code(&mallory.reply_to(10).await), ErrorCode::Forbidden);
    server.stop().await;
}

on_both_databases!(
    a_direct_conversation_is_visible_only_to_its_two_people,
    opening_a_conversation_is_idempotent_and_checked,
    people_are_found_by_the_start_of_their_names,
    the_sender_sees_delivered_then_read_and_positions_never_go_back,
    unread_counts_and_mentions_follow_the_read_position_across_tabs,
    receipts_made_while_away_arrive_with_catch_up,
    typing_reaches_the_other_members_only,
);
