//! Backlog: how `pagerbridge serve` behaves with a large queue (issue 11, "Scale").
//!
//! ```text
//! cargo build --release -p pagerbridge --bin pagerbridge --example backlog
//! target/release/examples/backlog [--queued 10000,100000,1000000] [--backend sqlite|postgres]
//!     [--binary target/release/pagerbridge] [--postgres-url postgres://postgres@127.0.0.1:5432/test]
//! ```
//!
//! For each size N, on a fresh store: N firing info alerts (one target, distinct dedup keys)
//! are queued through the store's own `accept`, a few thousand per transaction, as ingest
//! would have queued them; the store's queries that scrapes, housekeeping and the lane run are
//! timed on it directly; then the store is closed and a real `pagerbridge serve` process is
//! started on it against the in-process PagerDuty simulator (a budget of one request per 2 s,
//! so the backlog stays). It prints: the time from the process's start to the first request
//! the simulator receives; where a critical alert posted behind the backlog lands in the
//! simulator's order (1 = the next request the budget allows); the cost of a `/metrics`
//! scrape and of an admin `lanes` call; the process's RSS (VmRSS, and its peak VmHWM).
//!
//! It is a measuring tool, not a test: it asserts nothing about speed.

mod bench_support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::{Parser, ValueEnum};
use jiff::Timestamp;
use pagerbridge::store::postgres::PostgresStore;
use pagerbridge::store::sqlite::SqliteStore;
use pagerbridge::store::{
    Action, Condition, IncidentSource, JsonText, NewEvent, Store, StoreError, SuppressionPolicy,
};
use pagerbridge_testkit::needs::DEFAULT_POSTGRES_URL;
use pagerbridge_testkit::postgres::TestDatabase;
use pagerduty_events::{AlertEvent, DedupKey, Severity, Source, Summary, Trigger};
use pagerduty_simulator::{Config as SimConfig, SpawnedSimulator, spawn_on_loopback};
use serde_json::json;

use bench_support::{
    BridgeProcess, Budget, bridge_binary, median, write_bridge_yaml, write_secret,
};

/// The bridge's budget in this run: one request per window, so the backlog stays put and a
/// critical alert posted right after a request waits for the next slot.
const BUDGET_WINDOW: &str = "2s";
/// How long to wait for the bridge to listen, and for any expected request.
const WAIT: Duration = Duration::from_secs(60);
/// Timed repetitions of each query or HTTP call (the median is printed).
const REPEAT: usize = 5;
const ADMIN_TOKEN: &str = "backlog-example-admin-token-0001";

#[derive(Parser, Debug)]
#[command(
    about = "pagerbridge serve with a large backlog: first send, critical-first, \
                   scrape cost and RSS"
)]
struct Args {
    /// Backlog sizes to measure, each on a fresh store.
    #[arg(long, value_delimiter = ',', default_values_t = [10_000, 100_000, 1_000_000])]
    queued: Vec<usize>,
    #[arg(long, value_enum, default_value_t = Backend::Sqlite)]
    backend: Backend,
    /// The `pagerbridge` binary [default: `pagerbridge` beside this example's directory,
    /// i.e. target/<profile>/pagerbridge].
    #[arg(long)]
    binary: Option<PathBuf>,
    /// Keep each size's SQLite file (and configuration) in a directory of its own under
    /// this one, e.g. to look at query plans afterwards; PostgreSQL databases are dropped.
    #[arg(long)]
    keep: Option<PathBuf>,
    /// Events per `accept` call (one transaction) while filling.
    #[arg(long, default_value_t = 5_000)]
    batch: usize,
    /// PostgreSQL server for `--backend postgres`: each size gets a fresh database on it
    /// (named `pb_test_…`), dropped afterwards.
    #[arg(
        long,
        env = "PAGERBRIDGE_TEST_POSTGRES_URL",
        hide_env_values = true,
        default_value = DEFAULT_POSTGRES_URL
    )]
    postgres_url: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Backend {
    Sqlite,
    Postgres,
}

