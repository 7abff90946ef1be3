//! Logging setup: structured `tracing` output on stderr, as text for people or JSON for
//! machines. Nothing logged anywhere in pagerbridge may contain a routing key.

use std::io::IsTerminal;

use clap::{Args, ValueEnum};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Args)]
pub struct LoggingArgs {
    /// Log level or filter (e.g. `info`, `debug`, `pagerduty_events=debug`); the
    /// `PAGERBRIDGE_LOG` environment variable is used when this is not given.
    #[arg(long, global = true, help_heading = "Logging", env = "PAGERBRIDGE_LOG", default_value = "warn")]
    pub log_level: String,

    /// Log format on stderr.
    #[arg(long, global = true, help_heading = "Logging", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn init(args: &LoggingArgs) {
    let filter = EnvFilter::try_new(&args.log_level).unwrap_or_else(|error| {
        eprintln!("warning: invalid --log-level {:?} ({error}); using warn", args.log_level);
        EnvFilter::new("warn")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match args.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
