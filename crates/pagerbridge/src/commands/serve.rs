//! `pagerbridge serve`: the bridge service.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use pagerbridge::{config, service};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// YAML configuration file. Without it: $PAGERBRIDGE_CONFIG, else ./pagerbridge.yaml if it
    /// exists. PAGERBRIDGE_* environment variables override file values (e.g.
    /// PAGERBRIDGE_PAGERDUTY__URL).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

pub async fn run(args: ServeArgs) -> ExitCode {
    match serve(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "pagerbridge cannot run");
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = config::load(args.config.as_deref())?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    service::run(config, listener, super::signals::shutdown_signal()).await
}
