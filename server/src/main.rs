//! Starts Parley: read the settings, set up logging, serve until Ctrl-C or SIGTERM.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    server::telemetry::init();
    let config = match server::config::Config::load() {
        Ok(config) => config,
        Err(err) => {
            tracing::error!("{err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match server::run_until_signal(config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
