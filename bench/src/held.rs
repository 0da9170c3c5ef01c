//! Many idle sockets held by several nodes: the whole of a large crowd cannot sit in
//! one process where the open-file limit is lower than the crowd, so the nodes share it
//! (PostgreSQL and Redis between them, as in production) and the generator's side is
//! split over processes too, each holding one node's share.
//!
//! Beyond memory and connects, the run checks what a crowd this size must not break:
//! every node agrees on how many are online in the room, and one message reaches every
//! socket once.

use std::{net::SocketAddr, panic::AssertUnwindSafe, process::Stdio, time::Instant};

use app::protocol::{ClientMsg, ServerMsg};
use futures::{FutureExt, SinkExt, StreamExt, future::join_all};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines},
    process::{Child, ChildStdin, ChildStdout, Command},
    time::{Duration, sleep},
};
use tokio_tungstenite::tungstenite::Message;

use crate::{
    cluster::{Redis, Schema},
    load::Crowd,
    marker::Marker,
    seed,
    servers::{Kind, Programs, Server},
    targets::{Dialect, Seat, Socket},
};

/// Descriptors a node needs beyond its sockets: its listener, database pool, Redis
/// links, files.
const DESCRIPTORS_BESIDE_SOCKETS: usize = 500;

/// How long the room's online count may take to agree on every node, and the test
/// message to reach everyone, before the run counts it as failed.
const SETTLE_LIMIT: Duration = Duration::from_secs(60);
/// How long a holder may take to open its share, a generous bound (a few hundred a
/// second at worst), so that a stuck run fails instead of hanging.
const OPEN_LIMIT: Duration = Duration::from_secs(600);
/// How long a holder or a node may take to answer one question.
const ANSWER_LIMIT: Duration = Duration::from_secs(30);
/// How long after everyone has the message the run goes on listening for copies.
const COPIES_WATCHED: Duration = Duration::from_secs(1);

/// Opens `sockets` idle sockets (seat `n` in room `n % rooms`) spread evenly over
/// `nodes` nodes; reports connects, memory per socket on each node, how long presence
/// took to agree, and how long one message took to reach all. False if anything failed.
pub async fn held(programs: &Programs, sockets: usize, rooms: usize, nodes: usize) -> bool {
    match run(programs, sockets, rooms.max(1), nodes.max(1)).await {
        Ok(clean) => clean,
        Err(e) => {
            println!("FAILED: {e}");
            false
        }
    }
}

