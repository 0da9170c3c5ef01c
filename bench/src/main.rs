//! Parley's load generator: the same open-loop load, from the same client, against
//! Parley, Socket.IO and a bare axum broadcast, each server pinned to one core and
//! the generator to the other. `docs/benchmarks.md` has the commands and the figures.
//!
//! Exits non-zero when any message was lost, duplicated or reordered, or a socket was
//! closed: the figures of a run that lost messages mean nothing.

mod cluster;
mod cores;
mod floor;
mod held;
mod load;
mod marker;
mod seed;
mod servers;
mod targets;

use std::time::{Duration, Instant};

use clap::Parser;
use load::{Crowd, PhaseOutcome};
use servers::{Kind, Programs, Server};
use targets::{Dialect, Seat};

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Shape {
    /// Many rooms, every message to every member: CPU per delivery and latency.
    Fanout,
    /// The fan-out load, its rate stepped up until p99 passes 50 ms or anything is lost.
    Capacity,
    /// One room of 2,000 members.
    HotRoom,
    /// Many senders into one room, rate stepped up: the highest rate stored and
    /// acknowledged in time.
    Ingest,
    /// Idle sockets: connects per second and memory per socket.
    Idle,
    /// 50,000 idle sockets over several nodes sharing PostgreSQL and Redis: connects,
    /// memory per socket on each node, presence agreeing, one message reaching all.
    Held,
    /// One page of a room's history over HTTP, with a million messages stored.
    History,
    /// The CPU one small loopback write costs.
    Floor,
    /// A few seconds of fan-out on every server: checks that nothing is lost (CI).
    Smoke,
    /// One node's share of a `held` run, in a process of its own (started by it).
    #[value(hide = true)]
    Holder,
}

#[derive(Debug, Parser)]
#[command(about = "Measures Parley against Socket.IO and a bare broadcast on the same machine")]
struct Args {
    #[arg(value_enum, default_value = "fanout")]
    shape: Shape,
    /// Servers to measure, in this order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "parley,socketio,bare"
    )]
    targets: Vec<Kind>,
    /// Sockets in all (default per shape).
    #[arg(long)]
    sockets: Option<usize>,
    /// Rooms the sockets are spread over (default per shape).
    #[arg(long)]
    rooms: Option<usize>,
    /// Messages per second posted in all (default per shape; the first step when
    /// stepping up).
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds each phase posts for.
    #[arg(long)]
    seconds: Option<f64>,
    /// Sockets in each room that post.
    #[arg(long)]
    senders_per_room: Option<usize>,
    /// Bytes of text per message.
    #[arg(long, default_value_t = 200)]
    text_bytes: usize,
    /// Messages stored for the history shape.
    #[arg(long, default_value_t = 1_000_000)]
    history_messages: u64,
    /// Parley's server binary (default: `server` beside this one, the release build).
    #[arg(long)]
    parley_bin: Option<std::path::PathBuf>,
    /// Nodes sharing the sockets of a `held` run.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// A holder's node.
    #[arg(long, hide = true)]
    connect: Option<std::net::SocketAddr>,
    /// A holder's first seat.
    #[arg(long, hide = true, default_value_t = 0)]
    first: usize,
    /// A holder's rooms, in the order the seats number them.
    #[arg(long, hide = true, value_delimiter = ',')]
    room_ids: Vec<i64>,
}

/// The sizes of one shape, after defaults.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    sockets: usize,
    rooms: usize,
    rate: f64,
    seconds: f64,
    senders_per_room: usize,
}

impl Args {
    fn sizes(&self) -> Sizes {
        let (sockets, rooms, rate, seconds, senders_per_room) = match self.shape {
            Shape::Fanout => (1_000, 10, 500.0, 10.0, 2),
            Shape::Capacity => (1_000, 10, 100.0, 5.0, 2),
            Shape::HotRoom => (2_000, 1, 25.0, 10.0, 5),
            Shape::Ingest => (4, 1, 2_000.0, 5.0, 4),
            Shape::Idle => (10_000, 1, 0.0, 0.0, 0),
            Shape::Held | Shape::Holder => (50_000, 1, 0.0, 0.0, 0),
            Shape::History => (1, 1, 0.0, 0.0, 0),
            // The spread floor is measured in the fan-out's shape.
            Shape::Floor => (1_000, 10, 500.0, 4.0, 0),
            Shape::Smoke => (200, 4, 200.0, 2.0, 2),
        };
        Sizes {
            sockets: self.sockets.unwrap_or(sockets),
            rooms: self.rooms.unwrap_or(rooms).max(1),
            rate: self.rate.unwrap_or(rate),
            seconds: self.seconds.unwrap_or(seconds),
            senders_per_room: self.senders_per_room.unwrap_or(senders_per_room),
        }
    }
}

