//! Several Parley nodes as one chat: real server processes sharing this machine's
//! PostgreSQL (a fresh schema per test) and a `redis-server` each test starts on a
//! free port of its own, so stopping it disturbs nothing else.

mod support;

use std::{
    collections::{BTreeMap, HashSet},
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use app::protocol::{ChatMessage, ClientMsg, RoomId, ServerMsg, UserId};
use server::cluster::wire::EVENTS_VERSION;
use support::{
    cluster::{self, RedisServer},
    crowd::seed_people,
    databases::TestDb,
    process::ServerProcess,
    server::WsClient,
};

/// How long a node not heard from is still counted on in these tests.
const PRESENCE_TTL_SECS: u64 = 3;

async fn node(data: &Path, name: &str, database_url: &str, redis: &RedisServer) -> ServerProcess {
    node_with(data, name, database_url, redis, &[]).await
}

async fn node_with(data: &Path, name: &str, database_url: &str, redis: &RedisServer, extra: &[(&str, &str)]) -> ServerProcess {
    let ttl = PRESENCE_TTL_SECS.to_string();
    let mut env = vec![("PARLEY_CLUSTER_PRESENCE_TTL_SECS", ttl.as_str())];
    env.extend_from_slice(extra);
    cluster::start_node(data, name, database_url, redis, &env).await
}

/// A person's socket on a node, greeted: the socket, their id and `#general`'s.
async fn person(addr: SocketAddr, cookie: &str) -> (WsClient, UserId, RoomId) {
    let mut socket = WsClient::open(addr, Some(cookie)).await.unwrap();
    let ServerMsg::Hello { me, rooms, .. } = socket.next().await else { panic!("hello first") };
    let general = rooms.iter().find(|room| room.name == "general").unwrap().id;
    (socket, me.id, general)
}

fn is_message(msg: &ServerMsg, client_id: &str) -> bool {
    matches!(msg, ServerMsg::Message { message } if message.client_id.as_deref() == Some(client_id))
}

#[tokio::test]
async fn people_on_different_nodes_chat_as_if_on_one() {
    let db = TestDb::postgres().await;
    let cookies = seed_people(&db.url(), 3).await;
    let redis = RedisServer::start().await;
    let data = tempfile::tempdir().unwrap();
    let nodes = [
        node(data.path(), "node-1", &db.url(), &redis).await,
        node(data.path(), "node-2", &db.url(), &redis).await,
        node(data.path(), "node-3", &db.url(), &redis).await,
    ];
    let (mut alice, alice_id, general) = person(nodes[0].addr, &cookies[0]).await;
    let (mut bob, bob_id, _) = person(nodes[1].addr, &cookies[1]).await;
    let (mut carol, carol_id, _) = person(nodes[2].addr, &cookies[2]).await;

    // Presence is the union of the nodes.
    alice.wait_for(|m| matches!(m, ServerMsg::Presence { room_id, total: 3, .. } if *room_id == general)).await;
    match alice.request(|id| ClientMsg::Online { id, room_id: general, after: None }).await {
        ServerMsg::Online { users, total, .. } => {
            assert_eq!(total, 3);
            let mut ids: Vec<UserId> = users.iter().map(|user| user.id).collect();
            ids.sort();
            assert_eq!(ids, [alice_id, bob_id, carol_id]);
        }
        other => panic!("{other:?}"),
    }

    // A room message reaches the other nodes' sockets, once.
    let sent = alice.request(|id| ClientMsg::Send { id, room_id: general, client_id: "hello".into(), text: "Olá, ação 😀".into() }).await;
    let ServerMsg::Sent { message: stored, .. } = sent else { panic!("{sent:?}") };
    for reader in [&mut bob, &mut carol] {
        match reader.wait_for(|m| is_message(m, "hello")).await {
            ServerMsg::Message { message } => assert_eq!(message, stored),
            _ => unreachable!(),
        }
    }

    // Read on another node, it shows as "Seen by" for its author.
    bob.send(&ClientMsg::Receipt { id: 902, room_id: general, delivered_seq: Some(stored.seq), read_seq: Some(stored.seq) }).await;
    alice
        .wait_for(|m| matches!(m, ServerMsg::Receipt { room_id, user, read_seq, .. } if *room_id == general && user.id == bob_id && *read_seq == stored.seq))
        .await;

    // Typing on one node shows on another.
    carol.send(&ClientMsg::Typing { id: 900, room_id: general }).await;
    alice.wait_for(|m| matches!(m, ServerMsg::Typing { users, .. } if users.iter().any(|u| u.id == carol_id))).await;

    // A direct conversation opened on node 1 appears on node 2, and its messages and
    // receipts cross too.
    let ServerMsg::RoomJoined { room: direct, .. } = alice.request(|id| ClientMsg::OpenDirect { id, user_id: bob_id }).await else {
        panic!("direct room")
    };
    bob.wait_for(|m| matches!(m, ServerMsg::RoomJoined { room, .. } if room.id == direct.id)).await;
    let ServerMsg::Sent { message: private, .. } =
        alice.request(|id| ClientMsg::Send { id, room_id: direct.id, client_id: "dm".into(), text: "só entre nós".into() }).await
    else {
        panic!("sent")
    };
    bob.wait_for(|m| is_message(m, "dm")).await;
    bob.send(&ClientMsg::Receipt { id: 901, room_id: direct.id, delivered_seq: Some(private.seq), read_seq: Some(private.seq) }).await;
    alice
        .wait_for(|m| matches!(m, ServerMsg::Receipt { room_id, user, read_seq, .. } if *room_id == direct.id && user.id == bob_id && *read_seq == private.seq))
        .await;
    assert!(carol.is_quiet(Duration::from_millis(500), |m| !is_message(m, "dm")).await, "carol is not in the conversation");

    // Leaving on one node: the person's sockets on another stop hearing the room.
    let (mut bob_elsewhere, _, _) = person(nodes[2].addr, &cookies[1]).await;
    assert!(matches!(bob.request(|id| ClientMsg::LeaveRoom { id, room_id: general }).await, ServerMsg::RoomLeft { .. }));
    bob_elsewhere.wait_for(|m| matches!(m, ServerMsg::RoomLeft { room_id, .. } if *room_id == general)).await;
    alice.request(|id| ClientMsg::Send { id, room_id: general, client_id: "after".into(), text: "still here?".into() }).await;
    carol.wait_for(|m| is_message(m, "after")).await;
    assert!(bob_elsewhere.is_quiet(Duration::from_millis(500), |m| !is_message(m, "after")).await, "left on every node");

    for node in nodes {
        node.kill_hard();
    }
    db.remove().await;
}

/// Whether a frame tells the person's tab it joined (`Some(true)`) or left
/// (`Some(false)`) the room.
fn membership_told(msg: &ServerMsg, room: RoomId) -> Option<bool> {
    match msg {
        ServerMsg::RoomJoined { room: joined, .. } if joined.id == room => Some(true),
        ServerMsg::RoomLeft { room_id, .. } if *room_id == room => Some(false),
        _ => None,
    }
}

/// Reads a tab until the message `client_id` arrives, or nothing has for `quiet`;
/// what the tab was told of its membership of `room` meanwhile, in order, and whether
/// the message came.
async fn told_until(tab: &mut WsClient, room: RoomId, client_id: &str, quiet: Duration) -> (Vec<bool>, bool) {
    let mut told = Vec::new();
    loop {
        if tab.is_quiet(quiet, |_| false).await {
            return (told, false);
        }
        let next = tab.next().await;
        if let Some(joined) = membership_told(&next, room) {
            told.push(joined);
        }
        if is_message(&next, client_id) {
            return (told, true);
        }
    }
}

/// A new socket of the person with the cookie on a node, and the rooms it was
/// greeted with.
async fn greeted(node: SocketAddr, cookie: &str) -> (WsClient, Vec<app::protocol::RoomSummary>) {
    let mut socket = WsClient::open(node, Some(cookie)).await.unwrap();
    let ServerMsg::Hello { rooms, .. } = socket.next().await else { panic!("hello first") };
    (socket, rooms)
}

/// A leave in a tab on one node and a join in a tab on another, each stored before
/// the other node heard of the first: the nodes hear the two changes in opposite
/// orders. Every tab must end as the database has the person (member or not), and
/// hear the room's messages only while a member. Redis is paused across the two
/// requests so that neither node hears the other's change before making its own.
#[tokio::test]
async fn a_join_and_a_leave_at_once_on_two_nodes_end_as_the_database_has_them() {
    let db = TestDb::postgres().await;
    let cookies = seed_people(&db.url(), 2).await;
    let redis = RedisServer::start().await;
    let data = tempfile::tempdir().unwrap();
    let metrics = [("PARLEY_METRICS_TOKEN", "scrape")];
    let nodes = [
        node_with(data.path(), "node-1", &db.url(), &redis, &metrics).await,
        node_with(data.path(), "node-2", &db.url(), &redis, &metrics).await,
    ];
    let (mut here, _, general) = person(nodes[0].addr, &cookies[0]).await;
    let (mut there, _, _) = person(nodes[1].addr, &cookies[0]).await;
    let (mut writer, _, _) = person(nodes[0].addr, &cookies[1]).await;
    // A catch-up would set things right too: none may happen, or the test would pass
    // without the checks (publishes wait out the pause, under the round trip's limit).
    let catch_ups = |node: SocketAddr| metric(node, "parley_cluster_catchups_total");
    let catch_ups_before = [catch_ups(nodes[0].addr).await, catch_ups(nodes[1].addr).await];

    // Left here, then joined there: a member in the end.
    redis.pause();
    assert!(matches!(here.request(|id| ClientMsg::LeaveRoom { id, room_id: general }).await, ServerMsg::RoomLeft { .. }));
    assert!(matches!(there.request(|id| ClientMsg::JoinRoom { id, room_id: general }).await, ServerMsg::RoomJoined { .. }));
    redis.resume();
    // This node hears of the join after its own leave, and tells its tab.
    here.wait_for(|m| membership_told(m, general) == Some(true)).await;
    writer.request(|id| ClientMsg::Send { id, room_id: general, client_id: "member".into(), text: "Ótimo, ação 😀".into() }).await;
    for (tab, name) in [(&mut here, "here"), (&mut there, "there")] {
        let (told, heard) = told_until(tab, general, "member", Duration::from_secs(5)).await;
        assert!(heard, "{name}: a member hears the room");
        assert!(told.iter().all(|joined| *joined), "{name}: never told it left after joining: {told:?}");
    }

    // Joined there, then left here: not a member in the end. (First out, so that
    // the join changes something.)
    assert!(matches!(here.request(|id| ClientMsg::LeaveRoom { id, room_id: general }).await, ServerMsg::RoomLeft { .. }));
    there.wait_for(|m| membership_told(m, general) == Some(false)).await;
    redis.pause();
    assert!(matches!(there.request(|id| ClientMsg::JoinRoom { id, room_id: general }).await, ServerMsg::RoomJoined { .. }));
    assert!(matches!(here.request(|id| ClientMsg::LeaveRoom { id, room_id: general }).await, ServerMsg::RoomLeft { .. }));
    redis.resume();
    // That node hears of the leave after its own join, and tells its tab.
    there.wait_for(|m| membership_told(m, general) == Some(false)).await;
    writer.request(|id| ClientMsg::Send { id, room_id: general, client_id: "gone".into(), text: "« ação » 👍".into() }).await;
    for (tab, name) in [(&mut here, "here"), (&mut there, "there")] {
        let (told, heard) = told_until(tab, general, "gone", Duration::from_millis(700)).await;
        assert!(!heard, "{name}: someone who left does not hear the room");
        assert!(told.iter().all(|joined| !*joined), "{name}: never told it joined after leaving: {told:?}");
    }

    // Fresh tabs agree: not a member.
    for node in &nodes {
        let (_, rooms) = greeted(node.addr, &cookies[0]).await;
        assert!(rooms.iter().all(|room| room.id != general));
    }

    // Joined there while a new tab opened here: the new tab is greeted in the room
    // before this node hears of the join, and the older tab here must still be told.
    redis.pause();
    assert!(matches!(there.request(|id| ClientMsg::JoinRoom { id, room_id: general }).await, ServerMsg::RoomJoined { .. }));
    let (mut newer, rooms) = greeted(nodes[0].addr, &cookies[0]).await;
    assert!(rooms.iter().any(|room| room.id == general), "greeted from the database");
    redis.resume();
    here.wait_for(|m| membership_told(m, general) == Some(true)).await;
    writer.request(|id| ClientMsg::Send { id, room_id: general, client_id: "back".into(), text: "de volta, ação!".into() }).await;
    for (tab, name) in [(&mut here, "here"), (&mut newer, "newer"), (&mut there, "there")] {
        let (told, heard) = told_until(tab, general, "back", Duration::from_secs(5)).await;
        assert!(heard, "{name}: a member hears the room");
        assert!(told.is_empty(), "{name}: told once, and before (the reply, the greeting or the join): {told:?}");
    }

    // Joined there, then here before this node heard of it (nothing to store here):
    // the tabs here hear the room at once, not only once the check comes.
    assert!(matches!(here.request(|id| ClientMsg::LeaveRoom { id, room_id: general }).await, ServerMsg::RoomLeft { .. }));
    there.wait_for(|m| membership_told(m, general) == Some(false)).await;
    newer.wait_for(|m| membership_told(m, general) == Some(false)).await;
    redis.pause();
    assert!(matches!(there.request(|id| ClientMsg::JoinRoom { id, room_id: general }).await, ServerMsg::RoomJoined { .. }));
    assert!(matches!(here.request(|id| ClientMsg::JoinRoom { id, room_id: general }).await, ServerMsg::RoomJoined { .. }));
    writer.request(|id| ClientMsg::Send { id, room_id: general, client_id: "twice".into(), text: "entrou duas vezes".into() }).await;
    for (tab, name) in [(&mut here, "here"), (&mut newer, "newer")] {
        let (told, heard) = told_until(tab, general, "twice", Duration::from_secs(2)).await;
        assert!(heard, "{name}: hears the room it was told it is in, before the check");
        assert!(told.iter().all(|joined| *joined), "{name}: {told:?}");
    }
    redis.resume();

    // The same for leaving: left there, then here before this node heard of it.
    redis.pause();
    assert!(matches!(there.request(|id| ClientMsg::LeaveRoom { id, room_id: general }).await, ServerMsg::RoomLeft { .. }));
    assert!(matches!(here.request(|id| ClientMsg::LeaveRoom { id, room_id: general }).await, ServerMsg::RoomLeft { .. }));
    writer.request(|id| ClientMsg::Send { id, room_id: general, client_id: "gone-twice".into(), text: "saiu duas vezes".into() }).await;
    // Published before the writer's acknowledgement: a reply after it shows whether
    // the message was sent here (no waiting out a quiet spell while Redis is paused).
    for (tab, name) in [(&mut here, "here"), (&mut newer, "newer")] {
        let before_pong = tab.request(|id| ClientMsg::Ping { id }).await;
        assert!(matches!(before_pong, ServerMsg::Pong { .. }), "{before_pong:?}");
        assert_eq!(tab.buffered_count(|m| is_message(m, "gone-twice")), 0, "{name}: does not hear the room it was told it left, before the check");
        assert_eq!(tab.buffered_count(|m| membership_told(m, general) == Some(true)), 0, "{name}: not told it joined");
    }
    redis.resume();

    // A catch-up would come a beat after the link recovered, if a publish had timed out.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!([catch_ups(nodes[0].addr).await, catch_ups(nodes[1].addr).await], catch_ups_before, "no catch-up ran");
    // What the checks did, as a dashboard sees it: node-1 joined its tabs after
    // rounds 1 and 3, node-2 took its tab out in round 2; nothing failed.
    let checks = |node: SocketAddr, outcome: &'static str| async move {
        metric(node, &format!("parley_membership_checks_total{{outcome=\"{outcome}\"}}")).await.parse::<u64>().unwrap()
    };
    assert!(checks(nodes[0].addr, "joined").await >= 2);
    assert!(checks(nodes[1].addr, "left").await >= 1);
    assert_eq!((checks(nodes[0].addr, "failed").await, checks(nodes[1].addr, "failed").await), (0, 0));

    for node in nodes {
        node.kill_hard();
    }
    db.remove().await;
}

