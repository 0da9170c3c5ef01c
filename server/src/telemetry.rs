//! Logging setup. `RUST_LOG` picks the level (default: `info` for Parley, `warn` for
//! the libraries), so operators can turn up detail without a rebuild; `[log] format`
//! picks text for people or JSON for log collectors. Lines about one socket or one
//! HTTP request carry its id (the spans in `ws` and `observe`). Tokens, passwords and
//! message text are never logged.

use std::io::IsTerminal;

use tracing_subscriber::{fmt, EnvFilter};

use crate::config::LogFormat;

/// Installs the global subscriber, writing to standard error (colours only on a
/// terminal); a second call (as in tests) is a no-op.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn,server=info,app=info"));
    let lines = fmt().with_writer(std::io::stderr).with_env_filter(filter);
    let _ = match format {
        LogFormat::Text => lines.with_ansi(std::io::stderr().is_terminal()).with_target(false).try_init(),
        LogFormat::Json => lines.json().with_current_span(false).with_span_list(true).try_init(),
    };
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
