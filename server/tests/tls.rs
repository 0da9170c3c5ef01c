//! HTTPS and WSS served by Parley itself, with a certificate made at test time.

mod support;

use std::{net::SocketAddr, sync::Arc};

use app::protocol::ServerMsg;
use futures::StreamExt;
use support::{
    databases::TestDb,
    server::{relaxed, session_cookie, TestServer, PASSWORD},
};
use tokio_tungstenite::{
    tungstenite::{client::IntoClientRequest, http::HeaderValue, Message},
    Connector,
};

struct Certificate {
    pem: String,
    _dir: tempfile::TempDir,
    cert_path: String,
    key_path: String,
}

fn self_signed() -> Certificate {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, certified.cert.pem()).unwrap();
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).unwrap();
    Certificate {
        pem: certified.cert.pem(),
        cert_path: cert_path.to_string_lossy().into_owned(),
        key_path: key_path.to_string_lossy().into_owned(),
        _dir: dir,
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn tls_server(cert: &Certificate, redirect_port: Option<u16>) -> TestServer {
    let mut config = relaxed();
    config.tls.cert_path = cert.cert_path.clone();
    config.tls.key_path = cert.key_path.clone();
    if let Some(port) = redirect_port {
        config.tls.redirect_http_addr = format!("127.0.0.1:{port}");
    }
    TestServer::start_with(TestDb::sqlite().await, config).await
}

fn https_client(cert: &Certificate, addr: SocketAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.pem.as_bytes()).unwrap())
        .resolve("localhost", addr)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn rustls_client(cert: &Certificate, versions: &[&'static rustls::SupportedProtocolVersion]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let der = rustls::pki_types::CertificateDer::from_pem_slice(cert.pem.as_bytes()).unwrap();
    roots.add(der).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

use rustls::pki_types::pem::PemObject;

#[tokio::test]
async fn pages_are_served_over_https_with_hsts_and_secure_cookies() {
    let cert = self_signed();
    let server = tls_server(&cert, None).await;
    let port = server.addr().port();
    let client = https_client(&cert, server.addr());
    let page = client.get(format!("https://localhost:{port}/login")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["strict-transport-security"].to_str().unwrap().starts_with("max-age=31536000"));

    let registered = client
        .post(format!("https://localhost:{port}/api/register"))
        .form(&[("username", "alice"), ("display_name", ""), ("password", PASSWORD), ("next", "/")])
        .send()
        .await
        .unwrap();
    let set_cookie = registered.headers()["set-cookie"].to_str().unwrap();
    assert!(set_cookie.contains("Secure"), "{set_cookie}");
    assert!(session_cookie(&registered).is_some());

    // Plain HTTP on the TLS port gets nowhere.
    let plain = reqwest::get(format!("http://{}/login", server.addr())).await;
    assert!(!plain.is_ok_and(|r| r.status().is_success()));
    server.stop().await;
}

#[tokio::test]
async fn the_chat_socket_works_over_wss_with_tls_1_2_and_1_3() {
    let cert = self_signed();
    let server = tls_server(&cert, None).await;
    let port = server.addr().port();
    let registered = https_client(&cert, server.addr())
        .post(format!("https://localhost:{port}/api/register"))
        .form(&[("username", "alice"), ("display_name", ""), ("password", PASSWORD), ("next", "/")])
        .send()
        .await
        .unwrap();
    let cookie = session_cookie(&registered).unwrap();
    for versions in [&[&rustls::version::TLS13][..], &[&rustls::version::TLS12][..]] {
        let mut request = format!("wss://localhost:{port}{}", app::protocol::socket_path(false)).into_client_request().unwrap();
        request.headers_mut().insert("cookie", HeaderValue::from_str(&cookie).unwrap());
        request.headers_mut().insert("origin", HeaderValue::from_str(&format!("https://localhost:{port}")).unwrap());
        let tcp = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
        let connector = Connector::Rustls(rustls_client(&cert, versions));
        let (mut socket, _) = tokio_tungstenite::client_async_tls_with_config(request, tcp, None, Some(connector)).await.unwrap();
        let hello = loop {
            match socket.next().await {
                Some(Ok(Message::Text(text))) => break serde_json::from_str::<ServerMsg>(&text).unwrap(),
                Some(Ok(_)) => {}
                other => panic!("the socket ended before its greeting: {other:?}"),
            }
        };
        assert!(matches!(hello, ServerMsg::Hello { ref me, .. } if me.username == "alice"), "{hello:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn plain_http_is_redirected_to_https() {
    let cert = self_signed();
    let redirect_port = free_port();
    let server = tls_server(&cert, Some(redirect_port)).await;
    let response = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("http://127.0.0.1:{redirect_port}/r/general?x=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 308);
    assert_eq!(response.headers()["location"], format!("https://127.0.0.1:{}/r/general?x=1", server.addr().port()));
    server.stop().await;
}
