//! Monitoring the bridge itself: the alert rules of `deploy/prometheus/` and their promtool
//! unit tests, the runbook section every alert links to, the Grafana dashboard of
//! `deploy/grafana/` checked against what a running bridge exports, the metrics behind the
//! storage and ingest alerts, and a real Prometheus that watches a bridge through a PagerDuty
//! outage and fires the stall alert.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::{Setup, delivered, native_alerts, postgres_through_a_proxy, simulator, wait_until};
use pagerbridge_testkit::needs;
use pagerduty_simulator::{Config as SimConfig, Faults};
use serde_json::{Value, json};

/// The stall alert, the one the end-to-end test watches fire.
const STALL_ALERT: &str = "PagerbridgeDeliveryStalled";

/// Asks `probe` every 50 ms until it answers `Some`, failing the test after `timeout`.
async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rules_file() -> PathBuf {
    repository_root().join("deploy/prometheus/pagerbridge-rules.yaml")
}

fn rule_test_files() -> Vec<PathBuf> {
    let dir = repository_root().join("deploy/prometheus/tests");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("deploy/prometheus/tests")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no promtool tests in {}", dir.display());
    files
}

fn dashboard_file() -> PathBuf {
    repository_root().join("deploy/grafana/pagerbridge.json")
}

fn read_yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("readable YAML");
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(dashboard_file()).expect("the dashboard");
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// Every alerting rule of the rules file.
fn alerts(rules: &Value) -> Vec<Value> {
    let groups = rules["groups"].as_array().expect("groups");
    groups
        .iter()
        .flat_map(|group| group["rules"].as_array().expect("rules").iter())
        .filter(|rule| rule.get("alert").is_some())
        .cloned()
        .collect()
}

fn name(alert: &Value) -> &str {
    alert["alert"].as_str().expect("an alert name")
}

/// The anchor GitHub gives a Markdown heading: lowercase, punctuation dropped, spaces to
/// hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The runbook's second-level headings, by anchor.
fn runbook_sections() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(repository_root().join("docs/runbook.md"))
        .expect("docs/runbook.md");
    text.lines()
        .filter_map(|line| line.strip_prefix("## "))
        .map(|heading| (anchor(heading), heading.to_owned()))
        .collect()
}

/// The workspace's `repository`, under which `runbook_url`s point.
fn repository_url() -> String {
    let manifest = std::fs::read_to_string(repository_root().join("Cargo.toml")).expect("manifest");
    manifest
        .lines()
        .find_map(|line| line.strip_prefix("repository = "))
        .map(|value| value.trim().trim_matches('"').to_owned())
        .expect("repository = … in the workspace manifest")
}

