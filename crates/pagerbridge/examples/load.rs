//! Load test of the whole bridge, in one process, on loopback only: the PagerDuty simulator
//! (rate limit off), `pagerbridge::service::run` on a fresh store (a temporary SQLite file, or
//! a fresh PostgreSQL database dropped after the run), and concurrent senders POSTing
//! Alertmanager webhooks of distinct firing alerts.
//!
//! ```text
//! cargo run --release -p pagerbridge --example load -- [--webhooks 50] \
//!     [--alerts-per-webhook 100] [--concurrency 1,4] [--runs N] \
//!     [--backend sqlite|postgres|both] [--postgres-url postgres://postgres@127.0.0.1:5432/test]
//! ```
//!
//! Each run prints ingest throughput, per-webhook POST latency, delivery throughput and the
//! latency from an alert's acceptance (its webhook's 2xx) to PagerDuty's 202 (the simulator's
//! `received_at` for the request carrying its dedup key). The runs of the backends are
//! interleaved (so that a machine busy for a while slows both alike), and the end prints the
//! medians side by side, with the ratio PostgreSQL/SQLite when both ran. A benchmark, not a
//! test: it asserts nothing about speed, but exits non-zero if any alert is not accepted or
//! not delivered, since figures from a run that lost alerts mean nothing.

mod bench_support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::{Parser, ValueEnum};
use jiff::Timestamp;
use pagerbridge_testkit::needs::DEFAULT_POSTGRES_URL;
use pagerbridge_testkit::postgres::TestDatabase;
use pagerduty_simulator::{Config as SimConfig, spawn_on_loopback};
use serde_json::Value;

use bench_support::{
    Bridge, PostPhase, bridge_config, build_webhooks, median, nearest_rank, per_second,
    percentiles_row, post_concurrently, signed_ms,
};

/// How long the POST phase may take at most.
const POST_PHASE_LIMIT: Duration = Duration::from_secs(120);
/// How long to wait for delivery at most, after the POST phase.
const DELIVERY_LIMIT: Duration = Duration::from_secs(300);

#[derive(Parser, Debug)]
#[command(
    about = "Load test of pagerbridge against the in-process PagerDuty simulator",
    long_about = "Load test of pagerbridge against the in-process PagerDuty simulator: \
        starts the simulator and the bridge on loopback, POSTs webhooks of distinct firing \
        alerts and prints ingest throughput, POST→2xx and accept→202 latency percentiles. \
        Every run uses a fresh store; with several runs, the end prints the medians."
)]
struct Args {
    /// Webhooks to POST in each run.
    #[arg(long, default_value_t = 50)]
    webhooks: usize,
    /// Distinct firing alerts in each webhook.
    #[arg(long, default_value_t = 100)]
    alerts_per_webhook: usize,
    /// Concurrent senders (connections); a comma-separated list measures each in turn.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 4])]
    concurrency: Vec<usize>,
    /// Store to measure; `both` runs the same load against each, interleaved.
    #[arg(long, value_enum, default_value_t = BackendChoice::Sqlite)]
    backend: BackendChoice,
    /// Runs per backend and concurrency [default: 3 with `--backend both`, else 1].
    #[arg(long)]
    runs: Option<usize>,
    /// PostgreSQL server for `--backend postgres|both`: each run creates a fresh database on
    /// it (named `pb_test_…`) and drops it afterwards, so the user needs CREATEDB.
    #[arg(
        long,
        env = "PAGERBRIDGE_TEST_POSTGRES_URL",
        hide_env_values = true,
        default_value = DEFAULT_POSTGRES_URL
    )]
    postgres_url: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum BackendChoice {
    Sqlite,
    Postgres,
    Both,
}

/// One store to run the load against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        }
    }
}