/// The figures of one backlog size.
#[derive(Debug, Default)]
struct Figures {
    queued: usize,
    fill_s: f64,
    /// Store queries on the filled store, in ms: lane_stats, open_incidents, next_eligible,
    /// expire_events (nothing to expire), fallback_due.
    lane_stats_ms: f64,
    open_incidents_ms: f64,
    next_eligible_ms: f64,
    expire_ms: f64,
    fallback_due_ms: f64,
    first_send_ms: f64,
    critical_position: usize,
    metrics_ms: f64,
    lanes_ms: f64,
    rss_kib: u64,
    hwm_kib: u64,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(
        args.batch >= 1 && args.queued.iter().all(|&n| n >= 1),
        "--batch and --queued must be at least 1"
    );
    let binary = bridge_binary(args.binary.as_deref())?;
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()?;
    let mut all = Vec::new();
    for &queued in &args.queued {
        eprintln!("backlog of {queued}: filling the store");
        let figures = one_size(&args, &binary, &http, queued)
            .await
            .with_context(|| format!("backlog of {queued}"))?;
        print_row_header_once(all.is_empty(), args.backend);
        print_row(&figures);
        all.push(figures);
    }
    Ok(())
}

async fn one_size(
    args: &Args,
    binary: &Path,
    http: &reqwest::Client,
    queued: usize,
) -> anyhow::Result<Figures> {
    let dir = match &args.keep {
        Some(parent) => {
            std::fs::create_dir_all(parent)?;
            tempfile::Builder::new()
                .prefix(&format!("backlog-{queued}-"))
                .disable_cleanup(true)
                .tempdir_in(parent)
        }
        None => tempfile::tempdir(),
    }
    .context("temp dir")?;
    let database = match args.backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(
            TestDatabase::create_on(&args.postgres_url)
                .await
                .map_err(anyhow::Error::msg)
                .context("creating the run's PostgreSQL database")?,
        ),
    };
    // Where `write_bridge_yaml` puts the SQLite file.
    std::fs::create_dir_all(dir.path().join("data"))?;
    let db_path = dir.path().join("data").join("bridge.db");
    let mut figures = Figures {
        queued,
        ..Figures::default()
    };
    {
        let store: Arc<dyn Store> = match &database {
            None => Arc::new(SqliteStore::open(&db_path).await?),
            Some(db) => Arc::new(PostgresStore::connect(&db.url).await?),
        };
        let started = Instant::now();
        fill(store.as_ref(), queued, args.batch).await?;
        figures.fill_s = started.elapsed().as_secs_f64();
        eprintln!(
            "  filled in {:.1} s ({:.0} events/s); timing the store's queries",
            figures.fill_s,
            queued as f64 / figures.fill_s
        );
        time_store_queries(store.as_ref(), &mut figures).await?;
    }

    let sim = spawn_on_loopback(SimConfig {
        rate_limit: 0,
        ..SimConfig::default()
    })
    .await
    .context("starting the simulator")?;
    let config = write_config(dir.path(), &sim, database.as_ref().map(|d| d.url.as_str()))?;
    eprintln!("  starting pagerbridge serve");
    let spawned_at = Timestamp::now();
    let bridge = BridgeProcess::start(binary, &config).await?;

    // The first request, timed on the simulator's clock (the same as ours: it is in-process).
    wait_for(WAIT, "the first request", || !sim.sim.events().is_empty()).await?;
    let first = received_at(&sim, 0)?;
    figures.first_send_ms = first.duration_since(spawned_at).as_secs_f64() * 1000.0;

    figures.critical_position = critical_position(http, &bridge, &sim).await?;

    let mut metrics = Vec::with_capacity(REPEAT);
    let mut lanes = Vec::with_capacity(REPEAT);
    for _ in 0..REPEAT {
        metrics.push(timed_get(http, &bridge.url("/metrics"), None).await?);
        lanes.push(timed_get(http, &bridge.url("/api/v1/admin/lanes"), Some(ADMIN_TOKEN)).await?);
    }
    figures.metrics_ms = median(metrics);
    figures.lanes_ms = median(lanes);
    (figures.rss_kib, figures.hwm_kib) = bridge.memory()?;
    bridge.stop().await?;
    Ok(figures)
}