/// A direct conversation opened on one node and its first message sent at once both
/// reach the other person's tab on another node, which hears of the conversation
/// before the message (a page drops messages of rooms it does not show), and is sent
/// the message itself, not only a count in the conversation's summary: a page
/// notifies only of messages it is sent. Redis is paused across the two, so that the
/// other node hears the message before it has checked the join.
#[tokio::test]
async fn a_direct_messages_first_words_reach_the_other_persons_tab_on_another_node() {
    let db = TestDb::postgres().await;
    let cookies = seed_people(&db.url(), 2).await;
    let redis = RedisServer::start().await;
    let data = tempfile::tempdir().unwrap();
    let nodes = [node(data.path(), "node-1", &db.url(), &redis).await, node(data.path(), "node-2", &db.url(), &redis).await];
    let (mut ana, _, _) = person(nodes[0].addr, &cookies[0]).await;
    let (mut bia, bia_id, _) = person(nodes[1].addr, &cookies[1]).await;

    redis.pause();
    let ServerMsg::RoomJoined { room: direct, .. } = ana.request(|id| ClientMsg::OpenDirect { id, user_id: bia_id }).await else {
        panic!("direct room")
    };
    ana.request(|id| ClientMsg::Send { id, room_id: direct.id, client_id: "oi".into(), text: "Oi! Tudo bem? 😀".into() }).await;
    redis.resume();
    let mut told_of_the_room = false;
    loop {
        match bia.next().await {
            ServerMsg::RoomJoined { room, .. } if room.id == direct.id => told_of_the_room = true,
            msg if is_message(&msg, "oi") => {
                assert!(told_of_the_room, "told of the conversation before its first message");
                break;
            }
            _ => {}
        }
    }
    assert!(bia.is_quiet(Duration::from_millis(500), |m| !is_message(m, "oi")).await, "sent once");

    for node in nodes {
        node.kill_hard();
    }
    db.remove().await;
}

