//! A real Alertmanager (Debian's 0.25, `prometheus-alertmanager`) for the end-to-end tests of
//! `tests/alertmanager.rs` and `tests/alertmanager_sync.rs`: started, stopped and restarted on
//! its own port (its data kept or wiped), fed alerts as Prometheus feeds it, silenced through
//! its API; plus the alerts and the bridge-side waits those tests share. Only loopback is
//! contacted. A test file includes it with `mod common; mod alertmanager_harness;`.
#![allow(dead_code)] // each test file uses a different part of the harness

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde_json::{Value, json};

use crate::common::{self, delivered, expected_dedup_key, wait_until};

/// How long any one thing may take: generous, the machine is shared and small.
pub const WAIT: Duration = Duration::from_secs(30);

/// A port nobody listened on a moment ago (the caller retries if someone takes it meanwhile).
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A loopback address for a bridge that Alertmanager must know before the bridge starts
/// (the bridge must know Alertmanager's too): give it to [`common::Setup::listen_on`].
pub fn free_addr() -> SocketAddr {
    (Ipv4Addr::LOCALHOST, free_port()).into()
}

/// What an Alertmanager is configured with beyond its one route and webhook receiver.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where its webhook sends, e.g. `http://127.0.0.1:PORT/api/v1/alertmanager`.
    pub webhook_url: String,
    /// How long it waits before re-sending an unchanged firing group (the route's
    /// `repeat_interval`).
    pub repeat_interval: &'static str,
    /// Top-level YAML appended to its configuration, e.g. `inhibit_rules: …`.
    pub extra: String,
}

impl Options {
    pub fn new(webhook_url: &str) -> Self {
        Self {
            webhook_url: webhook_url.to_owned(),
            repeat_interval: "1h",
            extra: String::new(),
        }
    }
}

/// A running Alertmanager, without clustering, whose only receiver is a webhook to the
/// bridge. It keeps its port across [`Alertmanager::restart`]s. Killed on drop.
pub struct Alertmanager {
    binary: PathBuf,
    /// `None` while stopped.
    child: Option<Child>,
    addr: SocketAddr,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    /// A receiver name unique to this instance, to recognise it behind its port.
    receiver: String,
    /// The log of the current (or last) run.
    log: PathBuf,
    runs: u32,
    /// When the current run was launched: its `/api/v2/status` `uptime` is no earlier.
    pub started: Timestamp,
    http: reqwest::Client,
    dir: tempfile::TempDir,
}

impl Alertmanager {
    /// Starts `binary` with its webhook pointing at `webhook_url` and waits until it is ready.
    pub async fn start(binary: &Path, webhook_url: &str) -> Alertmanager {
        Self::start_with(binary, Options::new(webhook_url)).await
    }

    /// [`Alertmanager::start`] with more configuration.
    pub async fn start_with(binary: &Path, options: Options) -> Alertmanager {
        let dir = tempfile::tempdir().expect("temp dir");
        let receiver = format!(
            "pagerbridge-{}",
            dir.path().file_name().expect("name").to_string_lossy()
        );
        let Options {
            webhook_url,
            repeat_interval,
            extra,
        } = options;
        let yaml = format!(
            r#"route:
  receiver: "{receiver}"
  group_by: ["alertname"]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: {repeat_interval}
receivers:
  - name: "{receiver}"
    webhook_configs:
      - url: "{webhook_url}"
        send_resolved: true
{extra}
"#
        );
        std::fs::write(dir.path().join("alertmanager.yml"), yaml).expect("alertmanager config");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("http client");
        let mut am = Alertmanager {
            binary: binary.to_owned(),
            child: None,
            addr: (Ipv4Addr::LOCALHOST, 0).into(),
            url: String::new(),
            receiver,
            log: PathBuf::new(),
            runs: 0,
            started: Timestamp::now(),
            http,
            dir,
        };
        for _ in 1..=5 {
            am.addr = (Ipv4Addr::LOCALHOST, free_port()).into();
            am.url = format!("http://{}", am.addr);
            if am.run().await {
                return am;
            }
            let text = am.log_text();
            assert!(
                text.contains("address already in use"),
                "alertmanager exited:\n{text}"
            );
            // Someone took the port between our probe and its bind: try another.
        }
        panic!("alertmanager found no free port in 5 attempts");
    }

