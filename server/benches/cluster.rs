//! Delivery latency across nodes: two release nodes on this machine's PostgreSQL (a
//! fresh schema) and a `redis-server` of the benchmark's own. One person posts at a
//! steady rate on node 1; a reader on node 1 and a reader on node 2 time each message
//! from just before it was sent to its arrival. Prints p50/p99 for both, and fails if
//! any message is missing, repeated or out of order.
//!
//! `cargo bench -p server --bench cluster` (knobs: `BENCH_MESSAGES`, default 3,000;
//! `BENCH_RATE` per second, default 200). See `docs/benchmarks.md`.

#[allow(dead_code)]
#[path = "../tests/support/process.rs"]
mod process;

#[allow(dead_code)]
#[path = "../tests/support/crowd.rs"]
mod crowd;

#[allow(dead_code)]
#[path = "../tests/support/databases.rs"]
mod databases;

#[allow(dead_code)]
#[path = "../tests/support/cluster.rs"]
mod cluster;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use app::protocol::{ClientMsg, ServerMsg};
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    tungstenite::{client::IntoClientRequest, http::HeaderValue, Message},
    MaybeTlsStream, WebSocketStream,
};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn setting(name: &str, default: f64) -> f64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let count = setting("BENCH_MESSAGES", 3_000.0) as usize;
    let rate = setting("BENCH_RATE", 200.0);
    let db = databases::TestDb::postgres().await;
    let cookies = crowd::seed_people(&db.url(), 3).await;
    let redis = cluster::RedisServer::start().await;
    let data = tempfile::tempdir().unwrap();
    let first = cluster::start_node(data.path(), "node-1", &db.url(), &redis, &[]).await;
    let second = cluster::start_node(data.path(), "node-2", &db.url(), &redis, &[]).await;

    let (writer, general) = connect(first.addr, &cookies[0]).await;
    // The writer's acknowledgements are read (and dropped) as they come, as a browser would.
    let (mut writer, mut acknowledgements) = writer.split();
    tokio::spawn(async move { while acknowledgements.next().await.is_some() {} });
    let (near, _) = connect(first.addr, &cookies[1]).await;
    let (far, _) = connect(second.addr, &cookies[2]).await;
    // Let presence settle, so its frames do not share the measured window.
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Every message's text is its number; the clock is this process's.
    let start = Instant::now();
    let readers = [near, far].map(|socket| tokio::spawn(read_messages(socket, count, start)));
    let sent_at: Vec<Duration> = {
        let mut sent_at = Vec::with_capacity(count);
        let pause = Duration::from_secs_f64(1.0 / rate);
        for n in 0..count {
            tokio::time::sleep_until((start + pause * n as u32).into()).await;
            sent_at.push(start.elapsed());
            let msg = ClientMsg::Send { id: n as u64 + 1, room_id: general, client_id: format!("b{n}"), text: n.to_string() };
            writer.send(Message::text(serde_json::to_string(&msg).unwrap())).await.unwrap();
        }
        sent_at
    };

    let mut failed = false;
    for (name, reader) in ["same node", "across nodes"].into_iter().zip(readers) {
        let arrivals = reader.await.unwrap();
        if arrivals.is_empty() {
            println!("{name:>12}: no message arrived");
            failed = true;
            continue;
        }
        let in_order = arrivals.iter().map(|(n, _)| *n).eq(0..count);
        let mut latencies: Vec<Duration> = arrivals.iter().map(|(n, at)| at.saturating_sub(sent_at[*n])).collect();
        latencies.sort();
        let percentile = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0;
        println!(
            "{name:>12}: {} of {count} messages, in order and once: {in_order}; p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            arrivals.len(),
            percentile(0.50),
            percentile(0.99),
            percentile(1.0)
        );
        failed |= !in_order || arrivals.len() != count;
    }
    first.kill_hard();
    second.kill_hard();
    db.remove().await;
    if failed {
        std::process::exit(1);
    }
}

/// Opens a greeted socket; returns it with `#general`'s id.
async fn connect(addr: SocketAddr, cookie: &str) -> (Socket, i64) {
    let mut request = format!("ws://{addr}{}", app::protocol::socket_path(false)).into_client_request().unwrap();
    request.headers_mut().insert("cookie", HeaderValue::from_str(cookie).unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => {
                if let Ok(ServerMsg::Hello { rooms, .. }) = serde_json::from_str(&text) {
                    let general = rooms.iter().find(|room| room.name == "general").expect("everyone is in general").id;
                    return (socket, general);
                }
            }
            Some(Ok(_)) => {}
            other => panic!("socket ended before its greeting: {other:?}"),
        }
    }
}

/// Reads until `count` messages arrived or nothing came for 10 s; each message's
/// number with when it arrived.
async fn read_messages(mut socket: Socket, count: usize, start: Instant) -> Vec<(usize, Duration)> {
    let mut arrivals = Vec::with_capacity(count);
    while arrivals.len() < count {
        match tokio::time::timeout(Duration::from_secs(10), socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                if let Ok(ServerMsg::Message { message }) = serde_json::from_str(&text) {
                    if message.client_id.is_some() {
                        arrivals.push((message.text.parse().unwrap(), start.elapsed()));
                    }
                }
            }
            Ok(Some(Ok(_))) => {}
            _ => break,
        }
    }
    arrivals
}
