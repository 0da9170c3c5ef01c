//! Thousands of idle people in one room: how fast they can all connect at once (a
//! reconnect storm after a restart), and what each idle socket costs the server in
//! memory. Runs the release server binary in its own process; the accounts are made
//! straight in storage. Checks that every socket was greeted and none was closed, and
//! that presence settled on the right count; prints the figures for
//! `docs/benchmarks.md`.
//!
//! `cargo bench -p server --bench crowd` (knobs: `BENCH_PEOPLE`, default 10,000).

#[allow(dead_code)]
#[path = "../tests/support/process.rs"]
mod process;

#[allow(dead_code)]
#[path = "../tests/support/crowd.rs"]
mod crowd;

use std::time::{Duration, Instant};

use process::ServerProcess;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let people = setting("BENCH_PEOPLE", 10_000);
    let data = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", data.path().join("parley.db").display());
    let seeding = Instant::now();
    let cookies = crowd::seed_people(&url, people).await;
    println!("seeded {people} accounts in {:.1?}", seeding.elapsed());

    let settings = [("PARLEY_LIMITS_HEARTBEAT_TIMEOUT_SECS", "600"), ("PARLEY_LIMITS_HTTP_BURST", "100000")];
    let mut failures = Vec::new();
    for round in ["fresh server", "after a restart"] {
        let server = ServerProcess::start(data.path(), &settings).await;
        let at_rest_kib = server.rss_kib();
        let (members, took) = crowd::storm(server.addr, &cookies, Duration::from_secs(300)).await;
        let settled = Instant::now();
        let general = 1;
        while members.iter().any(|m| m.seen.lock().unwrap().online.get(&general) != Some(&(people as u32))) {
            if settled.elapsed() > Duration::from_secs(60) {
                failures.push(format!("{round}: presence never settled on {people}"));
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let settle = took + settled.elapsed();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let idle_kib = server.rss_kib();
        let frames: usize = members.iter().map(|m| m.seen.lock().unwrap().frames).sum();
        let closes = crowd::closes(&members);
        if !closes.is_empty() {
            failures.push(format!("{round}: sockets closed: {closes:?}"));
        }
        println!(
            "{round}: {people} sockets greeted in {took:.2?} ({:.0} connects/s), presence settled after {settle:.2?}; \
             {frames} frames to the crowd ({:.1} per socket)",
            people as f64 / took.as_secs_f64(),
            frames as f64 / people as f64,
        );
        println!(
            "{round}: server RSS {:.1} MiB at rest, {:.1} MiB with {people} idle sockets: {:.1} KiB per socket; peak {:.1} MiB",
            at_rest_kib as f64 / 1024.0,
            idle_kib as f64 / 1024.0,
            (idle_kib.saturating_sub(at_rest_kib)) as f64 / people as f64,
            server.peak_rss_kib() as f64 / 1024.0,
        );
        server.kill_hard();
        drop(members);
    }
    if !failures.is_empty() {
        for failure in &failures {
            eprintln!("FAILED: {failure}");
        }
        std::process::exit(1);
    }
}
