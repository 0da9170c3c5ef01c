//! Room fan-out latency and server memory, measured against the release server binary
//! over real sockets, first with every client reading, then with some clients that
//! stop reading. It checks the targets in `docs/benchmarks.md` and exits non-zero when
//! one is missed.
//!
//! `cargo bench -p server --bench fanout` (see `docs/benchmarks.md` for the knobs).

#[allow(dead_code)]
#[path = "../tests/support/process.rs"]
mod process;

use std::{
    collections::HashMap,
    net::SocketAddr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use app::protocol::{ClientMsg, ServerMsg};
use futures::{stream::SplitStream, SinkExt, StreamExt};
use process::ServerProcess;
use tokio::{net::TcpStream, sync::mpsc, time::Instant};
use tokio_tungstenite::{
    tungstenite::{client::IntoClientRequest, http::HeaderValue, Message},
    WebSocketStream,
};

type Socket = WebSocketStream<TcpStream>;

/// Every benchmark account's password.
const PASSWORD: &str = "benchmark password";

/// The close code for a client whose outbound queue overflowed.
const CLOSE_SLOW_CONSUMER: u16 = 4008;

/// Settings, each overridable by an environment variable of the same name.
struct Settings {
    /// Reading sockets in the room.
    sockets: usize,
    /// Users those sockets belong to (a user's tabs count once in presence).
    users: usize,
    /// Messages posted per phase.
    messages: usize,
    /// Messages posted per second.
    rate: f64,
    /// Bytes of text per message.
    text_bytes: usize,
    /// Sockets that stop reading in the second phase.
    stalled: usize,
}

impl Settings {
    fn from_env() -> Self {
        fn read<T: std::str::FromStr>(name: &str, default: T) -> T {
            std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
        }
        Settings {
            sockets: read("BENCH_SOCKETS", 500),
            users: read("BENCH_USERS", 25),
            // Enough that a stalled socket's backlog outgrows its queue (1,024 frames)
            // and kernel buffer during the second phase.
            messages: read("BENCH_MESSAGES", 2_500),
            rate: read("BENCH_RATE", 100.0),
            text_bytes: read("BENCH_TEXT_BYTES", 300),
            stalled: read("BENCH_STALLED", 10),
        }
    }
}

/// What one reading socket saw in one phase.
struct PhaseReport {
    phase: u32,
    latencies_us: Vec<u64>,
    /// Whether the phase's messages arrived once each and in sequence order.
    in_order: bool,
}

fn unix_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64
}

