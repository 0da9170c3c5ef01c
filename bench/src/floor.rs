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
