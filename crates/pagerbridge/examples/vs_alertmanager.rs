//! Side-by-side benchmark of pagerbridge and a real Alertmanager 0.25 (Debian's
//! `prometheus-alertmanager`), each its own process, on loopback only, against the same
//! in-process PagerDuty simulator (rate limit off):
//!
//! ```text
//! cargo build --release -p pagerbridge --bin pagerbridge --example vs_alertmanager
//! target/release/examples/vs_alertmanager [--runs 3] [--requests 50] \
//!     [--alerts-per-request 100] [--concurrency 1,4] [--latency-alerts 1000]
//! ```
//!
//! The bridge is `pagerbridge serve` (the release binary beside the example, or
//! `--pagerbridge`) on its default SQLite store, with PagerDuty's default budget during
//! ingest (Alertmanager sends nothing there either) and a budget that never throttles for
//! the latency runs (the native notifier has none).
//!
//! - **Ingest**: the same batches of distinct firing alerts are POSTed to Alertmanager's
//!   `POST /api/v2/alerts` (as Prometheus sends them; it keeps them in memory) and, as
//!   Alertmanager webhook bodies, to pagerbridge's `POST /api/v1/alertmanager` (which stores
//!   them durably in SQLite before answering), with each number of concurrent connections;
//!   alerts/s for each and the ratio pagerbridge/Alertmanager; also the CPU time the process
//!   under test spent per request (all its threads, read from Linux's `/proc`), which the
//!   machine's noise moves less than the wall-clock rates, and for the bridge that time split
//!   between its HTTP handlers and SQLite's threads, with the bytes it wrote per request.
//!   Every measurement starts a fresh Alertmanager or a fresh bridge on a fresh store.
//! - **Latency**: one Alertmanager with two routes, `path="native"` to its own
//!   `pagerduty_configs` receiver whose `url` is the simulator, and `path="bridge"` to a
//!   webhook receiver pointing at pagerbridge, which sends to the same simulator. Alerts are
//!   posted one at a time (each its own group, `group_wait: 0s`), the two paths alternating,
//!   and each is timed from just before its POST to Alertmanager to the simulator's
//!   `received_at` for the event that carries its alertname.
//!
//! Runs are interleaved (which side goes first alternates) and the end prints each run's
//! figures and the medians, with ratios. A benchmark, not a test: it asserts nothing about
//! speed, but exits non-zero if an alert is refused or never reaches the simulator.

mod bench_support;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Parser;
use jiff::Timestamp;
use pagerbridge_testkit::needs::Need;
use pagerduty_simulator::{Config as SimConfig, SpawnedSimulator, spawn_on_loopback};
use serde_json::{Value, json};

use bench_support::{
    BridgeProcess, Budget, ROUTING_KEY, Usage, bridge_binary, build_webhooks, median, nearest_rank,
    per_second, percentiles_row, post_concurrently, signed_ms, write_bridge_yaml,
};

/// How long one ingest measurement may take at most.
const POST_PHASE_LIMIT: Duration = Duration::from_secs(120);
/// How long Alertmanager may take to become ready, and one alert to reach the simulator.
const WAIT: Duration = Duration::from_secs(30);
/// Alerts per path sent before the timed ones, so that connections are open and caches warm.
const WARMUP_ALERTS: usize = 5;

