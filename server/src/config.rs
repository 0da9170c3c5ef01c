//! Runtime settings: `Leptos.toml`, then environment variables on top.
//!
//! Every key has a default, so the binary also starts with no file at all. The file is
//! `Leptos.toml` in the working directory unless `PARLEY_CONFIG` names another one.
//! Environment variables win over the file, in this order (later wins):
//! 1. `LEPTOS_SITE_ADDR`, `LEPTOS_SITE_ROOT`, `LEPTOS_SITE_PKG_DIR`, `LEPTOS_OUTPUT_NAME`,
//!    `LEPTOS_ENV`, `LEPTOS_RELOAD_PORT`: set by `cargo leptos watch/serve/end-to-end`;
//! 2. `DATABASE_URL` and `REDIS_URL`, the usual names for those addresses;
//! 3. `PARLEY_<SECTION>_<KEY>`, for example `PARLEY_CHAT_MAX_MESSAGE_CHARS=2000`.

use std::{net::SocketAddr, path::PathBuf};

use figment::{
    providers::{Env, Format, Serialized, Toml},
    Figment,
};
use serde::{Deserialize, Serialize};

/// All settings the server reads at start.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub site: SiteConfig,
    pub chat: ChatConfig,
    pub session: SessionConfig,
    pub limits: LimitsConfig,
    pub security: SecurityConfig,
    pub tls: TlsConfig,
    pub metrics: MetricsConfig,
    pub log: LogConfig,
    pub shutdown: ShutdownConfig,
    pub cluster: ClusterConfig,
}

/// Where the site is served from and where cargo-leptos put its files.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SiteConfig {
    /// Address and port to listen on.
    pub addr: SocketAddr,
    /// `dev` or `prod`; `dev` enables the live-reload script for `cargo leptos watch`.
    pub env: String,
    /// Folder holding the built site (`pkg/`, favicon, manifest).
    pub root: String,
    /// Sub-folder of `root` with the WASM, JS and CSS bundles.
    pub pkg_dir: String,
    /// Base name of the bundles (`parley.wasm`, `parley.js`, `parley.css`).
    pub output_name: String,
    /// Port of cargo-leptos's live-reload socket in `dev`.
    pub reload_port: u32,
}

impl Default for SiteConfig {
    fn default() -> Self {
        SiteConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 3000)),
            env: "prod".into(),
            root: "target/site".into(),
            pkg_dir: "pkg".into(),
            output_name: "parley".into(),
            reload_port: 3001,
        }
    }
}

/// What cargo-leptos names its list of the bundles' content hashes.
pub const HASH_FILE: &str = "hash.txt";

/// The chat's own settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChatConfig {
    /// Folder for the embedded database; created on first start.
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; empty means `sqlite://<data_dir>/parley.db`.
    pub database_url: String,
    /// Most database connections the server opens for requests; one more is kept for
    /// writing posts (count both when sizing PostgreSQL's `max_connections`).
    pub db_max_connections: u32,
    /// SQLite: wait for the disk on every commit (survives power loss, not only crashes).
    pub sqlite_full_sync: bool,
    /// The public room every new account joins; created at start if missing.
    pub default_room: String,
    /// Longest message, in characters.
    pub max_message_chars: u32,
    /// Messages per history page (opening a room, scrolling up).
    pub history_page_size: u32,
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            data_dir: PathBuf::from("data"),
            database_url: String::new(),
            db_max_connections: 8,
            sqlite_full_sync: true,
            default_room: "general".into(),
            max_message_chars: 4000,
            history_page_size: 50,
        }
    }
}

/// How long a login lasts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// A session unused for this long ends.
    pub idle_hours: u64,
    /// A session ends this long after login, used or not.
    pub max_days: u64,
    /// Mark the cookie `Secure` (only sent over HTTPS). Set it when a TLS proxy fronts
    /// Parley; it is set automatically when Parley serves TLS itself.
    pub secure_cookie: bool,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig { idle_hours: 7 * 24, max_days: 30, secure_cookie: false }
    }
}

