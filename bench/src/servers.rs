//! The servers under test, each a child process pinned to the server core, and what
//! the kernel says each one used: CPU time and resident memory, read from `/proc`.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::cores::server_and_generator_cores;

/// Which server a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Parley's release binary: authenticated sockets, every message stored first.
    Parley,
    /// Socket.IO 4 on Node.js, websocket transport, `socket.join` + `io.to(room).emit`.
    Socketio,
    /// A bare tokio/axum broadcast: no accounts, no storage.
    Bare,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Parley => "Parley",
            Kind::Socketio => "Socket.IO",
            Kind::Bare => "bare axum",
        }
    }
}

/// Where each server's program is.
#[derive(Debug, Clone)]
pub struct Programs {
    pub parley: PathBuf,
    pub bare: PathBuf,
    pub socketio_script: PathBuf,
}

impl Programs {
    /// The release builds beside this binary, and the Socket.IO script in the source
    /// tree.
    pub fn beside_this_binary(parley: Option<PathBuf>) -> Self {
        let here = std::env::current_exe().expect("own path");
        let dir = here.parent().expect("binary directory").to_path_buf();
        Programs {
            parley: parley.unwrap_or_else(|| dir.join("server")),
            bare: dir.join("bare-broadcast"),
            socketio_script: Path::new(env!("CARGO_MANIFEST_DIR")).join("socketio/server.js"),
        }
    }
}

/// A running server. Killed when dropped, so a failed run leaves nothing behind.
pub struct Server {
    pub addr: SocketAddr,
    child: Child,
}

/// Limits a benchmark must not trip over: it measures the delivery path, and the
/// generator opens thousands of sockets from a few addresses at full speed.
const PARLEY_UNLIMITED: &[&str] = &[
    "PARLEY_LIMITS_SOCKETS_PER_USER",
    "PARLEY_LIMITS_SOCKETS_PER_IP",
    "PARLEY_LIMITS_HTTP_BURST",
    "PARLEY_LIMITS_REGISTRATIONS_PER_HOUR",
    "PARLEY_LIMITS_MESSAGES_BURST",
    "PARLEY_LIMITS_MESSAGES_PER_SECOND",
    "PARLEY_LIMITS_FRAMES_BURST",
    "PARLEY_LIMITS_FRAMES_PER_SECOND",
];

impl Server {
    /// Starts `kind` on a free loopback port; Parley keeps its data in `data_dir`
    /// (already seeded with the run's accounts).
    pub async fn start(kind: Kind, programs: &Programs, data_dir: &Path) -> Server {
        Self::start_with(kind, programs, data_dir, &[]).await
    }

    /// Starts a Parley node of a cluster: its database is `database_url` (shared with
    /// the other nodes, already seeded) and Redis at `redis_url` carries its events to
    /// the others.
    pub async fn start_node(
        programs: &Programs,
        data_dir: &Path,
        name: &str,
        database_url: &str,
        redis_url: &str,
    ) -> Server {
        let cluster = [
            ("PARLEY_CHAT_DATABASE_URL", database_url),
            ("PARLEY_CLUSTER_REDIS_URL", redis_url),
            ("PARLEY_CLUSTER_NODE_NAME", name),
        ];
        Self::start_with(Kind::Parley, programs, data_dir, &cluster).await
    }

    async fn start_with(kind: Kind, programs: &Programs, data_dir: &Path, extra_env: &[(&str, &str)]) -> Server {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let program = match kind {
            Kind::Parley => programs.parley.as_os_str(),
            Kind::Socketio => "node".as_ref(),
            Kind::Bare => programs.bare.as_os_str(),
        };
        let mut command = match server_and_generator_cores() {
            Some((core, _)) => {
                let mut pinned = Command::new("taskset");
                pinned.args(["-c", &core.to_string()]).arg(program);
                pinned
            }
            None => Command::new(program),
        };
        command.stdout(Stdio::null()).stderr(Stdio::inherit());
        match kind {
            Kind::Parley => {
                command
                    .current_dir(data_dir)
                    .env("PARLEY_CONFIG", data_dir.join("no-such-file.toml"))
                    .env("LEPTOS_SITE_ADDR", addr.to_string())
                    .env("PARLEY_CHAT_DATA_DIR", data_dir)
                    .env("PARLEY_CHAT_DATABASE_URL", "")
                    .env_remove("DATABASE_URL")
                    .env("RUST_LOG", "warn")
                    // Idle sockets answer pings, but a busy generator may answer late.
                    .env("PARLEY_LIMITS_HEARTBEAT_TIMEOUT_SECS", "600");
                for name in PARLEY_UNLIMITED {
                    command.env(name, "100000000");
                }
                command.envs(extra_env.iter().copied());
            }
            Kind::Socketio => {
                command.arg(&programs.socketio_script).arg(port.to_string());
            }
            Kind::Bare => {
                command.arg(addr.to_string());
            }
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", kind.label()));
        let mut server = Server { addr, child };
        for _ in 0..400 {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("{} exited at start: {status}", kind.label());
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("{} did not start listening on {addr}", kind.label());
    }

    /// CPU time used so far, user and system, in seconds (`/proc` counts 1/100 s).
    pub fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .expect("server is running");
        // The fields after the command name (which may hold spaces).
        let after_name = stat
            .rsplit_once(") ")
            .map(|(_, rest)| rest)
            .expect("/proc stat format");
        let fields: Vec<&str> = after_name.split(' ').collect();
        // utime and stime: fields 14 and 15 of the line, 12 and 13 after the name.
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        ticks as f64 / 100.0
    }

    /// Resident memory now, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("server is running");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc status")
    }

    /// Whether it is still running (a crash fails the run).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free port below Linux's ephemeral range, so the generator's own outgoing sockets
/// never take it.
fn free_port() -> u16 {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let mut candidate = 20_000 + (seed % 10_000) as u16;
    loop {
        if std::net::TcpListener::bind(("127.0.0.1", candidate)).is_ok() {
            return candidate;
        }
        candidate = if candidate >= 31_999 {
            20_000
        } else {
            candidate + 1
        };
    }
}
