//! Chat over real sockets against a real server.

#[macro_use]
mod support;

use std::time::Duration;

use app::protocol::{ChatMessage, ClientMsg, ErrorCode, MessageKind, RoomSummary, ServerMsg};
use support::{
    databases::TestDb,
    server::{TestServer, WsClient},
};
use tokio_tungstenite::tungstenite::Message;

fn general(hello_rooms: &[RoomSummary]) -> &RoomSummary {
    hello_rooms.iter().find(|room| room.name == "general").expect("new accounts are in general")
}

async fn create_room(client: &mut WsClient, name: &str) -> RoomSummary {
    match client.request(|id| ClientMsg::CreateRoom { id, name: name.into() }).await {
        ServerMsg::RoomJoined { room, .. } => room,
        other => panic!("create {name}: {other:?}"),
    }
}

async fn join(client: &mut WsClient, room_id: i64) -> RoomSummary {
    match client.request(|id| ClientMsg::JoinRoom { id, room_id }).await {
        ServerMsg::RoomJoined { room, .. } => room,
        other => panic!("join {room_id}: {other:?}"),
    }
}

async fn send(client: &mut WsClient, room_id: i64, client_id: &str, text: &str) -> ServerMsg {
    client.request(|id| ClientMsg::Send { id, room_id, client_id: client_id.into(), text: text.into() }).await
}

async fn sent(client: &mut WsClient, room_id: i64, client_id: &str, text: &str) -> ChatMessage {
    match send(client, room_id, client_id, text).await {
        ServerMsg::Sent { message, .. } => message,
        other => panic!("send: {other:?}"),
    }
}

fn is_presence(msg: &ServerMsg) -> bool {
    matches!(msg, ServerMsg::Presence { .. })
}

async fn history(client: &mut WsClient, room_id: i64, before_seq: Option<i64>) -> (Vec<ChatMessage>, bool) {
    match client.request(|id| ClientMsg::History { id, room_id, before_seq }).await {
        ServerMsg::History { messages, has_more, .. } => (messages, has_more),
        other => panic!("history: {other:?}"),
    }
}

fn error_code(msg: &ServerMsg) -> ErrorCode {
    match msg {
        ServerMsg::Error { code, .. } => *code,
        other => panic!("expected an error, got {other:?}"),
    }
}

async fn hello_names_the_user_and_their_rooms(db: TestDb) {
    let server = TestServer::start_on(db).await;
    let cookie = server.register("Alice").await;
    let mut alice = server.try_connect(Some(&cookie)).await.unwrap();
    match alice.next().await {
        ServerMsg::Hello { me, rooms, limits, .. } => {
            assert_eq!((me.username.as_str(), me.display_name.as_str()), ("Alice", "Alice"));
            assert_eq!(rooms.len(), 1);
            assert!(general(&rooms).joined);
            assert_eq!((limits.max_message_chars, limits.history_page), (4000, 50));
        }
        other => panic!("expected hello, got {other:?}"),
    }
    server.stop().await;
}

async fn two_users_chat_and_each_sees_the_other_once(db: TestDb) {
    let server = TestServer::start_on(db).await;
    let (alice_cookie, bob_cookie) = (server.register("alice").await, server.register("bob").await);
    let mut alice = server.connect(&alice_cookie).await;
    let mut bob = server.connect(&bob_cookie).await;
    let room = create_room(&mut alice, "pairs").await;
    join(&mut bob, room.id).await;

    let from_alice = sent(&mut alice, room.id, "a-1", "hi bob").await;
    let from_bob = sent(&mut bob, room.id, "b-1", "hi alice").await;
    assert_eq!(from_bob.seq, from_alice.seq + 1);

    // Each receives the other's message as an event, with the sender's name...
    let got = bob.wait_for(|m| matches!(m, ServerMsg::Message { message } if message.kind == MessageKind::Text)).await;
    assert_eq!(got, ServerMsg::Message { message: from_alice.clone() });
    assert_eq!(from_alice.sender.username, "alice");
    let got = alice
        .wait_for(|m| matches!(m, ServerMsg::Message { message } if message.kind == MessageKind::Text))
        .await;
    assert_eq!(got, ServerMsg::Message { message: from_bob });
    // ...and nothing more: no echo of their own, no second copy.
    let text_message = |m: &ServerMsg| matches!(m, ServerMsg::Message { message } if message.kind == MessageKind::Text);
    assert!(alice.is_quiet(Duration::from_millis(300), |m| !text_message(m)).await);
    assert!(bob.is_quiet(Duration::from_millis(300), |m| !text_message(m)).await);
    server.stop().await;
}

