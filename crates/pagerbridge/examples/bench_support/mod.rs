//! What the benchmark examples (`load`, `vs_alertmanager`) share: the bridge as an operator
//! would configure it, started in-process on loopback or as its own `pagerbridge serve`
//! process; the batches of distinct firing alerts
//! they send; and the arithmetic of their reports (rates, nearest-rank percentiles, medians).
//! An example includes it with `mod bench_support;`.
#![allow(dead_code)] // each example uses a different part

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use jiff::Timestamp;
use pagerbridge::alert::Labels;
use pagerbridge::{config, format, service};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::Mutex;

/// A fake 32-character routing key; it only ever reaches the in-process simulator.
pub const ROUTING_KEY: &str = "LoadTestRoutingKey00000000000001";

/// One webhook to send: its body and the dedup keys of its alerts.
pub struct Webhook {
    pub body: Vec<u8>,
    pub keys: Vec<String>,
}

/// What a sender saw for one request.
#[derive(Clone, Copy)]
pub struct Posted {
    /// POST sent → 2xx received.
    pub latency: Duration,
    /// When the 2xx came back, on the wall clock the simulator's `received_at` uses.
    pub accepted_at: Timestamp,
}

/// The outcome of [`post_concurrently`].
pub struct PostPhase {
    /// From the first POST to the last answer.
    pub wall: Duration,
    /// Per body, in order: what its sender saw, `None` if it was not accepted (or not sent).
    pub results: Vec<Option<Posted>>,
    /// Why bodies were not accepted, one line each.
    pub failures: Vec<String>,
}

/// POSTs every JSON body in `bodies` to `url`, `concurrency` senders (one connection each)
/// taking the next until all are sent or `limit` has passed.
pub async fn post_concurrently(
    http: &reqwest::Client,
    url: &str,
    bodies: Vec<Vec<u8>>,
    concurrency: usize,
    limit: Duration,
) -> anyhow::Result<PostPhase> {
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let results = Arc::new(Mutex::new(vec![None; bodies.len()]));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let start = Instant::now();
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (http, url, bodies, next, results, failures) = (
            http.clone(),
            url.to_owned(),
            bodies.clone(),
            next.clone(),
            results.clone(),
            failures.clone(),
        );
        senders.spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= bodies.len() || start.elapsed() > limit {
                    break;
                }
                let sent = Instant::now();
                let response = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(bodies[index].clone())
                    .send()
                    .await;
                let (latency, accepted_at) = (sent.elapsed(), Timestamp::now());
                match response {
                    Ok(response) if response.status().is_success() => {
                        let _ = response.bytes().await;
                        results.lock().await[index] = Some(Posted {
                            latency,
                            accepted_at,
                        });
                    }
                    Ok(response) => {
                        let status = response.status();
                        let text = response.text().await.unwrap_or_default();
                        failures
                            .lock()
                            .await
                            .push(format!("request {index}: {status} {text}"));
                    }
                    Err(error) => failures
                        .lock()
                        .await
                        .push(format!("request {index}: {error}")),
                }
            }
        });
    }
    while let Some(joined) = senders.join_next().await {
        joined.context("a sender panicked")?;
    }
    let wall = start.elapsed();
    let results = results.lock().await.clone();
    let failures = failures.lock().await.clone();
    Ok(PostPhase {
        wall,
        results,
        failures,
    })
}

/// `pagerbridge::service::run` on a loopback port, stopped by [`Bridge::stop`].
pub struct Bridge {
    pub addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Bridge {
    /// Starts the bridge with `config` and waits until it answers `/healthz`.
    pub async fn start(config: config::Config, http: &reqwest::Client) -> anyhow::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(service::run(config, listener, async {
            let _ = stopped.await;
        }));
        wait_ready(http, addr).await?;
        Ok(Bridge { addr, stop, task })
    }

    /// Asks it to stop and waits (at most 15 s); a failure to stop is reported, not fatal,
    /// since the figures were taken by then.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        match tokio::time::timeout(Duration::from_secs(15), self.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => eprintln!("bridge stopped with an error: {error:#}"),
            Ok(Err(error)) => eprintln!("bridge task failed: {error}"),
            Err(_) => eprintln!("bridge did not stop within 15s"),
        }
    }
}

