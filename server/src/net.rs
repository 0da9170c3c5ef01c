//! Who is on the other end: the client's address, and whether a socket handshake
//! comes from a page this site served (cross-site WebSocket hijacking defence).

use std::{
    io,
    net::{IpAddr, SocketAddr},
};

use axum::{
    extract::ConnectInfo,
    http::{header, HeaderMap, Extensions},
};

/// Connections the kernel holds for the server before it accepts them (capped by
/// `net.core.somaxconn`). A restart brings every open page back at once; with the
/// usual 128 the rest of such a storm's handshakes are dropped and their clients wait
/// a second or more to try again (375 of 10,000 in the load generator's storm).
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` for the server, with a backlog that a reconnect storm fits in.
pub fn bind_listener(addr: SocketAddr) -> io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    // As `TcpListener::bind` does: a restarted server can bind at once.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    if let Some(cap) = std::fs::read_to_string("/proc/sys/net/core/somaxconn").ok().and_then(|text| text.trim().parse::<u32>().ok()) {
        if cap < LISTEN_BACKLOG {
            tracing::warn!(somaxconn = cap, wanted = LISTEN_BACKLOG, "the kernel caps the listen backlog; raise net.core.somaxconn for reconnect storms");
        }
    }
    socket.listen(LISTEN_BACKLOG)
}

/// The client's address: the TCP peer, or (only when configured to trust a load
/// balancer) the last `X-Forwarded-For` entry, which that balancer appended.
pub fn client_ip(extensions: &Extensions, headers: &HeaderMap, trust_forwarded_for: bool) -> IpAddr {
    if trust_forwarded_for {
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .filter_map(|entry| entry.trim().parse::<IpAddr>().ok())
            .last();
        if let Some(ip) = forwarded {
            return ip;
        }
    }
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |ConnectInfo(addr)| addr.ip())
}

/// Whether the browser reached this site over TLS: served with TLS here, or (only when
/// configured to trust a load balancer) the balancer says it terminated TLS.
pub fn over_tls(headers: &HeaderMap, tls: bool, trust_forwarded: bool) -> bool {
    tls || (trust_forwarded && headers.get("x-forwarded-proto").is_some_and(|proto| proto.as_bytes().eq_ignore_ascii_case(b"https")))
}

/// Whether a socket handshake's `Origin` may connect: absent (not a browser, so no
/// ambient cookies to abuse), equal to this site's own origin as addressed by the
/// request, or listed in `allowed`. Comparison is exact on scheme, host and port.
pub fn origin_allowed(headers: &HeaderMap, tls: bool, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else { return true };
    let Ok(origin) = origin.to_str() else { return false };
    if allowed.iter().any(|ok| ok == origin) {
        return true;
    }
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else { return false };
    let scheme = if tls { "https" } else { "http" };
    let default_port = if tls { ":443" } else { ":80" };
    let own = format!("{scheme}://{host}");
    origin == own || format!("{origin}{default_port}") == own
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A header map from name/value pairs (tests of request checks share it).
    pub(crate) fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
        }
        map
    }

    /// A storm of handshakes the server has not accepted yet all get through at once;
    /// with the default backlog of 128 the rest wait for the client to retry SYN (1 s).
    #[tokio::test]
    async fn the_listener_holds_a_reconnect_storm_until_it_is_accepted() {
        let listener = bind_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let storm = (0..600).map(|_| tokio::time::timeout(std::time::Duration::from_millis(800), tokio::net::TcpStream::connect(addr)));
        let connected = futures::future::join_all(storm).await;
        let waiting = connected.iter().filter(|outcome| !matches!(outcome, Ok(Ok(_)))).count();
        assert_eq!(waiting, 0, "handshakes left waiting while none was accepted");
        drop(listener);
    }

    #[test]
    fn only_the_sites_own_origin_or_listed_ones_pass() {
        let site = [("host", "chat.example:3000")];
        assert!(origin_allowed(&headers(&[site[0], ("origin", "http://chat.example:3000")]), false, &[]));
        assert!(!origin_allowed(&headers(&[site[0], ("origin", "https://chat.example:3000")]), false, &[]), "scheme");
        assert!(!origin_allowed(&headers(&[site[0], ("origin", "http://chat.example:3001")]), false, &[]), "port");
        assert!(!origin_allowed(&headers(&[site[0], ("origin", "http://evil.example")]), false, &[]));
        assert!(!origin_allowed(&headers(&[site[0], ("origin", "http://chat.example:3000.evil.example")]), false, &[]));
        assert!(origin_allowed(&headers(&[site[0], ("origin", "http://evil.example")]), false, &["http://evil.example".into()]));
        assert!(origin_allowed(&headers(&[site[0]]), false, &[]), "no Origin: not a browser");
        assert!(origin_allowed(&headers(&[("host", "chat.example:443"), ("origin", "https://chat.example")]), true, &[]));
        assert!(!origin_allowed(&headers(&[("origin", "http://chat.example")]), false, &[]), "no Host to compare with");
    }

    #[test]
    fn a_balancer_saying_https_counts_only_when_trusted() {
        let behind = headers(&[("x-forwarded-proto", "https")]);
        assert!(over_tls(&behind, false, true));
        assert!(!over_tls(&behind, false, false), "anyone can send the header");
        assert!(!over_tls(&headers(&[("x-forwarded-proto", "http")]), false, true));
        assert!(over_tls(&HeaderMap::new(), true, false));
    }

    #[test]
    fn forwarded_addresses_count_only_when_trusted() {
        let mut extensions = Extensions::new();
        extensions.insert(ConnectInfo(SocketAddr::from(([10, 0, 0, 5], 4000))));
        let forwarded = headers(&[("x-forwarded-for", "203.0.113.9, 198.51.100.4")]);
        assert_eq!(client_ip(&extensions, &forwarded, false), IpAddr::from([10, 0, 0, 5]));
        assert_eq!(client_ip(&extensions, &forwarded, true), IpAddr::from([198, 51, 100, 4]));
        assert_eq!(client_ip(&extensions, &HeaderMap::new(), true), IpAddr::from([10, 0, 0, 5]));
    }
}