/// The figures of one run that the summary compares.
#[derive(Clone, Copy, Debug)]
struct Measurement {
    backend: Backend,
    concurrency: usize,
    ingest_alerts_per_s: f64,
    post_p50_ms: f64,
    post_p99_ms: f64,
    accept_p50_ms: f64,
    accept_p99_ms: f64,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(
        args.webhooks >= 1
            && args.alerts_per_webhook >= 1
            && !args.concurrency.is_empty()
            && args.concurrency.iter().all(|&c| c >= 1),
        "--webhooks, --alerts-per-webhook and --concurrency must be at least 1"
    );
    let backends: &[Backend] = match args.backend {
        BackendChoice::Sqlite => &[Backend::Sqlite],
        BackendChoice::Postgres => &[Backend::Postgres],
        BackendChoice::Both => &[Backend::Sqlite, Backend::Postgres],
    };
    let runs = args.runs.unwrap_or(if backends.len() > 1 { 3 } else { 1 });
    ensure!(runs >= 1, "--runs must be at least 1");

    let mut measurements = Vec::new();
    for run in 0..runs {
        for &concurrency in &args.concurrency {
            // Alternate which backend goes first, so neither always runs on a warmer (or
            // more tired) machine.
            let order: Vec<Backend> = if run % 2 == 0 {
                backends.to_vec()
            } else {
                backends.iter().rev().copied().collect()
            };
            for backend in order {
                eprintln!(
                    "run {}/{runs}: {}, concurrency {concurrency}",
                    run + 1,
                    backend.name()
                );
                let measurement = run_once(&args, backend, concurrency)
                    .await
                    .with_context(|| format!("{} run {}", backend.name(), run + 1))?;
                measurements.push(measurement);
            }
        }
    }
    print_summary(&args, backends, runs, &measurements);
    Ok(())
}

