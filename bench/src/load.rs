//! A crowd of sockets in rooms, and phases of open-loop posting into those rooms.
//!
//! Every socket reads with a task of its own and checks, per sender, that message
//! numbers arrive once each and in order; latency runs from the moment the schedule
//! meant a message to be sent, so a generator or server that falls behind shows up as
//! latency rather than as a slower schedule (no coordinated omission).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::{SinkExt, StreamExt, stream};
use hdrhistogram::Histogram;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::{
    marker::Marker,
    servers::Server,
    targets::{Dialect, Seat, source_address},
};

/// The generator's clock: microseconds since the first reading.
pub fn now_us() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// What the readers have seen in the current phase, summed over all of them.
struct Tally {
    latency_us: Histogram<u64>,
    /// Latency of a sender's own message coming back to it (Parley: the `sent`
    /// acknowledgement, after the message is stored).
    own_latency_us: Histogram<u64>,
    duplicated: u64,
    out_of_order: u64,
}

impl Tally {
    fn new() -> Self {
        Tally {
            latency_us: Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds"),
            own_latency_us: Histogram::new_with_bounds(1, 120_000_000, 3)
                .expect("histogram bounds"),
            duplicated: 0,
            out_of_order: 0,
        }
    }
}

/// A socket that is not posting in this phase.
const NOT_SENDING: u32 = u32::MAX;

/// State shared by every reader.
struct Shared {
    tally: Mutex<Tally>,
    received: AtomicU64,
    closed: AtomicU64,
}

/// One reader's record of one sender: the next number it expects and which it has.
#[derive(Default)]
struct SenderTrack {
    next: u64,
    seen: Vec<u64>,
}

impl SenderTrack {
    /// Records `number`; returns (duplicate, out of order).
    fn note(&mut self, number: u64) -> (bool, bool) {
        let (word, bit) = ((number / 64) as usize, number % 64);
        if self.seen.len() <= word {
            self.seen.resize(word + 1, 0);
        }
        let duplicate = self.seen[word] & (1 << bit) != 0;
        self.seen[word] |= 1 << bit;
        let out_of_order = number != self.next;
        self.next = self.next.max(number + 1);
        (duplicate, out_of_order)
    }
}

/// Sockets opened, each with its reading task and a channel to its writing task.
pub struct Crowd {
    dialect: Dialect,
    seats: Vec<Seat>,
    writers: Vec<mpsc::UnboundedSender<String>>,
    /// Each socket's sender id in the current phase (`NOT_SENDING` when it only reads),
    /// so its reader can tell its own messages coming back.
    own_sender: Vec<Arc<AtomicU32>>,
    shared: Arc<Shared>,
    /// Sender ids are never reused, so each phase's numbering starts fresh.
    next_sender: u32,
    /// How long opening every socket took.
    pub connect_time: Duration,
}

/// What one phase measured.
#[derive(Debug, Clone)]
pub struct PhaseOutcome {
    pub rate: f64,
    pub sent: u64,
    pub expected: u64,
    pub received: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub closed: u64,
    /// Percentiles of delivery latency, ms: p50, p90, p99, p99.9, max.
    pub latency_ms: [f64; 5],
    /// The same for a sender's own message coming back (stored and acknowledged).
    pub own_latency_ms: [f64; 5],
    pub seconds: f64,
    pub server_cpu_seconds: f64,
    pub generator_cpu_seconds: f64,
    pub server_rss_kib: u64,
}

impl PhaseOutcome {
    pub fn lost(&self) -> u64 {
        self.expected
            .saturating_sub(self.received - self.duplicated)
    }

    pub fn clean(&self) -> bool {
        self.lost() == 0 && self.duplicated == 0 && self.out_of_order == 0 && self.closed == 0
    }

    pub fn deliveries_per_second(&self) -> f64 {
        self.received as f64 / self.seconds
    }

    pub fn cpu_us_per_delivery(&self) -> f64 {
        self.server_cpu_seconds * 1e6 / self.received.max(1) as f64
    }

    pub fn p99_ms(&self) -> f64 {
        self.latency_ms[2]
    }
}