/// Bounds that keep one connection from costing the server too much.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest WebSocket message accepted from a client, in bytes.
    pub max_ws_message_bytes: usize,
    /// Frames that may wait for one slow connection before it is disconnected.
    pub outbound_queue_frames: usize,
    /// Bytes that may wait for one slow connection before it is disconnected.
    pub outbound_queue_bytes: usize,
    /// The kernel's send buffer per accepted connection (Linux doubles it); 0 leaves
    /// the kernel's autotuning. Bounds how much a stalled client can hide in the
    /// kernel before its outbound queue fills.
    pub socket_send_buffer_bytes: usize,
    /// Seconds between server pings on an idle socket.
    pub heartbeat_interval_secs: u64,
    /// A socket silent for this many seconds (no pong, no frame) is closed.
    pub heartbeat_timeout_secs: u64,
    /// Chat messages one connection may post in a burst…
    pub messages_burst: u32,
    /// …refilled at this many per second (10 per 10 s by default).
    pub messages_per_second: f64,
    /// Frames of any kind one connection may send in a burst…
    pub frames_burst: u32,
    /// …refilled at this many per second.
    pub frames_per_second: f64,
    /// Refused frames in a row after which the connection is closed (1008).
    pub abuse_close_after: u32,
    /// Open sockets per user.
    pub sockets_per_user: usize,
    /// Open sockets per client address.
    pub sockets_per_ip: usize,
    /// HTTP requests (pages, files, API, socket upgrades) per client address: burst…
    pub http_burst: u32,
    /// …and sustained rate per second.
    pub http_per_second: f64,
    /// Login attempts per minute, per account and per client address.
    pub logins_per_minute: u32,
    /// New accounts per hour per client address.
    pub registrations_per_hour: u32,
    /// Rooms and conversations one user may be in.
    pub rooms_per_user: u32,
    /// Largest HTTP request body, in bytes.
    pub http_body_bytes: usize,
    /// An HTTP request not answered within this many seconds gets 408.
    pub request_timeout_secs: u64,
    /// A client must send its request headers within this many seconds.
    pub header_read_timeout_secs: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_ws_message_bytes: 64 * 1024,
            outbound_queue_frames: 1024,
            outbound_queue_bytes: 1024 * 1024,
            socket_send_buffer_bytes: 128 * 1024,
            heartbeat_interval_secs: 25,
            heartbeat_timeout_secs: 35,
            messages_burst: 10,
            messages_per_second: 1.0,
            frames_burst: 60,
            frames_per_second: 20.0,
            abuse_close_after: 100,
            sockets_per_user: 10,
            sockets_per_ip: 100,
            http_burst: 200,
            http_per_second: 50.0,
            logins_per_minute: 5,
            registrations_per_hour: 10,
            rooms_per_user: 128,
            http_body_bytes: 64 * 1024,
            request_timeout_secs: 30,
            header_read_timeout_secs: 10,
        }
    }
}

/// Who may talk to the server, and how to tell who they are.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// Origins (scheme://host[:port]) allowed to open the chat socket, besides the
    /// site itself (the origin matching the request's Host).
    pub allowed_origins: Vec<String>,
    /// Take the client address from the last `X-Forwarded-For` entry. Only behind a
    /// load balancer that sets it; otherwise clients could pick their own address.
    pub trust_forwarded_for: bool,
}

/// Serving HTTPS and WSS directly (rustls, TLS 1.2 and 1.3).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain; TLS is on when this and `key_path` are set.
    pub cert_path: String,
    /// PEM private key.
    pub key_path: String,
    /// Also listen here for plain HTTP and redirect it to HTTPS (empty: off).
    pub redirect_http_addr: String,
    /// `Strict-Transport-Security` max-age sent over TLS, in seconds.
    pub hsts_max_age_secs: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert_path: String::new(),
            key_path: String::new(),
            redirect_http_addr: String::new(),
            hsts_max_age_secs: 31_536_000,
        }
    }
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        !self.cert_path.is_empty() && !self.key_path.is_empty()
    }
}

/// Prometheus metrics. Not public by default: they are served on their own address
/// (loopback, or a network only the monitoring can reach), or on the site's own
/// listener to requests carrying the token, or not at all.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `GET /metrics` on this address (e.g. `127.0.0.1:9100`); empty: no listener.
    pub addr: String,
    /// Also serve `/metrics` on the site's listener to `Authorization: Bearer <token>`;
    /// empty: not on the site's listener.
    pub token: String,
}

/// How logs are written.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
}

/// `text` (for people) or `json` (one object per line, for log collectors).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Stopping on SIGTERM or Ctrl-C.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// Seconds `/readyz` answers 503 before the listener stops accepting, so a load
    /// balancer can stop sending new clients first.
    pub readiness_delay_secs: u64,
    /// Seconds open sockets and requests get to finish before the process exits anyway.
    pub grace_secs: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig { readiness_delay_secs: 0, grace_secs: 10 }
    }
}

/// Running as one of several nodes, linked through Redis.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// `redis://host:port[/db]` (also `REDIS_URL`); empty: a single node, no Redis.
    pub redis_url: String,
    /// This node's name among the others (unique); empty: the host name and port.
    pub node_name: String,
    /// A node not heard from for this many seconds is taken for gone, and its people
    /// go offline. It beats three times per period.
    pub presence_ttl_secs: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig { redis_url: String::new(), node_name: String::new(), presence_ttl_secs: 10 }
    }
}

/// Failure to read or understand the settings; the message names the offending key.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(#[from] Box<figment::Error>);

