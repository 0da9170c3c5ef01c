//! What an operator relies on: health checks, metrics that count what really happened
//! (read back through a real Prometheus, with the repository's own configuration,
//! alert rules and dashboard), a shutdown that loses nothing, and logs that never hold
//! secrets or people's messages.

mod support;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use app::protocol::{ClientMsg, ServerMsg};
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, http::HeaderValue};
use server::config::Config;
use support::{
    databases::TestDb,
    process::ServerProcess,
    server::{relaxed, session_cookie, TestServer, WsClient, PASSWORD},
};

/// The metrics recorder is one per process, shared by every server a test starts in
/// it: the tests here that start servers in-process take turns, so the counts one of
/// them reads are its own.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn with_metrics_listener() -> Config {
    let mut config = relaxed();
    config.metrics.addr = "127.0.0.1:0".into();
    config
}

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// `name{labels} value` lines of the Prometheus text format, by series.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The sum of every series of `name` whose labels include all of `labels`.
fn total(samples: &BTreeMap<String, f64>, name: &str, labels: &[&str]) -> f64 {
    samples
        .iter()
        .filter(|(series, _)| {
            let (series_name, rest) = series.split_once('{').unwrap_or((series.as_str(), ""));
            series_name == name && labels.iter().all(|label| rest.contains(label))
        })
        .map(|(_, value)| value)
        .sum()
}

async fn scrape(addr: SocketAddr) -> BTreeMap<String, f64> {
    let response = reqwest::get(format!("http://{addr}/metrics")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    samples(&response.text().await.unwrap())
}

/// Two people chat, one mistypes a password, one catches up: what the metrics must show.
/// Returns how many messages the catch-up brought, and the two sockets (still open).
async fn chat_traffic(server: &TestServer) -> (usize, [WsClient; 2]) {
    let (alice_cookie, bob_cookie) = (server.register("alice").await, server.register("bob").await);
    assert_eq!(server.try_login("alice", "not the password").await.status(), 401);
    let mut alice = server.connect(&alice_cookie).await;
    let mut bob = server.connect(&bob_cookie).await;
    let room_id = alice.general_room_id().await;
    const SENT: usize = 12;
    for n in 0..SENT {
        let reply = alice.request(|id| ClientMsg::Send { id, room_id, client_id: format!("m{n}"), text: format!("hello {n}") }).await;
        assert!(matches!(reply, ServerMsg::Sent { .. }));
    }
    for n in 0..SENT {
        bob.wait_for(|m| matches!(m, ServerMsg::Message { message } if message.client_id.as_deref() == Some(&format!("m{n}")))).await;
    }
    let caught_up = match bob.request(|id| ClientMsg::Catchup { id, room_id, after_seq: 0 }).await {
        ServerMsg::Catchup { messages, .. } => messages.len(),
        other => panic!("{other:?}"),
    };
    assert!(server.get(&format!("/api/rooms/{room_id}/messages"), Some(&bob_cookie)).await.status().is_success());
    (caught_up, [alice, bob])
}

/// People who send without waiting for each acknowledgement, all into one room: their
/// posts share commits (a room's lock is held only while a post joins the commit
/// queue, not through the commit), and still the room hears every message once, in
/// sequence order, and each sender is acknowledged in the order it sent. On both
/// databases.
#[tokio::test]
async fn posts_to_one_room_share_commits_and_keep_their_order() {
    let _turn = ONE_AT_A_TIME.lock().await;
    const SENDERS: usize = 4;
    const EACH: usize = 50;
    for db in [TestDb::sqlite().await, TestDb::postgres().await] {
        let server = TestServer::start_with(db, with_metrics_listener()).await;
        let mut reader = server.connect(&server.register("reader").await).await;
        let room_id = reader.general_room_id().await;
        let mut senders = Vec::new();
        for n in 0..SENDERS {
            senders.push(server.connect(&server.register(&format!("sender{n}")).await).await);
        }
        let before = scrape(server.metrics_addr().unwrap()).await;

        let acknowledged = futures::future::join_all(senders.iter_mut().enumerate().map(|(sender, client)| async move {
            for n in 0..EACH {
                let text = format!("Ótimo, ação {n} 🎉");
                client.send(&ClientMsg::Send { id: n as u64, room_id, client_id: format!("{sender}-{n}"), text }).await;
            }
            let mut acknowledged = Vec::new();
            while acknowledged.len() < EACH {
                match client.next().await {
                    ServerMsg::Sent { id, message } => acknowledged.push((id, message.seq)),
                    error @ ServerMsg::Error { .. } => panic!("refused: {error:?}"),
                    _ => {}
                }
            }
            acknowledged
        }))
        .await;
        for acks in &acknowledged {
            let ids: Vec<u64> = acks.iter().map(|(id, _)| *id).collect();
            assert_eq!(ids, (0..EACH as u64).collect::<Vec<_>>(), "acknowledged in the order sent");
            assert!(acks.windows(2).all(|pair| pair[0].1 < pair[1].1), "numbered in the order sent: {acks:?}");
        }

        let mut heard = Vec::new();
        while heard.len() < SENDERS * EACH {
            if let ServerMsg::Message { message } = reader.next().await {
                if message.client_id.is_some() {
                    heard.push(message.seq);
                }
            }
        }
        assert!(heard.windows(2).all(|pair| pair[1] == pair[0] + 1), "heard in sequence order, no gaps: {heard:?}");
        let mut numbered: Vec<i64> = acknowledged.iter().flatten().map(|(_, seq)| *seq).collect();
        numbered.sort_unstable();
        assert_eq!(numbered, heard, "the reader heard exactly what was acknowledged");

        let after = scrape(server.metrics_addr().unwrap()).await;
        let grew = |name: &str| total(&after, name, &[]) - total(&before, name, &[]);
        assert_eq!(grew("parley_posts_per_commit_sum"), (SENDERS * EACH) as f64);
        let commits = grew("parley_posts_per_commit_count");
        assert!(commits < (SENDERS * EACH) as f64, "{commits} commits for {} posts: none were shared", SENDERS * EACH);
        server.stop().await;
    }
}

#[tokio::test]
async fn health_checks_answer_and_readiness_drops_as_soon_as_shutdown_begins() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut config = relaxed();
    config.shutdown.readiness_delay_secs = 2;
    let server = TestServer::start_with(TestDb::sqlite().await, config).await;
    let healthz = server.get("/healthz", None).await;
    assert_eq!(healthz.status(), 200);
    assert_eq!(healthz.json::<serde_json::Value>().await.unwrap(), serde_json::json!({ "status": "ok" }));
    let readyz = server.get("/readyz", None).await;
    assert_eq!(readyz.status(), 200);
    assert_eq!(readyz.json::<serde_json::Value>().await.unwrap(), serde_json::json!({ "status": "ready", "database": "ok" }));

    server.begin_shutdown();
    // Still accepting during the readiness delay, but no longer ready.
    let readyz = server.get("/readyz", None).await;
    assert_eq!(readyz.status(), 503);
    assert_eq!(readyz.json::<serde_json::Value>().await.unwrap()["status"], "draining");
    assert_eq!(server.get("/healthz", None).await.status(), 200, "alive while draining");
    server.stop().await;
}

