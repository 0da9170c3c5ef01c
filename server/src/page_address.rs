//! Refuses requests whose address the page renderer would misread.
//!
//! Leptos renders each page for the address `<scheme>://<Host><path>`, taking the
//! scheme from `X-Forwarded-Proto` and the host from the `Host` header. It panics when
//! that address does not parse (`Host: a b`, or a host name that is not valid IDNA),
//! and a host holding `/` or `?` (`Host: x/r/1?`) would move the path it renders away
//! from the one that was routed and checked for a session. Both are the client's
//! mistake: they get a 400 that says which header is wrong, and nothing is rendered.

use axum::{
    extract::Request,
    http::{header, uri::Authority, HeaderMap, HeaderName, Uri},
    middleware::Next,
    response::{IntoResponse, Response},
};
use leptos_router::location::RequestUrl;

use crate::error::AppError;

const FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Sends a 400 instead of rendering when the request's address cannot be read as
/// the address that was routed.
pub async fn refuse_unreadable_addresses(request: Request, next: Next) -> Response {
    match unreadable_header(request.uri(), request.headers()) {
        None => next.run(request).await,
        Some(refusal) => AppError::BadRequest(refusal).into_response(),
    }
}

/// What is wrong with the address Leptos builds for this request, if anything. The
/// scheme and host are chosen as `leptos_axum` chooses them (a header that is not
/// text is left out by it, and so is fine here).
fn unreadable_header(uri: &Uri, headers: &HeaderMap) -> Option<&'static str> {
    let text_header = |name| headers.get(name).and_then(|value| value.to_str().ok());
    let host = uri.authority().map(Authority::as_str).or_else(|| text_header(header::HOST))?;
    let scheme = uri.scheme_str().or_else(|| text_header(FORWARDED_PROTO)).unwrap_or("http");
    if scheme != "http" && scheme != "https" {
        return Some("X-Forwarded-Proto must be http or https.");
    }
    // A host and port only: no path, query or fragment in it to take over the
    // request's, and no user name.
    let is_host_and_port = host.parse::<Authority>().is_ok() && !host.contains('@');
    let path = uri.path_and_query().map_or("/", |path| path.as_str());
    if !is_host_and_port || RequestUrl::new(&format!("{scheme}://{host}{path}")).parse().is_err() {
        return Some("The Host header is not a valid host name.");
    }
    None
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use proptest::prelude::*;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs.iter().map(|(name, value)| (HeaderName::from_static(name), HeaderValue::from_str(value).unwrap())).collect()
    }

    #[test]
    fn ordinary_addresses_pass_and_misleading_ones_are_refused() {
        let uri: Uri = "/login?next=%2Fr%2F1".parse().unwrap();
        for host in ["chat.example.org", "127.0.0.1:3000", "[::1]:8443", "xn--bcher-kva.example"] {
            assert_eq!(unreadable_header(&uri, &headers(&[("host", host)])), None, "{host}");
            let proxied = headers(&[("host", host), ("x-forwarded-proto", "https")]);
            assert_eq!(unreadable_header(&uri, &proxied), None, "{host} behind a proxy");
        }
        for host in ["a b", "exa mple.org", "xn--.example", "host:port", "", "x/r/1?", "x?", "x#top", "x\\r", "user@chat.example.org"] {
            assert_eq!(unreadable_header(&uri, &headers(&[("host", host)])), Some("The Host header is not a valid host name."), "{host:?}");
        }
        for proto in ["file", "http/r/1?", "ftp", ""] {
            let odd = headers(&[("host", "chat.example.org"), ("x-forwarded-proto", proto)]);
            assert_eq!(unreadable_header(&uri, &odd), Some("X-Forwarded-Proto must be http or https."), "{proto:?}");
        }
        assert_eq!(unreadable_header(&uri, &HeaderMap::new()), None, "no Host at all");
    }

    proptest! {
        /// Whatever the headers hold, the check answers (never panics), and an address
        /// it lets through parses, with the request's own path.
        #[test]
        fn any_host_is_refused_or_keeps_the_routed_path(host in "[ -~]{0,24}", text in app::test_text::any_text()) {
            let uri: Uri = "/r/1".parse().unwrap();
            for host in [host.as_str(), text.as_str()] {
                let mut headers = HeaderMap::new();
                if let Ok(value) = HeaderValue::from_str(host) {
                    headers.insert(header::HOST, value);
                }
                let readable_host = headers.get(header::HOST).and_then(|value| value.to_str().ok());
                if let (None, Some(host)) = (unreadable_header(&uri, &headers), readable_host) {
                    let address = format!("http://{host}/r/1");
                    let parsed = RequestUrl::new(&address).parse();
                    prop_assert!(parsed.as_ref().is_ok_and(|url| url.path() == "/r/1"), "{} read as {:?}", address, parsed);
                }
            }
        }
    }
}