impl Crowd {
    /// Opens a socket per seat, `concurrency` handshakes at a time.
    pub async fn open(
        dialect: Dialect,
        addr: std::net::SocketAddr,
        seats: Vec<Seat>,
        concurrency: usize,
    ) -> Result<Crowd, String> {
        let shared = Arc::new(Shared {
            tally: Mutex::new(Tally::new()),
            received: AtomicU64::new(0),
            closed: AtomicU64::new(0),
        });
        let started = Instant::now();
        let opened: Vec<Result<_, String>> = stream::iter(seats.iter().enumerate())
            .map(|(n, seat)| {
                let dialect = &dialect;
                async move { dialect.open(addr, source_address(n), seat).await }
            })
            .buffered(concurrency.max(1))
            .collect()
            .await;
        let connect_time = started.elapsed();
        let mut writers = Vec::with_capacity(seats.len());
        let mut own_sender = Vec::with_capacity(seats.len());
        for socket in opened {
            let (mut sink, mut frames) = socket?.split();
            let (writer, mut outgoing) = mpsc::unbounded_channel::<String>();
            tokio::spawn(async move {
                while let Some(frame) = outgoing.recv().await {
                    if sink.feed(Message::text(frame)).await.is_err() {
                        return;
                    }
                    while let Ok(frame) = outgoing.try_recv() {
                        if sink.feed(Message::text(frame)).await.is_err() {
                            return;
                        }
                    }
                    if sink.flush().await.is_err() {
                        return;
                    }
                }
            });
            let (shared, dialect, answers) = (shared.clone(), dialect.clone(), writer.clone());
            let own = Arc::new(AtomicU32::new(NOT_SENDING));
            own_sender.push(own.clone());
            tokio::spawn(async move {
                let mut senders: HashMap<u32, SenderTrack> = HashMap::new();
                while let Some(frame) = frames.next().await {
                    let text = match frame {
                        Ok(Message::Text(text)) => text,
                        Ok(Message::Close(_)) | Err(_) => break,
                        Ok(_) => continue,
                    };
                    if let Some(answer) = dialect.answer(&text) {
                        let _ = answers.send(answer.to_string());
                        continue;
                    }
                    let Some(marker) = Marker::find(&text) else {
                        continue;
                    };
                    let latency = now_us().saturating_sub(marker.intended_us).max(1);
                    let (duplicate, out_of_order) = senders
                        .entry(marker.sender)
                        .or_default()
                        .note(marker.number);
                    shared.received.fetch_add(1, Ordering::Relaxed);
                    let mut tally = shared.tally.lock().unwrap();
                    let _ = tally.latency_us.record(latency);
                    if own.load(Ordering::Relaxed) == marker.sender {
                        let _ = tally.own_latency_us.record(latency);
                    }
                    tally.duplicated += u64::from(duplicate);
                    tally.out_of_order += u64::from(out_of_order);
                }
                shared.closed.fetch_add(1, Ordering::Relaxed);
            });
            writers.push(writer);
        }
        Ok(Crowd {
            dialect,
            seats,
            writers,
            own_sender,
            shared,
            next_sender: 0,
            connect_time,
        })
    }

    pub fn len(&self) -> usize {
        self.seats.len()
    }

    /// Sockets the server has closed, over the crowd's whole life.
    pub fn closed(&self) -> u64 {
        self.shared.closed.load(Ordering::Relaxed)
    }

    /// Benchmark messages received, over the crowd's whole life.
    pub fn received(&self) -> u64 {
        self.shared.received.load(Ordering::Relaxed)
    }

    /// Copies of a message a socket had already received, since the last phase began
    /// (over the crowd's whole life when it runs none).
    pub fn duplicated(&self) -> u64 {
        self.shared.tally.lock().unwrap().duplicated
    }

