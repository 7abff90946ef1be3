//! The bridge end to end: real Alertmanager 0.25 bodies posted to the real binary, delivered
//! to the PagerDuty simulator over loopback, with a real SQLite file.

mod common;

use std::time::Duration;

use common::{
    ROUTING_KEY, Setup, assert_lifecycles, delivered, expected_dedup_key,
    kill_9_during_an_outage_then_restart, native_alerts, sample,
    setup_of_two_targets_sharing_a_key, simulator, tight_simulator,
    two_targets_sharing_a_key_stay_within_its_budget, wait_until,
};
use pagerduty_simulator::{Config as SimConfig, Faults};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

fn host_labels(host: &str, severity: &str) -> Vec<(&'static str, String)> {
    vec![
        ("alertname", "HarnessGrouped".to_owned()),
        ("harness_run", "sample".to_owned()),
        ("instance", format!("{host}.harness.test:9100")),
        ("job", "harness".to_owned()),
        ("severity", severity.to_owned()),
    ]
}

fn key_for(labels: &[(&'static str, String)]) -> String {
    let borrowed: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
    expected_dedup_key(&borrowed)
}

#[tokio::test(flavor = "multi_thread")]
async fn real_alertmanager_samples_drive_one_pagerduty_alert_per_alert() {
    let sim = simulator(SimConfig::default()).await;
    let setup = Setup::new(&sim.base_url(), (120, "60s"), "", "");
    let bridge = setup.start().await;

    let (status, receipt) = bridge
        .post(
            "/api/v1/alertmanager",
            &sample("alertmanager-webhook-firing.json"),
        )
        .await;
    assert_eq!(status, 202, "{receipt}");
    assert_eq!(receipt["queued"], 3);
    wait_until("3 triggers", WAIT, || delivered(&sim).len() == 3).await;

    let (status, receipt) = bridge
        .post(
            "/api/v1/alertmanager",
            &sample("alertmanager-webhook-partially-resolved.json"),
        )
        .await;
    assert_eq!(status, 202, "{receipt}");
    // host-2 resolved; host-1 and host-3 are Alertmanager's unchanged re-sends.
    assert_eq!(receipt["queued"], 1);
    assert_eq!(receipt["suppressed"], 2);
    let (status, _) = bridge
        .post(
            "/api/v1/alertmanager",
            &sample("alertmanager-webhook-resolved.json"),
        )
        .await;
    assert_eq!(status, 202);
    wait_until("3 resolves", WAIT, || delivered(&sim).len() == 6).await;

    let keys: Vec<String> = [
        ("host-1", "critical"),
        ("host-2", "warning"),
        ("host-3", "info"),
    ]
    .iter()
    .map(|(host, severity)| key_for(&host_labels(host, severity)))
    .collect();
    assert_lifecycles(&delivered(&sim), &keys, &["trigger", "resolve"], false);

    let alerts = sim.sim.alerts();
    assert_eq!(alerts.len(), 3, "one PagerDuty alert per alert");
    for alert in &alerts {
        assert_eq!(
            serde_json::to_value(alert.state).expect("state"),
            "resolved"
        );
        assert_eq!(alert.routing_key, ROUTING_KEY);
    }
    let host1 = alerts
        .iter()
        .find(|a| a.dedup_key == keys[0])
        .expect("host-1 alert");
    assert_eq!(host1.severity, "critical");
    assert_eq!(
        host1.summary,
        "[CRITICAL] HarnessGrouped: HarnessGrouped on host-1.harness.test:9100 (critical)"
    );

    let first = sim
        .sim
        .events()
        .into_iter()
        .find(|e| e.body["dedup_key"] == keys[0].as_str())
        .expect("host-1 trigger");
    let body = &first.body;
    assert_eq!(
        first.user_agent.as_deref(),
        Some("AlertHistory/1.0 (+github.com/ipiton/alert-history)")
    );
    assert_eq!(body["payload"]["source"], "host-1.harness.test:9100");
    assert_eq!(body["payload"]["timestamp"], "2026-11-29T18:53:45.282Z");
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
    assert!(links.iter().any(|(text, href)| *text == "Runbook"
        && *href == "https://runbooks.harness.test/harnessgrouped"));
    assert!(links.iter().any(|(text, _)| *text == "Dashboard"));
    assert!(
        links.iter().any(
            |(text, href)| *text == "Source" && href.starts_with("http://127.0.0.1:9090/graph")
        )
    );
    assert!(
        links
            .iter()
            .any(|(_, href)| href.starts_with("http://127.0.0.1:9093/#/silences/new?filter=")),
        "silence link in {links:?}"
    );
    for event in sim.sim.events() {
        pagerbridge_testkit::schema::assert_valid_enqueue(&event.body);
    }

    // The seed's metrics, by value, after three triggers and three resolves all accepted.
    let metrics = scrape_until(
        &bridge,
        "pagerduty_events_resolved_total{target=\"default\"} 3",
    )
    .await;
    for line in [
        "pagerduty_events_triggered_total{target=\"default\",severity=\"critical\"} 1",
        "pagerduty_events_triggered_total{target=\"default\",severity=\"warning\"} 1",
        "pagerduty_events_triggered_total{target=\"default\",severity=\"info\"} 1",
        "pagerduty_events_triggered_total{target=\"default\",severity=\"error\"} 0",
        "pagerduty_events_acknowledged_total{target=\"default\"} 0",
        "pagerduty_change_events_total{target=\"default\"} 0",
        "pagerduty_api_requests_total{target=\"default\",endpoint=\"/v2/enqueue\",status=\"202\"} 6",
        "pagerduty_api_duration_seconds_count{target=\"default\",endpoint=\"/v2/enqueue\"} 6",
        "pagerduty_api_errors_total{target=\"default\",error_type=\"server_error\"} 0",
        "pagerduty_rate_limit_hits_total{target=\"default\"} 0",
    ] {
        assert!(
            metrics.contains(&format!("{line}\n")),
            "{line} not in {metrics}"
        );
    }
}

/// Scrapes `/metrics` until it holds `line` (metrics move just after PagerDuty's answer, so a
/// scrape right after the simulator saw a request may be a moment early).
async fn scrape_until(bridge: &common::Bridge, line: &str) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, metrics) = bridge.get_text("/metrics").await;
        if metrics.contains(&format!("{line}\n")) {
            return metrics;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{line} never appeared in {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The simulator with a tight budget, 10 requests per 2 s (the bridge's `(10, "2s")`), so
/// that a burst over it shows as a budget violation within seconds.

#[tokio::test(flavor = "multi_thread")]
async fn order_and_budget_hold_while_pagerduty_fails_and_throttles() {
    let sim = tight_simulator().await;
    sim.sim.set_faults(Faults {
        fail_rate: Some(0.3),
        force_status: Some(vec![429, 500, 429, 503, 502]),
        ..Faults::default()
    });
    let setup = Setup::new(&sim.base_url(), (10, "2s"), "", "");
    let bridge = setup.start().await;
    let n = 12;
    for status in ["firing", "resolved"] {
        let (code, receipt) = bridge
            .post(
                "/api/v1/alerts",
                &native_alerts("Flaky", n, status, "error"),
            )
            .await;
        assert_eq!(code, 202, "{receipt}");
    }
    wait_until("every lifecycle delivered", Duration::from_secs(60), || {
        delivered(&sim).len() == 2 * n
    })
    .await;
    let keys: Vec<String> = (0..n)
        .map(|i| {
            expected_dedup_key(&[
                ("alertname", &format!("Flaky-{i}")),
                ("instance", &format!("host-{i}")),
                ("severity", "error"),
            ])
        })
        .collect();
    assert_lifecycles(&delivered(&sim), &keys, &["trigger", "resolve"], false);
    let stats = sim.sim.stats();
    assert_eq!(
        stats.budget_violations, 0,
        "the simulator answered 429 for budget: {stats:?}"
    );
    assert!(
        stats.forced_or_failed >= 5,
        "faults were injected: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_targets_sharing_a_routing_key_share_its_budget() {
    let sim = tight_simulator().await;
    let setup = setup_of_two_targets_sharing_a_key(&sim);
    let bridge = setup.start().await;
    two_targets_sharing_a_key_stay_within_its_budget(&sim, &[&bridge]).await;
}

/// The alerts' own summaries (after the formatter's `[SEVERITY] alertname: `) in the trigger
/// events a simulator accepted, sorted.
fn summaries(sim: &common::SpawnedSimulator) -> Vec<String> {
    let mut summaries: Vec<String> = sim
        .sim
        .events()
        .iter()
        .filter(|e| e.status == 202 && e.path == "/v2/enqueue")
        .map(|e| {
            let summary = e.body["payload"]["summary"].as_str().unwrap_or_default();
            summary
                .split_once(": ")
                .map_or(summary, |(_, own)| own)
                .to_owned()
        })
        .collect();
    summaries.sort();
    summaries
}

#[tokio::test(flavor = "multi_thread")]
async fn a_target_with_its_own_url_sends_there_and_the_others_to_pagerduty_url() {
    let us = simulator(SimConfig::default()).await;
    // Plays PagerDuty's EU endpoint.
    let eu = simulator(SimConfig::default()).await;
    let setup = Setup::new(
        &us.base_url(),
        (120, "60s"),
        "",
        "    match: { severity: \"error\" }",
    );
    setup.add_target_sharing_the_key("eu");
    let mut yaml = std::fs::read_to_string(&setup.config).expect("config file");
    yaml.push_str(&format!("    url: \"{}\"\n", eu.base_url()));
    std::fs::write(&setup.config, yaml).expect("config file");
    let bridge = setup.start().await;

    for (prefix, severity) in [("Db", "error"), ("Web", "warning")] {
        let (code, receipt) = bridge
            .post(
                "/api/v1/alerts",
                &native_alerts(prefix, 3, "firing", severity),
            )
            .await;
        assert_eq!(code, 202, "{receipt}");
    }
    wait_until("3 triggers at each endpoint", WAIT, || {
        delivered(&us).len() >= 3 && delivered(&eu).len() >= 3
    })
    .await;
    // Exactly these: an event sent to the wrong endpoint would show up as an extra one.
    assert_eq!(
        summaries(&us),
        ["Db number 0", "Db number 1", "Db number 2"]
    );
    assert_eq!(
        summaries(&eu),
        ["Web number 0", "Web number 1", "Web number 2"]
    );
    common::assert_no_routing_key_in_logs(&bridge.logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_loses_nothing_accepted() {
    let sim = simulator(SimConfig::default()).await;
    let setup = Setup::new(&sim.base_url(), (1000, "60s"), "", "");
    kill_9_during_an_outage_then_restart(&sim, &setup, "Crash", 30, WAIT).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_critical_page_overtakes_a_backlog_of_info_triggers() {
    let sim = simulator(SimConfig::default()).await;
    sim.sim.set_faults(Faults {
        outage_seconds: Some(600),
        ..Faults::default()
    });
    let setup = Setup::new(&sim.base_url(), (1000, "60s"), "", "");
    let bridge = setup.start().await;
    let (code, _) = bridge
        .post(
            "/api/v1/alerts",
            &native_alerts("Chatty", 20, "firing", "info"),
        )
        .await;
    assert_eq!(code, 202);
    let (code, _) = bridge
        .post(
            "/api/v1/alerts",
            &native_alerts("Fire", 1, "firing", "critical"),
        )
        .await;
    assert_eq!(code, 202);
    let critical = expected_dedup_key(&[
        ("alertname", "Fire-0"),
        ("instance", "host-0"),
        ("severity", "critical"),
    ]);
    // Wait until the lane is working on the critical page, then end the outage.
    wait_until("the lane to pick the critical page", WAIT, || {
        sim.sim
            .events()
            .iter()
            .any(|e| e.body["dedup_key"] == critical.as_str())
    })
    .await;
    sim.sim.set_faults(Faults {
        outage_seconds: Some(0),
        ..Faults::default()
    });
    wait_until("all 21 delivered", WAIT, || delivered(&sim).len() == 21).await;
    assert_eq!(
        delivered(&sim)[0].0,
        critical,
        "the critical page went first"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rejected_event_is_dead_lettered_and_the_rest_flows() {
    let sim = simulator(SimConfig::default()).await;
    sim.sim.set_faults(Faults {
        force_status: Some(vec![400]),
        ..Faults::default()
    });
    let setup = Setup::new(&sim.base_url(), (120, "60s"), "", "");
    let bridge = setup.start().await;
    let (code, _) = bridge
        .post(
            "/api/v1/alertmanager",
            &sample("alertmanager-webhook-firing.json"),
        )
        .await;
    assert_eq!(code, 202);
    wait_until("the other two triggers", WAIT, || {
        delivered(&sim).len() == 2
    })
    .await;
    let (_, metrics) = bridge.get_text("/metrics").await;
    assert!(
        metrics.contains("pagerbridge_dead_letters{target=\"default\"} 1"),
        "{metrics}"
    );
    let logs = bridge.logs();
    let dead = logs
        .iter()
        .find(|l| l.contains("event dead-lettered"))
        .expect("an ERROR log for the dead letter");
    assert!(dead.contains("\"level\":\"ERROR\""), "{dead}");
    assert!(dead.contains("HTTP 400"), "{dead}");
    // The critical page (sent first) was the one refused.
    let host1 = key_for(&host_labels("host-1", "critical"));
    assert!(delivered(&sim).iter().all(|(key, _)| *key != host1));
}

#[tokio::test(flavor = "multi_thread")]
async fn unchanged_resends_are_suppressed_but_changes_go_through() {
    let sim = simulator(SimConfig::default()).await;
    let setup = Setup::new(&sim.base_url(), (120, "60s"), "", "");
    let bridge = setup.start().await;
    let firing = sample("alertmanager-webhook-firing.json");
    let (_, first) = bridge.post("/api/v1/alertmanager", &firing).await;
    assert_eq!(first["queued"], 3);
    let (_, again) = bridge.post("/api/v1/alertmanager", &firing).await;
    assert_eq!(again["queued"], 0);
    assert_eq!(again["suppressed"], 3);
    let mut changed: Value = serde_json::from_slice(&firing).expect("json");
    changed["alerts"][0]["annotations"]["summary"] = "Now it is worse".into();
    let (_, third) = bridge
        .post(
            "/api/v1/alertmanager",
            &serde_json::to_vec(&changed).expect("json"),
        )
        .await;
    assert_eq!(third["queued"], 1);
    assert_eq!(third["suppressed"], 2);
    wait_until("4 triggers", WAIT, || delivered(&sim).len() == 4).await;
    let (_, metrics) = bridge.get_text("/metrics").await;
    assert!(
        metrics.contains(
            "pagerbridge_suppressed_events_total{target=\"default\",reason=\"unchanged_retrigger\"} 5"
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_cleanly() {
    let sim = simulator(SimConfig::default()).await;
    let setup = Setup::new(&sim.base_url(), (120, "60s"), "", "");
    let mut bridge = setup.start().await;
    let (code, _) = bridge
        .post(
            "/api/v1/alertmanager",
            &sample("alertmanager-webhook-firing.json"),
        )
        .await;
    assert_eq!(code, 202);
    let status = bridge.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}");
}
