//! Refuses requests whose address the page renderer could not read.
//!
//! Leptos renders each page for the address `<scheme>://<Host><path>`, taking the
//! scheme from `X-Forwarded-Proto` and the host from the `Host` header, and it panics
//! when that address does not parse (`Host: a b`, or a host name that is not valid
//! IDNA). The panic would only cost that one request a 500, but a malformed header is
//! the client's mistake: it gets a 400 that says so, and nothing is logged as a bug.

use axum::{
    extract::Request,
    http::{header, HeaderMap, Uri},
    middleware::Next,
    response::{IntoResponse, Response},
};
use leptos_router::location::RequestUrl;

use crate::error::AppError;

/// Sends a 400 instead of rendering when the request's address cannot be read.
pub async fn refuse_unreadable_addresses(request: Request, next: Next) -> Response {
    if page_address_is_readable(request.uri(), request.headers()) {
        next.run(request).await
    } else {
        AppError::BadRequest("The Host header is not a valid host name.").into_response()
    }
}

/// Whether the address Leptos builds for this request parses, with the same choice of
/// scheme and host as `leptos_axum` makes (a `Host` that is not text is left out by it,
/// and so is fine here).
fn page_address_is_readable(uri: &Uri, headers: &HeaderMap) -> bool {
    let text_header = |name| headers.get(name).and_then(|value| value.to_str().ok());
    let Some(host) = uri.authority().map(|authority| authority.as_str()).or_else(|| text_header(header::HOST)) else {
        return true;
    };
    let scheme = uri.scheme_str().or_else(|| text_header(header::HeaderName::from_static("x-forwarded-proto"))).unwrap_or("http");
    let path = uri.path_and_query().map_or("/", |path| path.as_str());
    RequestUrl::new(&format!("{scheme}://{host}{path}")).parse().is_ok()
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use proptest::prelude::*;

    use super::*;

    fn with_host(host: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        headers
    }

    #[test]
    fn ordinary_hosts_are_readable_and_broken_ones_are_not() {
        let uri: Uri = "/login?next=%2Fr%2F1".parse().unwrap();
        for host in ["chat.example.org", "127.0.0.1:3000", "[::1]:8443", "xn--bcher-kva.example"] {
            assert!(page_address_is_readable(&uri, &with_host(host)), "{host}");
        }
        for host in ["a b", "exa mple.org", "xn--.example", "host:port"] {
            assert!(!page_address_is_readable(&uri, &with_host(host)), "{host}");
        }
        assert!(page_address_is_readable(&uri, &HeaderMap::new()), "no Host at all");
    }

    proptest! {
        /// Whatever the Host header holds, the check answers (never panics), and what
        /// it accepts the renderer can read.
        #[test]
        fn any_host_is_either_refused_or_readable(host in app::test_text::any_text(), proto in app::test_text::any_text()) {
            let uri: Uri = "/r/1".parse().unwrap();
            let mut headers = HeaderMap::new();
            if let Ok(value) = HeaderValue::from_str(&host) {
                headers.insert(header::HOST, value);
            }
            if let Ok(value) = HeaderValue::from_str(&proto) {
                headers.insert("x-forwarded-proto", value);
            }
            let readable = page_address_is_readable(&uri, &headers);
            let scheme = headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).unwrap_or("http");
            if let (true, Some(host)) = (readable, headers.get(header::HOST).and_then(|v| v.to_str().ok())) {
                let address = format!("{scheme}://{host}/r/1");
                prop_assert!(RequestUrl::new(&address).parse().is_ok(), "{}", address);
            }
        }
    }
}