#[test]
fn every_alert_has_a_severity_and_a_runbook_section() {
    let alerts = alerts(&read_yaml(&rules_file()));
    assert!(alerts.len() >= 8, "{} alerts", alerts.len());
    let sections = runbook_sections();
    let base = format!("{}/blob/main/docs/runbook.md#", repository_url());
    let mut names = BTreeSet::new();
    for alert in &alerts {
        let name = name(alert);
        assert!(names.insert(name.to_owned()), "{name} is defined twice");
        let severity = alert["labels"]["severity"].as_str().unwrap_or_default();
        assert!(
            ["critical", "warning"].contains(&severity),
            "{name}: severity {severity:?}"
        );
        for annotation in ["summary", "description"] {
            assert!(
                alert["annotations"][annotation]
                    .as_str()
                    .is_some_and(|text| !text.is_empty()),
                "{name} has no {annotation}"
            );
        }
        let url = alert["annotations"]["runbook_url"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has no runbook_url"));
        let section = url
            .strip_prefix(&base)
            .unwrap_or_else(|| panic!("{name}: {url} is not under {base}"));
        assert_eq!(section, anchor(name), "{name}: {url}");
        assert!(
            sections.contains_key(section),
            "{name}: docs/runbook.md has no section #{section} (it has {:?})",
            sections.values().collect::<Vec<_>>()
        );
    }
    // One section per alert: no section for an alert that is gone.
    for (section, heading) in &sections {
        if heading.starts_with("Pagerbridge") {
            assert!(
                names.iter().any(|name| anchor(name) == *section),
                "docs/runbook.md has a section {heading} but no such alert"
            );
        }
    }
}

#[test]
fn every_alert_is_unit_tested_firing_and_not_firing() {
    let mut firing = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for file in rule_test_files() {
        let tests = read_yaml(&file);
        // They test the shipped rules, not a copy.
        assert_eq!(
            tests["rule_files"],
            json!(["../pagerbridge-rules.yaml"]),
            "{}",
            file.display()
        );
        for test in tests["tests"].as_array().expect("tests") {
            for case in test["alert_rule_test"].as_array().into_iter().flatten() {
                let alert = case["alertname"].as_str().expect("alertname").to_owned();
                let fires = case["exp_alerts"]
                    .as_array()
                    .is_some_and(|expected| !expected.is_empty());
                if fires { &mut firing } else { &mut quiet }.insert(alert);
            }
        }
    }
    for alert in alerts(&read_yaml(&rules_file())) {
        let name = name(&alert);
        assert!(firing.contains(name), "no promtool test where {name} fires");
        assert!(
            quiet.contains(name),
            "no promtool test where {name} is quiet"
        );
    }
}

/// Runs promtool in the repository's root; fails the test, with what it said, unless it
/// succeeds.
fn promtool(args: &[&str]) -> Output {
    let output = Command::new(needs::promtool())
        .args(args)
        .current_dir(repository_root())
        .output()
        .expect("promtool runs");
    assert!(
        output.status.success(),
        "promtool {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[test]
#[ignore = "needs promtool"]
fn alert_rules_pass_promtool_check() {
    let output = promtool(&["check", "rules", "deploy/prometheus/pagerbridge-rules.yaml"]);
    let said = String::from_utf8_lossy(&output.stdout);
    let count = alerts(&read_yaml(&rules_file())).len();
    assert!(
        said.contains(&format!("SUCCESS: {count} rules found")),
        "{said}"
    );
}

#[test]
#[ignore = "needs promtool"]
fn alert_rules_pass_their_promtool_unit_tests() {
    let files: Vec<String> = rule_test_files()
        .iter()
        .map(|path| path.display().to_string())
        .collect();
    let mut args = vec!["test", "rules"];
    args.extend(files.iter().map(String::as_str));
    let output = promtool(&args);
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(said.contains("SUCCESS"), "{said}");
}

/// Every query of the dashboard: (panel title, expression).
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for panel in all_panels(dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("a PromQL expression");
            queries.push((
                panel["title"].as_str().unwrap_or_default().to_owned(),
                expr.to_owned(),
            ));
        }
    }
    queries
}

/// The panels, rows and the panels of collapsed rows included.
fn all_panels(dashboard: &Value) -> Vec<&Value> {
    let top = dashboard["panels"].as_array().expect("panels");
    top.iter()
        .flat_map(|panel| {
            std::iter::once(panel).chain(panel["panels"].as_array().into_iter().flatten())
        })
        .collect()
}

/// A query as Prometheus would get it from Grafana with every target selected.
fn as_sent(expr: &str) -> String {
    let sent = expr
        .replace("$__rate_interval", "5m")
        .replace("$target", ".*");
    assert!(
        !sent.contains('$'),
        "a variable the test does not know in {expr}"
    );
    sent
}

#[test]
fn the_dashboard_is_importable_with_datasource_and_target_variables() {
    let dashboard = dashboard();
    assert!(
        dashboard["id"].is_null(),
        "an imported dashboard gets its id"
    );
    assert_eq!(dashboard["uid"], "pagerbridge");
    assert!(dashboard["schemaVersion"].as_u64().is_some());
    assert!(dashboard.get("__inputs").is_none(), "no import prompt");
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    let variable = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no ${name} variable"))
    };
    let datasource = variable("datasource");
    assert_eq!(datasource["type"], "datasource");
    assert_eq!(datasource["query"], "prometheus");
    let target = variable("target");
    assert_eq!(target["type"], "query");
    assert_eq!(target["datasource"]["uid"], "${datasource}");
    assert_eq!(target["multi"], true);
    assert_eq!(target["includeAll"], true);
    assert_eq!(target["allValue"], ".*");
    assert!(
        target["definition"]
            .as_str()
            .is_some_and(|q| q.starts_with("label_values(") && q.ends_with(", target)")),
        "{target}"
    );

    let mut ids = BTreeSet::new();
    for panel in all_panels(&dashboard) {
        let title = panel["title"].as_str().expect("a title");
        assert!(
            ids.insert(panel["id"].as_u64().expect("an id")),
            "{title}: id"
        );
        assert!(panel["gridPos"]["w"].as_u64().is_some(), "{title}: gridPos");
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} has no query");
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{title}");
        }
    }

    // What the issue asks to see, by the metrics that show it.
    let used: BTreeSet<String> = dashboard_queries(&dashboard)
        .iter()
        .flat_map(|(_, expr)| selectors(expr))
        .map(|(metric, _)| metric)
        .collect();
    for metric in [
        "pagerduty_events_triggered_total",
        "pagerduty_events_acknowledged_total",
        "pagerduty_events_resolved_total",
        "pagerduty_change_events_total",
        "pagerduty_api_duration_seconds_bucket",
        "pagerduty_api_errors_total",
        "pagerduty_rate_limit_hits_total",
        "pagerbridge_queue_depth",
        "pagerbridge_oldest_pending_age_seconds",
        "pagerbridge_budget_requests",
        "pagerbridge_lane_state",
        "pagerbridge_dead_letters",
        "pagerbridge_suppressed_events_total",
        "pagerbridge_fallback_sends_total",
        "pagerbridge_silence_watcher_polls_total",
    ] {
        assert!(used.contains(metric), "no panel shows {metric}");
    }
}

