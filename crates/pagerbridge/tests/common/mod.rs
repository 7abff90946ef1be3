//! End-to-end harness: the real `pagerbridge serve` binary, a real SQLite file in a temporary
//! directory (or a PostgreSQL database, [`Setup::with_postgres`]), and the PagerDuty simulator
//! in-process, over loopback HTTP.
#![allow(dead_code)] // each test file uses a different part of the harness

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use pagerduty_simulator::SpawnedSimulator;
use pagerduty_simulator::{Config as SimConfig, Faults, spawn_on_loopback};
use serde_json::Value;

/// A distinctive fake routing key, so a leak is easy to search for.
pub const ROUTING_KEY: &str = "E2eTestRoutingKeyZZ0000000000042";

/// A real Alertmanager 0.25 body, from the project's samples (`examples/alertmanager-0.25/`).
pub fn sample(name: &str) -> Vec<u8> {
    pagerbridge_testkit::samples::read(name)
}

/// [`wait_until`] for a condition that must be awaited (one that asks a bridge, say).
pub async fn wait_until_async<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits for `condition`, checking every 20 ms, failing the test after `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn simulator(config: SimConfig) -> SpawnedSimulator {
    spawn_on_loopback(config).await.expect("simulator starts")
}

/// A simulator that enforces a tight budget: 10 requests per 2 s per routing key.
pub async fn tight_simulator() -> SpawnedSimulator {
    simulator(SimConfig {
        rate_limit: 10,
        rate_window: Duration::from_secs(2),
        ..SimConfig::default()
    })
    .await
}

/// A bridge's files: configuration, key and database, kept across restarts.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Setup {
    /// Writes a configuration pointing at `pagerduty_url`; `extra` is appended to the
    /// top level (YAML) and `target_extra` to the default target's mapping.
    pub fn new(pagerduty_url: &str, budget: (u32, &str), extra: &str, target_extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = dir.path().join("routing-key");
        std::fs::write(&key, format!("{ROUTING_KEY}\n")).expect("key file");
        set_mode(&key, 0o600);
        let config = dir.path().join("pagerbridge.yaml");
        let yaml = format!(
            r#"listen: "127.0.0.1:0"
storage:
  path: "{db}"
pagerduty:
  url: "{pagerduty_url}"
  rate_limit: {{ requests: {requests}, window: "{window}" }}
  timeout: "2s"
delivery:
  max_backoff: "500ms"
  shutdown_drain: "1s"
{extra}
targets:
  - name: "default"
    routing_key_file: "{key}"
{target_extra}
"#,
            db = dir.path().join("data/bridge.db").display(),
            requests = budget.0,
            window = budget.1,
            key = key.display(),
        );
        std::fs::write(&config, yaml).expect("config file");
        Self { dir, config }
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("data/bridge.db")
    }

    /// Makes later starts listen on `addr` instead of a fresh port, e.g. so that a restarted
    /// bridge keeps the address its clients were given.
    pub fn listen_on(&self, addr: SocketAddr) {
        let yaml = std::fs::read_to_string(&self.config).expect("config file");
        let (first, rest) = yaml.split_once('\n').expect("a config of several lines");
        assert!(first.starts_with("listen:"), "listen is the first line");
        std::fs::write(&self.config, format!("listen: \"{addr}\"\n{rest}")).expect("config file");
    }

    /// Sets `pagerduty.timeout` (the PagerDuty client's request timeout; `new` writes "2s")
    /// for later starts, e.g. `Setup::new(…).with_pagerduty_timeout("300ms")`.
    pub fn with_pagerduty_timeout(self, timeout: &str) -> Self {
        let yaml = std::fs::read_to_string(&self.config).expect("config file");
        let written = "  timeout: \"2s\"\ndelivery:\n";
        assert!(
            yaml.contains(written),
            "the pagerduty section as `new` writes it"
        );
        let wanted = format!("  timeout: \"{timeout}\"\ndelivery:\n");
        std::fs::write(&self.config, yaml.replacen(written, &wanted, 1)).expect("config file");
        self
    }

    /// Appends a target named `name` with the same routing key file as the default target,
    /// for later starts. It has no matchers: it takes what the targets before it do not.
    pub fn add_target_sharing_the_key(&self, name: &str) {
        let mut yaml = std::fs::read_to_string(&self.config).expect("config file");
        let key = self.dir.path().join("routing-key");
        yaml.push_str(&format!(
            "  - name: \"{name}\"\n    routing_key_file: \"{}\"\n",
            key.display()
        ));
        std::fs::write(&self.config, yaml).expect("config file");
    }

    /// Makes later starts use PostgreSQL at `url` (e.g. a
    /// [`pagerbridge_testkit::postgres::TestDatabase`]'s) instead of the SQLite file.
    pub fn with_postgres(self, url: &str) -> Self {
        let yaml = std::fs::read_to_string(&self.config).expect("config file");
        let written = format!("storage:\n  path: \"{}\"\n", self.db_path().display());
        assert!(
            yaml.contains(&written),
            "the storage section as `new` writes it"
        );
        let wanted = format!("storage:\n  backend: postgres\n  url: \"{url}\"\n");
        std::fs::write(&self.config, yaml.replacen(&written, &wanted, 1)).expect("config file");
        self
    }

    /// Sets `delivery.lease_ttl` for later starts (the default is 10 s; tests of takeovers
    /// want them quick).
    pub fn with_lease_ttl(self, ttl: &str) -> Self {
        let yaml = std::fs::read_to_string(&self.config).expect("config file");
        let wanted = format!("delivery:\n  lease_ttl: \"{ttl}\"\n");
        std::fs::write(&self.config, yaml.replacen("delivery:\n", &wanted, 1)).expect("config");
        self
    }

    /// Starts `pagerbridge serve` and waits until it listens.
    pub async fn start(&self) -> Bridge {
        Bridge::start(&self.config, &[]).await
    }

    /// [`Setup::start`] with extra environment variables, e.g. a `PAGERBRIDGE_*` override
    /// that tells one replica from another.
    pub async fn start_with_env(&self, env: &[(&str, &str)]) -> Bridge {
        Bridge::start(&self.config, env).await
    }
}

/// A running `pagerbridge serve` process.
pub struct Bridge {
    child: Child,
    pub addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
    http: reqwest::Client,
}

impl Bridge {
    async fn start(config: &Path, env: &[(&str, &str)]) -> Bridge {
        let mut command = Command::new(env!("CARGO_BIN_EXE_pagerbridge"));
        command
            .args(["--log-level", "debug", "serve", "--config"])
            .arg(config)
            .env_remove("PAGERBRIDGE_LOG")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        Bridge::spawn(command).await
    }

    /// Runs `command` (a `pagerbridge serve` however started: its stderr is taken for the logs)
    /// and waits until it listens.
    pub async fn spawn(mut command: Command) -> Bridge {
        let mut child = command
            .stderr(Stdio::piped())
            .spawn()
            .expect("pagerbridge starts");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(mut logs) = sink.lock() {
                    logs.push(line);
                }
            }
        });
        let mut addr = None;
        let found = logs.clone();
        wait_until("pagerbridge to listen", Duration::from_secs(30), || {
            addr = listening_field(&found.lock().expect("logs"), "addr")
                .and_then(|addr| addr.parse().ok());
            addr.is_some() || exited(&mut child)
        })
        .await;
        let addr = addr.unwrap_or_else(|| {
            panic!(
                "pagerbridge exited before listening:\n{}",
                logs.lock().expect("logs").join("\n")
            )
        });
        Bridge {
            child,
            addr,
            logs,
            http: reqwest::Client::new(),
        }
    }

    /// The storage the bridge said it listens with (`… (SQLite)`, `… (PostgreSQL)`, password
    /// masked).
    pub fn storage(&self) -> String {
        listening_field(&self.logs(), "storage").expect("a `pagerbridge listening` line")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// POSTs JSON bytes; returns status and parsed JSON answer.
    pub async fn post(&self, path: &str, body: &[u8]) -> (u16, Value) {
        let response = self
            .http
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        let json = response.json().await.unwrap_or(Value::Null);
        (status, json)
    }

    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let response = self.http.get(self.url(path)).send().await.expect("request");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().expect("logs").clone()
    }

    /// Sends `signal` (`STOP`, `CONT`, …) to the process.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args([format!("-{signal}").as_str(), &pid])
            .status();
        assert!(
            sent.is_ok_and(|s| s.success()),
            "could not send SIG{signal}"
        );
    }

    /// Whether this replica drives `target`'s lane now, by its `pagerbridge_lane_owned` gauge;
    /// `None` when it does not answer within half a second (paused, stopping).
    pub async fn lane_owned(&self, target: &str) -> Option<bool> {
        let request = self
            .http
            .get(self.url("/metrics"))
            .timeout(Duration::from_millis(500));
        let text = request.send().await.ok()?.text().await.ok()?;
        let gauge = format!("pagerbridge_lane_owned{{target=\"{target}\"}} ");
        let value = text.lines().find_map(|line| line.strip_prefix(&gauge))?;
        Some(value.trim() == "1")
    }

    /// Whether this replica answers and drives `target`'s lane now.
    pub async fn owns_lane(&self, target: &str) -> bool {
        self.lane_owned(target).await == Some(true)
    }

    /// `kill -9`: no chance to flush or drain.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Drop checks its logs.
    }

    /// SIGTERM, then waits for the process to exit (at most `timeout`); its logs stay readable.
    pub async fn terminate(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "could not send SIGTERM");
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "pagerbridge did not stop within {timeout:?}:\n{}",
                self.logs().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Bridge {
    /// Stops the bridge the way an operator would (SIGTERM; it drains for at most the test
    /// config's `shutdown_drain`, 1 s), so that its exit runs to the end — which is also when
    /// an instrumented binary writes its coverage profile. SIGKILL if it does not stop.
    ///
    /// Every end-to-end test is also a secret-hygiene test: the bridge ran at DEBUG, and not
    /// one log line may hold the routing key.
    fn drop(&mut self) {
        // Signal only a process still running: a reaped one's pid may be someone else's now.
        if matches!(self.child.try_wait(), Ok(None)) {
            let pid = self.child.id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if !std::thread::panicking() {
            assert_no_routing_key_in_logs(&self.logs());
        }
    }
}

pub fn assert_no_routing_key_in_logs(logs: &[String]) {
    if let Some(line) = logs.iter().find(|line| line.contains(ROUTING_KEY)) {
        panic!("the routing key leaked into a log line: {line}");
    }
}

/// Whether `bytes` hold the routing key.
pub fn holds_routing_key(bytes: &[u8]) -> bool {
    let needle = ROUTING_KEY.as_bytes();
    bytes.windows(needle.len()).any(|w| w == needle)
}

impl Drop for Setup {
    /// ...and no byte of its database (main file, WAL) may hold it either.
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let Ok(entries) = std::fs::read_dir(self.dir.path().join("data")) else {
            return;
        };
        for entry in entries.flatten() {
            if let Ok(bytes) = std::fs::read(entry.path()) {
                assert!(
                    !holds_routing_key(&bytes),
                    "the routing key is stored in {}",
                    entry.path().display()
                );
            }
        }
    }
}

fn exited(child: &mut Child) -> bool {
    matches!(child.try_wait(), Ok(Some(_)))
}

/// A field of the `pagerbridge listening` log line.
fn listening_field(logs: &[String], field: &str) -> Option<String> {
    logs.iter().find_map(|line| {
        let value: Value = serde_json::from_str(line).ok()?;
        let fields = value.get("fields")?;
        (fields.get("message")?.as_str()? == "pagerbridge listening")
            .then(|| Some(fields.get(field)?.as_str()?.to_owned()))?
    })
}

/// The 202-answered requests the simulator got, in arrival order: (dedup_key, action).
pub fn delivered(sim: &SpawnedSimulator) -> Vec<(String, String)> {
    sim.sim
        .events()
        .iter()
        .filter(|e| e.status == 202 && e.path == "/v2/enqueue")
        .map(|e| {
            (
                e.body["dedup_key"].as_str().unwrap_or_default().to_owned(),
                e.body["event_action"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect()
}

/// Checks that for every dedup key the accepted actions follow `expected` exactly once each
/// (duplicates of a step are allowed only if `allow_duplicates`).
pub fn assert_lifecycles(
    delivered: &[(String, String)],
    keys: &[String],
    expected: &[&str],
    allow_duplicates: bool,
) {
    for key in keys {
        let mut actions: Vec<&str> = delivered
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, a)| a.as_str())
            .collect();
        if allow_duplicates {
            actions.dedup();
        }
        assert_eq!(actions, expected, "lifecycle of {key}");
    }
}

/// Starts `setup`'s bridge while PagerDuty (`sim`) is down, has it accept `n` triggers and
/// `n / 2` resolves of alerts named `prefix-i`, `kill -9`s it once it has tried to send, brings
/// PagerDuty back and restarts the bridge: every accepted event must then arrive, in order.
pub async fn kill_9_during_an_outage_then_restart(
    sim: &SpawnedSimulator,
    setup: &Setup,
    prefix: &str,
    n: usize,
    wait: Duration,
) {
    sim.sim.set_faults(Faults {
        outage_seconds: Some(600),
        ..Faults::default()
    });
    let bridge = setup.start().await;
    let (code, _) = bridge
        .post(
            "/api/v1/alerts",
            &native_alerts(prefix, n, "firing", "critical"),
        )
        .await;
    assert_eq!(code, 202);
    let (code, _) = bridge
        .post(
            "/api/v1/alerts",
            &native_alerts(prefix, n / 2, "resolved", "critical"),
        )
        .await;
    assert_eq!(code, 202);
    wait_until("the bridge to try PagerDuty", wait, || {
        !sim.sim.events().is_empty()
    })
    .await;
    bridge.kill9();
    assert!(delivered(sim).is_empty(), "nothing got through the outage");

    sim.sim.set_faults(Faults {
        outage_seconds: Some(0),
        ..Faults::default()
    });
    let _restarted = setup.start().await;
    wait_until("all accepted events delivered after restart", wait, || {
        delivered(sim).len() == n + n / 2
    })
    .await;
    let key = |i: usize| {
        expected_dedup_key(&[
            ("alertname", &format!("{prefix}-{i}")),
            ("instance", &format!("host-{i}")),
            ("severity", "critical"),
        ])
    };
    let resolved: Vec<String> = (0..n / 2).map(key).collect();
    let open: Vec<String> = (n / 2..n).map(key).collect();
    let got = delivered(sim);
    assert_lifecycles(&got, &resolved, &["trigger", "resolve"], false);
    assert_lifecycles(&got, &open, &["trigger"], false);
}

/// Two targets with one routing key: errors go to "default", the rest to "second". Each is
/// configured with the key's whole budget (10 requests per 2 s, as [`tight_simulator`]
/// enforces), so only a budget kept
/// per key keeps them within it.
pub fn setup_of_two_targets_sharing_a_key(sim: &SpawnedSimulator) -> Setup {
    let setup = Setup::new(
        &sim.base_url(),
        (10, "2s"),
        "",
        "    match: { severity: \"error\" }",
    );
    setup.add_target_sharing_the_key("second");
    setup
}

/// Posts `n` lifecycles to each of the two targets of [`setup_of_two_targets_sharing_a_key`],
/// round-robin over `bridges` (replicas of one store), and checks every one is delivered in
/// order with not one request over the key's budget (10 per 2 s) and not one 429 needed.
pub async fn two_targets_sharing_a_key_stay_within_its_budget(
    sim: &SpawnedSimulator,
    bridges: &[&Bridge],
) {
    let n = 8;
    let mut next = bridges.iter().cycle();
    for status in ["firing", "resolved"] {
        for (prefix, severity) in [("Db", "error"), ("Web", "warning")] {
            let bridge = next.next().expect("a bridge");
            let (code, receipt) = bridge
                .post(
                    "/api/v1/alerts",
                    &native_alerts(prefix, n, status, severity),
                )
                .await;
            assert_eq!(code, 202, "{receipt}");
        }
    }
    wait_until("every lifecycle delivered", Duration::from_secs(60), || {
        delivered(sim).len() == 4 * n
    })
    .await;
    let keys: Vec<String> = [("Db", "error"), ("Web", "warning")]
        .into_iter()
        .flat_map(|(prefix, severity)| {
            (0..n).map(move |i| {
                expected_dedup_key(&[
                    ("alertname", &format!("{prefix}-{i}")),
                    ("instance", &format!("host-{i}")),
                    ("severity", severity),
                ])
            })
        })
        .collect();
    assert_lifecycles(&delivered(sim), &keys, &["trigger", "resolve"], false);
    let stats = sim.sim.stats();
    assert_eq!(
        stats.budget_violations, 0,
        "the two targets together went over the key's budget: {stats:?}"
    );
    // Every 429 would have been counted before the lane's next request, so before the last 202.
    for bridge in bridges {
        let (_, metrics) = bridge.get_text("/metrics").await;
        for target in ["default", "second"] {
            let line = format!("pagerduty_rate_limit_hits_total{{target=\"{target}\"}} 0\n");
            assert!(metrics.contains(&line), "{target} needed no 429: {metrics}");
        }
    }
}

/// A [`TcpProxy`](pagerbridge_testkit::tcp_proxy::TcpProxy) in front of the PostgreSQL server
/// of `database_url`, and the same URL through the proxy: a bridge given it can be cut off
/// from its database (`cut()`) while everything else still reaches it.
pub fn postgres_through_a_proxy(
    database_url: &str,
) -> (pagerbridge_testkit::tcp_proxy::TcpProxy, String) {
    let mut url = reqwest::Url::parse(database_url).expect("database URL");
    let upstream = SocketAddr::new(
        url.host_str()
            .and_then(|h| h.parse().ok())
            .expect("an IP address in the test database's URL"),
        url.port().unwrap_or(5432),
    );
    let proxy = pagerbridge_testkit::tcp_proxy::TcpProxy::start(upstream);
    url.set_port(Some(proxy.addr().port())).expect("port");
    (proxy, url.into())
}

/// A native API request with `n` alerts named `prefix-i`, all with `status`.
pub fn native_alerts(prefix: &str, n: usize, status: &str, severity: &str) -> Vec<u8> {
    let alerts: Vec<Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "status": status,
                "labels": {"alertname": format!("{prefix}-{i}"), "severity": severity, "instance": format!("host-{i}")},
                "annotations": {"summary": format!("{prefix} number {i}")},
                "startsAt": "2026-11-29T10:00:00Z"
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({ "alerts": alerts })).expect("json")
}

/// The dedup key pagerbridge derives for `labels` (SHA-256 of the canonical label set),
/// computed here independently of the code under test.
pub fn expected_dedup_key(labels: &[(&str, &str)]) -> String {
    use sha2::Digest;
    let mut sorted = labels.to_vec();
    sorted.sort();
    let body: Vec<String> = sorted
        .iter()
        .map(|(k, v)| {
            let escaped = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{escaped}\"")
        })
        .collect();
    hex::encode(sha2::Sha256::digest(format!("{{{}}}", body.join(","))))
}

/// Sets a file's Unix permission bits.
pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}
