//! Parley's server: HTTP pages rendered by Leptos, static files, and the chat socket.
//!
//! [`start`] is what both `main` and the integration tests call, so the tests exercise
//! the same wiring as production: they only choose the listener (`127.0.0.1:0`).

pub mod accounts;
mod api;
mod chat;
pub mod config;
mod cross_site;
mod error;
mod headers;
mod limits;
mod net;
pub mod hub;
mod password;
mod recent_authors;
mod routes;
mod state;
pub mod storage;
pub mod telemetry;
mod time;
mod tls;
mod web_auth;
mod ws;

use std::net::SocketAddr;

use std::time::Duration;

use axum_server::accept::{TcpConfigAcceptor, TcpSocketConfig};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{config::Config, state::AppState};

#[cfg(feature = "test-hooks")]
pub use chat::PANIC_FOR_TESTS;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot open the database: {0}")]
    Storage(#[from] storage::StoreError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("server failed: {0}")]
    Serve(#[from] std::io::Error),
}

/// How long shutdown waits for open sockets to finish their current request.
const SOCKET_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// A server that is accepting connections; stop it with [`RunningServer::shutdown`].
pub struct RunningServer {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    /// The address actually bound, which matters when the port was 0.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, tells every open socket the server is going away, and waits for
    /// the connections to finish.
    pub async fn shutdown(self) -> Result<(), StartError> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Waits until the server stops on its own (after [`RunningServer::shutdown`] from
    /// elsewhere or a fatal error).
    pub async fn wait(self) -> Result<(), StartError> {
        match self.task.await {
            Ok(result) => Ok(result?),
            Err(join) => Err(StartError::Serve(std::io::Error::other(join))),
        }
    }
}

/// Starts serving on `listener` and returns at once. With a certificate configured the
/// listener speaks HTTPS/WSS, otherwise plain HTTP/WS.
pub async fn start(config: Config, listener: TcpListener) -> Result<RunningServer, StartError> {
    let addr = listener.local_addr()?;
    let tls = if config.tls.enabled() { Some(tls::server_config(&config.tls)?) } else { None };
    let redirect = match tls::redirect_addr(&config.tls) {
        Some(Ok(redirect_addr)) if tls.is_some() => {
            let bound = TcpListener::bind(redirect_addr)
                .await
                .map_err(|source| StartError::Bind { addr: redirect_addr, source })?;
            Some(bound)
        }
        Some(Err(err)) => return Err(StartError::Serve(std::io::Error::other(format!("tls.redirect_http_addr: {err}")))),
        _ => None,
    };
    let header_timeout = Duration::from_secs(config.limits.header_read_timeout_secs.max(1));
    let send_buffer_bytes = config.limits.socket_send_buffer_bytes;
    let shutdown = CancellationToken::new();
    let state = AppState::build(config, shutdown.clone()).await?;
    let (hub, tasks, limiters) = (state.hub.clone(), state.tasks.clone(), state.limiters.clone());
    let router = routes::router(state);

    let handle: axum_server::Handle<SocketAddr> = axum_server::Handle::new();
    let listener = listener.into_std()?;
    if send_buffer_bytes > 0 {
        // Accepted sockets inherit the listener's buffer size (and lose autotuning).
        socket2::SockRef::from(&listener).set_send_buffer_size(send_buffer_bytes)?;
    }
    let mut server = axum_server::from_tcp(listener)?.handle(handle.clone()).first_request_timeout(header_timeout);
    // A client trickling its headers (slowloris) is cut off instead of holding a slot.
    server.http_builder().http1().timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(header_timeout);
    // Nagle's algorithm holds small frames back for up to 40 ms; chat frames are small
    // and latency matters more than packet count.
    let tcp = TcpConfigAcceptor::new(TcpSocketConfig::new().nodelay(true));
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    let serving = match tls {
        Some(tls) => {
            let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(tls).acceptor(tcp);
            tokio::spawn(server.acceptor(acceptor).serve(service))
        }
        None => tokio::spawn(server.acceptor(tcp).serve(service)),
    };
    if let Some(redirect) = redirect {
        let stop = shutdown.clone();
        let app = tls::redirect_router(addr.port());
        tokio::spawn(async move {
            let _ = axum::serve(redirect, app).with_graceful_shutdown(stop.cancelled_owned()).await;
        });
    }
    tokio::spawn(hub.clone().run_presence(shutdown.clone()));
    // Idle rate-limit buckets are dropped every minute, so memory follows activity.
    let sweep_stop = shutdown.clone();
    tokio::spawn(async move {
        let mut every_minute = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = every_minute.tick() => limiters.forget_idle(),
                () = sweep_stop.cancelled() => return,
            }
        }
    });
    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        stop.cancelled().await;
        // Upgraded sockets are not HTTP connections the server waits for: tell them
        // to close, let HTTP requests in flight finish, then wait for the sockets.
        hub.shutdown();
        handle.graceful_shutdown(Some(SOCKET_DRAIN_TIMEOUT));
        let served = serving.await.map_err(std::io::Error::other).and_then(|result| result);
        tasks.close();
        if tokio::time::timeout(SOCKET_DRAIN_TIMEOUT, tasks.wait()).await.is_err() {
            tracing::warn!("some sockets were still open after the shutdown grace period");
        }
        served
    });
    tracing::info!(%addr, "Parley is listening");
    Ok(RunningServer { addr, shutdown, task })
}

/// Binds the configured address and serves until Ctrl-C or SIGTERM.
pub async fn run_until_signal(config: Config) -> Result<(), StartError> {
    let addr = config.site.addr;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    let server = start(config, listener).await?;
    let shutdown = server.shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        shutdown.cancel();
    });
    server.wait().await
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler cannot fail on Unix");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
