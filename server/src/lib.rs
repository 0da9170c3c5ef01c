//! Parley's server: HTTP pages rendered by Leptos, static files, and the chat socket.
//!
//! [`start`] is what both `main` and the integration tests call, so the tests exercise
//! the same wiring as production: they only choose the listener (`127.0.0.1:0`).

pub mod accounts;
mod api;
mod chat;
pub mod config;
mod error;
pub mod hub;
mod password;
mod routes;
mod state;
pub mod storage;
pub mod telemetry;
mod time;
mod web_auth;
mod ws;

use std::net::SocketAddr;

use axum::serve::ListenerExt;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{config::Config, state::AppState};

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot open the database: {0}")]
    Storage(#[from] storage::StoreError),
    #[error("server failed: {0}")]
    Serve(#[from] std::io::Error),
}

/// How long shutdown waits for open sockets to finish their current request.
const SOCKET_DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

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

/// Starts serving on `listener` and returns at once.
pub async fn start(config: Config, listener: TcpListener) -> Result<RunningServer, StartError> {
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let state = AppState::build(config, shutdown.clone()).await?;
    let (hub, tasks) = (state.hub.clone(), state.tasks.clone());
    let router = routes::router(state);
    // Nagle's algorithm holds small frames back for up to 40 ms; chat frames are small
    // and latency matters more than packet count.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown({
                let stop = stop.clone();
                async move {
                    stop.cancelled().await;
                    // Upgraded sockets are not HTTP connections axum waits for: tell
                    // them to close, then wait for them below.
                    hub.shutdown();
                }
            })
            .await;
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
