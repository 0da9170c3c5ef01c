//! What every request handler can reach.

use std::sync::Arc;

use axum::extract::FromRef;
use leptos::config::LeptosOptions;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// Shared by all handlers; cloning is cheap (reference counts).
#[derive(Clone, FromRef)]
pub struct AppState {
    pub leptos_options: LeptosOptions,
    pub config: Arc<Config>,
    /// Cancelled when the server stops, so long-lived sockets can say goodbye.
    pub shutdown: CancellationToken,
}

impl AppState {
    pub fn new(config: Config, shutdown: CancellationToken) -> Self {
        AppState {
            leptos_options: config.leptos_options(),
            config: Arc::new(config),
            shutdown,
        }
    }
}
