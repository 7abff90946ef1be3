//! Logging setup: structured `tracing` output on stderr, as text for people or JSON for
//! machines. Nothing logged anywhere in pagerbridge may contain a routing key.

use std::io::IsTerminal;

use clap::{Args, ValueEnum};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Args)]
pub struct LoggingArgs {
    /// Log level or filter (e.g. `info`, `debug`, `pagerbridge=debug`); default `info` for
    /// `serve` and `simulate`, `warn` for the other commands.
    #[arg(long, global = true, help_heading = "Logging", env = "PAGERBRIDGE_LOG")]
    pub log_level: Option<String>,

    /// Log format on stderr; default `json` for `serve` and `simulate`, `text` otherwise.
    #[arg(long, global = true, help_heading = "Logging", value_enum)]
    pub log_format: Option<LogFormat>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn init(args: &LoggingArgs, default_level: &str, default_format: LogFormat) {
    let level = args.log_level.as_deref().unwrap_or(default_level);
    let filter = EnvFilter::try_new(level).unwrap_or_else(|error| {
        eprintln!("warning: invalid --log-level {level:?} ({error}); using {default_level}");
        EnvFilter::new(default_level)
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match args.log_format.unwrap_or(default_format) {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
