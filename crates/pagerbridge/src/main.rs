//! `pagerbridge`: one binary for the bridge service, its tools and the PagerDuty simulator.
//!
//! This file only parses the command line, sets up logging and maps each command's result to
//! an exit code; the work lives in [`commands`] and in the `pagerbridge` library.

mod cli;
mod commands;
mod logging;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::logging::LogFormat;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The service logs JSON at info for log pipelines; the tools log text warnings for people.
    let (level, format) = match cli.command {
        Command::Serve(_) | Command::Simulate(_) => ("info", LogFormat::Json),
        _ => ("warn", LogFormat::Text),
    };
    logging::init(&cli.logging, level, format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: could not start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => commands::serve::run(args).await,
            Command::CheckConfig(args) => commands::check_config::run(args).await,
            Command::Render(args) => commands::render::run(args).await,
            Command::Send(args) => commands::send::run(args).await,
            Command::Simulate(args) => commands::simulate::run(args).await,
            Command::Admin(args) => commands::admin::run(args).await,
        }
    })
}