async fn joining_and_leaving_are_announced_to_the_room(db: TestDb) {
    let server = TestServer::start_on(db).await;
    let mut alice = server.connect(&server.register("alice").await).await;
    let mut bob = server.connect(&server.register("bob").await).await;
    let room = create_room(&mut alice, "notices").await;

    join(&mut bob, room.id).await;
    let in_room = |m: &ServerMsg| matches!(m, ServerMsg::Message { message } if message.room_id == room.id);
    match alice.wait_for(in_room).await {
        ServerMsg::Message { message } => {
            assert_eq!((message.kind, message.sender.username.as_str(), message.room_id), (MessageKind::Joined, "bob", room.id));
        }
        _ => unreachable!(),
    }
    match bob.request(|id| ClientMsg::LeaveRoom { id, room_id: room.id }).await {
        ServerMsg::RoomLeft { room_id, .. } => assert_eq!(room_id, room.id),
        other => panic!("leave: {other:?}"),
    }
    match alice.wait_for(in_room).await {
        ServerMsg::Message { message } => assert_eq!((message.kind, message.sender.username.as_str()), (MessageKind::Left, "bob")),
        _ => unreachable!(),
    }
    // The notices are part of the history, after the creator's own.
    let (messages, _) = history(&mut alice, room.id, None).await;
    let kinds: Vec<(MessageKind, &str)> = messages.iter().map(|m| (m.kind, m.sender.username.as_str())).collect();
    assert_eq!(kinds, [(MessageKind::Joined, "alice"), (MessageKind::Joined, "bob"), (MessageKind::Left, "bob")]);
    server.stop().await;
}

/// Messages sent to two rooms in turn, without waiting: the acknowledgements come back
/// in the order sent, although a commit writes one room's posts after the other's.
async fn acknowledgements_across_rooms_come_in_the_order_sent(db: TestDb) {
    let server = TestServer::start_on(db).await;
    let cookie = server.register("alice").await;
    let mut alice = server.connect(&cookie).await;
    let first = create_room(&mut alice, "first").await;
    let second = create_room(&mut alice, "second").await;
    const SENT: u64 = 40;
    for n in 0..SENT {
        // The higher room id first: a batch writes rooms in ascending id.
        let room_id = if n % 2 == 0 { second.id.max(first.id) } else { second.id.min(first.id) };
        alice.send(&ClientMsg::Send { id: 100 + n, room_id, client_id: format!("a{n}"), text: format!("vez {n} ✨") }).await;
    }
    let mut acknowledged = Vec::new();
    while acknowledged.len() < SENT as usize {
        match alice.next().await {
            ServerMsg::Sent { id, .. } => acknowledged.push(id),
            error @ ServerMsg::Error { .. } => panic!("{error:?}"),
            _ => {}
        }
    }
    assert_eq!(acknowledged, (100..100 + SENT).collect::<Vec<_>>());
    server.stop().await;
}

