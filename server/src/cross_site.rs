//! Refusing cross-site writes (CSRF). The session cookie is `SameSite=Lax`, which keeps
//! it off cross-site POSTs in current browsers, but not in every browser, and not for
//! "same-site" sibling domains. So every request that changes something (any method but
//! GET, HEAD and OPTIONS) must come from this site: its `Origin` must be the site's own
//! or an allowed one, or, where a browser sent no `Origin`, its `Sec-Fetch-Site` must
//! say `same-origin` (or `none`: typed by the person). Requests with neither header do
//! not come from a browser, so they carry no ambient cookies to abuse and pass.

use axum::{
    extract::{Request, State},
    http::{HeaderMap, Method},
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::{error::AppError, net, state::AppState};

/// Whether a request may go on.
pub fn allowed(method: &Method, headers: &HeaderMap, tls: bool, allowed_origins: &[String]) -> bool {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return true;
    }
    if headers.contains_key(axum::http::header::ORIGIN) {
        return net::origin_allowed(headers, tls, allowed_origins);
    }
    match headers.get("sec-fetch-site").map(|value| value.to_str().unwrap_or("cross-site")) {
        Some(site) => matches!(site, "same-origin" | "none"),
        None => true,
    }
}

pub async fn refuse_cross_site_writes(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let config = &state.config;
    let tls = net::over_tls(request.headers(), config.tls.enabled(), config.security.trust_forwarded_for);
    if allowed(request.method(), request.headers(), tls, &config.security.allowed_origins) {
        return next.run(request).await;
    }
    let origin = request.headers().get(axum::http::header::ORIGIN).and_then(|o| o.to_str().ok()).unwrap_or("-").to_string();
    tracing::warn!(path = %request.uri().path(), %origin, "cross-site request refused");
    AppError::Forbidden("Requests from other sites are not accepted.").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::tests::headers;

    #[test]
    fn writes_must_come_from_this_site() {
        let host = ("host", "chat.example");
        let check = |pairs: &[(&str, &str)]| allowed(&Method::POST, &headers(pairs), false, &[]);
        assert!(check(&[host, ("origin", "http://chat.example")]));
        assert!(!check(&[host, ("origin", "https://evil.example")]));
        assert!(!check(&[host, ("origin", "null")]));
        assert!(!check(&[host, ("origin", "https://evil.example"), ("sec-fetch-site", "same-origin")]), "Origin decides");
        assert!(check(&[host, ("sec-fetch-site", "same-origin")]));
        assert!(check(&[host, ("sec-fetch-site", "none")]));
        assert!(!check(&[host, ("sec-fetch-site", "cross-site")]));
        assert!(!check(&[host, ("sec-fetch-site", "same-site")]));
        assert!(check(&[host]), "not a browser: no ambient cookies");
        assert!(allowed(&Method::GET, &headers(&[host, ("origin", "https://evil.example")]), false, &[]), "reads pass");
        assert!(allowed(&Method::POST, &headers(&[host, ("origin", "https://app.example")]), false, &["https://app.example".into()]));
    }
}