#[test]
#[ignore = "needs promtool"]
fn dashboard_queries_pass_promtool() {
    // Each query becomes a recording rule, so promtool parses it as Prometheus would.
    let rules: Vec<Value> = dashboard_queries(&dashboard())
        .iter()
        .enumerate()
        .map(|(n, (_, expr))| json!({"record": format!("dashboard:query_{n}"), "expr": as_sent(expr)}))
        .collect();
    let dir = tempfile::tempdir().expect("temp dir");
    // JSON is YAML.
    let file = dir.path().join("dashboard-queries.yaml");
    let groups = json!({"groups": [{"name": "dashboard", "rules": rules}]});
    std::fs::write(&file, groups.to_string()).expect("write");
    let output = promtool(&["check", "rules", &file.display().to_string()]);
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        said.contains(&format!("SUCCESS: {} rules found", rules.len())),
        "{said}"
    );
}

/// The metrics an expression selects, with the text inside their braces (`None` when there
/// are none): `pagerbridge_*` and `pagerduty_*` names only (the others are functions, label
/// names, keywords, or `up`). Strings and numbers (`5m`) are skipped.
fn selectors(expr: &str) -> Vec<(String, Option<String>)> {
    let chars: Vec<char> = expr.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(&chars, i);
        } else if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_:".contains(chars[i])) {
                i += 1;
            }
            let ident: String = chars[start..i].iter().collect();
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            let braces = if chars.get(j) == Some(&'{') {
                let open = j;
                let mut k = j + 1;
                while k < chars.len() && chars[k] != '}' {
                    k = if chars[k] == '"' {
                        skip_string(&chars, k)
                    } else {
                        k + 1
                    };
                }
                i = k + 1;
                Some(chars[open + 1..k.min(chars.len())].iter().collect())
            } else {
                None
            };
            if ident.starts_with("pagerbridge_") || ident.starts_with("pagerduty_") {
                found.push((ident, braces));
            }
        } else {
            i += 1;
        }
    }
    found
}

/// The index just past the string that opens at `start`.
fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() && chars[i] != quote {
        i += if chars[i] == '\\' { 2 } else { 1 };
    }
    i + 1
}

/// The label matchers in a selector's braces: (label, operator, value).
fn matchers(braces: &str) -> Vec<(String, String, String)> {
    let chars: Vec<char> = braces.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        while i < chars.len() && (chars[i].is_whitespace() || chars[i] == ',') {
            i += 1;
        }
        if i >= chars.len() {
            break;
        }
        let start = i;
        while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
            i += 1;
        }
        let label: String = chars[start..i].iter().collect();
        let op_start = i;
        while i < chars.len() && "=!~ ".contains(chars[i]) {
            i += 1;
        }
        let op: String = chars[op_start..i].iter().filter(|c| **c != ' ').collect();
        assert!(
            chars.get(i) == Some(&'"'),
            "cannot read the matchers {braces:?}"
        );
        let end = skip_string(&chars, i);
        let value: String = chars[i + 1..end - 1].iter().collect();
        i = end;
        found.push((label, op, value));
    }
    found
}

/// A scrape's samples: name → label names.
fn exported(metrics: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut samples: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let end = line.find(['{', ' ']).expect("a sample line");
        let labels = samples.entry(line[..end].to_owned()).or_default();
        if line[end..].starts_with('{') {
            let close = line.rfind('}').expect("closing brace");
            labels.extend(
                matchers(&line[end + 1..close])
                    .into_iter()
                    .map(|(l, _, _)| l),
            );
        }
    }
    samples
}