fn main() {
    let args = Args::parse();
    raise_open_file_limit();
    // The generator runs on its own core, in one thread, so it never competes with the
    // server for the server's core.
    cores::pin_current_thread(cores::server_and_generator_cores().map(|(_, generator)| generator));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let clean = runtime.block_on(run(args));
    if !clean {
        eprintln!("FAILED: messages were lost, duplicated or reordered, or sockets closed");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> bool {
    let programs = Programs::beside_this_binary(args.parley_bin.clone());
    let sizes = args.sizes();
    if args.shape == Shape::Holder {
        let node = args.connect.expect("a holder is told its node");
        return held::hold(node, args.first, sizes.sockets, args.room_ids).await;
    }
    println!(
        "{:?}: {sizes:?}, {} bytes of text per message",
        args.shape, args.text_bytes
    );
    match args.shape {
        Shape::Floor => {
            write_floors(&args, sizes);
            true
        }
        Shape::Idle => idle(&args, &programs, sizes).await,
        Shape::Held => held::held(&programs, sizes.sockets, sizes.rooms, args.nodes).await,
        Shape::Holder => unreachable!("answered above"),
        Shape::History => history(&args, &programs).await,
        Shape::Fanout | Shape::HotRoom | Shape::Smoke => {
            let floors = write_floors(&args, sizes);
            let mut results = Vec::new();
            for &kind in &args.targets {
                let (_data, server, mut crowd) = open_crowd(kind, &programs, sizes).await;
                let outcome = crowd
                    .phase(
                        &server,
                        sizes.rate,
                        sizes.seconds,
                        sizes.senders_per_room,
                        args.text_bytes,
                    )
                    .await;
                print_phase(kind, &outcome);
                results.push((kind, outcome));
            }
            print_ratios(&results, floors);
            results.iter().all(|(_, outcome)| outcome.clean())
        }
        Shape::Capacity | Shape::Ingest => step_up(&args, &programs, sizes).await,
    }
}

/// Starts `kind`, seeds Parley's storage, and opens the shape's sockets spread evenly
/// over its rooms.
async fn open_crowd(
    kind: Kind,
    programs: &Programs,
    sizes: Sizes,
) -> (tempfile::TempDir, Server, Crowd) {
    let data = tempfile::tempdir().expect("temporary directory");
    let (seats, parley_room_ids) = seats(kind, &data, sizes).await;
    let server = Server::start(kind, programs, data.path()).await;
    let crowd = Crowd::open(
        Dialect {
            kind,
            parley_room_ids,
        },
        server.addr,
        seats,
        256,
    )
    .await
    .unwrap_or_else(|e| panic!("{}: opening sockets: {e}", kind.label()));
    println!(
        "{}: {} sockets open in {:.2?} ({:.0}/s)",
        kind.label(),
        crowd.len(),
        crowd.connect_time,
        crowd.len() as f64 / crowd.connect_time.as_secs_f64()
    );
    (data, server, crowd)
}

/// The shape's sockets spread evenly over its rooms; for Parley each with an account
/// and session made in `data`'s storage, and the ids its rooms got there.
async fn seats(kind: Kind, data: &tempfile::TempDir, sizes: Sizes) -> (Vec<Seat>, Vec<i64>) {
    let seat_rooms: Vec<usize> = (0..sizes.sockets).map(|n| n % sizes.rooms).collect();
    if kind == Kind::Parley {
        seed::parley(&seed::sqlite_url(data.path()), &seat_rooms, sizes.rooms).await
    } else {
        let seats = seat_rooms.iter().map(|&room| Seat { room, cookie: None }).collect();
        (seats, Vec::new())
    }
}

/// For ingest: a step whose acknowledgements' p99 stays under this still keeps up
/// (a server that falls behind shows seconds, as its queue grows).
const INGEST_KEEPS_UP_MS: f64 = 100.0;

/// Steps the rate up from `sizes.rate` until p99 passes the limit or anything is
/// lost; reports every step. For ingest the latency is the sender's own (Parley
/// acknowledges only after the message is stored), the limit only says the server
/// still keeps up, and the p99 that counts is then measured at half the rate held.
async fn step_up(args: &Args, programs: &Programs, sizes: Sizes) -> bool {
    let ingest = args.shape == Shape::Ingest;
    let (limit_ms, own) = if ingest { (INGEST_KEEPS_UP_MS, true) } else { (50.0, false) };
    let mut all_clean = true;
    for &kind in &args.targets {
        let (_data, server, mut crowd) = open_crowd(kind, programs, sizes).await;
        let mut rate = sizes.rate;
        let mut held = None;
        let mut tried_again = false;
        loop {
            let outcome = crowd
                .phase(
                    &server,
                    rate,
                    sizes.seconds,
                    sizes.senders_per_room,
                    args.text_bytes,
                )
                .await;
            print_phase(kind, &outcome);
            let p99 = if own {
                outcome.own_latency_ms[2]
            } else {
                outcome.p99_ms()
            };
            if !outcome.clean() || p99 > limit_ms {
                all_clean &= outcome.lost() == 0 && outcome.duplicated == 0;
                // One stalled sync on a shared virtual disk can spoil a whole ingest
                // step; a rate counts as too much only when it fails twice.
                if ingest && outcome.clean() && !tried_again {
                    tried_again = true;
                    continue;
                }
                break;
            }
            tried_again = false;
            held = Some(outcome.sent as f64 / sizes.seconds);
            rate *= 1.25;
        }
        match held {
            Some(rate) => println!(
                "{}: held {rate:.0} messages/s with p99 under {limit_ms} ms and nothing lost",
                kind.label()
            ),
            None => println!("{}: did not hold even the first step", kind.label()),
        }
        if let (true, Some(rate)) = (ingest, held) {
            let half = crowd
                .phase(&server, rate / 2.0, sizes.seconds, sizes.senders_per_room, args.text_bytes)
                .await;
            print_phase(kind, &half);
            all_clean &= half.clean();
            println!(
                "{}: at half that rate ({:.0} messages/s) the acknowledgement's p99 is {:.2} ms",
                kind.label(),
                rate / 2.0,
                half.own_latency_ms[2]
            );
        }
    }
    all_clean
}

/// Opens idle sockets as fast as the server takes them; memory per socket once quiet.
async fn idle(args: &Args, programs: &Programs, sizes: Sizes) -> bool {
    let mut clean = true;
    for &kind in &args.targets {
        let data = tempfile::tempdir().expect("temporary directory");
        let (seats, parley_room_ids) = seats(kind, &data, sizes).await;
        let mut server = Server::start(kind, programs, data.path()).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let at_rest = server.rss_kib();
        let cpu_before = server.cpu_seconds();
        let own_cpu_before = cores::process_cpu_seconds();
        let crowd = match Crowd::open(
            Dialect {
                kind,
                parley_room_ids,
            },
            server.addr,
            seats,
            512,
        )
        .await
        {
            Ok(crowd) => crowd,
            Err(e) => {
                println!(
                    "{}: FAILED to open {} sockets: {e}",
                    kind.label(),
                    sizes.sockets
                );
                clean = false;
                continue;
            }
        };
        let connect_cpu = server.cpu_seconds() - cpu_before;
        // Near 100 % the connect rate is the generator's, not the server's.
        let generator_load = (cores::process_cpu_seconds() - own_cpu_before) / crowd.connect_time.as_secs_f64();
        let server_load = connect_cpu / crowd.connect_time.as_secs_f64();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let idle_kib = server.rss_kib();
        clean &= server.is_running();
        println!(
            "| {} | {} | {:.2} s | {:.0} | {:.0} µs | {:.1} KiB | {:.1} MiB | server {:.0}%, generator {:.0}% of a core |",
            kind.label(),
            crowd.len(),
            crowd.connect_time.as_secs_f64(),
            crowd.len() as f64 / crowd.connect_time.as_secs_f64(),
            connect_cpu * 1e6 / crowd.len() as f64,
            idle_kib.saturating_sub(at_rest) as f64 / crowd.len() as f64,
            idle_kib as f64 / 1024.0,
            server_load * 100.0,
            generator_load * 100.0,
        );
    }
    clean
}

/// Times pages of history over HTTP (session check included) in a room of
/// `history_messages` messages: the newest page, then pages at random depths.
async fn history(args: &Args, programs: &Programs) -> bool {
    let data = tempfile::tempdir().expect("temporary directory");
    let (seats, room_ids) = seed::parley(&seed::sqlite_url(data.path()), &[0], 1).await;
    let seeding = Instant::now();
    seed::history(data.path(), room_ids[0], 1, args.history_messages).await;
    println!(
        "stored {} messages in {:.1?}",
        args.history_messages,
        seeding.elapsed()
    );
    let server = Server::start(Kind::Parley, programs, data.path()).await;
    let client = reqwest::Client::new();
    let cookie = seats[0].cookie.clone().expect("Parley seats have sessions");
    let mut latency = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let mut pages_ok = true;
    for n in 0..2_000u64 {
        // A cheap spread of depths over the whole history.
        let before = (n.wrapping_mul(2_654_435_761) % args.history_messages.max(1)) + 1;
        let query = if n % 4 == 0 {
            String::new()
        } else {
            format!("?before={before}")
        };
        let url = format!(
            "http://{}/api/rooms/{}/messages{query}",
            server.addr, room_ids[0]
        );
        let started = Instant::now();
        let response = client
            .get(&url)
            .header("cookie", &cookie)
            .send()
            .await
            .expect("request");
        let ok = response.status().is_success();
        let body = response.bytes().await.expect("body");
        let _ = latency.record(started.elapsed().as_micros() as u64);
        pages_ok &= ok && body.len() > 100;
    }
    let at = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "history page over HTTP, {} messages stored: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} pages{})",
        args.history_messages,
        at(0.5),
        at(0.99),
        latency.max() as f64 / 1000.0,
        latency.len(),
        if pages_ok { "" } else { ", SOME FAILED" }
    );
    pages_ok
}

fn print_phase(kind: Kind, outcome: &PhaseOutcome) {
    let [p50, p90, p99, p999, max] = outcome.latency_ms;
    println!(
        "{}: {:.0} msg/s → {:.0} deliveries/s; server {:.2} µs/delivery ({:.2} s CPU), generator {:.0}% of its core; \
         latency ms p50 {p50:.2} p90 {p90:.2} p99 {p99:.2} p99.9 {p999:.2} max {max:.2}; own p50 {:.2} p99 {:.2}; \
         received {}/{} lost {} duplicated {} out of order {} closed {}; RSS {:.1} MiB",
        kind.label(),
        outcome.rate,
        outcome.deliveries_per_second(),
        outcome.cpu_us_per_delivery(),
        outcome.server_cpu_seconds,
        outcome.generator_cpu_seconds * 100.0 / outcome.seconds,
        outcome.own_latency_ms[0],
        outcome.own_latency_ms[2],
        outcome.received,
        outcome.expected,
        outcome.lost(),
        outcome.duplicated,
        outcome.out_of_order,
        outcome.closed,
        outcome.server_rss_kib as f64 / 1024.0,
    );
}

/// Measures and prints the two write floors for this shape: one socket written in a
/// tight loop, and the shape's own sockets, rooms and rate (for at most 4 s).
fn write_floors(args: &Args, sizes: Sizes) -> [f64; 2] {
    let bytes = args.text_bytes + 150;
    let tight = floor::loopback_write_floor_us(bytes, 200_000);
    let spread = floor::spread_write_floor_us(bytes, sizes.sockets, sizes.rooms, sizes.rate, sizes.seconds.min(4.0));
    println!(
        "loopback write floor: {tight:.2} µs per {bytes}-byte write to one socket, {spread:.2} µs spread over {} sockets in bursts",
        sizes.sockets
    );
    [tight, spread]
}

/// The table row per server, with Parley's CPU per delivery as a ratio to the others.
fn print_ratios(results: &[(Kind, PhaseOutcome)], [tight_floor, spread_floor]: [f64; 2]) {
    let cpu = |kind: Kind| {
        results
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, o)| o.cpu_us_per_delivery())
    };
    println!(
        "| server | µs CPU/delivery | Parley ÷ this | p50 ms | p99 ms | p99.9 ms | max ms | lost/dup/reordered |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (label, floor_us) in [("loopback write floor, one socket", tight_floor), ("loopback write floor, spread", spread_floor)] {
        println!(
            "| {label} | {floor_us:.2} | {} | | | | | |",
            cpu(Kind::Parley).map_or("".into(), |p| format!("{:.2}", p / floor_us))
        );
    }
    for (kind, outcome) in results {
        let ratio = cpu(Kind::Parley).map_or(String::new(), |p| {
            format!("{:.2}", p / outcome.cpu_us_per_delivery())
        });
        let [p50, _, p99, p999, max] = outcome.latency_ms;
        println!(
            "| {} | {:.2} | {ratio} | {p50:.2} | {p99:.2} | {p999:.2} | {max:.2} | {}/{}/{} |",
            kind.label(),
            outcome.cpu_us_per_delivery(),
            outcome.lost(),
            outcome.duplicated,
            outcome.out_of_order
        );
    }
}

/// How many files this process may open (after [`raise_open_file_limit`]).
pub fn open_file_limit() -> usize {
    // SAFETY: getrlimit writes one rlimit we own.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur as usize
        } else {
            1024
        }
    }
}

/// Thousands of sockets need thousands of descriptors, here and in the servers (which
/// inherit the limit).
fn raise_open_file_limit() {
    // SAFETY: getrlimit/setrlimit read and write one rlimit we own.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