async fn run(programs: &Programs, sockets: usize, rooms: usize, nodes: usize) -> Result<bool, String> {
    let per_node = sockets.div_ceil(nodes);
    let limit = crate::open_file_limit();
    if per_node + DESCRIPTORS_BESIDE_SOCKETS > limit {
        return Err(format!(
            "{per_node} sockets per node need more than the {limit} files a process may open here: use more --nodes"
        ));
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let schema = Schema::create().await?;
    // A panic (a node that died, say) still drops the schema before it goes on up.
    let outcome = AssertUnwindSafe(with_schema(programs, &schema, dir.path(), sockets, rooms, nodes, per_node))
        .catch_unwind()
        .await;
    schema.drop_all().await;
    outcome.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

async fn with_schema(
    programs: &Programs,
    schema: &Schema,
    dir: &std::path::Path,
    sockets: usize,
    rooms: usize,
    nodes: usize,
    per_node: usize,
) -> Result<bool, String> {
    let redis = Redis::start(dir).await?;
    // The crowd's seats, then one probe per node, in the first room.
    let seat_rooms: Vec<usize> = (0..sockets)
        .map(|n| n % rooms)
        .chain(std::iter::repeat_n(0, nodes))
        .collect();
    let seeding = Instant::now();
    let (seats, room_ids) = seed::parley(&schema.url(), &seat_rooms, rooms).await;
    schema.settle().await?;
    println!("seeded {} accounts in PostgreSQL in {:.1?}", seats.len(), seeding.elapsed());

    let mut servers = Vec::with_capacity(nodes);
    for n in 0..nodes {
        let data = dir.join(format!("node-{n}"));
        std::fs::create_dir_all(&data).map_err(|e| e.to_string())?;
        servers.push(Server::start_node(programs, &data, &format!("node-{n}"), &schema.url(), &redis.url()).await);
    }
    sleep(Duration::from_secs(1)).await;
    let at_rest: Vec<u64> = servers.iter().map(Server::rss_kib).collect();
    let cpu_before: f64 = servers.iter().map(Server::cpu_seconds).sum();

    let started = Instant::now();
    let mut holders = Vec::with_capacity(nodes);
    for (n, server) in servers.iter().enumerate() {
        let first = n * per_node;
        let count = per_node.min(sockets.saturating_sub(first));
        holders.push(Holder::spawn(server.addr, first, count, &room_ids)?);
    }
    let opening = join_all(holders.iter_mut().map(Holder::opened));
    for opened in within(OPEN_LIMIT, "opening the sockets", opening).await? {
        opened?;
    }
    let connect_time = started.elapsed();
    let connect_cpu: f64 = servers.iter().map(Server::cpu_seconds).sum::<f64>() - cpu_before;
    println!(
        "{sockets} sockets open over {nodes} nodes in {:.2?}: {:.0}/s, {:.0} µs of the nodes' CPU per connect",
        connect_time,
        sockets as f64 / connect_time.as_secs_f64(),
        connect_cpu * 1e6 / sockets.max(1) as f64
    );

    let online = seat_rooms.iter().filter(|&&room| room == 0).count();
    let mut probes = Vec::with_capacity(nodes);
    for (n, server) in servers.iter().enumerate() {
        let seat = &seats[sockets + n];
        probes.push(within(ANSWER_LIMIT, "opening a probe", Probe::open(server.addr, seat, room_ids[0])).await??);
    }
    let presence = Instant::now();
    let agreed = all_nodes_count(&mut probes, online).await?;
    if agreed == online {
        println!(
            "every node counts {online} online in the first room {:.2?} after the probes joined",
            presence.elapsed()
        );
    }

    sleep(Duration::from_secs(3)).await;
    let per_socket = memory_per_socket(&servers, &at_rest, &holders);
    println!("memory per socket on each node, once quiet: {}", per_socket.join(", "));

    let members_held = (0..sockets).filter(|n| n % rooms == 0).count() as u64;
    let (once_each, closed) = one_message_to_all(&mut probes[0], room_ids[0], &mut holders, members_held).await?;
    let running = servers.iter_mut().all(Server::is_running);
    println!(
        "| {nodes} | {sockets} | {:.2} s | {:.0} | {} | {closed} closed{} |",
        connect_time.as_secs_f64(),
        sockets as f64 / connect_time.as_secs_f64(),
        per_socket.join(", "),
        if running { "" } else { ", A NODE EXITED" }
    );
    Ok(once_each && closed == 0 && running && agreed == online)
}

/// Each node's growth in memory since `at_rest`, per socket it holds, and its whole
/// resident size.
fn memory_per_socket(servers: &[Server], at_rest: &[u64], holders: &[Holder]) -> Vec<String> {
    servers
        .iter()
        .zip(at_rest)
        .zip(holders)
        .map(|((server, rest), holder)| {
            let now = server.rss_kib();
            format!(
                "{:.1} KiB ({:.0} MiB)",
                now.saturating_sub(*rest) as f64 / holder.sockets.max(1) as f64,
                now as f64 / 1024.0
            )
        })
        .collect()
}

/// Posts one message from `probe` to `room_id` and waits until the holders' sockets
/// have it; whether each of the `members_held` got it exactly once, and how many
/// sockets have been closed by then.
async fn one_message_to_all(
    probe: &mut Probe,
    room_id: i64,
    holders: &mut [Holder],
    members_held: u64,
) -> Result<(bool, u64), String> {
    let sent = Instant::now();
    probe.post(room_id).await?;
    loop {
        let seen = Seen::of_all(holders).await?;
        if seen.received >= members_held || sent.elapsed() > SETTLE_LIMIT {
            break;
        }
        sleep(Duration::from_millis(50)).await;
    }
    let reached_in = sent.elapsed();
    // Everyone has it: any more would be copies.
    sleep(COPIES_WATCHED).await;
    let seen = Seen::of_all(holders).await?;
    let once_each = seen.received == members_held && seen.duplicated == 0;
    println!(
        "{}one message to the first room: {} deliveries ({} copies) to its {members_held} held sockets, the last in {reached_in:.2?}",
        if once_each { "" } else { "FAILED: " },
        seen.received,
        seen.duplicated,
    );
    Ok((once_each, seen.closed))
}

/// Asks every probe how many are online in its room until all say `expected` (the
/// count goes up as the nodes hear of each other's sockets), or the limit passes;
/// returns the count they last gave when they disagree.
async fn all_nodes_count(probes: &mut [Probe], expected: usize) -> Result<usize, String> {
    let asked = Instant::now();
    loop {
        let mut counts = Vec::with_capacity(probes.len());
        for probe in probes.iter_mut() {
            counts.push(within(ANSWER_LIMIT, "a node's online count", probe.online()).await??);
        }
        if counts.iter().all(|&count| count == expected) {
            return Ok(expected);
        }
        if asked.elapsed() > SETTLE_LIMIT {
            println!("FAILED: after {SETTLE_LIMIT:?} the nodes count {counts:?} online in the first room, not {expected}");
            return Ok(counts.into_iter().find(|&c| c != expected).unwrap_or(expected));
        }
        sleep(Duration::from_millis(200)).await;
    }
}

/// A socket of the run's own on one node, to ask who is online and to post.
struct Probe {
    socket: Socket,
    room_id: i64,
    next_id: u64,
}

impl Probe {
    async fn open(node: SocketAddr, seat: &Seat, room_id: i64) -> Result<Probe, String> {
        let dialect = Dialect {
            kind: Kind::Parley,
            parley_room_ids: vec![room_id],
        };
        let from = std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 3, 1));
        let socket = dialect.open(node, from, seat).await?;
        Ok(Probe {
            socket,
            room_id,
            next_id: 1,
        })
    }

    async fn request(&mut self, msg: ClientMsg) -> Result<(), String> {
        let frame = serde_json::to_string(&msg).map_err(|e| e.to_string())?;
        self.socket
            .send(Message::text(frame))
            .await
            .map_err(|e| format!("probe: {e}"))
    }

    fn take_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// The room's online count, as this node answers it.
    async fn online(&mut self) -> Result<usize, String> {
        let id = self.take_id();
        let room_id = self.room_id;
        self.request(ClientMsg::Online { id, room_id, after: None }).await?;
        loop {
            let frame = match self.socket.next().await {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(format!("probe: {e}")),
                None => return Err("probe closed".into()),
            };
            match serde_json::from_str(&frame) {
                Ok(ServerMsg::Online { id: answered, total, .. }) if answered == id => return Ok(total as usize),
                Ok(ServerMsg::Error { id: Some(answered), message, .. }) if answered == id => {
                    return Err(format!("a node refused to say who is online: {message}"));
                }
                _ => {}
            }
        }
    }

    /// Posts one message (a marker the holders count) to `room_id`.
    async fn post(&mut self, room_id: i64) -> Result<(), String> {
        let id = self.take_id();
        let marker = Marker {
            sender: u32::MAX - 1,
            number: 0,
            intended_us: 0,
        };
        self.request(ClientMsg::Send {
            id,
            room_id,
            client_id: "held-probe".into(),
            text: marker.text("Ótimo! ação 🎉"),
        })
        .await
    }
}

