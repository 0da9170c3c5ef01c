//! Logging setup. `RUST_LOG` picks the level (default: `info` for Parley, `warn` for
//! the libraries), so operators can turn up detail without a rebuild.

use tracing_subscriber::{fmt, EnvFilter};

/// Installs the global subscriber; a second call (as in tests) is a no-op.
pub fn init() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("warn,server=info,app=info"));
    let _ = fmt().with_env_filter(filter).with_target(false).try_init();
    log_panics_without_their_message();
}

/// Panics go to the log with where they happened. Their message is left out of release
/// builds: it can quote the input that caused it, and input is people's chat text,
/// which Parley never writes to its logs.
fn log_panics_without_their_message() {
    std::panic::set_hook(Box::new(|info| {
        let location = info.location().map(|at| format!("{}:{}", at.file(), at.line())).unwrap_or_default();
        if cfg!(debug_assertions) {
            let message = info.payload_as_str().unwrap_or_default();
            tracing::error!(%location, message, "panic");
        } else {
            tracing::error!(%location, "panic");
        }
    }));
}
