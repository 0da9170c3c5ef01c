//! Prometheus metrics: what an operator watches to see how the chat is doing.
//!
//! Recorded through the `metrics` facade into `metrics-exporter-prometheus`, rendered
//! at `GET /metrics` (on its own listener, or behind a token; see `[metrics]`). Names
//! follow Prometheus conventions (`_total`, `_seconds`, `_bytes`) and labels are small
//! closed sets: never user or room ids. Counters with labels are created at zero when
//! the server starts, so every series exists (and every dashboard query has data)
//! before the first event. Gauges that describe the present (sockets, queues, the
//! database pool, the process) are read when scraped, which costs nothing in between.
//!
//! The fan-out path records per publish, not per recipient: one counter increment by
//! the number of recipients and one fan-out size sample. Delivery latency is recorded
//! by each socket's writer for the frame it has just written, into a fixed-bucket
//! histogram of plain atomics (no lock, no allocation per sample).

use std::{
    sync::{LazyLock, OnceLock},
    time::{Duration, Instant},
};

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter, Histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::hub::CloseReason;

mod fixed_histogram;
use fixed_histogram::FixedHistogram;

// The metric names. The dashboard and alert rules in `deploy/` query them, and their
// test fails if one is renamed here without them.
pub const SOCKETS_OPEN: &str = "parley_sockets_open";
pub const USERS_ONLINE: &str = "parley_users_online";
pub const READY: &str = "parley_ready";
pub const MESSAGES_STORED: &str = "parley_messages_stored_total";
pub const FRAMES_DELIVERED: &str = "parley_frames_delivered_total";
pub const DELIVERY_LATENCY: &str = "parley_delivery_latency_seconds";
pub const STORE_LATENCY: &str = "parley_store_latency_seconds";
pub const FANOUT_RECIPIENTS: &str = "parley_fanout_recipients";
pub const POSTS_PER_COMMIT: &str = "parley_posts_per_commit";
pub const QUEUE_MAX_FRAMES: &str = "parley_outbound_queue_max_frames";
pub const QUEUE_BYTES: &str = "parley_outbound_queue_bytes";
pub const SOCKETS_CLOSED: &str = "parley_sockets_closed_total";
pub const SOCKET_CONNECTS: &str = "parley_socket_connects_total";
pub const RATE_LIMITED: &str = "parley_rate_limited_total";
pub const CATCHUP_MESSAGES: &str = "parley_catchup_messages_total";
pub const AUTH: &str = "parley_auth_total";
pub const DB_QUERY: &str = "parley_db_query_seconds";
pub const DB_ERRORS: &str = "parley_db_errors_total";
pub const DB_POOL: &str = "parley_db_pool_connections";
pub const HTTP_REQUESTS: &str = "parley_http_requests_total";
pub const HTTP_DURATION: &str = "parley_http_request_duration_seconds";
pub const REQUEST_PANICS: &str = "parley_request_panics_total";
pub const BUILD_INFO: &str = "parley_build_info";
pub const CLUSTER_EVENTS: &str = "parley_cluster_events_total";
pub const CLUSTER_CATCHUPS: &str = "parley_cluster_catchups_total";
pub const MEMBERSHIP_CHECKS: &str = "parley_membership_checks_total";
pub const REDIS_UP: &str = "parley_redis_up";
pub const MEMORY_TRIMS: &str = "parley_memory_trims_total";

/// Which way cluster events went: out to Redis, in from it, or dropped (the node
/// could not publish them; the others catch up from the database).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterFlow {
    Published,
    Received,
    Dropped,
}

impl ClusterFlow {
    const ALL: [ClusterFlow; 3] = [ClusterFlow::Published, ClusterFlow::Received, ClusterFlow::Dropped];

    fn label(self) -> &'static str {
        match self {
            ClusterFlow::Published => "published",
            ClusterFlow::Received => "received",
            ClusterFlow::Dropped => "dropped",
        }
    }
}