/// What one socket of a room holds: messages by sequence number (as the browser keeps
/// them), and which were pushed to it live, none of which may come twice.
#[derive(Default)]
struct Held {
    messages: BTreeMap<i64, ChatMessage>,
    pushed: HashSet<i64>,
}

impl Held {
    /// The people's messages (not join or leave notices), in order.
    fn texts(self) -> Vec<ChatMessage> {
        self.messages.into_values().filter(|m| m.client_id.is_some()).collect()
    }

    fn count(&self) -> usize {
        self.messages.values().filter(|m| m.client_id.is_some()).count()
    }

    /// Reading on a new socket: what the old one was pushed says nothing of this one.
    fn new_socket(&mut self) {
        self.pushed.clear();
    }
}

/// Reads a socket until `wanted` messages of `room` with a client id are held, failing
/// after `within`, or if the server pushes any message twice.
async fn read_until(socket: &mut WsClient, room: RoomId, wanted: usize, held: &mut Held, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    while held.count() < wanted {
        assert!(tokio::time::Instant::now() < deadline, "only {} of {wanted} messages arrived", held.count());
        if let Ok(frame) = tokio::time::timeout(Duration::from_millis(200), socket.next_frame()).await {
            match frame {
                support::server::Frame::Msg(ServerMsg::Message { message }) if message.room_id == room => {
                    assert!(held.pushed.insert(message.seq), "message {} was pushed twice", message.seq);
                    held.messages.insert(message.seq, message);
                }
                support::server::Frame::Msg(ServerMsg::Catchup { messages, .. }) => {
                    held.messages.extend(messages.into_iter().filter(|m| m.room_id == room).map(|m| (m.seq, m)));
                }
                support::server::Frame::Msg(_) => {}
                support::server::Frame::Closed(close) => panic!("closed: {close:?}"),
            }
        }
    }
}