#[derive(Parser, Debug)]
#[command(
    about = "Side-by-side benchmark of pagerbridge and a real Alertmanager 0.25",
    long_about = "Side-by-side benchmark of pagerbridge and a real Alertmanager 0.25, on \
        loopback only, against the in-process PagerDuty simulator. Ingest: the same batches \
        of distinct firing alerts POSTed to Alertmanager's /api/v2/alerts and to \
        pagerbridge's /api/v1/alertmanager (default SQLite store), alerts/s and the ratio \
        pagerbridge/Alertmanager. Latency: one alert at a time through Alertmanager, to \
        PagerDuty by its native pagerduty_configs notifier or through pagerbridge (a \
        webhook_configs receiver), from the POST to Alertmanager until the simulator \
        received the event; p50/p99 per path. Runs are interleaved; the end prints each \
        run and the medians."
)]
struct Args {
    /// Measured runs; each measures ingest at every concurrency and the latency of both
    /// paths, and the summary gives the medians over the runs.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Ingest: requests POSTed to each side per measurement.
    #[arg(long, default_value_t = 50)]
    requests: usize,
    /// Ingest: distinct firing alerts in each request.
    #[arg(long, default_value_t = 100)]
    alerts_per_request: usize,
    /// Ingest: concurrent senders (one connection each); a comma-separated list measures
    /// each in turn.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 4])]
    concurrency: Vec<usize>,
    /// Latency: timed alerts per path (native notifier, through pagerbridge) per run, sent
    /// one at a time after a few untimed warm-up alerts. The p99 of 1000 is their tenth
    /// slowest; of 200 it would be the second, one stall away from another figure.
    #[arg(long, default_value_t = 1000)]
    latency_alerts: usize,
    /// The Alertmanager binary [default: `prometheus-alertmanager` or `alertmanager` on
    /// PATH, as the tests find it].
    #[arg(long)]
    alertmanager: Option<PathBuf>,
    /// The pagerbridge binary [default: `pagerbridge` in the target directory of this
    /// example, e.g. target/release/pagerbridge; build it first].
    #[arg(long)]
    pagerbridge: Option<PathBuf>,
}

/// The two sides of the comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    /// Alertmanager: its in-memory ingest, its native PagerDuty notifier.
    Alertmanager,
    /// pagerbridge: its durable ingest, Alertmanager's webhook through it.
    Bridge,
}

impl Side {
    /// The value of the `path` label that routes an alert to this side's receiver.
    fn path(self) -> &'static str {
        match self {
            Side::Alertmanager => "native",
            Side::Bridge => "bridge",
        }
    }

    /// Both sides, the first alternating with `i`, so neither always goes first.
    fn order(i: usize) -> [Side; 2] {
        if i.is_multiple_of(2) {
            [Side::Alertmanager, Side::Bridge]
        } else {
            [Side::Bridge, Side::Alertmanager]
        }
    }
}

/// The figures of one run.
#[derive(Clone, Debug, Default)]
struct Run {
    /// Per concurrency (in `--concurrency` order): (Alertmanager, pagerbridge) alerts/s.
    ingest: Vec<(f64, f64)>,
    /// Per concurrency: (Alertmanager, pagerbridge) CPU time of the process under test per
    /// request (ms), all its threads.
    cpu: Vec<(f64, f64)>,
    /// Alertmanager → PagerDuty p50 and p99 (ms), by the native notifier.
    native: (f64, f64),
    /// The same through pagerbridge.
    bridged: (f64, f64),
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(
        args.runs >= 1
            && args.requests >= 1
            && args.alerts_per_request >= 1
            && args.latency_alerts >= 1
            && !args.concurrency.is_empty()
            && args.concurrency.iter().all(|&c| c >= 1),
        "--runs, --requests, --alerts-per-request, --latency-alerts and --concurrency must be \
         at least 1"
    );
    let binary = match &args.alertmanager {
        Some(path) => path.clone(),
        None => Need::Alertmanager
            .probe()
            .map(PathBuf::from)
            .map_err(anyhow::Error::msg)
            .context(
                "no Alertmanager binary (install prometheus-alertmanager or pass --alertmanager)",
            )?,
    };
    let bridge_binary = bridge_binary(args.pagerbridge.as_deref())?;
    eprintln!(
        "Alertmanager: {}; pagerbridge: {}",
        binary.display(),
        bridge_binary.display()
    );
    let binaries = Binaries {
        alertmanager: binary,
        pagerbridge: bridge_binary,
    };
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()?;