/// One run: a fresh simulator, store and bridge, the load, the detailed report.
async fn run_once(
    args: &Args,
    backend: Backend,
    concurrency: usize,
) -> anyhow::Result<Measurement> {
    let expected = args.webhooks * args.alerts_per_webhook;

    // The PagerDuty simulator, rate limit off.
    let sim = spawn_on_loopback(SimConfig {
        rate_limit: 0,
        ..SimConfig::default()
    })
    .await
    .context("starting the simulator")?;

    // The bridge: a fresh store, one target keyed from a temp file, a budget that never
    // throttles. The database guard lives to the end of the run, after the bridge stops.
    let dir = tempfile::tempdir().context("temp dir")?;
    let database = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(
            TestDatabase::create_on(&args.postgres_url)
                .await
                .map_err(anyhow::Error::msg)
                .context("creating the run's PostgreSQL database")?,
        ),
    };
    let config = bridge_config(
        dir.path(),
        &sim.base_url(),
        database.as_ref().map(|db| db.url.as_str()),
    )?;
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()?;
    let bridge = Bridge::start(config, &http).await?;
    let bridge_addr = bridge.addr;

    let webhooks = build_webhooks(args.webhooks, args.alerts_per_webhook)?;
    eprintln!(
        "bridge on {bridge_addr} ({}), simulator on {}; sending {} webhooks x {} alerts with {concurrency} senders",
        backend.name(),
        sim.addr,
        args.webhooks,
        args.alerts_per_webhook
    );

    // POST phase: C senders take the next webhook until all are sent or time is up.
    let url = format!("http://{bridge_addr}/api/v1/alertmanager");
    let bodies: Vec<Vec<u8>> = webhooks.iter().map(|w| w.body.clone()).collect();
    let post_start = Instant::now();
    let PostPhase {
        wall: post_wall,
        results,
        failures,
    } = post_concurrently(&http, &url, bodies, concurrency, POST_PHASE_LIMIT).await?;
    let accepted_webhooks = results.iter().flatten().count();
    let accepted_alerts = accepted_webhooks * args.alerts_per_webhook;
    eprintln!(
        "POST phase done in {:.2}s: {accepted_webhooks}/{} webhooks accepted; waiting for delivery",
        post_wall.as_secs_f64(),
        webhooks.len()
    );

    // Delivery: wait (bounded) until the simulator has accepted every accepted alert.
    let deadline = Instant::now() + DELIVERY_LIMIT;
    let mut last_report = Instant::now();
    loop {
        let stats = sim.sim.stats();
        if stats.accepted as usize >= accepted_alerts || Instant::now() >= deadline {
            break;
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            eprintln!(
                "  delivered {}/{accepted_alerts} ({:.0}s)",
                stats.accepted,
                post_start.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let delivery_wall = post_start.elapsed();

    // When each dedup key first got a 202 from the simulator.
    let log = sim.sim.events();
    let mut delivered_at: HashMap<String, Timestamp> = HashMap::new();
    let mut duplicates = 0_usize;
    let mut non_202 = 0_usize;
    for request in &log {
        if request.path != "/v2/enqueue" {
            continue;
        }
        if request.status != 202 {
            non_202 += 1;
            continue;
        }
        let Some(key) = request.body.get("dedup_key").and_then(Value::as_str) else {
            continue;
        };
        let at: Timestamp = request
            .received_at
            .parse()
            .with_context(|| format!("simulator received_at {:?}", request.received_at))?;
        if delivered_at.insert(key.to_owned(), at).is_some() {
            duplicates += 1;
        }
    }
    let first_delivery = delivered_at.values().min().copied();
    let last_delivery = delivered_at.values().max().copied();

    // accept → 202 per alert.
    let mut accept_to_202 = Vec::with_capacity(expected);
    let mut undelivered = 0_usize;
    for (webhook, posted) in webhooks.iter().zip(&results) {
        let Some(posted) = posted else { continue };
        for key in &webhook.keys {
            match delivered_at.get(key) {
                Some(at) => accept_to_202.push(signed_ms(at.duration_since(posted.accepted_at))),
                None => undelivered += 1,
            }
        }
    }
    let mut post_latency: Vec<f64> = results
        .iter()
        .flatten()
        .map(|p| p.latency.as_secs_f64() * 1000.0)
        .collect();

    bridge.stop().await;

    // The report.
    let delivered = accept_to_202.len();
    let delivery_span = match (first_delivery, last_delivery) {
        (Some(first), Some(last)) => signed_ms(last.duration_since(first)) / 1000.0,
        _ => 0.0,
    };
    println!();
    println!(
        "pagerbridge load on {}: {} webhooks x {} alerts, concurrency {concurrency} (release: {})",
        backend.name(),
        args.webhooks,
        args.alerts_per_webhook,
        !cfg!(debug_assertions)
    );
    println!("{:-<72}", "");
    row(
        "webhooks accepted (2xx)",
        format!("{accepted_webhooks}/{}", webhooks.len()),
    );
    row("alerts accepted", format!("{accepted_alerts}/{expected}"));
    row(
        "POST phase wall time",
        format!("{:.3} s", post_wall.as_secs_f64()),
    );
    row(
        "ingest throughput",
        format!(
            "{:.0} alerts/s",
            per_second(accepted_alerts, post_wall.as_secs_f64())
        ),
    );
    row(
        "delivered (first 202 per key)",
        format!("{delivered}/{accepted_alerts}"),
    );
    row(
        "delivery throughput (end to end)",
        format!(
            "{:.0} events/s  ({delivered} in {:.3} s from first POST)",
            per_second(delivered, delivery_wall.as_secs_f64()),
            delivery_wall.as_secs_f64()
        ),
    );
    row(
        "delivery throughput (first→last 202)",
        format!(
            "{:.0} events/s  ({delivery_span:.3} s)",
            per_second(delivered.saturating_sub(1), delivery_span)
        ),
    );
    row(
        "delivery rate by fifth (events/s)",
        rate_by_fifth(&delivered_at),
    );
    row(
        "simulator requests (non-202, repeats)",
        format!("{} ({non_202}, {duplicates})", log.len()),
    );
    println!("{:-<72}", "");
    println!(
        "{:<28}{:>8}{:>8}{:>8}{:>8}{:>8}{:>7}",
        "latency (ms)", "min", "p50", "p90", "p99", "max", "n"
    );
    percentiles_row("POST → 2xx, per webhook", &mut post_latency);
    percentiles_row("accept → 202, per alert", &mut accept_to_202);
    println!("{:-<72}", "");

    for failure in failures.iter().take(10) {
        println!("failed: {failure}");
    }
    if !failures.is_empty() || accepted_alerts < expected {
        bail!(
            "{} webhooks were not accepted ({} failures reported)",
            webhooks.len() - accepted_webhooks,
            failures.len()
        );
    }
    if undelivered > 0 {
        bail!("{undelivered} accepted alerts were not delivered within the time limit");
    }
    drop(database);
    // percentiles_row sorted both lists above.
    Ok(Measurement {
        backend,
        concurrency,
        ingest_alerts_per_s: per_second(accepted_alerts, post_wall.as_secs_f64()),
        post_p50_ms: nearest_rank(&post_latency, 50.0),
        post_p99_ms: nearest_rank(&post_latency, 99.0),
        accept_p50_ms: nearest_rank(&accept_to_202, 50.0),
        accept_p99_ms: nearest_rank(&accept_to_202, 99.0),
    })
}

/// The medians over the runs, per concurrency, the backends side by side.
fn print_summary(args: &Args, backends: &[Backend], runs: usize, measurements: &[Measurement]) {
    println!();
    println!(
        "medians of {runs} run(s): {} webhooks x {} alerts (release: {})",
        args.webhooks,
        args.alerts_per_webhook,
        !cfg!(debug_assertions)
    );
    let both = backends.len() > 1;
    print!("{:<34}", "");
    for backend in backends {
        print!("{:>12}", backend.name());
    }
    if both {
        print!("{:>12}", "PG/SQLite");
    }
    println!();
    type Figure = fn(&Measurement) -> f64;
    let figures: [(&str, Figure); 5] = [
        ("ingest (alerts/s)", |m| m.ingest_alerts_per_s),
        ("POST → 2xx p50 (ms)", |m| m.post_p50_ms),
        ("POST → 2xx p99 (ms)", |m| m.post_p99_ms),
        ("accept → 202 p50 (ms)", |m| m.accept_p50_ms),
        ("accept → 202 p99 (ms)", |m| m.accept_p99_ms),
    ];
    for &concurrency in &args.concurrency {
        for (label, figure) in figures {
            print!("{:<34}", format!("{label}, {concurrency} conn"));
            let medians: Vec<f64> = backends
                .iter()
                .map(|&backend| {
                    median(
                        measurements
                            .iter()
                            .filter(|m| m.backend == backend && m.concurrency == concurrency)
                            .map(figure)
                            .collect(),
                    )
                })
                .collect();
            for median in &medians {
                print!("{median:>12.1}");
            }
            if let [sqlite, postgres] = medians[..] {
                print!("{:>12.2}", postgres / sqlite);
            }
            println!();
        }
    }
}

/// Delivery rate over each fifth of the deliveries, in arrival order: a rate that falls from
/// fifth to fifth means per-event cost grows with the backlog or the history.
fn rate_by_fifth(delivered_at: &HashMap<String, Timestamp>) -> String {
    let mut times: Vec<Timestamp> = delivered_at.values().copied().collect();
    times.sort();
    if times.len() < 10 {
        return "-".to_owned();
    }
    let fifth = times.len() / 5;
    (0..5)
        .map(|i| {
            let (start, end) = (times[i * fifth], times[(i + 1) * fifth - 1]);
            let seconds = signed_ms(end.duration_since(start)) / 1000.0;
            format!("{:.0}", per_second(fifth - 1, seconds))
        })
        .collect::<Vec<_>>()
        .join(" / ")
}

fn row(label: &str, value: String) {
    println!("{label:<38}{value}");
}