/// Sends `count` messages one after another, each once acknowledged; returns them.
async fn send_steadily(socket: &mut WsClient, room: RoomId, prefix: &str, count: usize, pause: Duration) -> Vec<ChatMessage> {
    let mut acknowledged = Vec::with_capacity(count);
    for n in 0..count {
        let text = format!("{prefix} {n}");
        match socket.request(|id| ClientMsg::Send { id, room_id: room, client_id: format!("{prefix}{n}"), text }).await {
            ServerMsg::Sent { message, .. } => acknowledged.push(message),
            other => panic!("{other:?}"),
        }
        tokio::time::sleep(pause).await;
    }
    acknowledged
}

#[tokio::test]
async fn a_node_killed_while_messages_flow_loses_nothing_and_its_people_go_offline() {
    let db = TestDb::postgres().await;
    let cookies = seed_people(&db.url(), 4).await;
    let redis = RedisServer::start().await;
    let data = tempfile::tempdir().unwrap();
    let first = node(data.path(), "node-1", &db.url(), &redis).await;
    let second = node(data.path(), "node-2", &db.url(), &redis).await;
    let doomed = node(data.path(), "node-3", &db.url(), &redis).await;
    let (mut writer, _, general) = person(first.addr, &cookies[0]).await;
    let (mut watcher, _, _) = person(second.addr, &cookies[1]).await;
    let (mut reader, _, _) = person(doomed.addr, &cookies[2]).await;
    let (_gone, gone_id, _) = person(doomed.addr, &cookies[3]).await;
    watcher.wait_for(|m| matches!(m, ServerMsg::Presence { total: 4, .. })).await;

    // The reader hears the first half live on the node that is about to die.
    const COUNT: usize = 200;
    let writing = tokio::spawn(async move {
        let acknowledged = send_steadily(&mut writer, general, "k", COUNT, Duration::from_millis(5)).await;
        (writer, acknowledged)
    });
    let mut held = Held::default();
    read_until(&mut reader, general, COUNT / 2, &mut held, Duration::from_secs(30)).await;
    doomed.kill_hard();

    // Its page reconnects to another node and catches up from what it holds, as the
    // browser does; from then on it is live there.
    let (mut reader, _, _) = person(second.addr, &cookies[2]).await;
    held.new_socket();
    let last = held.messages.keys().next_back().copied().unwrap_or(0);
    reader.send(&ClientMsg::Catchup { id: 1, room_id: general, after_seq: last }).await;
    let (_writer, acknowledged) = writing.await.unwrap();
    read_until(&mut reader, general, COUNT, &mut held, Duration::from_secs(30)).await;
    assert_eq!(held.texts(), acknowledged, "every message once, in order");

    // The one who did not come back goes offline for the others once the dead node's
    // heartbeat expires, although it never said goodbye.
    let offline = tokio::time::timeout(
        Duration::from_secs(PRESENCE_TTL_SECS * 3),
        watcher.wait_for(|m| matches!(m, ServerMsg::Presence { went, .. } if went.contains(&gone_id))),
    )
    .await;
    assert!(offline.is_ok(), "the dead node's people went offline within the expiry");
    first.kill_hard();
    second.kill_hard();
    db.remove().await;
}

/// A node frozen for longer than the expiry is taken for gone, its people offline;
/// once it runs again it notices it was dropped and announces them again, without
/// waiting for any of them to do something.
#[tokio::test]
async fn a_node_that_stalls_past_the_expiry_brings_its_people_back_when_it_wakes() {
    let db = TestDb::postgres().await;
    let cookies = seed_people(&db.url(), 2).await;
    let redis = RedisServer::start().await;
    let data = tempfile::tempdir().unwrap();
    let awake = node(data.path(), "node-1", &db.url(), &redis).await;
    let sleepy = node(data.path(), "node-2", &db.url(), &redis).await;
    let (mut watcher, _, general) = person(awake.addr, &cookies[0]).await;
    let (_sleeper, sleeper_id, _) = person(sleepy.addr, &cookies[1]).await;
    watcher.wait_for(|m| matches!(m, ServerMsg::Presence { total: 2, .. })).await;

    sleepy.pause();
    let within = Duration::from_secs(PRESENCE_TTL_SECS * 3);
    let went = tokio::time::timeout(within, watcher.wait_for(|m| matches!(m, ServerMsg::Presence { went, .. } if went.contains(&sleeper_id))));
    assert!(went.await.is_ok(), "a frozen node's people go offline within the expiry");
    sleepy.resume();
    let came =
        tokio::time::timeout(within, watcher.wait_for(|m| matches!(m, ServerMsg::Presence { room_id, total: 2, .. } if *room_id == general)));
    assert!(came.await.is_ok(), "its people are back once it runs again");
    awake.kill_hard();
    sleepy.kill_hard();
    db.remove().await;
}

/// Lists `name` alive among the nodes speaking events of `version`, on Redis's clock
/// as a heartbeat does, and keeps it listed until the task is aborted, without a word
/// on this version's channel: a node of another version, as while a deploy that
/// changes it rolls.
async fn listed_silently(redis: &RedisServer, name: &'static str, version: u32) -> tokio::task::JoinHandle<()> {
    const LIST: &str = "local t = redis.call('TIME') \
        redis.call('ZADD', KEYS[1], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), ARGV[1])";
    let client = redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    // Said once: a node restarted under this name, updated, overwrites it.
    let _: () = redis::cmd("SET").arg(format!("parley:protocol:{name}")).arg(version).query_async(&mut connection).await.unwrap();
    let script = redis::Script::new(LIST);
    let _: () = script.key("parley:nodes").arg(name).invoke_async(&mut connection).await.unwrap();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let _: Result<(), _> = script.key("parley:nodes").arg(name).invoke_async(&mut connection).await;
        }
    })
}

/// A message stored by a node this test does not run (the other half of a deploy): in
/// the database only.
async fn posted_elsewhere(db: &TestDb, room: RoomId, client_id: &str) {
    let store = db.open().await;
    let sender = store.find_users("person00001", 1).await.unwrap().remove(0);
    store.post(room, &sender, client_id, "Ótimo! Da outra metade 🚀", 1).await.unwrap();
}

/// While a deploy that changes the protocol rolls, a node of the old version is listed
/// alive but never heard here (its events go out on its version's channel). Once it
/// has left, what its pages posted reaches the pages here from the database.
#[tokio::test]
async fn what_a_node_of_another_protocol_posted_arrives_once_it_has_left() {
    let db = TestDb::postgres().await;
    let cookies = seed_people(&db.url(), 2).await;
    let redis = RedisServer::start().await;
    let data = tempfile::tempdir().unwrap();
    let other_half = listed_silently(&redis, "node-old", EVENTS_VERSION - 1).await;
    let here = node(data.path(), "node-1", &db.url(), &redis).await;
    let (mut reader, _, general) = person(here.addr, &cookies[0]).await;

    posted_elsewhere(&db, general, "from-the-other-half").await;
    let from_the_other_half = |m: &ServerMsg| is_message(m, "from-the-other-half");
    let early = tokio::time::timeout(Duration::from_millis(1500), reader.wait_for(from_the_other_half)).await;
    assert!(early.is_err(), "nothing brings it while the other half's node is up");
    other_half.abort();
    let within = Duration::from_secs(PRESENCE_TTL_SECS * 3);
    let arrived = tokio::time::timeout(within, reader.wait_for(from_the_other_half)).await;
    assert!(arrived.is_ok(), "caught up once the node of the other version left");
    here.kill_hard();
    db.remove().await;
}

