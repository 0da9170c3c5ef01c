//! The real server binary as a child process: for killing it without warning, and for
//! measuring its memory on its own.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

/// The real server binary, so it can be killed without warning.
pub struct ServerProcess {
    child: Child,
    pub addr: std::net::SocketAddr,
}

impl ServerProcess {
    /// Starts the binary on a free port with its data in `data_dir`, the default
    /// settings, and `env` on top.
    pub async fn start(data_dir: &std::path::Path, env: &[(&str, &str)]) -> Self {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_server"))
            .current_dir(data_dir)
            .env("PARLEY_CONFIG", data_dir.join("no-such-file.toml"))
            .env("LEPTOS_SITE_ADDR", addr.to_string())
            .env("PARLEY_CHAT_DATA_DIR", data_dir)
            .env("PARLEY_CHAT_DATABASE_URL", "")
            .env_remove("DATABASE_URL")
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("server binary starts");
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return ServerProcess { child, addr };
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("server did not start listening on {addr}");
    }

    pub fn kill_hard(mut self) {
        // `Child::kill` is SIGKILL on Unix: no shutdown code runs at all.
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl ServerProcess {
    /// The most memory the process has held (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc status")
    }
}

impl Drop for ServerProcess {
    /// A failing test must not leave a server running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