/// One node's share of the crowd, held by a process of its own (this program, run as
/// `holder`), spoken to over its standard input and output.
struct Holder {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    sockets: usize,
}

/// What a holder's sockets have seen so far.
#[derive(Default)]
struct Seen {
    closed: u64,
    received: u64,
    duplicated: u64,
}

impl Seen {
    /// What every holder's sockets have seen, summed.
    async fn of_all(holders: &mut [Holder]) -> Result<Seen, String> {
        let mut all = Seen::default();
        for holder in holders {
            let seen = within(ANSWER_LIMIT, "a holder's report", holder.report()).await??;
            all.closed += seen.closed;
            all.received += seen.received;
            all.duplicated += seen.duplicated;
        }
        Ok(all)
    }
}

/// `future`'s outcome, or an error naming `what` once `limit` has passed.
async fn within<T>(limit: Duration, what: &str, future: impl Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(limit, future)
        .await
        .map_err(|_| format!("{what} took more than {limit:?}"))
}

impl Holder {
    fn spawn(node: SocketAddr, first: usize, count: usize, room_ids: &[i64]) -> Result<Holder, String> {
        let program = std::env::current_exe().map_err(|e| e.to_string())?;
        let room_ids: Vec<String> = room_ids.iter().map(i64::to_string).collect();
        let mut child = Command::new(program)
            .args(["holder", "--connect", &node.to_string(), "--first", &first.to_string()])
            .args(["--sockets", &count.to_string(), "--room-ids", &room_ids.join(",")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("starting a holder: {e}"))?;
        let stdin = child.stdin.take().ok_or("holder's stdin")?;
        let stdout = child.stdout.take().ok_or("holder's stdout")?;
        Ok(Holder {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
            sockets: count,
        })
    }

    async fn answer(&mut self) -> Result<String, String> {
        match self.lines.next_line().await {
            Ok(Some(line)) => Ok(line),
            Ok(None) => Err(format!("a holder exited: {:?}", self.child.try_wait())),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Waits until every socket of its share is open and has heard its hello.
    async fn opened(&mut self) -> Result<(), String> {
        let line = self.answer().await?;
        match line.strip_prefix("opened ") {
            Some(_) => Ok(()),
            None => Err(format!("a holder could not open its sockets: {line}")),
        }
    }

    async fn report(&mut self) -> Result<Seen, String> {
        self.stdin
            .write_all(b"report\n")
            .await
            .map_err(|e| e.to_string())?;
        let line = self.answer().await?;
        let mut fields = line.strip_prefix("report ").unwrap_or_default().split(' ');
        let mut next = || fields.next().and_then(|field| field.parse().ok());
        match (next(), next(), next()) {
            (Some(closed), Some(received), Some(duplicated)) => Ok(Seen { closed, received, duplicated }),
            _ => Err(format!("a holder's report made no sense: {line}")),
        }
    }
}

/// The holder's side: opens seats `first..first + count` on `node`, says so, then
/// answers each `report` line on its input with what its sockets have seen, until its
/// input closes.
pub async fn hold(node: SocketAddr, first: usize, count: usize, room_ids: Vec<i64>) -> bool {
    let rooms = room_ids.len().max(1);
    let seats = (first..first + count)
        .map(|n| Seat {
            room: n % rooms,
            cookie: Some(seed::session_cookie(n)),
        })
        .collect();
    let dialect = Dialect {
        kind: Kind::Parley,
        parley_room_ids: room_ids,
    };
    let crowd = match Crowd::open(dialect, node, seats, 512).await {
        Ok(crowd) => crowd,
        Err(e) => {
            println!("failed {e}");
            return false;
        }
    };
    println!("opened {} {:.3}", crowd.len(), crowd.connect_time.as_secs_f64());
    let mut input = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = input.next_line().await {
        if line == "report" {
            println!("report {} {} {}", crowd.closed(), crowd.received(), crowd.duplicated());
        }
    }
    true
}