/// The same when the other half's node restarts under its name speaking this version
/// (it never leaves the list): its heartbeat says which version it speaks now.
#[tokio::test]
async fn what_a_node_of_another_protocol_posted_arrives_once_it_restarts_speaking_this_one() {
    let db = TestDb::postgres().await;
    let cookies = seed_people(&db.url(), 2).await;
    let redis = RedisServer::start().await;
    let data = tempfile::tempdir().unwrap();
    let other_half = listed_silently(&redis, "node-2", EVENTS_VERSION - 1).await;
    let here = node(data.path(), "node-1", &db.url(), &redis).await;
    let (mut reader, _, general) = person(here.addr, &cookies[0]).await;

    posted_elsewhere(&db, general, "before-the-update").await;
    let before_the_update = |m: &ServerMsg| is_message(m, "before-the-update");
    let early = tokio::time::timeout(Duration::from_millis(1500), reader.wait_for(before_the_update)).await;
    assert!(early.is_err(), "nothing brings it while node-2 speaks the other version");
    // Its updated self beats before the old one's listing expires: it never leaves
    // the list.
    let updated = node(data.path(), "node-2", &db.url(), &redis).await;
    other_half.abort();
    let within = Duration::from_secs(PRESENCE_TTL_SECS * 3);
    let arrived = tokio::time::timeout(within, reader.wait_for(before_the_update)).await;
    assert!(arrived.is_ok(), "caught up once node-2 spoke this version");
    here.kill_hard();
    updated.kill_hard();
    db.remove().await;
}

/// A node's readiness: its status code and body.
async fn readiness(node: SocketAddr) -> (u16, serde_json::Value) {
    let response = reqwest::get(format!("http://{node}/readyz")).await.unwrap();
    (response.status().as_u16(), response.json::<serde_json::Value>().await.unwrap())
}

