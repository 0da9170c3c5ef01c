//! A cluster on loopback: a `redis-server` of the caller's own and Parley nodes (the
//! real binary) sharing one database and that Redis.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use super::process::{send_signal, ServerProcess};

/// A `redis-server` of the test's own, with nothing saved to disk; killed when dropped.
pub struct RedisServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Self::spawn(port, dir.path());
        let redis = RedisServer { child, port, _dir: dir };
        redis.wait_until_answering().await;
        redis
    }

    fn spawn(port: u16, dir: &Path) -> Child {
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server is installed")
    }

    async fn wait_until_answering(&self) {
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("redis-server did not start on port {}", self.port);
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it: everything in it is gone, as after a crash.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Freezes it (SIGSTOP): what the nodes publish meanwhile waits in their
    /// connections, and reaches the others, each node's in its order, on
    /// [`RedisServer::resume`].
    #[allow(dead_code)]
    pub fn pause(&self) {
        send_signal(&self.child, "-STOP");
    }

    #[allow(dead_code)]
    pub fn resume(&self) {
        send_signal(&self.child, "-CONT");
    }

    /// Starts it again, empty, on the same port.
    pub async fn start_again(&mut self) {
        self.child = Self::spawn(self.port, self._dir.path());
        self.wait_until_answering().await;
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a node of the cluster: the server binary on the shared database and Redis,
/// with the message allowances raised for steady test traffic and `extra` on top.
pub async fn start_node(data: &Path, name: &str, database_url: &str, redis: &RedisServer, extra: &[(&str, &str)]) -> ServerProcess {
    let redis_url = redis.url();
    let dir = data.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let mut env = vec![
        ("PARLEY_CHAT_DATABASE_URL", database_url),
        ("PARLEY_CLUSTER_REDIS_URL", redis_url.as_str()),
        ("PARLEY_CLUSTER_NODE_NAME", name),
        ("PARLEY_LIMITS_MESSAGES_BURST", "100000"),
        ("PARLEY_LIMITS_FRAMES_BURST", "100000"),
    ];
    env.extend_from_slice(extra);
    ServerProcess::start(&dir, &env).await
}
