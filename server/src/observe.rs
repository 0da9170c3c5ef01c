//! What every HTTP request leaves behind: an id (from `X-Request-Id` when a proxy set a
//! sane one, or made here) carried by every log line about it and sent back, a log line with its outcome,
//! and its count and duration in the metrics, by route (the matched pattern, never the
//! raw path, so ids in paths do not become labels).

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Instant,
};

use axum::{
    extract::{MatchedPath, Request},
    http::{HeaderValue, Method},
    middleware::Next,
    response::Response,
};
use tower_http::request_id::{MakeRequestId, RequestId};

use crate::metrics;

/// Request ids made here: this process's start time and a counter, unique enough to
/// find one request's lines among a node's logs.
#[derive(Clone)]
pub struct SequentialIds {
    prefix: String,
    next: std::sync::Arc<AtomicU64>,
}

impl Default for SequentialIds {
    fn default() -> Self {
        let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
        SequentialIds { prefix: format!("{started:x}"), next: std::sync::Arc::new(AtomicU64::new(1)) }
    }
}

impl MakeRequestId for SequentialIds {
    fn make_request_id<B>(&mut self, _request: &axum::http::Request<B>) -> Option<RequestId> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_str(&format!("{}-{n}", self.prefix)).ok().map(RequestId::new)
    }
}

/// The span every line about one HTTP request is logged in.
pub fn request_span(request: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let id = request.extensions().get::<RequestId>().and_then(|id| id.header_value().to_str().ok()).unwrap_or("-");
    tracing::info_span!("http", request_id = %id, method = %request.method(), path = %request.uri().path())
}

/// The longest request id taken from a client or proxy.
const MAX_REQUEST_ID_LEN: usize = 64;

/// Drops an incoming `X-Request-Id` that is too long or has characters beyond letters,
/// digits, `-`, `_` and `.`: it is copied into every log line about the request, so a
/// client must not be able to fill the logs or forge their structure through it. A
/// fresh id is made in its place.
pub async fn drop_odd_request_ids(mut request: Request, next: Next) -> Response {
    let odd = request.headers().get("x-request-id").is_some_and(|id| {
        let id = id.as_bytes();
        id.is_empty()
            || id.len() > MAX_REQUEST_ID_LEN
            || !id.iter().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'))
    });
    if odd {
        request.headers_mut().remove("x-request-id");
    }
    next.run(request).await
}

/// The method as a label: the standard ones by name, anything else as `other`, so a
/// client cannot make new series by inventing methods.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Counts and times each request, panics (500s) included. Health checks are served by
/// a router of their own and are left out (they would drown the chat's own traffic).
pub async fn measure(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_string(), |path| path.as_str().to_string());
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    tracing::debug!(status, took_ms = started.elapsed().as_millis() as u64, "request done");
    metrics::http_request(route, method, status, started.elapsed());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invented_methods_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
    }
}
