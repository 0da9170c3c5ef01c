//! Logging setup. `RUST_LOG` picks the level (default: `info` for Parley, `warn` for
//! the libraries), so operators can turn up detail without a rebuild.

use tracing_subscriber::{fmt, EnvFilter};

/// Installs the global subscriber; a second call (as in tests) is a no-op.
pub fn init() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("warn,server=info,app=info"));
    let _ = fmt().with_env_filter(filter).with_target(false).try_init();
}