    let mut runs = Vec::with_capacity(args.runs);
    for run in 0..args.runs {
        let mut figures = Run::default();
        for &concurrency in &args.concurrency {
            let mut rates = (0.0, 0.0);
            let mut cpu = (0.0, 0.0);
            for side in Side::order(run) {
                eprintln!(
                    "run {}/{}: ingest, {side:?}, {concurrency} connection(s)",
                    run + 1,
                    args.runs
                );
                let (rate, cpu_ms) = ingest(&args, &http, &binaries, side, concurrency)
                    .await
                    .with_context(|| format!("run {}: {side:?} ingest", run + 1))?;
                match side {
                    Side::Alertmanager => (rates.0, cpu.0) = (rate, cpu_ms),
                    Side::Bridge => (rates.1, cpu.1) = (rate, cpu_ms),
                }
            }
            figures.ingest.push(rates);
            figures.cpu.push(cpu);
        }
        eprintln!("run {}/{}: latency", run + 1, args.runs);
        let (native, bridged) = latency(&args, &http, &binaries, run)
            .await
            .with_context(|| format!("run {}: latency", run + 1))?;
        figures.native = native;
        figures.bridged = bridged;
        runs.push(figures);
    }
    print_summary(&args, &runs);
    Ok(())
}

/// The two programs compared.
struct Binaries {
    alertmanager: PathBuf,
    pagerbridge: PathBuf,
}

/// One ingest measurement on a fresh Alertmanager or a fresh bridge: alerts/s, and the CPU
/// time the process under test spent per request (ms), read from `/proc` before the first
/// request and after the last answer. For the bridge it also prints that CPU time split
/// between its HTTP handlers (tokio's workers: parsing, formatting) and SQLite's threads,
/// and the bytes it wrote per request.
///
/// The bridge runs its default configuration, budget included (PagerDuty's 120 requests a
/// minute), as a new user would: like Alertmanager here, which holds the alerts and sends
/// nothing, it spends its time on ingest, not on delivering the backlog.
async fn ingest(
    args: &Args,
    http: &reqwest::Client,
    binaries: &Binaries,
    side: Side,
    concurrency: usize,
) -> anyhow::Result<(f64, f64)> {
    let webhooks = build_webhooks(args.requests, args.alerts_per_request)?;
    let expected = args.requests * args.alerts_per_request;
    let sim = simulator().await?;
    let dir = tempfile::tempdir().context("temp dir")?;
    let config = write_bridge_yaml(dir.path(), &sim.base_url(), None, Budget::Default, "")?;
    let bridge = BridgeProcess::start(&binaries.pagerbridge, &config).await?;
    // The bridge's Alertmanager sends nothing here: the ingest alerts have no `path` label,
    // so they go to its receiver without integrations.
    let (url, bodies, am) = match side {
        Side::Alertmanager => {
            let am = Alertmanager::start(&binaries.alertmanager, &sim, bridge.addr, http).await?;
            let bodies = webhooks
                .iter()
                .map(|w| postable_alerts(&w.body))
                .collect::<anyhow::Result<_>>()?;
            (format!("{}/api/v2/alerts", am.url), bodies, Some(am))
        }
        Side::Bridge => (
            format!("http://{}/api/v1/alertmanager", bridge.addr),
            webhooks.into_iter().map(|w| w.body).collect(),
            None,
        ),
    };
    let pid = match &am {
        Some(am) => am.child.id(),
        None => bridge.pid(),
    };
    let before = Usage::of(pid)?;
    let phase = post_concurrently(http, &url, bodies, concurrency, POST_PHASE_LIMIT).await?;
    let used = Usage::of(pid)?.since(&before);
    let accepted = phase.results.iter().flatten().count() * args.alerts_per_request;
    // Check that Alertmanager holds them all, so that its figure counts work done, as the
    // bridge's 2xx does.
    if let Some(am) = &am {
        let held = am.alert_count(http).await?;
        ensure!(
            held == expected,
            "Alertmanager holds {held} alerts, {expected} were posted"
        );
    }
    drop(bridge);
    drop(am);
    for failure in phase.failures.iter().take(10) {
        eprintln!("failed: {failure}");
    }
    if accepted < expected {
        bail!(
            "{side:?} accepted {accepted}/{expected} alerts ({} failures)",
            phase.failures.len()
        );
    }
    let rate = per_second(accepted, phase.wall.as_secs_f64());
    let per_request = |time: Duration| time.as_secs_f64() * 1000.0 / args.requests as f64;
    let cpu_ms = per_request(used.cpu());
    eprintln!(
        "  {expected} alerts in {:.3} s: {rate:.0} alerts/s; CPU {cpu_ms:.2} ms per request",
        phase.wall.as_secs_f64()
    );
    if side == Side::Bridge {
        eprintln!(
            "  pagerbridge per request: handlers {:.2} ms, SQLite {:.2} ms of CPU; {:.2} MiB written",
            per_request(used.cpu_of("tokio-rt-worker")),
            per_request(used.cpu_of("sqlx-sqlite")),
            used.written as f64 / args.requests as f64 / f64::from(1 << 20)
        );
    }
    Ok((rate, cpu_ms))
}

