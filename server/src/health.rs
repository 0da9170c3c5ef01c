//! Health checks and the metrics endpoint, for load balancers and monitoring.
//!
//! `/healthz`: the process answers. `/readyz`: it should get traffic (the database
//! answers within a second and it is not stopping); 503 otherwise, with the reason.
//! Both are JSON, outside the rate limits, and not logged at info (they are polled
//! every few seconds). `/metrics` is Prometheus text: on its own listener for anyone
//! who can reach it, and on the site's listener only with the configured token.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU32, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{
    extract::State,
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::{metrics, state::AppState, storage::Store};

/// How often the database is probed, and how long one probe may take.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// Failed probes in a row before the node says it is not ready: one slow moment under
/// load should not take a busy node out of the load balancer.
const FAILURES_BEFORE_UNREADY: u32 = 2;

/// What `/readyz` and the `parley_ready` gauge report. Kept current by a background
/// probe rather than checked per request, so polling them (or flooding them: they are
/// not rate limited) puts no load on the database pool that chat commits need.
#[derive(Debug, Default)]
pub struct Health {
    draining: AtomicBool,
    failed_probes: AtomicU32,
}

/// The parts of readiness, reported by `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    pub draining: bool,
    pub database: bool,
    /// Whether the link to the other nodes works; `None` on a single node. A node
    /// without it stays ready (it serves its own sockets) but reports "degraded".
    pub redis: Option<bool>,
}

impl Readiness {
    /// Whether the node should get new traffic.
    pub fn is_ready(&self) -> bool {
        !self.draining && self.database
    }
}

impl Health {
    /// The node is stopping: not ready from now on, whatever the database says.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn readiness(&self) -> Readiness {
        Readiness {
            draining: self.draining.load(Ordering::Acquire),
            database: self.failed_probes.load(Ordering::Acquire) < FAILURES_BEFORE_UNREADY,
            redis: None,
        }
    }

    /// Notes one database probe's outcome.
    pub fn record_probe(&self, answered: bool) {
        if answered {
            self.failed_probes.store(0, Ordering::Release);
        } else {
            self.failed_probes.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// Probes the database every [`PROBE_EVERY`] (a probe slower than that fails) until
/// `stop` is cancelled.
pub async fn run_database_probe(health: Arc<Health>, store: Arc<dyn Store>, stop: CancellationToken) {
    let mut every = tokio::time::interval(PROBE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {
                let answered = matches!(tokio::time::timeout(PROBE_EVERY, store.ping()).await, Ok(Ok(())));
                if !answered {
                    tracing::warn!("the database did not answer a readiness probe");
                }
                health.record_probe(answered);
            }
            () = stop.cancelled() => return,
        }
    }
}

/// Always 200 while the process can answer at all.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// 200 when the node should get traffic, 503 with the reason when not.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let readiness = state.readiness();
    let status = match readiness {
        _ if readiness.draining => "draining",
        _ if !readiness.is_ready() => "unavailable",
        Readiness { redis: Some(false), .. } => "degraded",
        _ => "ready",
    };
    let mut body = json!({ "status": status, "database": if readiness.database { "ok" } else { "unreachable" } });
    if let Some(redis) = readiness.redis {
        body["redis"] = json!(if redis { "ok" } else { "down" });
    }
    let status = if readiness.is_ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

/// `/metrics` on the metrics listener.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let body = metrics::render(&state.metrics, state.snapshot());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

/// `/metrics` on the site's listener: only with `Authorization: Bearer <token>`, and
/// not at all without a configured token (a 404, as for any unknown page).
pub async fn metrics_with_token(state: State<AppState>, headers: HeaderMap) -> Response {
    let token = &state.config.metrics.token;
    if token.is_empty() {
        return StatusCode::NOT_FOUND.into_response();
    }
    let presented = headers.get(header::AUTHORIZATION).and_then(|value| value.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if !presented.is_some_and(|presented| constant_time_eq(presented.as_bytes(), token.as_bytes())) {
        return (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")]).into_response();
    }
    metrics(state).await
}

/// Compares without stopping at the first difference, so the time taken does not tell
/// how much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::{constant_time_eq, Health};

    #[test]
    fn the_database_counts_as_down_after_two_failed_probes_in_a_row() {
        let health = Health::default();
        assert!(health.readiness().is_ready());
        health.record_probe(false);
        assert!(health.readiness().is_ready(), "one slow probe is not enough");
        health.record_probe(false);
        assert!(!health.readiness().database);
        health.record_probe(true);
        assert!(health.readiness().is_ready(), "back as soon as it answers");
        health.start_draining();
        let readiness = health.readiness();
        assert!(readiness.draining && readiness.database && !readiness.is_ready());
    }

    #[test]
    fn tokens_match_only_exactly() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cret", b"s3creT"));
        assert!(!constant_time_eq(b"s3cret", b"s3cre"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