#[tokio::test]
async fn metrics_are_served_only_where_they_are_meant_to_be() {
    let _turn = ONE_AT_A_TIME.lock().await;
    // By default: nowhere on the site.
    let server = TestServer::start().await;
    assert_eq!(server.get("/metrics", None).await.status(), 404);
    server.stop().await;

    // With a token: on the site, to the token only.
    let mut config = relaxed();
    config.metrics.token = "let-me-see".into();
    let server = TestServer::start_with(TestDb::sqlite().await, config).await;
    let client = TestServer::http_client();
    for authorization in [None, Some("Bearer wrong"), Some("Bearer let-me-see-more"), Some("let-me-see")] {
        let mut request = client.get(server.url("/metrics"));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        assert_eq!(request.send().await.unwrap().status(), 401, "{authorization:?}");
    }
    let response = client.get(server.url("/metrics")).header("authorization", "Bearer let-me-see").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.text().await.unwrap().contains("parley_build_info"));
    server.stop().await;

    // With a listener of their own: there, to anyone who can reach it.
    let server = TestServer::start_with(TestDb::sqlite().await, with_metrics_listener()).await;
    let metrics = scrape(server.metrics_addr().expect("a metrics listener")).await;
    assert_eq!(total(&metrics, "parley_build_info", &[]), 1.0);
    assert_eq!(server.get("/metrics", None).await.status(), 404, "still not on the site");
    server.stop().await;
}