#[tokio::main]
async fn main() {
    let settings = Settings::from_env();
    let data_dir = tempfile::tempdir().unwrap();
    let unlimited = "1000000";
    let server = ServerProcess::start(
        data_dir.path(),
        &[
            ("PARLEY_LIMITS_SOCKETS_PER_USER", unlimited),
            ("PARLEY_LIMITS_SOCKETS_PER_IP", unlimited),
            ("PARLEY_LIMITS_HTTP_BURST", unlimited),
            ("PARLEY_LIMITS_REGISTRATIONS_PER_HOUR", unlimited),
            ("PARLEY_LIMITS_MESSAGES_BURST", unlimited),
            ("PARLEY_LIMITS_MESSAGES_PER_SECOND", unlimited),
            ("PARLEY_LIMITS_FRAMES_BURST", unlimited),
            ("PARLEY_LIMITS_FRAMES_PER_SECOND", unlimited),
            // Stalled sockets do not answer pings; only their queue may close them here.
            ("PARLEY_LIMITS_HEARTBEAT_TIMEOUT_SECS", "3600"),
        ],
    )
    .await;
    let addr = server.addr;
    println!(
        "fan-out benchmark: {} reading sockets ({} users), {} messages of {} bytes at {}/s per phase, {} stalled sockets",
        settings.sockets, settings.users, settings.messages, settings.text_bytes, settings.rate, settings.stalled
    );

    let mut cookies = Vec::new();
    for n in 0..settings.users.max(1) {
        cookies.push(server.register(&format!("reader{n}"), PASSWORD).await);
    }
    let rss_before = server.rss_kib();
    let (report_tx, mut reports) = mpsc::unbounded_channel();
    let mut room_id = None;
    for n in 0..settings.sockets {
        let (socket, general) = connect(addr, &cookies[n % cookies.len()], None).await;
        room_id = Some(general);
        let (_sink, stream) = socket.split();
        tokio::spawn(read_phases(stream, report_tx.clone()));
    }
    drop(report_tx);
    let room_id = room_id.expect("at least one socket");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_connected = server.rss_kib();
    let per_socket_kib = rss_connected.saturating_sub(rss_before) as f64 / settings.sockets.max(1) as f64;

    let sender_cookie = server.register("sender", PASSWORD).await;
    let (sender, _) = connect(addr, &sender_cookie, None).await;
    let (mut sender_sink, mut sender_stream) = sender.split();
    // Acknowledgements are read (and dropped) so the sender is never a slow consumer.
    tokio::spawn(async move { while sender_stream.next().await.is_some() {} });

    let mut results = Vec::new();
    let mut stalled = Vec::new();
    for phase in 0..2u32 {
        if phase == 1 {
            let cookie = server.register("stalled", PASSWORD).await;
            for _ in 0..settings.stalled {
                // A small receive buffer, so the kernel soaks up little and the
                // server's own queue is what fills.
                stalled.push(connect(addr, &cookie, Some(4 * 1024)).await.0);
            }
        }
        let cpu_before = server.cpu_seconds();
        let padding = "x".repeat(settings.text_bytes.saturating_sub(40));
        let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / settings.rate));
        for n in 0..settings.messages {
            ticks.tick().await;
            let text = format!("bench {phase} {} {padding}", unix_micros());
            let client_id = format!("p{phase}-{n}");
            let frame = ClientMsg::Send { id: n as u64, room_id, client_id, text };
            sender_sink.send(Message::text(serde_json::to_string(&frame).unwrap())).await.unwrap();
        }
        let end = ClientMsg::Send { id: 0, room_id, client_id: format!("end-{phase}"), text: format!("end {phase}") };
        sender_sink.send(Message::text(serde_json::to_string(&end).unwrap())).await.unwrap();

        let mut latencies = Vec::new();
        let (mut complete, mut reporting) = (0, 0);
        while reporting < settings.sockets {
            let report = tokio::time::timeout(Duration::from_secs(60), reports.recv())
                .await
                .expect("every reader finishes the phase within a minute")
                .expect("readers alive");
            assert_eq!(report.phase, phase);
            reporting += 1;
            if report.in_order && report.latencies_us.len() == settings.messages {
                complete += 1;
            }
            latencies.extend(report.latencies_us);
        }
        latencies.sort_unstable();
        let cpu_us_per_delivery = (server.cpu_seconds() - cpu_before) * 1e6 / latencies.len().max(1) as f64;
        results.push((complete, latencies, cpu_us_per_delivery));
    }
    let mut stalled_closed = 0;
    for socket in stalled {
        // With heartbeats out of the way, only the slow-consumer rule closes these: a
        // 4008 frame if it got through, a hang-up if it could not (nobody was reading).
        if matches!(close_code_within(socket, Duration::from_secs(15)).await, Some(CLOSE_SLOW_CONSUMER | 0)) {
            stalled_closed += 1;
        }
    }
    let peak_kib = server.peak_rss_kib();

    let expected = settings.sockets * settings.messages;
    println!(
        "{:<28} {:>16} {:>9} {:>9} {:>9} {:>9} {:>14}",
        "phase", "received", "p50 ms", "p95 ms", "p99 ms", "max ms", "server µs/dlv"
    );
    for (phase, (complete, latencies, cpu_us)) in results.iter().enumerate() {
        let name = if phase == 0 { "all sockets reading".to_string() } else { format!("{} sockets not reading", settings.stalled) };
        println!(
            "{:<28} {:>16} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>14.2}",
            name,
            format!("{}/{expected}", latencies.len()),
            percentile_ms(latencies, 0.50),
            percentile_ms(latencies, 0.95),
            percentile_ms(latencies, 0.99),
            percentile_ms(latencies, 1.0),
            cpu_us,
        );
        if *complete != settings.sockets {
            println!("  only {complete} of {} sockets got every message once, in order", settings.sockets);
        }
    }
    println!("stalled sockets disconnected as slow consumers: {stalled_closed}/{}", settings.stalled);
    println!(
        "server memory: {:.1} MiB before sockets, {:.1} MiB with {} sockets ({per_socket_kib:.1} KiB each), peak {:.1} MiB",
        rss_before as f64 / 1024.0,
        rss_connected as f64 / 1024.0,
        settings.sockets,
        peak_kib as f64 / 1024.0
    );

    let (base_p99, stalled_p99) = (percentile_ms(&results[0].1, 0.99), percentile_ms(&results[1].1, 0.99));
    let targets = [
        ("every reading socket got every message once, in order", results.iter().all(|(complete, ..)| *complete == settings.sockets)),
        ("every stalled socket was disconnected as a slow consumer", stalled_closed == settings.stalled),
        ("p99 with stalled sockets within 1.5x + 5 ms of the baseline", stalled_p99 <= base_p99 * 1.5 + 5.0),
        ("baseline p99 under 50 ms", base_p99 < 50.0),
        ("server peak memory under 150 MiB", peak_kib < 150 * 1024),
    ];
    let mut all_met = true;
    for (target, met) in targets {
        println!("{} {target}", if met { "met:   " } else { "MISSED:" });
        all_met &= met;
    }
    // `exit` skips destructors: stop the server first.
    drop(server);
    if !all_met {
        std::process::exit(1);
    }
}

