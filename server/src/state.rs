//! What every request handler can reach, built once at start.

use std::{sync::Arc, time::Duration};

use app::protocol::Limits;
use axum::extract::FromRef;
use leptos::config::LeptosOptions;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    accounts::{Accounts, SessionPolicy},
    chat::Chat,
    cluster::{self, ClusterHealth},
    config::Config,
    health::{Health, Readiness},
    hub::{Hub, QueueLimits},
    limits::Limiters,
    metrics,
    storage::{self, Store, StoreOptions},
    time::unix_millis,
};

/// Shared by all handlers, behind one reference count: axum clones the state for
/// every request and again for each middleware layer, and cloning (then dropping) a
/// dozen counts and Leptos's options field by field took 5 % of the server's CPU in a
/// storm of connects.
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// For Leptos's handlers, which take their options from the state.
impl FromRef<AppState> for LeptosOptions {
    fn from_ref(state: &AppState) -> Self {
        state.leptos_options.clone()
    }
}

/// What [`AppState`] shares.
pub struct Services {
    pub leptos_options: LeptosOptions,
    pub config: Arc<Config>,
    pub hub: Arc<Hub>,
    pub accounts: Arc<Accounts>,
    pub chat: Arc<Chat>,
    pub limiters: Arc<Limiters>,
    pub store: Arc<dyn Store>,
    /// Renders the metrics.
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// Readiness: draining, and whether the database answers.
    pub health: Arc<Health>,
    /// The link to the other nodes, when there are any.
    pub cluster: Option<Arc<ClusterHealth>>,
    /// Login and registration counts shared by all nodes, when there are several.
    pub shared_limits: Option<cluster::SharedLimits>,
    /// Cancelled when the server is asked to stop (a signal, or a test).
    pub shutdown: CancellationToken,
    /// Cancelled once it has stopped serving: background chores end with it, not
    /// while sockets are still draining.
    pub stopped: CancellationToken,
    /// Open sockets, so shutdown can wait for them to finish what they were doing.
    pub tasks: TaskTracker,
}

impl AppState {
    /// Opens the database (running migrations) and wires the services together.
    pub async fn build(config: Config, shutdown: CancellationToken) -> Result<Self, crate::StartError> {
        // First, so that everything from here on is counted.
        let metrics = metrics::install();
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
        // A quarter of what may wait for one socket: a page still fits behind frames
        // already waiting, and the writer takes it whole.
        let page_bytes = config.limits.outbound_queue_bytes / 4;
        let chat = Arc::new(Chat::new(store.clone(), hub.clone(), limits, page_bytes, config.limits.rooms_per_user, default_room.id));
        let accounts = Arc::new(Accounts::new(store.clone(), hub.clone(), chat.clone(), policy));
        let limiters = Arc::new(Limiters::new(&config.limits));
        let stopped = CancellationToken::new();
        let (cluster, shared_limits) = match config.cluster.redis_url.trim() {
            "" => (None, None),
            redis_url => {
                let settings = cluster::Settings {
                    redis_url: redis_url.to_string(),
                    node: config.node_name().into(),
                    presence_ttl: Duration::from_secs(config.cluster.presence_ttl_secs.max(1)),
                };
                let linked = cluster::start(settings, hub.clone(), store.clone(), stopped.clone()).await?;
                (Some(linked.health), Some(linked.limits))
            }
        };
        Ok(AppState(Arc::new(Services {
            leptos_options: config.leptos_options(),
            config: Arc::new(config),
            hub,
            accounts,
            chat,
            limiters,
            store,
            metrics,
            health: Arc::new(Health::default()),
            cluster,
            shared_limits,
            shutdown,
            stopped,
            tasks: TaskTracker::new(),
        })))
    }

    /// Whether the node should get traffic, and how its links are.
    pub fn readiness(&self) -> Readiness {
        Readiness { redis: self.cluster.as_ref().map(|cluster| cluster.is_connected()), ..self.health.readiness() }
    }

    /// The present, for the metrics.
    pub fn snapshot(&self) -> metrics::Snapshot {
        let hub = self.hub.stats();
        let pool = self.store.pool_usage();
        metrics::Snapshot {
            sockets: hub.sockets,
            users_online: hub.users,
            queue_max_frames: hub.queue_max_frames,
            queue_bytes: hub.queue_bytes,
            db_pool_size: pool.size,
            db_pool_idle: pool.idle,
            ready: self.health.readiness().is_ready(),
            redis_up: self.cluster.as_ref().map(|cluster| cluster.is_connected()),
        }
    }
}
