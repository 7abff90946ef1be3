//! `pagerbridge`: one binary for the bridge service, its tools and the PagerDuty simulator.
//!
//! This file only parses the command line, sets up logging and maps each command's result to
//! an exit code; the work lives in [`commands`].

mod cli;
mod commands;
mod logging;
mod secrets;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(&cli.logging);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: could not start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match cli.command {
            Command::Send(args) => commands::send::run(args).await,
            Command::Simulate(args) => commands::simulate::run(args).await,
        }
    })
}