/// Queues `queued` firing info alerts on target `default`, `batch` per transaction, as the
/// pipeline would have: each its own incident, with its event and source alert.
async fn fill(store: &dyn Store, queued: usize, batch: usize) -> anyhow::Result<()> {
    let policy = SuppressionPolicy::default();
    let mut next = 0;
    while next < queued {
        let end = (next + batch).min(queued);
        let events = (next..end)
            .map(info_event)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let accepted = store.accept(events, &policy, Timestamp::now()).await?;
        ensure!(
            accepted.len() == end - next,
            "accept answered {} of {}",
            accepted.len(),
            end - next
        );
        next = end;
    }
    Ok(())
}

fn info_event(i: usize) -> anyhow::Result<NewEvent> {
    let key = format!("backlog-info-{i:08}");
    let instance = format!("host-{i:08}.backlog.test:9100");
    let mut trigger = Trigger::new(
        Summary::new(format!("BacklogInfo on {instance}"))?,
        Source::new(instance.clone())?,
        Severity::Info,
    );
    trigger.dedup_key = Some(DedupKey::new(key.clone())?);
    let alert = json!({
        "status": "firing",
        "labels": {"alertname": "BacklogInfo", "severity": "info", "instance": instance},
        "annotations": {"summary": format!("BacklogInfo on {instance}")},
        "startsAt": "2026-11-29T10:00:00Z",
        "fingerprint": format!("{i:016x}"),
    });
    Ok(NewEvent {
        target: "default".to_owned(),
        dedup_key: Some(key),
        action: Action::Trigger,
        severity: Some(Severity::Info),
        event: JsonText::of(&AlertEvent::Trigger(trigger))?,
        alert: Some(alert.into()),
        fingerprint: Some(format!("{i:016x}")),
        labels_key: false,
        payload_hash: Some(format!("{i:064x}")),
        condition: Condition::Always,
        source: Some(IncidentSource::Api),
    })
}

/// Times, on the filled store, what a scrape (`lane_stats`, `open_incidents`), housekeeping
/// (`expire_events` with nothing old enough), the lane (`next_eligible`) and the fallback
/// (`fallback_due`) run: the median of a few calls each, in ms.
async fn time_store_queries(store: &dyn Store, figures: &mut Figures) -> anyhow::Result<()> {
    let long_ago = Timestamp::from_second(1_000_000_000)?;
    figures.lane_stats_ms = median_ms(|| async { store.lane_stats().await.map(drop) }).await?;
    figures.open_incidents_ms =
        median_ms(|| async { store.open_incidents().await.map(drop) }).await?;
    figures.next_eligible_ms = median_ms(|| async {
        match store.next_eligible("default").await? {
            Some(_) => Ok(()),
            None => Err(StoreError::Corrupt("nothing queued".into())),
        }
    })
    .await?;
    figures.expire_ms = median_ms(|| async {
        store
            .expire_events(long_ago, Timestamp::now())
            .await
            .map(drop)
    })
    .await?;
    figures.fallback_due_ms =
        median_ms(|| async { store.fallback_due(long_ago, 100).await.map(drop) }).await?;
    Ok(())
}