#[tokio::test]
async fn chat_traffic_is_counted() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut config = with_metrics_listener();
    config.limits.logins_per_minute = 5;
    let server = TestServer::start_with(TestDb::sqlite().await, config).await;
    let before = scrape(server.metrics_addr().unwrap()).await;
    let (caught_up, _sockets) = chat_traffic(&server).await;
    let after = scrape(server.metrics_addr().unwrap()).await;
    let grew = |name: &str, labels: &[&str]| total(&after, name, labels) - total(&before, name, labels);

    assert_eq!(grew("parley_messages_stored_total", &["kind=\"text\""]), 12.0);
    assert!(grew("parley_messages_stored_total", &["kind=\"notice\""]) >= 2.0, "two join notices");
    assert!(grew("parley_frames_delivered_total", &["kind=\"message\""]) >= 12.0, "each message reached bob");
    assert!(grew("parley_delivery_latency_seconds_count", &[]) >= 24.0, "bob's messages and alice's acks");
    assert_eq!(grew("parley_store_latency_seconds_count", &[]), 12.0);
    assert!(grew("parley_fanout_recipients_count", &[]) >= 12.0);
    assert_eq!(grew("parley_auth_total", &["event=\"login\"", "outcome=\"failure\""]), 1.0);
    assert_eq!(grew("parley_auth_total", &["event=\"register\"", "outcome=\"success\""]), 2.0);
    assert_eq!(grew("parley_catchup_messages_total", &[]), caught_up as f64);
    assert_eq!(total(&after, "parley_sockets_open", &[]), 2.0);
    assert_eq!(total(&after, "parley_users_online", &[]), 2.0);
    assert_eq!(total(&after, "parley_ready", &[]), 1.0);
    assert!(grew("parley_db_query_seconds_count", &["operation=\"post\""]) >= 12.0);
    assert!(total(&after, "parley_db_pool_connections", &[]) >= 1.0);
    assert!(grew("parley_http_requests_total", &["route=\"/api/rooms/{room_id}/messages\"", "status=\"200\""]) >= 1.0);
    assert!(grew("parley_socket_connects_total", &["reconnect=\"false\""]) >= 2.0);
    assert!(total(&after, "process_resident_memory_bytes", &[]) > 1_000_000.0);
    assert!(total(&after, "process_open_fds", &[]) > 0.0);
    // Labels come from small closed sets: a new one (an id, a raw path) must be added
    // here on purpose.
    const LABELS: [&str; 15] = [
        "kind", "reason", "limit", "event", "outcome", "reconnect", "operation", "state", "route", "method", "status", "le", "version", "commit",
        "flow",
    ];
    for series in after.keys() {
        let Some((_, labels)) = series.split_once('{') else { continue };
        for pair in labels.trim_end_matches('}').split("\",").filter(|pair| !pair.is_empty()) {
            let label = pair.split_once('=').map_or(pair, |(name, _)| name);
            assert!(LABELS.contains(&label), "unexpected label {label:?} on {series}");
        }
    }
    assert!(after.contains_key("parley_sockets_closed_total{reason=\"slow_consumer\"}"), "every reason exists from the start");

    // Closes are counted by reason: a client leaving, and a socket without a session.
    let closed = |samples: &BTreeMap<String, f64>, reason: &str| total(samples, "parley_sockets_closed_total", &[&format!("reason=\"{reason}\"")]);
    let carol = server.connect(&server.register("carol").await).await;
    drop(carol);
    assert_eq!(WsClient::open(server.addr(), None).await.unwrap().closed().await, Some(4001));
    let settled = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = scrape(server.metrics_addr().unwrap()).await;
        if closed(&now, "peer_closed") == closed(&after, "peer_closed") + 1.0 && closed(&now, "auth") == closed(&after, "auth") + 1.0 {
            break;
        }
        assert!(tokio::time::Instant::now() < settled, "closes not counted: {:?}", now.iter().filter(|(k, _)| k.contains("closed")).collect::<Vec<_>>());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Refusals are counted by limit.
    let mut refused = 0;
    for _ in 0..10 {
        if server.try_login("alice", "not the password").await.status() == 429 {
            refused += 1;
        }
    }
    assert!(refused > 0, "the login limit was reached");
    let now = scrape(server.metrics_addr().unwrap()).await;
    let login_refusals = |samples: &BTreeMap<String, f64>| total(samples, "parley_rate_limited_total", &["limit=\"login\""]);
    assert_eq!(login_refusals(&now) - login_refusals(&after), refused as f64);
    server.stop().await;
}