    /// Posts at `rate` messages/s in all for `seconds`, from `senders_per_room`
    /// sockets of each room, then waits for every delivery (or until none arrives for
    /// `drain`). Server CPU is counted from the first send to the last delivery.
    pub async fn phase(
        &mut self,
        server: &Server,
        rate: f64,
        seconds: f64,
        senders_per_room: usize,
        text_bytes: usize,
    ) -> PhaseOutcome {
        let rooms = self
            .seats
            .iter()
            .map(|seat| seat.room)
            .max()
            .map_or(0, |max| max + 1);
        let mut members = vec![Vec::new(); rooms];
        for (n, seat) in self.seats.iter().enumerate() {
            members[seat.room].push(n);
        }
        let senders: Vec<(usize, usize)> = members
            .iter()
            .enumerate()
            .flat_map(|(room, sockets)| {
                sockets
                    .iter()
                    .take(senders_per_room)
                    .map(move |&socket| (room, socket))
            })
            .collect();
        let per_sender_rate = rate / senders.len().max(1) as f64;
        let per_sender = (per_sender_rate * seconds).round().max(1.0) as u64;
        let period = Duration::from_secs_f64(1.0 / per_sender_rate);
        let expected: u64 = senders
            .iter()
            .map(|&(room, _)| per_sender * members[room].len() as u64)
            .sum();
        let padding = "x".repeat(text_bytes.saturating_sub(40));

        *self.shared.tally.lock().unwrap() = Tally::new();
        let received_before = self.shared.received.load(Ordering::Relaxed);
        let closed_before = self.shared.closed.load(Ordering::Relaxed);
        let cpu_before = server.cpu_seconds();
        let own_cpu_before = crate::cores::process_cpu_seconds();
        let start = tokio::time::Instant::now() + Duration::from_millis(50);
        let start_us = now_us() + 50_000;
        let mut posting = Vec::new();
        for (index, &(room, socket)) in senders.iter().enumerate() {
            let sender = self.next_sender;
            self.next_sender += 1;
            let writer = self.writers[socket].clone();
            self.own_sender[socket].store(sender, Ordering::Relaxed);
            let dialect = self.dialect.clone();
            let padding = padding.clone();
            // Senders are spread over the period so the load is even, not in bursts.
            let offset = period.mul_f64(index as f64 / senders.len() as f64);
            posting.push(tokio::spawn(async move {
                for number in 0..per_sender {
                    let due = offset + period.mul_f64(number as f64);
                    tokio::time::sleep_until(start + due).await;
                    let marker = Marker {
                        sender,
                        number,
                        intended_us: start_us + due.as_micros() as u64,
                    };
                    if writer
                        .send(dialect.post(room, sender, number, marker.text(&padding)))
                        .is_err()
                    {
                        return;
                    }
                }
            }));
        }
        for task in posting {
            let _ = task.await;
        }
        // Every delivery, or no progress for a while.
        let mut last = (self.shared.received.load(Ordering::Relaxed), Instant::now());
        let drain = Duration::from_secs(5);
        let done_at = loop {
            let received = self.shared.received.load(Ordering::Relaxed) - received_before;
            if received >= expected {
                break Instant::now();
            }
            let now_total = self.shared.received.load(Ordering::Relaxed);
            if now_total != last.0 {
                last = (now_total, Instant::now());
            } else if last.1.elapsed() > drain {
                break last.1;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let server_cpu_seconds = server.cpu_seconds() - cpu_before;
        let generator_cpu_seconds = crate::cores::process_cpu_seconds() - own_cpu_before;
        let elapsed = done_at.duration_since(start.into_std()).as_secs_f64();
        let tally = std::mem::replace(&mut *self.shared.tally.lock().unwrap(), Tally::new());
        self.own_sender
            .iter()
            .for_each(|own| own.store(NOT_SENDING, Ordering::Relaxed));
        PhaseOutcome {
            rate,
            sent: per_sender * senders.len() as u64,
            expected,
            received: self.shared.received.load(Ordering::Relaxed) - received_before,
            duplicated: tally.duplicated,
            out_of_order: tally.out_of_order,
            closed: self.shared.closed.load(Ordering::Relaxed) - closed_before,
            latency_ms: percentiles(&tally.latency_us),
            own_latency_ms: percentiles(&tally.own_latency_us),
            seconds: elapsed,
            server_cpu_seconds,
            generator_cpu_seconds,
            server_rss_kib: server.rss_kib(),
        }
    }
}

fn percentiles(histogram: &Histogram<u64>) -> [f64; 5] {
    if histogram.is_empty() {
        return [0.0; 5];
    }
    let at = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    [
        at(0.5),
        at(0.9),
        at(0.99),
        at(0.999),
        histogram.max() as f64 / 1000.0,
    ]
}