/// Waits until the node reports its link to Redis as `state` ("down" or "ok").
async fn redis_reported(node: SocketAddr, state: &str) {
    let since = tokio::time::Instant::now();
    loop {
        let (status, body) = readiness(node).await;
        if body["redis"] == state {
            let expected = if state == "ok" { "ready" } else { "degraded" };
            assert_eq!((status, body["status"].as_str()), (200, Some(expected)), "{body}");
            return;
        }
        assert!(since.elapsed() < Duration::from_secs(15), "never reported Redis {state}: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A metric's value as the node exports it (with the metrics token `scrape`).
async fn metric(node: SocketAddr, name: &str) -> String {
    let response = reqwest::Client::new().get(format!("http://{node}/metrics")).bearer_auth("scrape").send().await.unwrap();
    let text = response.text().await.unwrap();
    // The whole name (or name and labels), not a longer one it begins
    // (`parley_redis_up_…`).
    let line = text
        .lines()
        .find(|line| line.strip_prefix(name).is_some_and(|rest| rest.starts_with([' ', '{'])))
        .unwrap_or_else(|| panic!("no {name} in {text}"));
    line.rsplit(' ').next().unwrap().to_string()
}

/// A node of this version that was up before this one and never said a word here is
/// not the other half of a deploy: its leaving costs no catch-up of every room.
#[tokio::test]
async fn a_quiet_node_of_this_version_leaving_makes_no_catch_up() {
    let db = TestDb::postgres().await;
    let redis = RedisServer::start().await;
    let data = tempfile::tempdir().unwrap();
    let quiet = node(data.path(), "node-2", &db.url(), &redis).await;
    let here = node_with(data.path(), "node-1", &db.url(), &redis, &[("PARLEY_METRICS_TOKEN", "scrape")]).await;
    tokio::time::sleep(Duration::from_secs(PRESENCE_TTL_SECS)).await;
    let before = metric(here.addr, "parley_cluster_catchups_total").await;
    quiet.kill_hard();
    tokio::time::sleep(Duration::from_secs(PRESENCE_TTL_SECS * 2)).await;
    assert_eq!(metric(here.addr, "parley_cluster_catchups_total").await, before);
    here.kill_hard();
    db.remove().await;
}

/// While Redis is down, a person leaves a room, joins another and reads a direct
/// message on one node; their tab on another node and the other person in the
/// conversation hear of none of it then. Once Redis is back, the nodes read what
/// changed from the database and tell them, as if it had just happened.
#[tokio::test]
async fn changes_made_while_redis_was_down_reach_the_other_nodes_once_it_is_back() {
    let db = TestDb::postgres().await;
    let cookies = seed_people(&db.url(), 2).await;
    let mut redis = RedisServer::start().await;
    let data = tempfile::tempdir().unwrap();
    let first = node_with(data.path(), "node-1", &db.url(), &redis, &[("PARLEY_METRICS_TOKEN", "scrape")]).await;
    let second = node(data.path(), "node-2", &db.url(), &redis).await;
    let (mut alice, _, general) = person(second.addr, &cookies[0]).await;
    let (mut bob_here, bob_id, _) = person(first.addr, &cookies[1]).await;
    let (mut bob_there, _, _) = person(second.addr, &cookies[1]).await;
    let ServerMsg::RoomJoined { room: side, .. } = alice.request(|id| ClientMsg::CreateRoom { id, name: "lado".into() }).await else {
        panic!("room created")
    };
    let ServerMsg::RoomJoined { room: direct, .. } = alice.request(|id| ClientMsg::OpenDirect { id, user_id: bob_id }).await else {
        panic!("direct room")
    };
    let ServerMsg::Sent { message: private, .. } =
        alice.request(|id| ClientMsg::Send { id, room_id: direct.id, client_id: "dm".into(), text: "Ótimo?".into() }).await
    else {
        panic!("sent")
    };
    bob_here.wait_for(|m| is_message(m, "dm")).await;

    redis.kill();
    redis_reported(first.addr, "down").await;
    redis_reported(second.addr, "down").await;
    assert_eq!(metric(first.addr, "parley_redis_up").await, "0", "what the alert on a lost link reads");
    assert!(matches!(bob_here.request(|id| ClientMsg::LeaveRoom { id, room_id: general }).await, ServerMsg::RoomLeft { .. }));
    assert!(matches!(bob_here.request(|id| ClientMsg::JoinRoom { id, room_id: side.id }).await, ServerMsg::RoomJoined { .. }));
    bob_here.send(&ClientMsg::Receipt { id: 903, room_id: direct.id, delivered_seq: Some(private.seq), read_seq: Some(private.seq) }).await;
    bob_here.request(|id| ClientMsg::Ping { id }).await;
    // Down for longer than a publish may wait: the events are lost, not just late.
    tokio::time::sleep(Duration::from_secs(3)).await;

    redis.start_again().await;
    redis_reported(first.addr, "ok").await;
    redis_reported(second.addr, "ok").await;
    assert_eq!(metric(first.addr, "parley_redis_up").await, "1");
    let (mut left, mut joined) = (false, false);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !(left && joined) {
        let next = tokio::time::timeout_at(deadline, bob_there.next()).await;
        match next.unwrap_or_else(|_| panic!("bob's other tab heard of the leave: {left}, of the join: {joined}")) {
            ServerMsg::RoomLeft { room_id, .. } if room_id == general => left = true,
            ServerMsg::RoomJoined { room, .. } if room.id == side.id => joined = true,
            _ => {}
        }
    }
    alice
        .wait_for(|m| matches!(m, ServerMsg::Receipt { room_id, user, read_seq, .. } if *room_id == direct.id && user.id == bob_id && *read_seq == private.seq))
        .await;
    // The tab that did not leave hears the room no more; it hears the one joined.
    alice.request(|id| ClientMsg::Send { id, room_id: general, client_id: "after".into(), text: "ainda aí?".into() }).await;
    alice.request(|id| ClientMsg::Send { id, room_id: side.id, client_id: "side".into(), text: "aqui".into() }).await;
    bob_there.wait_for(|m| is_message(m, "side")).await;
    assert!(bob_there.is_quiet(Duration::from_millis(500), |m| !is_message(m, "after")).await, "left on every node");
    first.kill_hard();
    second.kill_hard();
    db.remove().await;
}

/// A node restarted under its old name (before its heartbeat expired) starts afresh:
/// the people it had are offline at once unless they come back, while a person with
/// a tab on another node too stays online throughout.
#[tokio::test]
async fn a_node_restarted_under_its_name_starts_afresh_and_tabs_elsewhere_stay_online() {
    let db = TestDb::postgres().await;
    let cookies = seed_people(&db.url(), 3).await;
    let redis = RedisServer::start().await;
    let data = tempfile::tempdir().unwrap();
    // An expiry far longer than the test: only the restart can explain what it sees.
    let long_expiry = [("PARLEY_CLUSTER_PRESENCE_TTL_SECS", "60")];
    let first = node_with(data.path(), "node-1", &db.url(), &redis, &long_expiry).await;
    let second = node_with(data.path(), "node-2", &db.url(), &redis, &long_expiry).await;
    let restarted = node_with(data.path(), "node-3", &db.url(), &redis, &long_expiry).await;
    let (mut watcher, _, general) = person(first.addr, &cookies[0]).await;
    let (_bob_here, bob_id, _) = person(second.addr, &cookies[1]).await;
    let (_bob_there, _, _) = person(restarted.addr, &cookies[1]).await;
    let (_carol, carol_id, _) = person(restarted.addr, &cookies[2]).await;
    watcher.wait_for(|m| matches!(m, ServerMsg::Presence { total: 3, .. })).await;

    restarted.kill_hard();
    let restarted = node_with(data.path(), "node-3", &db.url(), &redis, &long_expiry).await;
    let went = watcher.wait_for(|m| matches!(m, ServerMsg::Presence { went, .. } if !went.is_empty())).await;
    let ServerMsg::Presence { went, total, .. } = went else { unreachable!() };
    assert_eq!((went, total), (vec![carol_id], 2), "carol went; bob, with a tab on node-2, stayed");
    match watcher.request(|id| ClientMsg::Online { id, room_id: general, after: None }).await {
        ServerMsg::Online { users, .. } => assert!(users.iter().any(|user| user.id == bob_id), "{users:?}"),
        other => panic!("{other:?}"),
    }
    first.kill_hard();
    second.kill_hard();
    restarted.kill_hard();
    db.remove().await;
}

#[tokio::test]
async fn restarting_redis_while_messages_flow_leaves_every_view_equal_to_the_database() {
    let db = TestDb::postgres().await;
    let cookies = seed_people(&db.url(), 2).await;
    let mut redis = RedisServer::start().await;
    let data = tempfile::tempdir().unwrap();
    let first = node(data.path(), "node-1", &db.url(), &redis).await;
    let second = node(data.path(), "node-2", &db.url(), &redis).await;
    let (mut writer, _, general) = person(first.addr, &cookies[0]).await;
    let (mut reader, _, _) = person(second.addr, &cookies[1]).await;
    reader.wait_for(|m| matches!(m, ServerMsg::Presence { total: 2, .. })).await;

    const COUNT: usize = 150;
    let writing = tokio::spawn(async move { send_steadily(&mut writer, general, "r", COUNT, Duration::from_millis(30)).await });
    let mut held = Held::default();
    read_until(&mut reader, general, 30, &mut held, Duration::from_secs(30)).await;
    // Down for longer than a publish may wait (so events are lost, not just late)
    // while the writer goes on (its node stores and acknowledges alone), then back
    // empty. Meanwhile the nodes say they are degraded, and stay ready.
    redis.kill();
    let down_since = tokio::time::Instant::now();
    redis_reported(first.addr, "down").await;
    tokio::time::sleep(Duration::from_secs(4).saturating_sub(down_since.elapsed())).await;
    redis.start_again().await;
    let acknowledged = writing.await.unwrap();
    // No catch-up asked by the client: the nodes must bring it up to date by
    // themselves once Redis is back.
    read_until(&mut reader, general, COUNT, &mut held, Duration::from_secs(30)).await;
    let texts = held.texts();
    assert_eq!(texts, acknowledged, "the reader's view equals the database");

    // The database holds exactly those, and the link is back.
    let store = db.open().await;
    let stored: Vec<ChatMessage> = store.history_after(general, 0, 10_000).await.unwrap().into_iter().filter(|m| m.client_id.is_some()).collect();
    assert_eq!(stored, texts);
    redis_reported(second.addr, "ok").await;
    first.kill_hard();
    second.kill_hard();
    db.remove().await;
}

#[tokio::test]
async fn two_nodes_ingesting_into_one_room_keep_its_sequence_whole() {
    let db = TestDb::postgres().await;
    let cookies = seed_people(&db.url(), 5).await;
    let redis = RedisServer::start().await;
    let data = tempfile::tempdir().unwrap();
    let nodes = [node(data.path(), "node-1", &db.url(), &redis).await, node(data.path(), "node-2", &db.url(), &redis).await];
    let mut writers = Vec::new();
    for (n, cookie) in cookies.iter().take(4).enumerate() {
        let (socket, _, general) = person(nodes[n % 2].addr, cookie).await;
        writers.push((socket, general));
    }
    const EACH: usize = 60;
    let tasks: Vec<_> = writers
        .into_iter()
        .enumerate()
        .map(|(n, (mut socket, general))| {
            tokio::spawn(async move { send_steadily(&mut socket, general, &format!("w{n}-"), EACH, Duration::ZERO).await })
        })
        .collect();
    // Meanwhile someone posts on one node while leaving on the other, over and over:
    // neither may wait forever on the other, and nothing is stored after leaving.
    let (mut poster, _, general) = person(nodes[0].addr, &cookies[4]).await;
    let (mut leaver, _, _) = person(nodes[1].addr, &cookies[4]).await;
    for round in 0..10 {
        let client_id = format!("race{round}");
        poster.send(&ClientMsg::Send { id: 1000 + round, room_id: general, client_id, text: "racing".into() }).await;
        let left = tokio::time::timeout(Duration::from_secs(10), leaver.request(|id| ClientMsg::LeaveRoom { id, room_id: general })).await;
        assert!(matches!(left, Ok(ServerMsg::RoomLeft { .. })), "leave answered: {left:?}");
        let posted = tokio::time::timeout(Duration::from_secs(10), poster.reply_to(1000 + round)).await;
        assert!(matches!(posted, Ok(ServerMsg::Sent { .. } | ServerMsg::Error { .. })), "post answered: {posted:?}");
        let joined = leaver.request(|id| ClientMsg::JoinRoom { id, room_id: general }).await;
        assert!(matches!(joined, ServerMsg::RoomJoined { .. }), "{joined:?}");
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().len(), EACH);
    }

    let store = db.open().await;
    let stored = store.history_after(general, 0, 100_000).await.unwrap();
    let seqs: Vec<i64> = stored.iter().map(|m| m.seq).collect();
    let first = seqs[0];
    assert_eq!(seqs, (first..first + seqs.len() as i64).collect::<Vec<_>>(), "unique and without gaps");
    assert_eq!(stored.iter().filter(|m| m.text.starts_with('w') || m.client_id.as_deref().is_some_and(|c| c.starts_with('w'))).count(), 4 * EACH);
    // Every racing post is stored while its author was a member: between a join
    // notice and the next leave notice.
    let mut member = true;
    for message in stored.iter().filter(|m| m.sender.username == "person00004") {
        match message.kind {
            app::protocol::MessageKind::Joined => member = true,
            app::protocol::MessageKind::Left => member = false,
            app::protocol::MessageKind::Text => assert!(member, "message {} stored after its author left", message.seq),
        }
    }
    for node in nodes {
        node.kill_hard();
    }
    db.remove().await;
}

/// Debian's nginx as the test's own process, with `deploy/nginx/parley.conf` (its
/// ports and certificate made here) in front of `nodes`; stopped when dropped.
struct Nginx {
    child: Child,
    http_port: u16,
    https_port: u16,
    cert_pem: String,
    _dir: tempfile::TempDir,
}

impl Nginx {
    async fn start(nodes: &[SocketAddr]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        std::fs::write(path("cert.pem"), certified.cert.pem()).unwrap();
        std::fs::write(path("key.pem"), certified.signing_key.serialize_pem()).unwrap();
        let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let (http_port, https_port) = (free(), free());
        let site = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nginx/parley.conf")).unwrap();
        let replaced = [
            ("    listen [::]:80;\n", String::new()),
            ("    listen [::]:443 ssl http2;\n", String::new()),
            ("listen 80;", format!("listen 127.0.0.1:{http_port};")),
            ("listen 443 ssl http2;", format!("listen 127.0.0.1:{https_port} ssl http2;")),
            ("/etc/ssl/parley/fullchain.pem", path("cert.pem")),
            ("/etc/ssl/parley/privkey.pem", path("key.pem")),
            ("server_name chat.example.org;", "server_name localhost;".to_string()),
        ];
        let site = replaced.iter().fold(site, |site, (from, to)| {
            assert!(site.contains(from), "parley.conf has {from:?}");
            site.replace(from, to)
        });
        std::fs::write(path("parley.conf"), site).unwrap();
        let upstream: String = nodes.iter().map(|node| format!("server {node} max_fails=2 fail_timeout=5s;\n")).collect();
        std::fs::write(path("parley-upstream.conf"), upstream).unwrap();
        let temp = path("temp");
        std::fs::create_dir_all(&temp).unwrap();
        let main = format!(
            "worker_processes 1;\npid {pid};\nerror_log {log} warn;\nevents {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {temp}/body;\n  proxy_temp_path {temp}/proxy;\n\
             fastcgi_temp_path {temp}/fastcgi;\n  uwsgi_temp_path {temp}/uwsgi;\n  scgi_temp_path {temp}/scgi;\n\
             include parley.conf;\n}}\n",
            pid = path("nginx.pid"),
            log = path("error.log"),
        );
        std::fs::write(path("nginx.conf"), main).unwrap();
        let args = ["-p", &path(""), "-c", &path("nginx.conf")];
        let checked = Command::new("nginx").args(args).arg("-t").output().expect("Debian's nginx is installed");
        assert!(checked.status.success(), "nginx -t: {}", String::from_utf8_lossy(&checked.stderr));
        let child = Command::new("nginx").args(args).args(["-g", "daemon off;"]).stderr(Stdio::inherit()).spawn().unwrap();
        let nginx = Nginx { child, http_port, https_port, cert_pem: certified.cert.pem(), _dir: dir };
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", https_port)).await.is_ok() {
                return nginx;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("nginx did not start: {}", std::fs::read_to_string(nginx._dir.path().join("error.log")).unwrap_or_default());
    }

    fn https_client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(self.cert_pem.as_bytes()).unwrap())
            .resolve("localhost", SocketAddr::from(([127, 0, 0, 1], self.https_port)))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    }

    /// A chat socket through nginx over `wss://`, as a browser on the site opens it.
    async fn socket(&self, cookie: &str) -> Result<WsClient, String> {
        use tokio_tungstenite::tungstenite::{client::IntoClientRequest, http::HeaderValue};
        let port = self.https_port;
        let mut request = format!("wss://localhost:{port}{}", app::protocol::socket_path(false)).into_client_request().unwrap();
        request.headers_mut().insert("cookie", HeaderValue::from_str(cookie).unwrap());
        request.headers_mut().insert("origin", HeaderValue::from_str(&format!("https://localhost:{port}")).unwrap());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(rustls::pki_types::CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).unwrap()).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.map_err(|err| err.to_string())?;
        let connector = tokio_tungstenite::Connector::Rustls(std::sync::Arc::new(tls));
        let (socket, _) = tokio_tungstenite::client_async_tls_with_config(request, tcp, None, Some(connector)).await.map_err(|err| err.to_string())?;
        Ok(WsClient::from_socket(socket))
    }
}