    /// Launches the binary on `self.addr` and waits until it is ready (`true`) or has exited
    /// (`false`).
    async fn run(&mut self) -> bool {
        self.runs += 1;
        self.log = self
            .dir
            .path()
            .join(format!("alertmanager-{}.log", self.runs));
        let out = std::fs::File::create(&self.log).expect("log file");
        self.started = Timestamp::now();
        let child = Command::new(&self.binary)
            .arg(format!(
                "--config.file={}",
                self.dir.path().join("alertmanager.yml").display()
            ))
            .arg(format!("--storage.path={}", self.data_dir().display()))
            .arg(format!("--web.listen-address={}", self.addr))
            .arg(format!("--web.external-url={}", self.url))
            .arg("--cluster.listen-address=")
            .arg("--log.level=debug")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .expect("alertmanager starts");
        let child = self.child.insert(child);
        wait_ready(child, &self.http, &self.url, &self.receiver, &self.log).await
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Stops it as an operator would (SIGTERM: it writes its silences and notification log to
    /// its data directory) and waits until it has exited.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(None)) {
            let pid = child.id().to_string();
            let sent = Command::new("kill").args(["-TERM", &pid]).status();
            assert!(sent.is_ok_and(|s| s.success()), "could not send SIGTERM");
        }
        let deadline = Instant::now() + WAIT;
        while !matches!(child.try_wait(), Ok(Some(_))) {
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "alertmanager did not stop within {WAIT:?}:\n{}",
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts it again on the same port (so the bridge's configuration stays right), after a
    /// [`Alertmanager::stop`]. With `wipe`, its data directory (silences, notification log)
    /// is deleted first, as when its volume is lost; its alerts are lost either way, they live
    /// in memory only.
    pub async fn start_again(&mut self, wipe: bool) {
        assert!(self.child.is_none(), "stop it first");
        if wipe {
            match std::fs::remove_dir_all(self.data_dir()) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    panic!("cannot wipe alertmanager's data: {e}")
                }
                _ => {}
            }
        }
        if !self.run().await {
            panic!(
                "alertmanager did not start again on {}:\n{}",
                self.addr,
                self.log_text()
            );
        }
    }

    /// [`Alertmanager::stop`] then [`Alertmanager::start_again`].
    pub async fn restart(&mut self, wipe: bool) {
        self.stop().await;
        self.start_again(wipe).await;
    }

    /// `POST /api/v2/alerts`, as Prometheus does.
    pub async fn post_alerts(&self, alerts: &[Value]) {
        let request = self.http.post(format!("{}/api/v2/alerts", self.url));
        ok(request.json(alerts), "POST /api/v2/alerts").await;
    }

    /// A Prometheus stand-in: posts `alerts` to it every `period` until dropped, as Prometheus
    /// re-sends firing alerts. A failed post (while it restarts, say) is ignored: the next
    /// round posts again.
    pub fn keep_posting(&self, alerts: Vec<Value>, period: Duration) -> KeepPosting {
        let http = self.http.clone();
        let url = format!("{}/api/v2/alerts", self.url);
        KeepPosting(tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                let _ = http.post(&url).json(&alerts).send().await;
            }
        }))
    }

    /// `GET /api/v2/alerts`: every alert it holds, with its `status`.
    pub async fn alerts(&self) -> Vec<Value> {
        let request = self.http.get(format!("{}/api/v2/alerts", self.url));
        let body = ok(request, "GET /api/v2/alerts").await;
        serde_json::from_str(&body).expect("a JSON list of alerts")
    }

    /// Waits until it lists the alert `alertname` with a non-empty `status.{field}`
    /// (`silencedBy`, `inhibitedBy`): from then on, every poll of the bridge sees it so.
    pub async fn wait_until_muted(&self, alertname: &str, field: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let alerts = self.alerts().await;
            let muted = alerts.iter().any(|a| {
                a["labels"]["alertname"] == alertname
                    && a["status"][field].as_array().is_some_and(|s| !s.is_empty())
            });
            if muted {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{alertname} not {field} within {WAIT:?}: {alerts:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `POST /api/v2/silences` for one `alertname`, for an hour from now; returns its id.
    pub async fn silence_alertname(&self, alertname: &str) -> String {
        let now = Timestamp::now();
        let ends = now + jiff::SignedDuration::from_hours(1);
        let silence = json!({
            "matchers": [{"name": "alertname", "value": alertname, "isRegex": false, "isEqual": true}],
            "startsAt": now.to_string(),
            "endsAt": ends.to_string(),
            "createdBy": "test",
            "comment": "test",
        });
        let request = self.http.post(format!("{}/api/v2/silences", self.url));
        let body = ok(request.json(&silence), "POST /api/v2/silences").await;
        let answer: Value = serde_json::from_str(&body).expect("a JSON answer");
        answer["silenceID"]
            .as_str()
            .unwrap_or_else(|| panic!("no silenceID in {body}"))
            .to_owned()
    }

    /// `DELETE /api/v2/silence/{id}`: the silence expires now.
    pub async fn expire_silence(&self, id: &str) {
        let request = self
            .http
            .delete(format!("{}/api/v2/silence/{id}", self.url));
        ok(request, "DELETE /api/v2/silence/{id}").await;
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("alertmanager {}'s log:\n{}", self.url, self.log_text());
        }
    }
}

/// Sends `request` (`what`, for the message) to an Alertmanager and returns its answer's body,
/// failing the test unless it is 200.
async fn ok(request: reqwest::RequestBuilder, what: &str) -> String {
    let response = request.send().await.expect("alertmanager answers");
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    assert_eq!(status, 200, "{what}: {body}");
    body
}

/// The task of [`Alertmanager::keep_posting`]; dropping it stops the posts.
pub struct KeepPosting(tokio::task::JoinHandle<()>);

impl Drop for KeepPosting {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Polls `/-/ready` until the Alertmanager `child` answers (`true`) or exits (`false`).
async fn wait_ready(
    child: &mut Child,
    http: &reqwest::Client,
    url: &str,
    receiver: &str,
    log: &Path,
) -> bool {
    let get = async |path: &str| -> Option<String> {
        let response = http.get(format!("{url}{path}")).send().await.ok()?;
        (response.status() == 200).then_some(())?;
        response.text().await.ok()
    };
    let deadline = Instant::now() + WAIT;
    loop {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return false;
        }
        if get("/-/ready").await.is_some() {
            // Another test's Alertmanager could hold the port: check it is ours.
            let status = get("/api/v2/status").await.unwrap_or_default();
            let ours = serde_json::from_str::<Value>(&status).is_ok_and(|s| {
                s["config"]["original"]
                    .as_str()
                    .is_some_and(|c| c.contains(receiver))
            });
            if ours && matches!(child.try_wait(), Ok(None)) {
                return true;
            }
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "alertmanager not ready within {WAIT:?}:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An alert as a Prometheus server would post it.
pub struct TestAlert {
    pub labels: Vec<(&'static str, String)>,
    pub annotations: Vec<(&'static str, String)>,
    pub starts_at: Timestamp,
}

impl TestAlert {
    pub fn new(alertname: &str, instance: &str, severity: &str, starts_at: Timestamp) -> Self {
        Self {
            labels: vec![
                ("alertname", alertname.to_owned()),
                ("instance", instance.to_owned()),
                ("severity", severity.to_owned()),
            ],
            annotations: vec![
                ("summary", format!("{alertname} on {instance}")),
                (
                    "runbook_url",
                    format!("https://runbooks.example.test/{}", alertname.to_lowercase()),
                ),
            ],
            starts_at,
        }
    }

    pub fn label(&self, name: &str) -> &str {
        self.labels
            .iter()
            .find(|(k, _)| *k == name)
            .map_or("", |(_, v)| v.as_str())
    }

    pub fn dedup_key(&self) -> String {
        let labels: Vec<(&str, &str)> = self.labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        expected_dedup_key(&labels)
    }

    /// The API v2 body: firing (no `endsAt`) or, given `ends_at` (now or past), resolved.
    pub fn json(&self, ends_at: Option<Timestamp>) -> Value {
        let map = |pairs: &[(&str, String)]| -> serde_json::Map<String, Value> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Value::from(v.as_str())))
                .collect()
        };
        let mut alert = json!({
            "labels": map(&self.labels),
            "annotations": map(&self.annotations),
            "startsAt": self.starts_at.to_string(),
            "generatorURL": format!(
                "http://127.0.0.1:9090/graph?g0.expr=disk_free%7Binstance%3D%22{}%22%7D",
                self.label("instance")
            ),
        });
        if let Some(ends_at) = ends_at {
            alert["endsAt"] = ends_at.to_string().into();
        }
        alert
    }
}

pub fn firing(alerts: &[&TestAlert]) -> Vec<Value> {
    alerts.iter().map(|a| a.json(None)).collect()
}

pub fn resolved(alerts: &[&TestAlert]) -> Vec<Value> {
    let now = Timestamp::now();
    alerts.iter().map(|a| a.json(Some(now))).collect()
}

/// The value of `sample` (`name{labels}`) in a Prometheus text exposition.
pub fn metric(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

/// Polls the bridge's `/metrics` until `sample` has `value`.
pub async fn wait_for_metric(bridge: &common::Bridge, sample: &str, value: f64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, text) = bridge.get_text("/metrics").await;
        if metric(&text, sample) == Some(value) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {sample} {value}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The watcher's polls so far, answered or failed
/// (`pagerbridge_silence_watcher_polls_total`).
pub async fn polls(bridge: &common::Bridge) -> f64 {
    let (_, text) = bridge.get_text("/metrics").await;
    ["ok", "error"]
        .iter()
        .filter_map(|result| {
            metric(
                &text,
                &format!("pagerbridge_silence_watcher_polls_total{{result=\"{result}\"}}"),
            )
        })
        .sum()
}

/// Waits until the watcher has polled `n` more times: whatever a poll would do once the state
/// it sees is settled has been done by then.
pub async fn wait_for_polls(bridge: &common::Bridge, n: u32) {
    let before = polls(bridge).await;
    let deadline = Instant::now() + WAIT;
    while polls(bridge).await < before + f64::from(n) {
        assert!(
            Instant::now() < deadline,
            "the watcher did not poll {n} times within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `since` is `at_least` in the past (a deadline of the code under test, such as
/// `grace`, measured on the same clock), then for `n` more polls.
pub async fn wait_past(bridge: &common::Bridge, since: Timestamp, at_least: Duration, n: u32) {
    let due = since + at_least;
    wait_until("the deadline to pass", WAIT, || Timestamp::now() > due).await;
    wait_for_polls(bridge, n).await;
}

/// The dedup keys of the events of `action` PagerDuty accepted, in arrival order.
pub fn actions(sim: &common::SpawnedSimulator, action: &str) -> Vec<String> {
    delivered(sim)
        .into_iter()
        .filter(|(_, a)| a == action)
        .map(|(k, _)| k)
        .collect()
}
