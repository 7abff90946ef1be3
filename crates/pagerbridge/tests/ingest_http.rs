//! The HTTP surface of the real binary: bad input is answered with a JSON 4xx and nothing is
//! stored; tokens; health; metrics that pass `promtool`; no routing key anywhere we can see.

mod common;

use std::time::Duration;

use common::{ROUTING_KEY, Setup, delivered, native_alerts, sample, simulator, wait_until};
use pagerbridge_testkit::needs;
use pagerduty_simulator::Config as SimConfig;
use serde_json::{Value, json};

/// Posts raw bytes with a content type; returns status and JSON answer.
async fn post_raw(
    url: &str,
    content_type: &str,
    body: Vec<u8>,
    token: Option<&str>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", content_type)
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn assert_json_error(status: u16, body: &Value, expected_status: u16, code: &str) {
    assert_eq!(status, expected_status, "{body}");
    assert_eq!(body["error"], code, "{body}");
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "a detail explains the error: {body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_answered_and_nothing_is_stored() {
    let sim = simulator(SimConfig::default()).await;
    let setup = Setup::new(
        &sim.base_url(),
        (120, "60s"),
        "ingest:\n  max_body_bytes: 20000",
        "",
    );
    let bridge = setup.start().await;
    let url = |path: &str| bridge.url(path);
    let json_ct = "application/json";

    let (s, b) = post_raw(
        &url("/api/v1/alertmanager"),
        json_ct,
        b"{\"alerts\": [".to_vec(),
        None,
    )
    .await;
    assert_json_error(s, &b, 400, "malformed_json");

    let (s, b) = post_raw(
        &url("/api/v1/alertmanager"),
        "text/plain",
        sample("alertmanager-webhook-firing.json"),
        None,
    )
    .await;
    assert_json_error(s, &b, 415, "unsupported_media_type");

    let (s, b) = post_raw(
        &url("/api/v1/alertmanager/nope"),
        json_ct,
        sample("alertmanager-webhook-firing.json"),
        None,
    )
    .await;
    assert_json_error(s, &b, 404, "unknown_target");
    assert!(b["detail"].as_str().unwrap_or("").contains("nope"));

    let no_name = json!({"version": "4", "alerts": [
        {"status": "firing", "labels": {"alertname": "Fine"}},
        {"status": "firing", "labels": {"instance": "x"}}
    ]});
    let (s, b) = post_raw(
        &url("/api/v1/alertmanager"),
        json_ct,
        serde_json::to_vec(&no_name).expect("json"),
        None,
    )
    .await;
    assert_json_error(s, &b, 400, "invalid_alert");
    assert!(
        b["detail"].as_str().unwrap_or("").contains("alerts[1]"),
        "{b}"
    );

    let wrong_type =
        json!({"alerts": [{"status": "firing", "labels": {"alertname": "X", "n": 5}}]});
    let (s, b) = post_raw(
        &url("/api/v1/alerts"),
        json_ct,
        serde_json::to_vec(&wrong_type).expect("json"),
        None,
    )
    .await;
    assert_json_error(s, &b, 400, "invalid_alert");

    let bad_status = json!({"alerts": [{"status": "exploded", "labels": {"alertname": "X"}}]});
    let (s, b) = post_raw(
        &url("/api/v1/alerts"),
        json_ct,
        serde_json::to_vec(&bad_status).expect("json"),
        None,
    )
    .await;
    assert_eq!(s, 400, "{b}");

    let (s, b) = post_raw(
        &url("/api/v1/change-events"),
        json_ct,
        br#"{"summary": "  "}"#.to_vec(),
        None,
    )
    .await;
    assert_eq!(s, 400, "{b}");

    let huge = native_alerts("Huge", 400, "firing", "info");
    assert!(huge.len() > 20_000);
    let (s, b) = post_raw(&url("/api/v1/alerts"), json_ct, huge, None).await;
    assert_json_error(s, &b, 413, "body_too_large");

    let (s, b) = post_raw(&url("/api/v1/nothing-here"), json_ct, b"{}".to_vec(), None).await;
    assert_json_error(s, &b, 404, "not_found");
    let (s, _) = bridge.get_text("/api/v1/alerts").await;
    assert_eq!(s, 405);

    // The service is healthy and nothing was queued or sent.
    assert_eq!(bridge.get_text("/healthz").await.0, 200);
    assert_eq!(bridge.get_text("/readyz").await.0, 200);
    let (_, metrics) = bridge.get_text("/metrics").await;
    assert!(
        metrics.contains("pagerbridge_queue_depth{target=\"default\"} 0"),
        "{metrics}"
    );
    assert!(sim.sim.events().is_empty());

    // And good input still works afterwards.
    let (s, b) = post_raw(
        &url("/api/v1/alertmanager"),
        "application/json; charset=utf-8",
        sample("alertmanager-webhook-firing.json"),
        None,
    )
    .await;
    assert_eq!(s, 202, "{b}");
    wait_until("3 triggers", Duration::from_secs(20), || {
        delivered(&sim).len() == 3
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ingest_tokens_are_required_when_configured() {
    let sim = simulator(SimConfig::default()).await;
    let tokens = tempfile::NamedTempFile::new().expect("token file");
    std::fs::write(
        tokens.path(),
        "# ingest tokens\nsecret-token-1\nsecret-token-2\n",
    )
    .expect("write");
    let extra = format!(
        "ingest:\n  bearer_token_file: \"{}\"",
        tokens.path().display()
    );
    let setup = Setup::new(&sim.base_url(), (120, "60s"), &extra, "");
    let bridge = setup.start().await;
    let url = bridge.url("/api/v1/alertmanager");
    let body = sample("alertmanager-webhook-firing.json");

    let (s, b) = post_raw(&url, "application/json", body.clone(), None).await;
    assert_json_error(s, &b, 401, "unauthorized");
    let (s, b) = post_raw(&url, "application/json", body.clone(), Some("wrong")).await;
    assert_json_error(s, &b, 401, "unauthorized");
    let (s, _) = post_raw(&url, "application/json", body, Some("secret-token-2")).await;
    assert_eq!(s, 202);
    // Health and metrics stay open for probes and scrapers.
    assert_eq!(bridge.get_text("/healthz").await.0, 200);
    assert_eq!(bridge.get_text("/metrics").await.0, 200);
}

/// Every answer of an ingest endpoint is counted by route (never the target named in the URL)
/// and status, the 401 of the token check and the 408 of the time limit included.
#[tokio::test(flavor = "multi_thread")]
async fn ingest_answers_are_counted_by_route_and_status() {
    let sim = simulator(SimConfig::default()).await;
    let tokens = tempfile::NamedTempFile::new().expect("token file");
    std::fs::write(tokens.path(), "the-token\n").expect("write");
    let extra = format!(
        "ingest:\n  bearer_token_file: \"{}\"\n  request_timeout: \"300ms\"",
        tokens.path().display()
    );
    let setup = Setup::new(&sim.base_url(), (120, "60s"), &extra, "");
    let bridge = setup.start().await;
    let json_ct = "application/json";
    let token = Some("the-token");
    let alerts = native_alerts("Counted", 1, "firing", "critical");

    let (s, _) = post_raw(
        &bridge.url("/api/v1/alerts"),
        json_ct,
        alerts.clone(),
        token,
    )
    .await;
    assert_eq!(s, 202);
    let (s, _) = post_raw(&bridge.url("/api/v1/alerts"), json_ct, alerts, None).await;
    assert_eq!(s, 401);
    let firing = sample("alertmanager-webhook-firing.json");
    let (s, _) = post_raw(
        &bridge.url("/api/v1/alertmanager/nope"),
        json_ct,
        firing,
        token,
    )
    .await;
    assert_eq!(s, 404);
    let (s, _) = post_raw(
        &bridge.url("/api/v1/change-events"),
        json_ct,
        b"{".to_vec(),
        token,
    )
    .await;
    assert_eq!(s, 400);
    // Headers and part of a body, then nothing: the time limit answers 408.
    let stalled = b"POST /api/v1/alertmanager HTTP/1.1\r\nhost: x\r\n\
        authorization: Bearer the-token\r\ncontent-type: application/json\r\n\
        content-length: 100\r\n\r\n{\"alerts\": [";
    assert_eq!(status_of_stalled_request(bridge.addr, stalled).await, 408);

    let (_, metrics) = bridge.get_text("/metrics").await;
    for (route, status, count) in [
        ("/api/v1/alerts", "202", 1),
        ("/api/v1/alerts", "401", 1),
        ("/api/v1/alerts", "503", 0),
        ("/api/v1/alertmanager/{target}", "404", 1),
        ("/api/v1/change-events", "400", 1),
        ("/api/v1/alertmanager", "408", 1),
        ("/api/v1/alertmanager", "202", 0),
    ] {
        let line = format!(
            "pagerbridge_ingest_requests_total{{endpoint=\"{route}\",status=\"{status}\"}} {count}\n"
        );
        assert!(metrics.contains(&line), "{line:?} missing from:\n{metrics}");
    }
    assert!(
        !metrics.contains("nope"),
        "a target named in a URL became a label"
    );
}

/// Sends `request` (which leaves its body unfinished) and returns the status it is answered
/// with.
async fn status_of_stalled_request(addr: std::net::SocketAddr, request: &'static [u8]) -> u16 {
    use std::io::{Read, Write};
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        stream.write_all(request).expect("write");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("read timeout");
        let mut answer = Vec::new();
        let mut buf = [0u8; 1024];
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).expect("an answer within 20 s");
            assert!(n > 0, "closed without an answer");
            answer.extend_from_slice(&buf[..n]);
        }
        let head = String::from_utf8_lossy(&answer).into_owned();
        head.split_whitespace()
            .nth(1)
            .and_then(|status| status.parse().ok())
            .unwrap_or_else(|| panic!("no status in {head:?}"))
    })
    .await
    .expect("stalled request")
}

