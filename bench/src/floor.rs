//! The loopback write floor: the CPU one small `write` to a loopback TCP socket costs,
//! which is the least any server must spend per delivery. Measured with the writer on
//! the server's core and a reader draining on the generator's.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
};

use crate::cores::{pin_current_thread, server_and_generator_cores, thread_cpu_seconds};

/// CPU µs per `write` of `bytes` bytes, over `writes` writes.
pub fn loopback_write_floor_us(bytes: usize, writes: usize) -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().unwrap();
    let reader = std::thread::spawn(move || {
        pin_current_thread(server_and_generator_cores().map(|(_, generator)| generator));
        let (mut stream, _) = listener.accept().expect("accept");
        let mut buffer = vec![0u8; 1 << 16];
        while stream.read(&mut buffer).is_ok_and(|n| n > 0) {}
    });
    let writer = std::thread::spawn(move || {
        pin_current_thread(server_and_generator_cores().map(|(server, _)| server));
        let mut stream = TcpStream::connect(addr).expect("connect loopback");
        stream.set_nodelay(true).unwrap();
        let frame = vec![b'x'; bytes];
        let before = thread_cpu_seconds();
        for _ in 0..writes {
            stream.write_all(&frame).expect("write");
        }
        (thread_cpu_seconds() - before) * 1e6 / writes as f64
    });
    let per_write = writer.join().expect("writer thread");
    reader.join().expect("reader thread");
    per_write
}

/// A reference in the fan-out's own shape: CPU µs per `write` when bursts of writes go
/// to `sockets` loopback sockets, one room's share of them per burst (the sockets
/// whose number is the burst's room modulo `rooms`), `bursts_per_second` bursts for
/// `seconds`, the writer asleep between bursts. The readers, one thread on the
/// generator's core, sleep whenever nothing is waiting, so a write often has to wake
/// that thread on the other core, which the tight loop of [`loopback_write_floor_us`]
/// almost never does. Not a strict lower bound: the real generator, busier, sleeps
/// less often, so fewer of a server's writes pay for a wake-up.
pub fn spread_write_floor_us(bytes: usize, sockets: usize, rooms: usize, bursts_per_second: f64, seconds: f64) -> f64 {
    let (sockets, rooms) = (sockets.max(1), rooms.clamp(1, sockets.max(1)));
    let bursts_per_second = bursts_per_second.max(1.0);
    // At least one burst per room, so every socket is written to.
    let bursts = ((bursts_per_second * seconds) as usize).max(rooms);
    let (ready, readers_ready) = std::sync::mpsc::channel();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().unwrap();
    let readers = std::thread::spawn(move || {
        pin_current_thread(server_and_generator_cores().map(|(_, generator)| generator));
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            listener.set_nonblocking(true).unwrap();
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let mut draining = Vec::with_capacity(sockets);
            for _ in 0..sockets {
                let (mut stream, _) = listener.accept().await.expect("accept");
                draining.push(tokio::spawn(async move {
                    use tokio::io::AsyncReadExt;
                    let mut buffer = vec![0u8; 4096];
                    while stream.read(&mut buffer).await.is_ok_and(|n| n > 0) {}
                }));
            }
            let _ = ready.send(());
            for reader in draining {
                let _ = reader.await;
            }
        });
    });
    let writer = std::thread::spawn(move || {
        pin_current_thread(server_and_generator_cores().map(|(server, _)| server));
        let mut streams: Vec<TcpStream> = (0..sockets)
            .map(|_| {
                let stream = TcpStream::connect(addr).expect("connect loopback");
                stream.set_nodelay(true).unwrap();
                stream
            })
            .collect();
        // Every reader is waiting before the clock starts.
        readers_ready.recv().expect("the readers accepted every socket");
        let frame = vec![b'x'; bytes];
        let every = std::time::Duration::from_secs_f64(1.0 / bursts_per_second);
        let start = std::time::Instant::now();
        let before = thread_cpu_seconds();
        let mut writes = 0;
        for burst in 0..bursts {
            if let Some(wait) = (start + every * burst as u32).checked_duration_since(std::time::Instant::now()) {
                std::thread::sleep(wait);
            }
            for stream in streams.iter_mut().skip(burst % rooms).step_by(rooms) {
                stream.write_all(&frame).expect("write");
                writes += 1;
            }
        }
        (thread_cpu_seconds() - before) * 1e6 / writes as f64
    });
    let per_write = writer.join().expect("writer thread");
    readers.join().expect("reader threads");
    per_write
}
