//! `pagerbridge simulate`: the PagerDuty Events API v2 simulator on a local port.
//!
//! The simulator itself lives in the `pagerduty-simulator` crate so that tests can start it
//! in-process; this command only binds the port and serves until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use pagerduty_simulator::{Config, Simulator};

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8787")]
    listen: SocketAddr,

    /// Requests admitted per routing key within --rate-window; more get 429. 0 turns the
    /// limit off.
    #[arg(long, default_value_t = 120)]
    rate_limit: u32,

    /// Length of the sliding rate-limit window (e.g. 60s, 2s, 500ms).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    rate_window: Duration,

    /// Fraction of requests answered 500, from 0 to 1.
    #[arg(long, default_value_t = 0.0, value_parser = fraction)]
    fail_rate: f64,

    /// Delay before every answer (e.g. 200ms).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    latency: Duration,
}

fn fraction(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!("{value} is not between 0 and 1"))
    }
}

pub async fn run(args: SimulateArgs) -> ExitCode {
    let config = Config {
        rate_limit: args.rate_limit,
        rate_window: args.rate_window,
        fail_rate: args.fail_rate,
        latency: args.latency,
        ..Config::default()
    };
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("error: cannot listen on {}: {error}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().unwrap_or(args.listen);
    eprintln!(
        "PagerDuty simulator listening on http://{addr} (POST /v2/enqueue, /v2/change/enqueue; \
         inspect /_simulator/events, /_simulator/alerts, /_simulator/stats)"
    );
    match pagerduty_simulator::serve(
        Simulator::new(config),
        listener,
        super::signals::shutdown_signal(),
    )
    .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: simulator stopped: {error}");
            ExitCode::FAILURE
        }
    }
}