async fn median_ms<F, Fut>(mut call: F) -> anyhow::Result<f64>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), StoreError>>,
{
    let mut times = Vec::with_capacity(REPEAT);
    for _ in 0..REPEAT {
        let started = Instant::now();
        call().await?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(median(times))
}

/// Posts a critical alert right after a request (so the budget has just been spent and the
/// lane waits for its next slot) and returns its place among the requests the simulator
/// received from then on: 1 when it is the next one sent.
async fn critical_position(
    http: &reqwest::Client,
    bridge: &BridgeProcess,
    sim: &SpawnedSimulator,
) -> anyhow::Result<usize> {
    let seen = sim.sim.events().len();
    wait_for(WAIT, "a request after the first", || {
        sim.sim.events().len() > seen
    })
    .await?;
    let before = sim.sim.events().len();
    let body = json!({"alerts": [{
        "status": "firing",
        "labels": {"alertname": "BacklogCritical", "severity": "critical", "instance": "db-1"},
        "annotations": {"summary": "the one that matters"},
        "startsAt": "2026-11-29T10:00:00Z"
    }]});
    let response = http
        .post(bridge.url("/api/v1/alerts"))
        .json(&body)
        .send()
        .await?;
    ensure!(
        response.status().is_success(),
        "the critical alert was answered {}",
        response.status()
    );
    let is_critical = |event: &pagerduty_simulator::ReceivedRequest| {
        event.body["payload"]["severity"].as_str() == Some("critical")
    };
    wait_for(WAIT, "the critical alert", || {
        sim.sim.events().iter().any(is_critical)
    })
    .await?;
    let events = sim.sim.events();
    let at = events
        .iter()
        .position(is_critical)
        .context("the critical alert vanished")?;
    Ok(at + 1 - before)
}

async fn timed_get(http: &reqwest::Client, url: &str, token: Option<&str>) -> anyhow::Result<f64> {
    let mut request = http.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let started = Instant::now();
    let response = request.send().await?;
    let status = response.status();
    let _ = response.bytes().await?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    ensure!(status.is_success(), "GET {url}: {status}");
    Ok(ms)
}

fn received_at(sim: &SpawnedSimulator, index: usize) -> anyhow::Result<Timestamp> {
    let events = sim.sim.events();
    let event = events.get(index).context("no such request")?;
    event
        .received_at
        .parse()
        .with_context(|| format!("received_at {:?}", event.received_at))
}

async fn wait_for(
    limit: Duration,
    what: &str,
    mut done: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

/// The bridge's configuration: one target at a budget of one request per
/// [`BUDGET_WINDOW`], the admin API on, storage in `dir` or at `postgres_url`.
fn write_config(
    dir: &Path,
    sim: &SpawnedSimulator,
    postgres_url: Option<&str>,
) -> anyhow::Result<PathBuf> {
    let token = dir.join("admin-token");
    write_secret(&token, ADMIN_TOKEN)?;
    let admin = format!("admin:\n  bearer_token_file: \"{}\"\n", token.display());
    write_bridge_yaml(
        dir,
        &sim.base_url(),
        postgres_url,
        Budget::Custom {
            requests: 1,
            window: BUDGET_WINDOW,
        },
        &admin,
    )
}

fn print_row_header_once(first: bool, backend: Backend) {
    if !first {
        return;
    }
    println!();
    println!(
        "backend {backend:?}; store queries on the filled store, HTTP calls on the running \
         bridge; medians of {REPEAT}; times in ms"
    );
    println!(
        "{:>9} {:>7} {:>10} {:>9} {:>9} {:>9} {:>9} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "queued",
        "fill s",
        "lane_stats",
        "open_inc",
        "next_elig",
        "expire",
        "fallback",
        "1st send",
        "crit pos",
        "/metrics",
        "lanes",
        "RSS MiB",
        "HWM MiB"
    );
}

fn print_row(f: &Figures) {
    println!(
        "{:>9} {:>7.1} {:>10.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>10.0} {:>8} {:>8.2} {:>8.2} {:>8.1} {:>8.1}",
        f.queued,
        f.fill_s,
        f.lane_stats_ms,
        f.open_incidents_ms,
        f.next_eligible_ms,
        f.expire_ms,
        f.fallback_due_ms,
        f.first_send_ms,
        f.critical_position,
        f.metrics_ms,
        f.lanes_ms,
        f.rss_kib as f64 / 1024.0,
        f.hwm_kib as f64 / 1024.0,
    );
}