/// An Alertmanager webhook body's alerts as Prometheus posts them to `/api/v2/alerts`:
/// the same labels, annotations, start and generator URL; no end, so they are firing.
fn postable_alerts(webhook: &[u8]) -> anyhow::Result<Vec<u8>> {
    let body: Value = serde_json::from_slice(webhook)?;
    let alerts: Vec<Value> = body["alerts"]
        .as_array()
        .context("a webhook body without alerts")?
        .iter()
        .map(|alert| {
            json!({
                "labels": alert["labels"],
                "annotations": alert["annotations"],
                "startsAt": alert["startsAt"],
                "generatorURL": alert["generatorURL"],
            })
        })
        .collect();
    Ok(serde_json::to_vec(&alerts)?)
}

/// One latency measurement of both paths, alternating: the p50 and p99 (ms) of the native
/// notifier, then of the path through the bridge.
///
/// The bridge's budget is off here (the native notifier has none): a run sends more alerts
/// than PagerDuty's 120 a minute, and waiting for the budget is not the latency measured.
async fn latency(
    args: &Args,
    http: &reqwest::Client,
    binaries: &Binaries,
    run: usize,
) -> anyhow::Result<((f64, f64), (f64, f64))> {
    let sim = simulator().await?;
    let dir = tempfile::tempdir().context("temp dir")?;
    let config = write_bridge_yaml(dir.path(), &sim.base_url(), None, Budget::Unlimited, "")?;
    let bridge = BridgeProcess::start(&binaries.pagerbridge, &config).await?;
    let am = Alertmanager::start(&binaries.alertmanager, &sim, bridge.addr, http).await?;
    let mut native = Vec::with_capacity(args.latency_alerts);
    let mut bridged = Vec::with_capacity(args.latency_alerts);
    for i in 0..WARMUP_ALERTS + args.latency_alerts {
        for side in Side::order(run + i) {
            let alertname = format!("Latency{run:02}{}{i:05}", side.path());
            let ms = one_alert(http, &am, &sim, side, &alertname)
                .await
                .with_context(|| format!("{alertname} through {side:?}"))?;
            if i >= WARMUP_ALERTS {
                match side {
                    Side::Alertmanager => native.push(ms),
                    Side::Bridge => bridged.push(ms),
                }
            }
        }
    }
    drop(am);
    drop(bridge);
    println!();
    println!(
        "run {}: one alert at a time, Alertmanager → PagerDuty (ms)",
        run + 1
    );
    println!(
        "{:<28}{:>8}{:>8}{:>8}{:>8}{:>8}{:>7}",
        "path", "min", "p50", "p90", "p99", "max", "n"
    );
    percentiles_row("native notifier", &mut native);
    percentiles_row("through pagerbridge", &mut bridged);
    // percentiles_row sorted both.
    let p50_p99 = |sorted: &[f64]| (nearest_rank(sorted, 50.0), nearest_rank(sorted, 99.0));
    Ok((p50_p99(&native), p50_p99(&bridged)))
}