fn percentile_ms(sorted_us: &[u64], fraction: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted_us.len() as f64 * fraction).ceil() as usize).clamp(1, sorted_us.len()) - 1;
    sorted_us[index] as f64 / 1000.0
}

/// Opens a socket, reads the hello and returns the `general` room's id.
async fn connect(addr: SocketAddr, cookie: &str, receive_buffer: Option<u32>) -> (Socket, i64) {
    let tcp = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(bytes) = receive_buffer {
        tcp.set_recv_buffer_size(bytes).unwrap();
    }
    let stream = tcp.connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let mut request = format!("ws://{addr}{}", app::protocol::socket_path(false)).into_client_request().unwrap();
    request.headers_mut().insert("cookie", HeaderValue::from_str(cookie).unwrap());
    let (mut socket, _) = tokio_tungstenite::client_async(request, stream).await.expect("handshake");
    loop {
        let Some(Ok(Message::Text(text))) = socket.next().await else { panic!("socket closed before the hello") };
        if let Ok(ServerMsg::Hello { rooms, .. }) = serde_json::from_str(&text) {
            let general = rooms.iter().find(|room| room.name == "general").expect("in general").id;
            return (socket, general);
        }
    }
}

/// Reads benchmark messages, reporting each phase's latencies when its end marker
/// arrives.
async fn read_phases(mut stream: SplitStream<Socket>, reports: mpsc::UnboundedSender<PhaseReport>) {
    let mut current: HashMap<u32, (Vec<u64>, i64, bool)> = HashMap::new();
    while let Some(Ok(frame)) = stream.next().await {
        let Message::Text(text) = frame else { continue };
        let Ok(ServerMsg::Message { message }) = serde_json::from_str::<ServerMsg>(&text) else { continue };
        let mut words = message.text.split(' ');
        match (words.next(), words.next().and_then(|p| p.parse::<u32>().ok()), words.next()) {
            (Some("bench"), Some(phase), Some(sent_at)) => {
                let latency = unix_micros().saturating_sub(sent_at.parse().unwrap_or(u64::MAX));
                let (latencies, last_seq, in_order) = current.entry(phase).or_insert((Vec::new(), 0, true));
                *in_order &= message.seq > *last_seq;
                *last_seq = message.seq;
                latencies.push(latency);
            }
            (Some("end"), Some(phase), None) => {
                let (latencies_us, _, in_order) = current.remove(&phase).unwrap_or((Vec::new(), 0, true));
                if reports.send(PhaseReport { phase, latencies_us, in_order }).is_err() {
                    return;
                }
            }
            _ => {}
        }
    }
}

/// How the server ended a socket within `limit`, reading whatever it had buffered
/// first: `Some(code)` for a close frame (0 without a code or for a bare hang-up),
/// `None` if it is still open.
async fn close_code_within(mut socket: Socket, limit: Duration) -> Option<u16> {
    let deadline = Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Err(_) => return None,
            Ok(Some(Ok(Message::Close(frame)))) => return Some(frame.map_or(0, |frame| u16::from(frame.code))),
            Ok(None | Some(Err(_))) => return Some(0),
            Ok(Some(Ok(_))) => continue,
        }
    }
}