#[test]
fn the_query_reader_finds_metrics_and_their_matchers() {
    let found = selectors(
        r#"sum by (target) (rate(pagerduty_api_requests_total{target=~"$target", status="5.."}[5m])) / on (target) max(pagerbridge_budget_requests) > 0.5 and "pagerbridge_not_a_metric""#,
    );
    assert_eq!(
        found,
        [
            (
                "pagerduty_api_requests_total".to_owned(),
                Some(r#"target=~"$target", status="5..""#.to_owned())
            ),
            ("pagerbridge_budget_requests".to_owned(), None),
        ]
    );
    assert_eq!(
        matchers(r#"target=~"$target", status!="a\"b,c""#),
        [
            ("target".into(), "=~".into(), "$target".into()),
            ("status".into(), "!=".into(), r#"a\"b,c"#.into()),
        ]
    );
    let scrape =
        exported("# TYPE x counter\nx_total{endpoint=\"/a/{target}\",status=\"202\"} 1\nup 1\n");
    assert_eq!(
        scrape["x_total"],
        BTreeSet::from(["endpoint".into(), "status".into()])
    );
    assert!(scrape["up"].is_empty());
}

/// A bridge with every optional part on (the fallback publisher, the silence watcher), so
/// that every family it can export is there; returns its `/metrics` once they all are.
async fn everything_a_bridge_exports() -> String {
    let sim = simulator(SimConfig::default()).await;
    // Nothing listens on port 9 of loopback: the fallback is never due, the watcher's polls
    // fail; both export their series anyway.
    let extra = "fallback:\n  url: \"http://127.0.0.1:9/hook\"\n\
                 alertmanager:\n  url: \"http://127.0.0.1:9\"\n  poll_interval: \"1s\"";
    let setup = Setup::new(&sim.base_url(), (120, "60s"), extra, "");
    let bridge = setup.start().await;
    let bridge = &bridge;
    let wanted = [
        "pagerbridge_lane_owned{target=\"default\"} 1\n",
        "pagerbridge_singleton_owned{singleton=\"silence\"} 1\n",
        "pagerbridge_singleton_owned{singleton=\"fallback\"} 1\n",
        "pagerbridge_silence_watcher_polls_total{result=\"ok\"}",
        "pagerbridge_fallback_sends_total{",
    ];
    wait_for(
        "the lane and singletons running",
        Duration::from_secs(20),
        || async move {
            let metrics = bridge.get_text("/metrics").await.1;
            wanted
                .iter()
                .all(|line| metrics.contains(line))
                .then_some(metrics)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_and_rules_use_only_metrics_a_running_bridge_exports() {
    let exported = exported(&everything_a_bridge_exports().await);
    let dashboard = dashboard_queries(&dashboard())
        .into_iter()
        .map(|(panel, expr)| (format!("dashboard panel {panel:?}"), expr, true));
    let rules = alerts(&read_yaml(&rules_file())).into_iter().map(|alert| {
        let expr = alert["expr"].as_str().expect("expr").to_owned();
        (format!("alert {}", name(&alert)), expr, false)
    });
    for (what, expr, per_target) in dashboard.chain(rules) {
        for (metric, braces) in selectors(&expr) {
            let labels = exported
                .get(&metric)
                .unwrap_or_else(|| panic!("{what} uses {metric}, which a bridge does not export"));
            let matchers = braces.as_deref().map(matchers).unwrap_or_default();
            for (label, _, _) in &matchers {
                assert!(
                    labels.contains(label),
                    "{what}: {metric} has no label {label:?} (it has {labels:?})"
                );
            }
            // The dashboard's target picker applies to every per-target metric.
            if per_target && labels.contains("target") {
                assert!(
                    matchers.contains(&("target".into(), "=~".into(), "$target".into())),
                    "{what}: {metric} is not filtered by target=~\"$target\" in {expr}"
                );
            }
        }
    }
}

/// A Prometheus server of the test's own, on loopback, stopped on drop.
struct Prometheus {
    child: Child,
    url: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Prometheus {
    /// Starts `prometheus` with `config` (YAML) and the rule file `rules` beside it, and
    /// waits until it is ready.
    async fn start(config: &str, rules: &Value) -> Prometheus {
        let binary = needs::prometheus_server();
        let dir = tempfile::tempdir().expect("temp dir");
        // JSON is YAML.
        std::fs::write(dir.path().join("rules.yaml"), rules.to_string()).expect("rules");
        std::fs::write(dir.path().join("prometheus.yml"), config).expect("config");
        // A port the kernel just gave out and took back: free unless something grabs it in
        // between, in which case Prometheus exits and the test says so with its log.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log = dir.path().join("prometheus.log");
        let log_file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(binary)
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log file"))
            .stderr(log_file)
            .spawn()
            .expect("prometheus starts");
        let mut prometheus = Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
            _dir: dir,
            http: reqwest::Client::new(),
        };
        let ready = format!("{}/-/ready", prometheus.url);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = prometheus.child.try_wait() {
                panic!("prometheus exited ({status}):\n{}", prometheus.log());
            }
            let answer = prometheus.http.get(&ready).send().await;
            if answer.is_ok_and(|a| a.status().is_success()) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "prometheus not ready after 30 s:\n{}",
                prometheus.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        prometheus
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn api(&self, path: &str) -> Value {
        let answer: Value = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("prometheus answers")
            .json()
            .await
            .expect("JSON");
        assert_eq!(answer["status"], "success", "{path}: {answer}");
        answer["data"].clone()
    }

    /// The active (pending or firing) alerts named `name`.
    async fn alerts(&self, name: &str) -> Vec<Value> {
        let data = self.api("/api/v1/alerts").await;
        let all = data["alerts"].as_array().cloned().unwrap_or_default();
        all.into_iter()
            .filter(|alert| alert["labels"]["alertname"] == name)
            .collect()
    }

    /// The rule named `name` as last evaluated.
    async fn rule(&self, name: &str) -> Value {
        let data = self.api("/api/v1/rules").await;
        let groups = data["groups"].as_array().cloned().unwrap_or_default();
        groups
            .iter()
            .flat_map(|group| group["rules"].as_array().cloned().unwrap_or_default())
            .find(|rule| rule["name"] == name)
            .unwrap_or_else(|| panic!("no rule {name} loaded"))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The shipped rules with the stall alert scaled from minutes to seconds: an oldest event
/// older than 2 s for 1 s (shipped: 300 s for 2 m). Its query is the shipped one.
fn rules_with_a_quick_stall_alert() -> Value {
    let mut rules = read_yaml(&rules_file());
    let groups = rules["groups"].as_array_mut().expect("groups");
    let stall = groups
        .iter_mut()
        .flat_map(|group| group["rules"].as_array_mut().expect("rules").iter_mut())
        .find(|rule| rule["alert"] == STALL_ALERT)
        .expect("the stall alert");
    let expr = stall["expr"].as_str().expect("expr");
    assert_eq!(expr.matches("> 300").count(), 1, "the threshold in {expr}");
    stall["expr"] = json!(expr.replace("> 300", "> 2"));
    stall["for"] = json!("1s");
    rules
}

/// A real Prometheus scrapes a real bridge every second and evaluates the shipped rules
/// (the stall alert's threshold and `for` scaled down, see [`rules_with_a_quick_stall_alert`]):
/// quiet while delivery works, firing during a PagerDuty outage, resolved once the event is
/// delivered.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs prometheus_server"]
async fn the_stall_alert_fires_in_prometheus_server_during_a_pagerduty_outage() {
    let sim = simulator(SimConfig::default()).await;
    let setup = Setup::new(&sim.base_url(), (120, "60s"), "", "");
    let bridge = setup.start().await;
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         rule_files: [rules.yaml]\n\
         scrape_configs:\n  - job_name: pagerbridge\n    static_configs:\n      - targets: [\"{}\"]\n",
        bridge.addr
    );
    let prometheus = &Prometheus::start(&config, &rules_with_a_quick_stall_alert()).await;
    let wait = Duration::from_secs(60);

    // Scraped, then evaluated with the queue empty: quiet.
    wait_for("a scrape of the bridge", wait, || async move {
        let found = prometheus
            .api("/api/v1/query?query=pagerbridge_oldest_pending_age_seconds")
            .await;
        found["result"]
            .as_array()
            .filter(|r| !r.is_empty())
            .cloned()
    })
    .await;
    let seen = &prometheus.rule(STALL_ALERT).await["lastEvaluation"].clone();
    let rule = wait_for("an evaluation after the scrape", wait, || async move {
        let rule = prometheus.rule(STALL_ALERT).await;
        (rule["lastEvaluation"] != *seen).then_some(rule)
    })
    .await;
    assert_eq!(rule["health"], "ok", "{rule}");
    assert_eq!(rule["state"], "inactive", "{rule}");

    // PagerDuty goes down with an event queued.
    sim.sim.set_faults(Faults {
        outage_seconds: Some(600),
        ..Faults::default()
    });
    let (code, _) = bridge
        .post(
            "/api/v1/alerts",
            &native_alerts("Stalled", 1, "firing", "critical"),
        )
        .await;
    assert_eq!(code, 202);
    let firing = wait_for("the stall alert to fire", wait, || async move {
        let alerts = prometheus.alerts(STALL_ALERT).await;
        alerts
            .iter()
            .any(|alert| alert["state"] == "firing")
            .then_some(alerts)
    })
    .await;
    assert_eq!(firing.len(), 1, "{firing:?}");
    let alert = &firing[0];
    assert_eq!(alert["labels"]["target"], "default", "{alert}");
    assert_eq!(alert["labels"]["job"], "pagerbridge", "{alert}");
    assert_eq!(alert["labels"]["severity"], "critical", "{alert}");
    assert!(
        alert["annotations"]["runbook_url"]
            .as_str()
            .is_some_and(|url| url.ends_with("docs/runbook.md#pagerbridgedeliverystalled")),
        "{alert}"
    );
    assert!(delivered(&sim).is_empty(), "nothing got through the outage");

    // PagerDuty is back: the event is delivered and the alert resolves.
    sim.sim.set_faults(Faults {
        outage_seconds: Some(0),
        ..Faults::default()
    });
    wait_until("the event delivered", wait, || delivered(&sim).len() == 1).await;
    wait_for("the stall alert to resolve", wait, || async move {
        prometheus
            .alerts(STALL_ALERT)
            .await
            .is_empty()
            .then_some(())
    })
    .await;
}

/// The value of the sample `series` (name and labels, as exported) in a scrape.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

/// Cut off from PostgreSQL, a bridge answers alerts with 503 and counts it, in
/// `pagerbridge_ingest_requests_total` and `pagerbridge_storage_errors_total` (ingest, and the
/// lane and lease keeper that keep trying); healed, it takes and delivers alerts again.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs postgres"]
async fn storage_errors_and_ingest_503s_are_counted_when_postgres_is_cut_off() {
    use pagerbridge_testkit::postgres::TestDatabase;

    let database = TestDatabase::create().await;
    let sim = simulator(SimConfig::default()).await;
    let (proxy, url) = postgres_through_a_proxy(&database.url);
    let setup = Setup::new(&sim.base_url(), (120, "60s"), "", "").with_postgres(&url);
    let bridge = &setup.start().await;
    let wait = Duration::from_secs(60);
    let refused = "pagerbridge_ingest_requests_total{endpoint=\"/api/v1/alerts\",status=\"503\"}";
    let (_, metrics) = bridge.get_text("/metrics").await;
    assert_eq!(sample(&metrics, refused), Some(0.0), "{metrics}");
    for operation in ["ingest", "delivery", "leases"] {
        let series = format!("pagerbridge_storage_errors_total{{operation=\"{operation}\"}}");
        assert_eq!(sample(&metrics, &series), Some(0.0), "{series}");
    }

    proxy.cut();
    let (code, answer) = bridge
        .post(
            "/api/v1/alerts",
            &native_alerts("Cut", 1, "firing", "critical"),
        )
        .await;
    assert_eq!(code, 503, "{answer}");
    let metrics = wait_for("the storage errors counted", wait, || async move {
        let metrics = bridge.get_text("/metrics").await.1;
        let counted = ["ingest", "delivery", "leases"].iter().all(|operation| {
            let series = format!("pagerbridge_storage_errors_total{{operation=\"{operation}\"}}");
            sample(&metrics, &series).is_some_and(|n| n >= 1.0)
        });
        counted.then_some(metrics)
    })
    .await;
    assert_eq!(sample(&metrics, refused), Some(1.0), "{metrics}");
    let ingest = "pagerbridge_storage_errors_total{operation=\"ingest\"}";
    assert_eq!(sample(&metrics, ingest), Some(1.0), "{metrics}");

    proxy.restore();
    wait_for("an alert accepted again", wait, || async move {
        let (code, _) = bridge
            .post(
                "/api/v1/alerts",
                &native_alerts("Healed", 1, "firing", "critical"),
            )
            .await;
        (code == 202).then_some(())
    })
    .await;
    wait_until("the alert delivered", wait, || delivered(&sim).len() == 1).await;
}