/// The sections of the file, which are also the second word of `PARLEY_` variables.
const SECTIONS: [&str; 10] = ["site", "chat", "session", "limits", "security", "tls", "metrics", "log", "shutdown", "cluster"];

/// Environment variables cargo-leptos sets, and the `site` key each one overrides.
const LEPTOS_VARIABLES: [(&str, &str); 6] = [
    ("LEPTOS_SITE_ADDR", "site.addr"),
    ("LEPTOS_SITE_ROOT", "site.root"),
    ("LEPTOS_SITE_PKG_DIR", "site.pkg_dir"),
    ("LEPTOS_OUTPUT_NAME", "site.output_name"),
    ("LEPTOS_ENV", "site.env"),
    ("LEPTOS_RELOAD_PORT", "site.reload_port"),
];

/// Whether an environment variable's name (after `PARLEY_`) starts with a section and
/// an underscore, in any letter case. Names may hold any characters, so this compares
/// with `str::get`, which refuses to cut inside one, never by slicing bytes.
fn names_a_section(key: &str) -> bool {
    SECTIONS.iter().any(|section| {
        key.get(..section.len()).is_some_and(|start| start.eq_ignore_ascii_case(section))
            && key.get(section.len()..).is_some_and(|rest| rest.len() > 1 && rest.starts_with('_'))
    })
}

impl Config {
    /// Reads the file named by `PARLEY_CONFIG` (default `Leptos.toml`) and the environment.
    pub fn load() -> Result<Self, ConfigError> {
        let path = std::env::var("PARLEY_CONFIG").unwrap_or_else(|_| "Leptos.toml".into());
        Self::figment(Toml::file(path)).extract().map_err(|e| ConfigError(Box::new(e)))
    }

    /// The layering behind [`Config::load`], with the file provider given, so tests can
    /// feed a string instead of a file.
    fn figment(file: figment::providers::Data<Toml>) -> Figment {
        Figment::from(Serialized::defaults(Config::default()))
            .merge(file)
            .merge(
                Env::raw()
                    .only(&LEPTOS_VARIABLES.map(|(var, _)| var))
                    .map(|var| {
                        let key = LEPTOS_VARIABLES
                            .iter()
                            .find(|(name, _)| var.as_str().eq_ignore_ascii_case(name))
                            .map_or("", |(_, key)| key);
                        key.into()
                    })
                    .lowercase(false),
            )
            .merge(Env::raw().only(&["DATABASE_URL"]).map(|_| "chat.database_url".into()))
            .merge(Env::raw().only(&["REDIS_URL"]).map(|_| "cluster.redis_url".into()))
            .merge(
                Env::prefixed("PARLEY_")
                    // Only variables naming a section; tools may set other PARLEY_ names.
                    .filter(|key| names_a_section(key.as_str()))
                    // PARLEY_CHAT_MAX_MESSAGE_CHARS → chat.max_message_chars
                    .map(|key| key.as_str().to_ascii_lowercase().replacen('_', ".", 1).into()),
            )
    }

    /// The database to open: the configured URL, or the embedded SQLite file.
    pub fn database_url(&self) -> String {
        if self.chat.database_url.trim().is_empty() {
            format!("sqlite://{}", self.chat.data_dir.join("parley.db").display())
        } else {
            self.chat.database_url.clone()
        }
    }

