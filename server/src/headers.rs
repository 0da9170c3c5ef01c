//! Response headers that tell browsers what this site's pages may do: run only its own
//! scripts and WASM, never be framed, not sniff content types, not leak URLs in the
//! Referer, and (over TLS) stay on HTTPS.

use argon2::password_hash::rand_core::{OsRng, RngCore};
use axum::{
    extract::{Request, State},
    http::{header, HeaderValue},
    middleware::Next,
    response::Response,
};
use base64::Engine;

use crate::state::AppState;

/// A fresh random value per response, allowing exactly the inline scripts Leptos
/// writes into that page (the hydration bootstrap) and nothing injected.
#[derive(Debug, Clone)]
pub struct CspNonce(pub String);

impl CspNonce {
    fn new() -> Self {
        let mut bytes = [0u8; 16];
        OsRng.fill_bytes(&mut bytes);
        CspNonce(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }
}

/// The policy for one response. `'wasm-unsafe-eval'` lets the page compile its own
/// WASM (fetched from 'self'); it does not allow `eval` of JavaScript.
pub fn content_security_policy(nonce: &str, dev_reload: Option<u32>) -> String {
    // `cargo leptos watch` reloads pages over a socket on its own port.
    let reload = dev_reload.map(|port| format!(" ws://127.0.0.1:{port} ws://localhost:{port}")).unwrap_or_default();
    format!(
        "default-src 'self'; script-src 'self' 'nonce-{nonce}' 'wasm-unsafe-eval'; style-src 'self'; \
         img-src 'self' data:; font-src 'self'; connect-src 'self'{reload}; object-src 'none'; \
         base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
}

pub async fn security_headers(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let nonce = CspNonce::new();
    request.extensions_mut().insert(nonce.clone());
    let mut response = next.run(request).await;
    let dev_reload = (state.leptos_options.env == leptos::config::Env::DEV).then_some(state.leptos_options.reload_port);
    let headers = response.headers_mut();
    if let Ok(policy) = HeaderValue::from_str(&content_security_policy(&nonce.0, dev_reload)) {
        headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    }
    // Pages and answers are asked for again each time (bundles set their own policy).
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    if state.config.tls.enabled() {
        let hsts = format!("max-age={}; includeSubDomains", state.config.tls.hsts_max_age_secs);
        if let Ok(value) = HeaderValue::from_str(&hsts) {
            headers.insert(header::STRICT_TRANSPORT_SECURITY, value);
        }
    }
    response
}

/// Refuses requests beyond the client address's HTTP allowance with 429.
pub async fn rate_limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let ip = crate::net::client_ip(request.extensions(), request.headers(), state.config.security.trust_forwarded_for);
    match state.limiters.http(ip) {
        Ok(()) => next.run(request).await,
        Err(retry) => {
            crate::metrics::rate_limited(crate::metrics::Limit::Http);
            tracing::warn!(%ip, path = %request.uri().path(), "HTTP rate limit hit");
            axum::response::IntoResponse::into_response(crate::error::AppError::RateLimited(retry))
        }
    }
}