/// A Prometheus of the test's own, on a free port, with the repository's configuration
/// scraping `target` every second; killed when dropped.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    async fn start(target: SocketAddr) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = std::fs::read_to_string(repo_file("deploy/prometheus/prometheus.yml"))
            .unwrap()
            .replace("127.0.0.1:9100", &target.to_string())
            .replace("scrape_interval: 15s", "scrape_interval: 1s")
            .replace("evaluation_interval: 15s", "evaluation_interval: 1s");
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        std::fs::copy(repo_file("deploy/prometheus/alerts.yml"), dir.path().join("alerts.yml")).unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()));
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("Debian's prometheus is installed (scripts/bootstrap.sh installs it)");
        let prometheus = Prometheus { child, addr, _dir: dir };
        for _ in 0..200 {
            if let Ok(response) = reqwest::get(format!("http://{addr}/-/ready")).await {
                if response.status().is_success() {
                    return prometheus;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("prometheus did not become ready");
    }

    /// Runs an instant query; its result vector.
    async fn query(&self, expr: &str) -> Vec<serde_json::Value> {
        let response: serde_json::Value = reqwest::Client::new()
            .get(format!("http://{}/api/v1/query", self.addr))
            .query(&[("query", expr)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(response["status"], "success", "{expr}: {response}");
        response["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// The value of a query that yields one series.
    async fn value(&self, expr: &str) -> Option<f64> {
        let result = self.query(expr).await;
        result.first().and_then(|series| series["value"][1].as_str()).and_then(|v| v.parse().ok())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The metric names (Parley's and the process's) an expression mentions.
fn metric_names(expr: &str) -> Vec<&str> {
    let mut names = Vec::new();
    for (start, _) in expr.match_indices("parley_").chain(expr.match_indices("process_")) {
        let preceded_by_word = expr[..start].chars().next_back().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        if !preceded_by_word {
            let len = expr[start..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(expr.len() - start);
            names.push(&expr[start..start + len]);
        }
    }
    names
}

fn promtool(args: &[&str]) {
    let output = Command::new("promtool").args(args).output().expect("promtool is installed with prometheus");
    assert!(output.status.success(), "promtool {args:?}: {}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
}

#[tokio::test]
async fn prometheus_scrapes_parley_and_every_dashboard_query_has_data() {
    let _turn = ONE_AT_A_TIME.lock().await;
    promtool(&["check", "config", repo_file("deploy/prometheus/prometheus.yml").to_str().unwrap()]);
    promtool(&["check", "rules", repo_file("deploy/prometheus/alerts.yml").to_str().unwrap()]);

    let server = TestServer::start_with(TestDb::sqlite().await, with_metrics_listener()).await;
    let prometheus = Prometheus::start(server.metrics_addr().unwrap()).await;
    let up = "up{job=\"parley\",node=\"parley-1\"}";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while prometheus.value(up).await != Some(1.0) {
        assert!(tokio::time::Instant::now() < deadline, "prometheus never scraped parley");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Counters as Prometheus has them, once it has scraped after the traffic (earlier
    // tests in this process counted into the same recorder).
    let stored = "sum(parley_messages_stored_total{job=\"parley\",kind=\"text\"})";
    let failures = "sum(parley_auth_total{event=\"login\",outcome=\"failure\"})";
    let (stored_before, failures_before) = (prometheus.value(stored).await.unwrap(), prometheus.value(failures).await.unwrap());
    let _sockets = chat_traffic(&server).await;
    while prometheus.value(stored).await != Some(stored_before + 12.0) {
        assert!(tokio::time::Instant::now() < deadline + Duration::from_secs(20), "the messages never showed in prometheus");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(prometheus.value(failures).await, Some(failures_before + 1.0));
    assert_eq!(prometheus.value("sum(parley_sockets_open)").await, Some(2.0));
    // Enough scrapes for rates over the window the queries use.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(repo_file("deploy/grafana/parley.json")).unwrap()).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    // Every metric a panel or rule names is one Prometheus has really scraped (a query
    // can have data while naming a metric that no longer exists, e.g. with `or`).
    let names: serde_json::Value =
        reqwest::get(format!("http://{}/api/v1/label/__name__/values", prometheus.addr)).await.unwrap().json().await.unwrap();
    let scraped: Vec<&str> = names["data"].as_array().unwrap().iter().filter_map(|name| name.as_str()).collect();
    let alerts = std::fs::read_to_string(repo_file("deploy/prometheus/alerts.yml")).unwrap();
    let mut checked = 0;
    for panel in panels {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap().replace("$node", ".*").replace("$__rate_interval", "30s");
            for name in metric_names(&expr) {
                assert!(scraped.contains(&name), "panel {:?} names {name}, which Parley does not export", panel["title"]);
            }
            let result = prometheus.query(&expr).await;
            assert!(!result.is_empty(), "panel {:?} has no data: {expr}", panel["title"]);
            checked += 1;
        }
    }
    // Exported by the nodes of a cluster only (checked in `cluster.rs`).
    const CLUSTER_ONLY: [&str; 1] = ["parley_redis_up"];
    for name in metric_names(&alerts) {
        assert!(scraped.contains(&name) || CLUSTER_ONLY.contains(&name), "an alert names {name}, which Parley does not export");
    }
    assert!(checked >= panels.len());
    let variable = dashboard["templating"]["list"][0]["query"]["query"].as_str().unwrap();
    assert_eq!(variable, "label_values(parley_build_info, node)");
    assert_eq!(prometheus.query("parley_build_info{node=\"parley-1\"}").await.len(), 1, "the $node variable has its node");

    // The alert rules load and evaluate against real series without errors.
    let rules: serde_json::Value =
        reqwest::get(format!("http://{}/api/v1/rules", prometheus.addr)).await.unwrap().json().await.unwrap();
    let rules = rules["data"]["groups"][0]["rules"].as_array().unwrap().clone();
    assert_eq!(rules.len(), 6);
    let evaluated = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let rules: serde_json::Value =
            reqwest::get(format!("http://{}/api/v1/rules", prometheus.addr)).await.unwrap().json().await.unwrap();
        let rules = rules["data"]["groups"][0]["rules"].as_array().unwrap().clone();
        if rules.iter().all(|rule| rule["health"] == "ok") {
            assert!(rules.iter().all(|rule| rule["state"] == "inactive"), "a healthy node raises no alert: {rules:?}");
            break;
        }
        assert!(tokio::time::Instant::now() < evaluated, "rules not evaluated cleanly: {rules:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    drop(prometheus);
    server.stop().await;
}

/// SIGTERM while a client is sending and another has stopped reading: nothing the
/// sender was told is stored goes missing, it is told to come back (1012), the process
/// exits within its deadline although a socket cannot be flushed, and the sender
/// catches up on a restarted server.
#[tokio::test]
async fn sigterm_loses_no_acknowledged_message_and_clients_come_back() {
    let data = tempfile::tempdir().unwrap();
    const GRACE_SECS: u64 = 3;
    let grace = GRACE_SECS.to_string();
    let settings =
        [("PARLEY_LIMITS_MESSAGES_BURST", "100000"), ("PARLEY_LIMITS_FRAMES_BURST", "100000"), ("PARLEY_SHUTDOWN_GRACE_SECS", grace.as_str())];
    let server = ServerProcess::start(data.path(), &settings).await;
    let cookie = server.register("steady", PASSWORD).await;
    // The stalled client completes the handshake with a tiny receive buffer, then never
    // reads: what it is sent piles up in the socket buffers, then in its queue.
    let _stalled = {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let tcp = socket.connect(server.addr).await.unwrap();
        let mut request = format!("ws://{}{}", server.addr, app::protocol::socket_path(false)).into_client_request().unwrap();
        request.headers_mut().insert("cookie", HeaderValue::from_str(&server.register("stalled", PASSWORD).await).unwrap());
        tokio_tungstenite::client_async(request, tcp).await.unwrap().0
    };
    let mut client = WsClient::open(server.addr, Some(&cookie)).await.unwrap();
    let ServerMsg::Hello { rooms, .. } = client.next().await else { panic!("hello first") };
    let room_id = rooms[0].id;

    // 3 KB messages (under the 4,000-character limit): 100 of them are more than the
    // stalled socket's buffers hold, and far less than its queue's limit (so it is
    // not dropped as a slow consumer).
    let filler = "x".repeat(3000);
    let mut acknowledged = Vec::new();
    let mut sent = 0u64;
    let terminated_at = 100;
    let mut terminated = None;
    let close_code = loop {
        if sent < 10_000 {
            let text = format!("steady {sent} {filler}");
            let msg = ClientMsg::Send { id: sent + 1, room_id, client_id: format!("s{sent}"), text };
            if client.try_send(&msg).await.is_err() {
                // The server closed its side: what it sent before the close still
                // counts, acknowledgements included.
                break loop {
                    match client.next_frame().await {
                        support::server::Frame::Msg(ServerMsg::Sent { message, .. }) => acknowledged.push(message),
                        support::server::Frame::Msg(_) => {}
                        support::server::Frame::Closed(close) => break close.map(|frame| u16::from(frame.code)),
                    }
                };
            }
            sent += 1;
        }
        if sent == terminated_at && terminated.is_none() {
            server.terminate();
            terminated = Some(tokio::time::Instant::now());
        }
        match tokio::time::timeout(Duration::from_millis(5), client.next_frame()).await {
            Ok(support::server::Frame::Msg(ServerMsg::Sent { message, .. })) => acknowledged.push(message),
            Ok(support::server::Frame::Msg(_)) => {}
            Ok(support::server::Frame::Closed(close)) => break close.map(|frame| u16::from(frame.code)),
            Err(_) => {}
        }
    };
    assert_eq!(close_code, Some(1012), "told to come back");
    assert!(server.exited(Duration::from_secs(GRACE_SECS + 10)).await.success(), "a clean exit");
    let took = terminated.unwrap().elapsed();
    assert!(took < Duration::from_secs(GRACE_SECS + 2), "exited {took:?} after SIGTERM, past its {GRACE_SECS} s deadline");
    assert!(acknowledged.len() >= terminated_at as usize / 2, "messages were acknowledged before the signal ({})", acknowledged.len());

    // Back on a restarted server: everything acknowledged is there, once, in order, and
    // nothing was stored that the client was not told about.
    let restarted = ServerProcess::start(data.path(), &settings).await;
    let mut client = WsClient::open(restarted.addr, Some(&cookie)).await.unwrap();
    client.next().await;
    let mut stored = Vec::new();
    let mut after_seq = 0;
    loop {
        match client.request(|id| ClientMsg::Catchup { id, room_id, after_seq }).await {
            ServerMsg::Catchup { messages, has_more, .. } => {
                after_seq = messages.last().map_or(after_seq, |m| m.seq);
                stored.extend(messages.into_iter().filter(|m| m.client_id.is_some()));
                if !has_more {
                    break;
                }
            }
            other => panic!("{other:?}"),
        }
    }
    let ids = |messages: &[app::protocol::ChatMessage]| messages.iter().map(|m| (m.seq, m.client_id.clone())).collect::<Vec<_>>();
    assert_eq!(ids(&stored), ids(&acknowledged), "exactly the acknowledged messages, in order");
    assert_eq!(stored, acknowledged, "byte for byte");
    restarted.kill_hard();
}

/// Passwords, session tokens and message text never reach the logs, whatever the
/// level or format; JSON lines name the socket they are about.
#[tokio::test]
async fn logs_never_hold_passwords_tokens_or_message_text() {
    for format in ["text", "json"] {
        let data = tempfile::tempdir().unwrap();
        let log = data.path().join("server.log");
        let settings = [("RUST_LOG", "debug"), ("PARLEY_LOG_FORMAT", format)];
        let server = ServerProcess::start_logging_to(data.path(), &settings, Some(&log)).await;
        let password = "Sup3r-Secret-Passw0rd-ção";
        let secret_text = "olá, this is between us 7f3c9a";
        let client = TestServer::http_client();
        let response = client
            .post(format!("http://{}/api/register", server.addr))
            .form(&[("username", "quiet"), ("display_name", ""), ("password", password), ("next", "/")])
            .send()
            .await
            .unwrap();
        let cookie = session_cookie(&response).unwrap();
        let token = cookie.split_once('=').unwrap().1.to_string();
        let wrong = client
            .post(format!("http://{}/api/login", server.addr))
            .form(&[("username", "quiet"), ("password", "wrong-Passw0rd-also-secret"), ("next", "/")])
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401);
        let mut socket = WsClient::open(server.addr, Some(&cookie)).await.unwrap();
        let ServerMsg::Hello { rooms, .. } = socket.next().await else { panic!() };
        let room_id = rooms[0].id;
        let reply = socket.request(|id| ClientMsg::Send { id, room_id, client_id: "secret".into(), text: secret_text.into() }).await;
        assert!(matches!(reply, ServerMsg::Sent { .. }));
        let bad = socket.request(|id| ClientMsg::Send { id, room_id, client_id: "".into(), text: secret_text.into() }).await;
        assert!(matches!(bad, ServerMsg::Error { .. }));
        drop(socket);
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.kill_hard();

        let logged = std::fs::read_to_string(&log).unwrap();
        let mut request_lines = 0;
        assert!(logged.contains("socket connected"), "the log was written ({format}): {}", logged.lines().rev().take(15).collect::<Vec<_>>().join("\n"));
        for secret in [password, "wrong-Passw0rd-also-secret", token.as_str(), secret_text] {
            assert!(!logged.contains(secret), "{format} log holds a secret: {secret:?}");
        }
        if format == "json" {
            for line in logged.lines().filter(|line| !line.trim().is_empty()) {
                let entry: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}"));
                let spans = entry["spans"].as_array().cloned().unwrap_or_default();
                let in_span = |name: &str| spans.iter().any(|span| span["name"] == name);
                if entry["fields"]["message"] == "socket connected" || in_span("request") {
                    assert!(spans.iter().any(|span| span["conn"].is_number()), "socket lines carry the connection: {line}");
                }
                if in_span("request") {
                    request_lines += 1;
                    assert!(spans.iter().any(|span| span["id"].is_number()), "request lines carry the request: {line}");
                }
            }
            assert!(request_lines >= 2, "both requests were logged in their span");
        }
    }
}

/// A reconnect storm after a restart: every session was last used minutes ago, and
/// noting that they are in use again is one write (one sync) for all of them, not one
/// each, so the storm does not queue behind the disk.
#[tokio::test]
async fn a_reconnect_storm_notes_its_sessions_in_use_together() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let db = TestDb::sqlite().await;
    let cookies = support::crowd::seed_people_last_seen(&db.url(), 40, Duration::from_secs(120)).await;
    let server = TestServer::start_with(db, with_metrics_listener()).await;
    let before = scrape(server.metrics_addr().unwrap()).await;
    let storm_began = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let _sockets = futures::future::join_all(cookies.iter().map(|cookie| server.connect(cookie))).await;

    let store = server.db.open().await;
    let hashes: Vec<String> = cookies
        .iter()
        .map(|cookie| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(cookie.split_once('=').unwrap().1.as_bytes())))
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut noted = 0;
        for hash in &hashes {
            let session = store.session(hash, storm_began).await.unwrap().expect("live");
            noted += usize::from(session.last_seen_at >= storm_began);
        }
        if noted == hashes.len() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "only {noted} of {} sessions noted as used", hashes.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = scrape(server.metrics_addr().unwrap()).await;
    let writes = total(&after, "parley_db_query_seconds_count", &["operation=\"touch_sessions\""])
        - total(&before, "parley_db_query_seconds_count", &["operation=\"touch_sessions\""]);
    // One a second: a slow machine may spread the storm over a few.
    assert!((1.0..=4.0).contains(&writes), "{writes} writes for 40 sessions");
    server.stop().await;
}

/// After a crowd of sockets has come and gone, the memory their handshakes and queues
/// freed is given back to the system once things quieten (how much: docs/benchmarks.md).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[tokio::test]
async fn memory_is_given_back_after_a_crowd_comes_and_goes() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let db = TestDb::sqlite().await;
    let cookies = support::crowd::seed_people(&db.url(), 600).await;
    let server = TestServer::start_with(db, with_metrics_listener()).await;
    let trims = |samples: &BTreeMap<String, f64>| total(samples, "parley_memory_trims_total", &["released=\"yes\""]);
    let before = trims(&scrape(server.metrics_addr().unwrap()).await);

    let (members, _) = support::crowd::storm(server.addr(), &cookies, Duration::from_secs(60)).await;
    drop(members);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while trims(&scrape(server.metrics_addr().unwrap()).await) == before {
        assert!(tokio::time::Instant::now() < deadline, "600 sockets opened and closed, and no trim followed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.stop().await;
}
