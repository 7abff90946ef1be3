//! The bridge behind a real Alertmanager (Debian's 0.25, `prometheus-alertmanager`): alerts are
//! posted to Alertmanager's API v2, grouped by it, sent by its webhook receiver to the real
//! `pagerbridge serve`, and delivered to the PagerDuty simulator. Only loopback is contacted.
//!
//! Every test here is `#[ignore = "needs alertmanager"]` (`pagerbridge_testkit::needs`):
//! `scripts/test` runs them when the binary is on `PATH`, CI always does, and without it they
//! fail instead of passing untested.

mod common;

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    ROUTING_KEY, Setup, assert_lifecycles, delivered, expected_dedup_key, simulator, wait_until,
};
use jiff::Timestamp;
use pagerbridge_testkit::needs;
use pagerduty_simulator::{AlertState, Config as SimConfig, Faults};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

/// A port nobody listened on a moment ago (the caller retries if someone takes it meanwhile).
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A running Alertmanager, without clustering, whose only receiver is a webhook to the
/// bridge. Killed on drop.
struct Alertmanager {
    child: Child,
    /// `http://127.0.0.1:PORT`
    url: String,
    log: PathBuf,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    /// Starts `binary` with its webhook pointing at `webhook_url` and waits until it is ready.
    async fn start(binary: &Path, webhook_url: &str) -> Alertmanager {
        let dir = tempfile::tempdir().expect("temp dir");
        // A receiver name unique to this instance, to recognise it behind the port.
        let receiver = format!(
            "pagerbridge-{}",
            dir.path().file_name().expect("name").to_string_lossy()
        );
        let config = dir.path().join("alertmanager.yml");
        let yaml = format!(
            r#"route:
  receiver: "{receiver}"
  group_by: ["alertname"]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: "{receiver}"
    webhook_configs:
      - url: "{webhook_url}"
        send_resolved: true
"#
        );
        std::fs::write(&config, yaml).expect("alertmanager config");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("http client");
        for attempt in 1..=5 {
            let addr = format!("127.0.0.1:{}", free_port());
            let log = dir.path().join(format!("alertmanager-{attempt}.log"));
            let out = std::fs::File::create(&log).expect("log file");
            let mut child = Command::new(binary)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .arg(format!("--web.external-url=http://{addr}"))
                .arg("--cluster.listen-address=")
                .arg("--log.level=debug")
                .stdin(Stdio::null())
                .stdout(out.try_clone().expect("log file"))
                .stderr(out)
                .spawn()
                .expect("alertmanager starts");
            let url = format!("http://{addr}");
            if wait_ready(&mut child, &http, &url, &receiver, &log).await {
                return Alertmanager {
                    child,
                    url,
                    log,
                    http,
                    _dir: dir,
                };
            }
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            assert!(
                text.contains("address already in use"),
                "alertmanager exited:\n{text}"
            );
            // Someone took the port between our probe and its bind: try another.
        }
        panic!("alertmanager found no free port in 5 attempts");
    }

    /// `POST /api/v2/alerts`, as Prometheus does.
    async fn post_alerts(&self, alerts: &[Value]) {
        let response = self
            .http
            .post(format!("{}/api/v2/alerts", self.url))
            .json(alerts)
            .send()
            .await
            .expect("alertmanager answers");
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        assert_eq!(status, 200, "POST /api/v2/alerts: {body}");
    }

