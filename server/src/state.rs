//! What every request handler can reach, built once at start.

use std::{sync::Arc, time::Duration};

use app::protocol::Limits;
use axum::extract::FromRef;
use leptos::config::LeptosOptions;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    accounts::{Accounts, SessionPolicy},
    chat::Chat,
    config::Config,
    hub::{Hub, QueueLimits},
    limits::Limiters,
    storage::{self, StoreError, StoreOptions},
    time::unix_millis,
};

/// Shared by all handlers; cloning is cheap (reference counts).
#[derive(Clone, FromRef)]
pub struct AppState {
    pub leptos_options: LeptosOptions,
    pub config: Arc<Config>,
    pub hub: Arc<Hub>,
    pub accounts: Arc<Accounts>,
    pub chat: Arc<Chat>,
    pub limiters: Arc<Limiters>,
    /// Cancelled when the server stops.
    pub shutdown: CancellationToken,
    /// Open sockets, so shutdown can wait for them to finish what they were doing.
    pub tasks: TaskTracker,
}

impl AppState {
    /// Opens the database (running migrations) and wires the services together.
    pub async fn build(config: Config, shutdown: CancellationToken) -> Result<Self, StoreError> {
        let store = storage::open(
            &config.database_url(),
            &StoreOptions {
                max_connections: config.chat.db_max_connections,
                sqlite_full_sync: config.chat.sqlite_full_sync,
            },
        )
        .await?;
        let default_room = store.ensure_public_room(&config.chat.default_room, unix_millis()).await?;
        let hub = Arc::new(Hub::new(QueueLimits {
            max_frames: config.limits.outbound_queue_frames,
            max_bytes: config.limits.outbound_queue_bytes,
        }));
        let policy = SessionPolicy {
            idle: Duration::from_secs(config.session.idle_hours * 3600),
            absolute: Duration::from_secs(config.session.max_days * 86_400),
            secure_cookie: config.session.secure_cookie || config.tls.enabled(),
        };
        let limits = Limits {
            max_message_chars: config.chat.max_message_chars,
            history_page: config.chat.history_page_size.max(1),
        };
        let chat = Arc::new(Chat::new(store.clone(), hub.clone(), limits, config.limits.rooms_per_user, default_room.id));
        let accounts = Arc::new(Accounts::new(store, hub.clone(), chat.clone(), policy));
        let limiters = Arc::new(Limiters::new(&config.limits));
        Ok(AppState {
            leptos_options: config.leptos_options(),
            config: Arc::new(config),
            hub,
            accounts,
            chat,
            limiters,
            shutdown,
            tasks: TaskTracker::new(),
        })
    }
}