/// What a check of another node's join or leave found: the person's sockets here as
/// the database has them already, or sockets joined to the room or taken out of it
/// (the nodes heard the changes in different orders, or a tab opened meanwhile), or
/// the database did not answer (tried again later).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MembershipOutcome {
    Unchanged,
    Joined,
    Left,
    Failed,
}

impl MembershipOutcome {
    const ALL: [MembershipOutcome; 4] =
        [MembershipOutcome::Unchanged, MembershipOutcome::Joined, MembershipOutcome::Left, MembershipOutcome::Failed];

    fn label(self) -> &'static str {
        match self {
            MembershipOutcome::Unchanged => "unchanged",
            MembershipOutcome::Joined => "joined",
            MembershipOutcome::Left => "left",
            MembershipOutcome::Failed => "failed",
        }
    }
}

/// Buckets for chat latencies: from a tenth of a millisecond (a local commit, a frame
/// written) to ten seconds (something is badly wrong).
const LATENCY_BUCKETS: [f64; 16] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Buckets for how many sockets one event goes to.
const FANOUT_BUCKETS: [f64; 12] = [1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 10000.0];

/// Buckets for how many posts shared one commit (at most 64, see `group_commit`).
const COMMIT_BUCKETS: [f64; 7] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];

/// What a frame sent to a socket is, for counting deliveries by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    Message,
    Receipt,
    Typing,
    Presence,
    /// Answers to requests, greetings and notices about rooms.
    Reply,
}

impl FrameKind {
    const ALL: [FrameKind; 5] = [FrameKind::Message, FrameKind::Receipt, FrameKind::Typing, FrameKind::Presence, FrameKind::Reply];

    fn label(self) -> &'static str {
        match self {
            FrameKind::Message => "message",
            FrameKind::Receipt => "receipt",
            FrameKind::Typing => "typing",
            FrameKind::Presence => "presence",
            FrameKind::Reply => "reply",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Which limit refused something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Http,
    Login,
    Registration,
    SocketFrames,
    SocketsPerUser,
    SocketsPerAddress,
}

impl Limit {
    const ALL: [Limit; 6] =
        [Limit::Http, Limit::Login, Limit::Registration, Limit::SocketFrames, Limit::SocketsPerUser, Limit::SocketsPerAddress];

    fn label(self) -> &'static str {
        match self {
            Limit::Http => "http",
            Limit::Login => "login",
            Limit::Registration => "registration",
            Limit::SocketFrames => "socket_frames",
            Limit::SocketsPerUser => "sockets_per_user",
            Limit::SocketsPerAddress => "sockets_per_address",
        }
    }
}

/// Login, registration and logout outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthEvent {
    Login,
    Register,
    Logout,
}

const AUTH_EVENTS: [AuthEvent; 3] = [AuthEvent::Login, AuthEvent::Register, AuthEvent::Logout];

impl AuthEvent {
    fn label(self) -> &'static str {
        match self {
            AuthEvent::Login => "login",
            AuthEvent::Register => "register",
            AuthEvent::Logout => "logout",
        }
    }
}

const CLOSE_REASONS: [CloseReason; 9] = [
    CloseReason::PeerClosed,
    CloseReason::ShuttingDown,
    CloseReason::SlowConsumer,
    CloseReason::SessionEnded,
    CloseReason::HeartbeatTimeout,
    CloseReason::TooBig,
    CloseReason::PolicyViolation,
    CloseReason::Outdated,
    CloseReason::PageNewer,
];