/// Posts one alert routed to `side`'s receiver and waits until the simulator has accepted
/// the event carrying `alertname`: the milliseconds from just before the POST to the
/// simulator's `received_at`.
async fn one_alert(
    http: &reqwest::Client,
    am: &Alertmanager,
    sim: &SpawnedSimulator,
    side: Side,
    alertname: &str,
) -> anyhow::Result<f64> {
    let seen = sim.sim.stats().requests;
    let sent = Timestamp::now();
    let alert = json!([{
        "labels": {
            "alertname": alertname,
            "path": side.path(),
            "instance": "host-0001.latency.test:9100",
            "severity": "critical",
        },
        "annotations": { "summary": format!("{alertname} on host-0001.latency.test:9100") },
        "startsAt": sent.to_string(),
        "generatorURL": "http://127.0.0.1:9090/graph",
    }]);
    let response = http
        .post(format!("{}/api/v2/alerts", am.url))
        .json(&alert)
        .send()
        .await?;
    ensure!(
        response.status().is_success(),
        "Alertmanager answered {}: {}",
        response.status(),
        response.text().await.unwrap_or_default()
    );
    let deadline = Instant::now() + WAIT;
    loop {
        if sim.sim.stats().requests > seen {
            // Only the alerts of this test reach the simulator, one at a time, so the event
            // is among the requests since `seen`; its alertname tells which.
            let received = sim.sim.events().into_iter().find(|request| {
                request.seq > seen
                    && request.path == "/v2/enqueue"
                    && request.body.to_string().contains(alertname)
            });
            if let Some(request) = received {
                ensure!(
                    request.status == 202,
                    "the simulator answered {}: {}",
                    request.status,
                    request.response
                );
                let at: Timestamp = request
                    .received_at
                    .parse()
                    .with_context(|| format!("simulator received_at {:?}", request.received_at))?;
                return Ok(signed_ms(at.duration_since(sent)));
            }
        }
        ensure!(
            Instant::now() < deadline,
            "no event reached the simulator within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The PagerDuty simulator on loopback, rate limit off.
async fn simulator() -> anyhow::Result<SpawnedSimulator> {
    spawn_on_loopback(SimConfig {
        rate_limit: 0,
        ..SimConfig::default()
    })
    .await
    .context("starting the simulator")
}

/// A running Alertmanager on loopback, without clustering, killed on drop. Its routes:
/// `path="native"` to its own PagerDuty notifier (pointed at the simulator), `path="bridge"`
/// to a webhook to the bridge, anything else to a receiver without integrations. Every
/// alert is its own group, notified at once.
struct Alertmanager {
    child: Child,
    /// `http://127.0.0.1:PORT`
    url: String,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    async fn start(
        binary: &Path,
        sim: &SpawnedSimulator,
        bridge: SocketAddr,
        http: &reqwest::Client,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("temp dir")?;
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            format!(
                r#"route:
  receiver: "none"
  group_by: ["..."]
  group_wait: 0s
  group_interval: 1m
  repeat_interval: 1h
  routes:
    - matchers: ['path="native"']
      receiver: "native"
    - matchers: ['path="bridge"']
      receiver: "bridge"
receivers:
  - name: "none"
  - name: "native"
    pagerduty_configs:
      - routing_key: "{ROUTING_KEY}"
        url: "{sim}/v2/enqueue"
        send_resolved: false
  - name: "bridge"
    webhook_configs:
      - url: "http://{bridge}/api/v1/alertmanager"
        send_resolved: true
"#,
                sim = sim.base_url(),
            ),
        )?;
        // A port free a moment ago may be taken before Alertmanager binds it: try another.
        for attempt in 1..=5 {
            let port = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
                .local_addr()?
                .port();
            let url = format!("http://127.0.0.1:{port}");
            let log = dir.path().join(format!("alertmanager-{attempt}.log"));
            let out = std::fs::File::create(&log)?;
            let mut child = Command::new(binary)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--cluster.listen-address=")
                // Loopback only, whatever the environment says.
                .env_remove("HTTP_PROXY")
                .env_remove("HTTPS_PROXY")
                .env_remove("http_proxy")
                .env_remove("https_proxy")
                .stdin(Stdio::null())
                .stdout(out.try_clone()?)
                .stderr(out)
                .spawn()
                .with_context(|| format!("starting {}", binary.display()))?;
            match wait_ready(&mut child, http, &url).await {
                Ok(true) => {
                    return Ok(Alertmanager {
                        child,
                        url,
                        _dir: dir,
                    });
                }
                Ok(false) => {
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    ensure!(
                        text.contains("address already in use"),
                        "Alertmanager exited:\n{text}"
                    );
                }
                Err(error) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(error);
                }
            }
        }
        bail!("Alertmanager found no free port in 5 attempts")
    }

    /// How many alerts it holds (`GET /api/v2/alerts`).
    async fn alert_count(&self, http: &reqwest::Client) -> anyhow::Result<usize> {
        let response = http
            .get(format!("{}/api/v2/alerts", self.url))
            .send()
            .await?;
        ensure!(
            response.status().is_success(),
            "GET /api/v2/alerts: {}",
            response.status()
        );
        let alerts: Vec<Value> = response.json().await?;
        Ok(alerts.len())
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `{url}/-/ready` until it answers 200 (`true`) or `child` exits (`false`).
async fn wait_ready(child: &mut Child, http: &reqwest::Client, url: &str) -> anyhow::Result<bool> {
    let deadline = Instant::now() + WAIT;
    let ready = format!("{url}/-/ready");
    loop {
        if child.try_wait()?.is_some() {
            return Ok(false);
        }
        if let Ok(response) = http.get(&ready).send().await
            && response.status().is_success()
        {
            return Ok(true);
        }
        ensure!(
            Instant::now() < deadline,
            "Alertmanager not ready within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
/// Each run's figures, then the medians over the runs, with ratios pagerbridge/Alertmanager
/// (the median of the per-run ratios: each ratio compares figures of the same run).
fn print_summary(args: &Args, runs: &[Run]) {
    let ratio_row = |label: &str, pairs: Vec<(f64, f64)>| {
        let ratios: Vec<f64> = pairs.iter().map(|(am, pb)| pb / am).collect();
        let per_run: Vec<String> = pairs
            .iter()
            .zip(&ratios)
            .map(|((am, pb), r)| format!("{am:.1}/{pb:.1} ({r:.2})"))
            .collect();
        println!(
            "{label:<32}{:>14.1}{:>14.1}{:>9.2}   {}",
            median(pairs.iter().map(|p| p.0).collect()),
            median(pairs.iter().map(|p| p.1).collect()),
            median(ratios),
            per_run.join("  ")
        );
    };
    println!();
    println!(
        "medians of {} run(s) (release: {}); ingest: {} requests x {} alerts; latency: {} \
         alerts per path, one at a time",
        runs.len(),
        !cfg!(debug_assertions),
        args.requests,
        args.alerts_per_request,
        args.latency_alerts
    );
    println!(
        "{:<32}{:>14}{:>14}{:>9}   per run: Alertmanager/pagerbridge (pb/AM)",
        "", "Alertmanager", "pagerbridge", "pb/AM"
    );
    for (i, &concurrency) in args.concurrency.iter().enumerate() {
        ratio_row(
            &format!("ingest, {concurrency} conn (alerts/s)"),
            runs.iter().map(|r| r.ingest[i]).collect(),
        );
        ratio_row(
            &format!("  CPU per request, {concurrency} conn (ms)"),
            runs.iter().map(|r| r.cpu[i]).collect(),
        );
    }
    println!(
        "{:<32}{:>14}{:>14}{:>9}",
        "Alertmanager → PagerDuty", "native", "via bridge", "pb/AM"
    );
    ratio_row(
        "p50 (ms)",
        runs.iter().map(|r| (r.native.0, r.bridged.0)).collect(),
    );
    ratio_row(
        "p99 (ms)",
        runs.iter().map(|r| (r.native.1, r.bridged.1)).collect(),
    );
}