    /// `POST /api/v2/silences` for one `alertname`, for an hour from now.
    async fn silence_alertname(&self, alertname: &str) {
        let now = Timestamp::now();
        let ends = now + jiff::SignedDuration::from_hours(1);
        let silence = json!({
            "matchers": [{"name": "alertname", "value": alertname, "isRegex": false, "isEqual": true}],
            "startsAt": now.to_string(),
            "endsAt": ends.to_string(),
            "createdBy": "test",
            "comment": "test",
        });
        let response = self
            .http
            .post(format!("{}/api/v2/silences", self.url))
            .json(&silence)
            .send()
            .await
            .expect("alertmanager answers");
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        assert_eq!(status, 200, "POST /api/v2/silences: {body}");
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("alertmanager's log:\n{}", self.log_text());
        }
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
struct TestAlert {
    labels: Vec<(&'static str, String)>,
    annotations: Vec<(&'static str, String)>,
    starts_at: Timestamp,
}

impl TestAlert {
    fn new(alertname: &str, instance: &str, severity: &str, starts_at: Timestamp) -> Self {
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

    fn label(&self, name: &str) -> &str {
        self.labels
            .iter()
            .find(|(k, _)| *k == name)
            .map_or("", |(_, v)| v.as_str())
    }

    fn dedup_key(&self) -> String {
        let labels: Vec<(&str, &str)> = self.labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        expected_dedup_key(&labels)
    }

    /// The API v2 body: firing (no `endsAt`) or, given `ends_at` (now or past), resolved.
    fn json(&self, ends_at: Option<Timestamp>) -> Value {
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

fn firing(alerts: &[&TestAlert]) -> Vec<Value> {
    alerts.iter().map(|a| a.json(None)).collect()
}

fn resolved(alerts: &[&TestAlert]) -> Vec<Value> {
    let now = Timestamp::now();
    alerts.iter().map(|a| a.json(Some(now))).collect()
}

/// The value of `sample` (`name{labels}`) in a Prometheus text exposition.
fn metric(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

/// Polls the bridge's `/metrics` until `sample` has `value`.
async fn wait_for_metric(bridge: &common::Bridge, sample: &str, value: f64) {
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

fn actions(sim: &pagerduty_simulator::SpawnedSimulator, action: &str) -> Vec<String> {
    delivered(sim)
        .into_iter()
        .filter(|(_, a)| a == action)
        .map(|(k, _)| k)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs alertmanager"]
async fn alertmanager_groups_become_one_pagerduty_alert_per_alert() {
    let binary = needs::alertmanager();
    let sim = simulator(SimConfig::default()).await;
    let setup = Setup::new(&sim.base_url(), (120, "60s"), "", "");
    let bridge = setup.start().await;
    let am = Alertmanager::start(&binary, &bridge.url("/api/v1/alertmanager")).await;

    let started = Timestamp::now();
    let db1 = TestAlert::new("DiskFull", "db-1", "critical", started);
    let mut db2 = TestAlert::new("DiskFull", "db-2", "warning", started);
    // A value the canonical label text must escape (`\\`, `\"`, `\n`), and non-ASCII.
    db2.labels
        .push(("mountpoint", "D:\\data \"pg\"\nvolume ü".to_owned()));
    let db3 = TestAlert::new("DiskFull", "db-3", "info", started);
    let keys = [db1.dedup_key(), db2.dedup_key(), db3.dedup_key()];

    am.post_alerts(&firing(&[&db1, &db2, &db3])).await;
    wait_until("3 triggers", WAIT, || delivered(&sim).len() == 3).await;

    let alerts = sim.sim.alerts();
    assert_eq!(
        alerts.len(),
        3,
        "one PagerDuty alert per alert, not per group"
    );
    for (alert, key) in [&db1, &db2, &db3].iter().zip(&keys) {
        let open = alerts
            .iter()
            .find(|a| a.dedup_key == *key)
            .unwrap_or_else(|| panic!("no PagerDuty alert for {:?}", alert.labels));
        let severity = alert.label("severity");
        assert_eq!(open.state, AlertState::Triggered);
        assert_eq!(open.routing_key, ROUTING_KEY);
        assert_eq!(open.severity, severity);
        assert_eq!(open.source, alert.label("instance"));
        assert_eq!(
            open.summary,
            format!(
                "[{}] DiskFull: DiskFull on {}",
                severity.to_uppercase(),
                alert.label("instance")
            )
        );
        let trigger = sim
            .sim
            .events()
            .into_iter()
            .find(|e| e.status == 202 && e.body["dedup_key"] == key.as_str())
            .expect("the trigger request");
        let body = &trigger.body;
        let timestamp: Timestamp = body["payload"]["timestamp"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .expect("an RFC 3339 timestamp");
        assert_eq!(timestamp, alert.starts_at, "timestamp is startsAt");
        let links: Vec<(&str, &str)> = body["links"]
            .as_array()
            .expect("links")
            .iter()
            .map(|l| {
                (
                    l["text"].as_str().unwrap_or(""),
                    l["href"].as_str().unwrap_or(""),
                )
            })
            .collect();
        assert!(
            links.contains(&("Runbook", "https://runbooks.example.test/diskfull")),
            "{links:?}"
        );
        assert!(
            links
                .iter()
                .any(|(text, href)| *text == "Source"
                    && href.starts_with("http://127.0.0.1:9090/graph")),
            "{links:?}"
        );
        // Built from the webhook's externalURL, which is the Alertmanager we started.
        let silence = format!("{}/#/silences/new?filter=", am.url);
        assert!(
            links.iter().any(|(_, href)| href.starts_with(&silence)),
            "{links:?}"
        );
        // Alertmanager adds no labels of its own: the labels are exactly those posted.
        let labels = &body["payload"]["custom_details"]["labels"];
        let posted: serde_json::Map<String, Value> = alert
            .labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::from(v.as_str())))
            .collect();
        assert_eq!(labels, &Value::Object(posted), "{body}");
    }

    // db-1 and db-2 resolve: Alertmanager sends the group again, db-3 still firing in it.
    am.post_alerts(&resolved(&[&db1, &db2])).await;
    wait_until("2 resolves", WAIT, || actions(&sim, "resolve").len() == 2).await;
    let mut resolves = actions(&sim, "resolve");
    resolves.sort();
    let mut expected = vec![keys[0].clone(), keys[1].clone()];
    expected.sort();
    assert_eq!(resolves, expected, "exactly db-1 and db-2 resolved");
    // The re-sent, unchanged db-3 was suppressed rather than triggered again.
    let (_, metrics) = bridge.get_text("/metrics").await;
    let suppressed = metric(
        &metrics,
        "pagerbridge_suppressed_events_total{target=\"default\",reason=\"unchanged_retrigger\"}",
    );
    assert!(
        suppressed.is_some_and(|n| n >= 1.0),
        "Alertmanager re-sent db-3 and the bridge suppressed it: {metrics}"
    );
    let db3_alert = sim
        .sim
        .alerts()
        .into_iter()
        .find(|a| a.dedup_key == keys[2])
        .expect("db-3's alert");
    assert_eq!(
        db3_alert.state,
        AlertState::Triggered,
        "db-3 stays triggered"
    );

    am.post_alerts(&resolved(&[&db3])).await;
    wait_until("the third resolve", WAIT, || {
        actions(&sim, "resolve").len() == 3
    })
    .await;

    let got = delivered(&sim);
    assert_eq!(got.len(), 6, "each trigger and resolve once: {got:?}");
    assert_lifecycles(&got, &keys, &["trigger", "resolve"], false);
    let alerts = sim.sim.alerts();
    assert_eq!(alerts.len(), 3);
    assert!(alerts.iter().all(|a| a.state == AlertState::Resolved));
    let events = sim.sim.events();
    assert!(events.iter().all(|e| e.status == 202), "no request refused");
    for event in &events {
        pagerbridge_testkit::schema::assert_valid_enqueue(&event.body);
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs alertmanager"]
async fn nothing_alertmanager_handed_over_is_lost_to_kill_9_during_an_outage() {
    let binary = needs::alertmanager();
    let sim = simulator(SimConfig::default()).await;
    sim.sim.set_faults(Faults {
        outage_seconds: Some(600),
        ..Faults::default()
    });
    let setup = Setup::new(&sim.base_url(), (1000, "60s"), "", "");
    let bridge = setup.start().await;
    let am = Alertmanager::start(&binary, &bridge.url("/api/v1/alertmanager")).await;

    let started = Timestamp::now();
    let nodes: Vec<TestAlert> = (1..=5)
        .map(|i| TestAlert::new("NodeDown", &format!("node-{i}"), "critical", started))
        .collect();
    let all: Vec<&TestAlert> = nodes.iter().collect();
    am.post_alerts(&firing(&all)).await;
    let depth = "pagerbridge_queue_depth{target=\"default\"}";
    wait_for_metric(&bridge, depth, 5.0).await;
    wait_until("the bridge to try PagerDuty", WAIT, || {
        sim.sim.events().iter().any(|e| e.status == 503)
    })
    .await;

    am.post_alerts(&resolved(&all[..2])).await;
    // The 3 unchanged re-sends are suppressed; the 2 resolves queue behind their triggers.
    wait_for_metric(&bridge, depth, 7.0).await;
    let addr = bridge.addr;
    bridge.kill9();
    assert!(delivered(&sim).is_empty(), "nothing got through the outage");

    sim.sim.set_faults(Faults {
        outage_seconds: Some(0),
        ..Faults::default()
    });
    // Same port, so Alertmanager's webhook URL stays right.
    setup.listen_on(addr);
    let restarted = setup.start().await;
    wait_until(
        "all 7 accepted events delivered after restart",
        WAIT,
        || delivered(&sim).len() >= 7,
    )
    .await;
    wait_for_metric(&restarted, depth, 0.0).await;

    let keys: Vec<String> = nodes.iter().map(TestAlert::dedup_key).collect();
    let got = delivered(&sim);
    // Nothing was accepted by PagerDuty before the kill, so not even a duplicate is excusable.
    assert_eq!(got.len(), 7, "{got:?}");
    assert_lifecycles(&got, &keys[..2], &["trigger", "resolve"], false);
    assert_lifecycles(&got, &keys[2..], &["trigger"], false);
    for event in sim.sim.events() {
        pagerbridge_testkit::schema::assert_valid_enqueue(&event.body);
    }
    drop(am);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs alertmanager"]
async fn an_alert_silenced_in_alertmanager_is_acknowledged_once() {
    let binary = needs::alertmanager();
    let sim = simulator(SimConfig::default()).await;
    // Alertmanager needs the bridge's address and the bridge Alertmanager's: pick the bridge's
    // port first.
    let bridge_addr: std::net::SocketAddr = (Ipv4Addr::LOCALHOST, free_port()).into();
    let am = Alertmanager::start(
        &binary,
        &format!("http://{bridge_addr}/api/v1/alertmanager"),
    )
    .await;
    let extra = format!(
        "alertmanager:\n  url: \"{}\"\n  poll_interval: \"500ms\"\n",
        am.url
    );
    let setup = Setup::new(&sim.base_url(), (120, "60s"), &extra, "");
    setup.listen_on(bridge_addr);
    let bridge = setup.start().await;

    let started = Timestamp::now();
    let disk = TestAlert::new("DiskFull", "db-1", "critical", started);
    let cpu = TestAlert::new("CpuHot", "db-2", "warning", started);
    am.post_alerts(&firing(&[&disk, &cpu])).await;
    wait_until("2 triggers", WAIT, || actions(&sim, "trigger").len() == 2).await;

    am.silence_alertname("DiskFull").await;
    wait_until("an acknowledge", WAIT, || {
        !actions(&sim, "acknowledge").is_empty()
    })
    .await;

    // Three more polls find DiskFull silenced again: still one acknowledge.
    let polls = "pagerbridge_silence_watcher_polls_total{result=\"ok\"}";
    let (_, text) = bridge.get_text("/metrics").await;
    let before = metric(&text, polls).expect("the watcher polls");
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, text) = bridge.get_text("/metrics").await;
        if metric(&text, polls).is_some_and(|n| n >= before + 3.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the watcher stopped polling:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(actions(&sim, "acknowledge"), vec![disk.dedup_key()]);
    let (_, text) = bridge.get_text("/metrics").await;
    assert_eq!(
        metric(
            &text,
            "pagerbridge_silence_watcher_polls_total{result=\"error\"}"
        ),
        Some(0.0),
        "{text}"
    );
    let state = |key: &str| {
        sim.sim
            .alerts()
            .into_iter()
            .find(|a| a.dedup_key == key)
            .map(|a| a.state)
    };
    assert_eq!(state(&disk.dedup_key()), Some(AlertState::Acknowledged));
    assert_eq!(state(&cpu.dedup_key()), Some(AlertState::Triggered));
    assert_eq!(delivered(&sim).len(), 3, "{:?}", delivered(&sim));
    drop(am);
}