/// A YAML config as an operator would write it, loaded the way `serve` loads it: one target
/// keyed from a file in `dir`, a PagerDuty budget that never throttles.
/// `postgres_url`: the run's database, else a SQLite file in `dir`.
pub fn bridge_config(
    dir: &Path,
    pagerduty_url: &str,
    postgres_url: Option<&str>,
) -> anyhow::Result<config::Config> {
    let path = write_bridge_yaml(dir, pagerduty_url, postgres_url, Budget::Unlimited, "")?;
    config::load(Some(&path))
}

/// The budget a benchmark's bridge sends under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Budget {
    /// The default configuration's: PagerDuty's documented 120 requests a minute per key.
    Default,
    /// A million a minute: it never throttles, so deliveries measure the bridge alone.
    Unlimited,
    /// `requests` per `window` (a duration as the config writes it, e.g. `"2s"`).
    Custom { requests: u32, window: &'static str },
}

/// Writes `dir/pagerbridge.yaml` for `pagerbridge serve` (or [`config::load`]) and the key
/// file it names: listening on any loopback port, one target, PagerDuty at `pagerduty_url`
/// with `budget`, storage at `postgres_url` or in a SQLite file in `dir/data`; `extra` is
/// added at the top level (YAML). Returns the file's path.
pub fn write_bridge_yaml(
    dir: &Path,
    pagerduty_url: &str,
    postgres_url: Option<&str>,
    budget: Budget,
    extra: &str,
) -> anyhow::Result<PathBuf> {
    let key = dir.join("routing-key");
    write_secret(&key, ROUTING_KEY)?;
    let storage = match postgres_url {
        Some(url) => format!("storage:\n  backend: postgres\n  url: \"{url}\"\n"),
        None => {
            // Its own directory, as in a deployment (/var/lib/pagerbridge beside
            // /etc/pagerbridge), not beside the key file, whose directory the bridge watches.
            let data = dir.join("data");
            std::fs::create_dir_all(&data)?;
            format!(
                "storage:\n  path: \"{}\"\n",
                data.join("bridge.db").display()
            )
        }
    };
    let rate_limit = match budget {
        Budget::Default => String::new(),
        Budget::Unlimited => "  rate_limit: { requests: 1000000, window: \"60s\" }\n".to_owned(),
        Budget::Custom { requests, window } => {
            format!("  rate_limit: {{ requests: {requests}, window: \"{window}\" }}\n")
        }
    };
    let yaml = format!(
        r#"listen: "127.0.0.1:0"
{storage}pagerduty:
  url: "{pagerduty_url}"
{rate_limit}  timeout: "10s"
delivery:
  shutdown_drain: "1s"
{extra}targets:
  - name: "default"
    routing_key_file: "{key}"
"#,
        key = key.display(),
    );
    let path = dir.join("pagerbridge.yaml");
    std::fs::write(&path, yaml)?;
    Ok(path)
}

