//! The real server binary as a child process: for killing it without warning, and for
//! measuring its memory on its own.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

/// Sends a child process a signal (`"-STOP"`, `"-CONT"`, `"-TERM"`) with `kill`.
pub fn send_signal(child: &Child, signal: &str) {
    let sent = Command::new("kill").args([signal, &child.id().to_string()]).status().unwrap();
    assert!(sent.success(), "kill {signal}");
}

/// The real server binary, so it can be killed without warning.
pub struct ServerProcess {
    child: Child,
    pub addr: std::net::SocketAddr,
}

impl ServerProcess {
    /// Starts the binary on a free port with its data in `data_dir`, the default
    /// settings, and `env` on top.
    pub async fn start(data_dir: &std::path::Path, env: &[(&str, &str)]) -> Self {
        Self::start_logging_to(data_dir, env, None).await
    }

    /// As [`ServerProcess::start`], with what the server logs written to `log` (or to
    /// the test's own output).
    pub async fn start_logging_to(data_dir: &std::path::Path, env: &[(&str, &str)], log: Option<&std::path::Path>) -> Self {
        let port = port_outside_the_ephemeral_range();
        let stderr = match log {
            Some(path) => Stdio::from(std::fs::File::create(path).unwrap()),
            None => Stdio::inherit(),
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
            .stderr(stderr)
            .spawn()
            .expect("server binary starts");
        let mut process = ServerProcess { child, addr };
        for _ in 0..200 {
            if let Ok(Some(status)) = process.child.try_wait() {
                panic!("server exited at start: {status}");
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return process;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let _ = process.child.kill();
        panic!("server did not start listening on {addr}");
    }

    pub fn kill_hard(mut self) {
        // `Child::kill` is SIGKILL on Unix: no shutdown code runs at all.
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Sends SIGTERM, as a service manager stopping it would.
    pub fn terminate(&self) {
        self.signal("-TERM");
    }

    /// Freezes it (SIGSTOP), as a long stall of its machine would: it answers nothing
    /// and sends nothing until [`ServerProcess::resume`].
    #[allow(dead_code)]
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    #[allow(dead_code)]
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        send_signal(&self.child, signal);
    }

    /// Waits for the process to exit on its own; its exit status.
    pub async fn exited(mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(tokio::time::Instant::now() < deadline, "the server did not exit within {within:?}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl ServerProcess {
    /// Registers an account through the site's form, as a person would (so it costs a
    /// real password hash); returns its session cookie.
    pub async fn register(&self, username: &str, password: &str) -> String {
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let response = client
            .post(format!("http://{}/api/register", self.addr))
            .form(&[("username", username), ("display_name", ""), ("password", password), ("next", "/")])
            .send()
            .await
            .unwrap();
        session_cookie(&response).unwrap_or_else(|| panic!("registering {username}: {}", response.status()))
    }

    /// The most memory the process has held (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    /// The memory the process holds now (VmRSS), in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    /// CPU time the process has used, user and system, in seconds. (`/proc` counts in
    /// ticks of 1/100 s on Linux, whatever the kernel's own tick rate.)
    pub fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        // Fields after the command name (which may hold spaces) are separated by spaces.
        let after_name = stat.rsplit_once(") ").map(|(_, rest)| rest).expect("/proc stat format");
        let fields: Vec<&str> = after_name.split(' ').collect();
        // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        ticks as f64 / 100.0
    }

    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc status"))
    }
}

impl Drop for ServerProcess {
    /// A failing test must not leave a server running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}


/// A free port below Linux's ephemeral range (32768 and up), where the in-process test
/// servers (bound to port 0) never land: so the child cannot lose its port to one of
/// them between this check and its own bind, and the readiness probe cannot reach the
/// wrong server.
fn port_outside_the_ephemeral_range() -> u16 {
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let mut candidate = 20_000 + (seed % 10_000) as u16 + (std::process::id() % 2_000) as u16;
    loop {
        if std::net::TcpListener::bind(("127.0.0.1", candidate)).is_ok() {
            return candidate;
        }
        candidate = if candidate >= 31_999 { 20_000 } else { candidate + 1 };
    }
}

/// The `parley_session=…` pair from a response's `Set-Cookie`.
pub fn session_cookie(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find(|value| value.starts_with("parley_session=") && !value.starts_with("parley_session=;"))
        .map(|value| value.split(';').next().unwrap().to_string())
}