fn close_label(reason: CloseReason) -> &'static str {
    match reason {
        CloseReason::PeerClosed => "peer_closed",
        CloseReason::ShuttingDown => "shutdown",
        CloseReason::SlowConsumer => "slow_consumer",
        CloseReason::SessionEnded => "auth",
        CloseReason::HeartbeatTimeout => "heartbeat",
        CloseReason::TooBig => "too_big",
        CloseReason::PolicyViolation => "rate_limit",
        CloseReason::Outdated => "outdated",
        CloseReason::PageNewer => "page_newer",
    }
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process's recorder (once; servers started later in the same process,
/// as in tests, share it) and returns the handle that renders it.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
                .and_then(|builder| builder.set_buckets_for_metric(Matcher::Full(FANOUT_RECIPIENTS.into()), &FANOUT_BUCKETS))
                .and_then(|builder| builder.set_buckets_for_metric(Matcher::Full(POSTS_PER_COMMIT.into()), &COMMIT_BUCKETS))
                .expect("the bucket lists are not empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; Parley's metrics go there");
            }
            describe();
            handle
        })
        .clone()
}

/// Says what each metric means (the `# HELP` lines) and creates the labelled counters
/// at zero.
fn describe() {
    describe_gauge!(SOCKETS_OPEN, "Chat sockets open now.");
    describe_gauge!(USERS_ONLINE, "People with at least one socket open now.");
    describe_gauge!(READY, "1 while the node is ready for traffic (database reachable, not draining), else 0.");
    describe_counter!(MESSAGES_STORED, "Messages stored, by kind: text, or a join/leave notice.");
    describe_counter!(FRAMES_DELIVERED, "Frames queued to sockets, by kind (message, receipt, typing, presence, reply).");
    describe_histogram!(STORE_LATENCY, Unit::Seconds, "From a message's request read to its commit.");
    describe_histogram!(FANOUT_RECIPIENTS, "Sockets one published event was queued to.");
    describe_histogram!(POSTS_PER_COMMIT, "Messages stored by one commit of posts (posts waiting for the disk share one).");
    describe_gauge!(QUEUE_MAX_FRAMES, "The most frames waiting in any one socket's outbound queue, when scraped.");
    describe_gauge!(QUEUE_BYTES, Unit::Bytes, "Bytes waiting in all sockets' outbound queues, when scraped.");
    describe_counter!(SOCKETS_CLOSED, "Sockets closed, by reason.");
    describe_counter!(SOCKET_CONNECTS, "Sockets greeted, by whether the client was reconnecting.");
    describe_counter!(MEMORY_TRIMS, "Times the allocator was asked to give back memory freed by a crowd of sockets, by whether it had pages to give.");
    describe_counter!(RATE_LIMITED, "Requests, frames and sockets refused by a limit, by limit.");
    describe_counter!(CATCHUP_MESSAGES, "Messages sent to reconnecting clients catching up.");
    describe_counter!(AUTH, "Logins, registrations and logouts, by outcome.");
    describe_histogram!(DB_QUERY, Unit::Seconds, "Database operations, by operation.");
    describe_counter!(DB_ERRORS, "Database operations that failed, by operation.");
    describe_gauge!(DB_POOL, "Database connections, by state (idle, in_use; in_use counts the one kept for writing posts), when scraped.");
    describe_counter!(HTTP_REQUESTS, "HTTP requests, by route, method and status.");
    describe_histogram!(HTTP_DURATION, Unit::Seconds, "HTTP request handling time, by route, method and status.");
    describe_counter!(REQUEST_PANICS, "Socket requests that panicked (answered with an internal error).");
    describe_gauge!(BUILD_INFO, "Always 1; the labels say which build is running.");
    describe_counter!(CLUSTER_EVENTS, "Events between nodes through Redis, by flow (published, received, dropped).");
    describe_counter!(CLUSTER_CATCHUPS, "Times this node caught its sockets up from the database: events were lost, or a deploy's other half (nodes of another protocol version) left or came over.");
    describe_gauge!(REDIS_UP, "1 while the link to the other nodes through Redis works, else 0 (only with a cluster).");
    for flow in ClusterFlow::ALL {
        counter!(CLUSTER_EVENTS, "flow" => flow.label()).absolute(0);
    }
    counter!(CLUSTER_CATCHUPS).absolute(0);
    describe_counter!(
        MEMBERSHIP_CHECKS,
        "Joins and leaves made on other nodes, checked against the database, by outcome: unchanged (the sockets here were right), joined or left (they were not), failed (tried again)."
    );
    for outcome in MembershipOutcome::ALL {
        counter!(MEMBERSHIP_CHECKS, "outcome" => outcome.label()).absolute(0);
    }

    for kind in FrameKind::ALL {
        counter!(FRAMES_DELIVERED, "kind" => kind.label()).absolute(0);
    }
    for kind in ["text", "notice"] {
        counter!(MESSAGES_STORED, "kind" => kind).absolute(0);
    }
    for reason in CLOSE_REASONS {
        counter!(SOCKETS_CLOSED, "reason" => close_label(reason)).absolute(0);
    }
    for limit in Limit::ALL {
        counter!(RATE_LIMITED, "limit" => limit.label()).absolute(0);
    }
    for event in AUTH_EVENTS {
        for outcome in ["success", "failure"] {
            counter!(AUTH, "event" => event.label(), "outcome" => outcome).absolute(0);
        }
    }
    for reconnect in ["false", "true"] {
        counter!(SOCKET_CONNECTS, "reconnect" => reconnect).absolute(0);
    }
    counter!(CATCHUP_MESSAGES).absolute(0);
    counter!(REQUEST_PANICS).absolute(0);
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "commit" => env!("PARLEY_GIT_COMMIT")).set(1.0);
    metrics_process::Collector::default().describe();
}

