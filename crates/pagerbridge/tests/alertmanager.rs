//! The bridge behind a real Alertmanager (Debian's 0.25, `prometheus-alertmanager`): alerts are
//! posted to Alertmanager's API v2, grouped by it, sent by its webhook receiver to the real
//! `pagerbridge serve`, and delivered to the PagerDuty simulator. Only loopback is contacted.
//!
//! Every test here is `#[ignore = "needs alertmanager"]` (`pagerbridge_testkit::needs`):
//! `scripts/test` runs them when the binary is on `PATH`, CI always does, and without it they
//! fail instead of passing untested.

mod alertmanager_harness;
mod common;

use alertmanager_harness::{
    Alertmanager, TestAlert, WAIT, actions, firing, free_addr, metric, resolved, wait_for_metric,
    wait_for_polls,
};
use common::{ROUTING_KEY, Setup, assert_lifecycles, delivered, simulator, wait_until};
use jiff::Timestamp;
use pagerbridge_testkit::needs;
use pagerduty_simulator::{AlertState, Config as SimConfig, Faults};
use serde_json::Value;

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
    let bridge_addr = free_addr();
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
    wait_for_polls(&bridge, 3).await;
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
