//! Parley's server: HTTP pages rendered by Leptos, static files, and the chat socket.
//!
//! [`start`] is what both `main` and the integration tests call, so the tests exercise
//! the same wiring as production: they only choose the listener (`127.0.0.1:0`).

pub mod accounts;
mod api;
mod chat;
pub mod cluster;
pub mod config;
mod cross_site;
mod error;
mod headers;
mod health;
mod limits;
mod memory;
pub mod metrics;
mod net;
pub use net::bind_listener;
mod observe;
mod page_address;
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
pub use chat::{greeting_hook, PANIC_FOR_TESTS};

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot open the database: {0}")]
    Storage(#[from] storage::StoreError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Cluster(#[from] cluster::ClusterError),
    #[error("server failed: {0}")]
    Serve(#[from] std::io::Error),
}

/// A server that is accepting connections; stop it with [`RunningServer::shutdown`].
pub struct RunningServer {
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    /// The address actually bound, which matters when the port was 0.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where `/metrics` is served on its own, if `[metrics] addr` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Stops accepting, tells every open socket the server is going away, and waits for
    /// the connections to finish.
    pub async fn shutdown(self) -> Result<(), StartError> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Starts stopping, as a signal would, without waiting ([`RunningServer::wait`]).
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
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
            let bound = net::bind_listener(redirect_addr).map_err(|source| StartError::Bind { addr: redirect_addr, source })?;
            Some(bound)
        }
        Some(Err(err)) => return Err(StartError::Serve(std::io::Error::other(format!("tls.redirect_http_addr: {err}")))),
        _ => None,
    };
    let metrics_listener = match config.metrics.addr.trim() {
        "" => None,
        wanted => {
            let metrics_addr: SocketAddr = wanted
                .parse()
                .map_err(|err| StartError::Serve(std::io::Error::other(format!("metrics.addr {wanted:?}: {err}"))))?;
            let bound = TcpListener::bind(metrics_addr).await.map_err(|source| StartError::Bind { addr: metrics_addr, source })?;
            Some(bound)
        }
    };
    let header_timeout = Duration::from_secs(config.limits.header_read_timeout_secs.max(1));
    let send_buffer_bytes = config.limits.socket_send_buffer_bytes;
    let shutdown = CancellationToken::new();
    let state = AppState::build(config, shutdown.clone()).await?;
    let router = routes::router(state.clone());

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
    // The metrics stay up while the server drains, and stop once it has stopped.
    let metrics_addr = match metrics_listener {
        Some(listener) => Some(serve_metrics(listener, state.clone(), state.stopped.clone())?),
        None => None,
    };
    spawn_upkeep(&state);
    let task = tokio::spawn(async move {
        let stopped = state.stopped.clone();
        let result = stop_when_asked(state, handle, serving).await;
        stopped.cancel();
        result
    });
    tracing::info!(%addr, ?metrics_addr, "Parley is listening");
    Ok(RunningServer { addr, metrics_addr, shutdown, task })
}

/// Serves `/metrics` (and the health checks) on a listener of its own, until the
/// server has stopped.
fn serve_metrics(listener: TcpListener, state: AppState, stopped: CancellationToken) -> std::io::Result<SocketAddr> {
    let addr = listener.local_addr()?;
    let app = routes::metrics_router(state);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).with_graceful_shutdown(stopped.cancelled_owned()).await;
    });
    Ok(addr)
}

/// Background chores, each going on while sockets drain and ending once the server has
/// stopped: presence notices, other nodes' joins and leaves checked against the
/// database, the readiness probe, forgetting idle rate-limit buckets, draining metric
/// samples, and giving back memory after a crowd of sockets (this one ends as
/// stopping begins).
fn spawn_upkeep(state: &AppState) {
    tokio::spawn(state.hub.clone().run_presence(state.stopped.clone()));
    tokio::spawn(state.chat.clone().run_membership_checks(state.stopped.clone()));
    tokio::spawn(state.accounts.clone().run_touches(state.stopped.clone()));
    tokio::spawn(health::run_database_probe(state.health.clone(), state.store.clone(), state.stopped.clone()));
    tokio::spawn(metrics::run_upkeep(state.metrics.clone(), state.stopped.clone()));
    tokio::spawn(memory::run_trims(state.hub.clone(), state.shutdown.clone()));
    // Idle rate-limit buckets are dropped every minute, so memory follows activity.
    let (limiters, stop) = (state.limiters.clone(), state.stopped.clone());
    tokio::spawn(async move {
        let mut every_minute = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = every_minute.tick() => limiters.forget_idle(),
                () = stop.cancelled() => return,
            }
        }
    });
}

/// How long stopping waits to note the sessions used in its last second.
const LAST_TOUCHES_TIMEOUT: Duration = Duration::from_secs(5);

/// Waits for the shutdown token, then stops in order: `/readyz` answers 503 at once
/// (and for `readiness_delay_secs`, so a load balancer stops sending new clients), the
/// listener stops accepting, every socket is told to reconnect (1012) once what is
/// queued for it is sent, requests and commits in flight finish, and whatever is still
/// open `grace_secs` after the listener stopped is left behind.
async fn stop_when_asked(
    state: AppState,
    handle: axum_server::Handle<SocketAddr>,
    serving: JoinHandle<std::io::Result<()>>,
) -> std::io::Result<()> {
    state.shutdown.cancelled().await;
    state.health.start_draining();
    let settings = &state.config.shutdown;
    tokio::time::sleep(Duration::from_secs(settings.readiness_delay_secs)).await;
    let grace = Duration::from_secs(settings.grace_secs.max(1));
    let deadline = tokio::time::Instant::now() + grace;
    tracing::info!("stopping: no new connections; open sockets are told to reconnect");
    // The listener stops first, so no socket arrives after the others were told. One
    // whose handshake was already under way is told as it registers (see the hub).
    // Upgraded sockets are not HTTP connections the server waits for: they are told to
    // finish, requests in flight finish, then the sockets are waited for, all within
    // the one deadline.
    handle.graceful_shutdown(Some(grace));
    state.hub.shutdown();
    let served = match tokio::time::timeout_at(deadline, serving).await {
        Ok(joined) => joined.map_err(std::io::Error::other).and_then(|result| result),
        Err(_) => Ok(()),
    };
    state.tasks.close();
    if tokio::time::timeout_at(deadline, state.tasks.wait()).await.is_err() {
        tracing::warn!("some sockets were still open after the shutdown grace period");
    }
    // Sessions used in the last moments are noted before the process ends (after a
    // write under way), unless the database is gone too.
    if tokio::time::timeout(LAST_TOUCHES_TIMEOUT, state.accounts.write_touches()).await.is_err() {
        tracing::warn!("sessions used in the last second were not noted before stopping");
    }
    served
}

/// Binds the configured address and serves until Ctrl-C or SIGTERM.
pub async fn run_until_signal(config: Config) -> Result<(), StartError> {
    let addr = config.site.addr;
    let listener = net::bind_listener(addr).map_err(|source| StartError::Bind { addr, source })?;
    let server = start(config, listener).await?;
    let shutdown = server.shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        shutdown.cancel();
        // An operator who signals again does not want to wait for the drain.
        wait_for_signal().await;
        tracing::warn!("second signal: exiting without waiting for the drain");
        std::process::exit(1);
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