/// Handles for the per-event paths, looked up once.
struct Hot {
    delivered: [Counter; 5],
    fanout: Histogram,
}

static HOT: LazyLock<Hot> = LazyLock::new(|| Hot {
    delivered: FrameKind::ALL.map(|kind| counter!(FRAMES_DELIVERED, "kind" => kind.label())),
    fanout: histogram!(FANOUT_RECIPIENTS),
});

/// Sampled once per recipient, so kept out of the exporter (see [`FixedHistogram`]).
static DELIVERY: LazyLock<FixedHistogram> = LazyLock::new(|| FixedHistogram::new(&LATENCY_BUCKETS));
const DELIVERY_HELP: &str = "From a message's commit to its frame written to a socket.";

/// Creates each database operation's error counter at zero, so a dashboard or alert
/// on database errors has a series before the first one.
pub fn db_operations_known(operations: &[&'static str]) {
    for operation in operations {
        counter!(DB_ERRORS, "operation" => *operation).absolute(0);
    }
}

/// One event was queued to `recipients` sockets.
pub fn delivered(kind: FrameKind, recipients: usize) {
    HOT.delivered[kind.index()].increment(recipients as u64);
    if kind != FrameKind::Reply {
        HOT.fanout.record(recipients as f64);
    }
}

/// A stored message's frame reached a socket, `since_commit` after its commit.
pub fn delivery_latency(since_commit: Duration) {
    DELIVERY.record(since_commit);
}

/// A person's message was committed; `request_read_at` is when its request was read.
pub fn text_stored(request_read_at: Instant) {
    counter!(MESSAGES_STORED, "kind" => "text").increment(1);
    histogram!(STORE_LATENCY).record(request_read_at.elapsed().as_secs_f64());
}

/// One commit of a batch of posts stored `posts` new messages.
pub fn posts_committed(posts: usize) {
    histogram!(POSTS_PER_COMMIT).record(posts as f64);
}

/// A join, leave or room-created notice was committed.
pub fn notice_stored() {
    counter!(MESSAGES_STORED, "kind" => "notice").increment(1);
}

/// `events` cluster events went `flow`.
pub fn cluster_events(flow: ClusterFlow, events: usize) {
    counter!(CLUSTER_EVENTS, "flow" => flow.label()).increment(events as u64);
}

/// The node caught its sockets up after events between nodes were lost.
pub fn cluster_catch_up() {
    counter!(CLUSTER_CATCHUPS).increment(1);
}

pub fn membership_checked(outcome: MembershipOutcome) {
    counter!(MEMBERSHIP_CHECKS, "outcome" => outcome.label()).increment(1);
}

/// A socket ended, for `reason`.
pub fn socket_closed(reason: CloseReason) {
    counter!(SOCKETS_CLOSED, "reason" => close_label(reason)).increment(1);
}

/// A socket was greeted; `reconnect` when the page had one before.
pub fn socket_greeted(reconnect: bool) {
    counter!(SOCKET_CONNECTS, "reconnect" => if reconnect { "true" } else { "false" }).increment(1);
}

/// `limit` refused a request, a frame or a socket.
pub fn rate_limited(limit: Limit) {
    counter!(RATE_LIMITED, "limit" => limit.label()).increment(1);
}

/// A reconnecting client was sent `messages` it had missed.
pub fn caught_up(messages: usize) {
    counter!(CATCHUP_MESSAGES).increment(messages as u64);
}

/// A login, registration or logout ended, well or not.
pub fn auth(event: AuthEvent, success: bool) {
    counter!(AUTH, "event" => event.label(), "outcome" => if success { "success" } else { "failure" }).increment(1);
}

/// A socket request panicked (and was answered with `internal`).
pub fn request_panicked() {
    counter!(REQUEST_PANICS).increment(1);
}

/// The allocator was asked to give back the memory a crowd of sockets freed;
/// `released` when it had whole pages to give.
pub fn memory_trimmed(released: bool) {
    counter!(MEMORY_TRIMS, "released" => if released { "yes" } else { "no" }).increment(1);
}

/// A database operation took `took`; `failed` when the database itself failed.
pub fn db_operation(operation: &'static str, took: Duration, failed: bool) {
    histogram!(DB_QUERY, "operation" => operation).record(took.as_secs_f64());
    if failed {
        counter!(DB_ERRORS, "operation" => operation).increment(1);
    }
}

/// An HTTP request to `route` (its pattern, never the raw path) was answered.
pub fn http_request(route: String, method: &'static str, status: u16, took: Duration) {
    let status = status.to_string();
    counter!(HTTP_REQUESTS, "route" => route.clone(), "method" => method, "status" => status.clone()).increment(1);
    histogram!(HTTP_DURATION, "route" => route, "method" => method, "status" => status).record(took.as_secs_f64());
}

/// What the present looks like, read at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    pub sockets: usize,
    pub users_online: usize,
    pub queue_max_frames: usize,
    pub queue_bytes: usize,
    pub db_pool_size: u32,
    pub db_pool_idle: usize,
    pub ready: bool,
    /// The link to the other nodes, when there are any.
    pub redis_up: Option<bool>,
}