#[tokio::test(flavor = "multi_thread")]
async fn change_events_reach_change_enqueue() {
    let sim = simulator(SimConfig::default()).await;
    let setup = Setup::new(&sim.base_url(), (120, "60s"), "", "");
    let bridge = setup.start().await;
    let change = json!({
        "summary": "Deploy #220 of checkout",
        "source": "ci",
        "timestamp": "2026-11-29T10:00:00Z",
        "custom_details": {"build": "220"},
        "links": [{"href": "https://ci.example.com/220", "text": "Build"}]
    });
    let (s, b) = bridge
        .post(
            "/api/v1/change-events",
            &serde_json::to_vec(&change).expect("json"),
        )
        .await;
    assert_eq!(s, 202, "{b}");
    wait_until("the change event", Duration::from_secs(20), || {
        sim.sim.events().iter().any(|e| e.status == 202)
    })
    .await;
    let event = &sim.sim.events()[0];
    assert_eq!(event.path, "/v2/change/enqueue");
    assert_eq!(event.body["payload"]["summary"], "Deploy #220 of checkout");
    pagerbridge_testkit::schema::assert_valid_change(&event.body);
    assert!(sim.sim.alerts().is_empty());
}

/// `/metrics` of a bridge that has delivered the real sample's three triggers.
async fn metrics_after_the_sample_is_delivered() -> String {
    let sim = simulator(SimConfig::default()).await;
    let setup = Setup::new(&sim.base_url(), (120, "60s"), "", "");
    let bridge = setup.start().await;
    let (code, _) = bridge
        .post(
            "/api/v1/alertmanager",
            &sample("alertmanager-webhook-firing.json"),
        )
        .await;
    assert_eq!(code, 202);
    wait_until("3 triggers", Duration::from_secs(20), || {
        delivered(&sim).len() == 3
    })
    .await;
    let (_, metrics) = bridge.get_text("/metrics").await;
    metrics
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_have_the_seed_names_and_hold_no_key() {
    let metrics = metrics_after_the_sample_is_delivered().await;
    for name in [
        "pagerduty_events_triggered_total",
        "pagerduty_events_acknowledged_total",
        "pagerduty_events_resolved_total",
        "pagerduty_change_events_total",
        "pagerduty_api_requests_total",
        "pagerduty_api_errors_total",
        "pagerduty_api_duration_seconds",
        "pagerduty_rate_limit_hits_total",
        "pagerbridge_queue_depth",
        "pagerbridge_oldest_pending_age_seconds",
        "pagerbridge_delivery_lag_seconds",
        "pagerbridge_dead_letters",
        "pagerbridge_open_incidents",
        "pagerbridge_suppressed_events_total",
        "pagerbridge_lane_state",
        "pagerbridge_lane_owned",
        "pagerbridge_singleton_owned",
    ] {
        assert!(
            metrics.contains(&format!("# TYPE {name} ")),
            "{name} missing from /metrics"
        );
    }
    // The sample's three alerts are critical, warning and info; error stays at zero.
    for (severity, count) in [("critical", 1), ("warning", 1), ("info", 1), ("error", 0)] {
        let line = format!(
            "pagerduty_events_triggered_total{{target=\"default\",severity=\"{severity}\"}} {count}\n"
        );
        assert!(metrics.contains(&line), "{line:?} missing");
    }
    assert!(metrics.contains("pagerbridge_open_incidents 3"));
    // It delivered, so it drives the lane: the one replica holds the lane's lease.
    assert!(metrics.contains("pagerbridge_lane_owned{target=\"default\"} 1\n"));
    // Housekeeping too: it runs at once on the replica that takes its lease.
    assert!(metrics.contains("pagerbridge_singleton_owned{singleton=\"housekeeping\"} 1\n"));
    assert!(!metrics.contains(ROUTING_KEY));
}

/// `/metrics`, with every family in it, as Prometheus' own `promtool check metrics` reads it.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs promtool"]
async fn metrics_pass_promtool() {
    let promtool = needs::promtool();
    let metrics = metrics_after_the_sample_is_delivered().await;
    promtool_check(&promtool, &metrics);
}

/// `promtool check metrics` on the text.
fn promtool_check(promtool: &std::path::Path, metrics: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(metrics.as_bytes())
        .expect("write");
    let output = child.wait_with_output().expect("promtool runs");
    assert!(
        output.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_routing_key_never_leaves_the_process() {
    let sim = simulator(SimConfig::default()).await;
    let setup = Setup::new(&sim.base_url(), (120, "60s"), "", "");
    let bridge = setup.start().await;
    for name in [
        "alertmanager-webhook-firing.json",
        "alertmanager-webhook-resolved.json",
    ] {
        bridge.post("/api/v1/alertmanager", &sample(name)).await;
    }
    wait_until("delivery", Duration::from_secs(20), || {
        delivered(&sim).len() == 5
    })
    .await;
    let (_, metrics) = bridge.get_text("/metrics").await;
    let logs = bridge.logs().join("\n");
    assert!(
        logs.contains("delivered to PagerDuty"),
        "debug logs were captured"
    );
    bridge.kill9();
    assert!(!logs.contains(ROUTING_KEY), "routing key in the logs");
    assert!(!metrics.contains(ROUTING_KEY), "routing key in /metrics");
    let mut files_read = 0;
    for file in ["bridge.db", "bridge.db-wal"] {
        let path = setup.db_path().with_file_name(file);
        if let Ok(bytes) = std::fs::read(&path) {
            files_read += 1;
            assert!(
                !common::holds_routing_key(&bytes),
                "routing key in {}",
                path.display()
            );
        }
    }
    assert!(files_read >= 1, "the database was read");
    // ...while PagerDuty did get it.
    assert!(
        sim.sim
            .events()
            .iter()
            .all(|e| e.body["routing_key"] == ROUTING_KEY)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_file_others_can_read_is_warned_about() {
    let sim = simulator(SimConfig::default()).await;
    let setup = Setup::new(&sim.base_url(), (120, "60s"), "", "");
    common::set_mode(&setup.dir.path().join("routing-key"), 0o644);
    let bridge = setup.start().await;
    let logs = bridge.logs();
    let warning = logs
        .iter()
        .find(|l| l.contains("readable by group or others"))
        .expect("a warning about the key file's permissions");
    assert!(warning.contains("\"level\":\"WARN\""), "{warning}");
    assert!(warning.contains("644"), "{warning}");
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_refuses_a_broken_configuration_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("c.yaml");
    std::fs::write(
        &config,
        "targets:\n  - name: pager\n    routing_key_file: /nonexistent/pd-key\n",
    )
    .expect("write");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_pagerbridge"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("pager"), "{stderr}");
    assert!(stderr.contains("/nonexistent/pd-key"), "{stderr}");
}

#[test]
fn render_prints_the_exact_bodies_with_the_key_masked() {
    let dir = tempfile::tempdir().expect("dir");
    let key = dir.path().join("key");
    std::fs::write(&key, ROUTING_KEY).expect("key");
    let config = dir.path().join("c.yaml");
    std::fs::write(
        &config,
        format!(
            "targets:\n  - name: default\n    routing_key_file: \"{}\"\n",
            key.display()
        ),
    )
    .expect("write");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_pagerbridge"))
        .args(["render", "--config"])
        .arg(&config)
        .arg(pagerbridge_testkit::samples::path(
            "alertmanager-webhook-partially-resolved.json",
        ))
        .output()
        .expect("runs");
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!stdout.contains(ROUTING_KEY));
    let rendered: Value = serde_json::from_str(&stdout).expect("JSON");
    insta::assert_json_snapshot!("render_partially_resolved", rendered);
    for item in rendered.as_array().expect("array") {
        assert_eq!(item["body"]["routing_key"], "…0042");
        let mut body = item["body"].clone();
        body["routing_key"] = ROUTING_KEY.into();
        pagerbridge_testkit::schema::assert_valid_enqueue(&body);
    }
}