/// Leaving right after sending, without waiting for the acknowledgements: every
/// message sent before leaving is stored and acknowledged, and the room hears the
/// "left" notice after them, in sequence order.
async fn messages_sent_just_before_leaving_are_stored_ahead_of_the_notice(db: TestDb) {
    let server = TestServer::start_on(db).await;
    let mut alice = server.connect(&server.register("alice").await).await;
    let mut bob = server.connect(&server.register("bob").await).await;
    let room = create_room(&mut alice, "brief-visit").await;
    join(&mut bob, room.id).await;
    const SENT: u64 = 30;
    for n in 0..SENT {
        bob.send(&ClientMsg::Send { id: 100 + n, room_id: room.id, client_id: format!("b{n}"), text: format!("até já {n} 👋") }).await;
    }
    match bob.request(|id| ClientMsg::LeaveRoom { id, room_id: room.id }).await {
        ServerMsg::RoomLeft { room_id, .. } => assert_eq!(room_id, room.id),
        other => panic!("leave: {other:?}"),
    }
    let acknowledged = bob.buffered_count(|m| matches!(m, ServerMsg::Sent { .. }));
    assert_eq!(acknowledged, SENT as usize, "every message sent before leaving was stored first");

    let mut heard = Vec::new();
    while !heard.last().is_some_and(|m: &ChatMessage| m.kind == MessageKind::Left) {
        if let ServerMsg::Message { message } = alice.next().await {
            if message.room_id == room.id && message.kind != MessageKind::Joined {
                heard.push(message);
            }
        }
    }
    let texts: Vec<Option<&str>> = heard.iter().map(|m| m.client_id.as_deref()).collect();
    let expected: Vec<String> = (0..SENT).map(|n| format!("b{n}")).collect();
    let mut expected: Vec<Option<&str>> = expected.iter().map(|id| Some(id.as_str())).collect();
    expected.push(None);
    assert_eq!(texts, expected, "the messages, then the notice");
    assert!(heard.windows(2).all(|pair| pair[1].seq == pair[0].seq + 1), "in sequence order");
    server.stop().await;
}

async fn non_members_can_neither_post_nor_read_nor_hear(db: TestDb) {
    let server = TestServer::start_on(db).await;
    let mut alice = server.connect(&server.register("alice").await).await;
    let mut mallory = server.connect(&server.register("mallory").await).await;
    let room = create_room(&mut alice, "members-only").await;

    assert_eq!(error_code(&send(&mut mallory, room.id, "m-1", "let me in").await), ErrorCode::Forbidden);
    let reply = mallory.request(|id| ClientMsg::History { id, room_id: room.id, before_seq: None }).await;
    assert_eq!(error_code(&reply), ErrorCode::Forbidden);
    sent(&mut alice, room.id, "a-1", "secret").await;
    assert!(mallory.is_quiet(Duration::from_millis(300), is_presence).await, "no events from a room she is not in");
    let (messages, _) = history(&mut alice, room.id, None).await;
    assert!(messages.iter().all(|m| m.sender.username != "mallory"), "the refused post was not stored");
    server.stop().await;
}

async fn history_pages_are_complete_and_ordered(db: TestDb) {
    let server = TestServer::start_on(db).await;
    let mut alice = server.connect(&server.register("alice").await).await;
    let room = create_room(&mut alice, "long").await;
    for n in 0..120 {
        sent(&mut alice, room.id, &format!("c{n}"), &format!("message {n}")).await;
    }
    let (newest, has_more) = history(&mut alice, room.id, None).await;
    assert_eq!(newest.len(), 50);
    assert!(has_more);
    assert_eq!(newest.last().unwrap().text, "message 119");
    let mut all = newest;
    loop {
        let (older, has_more) = history(&mut alice, room.id, Some(all[0].seq)).await;
        all.splice(0..0, older);
        if !has_more {
            break;
        }
    }
    let seqs: Vec<i64> = all.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (1..=121).collect::<Vec<_>>(), "the join notice and all 120 messages, in order, once");
    server.stop().await;
}