/// Sets the scrape-time gauges from `now` and renders everything.
pub fn render(handle: &PrometheusHandle, now: Snapshot) -> String {
    gauge!(SOCKETS_OPEN).set(now.sockets as f64);
    gauge!(USERS_ONLINE).set(now.users_online as f64);
    gauge!(QUEUE_MAX_FRAMES).set(now.queue_max_frames as f64);
    gauge!(QUEUE_BYTES).set(now.queue_bytes as f64);
    gauge!(DB_POOL, "state" => "idle").set(now.db_pool_idle as f64);
    gauge!(DB_POOL, "state" => "in_use").set(now.db_pool_size.saturating_sub(now.db_pool_idle as u32) as f64);
    gauge!(READY).set(if now.ready { 1.0 } else { 0.0 });
    if let Some(up) = now.redis_up {
        gauge!(REDIS_UP).set(if up { 1.0 } else { 0.0 });
    }
    metrics_process::Collector::default().collect();
    let mut text = handle.render();
    DELIVERY.render(DELIVERY_LATENCY, DELIVERY_HELP, &mut text);
    text
}

/// Drains histogram samples into their buckets every few seconds, so memory stays
/// flat between scrapes (or with nobody scraping).
pub async fn run_upkeep(handle: PrometheusHandle, stop: tokio_util::sync::CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = every.tick() => handle.run_upkeep(),
            () = stop.cancelled() => return,
        }
    }
}
