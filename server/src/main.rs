//! Starts Parley: read the settings, set up logging, serve until Ctrl-C or SIGTERM.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = match server::config::Config::load() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("{err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    server::telemetry::init(config.log.format);
    match server::run_until_signal(config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
