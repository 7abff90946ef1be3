//! The command line: global options and the list of commands. Each command's own options
//! live beside its code in [`crate::commands`].

use clap::{Parser, Subcommand};

use crate::commands::{
    admin::AdminArgs, check_config::CheckConfigArgs, render::RenderArgs, send::SendArgs,
    serve::ServeArgs, simulate::SimulateArgs,
};
use crate::logging::LoggingArgs;

/// Turns alerts into PagerDuty incident lifecycles — trigger, acknowledge, resolve, change
/// events — durably, in order and within PagerDuty's rate limits.
#[derive(Debug, Parser)]
#[command(name = "pagerbridge", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub logging: LoggingArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant, reason = "parsed once per process")]
pub enum Command {
    /// Run the bridge: Alertmanager webhooks and the native API in, PagerDuty events out,
    /// through a durable outbox (embedded SQLite by default).
    Serve(ServeArgs),

    /// Validate the configuration and every routing key, and print the targets (keys masked).
    /// Exits 0 when valid, 1 otherwise.
    CheckConfig(CheckConfigArgs),

    /// Print the exact PagerDuty request bodies an Alertmanager webhook or native request
    /// would become (routing keys masked), sending nothing.
    Render(RenderArgs),

    /// Send one event straight to PagerDuty (for scripts and CI pipelines), with validation
    /// and retries.
    ///
    /// Exit codes: 0 accepted; 2 usage or local validation error; 3 PagerDuty rejected the
    /// event (HTTP 400); 4 not delivered (gave up after retrying 429/5xx/timeouts/network
    /// errors, or an unexpected answer such as 404).
    #[command(subcommand)]
    Send(SendArgs),

    /// Run the PagerDuty Events API v2 simulator: PagerDuty's validation, dedup semantics and
    /// rate limits, plus injectable faults, on a local port. For tests, demos and load tests.
    Simulate(SimulateArgs),

    /// Operate a running bridge through its admin API: lanes, queue and dead letters, and
    /// replay or drop dead letters (progress bars on long work).
    ///
    /// Exit codes: 0 done; 1 error (message on stderr); 2 usage.
    Admin(AdminArgs),
}