async fn resending_a_client_id_returns_the_original_and_stores_nothing_new(db: TestDb) {
    let server = TestServer::start_on(db).await;
    let mut alice = server.connect(&server.register("alice").await).await;
    let mut bob = server.connect(&server.register("bob").await).await;
    let room = create_room(&mut alice, "retries").await;
    join(&mut bob, room.id).await;

    let first = sent(&mut alice, room.id, "same-id", "once").await;
    let retry = sent(&mut alice, room.id, "same-id", "once").await;
    assert_eq!(retry, first);
    let (messages, _) = history(&mut alice, room.id, None).await;
    assert_eq!(messages.iter().filter(|m| m.client_id.as_deref() == Some("same-id")).count(), 1);
    let text_message = |m: &ServerMsg| matches!(m, ServerMsg::Message { message } if message.kind == MessageKind::Text);
    bob.wait_for(text_message).await;
    assert!(bob.is_quiet(Duration::from_millis(300), |m| !text_message(m)).await, "the retry was not broadcast");
    server.stop().await;
}

async fn history_survives_a_restart(db: TestDb) {
    let mut server = TestServer::start_on(db).await;
    let cookie = server.register("alice").await;
    let mut alice = server.connect(&cookie).await;
    let room = create_room(&mut alice, "durable").await;
    sent(&mut alice, room.id, "c1", "before restart").await;
    drop(alice);

    server.restart().await;
    // Same cookie: the session survived too.
    let mut alice = server.connect(&cookie).await;
    let (messages, _) = history(&mut alice, room.id, None).await;
    assert_eq!(messages.last().unwrap().text, "before restart");
    let next = sent(&mut alice, room.id, "c2", "after restart").await;
    assert_eq!(next.seq, messages.last().unwrap().seq + 1, "numbering continues without a gap");
    server.stop().await;
}