use rustls::pki_types::pem::PemObject;

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL: the master then stops its workers, which would
        // otherwise outlive it holding the test's output open.
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

/// One browser tab through nginx: reads every message of a room, and when its socket
/// drops, reconnects (through nginx, to whichever node is up) and catches up from the
/// newest message it holds, as the browser does. Ends holding `wanted` messages.
async fn tab_through_nginx(nginx: &Nginx, cookie: &str, room: RoomId, wanted: usize) -> Vec<ChatMessage> {
    let mut held: BTreeMap<i64, ChatMessage> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    'connect: loop {
        assert!(tokio::time::Instant::now() < deadline, "only {} of {wanted} arrived", held.len());
        let Ok(mut socket) = nginx.socket(cookie).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        match tokio::time::timeout(Duration::from_secs(5), socket.next_frame()).await {
            Ok(support::server::Frame::Msg(ServerMsg::Hello { .. })) => {}
            _ => continue,
        }
        let after_seq = held.keys().next_back().copied().unwrap_or(0);
        socket.send(&ClientMsg::Catchup { id: 1, room_id: room, after_seq }).await;
        while held.values().filter(|m| m.client_id.is_some()).count() < wanted {
            assert!(tokio::time::Instant::now() < deadline, "only {} of {wanted} arrived", held.len());
            let Ok(frame) = tokio::time::timeout(Duration::from_millis(500), socket.next_frame()).await else { continue };
            match frame {
                support::server::Frame::Msg(ServerMsg::Message { message }) if message.room_id == room => {
                    held.insert(message.seq, message);
                }
                support::server::Frame::Msg(ServerMsg::Catchup { messages, has_more, .. }) => {
                    let last = messages.last().map(|m| m.seq);
                    held.extend(messages.into_iter().map(|m| (m.seq, m)));
                    if let (true, Some(after_seq)) = (has_more, last) {
                        socket.send(&ClientMsg::Catchup { id: 1, room_id: room, after_seq }).await;
                    }
                }
                support::server::Frame::Msg(_) => {}
                support::server::Frame::Closed(_) => continue 'connect,
            }
        }
        return held.into_values().filter(|m| m.client_id.is_some()).collect();
    }
}

