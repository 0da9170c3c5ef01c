//! Serving HTTPS and WSS with rustls: TLS 1.2 and 1.3 only, certificates from PEM
//! files, and an optional plain-HTTP listener that only redirects to HTTPS.

use std::{net::SocketAddr, sync::Arc};

use axum::{
    http::{header::HOST, StatusCode, Uri},
    response::{IntoResponse, Redirect, Response},
    Router,
};
use axum_server::tls_rustls::RustlsConfig;
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};

use crate::config::TlsConfig;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS certificate {path}: {reason}")]
    Certificate { path: String, reason: String },
    #[error("cannot read the TLS key {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("the TLS certificate and key do not fit together: {0}")]
    Config(#[from] rustls::Error),
}

/// The rustls configuration for `config`'s certificate and key.
pub fn server_config(config: &TlsConfig) -> Result<RustlsConfig, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&config.cert_path)
        .and_then(|certs| certs.collect())
        .map_err(|err| TlsError::Certificate { path: config.cert_path.clone(), reason: err.to_string() })?;
    let key = PrivateKeyDer::from_pem_file(&config.key_path)
        .map_err(|err| TlsError::Key { path: config.key_path.clone(), reason: err.to_string() })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    // HTTP/1.1 only: WebSocket upgrades use it, and one protocol keeps limits simple.
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(RustlsConfig::from_config(Arc::new(server)))
}

/// A router that sends every plain-HTTP request to the same path over HTTPS.
pub fn redirect_router(https_port: u16) -> Router {
    Router::new().fallback(move |headers: axum::http::HeaderMap, uri: Uri| async move {
        redirect_to_https(headers.get(HOST).and_then(|h| h.to_str().ok()), &uri, https_port)
    })
}

fn redirect_to_https(host: Option<&str>, uri: &Uri, https_port: u16) -> Response {
    let Some(host) = host else {
        return (StatusCode::BAD_REQUEST, "Missing Host header").into_response();
    };
    // The host without its port; an IPv6 literal keeps its brackets.
    let name = match host.find(']') {
        Some(end) => &host[..=end],
        None => host.split(':').next().unwrap_or(host),
    };
    let port = if https_port == 443 { String::new() } else { format!(":{https_port}") };
    let path = uri.path_and_query().map_or("/", |pq| pq.as_str());
    Redirect::permanent(&format!("https://{name}{port}{path}")).into_response()
}

/// Where the redirecting listener should bind, if configured.
pub fn redirect_addr(config: &TlsConfig) -> Option<Result<SocketAddr, std::net::AddrParseError>> {
    (!config.redirect_http_addr.trim().is_empty()).then(|| config.redirect_http_addr.trim().parse())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(host: &str, path: &str, port: u16) -> String {
        let response = redirect_to_https(Some(host), &path.parse().unwrap(), port);
        assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT);
        response.headers()["location"].to_str().unwrap().to_string()
    }

    #[test]
    fn plain_http_is_sent_to_the_same_place_over_https() {
        assert_eq!(location("chat.example", "/r/general?x=1", 443), "https://chat.example/r/general?x=1");
        assert_eq!(location("chat.example:8080", "/", 8443), "https://chat.example:8443/");
        assert_eq!(location("[::1]:8080", "/login", 8443), "https://[::1]:8443/login");
    }
}