async fn bad_frames_get_errors_and_the_socket_stays_usable(db: TestDb) {
    let server = TestServer::start_on(db).await;
    let mut alice = server.connect(&server.register("alice").await).await;
    let room = create_room(&mut alice, "sandbox").await;

    let cases: [(&str, ErrorCode, &str); 5] = [
        ("{oops", ErrorCode::BadRequest, "not valid JSON"),
        (r#"{"type":"teleport","id":5}"#, ErrorCode::BadRequest, "unknown variant `teleport`"),
        (r#"{"type":"send","id":6,"room_id":1}"#, ErrorCode::BadRequest, "missing field"),
        (r#"{"type":"send","id":7,"room_id":1,"client_id":"x","text":"hi","html":"<b>"}"#, ErrorCode::BadRequest, "unknown field"),
        (r#"[1,2,3]"#, ErrorCode::BadRequest, "invalid type"),
    ];
    for (frame, code, words) in cases {
        alice.send_raw(Message::text(frame)).await;
        match alice.wait_for(|m| matches!(m, ServerMsg::Error { .. })).await {
            ServerMsg::Error { code: got, message, .. } => {
                assert_eq!(got, code, "{frame}");
                assert!(message.contains(words), "{frame}: {message}");
            }
            _ => unreachable!(),
        }
    }
    alice.send_raw(Message::binary(vec![1, 2, 3])).await;
    assert_eq!(error_code(&alice.wait_for(|m| matches!(m, ServerMsg::Error { .. })).await), ErrorCode::BadRequest);

    let rules = [("   \n ", "empty"), (&"x".repeat(4001) as &str, "limit is 4000")];
    for (text, words) in rules {
        match send(&mut alice, room.id, "rule", text).await {
            ServerMsg::Error { code: ErrorCode::Invalid, message, .. } => assert!(message.contains(words), "{message}"),
            other => panic!("expected invalid, got {other:?}"),
        }
    }
    assert_eq!(error_code(&send(&mut alice, room.id, "", "no id").await), ErrorCode::Invalid);
    assert_eq!(error_code(&send(&mut alice, 987_654, "c", "nowhere").await), ErrorCode::Forbidden);

    // Nothing was stored by any of that, and the socket still works.
    let (messages, _) = history(&mut alice, room.id, None).await;
    assert_eq!(messages.len(), 1, "only the join notice");
    // `request` only returns the reply carrying the ping's own id.
    assert!(matches!(alice.request(|id| ClientMsg::Ping { id }).await, ServerMsg::Pong { .. }));
    server.stop().await;
}

async fn room_names_are_validated_and_unique(db: TestDb) {
    let server = TestServer::start_on(db).await;
    let mut alice = server.connect(&server.register("alice").await).await;
    create_room(&mut alice, "Rustaceans").await;
    let taken = alice.request(|id| ClientMsg::CreateRoom { id, name: "rustaceans".into() }).await;
    assert_eq!(error_code(&taken), ErrorCode::Conflict);
    let bad = alice.request(|id| ClientMsg::CreateRoom { id, name: "no spaces allowed".into() }).await;
    assert_eq!(error_code(&bad), ErrorCode::Invalid);
    match alice.request(|id| ClientMsg::ListRooms { id }).await {
        ServerMsg::Rooms { rooms, .. } => {
            let names: Vec<&str> = rooms.iter().map(|r| r.name.as_str()).collect();
            assert_eq!(names, ["general", "Rustaceans"]);
        }
        other => panic!("list: {other:?}"),
    }
    let missing = alice.request(|id| ClientMsg::JoinRoom { id, room_id: 424_242 }).await;
    assert_eq!(error_code(&missing), ErrorCode::NotFound);
    server.stop().await;
}

async fn presence_counts_a_person_once_and_updates_live(db: TestDb) {
    let server = TestServer::start_on(db).await;
    let alice_cookie = server.register("alice").await;
    let bob_cookie = server.register("bob").await;
    let mut alice = server.connect(&alice_cookie).await;
    let general = match alice.request(|id| ClientMsg::ListRooms { id }).await {
        ServerMsg::Rooms { rooms, .. } => rooms[0].id,
        other => panic!("{other:?}"),
    };
    alice.wait_for(|m| matches!(m, ServerMsg::Presence { total: 1, .. })).await;
    assert_eq!(online(&mut alice, general).await, ["alice"]);

    let bob_tab_1 = server.connect(&bob_cookie).await;
    match alice.wait_for(is_presence).await {
        ServerMsg::Presence { total, detailed, came, went, .. } => {
            assert_eq!((total, detailed, went), (2, true, vec![]));
            assert_eq!(came.iter().map(|u| u.username.as_str()).collect::<Vec<_>>(), ["bob"]);
        }
        _ => unreachable!(),
    }
    assert_eq!(online(&mut alice, general).await, ["alice", "bob"]);
    let bob_tab_2 = server.connect(&bob_cookie).await;
    assert!(alice.is_quiet(Duration::from_millis(600), |_| false).await, "a second tab changes nothing");
    drop(bob_tab_1);
    assert!(alice.is_quiet(Duration::from_millis(600), |_| false).await, "still online through the other tab");
    drop(bob_tab_2);
    match alice.wait_for(is_presence).await {
        ServerMsg::Presence { total, came, went, .. } => assert_eq!((total, came, went.len()), (1, vec![], 1)),
        _ => unreachable!(),
    }
    assert_eq!(online(&mut alice, general).await, ["alice"]);
    server.stop().await;
}

/// The usernames of everyone online in a room, by name.
async fn online(client: &mut WsClient, room_id: i64) -> Vec<String> {
    match client.request(|id| ClientMsg::Online { id, room_id, after: None }).await {
        ServerMsg::Online { users, total, has_more, .. } => {
            assert!(!has_more);
            assert_eq!(total as usize, users.len());
            users.into_iter().map(|u| u.username).collect()
        }
        other => panic!("{other:?}"),
    }
}

/// A socket that opens while its user joins or leaves a room must, once both are done,
/// hear exactly the rooms the user is in: not a room just left, not deaf to one just
/// joined. Each round races the two; a stale subscription shows as a probe heard in
/// the left room before the signal, a missed one as the welcome never arriving.
async fn sockets_opening_during_a_join_or_leave_hear_the_right_rooms(db: TestDb) {
    let mut config = support::server::relaxed();
    config.limits.sockets_per_user = 1_000;
    let server = TestServer::start_with(db, config).await;
    let mut bob = server.connect(&server.register("bob").await).await;
    let race = create_room(&mut bob, "race").await;
    let signal = create_room(&mut bob, "signal").await;
    let alice_cookie = server.register("alice").await;
    let mut alice = server.connect(&alice_cookie).await;
    join(&mut alice, signal.id).await;

    for round in 0..15 {
        join(&mut alice, race.id).await;
        let (left, mut fresh) = tokio::join!(
            alice.request(|id| ClientMsg::LeaveRoom { id, room_id: race.id }),
            server.connect(&alice_cookie)
        );
        assert!(matches!(left, ServerMsg::RoomLeft { .. }), "{left:?}");
        sent(&mut bob, race.id, &format!("probe-{round}"), "probe").await;
        let signal_id = format!("signal-{round}");
        sent(&mut bob, signal.id, &signal_id, "signal").await;
        loop {
            match fresh.next().await {
                ServerMsg::Message { message } if message.client_id.as_deref() == Some(signal_id.as_str()) => break,
                ServerMsg::Message { message } if message.room_id == race.id && message.kind == MessageKind::Text => {
                    panic!("round {round}: a socket opened during the leave still hears the room")
                }
                _ => {}
            }
        }

        let (joined, mut fresh) = tokio::join!(
            alice.request(|id| ClientMsg::JoinRoom { id, room_id: race.id }),
            server.connect(&alice_cookie)
        );
        assert!(matches!(joined, ServerMsg::RoomJoined { .. }), "{joined:?}");
        let welcome_id = format!("welcome-{round}");
        sent(&mut bob, race.id, &welcome_id, "welcome").await;
        fresh
            .wait_for(|m| matches!(m, ServerMsg::Message { message } if message.client_id.as_deref() == Some(welcome_id.as_str())))
            .await;
        alice.request(|id| ClientMsg::LeaveRoom { id, room_id: race.id }).await;
    }
    server.stop().await;
}

/// A message stored after a socket's rooms were read for its greeting, but before the
/// socket was there to hear it, must still reach its page: in the greeting (read
/// again) or pushed to it. The test hook holds the greeting between the two.
async fn a_message_stored_while_a_socket_is_greeted_reaches_it(db: TestDb) {
    static HELD_GREETINGS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let server = TestServer::start_on(db).await;
    let mut ana = server.try_connect(Some(&server.register("ana").await)).await.unwrap();
    let ServerMsg::Hello { rooms, .. } = ana.next().await else { panic!("hello first") };
    let room = general(&rooms).clone();
    let slow_name = format!("{}{}", server::greeting_hook::PREFIX, HELD_GREETINGS.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let slow_cookie = server.register(&slow_name).await;
    let hold = server::greeting_hook::hold(&slow_name);
    let (slow, stored) = tokio::join!(server.try_connect(Some(&slow_cookie)), async {
        hold.held.notified().await;
        let stored = sent(&mut ana, room.id, "meanwhile", "Ótimo! chegou no meio 😀").await;
        hold.go_on.notify_one();
        stored
    });
    let mut slow = slow.unwrap();
    let ServerMsg::Hello { rooms, .. } = slow.next().await else { panic!("hello first") };
    let greeted = rooms.iter().find(|r| r.id == room.id).expect("in the room").last_seq;
    let never_pushed = slow
        .is_quiet(Duration::from_millis(500), |m| !matches!(m, ServerMsg::Message { message } if message.seq == stored.seq))
        .await;
    assert!(matches!(slow.request(|id| ClientMsg::Ping { id }).await, ServerMsg::Pong { .. }), "the socket is open");
    assert!(greeted >= stored.seq || !never_pushed, "greeted through {greeted}, and message {} never pushed", stored.seq);
    server.stop().await;
}

/// Reads a socket until it has heard `count` joins or leaves of `room_id` (replies and
/// notices of the person's other tabs alike); the last says where its page ends up.
async fn last_of_membership_frames(client: &mut WsClient, room_id: i64, count: usize) -> ServerMsg {
    let mut heard = Vec::new();
    while heard.len() < count {
        let msg = client.next().await;
        let about_the_room = match &msg {
            ServerMsg::RoomJoined { room, .. } => room.id == room_id,
            ServerMsg::RoomLeft { room_id: left, .. } => *left == room_id,
            _ => false,
        };
        if about_the_room {
            heard.push(msg);
        }
    }
    heard.pop().unwrap()
}

/// One person leaves a room in one tab as they join it in another: whichever the
/// server did last, both tabs must end up showing it, as a reload would.
async fn a_join_and_a_leave_at_once_in_two_tabs_leave_both_showing_what_was_done_last(db: TestDb) {
    let server = TestServer::start_on(db).await;
    let cookie = server.register("ana").await;
    let (mut one_tab, mut other_tab) = (server.connect(&cookie).await, server.connect(&cookie).await);
    let room = create_room(&mut one_tab, "vai-e-vem").await;
    last_of_membership_frames(&mut other_tab, room.id, 1).await;
    let me = sent(&mut one_tab, room.id, "who", "Ótimo!").await.sender;
    let store = server.db.open().await;
    let mut ended_joined = 0;
    for round in 0..60 {
        // Each tab hears its own reply and the other tab's notice.
        let (leaving, joining) = if round % 2 == 0 { (&mut one_tab, &mut other_tab) } else { (&mut other_tab, &mut one_tab) };
        let (leave_request, join_request) =
            (ClientMsg::LeaveRoom { id: 1_000 + round, room_id: room.id }, ClientMsg::JoinRoom { id: 2_000 + round, room_id: room.id });
        // Whichever the server takes first, the other comes a moment later.
        if round % 4 < 2 {
            leaving.send(&leave_request).await;
            joining.send(&join_request).await;
        } else {
            joining.send(&join_request).await;
            leaving.send(&leave_request).await;
        }
        let (left_shows, joined_shows) =
            tokio::join!(last_of_membership_frames(leaving, room.id, 2), last_of_membership_frames(joining, room.id, 2));
        let member = store.is_member(room.id, me.id).await.unwrap();
        ended_joined += usize::from(member);
        for (tab, shows) in [("leaving", &left_shows), ("joining", &joined_shows)] {
            assert_eq!(matches!(shows, ServerMsg::RoomJoined { .. }), member, "round {round}: the {tab} tab shows {shows:?}");
        }
        if !member {
            join(&mut one_tab, room.id).await;
            last_of_membership_frames(&mut other_tab, room.id, 1).await;
        }
    }
    assert!(ended_joined > 0 && ended_joined < 60, "the join came last in some rounds, the leave in others");
    server.stop().await;
}

/// Reads one tab until it is told it is in `room_id` (once, answering its request
/// `asked` if it made one) and has heard `past_summary` of the room's messages after
/// the summary it was told: nothing of the room may come before the room itself (the
/// page drops it, uncounted and unnotified), and after it every message, none
/// skipped or twice.
async fn told_the_room_before_its_messages(tab: &mut WsClient, room_id: i64, asked: Option<u64>, past_summary: i64) -> Result<(), String> {
    let (mut told_through, mut next_seq) = (None, 0);
    loop {
        match tab.next().await {
            ServerMsg::RoomJoined { room, id } if room.id == room_id => {
                if told_through.is_some() || id != asked {
                    return Err(format!("told of the room again, or answering {id:?} where {asked:?} was asked"));
                }
                told_through = Some(room.last_seq);
                next_seq = room.last_seq + 1;
            }
            ServerMsg::Error { id, message, .. } if id.is_some() && id == asked => return Err(format!("the join was refused: {message}")),
            ServerMsg::Message { message } if message.room_id == room_id => {
                if told_through.is_none() {
                    return Err(format!("message {} came before the room", message.seq));
                }
                if message.seq != next_seq {
                    return Err(format!("message {} came where {next_seq} was due", message.seq));
                }
                next_seq += 1;
            }
            _ => {}
        }
        if told_through.is_some_and(|told| next_seq > told + past_summary) {
            return Ok(());
        }
    }
}

/// Someone joins a room as another person posts to it: each of their tabs, the one
/// that asked and another, is told of the room before any of its messages, and hears
/// every message after the summary it was told.
async fn a_tab_hears_a_busy_room_it_joins_after_being_told_of_it(db: TestDb) {
    let server = TestServer::start_on(db).await;
    let mut bob = server.connect(&server.register("bob").await).await;
    let room = create_room(&mut bob, "movimentada").await;
    let cookie = server.register("ana").await;
    let (mut asking, mut other_tab) = (server.connect(&cookie).await, server.connect(&cookie).await);
    let posting = tokio_util::sync::CancellationToken::new();
    let poster = tokio::spawn({
        let posting = posting.clone();
        async move {
            let mut n = 0;
            while !posting.is_cancelled() {
                sent(&mut bob, room.id, &format!("b{n}"), &format!("Ótimo, ação nº {n} 😀")).await;
                n += 1;
            }
        }
    });
    for round in 0..12 {
        asking.send(&ClientMsg::JoinRoom { id: 1_000 + round, room_id: room.id }).await;
        let (asked, other) = tokio::join!(
            told_the_room_before_its_messages(&mut asking, room.id, Some(1_000 + round), 3),
            told_the_room_before_its_messages(&mut other_tab, room.id, None, 3)
        );
        assert_eq!((asked.map_err(|e| format!("the tab that asked: {e}")), other.map_err(|e| format!("the other tab: {e}"))), (Ok(()), Ok(())), "round {round}");
        asking.send(&ClientMsg::LeaveRoom { id: 2_000 + round, room_id: room.id }).await;
        // Whatever of the room came before a tab was told it left is skipped: the
        // next round's reading starts after it.
        for tab in [&mut asking, &mut other_tab] {
            tab.wait_for(|m| matches!(m, ServerMsg::RoomLeft { room_id, .. } if *room_id == room.id)).await;
        }
    }
    posting.cancel();
    poster.await.unwrap();
    server.stop().await;
}

on_both_databases!(
    hello_names_the_user_and_their_rooms,
    two_users_chat_and_each_sees_the_other_once,
    joining_and_leaving_are_announced_to_the_room,
    messages_sent_just_before_leaving_are_stored_ahead_of_the_notice,
    acknowledgements_across_rooms_come_in_the_order_sent,
    non_members_can_neither_post_nor_read_nor_hear,
    history_pages_are_complete_and_ordered,
    resending_a_client_id_returns_the_original_and_stores_nothing_new,
    history_survives_a_restart,
    bad_frames_get_errors_and_the_socket_stays_usable,
    room_names_are_validated_and_unique,
    presence_counts_a_person_once_and_updates_live,
    sockets_opening_during_a_join_or_leave_hear_the_right_rooms,
    a_join_and_a_leave_at_once_in_two_tabs_leave_both_showing_what_was_done_last,
    a_message_stored_while_a_socket_is_greeted_reaches_it,
    a_tab_hears_a_busy_room_it_joins_after_being_told_of_it,
);