#[tokio::test]
async fn through_nginx_over_wss_a_killed_nodes_tabs_reconnect_and_miss_nothing() {
    let db = TestDb::postgres().await;
    let cookies = seed_people(&db.url(), 7).await;
    let redis = RedisServer::start().await;
    let data = tempfile::tempdir().unwrap();
    let behind_nginx = [("PARLEY_SECURITY_TRUST_FORWARDED_FOR", "true")];
    let nodes = vec![
        node_with(data.path(), "node-1", &db.url(), &redis, &behind_nginx).await,
        node_with(data.path(), "node-2", &db.url(), &redis, &behind_nginx).await,
        node_with(data.path(), "node-3", &db.url(), &redis, &behind_nginx).await,
    ];
    let nginx = Nginx::start(&nodes.iter().map(|node| node.addr).collect::<Vec<_>>()).await;

    // Plain HTTP is sent to HTTPS; pages come over HTTPS with HSTS, from a node.
    let redirected = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
        .get(format!("http://127.0.0.1:{}/login", nginx.http_port)).send().await.unwrap();
    assert_eq!(redirected.status(), 301);
    assert!(redirected.headers()["location"].to_str().unwrap().starts_with("https://"));
    let ready = nginx.https_client().get(format!("https://localhost:{}/readyz", nginx.https_port)).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert!(ready.headers()["strict-transport-security"].to_str().unwrap().contains("max-age="));
    assert_eq!(ready.json::<serde_json::Value>().await.unwrap()["redis"], "ok");

    // Six tabs through nginx (spread over the three nodes), a writer on node 1.
    let (mut writer, _, general) = person(nodes[0].addr, &cookies[0]).await;
    const COUNT: usize = 120;
    let nginx = std::sync::Arc::new(nginx);
    let tabs: Vec<_> = cookies[1..]
        .iter()
        .map(|cookie| {
            let (nginx, cookie) = (nginx.clone(), cookie.clone());
            tokio::spawn(async move { tab_through_nginx(&nginx, &cookie, general, COUNT).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut acknowledged = send_steadily(&mut writer, general, "n", COUNT / 3, Duration::from_millis(10)).await;
    // Node 3 dies with no warning while messages flow.
    let mut nodes = nodes;
    nodes.pop().unwrap().kill_hard();
    acknowledged.extend(send_steadily(&mut writer, general, "m", COUNT - COUNT / 3, Duration::from_millis(10)).await);
    for tab in tabs {
        let held = tab.await.unwrap();
        assert_eq!(held, acknowledged, "every tab ends with every message once, in order");
    }
    for node in nodes {
        node.kill_hard();
    }
    db.remove().await;
}

#[tokio::test]
async fn limits_hold_across_nodes() {
    let db = TestDb::postgres().await;
    let cookies = seed_people(&db.url(), 1).await;
    let redis = RedisServer::start().await;
    let data = tempfile::tempdir().unwrap();
    let tight = [("PARLEY_LIMITS_LOGINS_PER_MINUTE", "3"), ("PARLEY_LIMITS_SOCKETS_PER_USER", "2")];
    let nodes = [
        node_with(data.path(), "node-1", &db.url(), &redis, &tight).await,
        node_with(data.path(), "node-2", &db.url(), &redis, &tight).await,
    ];

    // Three login attempts a minute in all, not three per node.
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let mut statuses = Vec::new();
    for attempt in 0..4 {
        let node = &nodes[attempt % 2];
        let response = client
            .post(format!("http://{}/api/login", node.addr))
            .form(&[("username", "person00000"), ("password", "a wrong password"), ("next", "/")])
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [401, 401, 401, 429], "the fourth attempt is refused, on whichever node");

    // Two sockets per person in all: one on each node, then a third is refused.
    let (_first, _, _) = person(nodes[0].addr, &cookies[0]).await;
    let (_second, _, _) = person(nodes[1].addr, &cookies[0]).await;
    // The other node hears of the socket with the next presence window.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(WsClient::open(nodes[0].addr, Some(&cookies[0])).await.err(), Some(429));
    for node in nodes {
        node.kill_hard();
    }
    db.remove().await;
}

#[tokio::test]
async fn a_node_that_cannot_reach_redis_at_start_says_so_and_exits() {
    let data = tempfile::tempdir().unwrap();
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_server"))
        .current_dir(data.path())
        .env("PARLEY_CONFIG", data.path().join("none.toml"))
        .env("LEPTOS_SITE_ADDR", "127.0.0.1:0")
        .env("PARLEY_CHAT_DATA_DIR", data.path())
        .env("REDIS_URL", format!("redis://user:secret@127.0.0.1:{closed_port}"))
        .env_remove("DATABASE_URL")
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), output).await.expect("it gives up").unwrap();
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(said.contains("cannot reach Redis at redis://***@127.0.0.1:"), "{said}");
    assert!(!said.contains("secret") && !said.contains("panicked"), "{said}");
}
