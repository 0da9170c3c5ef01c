//! Thousands of people in one room: connecting, idling and reconnecting all at once
//! after a restart must settle quickly, with presence right and nobody cut off as a
//! slow consumer. (The presence design these guard: a connect costs each member a few
//! bytes in the next presence notice, never the room's whole online list.)
//!
//! The server is the real binary in its own process, so its memory is its own.

#[allow(unused_macros)]
mod support;

use std::time::Duration;

use app::protocol::{ClientMsg, ServerMsg};
use support::{crowd, process::ServerProcess, server::WsClient};

/// Longest time 2,000 sockets may take to all be greeted on a 2-core machine that also
/// runs the clients. Measured: a few seconds; before the presence redesign, 57 s with
/// most sockets closed as slow consumers.
const CONNECT_WITHIN: Duration = Duration::from_secs(30);
/// Server memory with 2,000 idle sockets (about 35 MiB of it is the process at rest).
const RSS_BOUND_KIB: u64 = 160 * 1024;

/// Settings for a crowd: heartbeats out of the way of a long run, and commits that do
/// not wait for the disk (2,000 receipts are 2,000 commits; durability has its own tests).
const CROWD: &[(&str, &str)] = &[
    ("PARLEY_LIMITS_HEARTBEAT_TIMEOUT_SECS", "600"),
    ("PARLEY_LIMITS_HTTP_BURST", "100000"),
    ("PARLEY_CHAT_SQLITE_FULL_SYNC", "false"),
];

/// Waits until every member has heard the room's online count reach `total`.
async fn presence_settles(members: &[crowd::Member], room_id: i64, total: u32) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let behind = members.iter().filter(|m| m.seen.lock().unwrap().online.get(&room_id) != Some(&total)).count();
        if behind == 0 {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{behind} members never heard that {total} are online");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_people_connect_to_one_room_and_presence_stays_right() {
    const PEOPLE: usize = 2_000;
    let data = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", data.path().join("parley.db").display());
    let cookies = crowd::seed_people(&url, PEOPLE).await;
    let server = ServerProcess::start(data.path(), CROWD).await;
    let general = 1;

    let (members, took) = crowd::storm(server.addr, &cookies, CONNECT_WITHIN).await;
    println!("{PEOPLE} sockets greeted in {took:?}");
    presence_settles(&members, general, PEOPLE as u32).await;
    assert!(crowd::closes(&members).is_empty(), "sockets were closed: {:?}", crowd::closes(&members));
    let rss = server.rss_kib();
    println!("server RSS with {PEOPLE} idle sockets: {} MiB", rss / 1024);
    assert!(rss < RSS_BOUND_KIB, "server RSS {rss} KiB");
    let frames: usize = members.iter().map(|m| m.seen.lock().unwrap().frames).sum();
    println!("frames received by the crowd while connecting: {frames}");
    assert!(frames < PEOPLE * 100, "presence cost {frames} frames");

    // Who is online, by name, a page at a time: everyone, once.
    let mut author = WsClient::open(server.addr, Some(&cookies[0])).await.unwrap();
    let mut names = Vec::new();
    let mut after = None;
    loop {
        match author.request(|id| ClientMsg::Online { id, room_id: general, after: after.clone() }).await {
            ServerMsg::Online { users, total, has_more, .. } => {
                assert_eq!(total as usize, PEOPLE);
                after = users.last().cloned();
                names.extend(users.into_iter().map(|u| u.username));
                if !has_more {
                    break;
                }
            }
            other => panic!("{other:?}"),
        }
    }
    let expected: Vec<String> = (0..PEOPLE).map(|n| format!("person{n:05}")).collect();
    assert_eq!(names, expected, "everyone online, once, in name order");

    // One message, read by everyone: each reader's receipt goes to its author and the
    // reader's own tabs, not to all 2,000 (which would be 4 million frames).
    let seq = match author.request(|id| ClientMsg::Send { id, room_id: general, client_id: "hello-all".into(), text: "olá a todos".into() }).await {
        ServerMsg::Sent { message, .. } => message.seq,
        other => panic!("{other:?}"),
    };
    let everyone_has_it = tokio::time::Instant::now() + Duration::from_secs(10);
    while members[1..].iter().any(|m| m.seen.lock().unwrap().last_message_seq != Some(seq)) {
        assert!(tokio::time::Instant::now() < everyone_has_it, "the message reached everyone");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for member in &members[1..] {
        member.send(ClientMsg::Receipt { id: 1, room_id: general, delivered_seq: None, read_seq: Some(seq) });
    }
    let all_read = tokio::time::Instant::now() + Duration::from_secs(30);
    while members[0].seen.lock().unwrap().receipts < PEOPLE - 1 {
        assert!(tokio::time::Instant::now() < all_read, "the author heard {} receipts", members[0].seen.lock().unwrap().receipts);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let heard: Vec<usize> = members[1..].iter().map(|m| m.seen.lock().unwrap().receipts).collect();
    assert!(heard.iter().all(|n| *n <= 1), "a reader hears its own receipt at most, not the others' ({:?})", heard.iter().max());
    assert!(crowd::closes(&members).is_empty(), "sockets were closed: {:?}", crowd::closes(&members));

    // Half go away at once (their connections just drop): the rest hear the new count.
    drop(author);
    let mut members = members;
    let staying = members.split_off(PEOPLE / 2);
    drop(members);
    presence_settles(&staying, general, (PEOPLE / 2) as u32).await;
    assert!(crowd::closes(&staying).is_empty());
    server.kill_hard();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_sockets_reconnecting_at_once_after_a_restart_all_settle() {
    const PEOPLE: usize = 1_000;
    let data = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", data.path().join("parley.db").display());
    let cookies = crowd::seed_people(&url, PEOPLE).await;
    let server = ServerProcess::start(data.path(), CROWD).await;
    let (members, _) = crowd::storm(server.addr, &cookies, CONNECT_WITHIN).await;
    presence_settles(&members, 1, PEOPLE as u32).await;

    server.kill_hard();
    drop(members);
    let restarted = ServerProcess::start(data.path(), CROWD).await;
    let (members, took) = crowd::storm(restarted.addr, &cookies, CONNECT_WITHIN).await;
    println!("{PEOPLE} sockets back in {took:?} after a restart");
    presence_settles(&members, 1, PEOPLE as u32).await;
    assert!(crowd::closes(&members).is_empty(), "sockets were closed: {:?}", crowd::closes(&members));
    restarted.kill_hard();
}