/// Writes `secret` and a newline to `path`, readable by its owner only.
pub fn write_secret(path: &Path, secret: &str) -> anyhow::Result<()> {
    std::fs::write(path, format!("{secret}\n"))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// The `pagerbridge` binary beside the running example (`target/release/pagerbridge` for
/// `target/release/examples/NAME`), unless `explicit` names one.
pub fn bridge_binary(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    let binary = match explicit {
        Some(path) => path.to_owned(),
        None => std::env::current_exe()
            .context("the example's own path")?
            .parent()
            .and_then(Path::parent)
            .map(|dir| dir.join("pagerbridge"))
            .context("the example is not in a target directory")?,
    };
    ensure!(
        binary.is_file(),
        "no pagerbridge binary at {}: build it first (cargo build --release -p pagerbridge \
         --bin pagerbridge) or name one",
        binary.display()
    );
    Ok(binary)
}

/// `pagerbridge serve` as its own process, as an operator runs it; killed if dropped without
/// [`BridgeProcess::stop`].
pub struct BridgeProcess {
    child: Child,
    pub addr: SocketAddr,
}

impl BridgeProcess {
    /// Starts `binary serve --config config` and waits until it listens (its address read
    /// from its log line `pagerbridge listening`).
    pub async fn start(binary: &Path, config: &Path) -> anyhow::Result<Self> {
        let mut child = Command::new(binary)
            .args(["--log-level", "info", "serve", "--config"])
            .arg(config)
            .env_remove("PAGERBRIDGE_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stderr = child.stderr.take().context("stderr")?;
        let addr: Arc<std::sync::Mutex<Option<SocketAddr>>> = Arc::default();
        let found = addr.clone();
        let early: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
        let kept = early.clone();
        // Reads the logs to the end (so the pipe never fills), noting the listening address
        // and keeping the first lines, which say why it stopped if it did.
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(listening) = listening_addr(&line)
                    && let Ok(mut slot) = found.lock()
                {
                    *slot = Some(listening);
                }
                if let Ok(mut kept) = kept.lock()
                    && kept.len() < 50
                {
                    kept.push(line);
                }
            }
        });
        let mut running = None;
        let deadline = Instant::now() + Duration::from_secs(30);
        while running.is_none() {
            if let Some(status) = child.try_wait()? {
                // The process is gone, so its stderr ends: the reader finishes what it wrote.
                let _ = reader.join();
                let logs = early.lock().map(|l| l.join("\n")).unwrap_or_default();
                bail!("pagerbridge exited before listening: {status}\n{logs}");
            }
            ensure!(Instant::now() < deadline, "pagerbridge did not listen");
            running = *addr.lock().map_err(|_| anyhow::anyhow!("log reader"))?;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let addr = running.context("no address")?;
        Ok(BridgeProcess { child, addr })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the process has used so far (see [`Usage`]).
    pub fn usage(&self) -> anyhow::Result<Usage> {
        Usage::of(self.child.id())
    }

    /// VmRSS and VmHWM (peak RSS) of the process, in KiB.
    pub fn memory(&self) -> anyhow::Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let field = |name: &str| -> anyhow::Result<u64> {
            let line = status
                .lines()
                .find(|l| l.starts_with(name))
                .with_context(|| format!("no {name} in /proc/<pid>/status"))?;
            line.trim_start_matches(name)
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .with_context(|| format!("{line:?}"))
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// SIGTERM, then waits for the exit (SIGKILL after 15 s).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                eprintln!("pagerbridge did not stop within 15 s; killing it");
                self.child.kill()?;
                self.child.wait()?;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

impl Drop for BridgeProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What a process has used so far, read from Linux's `/proc`: CPU time (user and system) by
/// thread name, and the bytes it passed to `write` calls (`wchar`: for the bridge, mostly
/// SQLite's WAL and database writes; the answers to the benchmark's requests are a few hundred
/// bytes each). Two readings apart give what happened in between ([`Usage::since`]).
#[derive(Clone, Debug, Default)]
pub struct Usage {
    /// CPU time by thread name (`tokio-rt-worker`, `sqlx-sqlite-wor`…: Linux keeps the first
    /// 15 bytes of a name); threads of the same name are added up.
    pub cpu_by_thread: std::collections::BTreeMap<String, Duration>,
    pub written: u64,
}

impl Usage {
    /// Linux's `USER_HZ`, the unit of `/proc`'s CPU times: 100 on every architecture it runs
    /// on.
    const TICKS_PER_SECOND: u64 = 100;

    pub fn of(pid: u32) -> anyhow::Result<Self> {
        let mut usage = Usage::default();
        let tasks = format!("/proc/{pid}/task");
        for task in std::fs::read_dir(&tasks).with_context(|| format!("reading {tasks}"))? {
            // A thread may end between the listing and the read: it is left out.
            let Ok(stat) = std::fs::read_to_string(task?.path().join("stat")) else {
                continue;
            };
            let (name, ticks) = thread_cpu(&stat).with_context(|| format!("{stat:?}"))?;
            let time = Duration::from_millis(ticks * 1000 / Self::TICKS_PER_SECOND);
            *usage.cpu_by_thread.entry(name).or_default() += time;
        }
        let io = std::fs::read_to_string(format!("/proc/{pid}/io"))?;
        usage.written = io
            .lines()
            .find_map(|line| line.strip_prefix("wchar:"))
            .context("no wchar in /proc/<pid>/io")?
            .trim()
            .parse()?;
        Ok(usage)
    }

    /// What was used between `earlier` and this reading.
    pub fn since(&self, earlier: &Usage) -> Usage {
        let cpu_by_thread = self
            .cpu_by_thread
            .iter()
            .map(|(name, &time)| {
                let before = earlier.cpu_by_thread.get(name).copied().unwrap_or_default();
                (name.clone(), time.saturating_sub(before))
            })
            .collect();
        Usage {
            cpu_by_thread,
            written: self.written.saturating_sub(earlier.written),
        }
    }

    /// CPU time of every thread.
    pub fn cpu(&self) -> Duration {
        self.cpu_by_thread.values().sum()
    }

    /// CPU time of the threads whose name starts with `prefix`.
    pub fn cpu_of(&self, prefix: &str) -> Duration {
        self.cpu_by_thread
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(_, &time)| time)
            .sum()
    }
}

/// A thread's name and CPU ticks (utime + stime) from its `/proc/<pid>/task/<tid>/stat`:
/// `tid (name) state ppid … utime stime …`, where the name may hold spaces and parentheses.
fn thread_cpu(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_owned();
    let mut fields = stat.get(close + 1..)?.split_whitespace();
    // After the name: state is field 3, utime field 14 and stime field 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((name, utime + stime))
}

/// The `addr` of the JSON log line `pagerbridge listening`.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let value: Value = serde_json::from_str(line).ok()?;
    let fields = value.get("fields")?;
    if fields.get("message")?.as_str()? != "pagerbridge listening" {
        return None;
    }
    fields.get("addr")?.as_str()?.parse().ok()
}

/// Waits (at most 10 s) for `/healthz` to answer 200.
async fn wait_ready(http: &reqwest::Client, addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let url = format!("http://{addr}/healthz");
    loop {
        if let Ok(response) = http.get(&url).send().await
            && response.status().is_success()
        {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "the bridge did not become ready within 10s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `webhooks` bodies based on the real firing sample, each alert with its own alertname
/// (per webhook) and instance (per alert), so every alert is a distinct incident.
pub fn build_webhooks(webhooks: usize, per_webhook: usize) -> anyhow::Result<Vec<Webhook>> {
    let path = pagerbridge_testkit::samples::path("alertmanager-webhook-firing.json");
    let sample: Value = serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
    )?;
    let originals = sample["alerts"]
        .as_array()
        .filter(|a| !a.is_empty())
        .context("the sample has no alerts")?;
    (0..webhooks)
        .map(|w| {
            let name = format!("LoadTest{w:05}");
            let mut keys = Vec::with_capacity(per_webhook);
            let alerts: Vec<Value> = (0..per_webhook)
                .map(|i| {
                    let mut alert = originals[i % originals.len()].clone();
                    let instance = format!("host-{i:04}.load.test:9100");
                    alert["labels"]["alertname"] = Value::from(name.as_str());
                    alert["labels"]["instance"] = Value::from(instance.as_str());
                    alert["annotations"]["summary"] = Value::from(format!("{name} on {instance}"));
                    let labels: Labels = serde_json::from_value(alert["labels"].clone())?;
                    let key = format::alert_dedup_key(&labels).as_str().to_owned();
                    // A hash of the labels, as Alertmanager's own fingerprints are: in no
                    // order, so the bridge's index of them grows as it does in production
                    // (counting up, as before 2026-12-01, made every insert an append).
                    alert["fingerprint"] = Value::from(&key[..16]);
                    keys.push(key);
                    Ok(alert)
                })
                .collect::<anyhow::Result<_>>()?;
            let mut body = sample.clone();
            body["alerts"] = Value::Array(alerts);
            body["groupKey"] = Value::from(format!("{{}}:{{alertname=\"{name}\"}}"));
            body["groupLabels"] = serde_json::json!({ "alertname": name });
            body["commonLabels"]["alertname"] = Value::from(name.as_str());
            Ok(Webhook {
                body: serde_json::to_vec(&body)?,
                keys,
            })
        })
        .collect()
}

pub fn signed_ms(duration: jiff::SignedDuration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

pub fn per_second(count: usize, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

/// The nearest-rank `p`th percentile of `sorted` (ascending); NaN when it is empty.
pub fn nearest_rank(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[index.clamp(1, sorted.len()) - 1]
}

/// The median (nearest rank) of `values`, in any order.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    nearest_rank(&values, 50.0)
}

/// Nearest-rank percentiles of `values` (sorted in place), as one table row.
pub fn percentiles_row(label: &str, values: &mut [f64]) {
    if values.is_empty() {
        println!("{label:<28}{:>8}", "-");
        return;
    }
    values.sort_by(f64::total_cmp);
    println!(
        "{label:<28}{:>8.1}{:>8.1}{:>8.1}{:>8.1}{:>8.1}{:>7}",
        values[0],
        nearest_rank(values, 50.0),
        nearest_rank(values, 90.0),
        nearest_rank(values, 99.0),
        values[values.len() - 1],
        values.len()
    );
}