    /// This node's name in the cluster: as configured, or the host name and port
    /// (unique among nodes on different hosts, and among nodes on one host).
    pub fn node_name(&self) -> String {
        let configured = self.cluster.node_name.trim();
        if !configured.is_empty() {
            return configured.to_string();
        }
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|host| host.trim().to_string())
            .filter(|host| !host.is_empty())
            .unwrap_or_else(|| "parley".into());
        format!("{host}-{}", self.site.addr.port())
    }

    /// Leptos's own view of the site settings, for rendering and static files.
    pub fn leptos_options(&self) -> leptos::config::LeptosOptions {
        let env = if self.site.env.eq_ignore_ascii_case("dev") || self.site.env.eq_ignore_ascii_case("development") {
            leptos::config::Env::DEV
        } else {
            leptos::config::Env::PROD
        };
        let hash_file = self.hash_file();
        leptos::config::LeptosOptions::builder()
            .output_name(self.site.output_name.as_str())
            .site_root(self.site.root.as_str())
            .site_pkg_dir(self.site.pkg_dir.as_str())
            .site_addr(self.site.addr)
            .reload_port(self.site.reload_port)
            .env(env)
            .hash_files(hash_file.is_some())
            // Leptos joins it to the binary's folder; an absolute path stands alone.
            .hash_file(hash_file.map_or_else(|| HASH_FILE.to_string(), |path| path.to_string_lossy().into_owned()).into())
            .build()
    }

    /// The list of the bundles' content hashes, when the site was built with hashed file
    /// names (`hash-files` in Cargo.toml): beside the binary, where cargo-leptos writes
    /// it (so a rebuild and its binary always agree), or else in the site's folder,
    /// where an installed binary's deploy puts it. Hashed names can be cached forever.
    pub fn hash_file(&self) -> Option<std::path::PathBuf> {
        let beside_binary = std::env::current_exe().ok().and_then(|exe| exe.parent().map(|dir| dir.join(HASH_FILE)));
        let in_site = std::path::Path::new(&self.site.root).join(HASH_FILE);
        beside_binary.into_iter().chain([in_site]).find(|path| path.is_file()).and_then(|path| std::path::absolute(path).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `check` with an emptied environment, restored afterwards. `Jail` also
    /// serialises the tests that use it, since the environment is process-wide.
    fn with_clean_env(check: impl FnOnce(&mut figment::Jail) -> figment::error::Result<()>) {
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            check(jail)
        });
    }

    fn from_toml(text: &str) -> Result<Config, figment::Error> {
        Config::figment(Toml::string(text)).extract()
    }

    #[test]
    fn an_empty_file_gives_the_defaults() {
        with_clean_env(|_| {
            let config = from_toml("")?;
            assert_eq!(config.site.addr, SocketAddr::from(([127, 0, 0, 1], 3000)));
            assert_eq!(config.database_url(), "sqlite://data/parley.db");
            Ok(())
        });
    }

    #[test]
    fn the_shipped_leptos_toml_parses_and_matches_the_defaults() {
        with_clean_env(|_| {
            let config = from_toml(include_str!("../../Leptos.toml"))?;
            assert_eq!(
                serde_json::to_value(&config).unwrap(),
                serde_json::to_value(Config::default()).unwrap(),
                "Leptos.toml documents the defaults; keep the two in step"
            );
            Ok(())
        });
    }

    #[test]
    fn file_values_override_defaults() {
        with_clean_env(|_| {
            let config = from_toml("[chat]\ndatabase_url = \"postgres://db/parley\"\n")?;
            assert_eq!(config.database_url(), "postgres://db/parley");
            Ok(())
        });
    }

    #[test]
    fn environment_overrides_the_file_in_the_documented_order() {
        with_clean_env(|jail| {
            jail.set_env("LEPTOS_SITE_ADDR", "127.0.0.1:4100");
            jail.set_env("DATABASE_URL", "postgres://from-database-url/db");
            jail.set_env("PARLEY_CHAT_DATABASE_URL", "postgres://from-parley/db");
            // Not a section: ignored rather than refused, so tools can use the prefix.
            jail.set_env("PARLEY_E2E_PORT", "9999");
            let config = from_toml("[site]\naddr = \"127.0.0.1:4000\"\n")?;
            assert_eq!(config.site.addr, SocketAddr::from(([127, 0, 0, 1], 4100)));
            assert_eq!(config.database_url(), "postgres://from-parley/db");
            Ok(())
        });
    }

    #[test]
    fn only_variables_naming_a_section_are_read() {
        assert!(names_a_section("CHAT_MAX_MESSAGE_CHARS"));
        assert!(names_a_section("limits_http_burst"));
        assert!(!names_a_section("E2E_PORT"));
        assert!(!names_a_section("CHAT"));
        assert!(!names_a_section("CHAT_"));
        assert!(!names_a_section("CHATX_Y"));
        assert!(!names_a_section("cha€_x"), "a wide character where a section ends is no section");
    }

    proptest::proptest! {
        #[test]
        fn any_variable_name_is_read_safely(name in app::test_text::any_text()) {
            let _ = names_a_section(&name);
            for section in SECTIONS {
                let key = format!("{section}_{name}x");
                proptest::prop_assert!(names_a_section(&key));
            }
        }
    }

    #[test]
    fn log_formats_are_named() {
        with_clean_env(|jail| {
            assert_eq!(from_toml("[log]\nformat = \"json\"\n")?.log.format, LogFormat::Json);
            assert_eq!(from_toml("")?.log.format, LogFormat::Text);
            jail.set_env("PARLEY_LOG_FORMAT", "jsno");
            let err = from_toml("").unwrap_err();
            assert!(err.to_string().contains("jsno"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn a_misspelt_key_is_refused_with_its_name() {
        with_clean_env(|jail| {
            let err = from_toml("[chat]\nmax_mesage_chars = 5\n").unwrap_err();
            assert!(err.to_string().contains("max_mesage_chars"), "{err}");
            jail.set_env("PARLEY_CHAT_DATA_DIRR", "/tmp");
            let err = from_toml("").unwrap_err();
            assert!(err.to_string().contains("data_dirr"), "{err}");
            Ok(())
        });
    }
}
