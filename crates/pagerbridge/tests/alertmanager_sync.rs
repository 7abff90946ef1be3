//! The Alertmanager sync (DESIGN.md "Alertmanager sync") against real Alertmanagers (Debian's
//! 0.25): the bridge polls them, applies each target's `on_silence` / `on_inhibit` policy to
//! silenced and inhibited alerts, and resolves, once, incidents whose alert no Alertmanager
//! holds any more (a resolve Alertmanager lost) — only past `grace`, and only while every
//! Alertmanager answers and has been up longer than `grace`.
//!
//! Every test here needs the Alertmanager binary (`#[ignore = "needs alertmanager"]`, see
//! `pagerbridge_testkit::needs`). "Nothing happens" is asserted after the moment it would
//! have happened (past `grace`) and several more polls of the watcher, never after a sleep.

mod alertmanager_harness;
mod common;

use std::time::Duration;

use alertmanager_harness::{
    Alertmanager, Options, TestAlert, WAIT, actions, firing, free_addr, metric, wait_for_metric,
    wait_for_polls, wait_past,
};
use common::{
    Bridge, Setup, SpawnedSimulator, assert_lifecycles, delivered, native_alerts, simulator,
    wait_until,
};
use jiff::Timestamp;
use pagerbridge_testkit::needs;
use pagerduty_simulator::{AlertState, Config as SimConfig};

/// The reconciler's `grace` in the tests that exercise it: short, but well above a poll (a
/// test does a few things within it).
const GRACE: Duration = Duration::from_secs(6);

/// How a [`Rig`] is set up; [`Plan::default`] is one Alertmanager, the default target only,
/// and a `grace` long enough never to matter.
struct Plan {
    alertmanagers: usize,
    /// The bridge's webhook path the Alertmanagers send to.
    webhook_path: &'static str,
    /// The Alertmanagers' `repeat_interval`.
    repeat_interval: &'static str,
    /// Top-level YAML for the Alertmanagers' configuration (`inhibit_rules`).
    alertmanager_yaml: &'static str,
    grace: Duration,
    /// YAML for the default target's mapping (`on_silence`, `match`, …).
    target_yaml: &'static str,
    /// A second target, "second", after the default one (no matchers, same routing key).
    second_target: bool,
}

impl Default for Plan {
    fn default() -> Self {
        Self {
            alertmanagers: 1,
            webhook_path: "/api/v1/alertmanager",
            repeat_interval: "1h",
            alertmanager_yaml: "",
            grace: Duration::from_secs(300),
            target_yaml: "",
            second_target: false,
        }
    }
}

/// The PagerDuty simulator, Alertmanagers whose webhooks go to the bridge, and the bridge
/// syncing with them (`alertmanager.urls`, polled every 500 ms).
struct Rig {
    // Dropped in this order: the bridge first (its drop checks its logs), its files last.
    bridge: Bridge,
    ams: Vec<Alertmanager>,
    _setup: Setup,
    sim: SpawnedSimulator,
}

/// DiskFull on db-1 (critical) and CpuHot on db-2 (warning), firing since now.
fn disk_and_cpu() -> (TestAlert, TestAlert) {
    let now = Timestamp::now();
    (
        TestAlert::new("DiskFull", "db-1", "critical", now),
        TestAlert::new("CpuHot", "db-2", "warning", now),
    )
}

impl Rig {
    async fn start(plan: Plan) -> Rig {
        let binary = needs::alertmanager();
        let sim = simulator(SimConfig::default()).await;
        // Each needs the other's address: pick the bridge's first.
        let addr = free_addr();
        let mut ams = Vec::new();
        for _ in 0..plan.alertmanagers {
            let options = Options {
                repeat_interval: plan.repeat_interval,
                extra: plan.alertmanager_yaml.to_owned(),
                ..Options::new(&format!("http://{addr}{}", plan.webhook_path))
            };
            ams.push(Alertmanager::start_with(&binary, options).await);
        }
        let urls: Vec<String> = ams.iter().map(|am| format!("\"{}\"", am.url)).collect();
        let sync = format!(
            "alertmanager:\n  urls: [{}]\n  poll_interval: \"500ms\"\n  reconcile:\n    \
             enabled: true\n    grace: \"{}ms\"\n",
            urls.join(", "),
            plan.grace.as_millis()
        );
        let setup = Setup::new(&sim.base_url(), (120, "60s"), &sync, plan.target_yaml);
        if plan.second_target {
            setup.add_target_sharing_the_key("second");
        }
        setup.listen_on(addr);
        let bridge = setup.start().await;
        Rig {
            bridge,
            ams,
            _setup: setup,
            sim,
        }
    }

    /// Waits until PagerDuty has accepted `n` events of `action` (or more: the callers check
    /// the exact lifecycles afterwards).
    async fn wait_for(&self, action: &str, n: usize) {
        wait_until(&format!("{n} {action}s"), WAIT, || {
            actions(&self.sim, action).len() >= n
        })
        .await;
    }

    /// The state of the newest PagerDuty alert of `key` (a trigger after a resolve opens a new
    /// one).
    fn state(&self, key: &str) -> Option<AlertState> {
        self.sim
            .sim
            .alerts()
            .into_iter()
            .filter(|a| a.dedup_key == key)
            .max_by_key(|a| a.id)
            .map(|a| a.state)
    }

    async fn metric(&self, sample: &str) -> Option<f64> {
        let (_, text) = self.bridge.get_text("/metrics").await;
        metric(&text, sample)
    }

    /// Checks that each of `keys` was triggered, then resolved exactly once by the reconciler
    /// (and nothing else was resolved): the resolve says `custom_details.reason =
    /// "reconciled"`, reached PagerDuty no earlier than `not_before`, is counted in
    /// `pagerbridge_reconciled_total` and logged at INFO.
    async fn assert_reconciled(&self, keys: &[String], not_before: Timestamp) {
        let resolves: Vec<_> = self
            .sim
            .sim
            .events()
            .into_iter()
            .filter(|e| e.status == 202 && e.body["event_action"] == "resolve")
            .collect();
        for key in keys {
            let mine: Vec<_> = resolves
                .iter()
                .filter(|e| e.body["dedup_key"] == key.as_str())
                .collect();
            assert_eq!(mine.len(), 1, "one resolve of {key}: {resolves:?}");
            let body = &mine[0].body;
            assert_eq!(
                body["payload"]["custom_details"]["reason"], "reconciled",
                "{body}"
            );
            let at: Timestamp = mine[0].received_at.parse().expect("a timestamp");
            assert!(
                at >= not_before,
                "{key} resolved at {at}, before {not_before}"
            );
            let logged = self.bridge.logs().iter().any(|line| {
                line.contains("\"level\":\"INFO\"")
                    && line.contains("reconciled")
                    && line.contains(key.as_str())
            });
            assert!(logged, "no INFO log line names {key}");
        }
        assert_eq!(resolves.len(), keys.len(), "{resolves:?}");
        // Exactly: the peers of an HA pair each send the alert, with a silence link to
        // themselves, and the second is no change.
        assert_lifecycles(&delivered(&self.sim), keys, &["trigger", "resolve"], false);
        let reconciled = "pagerbridge_reconciled_total{target=\"default\",action=\"resolve\"}";
        assert_eq!(self.metric(reconciled).await, Some(keys.len() as f64));
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs alertmanager"]
async fn with_on_silence_resolve_a_silenced_alert_is_resolved_once_per_silence() {
    let rig = Rig::start(Plan {
        // Alertmanager re-sends a firing group it already sent only after this.
        repeat_interval: "2s",
        target_yaml: "    on_silence: resolve",
        ..Plan::default()
    })
    .await;
    let am = &rig.ams[0];
    let (disk, cpu) = disk_and_cpu();
    let _prometheus = am.keep_posting(firing(&[&disk, &cpu]), Duration::from_secs(1));
    rig.wait_for("trigger", 2).await;

    let silence = am.silence_alertname("DiskFull").await;
    rig.wait_for("resolve", 1).await;
    // More polls find DiskFull still silenced: still one resolve.
    wait_for_polls(&rig.bridge, 3).await;
    assert_eq!(actions(&rig.sim, "resolve"), vec![disk.dedup_key()]);
    assert_eq!(rig.state(&disk.dedup_key()), Some(AlertState::Resolved));
    assert_eq!(rig.state(&cpu.dedup_key()), Some(AlertState::Triggered));

    am.expire_silence(&silence).await;
    // DiskFull triggered again.
    rig.wait_for("trigger", 3).await;
    wait_for_polls(&rig.bridge, 3).await;
    let got = delivered(&rig.sim);
    assert_lifecycles(
        &got,
        &[disk.dedup_key()],
        &["trigger", "resolve", "trigger"],
        false,
    );
    assert_lifecycles(&got, &[cpu.dedup_key()], &["trigger"], false);
    assert_eq!(rig.state(&disk.dedup_key()), Some(AlertState::Triggered));

    // Silenced again: a change, so resolved again, once.
    am.silence_alertname("DiskFull").await;
    rig.wait_for("resolve", 2).await;
    wait_for_polls(&rig.bridge, 3).await;
    assert_lifecycles(
        &delivered(&rig.sim),
        &[disk.dedup_key()],
        &["trigger", "resolve", "trigger", "resolve"],
        false,
    );
    assert_eq!(rig.state(&disk.dedup_key()), Some(AlertState::Resolved));
    assert_eq!(rig.state(&cpu.dedup_key()), Some(AlertState::Triggered));
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs alertmanager"]
async fn with_on_silence_none_nothing_is_sent_for_a_silenced_alert() {
    let rig = Rig::start(Plan {
        target_yaml: "    on_silence: none",
        ..Plan::default()
    })
    .await;
    let am = &rig.ams[0];
    let disk = TestAlert::new("DiskFull", "db-1", "critical", Timestamp::now());
    am.post_alerts(&firing(&[&disk])).await;
    rig.wait_for("trigger", 1).await;

    am.silence_alertname("DiskFull").await;
    am.wait_until_muted("DiskFull", "silencedBy").await;
    wait_for_polls(&rig.bridge, 4).await;
    assert_eq!(
        delivered(&rig.sim),
        vec![(disk.dedup_key(), "trigger".to_owned())]
    );
    let errors = "pagerbridge_silence_watcher_polls_total{result=\"error\"}";
    assert_eq!(
        rig.metric(errors).await,
        Some(0.0),
        "the polls were answered"
    );
}

/// A warning that pages, then is inhibited by a critical alert on the same instance, with the
/// target's `on_inhibit` set by `target_yaml` (empty: the default). Returns once Alertmanager
/// holds the warning inhibited, the critical alert has paged, `act` (if any) has been sent, and
/// the bridge has polled three times more: the rig, the warning, the critical alert.
async fn an_inhibited_warning(
    target_yaml: &'static str,
    act: Option<&str>,
) -> (Rig, TestAlert, TestAlert) {
    let rig = Rig::start(Plan {
        alertmanager_yaml: r#"inhibit_rules:
  - source_matchers: ['severity="critical"']
    target_matchers: ['severity="warning"']
    equal: ["instance"]
"#,
        target_yaml,
        ..Plan::default()
    })
    .await;
    let am = &rig.ams[0];
    let now = Timestamp::now();
    let disk = TestAlert::new("DiskFull", "db-1", "warning", now);
    let down = TestAlert::new("NodeDown", "db-1", "critical", now);
    // The warning first, so that it pages before anything inhibits it.
    am.post_alerts(&firing(&[&disk])).await;
    rig.wait_for("trigger", 1).await;

    am.post_alerts(&firing(&[&disk, &down])).await;
    rig.wait_for("trigger", 2).await;
    if let Some(act) = act {
        rig.wait_for(act, 1).await;
    }
    am.wait_until_muted("DiskFull", "inhibitedBy").await;
    wait_for_polls(&rig.bridge, 3).await;
    (rig, disk, down)
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs alertmanager"]
async fn with_on_inhibit_acknowledge_an_inhibited_alert_is_acknowledged_once() {
    let (rig, disk, down) =
        an_inhibited_warning("    on_inhibit: acknowledge", Some("acknowledge")).await;
    assert_eq!(actions(&rig.sim, "acknowledge"), vec![disk.dedup_key()]);
    let got = delivered(&rig.sim);
    assert_lifecycles(
        &got,
        &[disk.dedup_key()],
        &["trigger", "acknowledge"],
        false,
    );
    assert_lifecycles(&got, &[down.dedup_key()], &["trigger"], false);
    assert_eq!(rig.state(&disk.dedup_key()), Some(AlertState::Acknowledged));
    assert_eq!(rig.state(&down.dedup_key()), Some(AlertState::Triggered));
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs alertmanager"]
async fn with_on_inhibit_resolve_an_inhibited_alert_is_resolved_once_saying_why() {
    let (rig, disk, down) = an_inhibited_warning("    on_inhibit: resolve", Some("resolve")).await;
    let got = delivered(&rig.sim);
    assert_lifecycles(&got, &[disk.dedup_key()], &["trigger", "resolve"], false);
    assert_lifecycles(&got, &[down.dedup_key()], &["trigger"], false);
    assert_eq!(rig.state(&disk.dedup_key()), Some(AlertState::Resolved));
    assert_eq!(rig.state(&down.dedup_key()), Some(AlertState::Triggered));
    let resolve = rig
        .sim
        .sim
        .events()
        .into_iter()
        .find(|e| e.status == 202 && e.body["event_action"] == "resolve")
        .expect("the resolve");
    assert_eq!(
        resolve.body["payload"]["custom_details"]["reason"], "inhibited",
        "{}",
        resolve.body
    );
    let muted = "pagerbridge_alertmanager_muted_actions_total{target=\"default\",cause=\"inhibited\",action=\"resolve\"}";
    assert_eq!(rig.metric(muted).await, Some(1.0));
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs alertmanager"]
async fn by_default_an_inhibited_alert_is_left_alone() {
    let (rig, disk, down) = an_inhibited_warning("", None).await;
    let got = delivered(&rig.sim);
    assert_lifecycles(
        &got,
        &[disk.dedup_key(), down.dedup_key()],
        &["trigger"],
        false,
    );
    assert_eq!(rig.state(&disk.dedup_key()), Some(AlertState::Triggered));
    let errors = "pagerbridge_silence_watcher_polls_total{result=\"error\"}";
    assert_eq!(
        rig.metric(errors).await,
        Some(0.0),
        "the polls were answered"
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs alertmanager"]
async fn a_silenced_alert_is_acknowledged_on_the_target_its_webhook_named() {
    // The labels route DiskFull to "default"; the webhook names "second".
    let rig = Rig::start(Plan {
        webhook_path: "/api/v1/alertmanager/second",
        target_yaml: "    match: { alertname: \"DiskFull\" }",
        second_target: true,
        ..Plan::default()
    })
    .await;
    let am = &rig.ams[0];
    let disk = TestAlert::new("DiskFull", "db-1", "critical", Timestamp::now());
    am.post_alerts(&firing(&[&disk])).await;
    let triggered = "pagerduty_events_triggered_total{target=\"second\",severity=\"critical\"}";
    wait_for_metric(&rig.bridge, triggered, 1.0).await;

    am.silence_alertname("DiskFull").await;
    wait_for_metric(
        &rig.bridge,
        "pagerduty_events_acknowledged_total{target=\"second\"}",
        1.0,
    )
    .await;
    wait_for_polls(&rig.bridge, 3).await;
    assert_eq!(actions(&rig.sim, "acknowledge"), vec![disk.dedup_key()]);
    let default_acks = rig
        .metric("pagerduty_events_acknowledged_total{target=\"default\"}")
        .await;
    assert_eq!(
        default_acks.unwrap_or(0.0),
        0.0,
        "nothing on the default target"
    );
    assert_eq!(rig.state(&disk.dedup_key()), Some(AlertState::Acknowledged));
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs alertmanager"]
async fn incidents_alertmanager_lost_are_resolved_once_after_grace() {
    let mut rig = Rig::start(Plan {
        grace: GRACE,
        ..Plan::default()
    })
    .await;
    let (disk, cpu) = disk_and_cpu();
    rig.ams[0].post_alerts(&firing(&[&disk, &cpu])).await;
    // A native API incident, which no Alertmanager ever holds: never reconciled.
    let (code, _) = rig
        .bridge
        .post(
            "/api/v1/alerts",
            &native_alerts("Native", 1, "firing", "critical"),
        )
        .await;
    assert_eq!(code, 202);
    rig.wait_for("trigger", 3).await;
    // Their last events are older than grace: from then on, only the Alertmanager's own
    // uptime holds a reconcile back.
    wait_past(&rig.bridge, Timestamp::now(), GRACE, 2).await;
    assert!(
        actions(&rig.sim, "resolve").is_empty(),
        "it still holds them"
    );

    // Its volume lost: it comes back with no alerts, and will not tell the bridge anything.
    rig.ams[0].restart(true).await;
    assert!(rig.ams[0].alerts().await.is_empty());
    let restarted = rig.ams[0].started;
    rig.wait_for("resolve", 2).await;
    wait_past(&rig.bridge, restarted, GRACE, 3).await;

    let keys = [disk.dedup_key(), cpu.dedup_key()];
    rig.assert_reconciled(&keys, restarted + GRACE).await;
    let native = rig
        .sim
        .sim
        .alerts()
        .into_iter()
        .find(|a| !keys.contains(&a.dedup_key))
        .expect("the native incident");
    assert_eq!(native.state, AlertState::Triggered);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs alertmanager"]
async fn an_incident_no_alertmanager_holds_is_resolved_only_after_grace_since_its_last_event() {
    let rig = Rig::start(Plan {
        grace: GRACE,
        ..Plan::default()
    })
    .await;
    // The Alertmanager has been up past grace: only the incidents' age holds a reconcile back.
    wait_past(&rig.bridge, rig.ams[0].started, GRACE, 1).await;
    // A webhook of alerts this Alertmanager does not hold (as if it had lost them since).
    let sent = Timestamp::now();
    let (code, receipt) = rig
        .bridge
        .post(
            "/api/v1/alertmanager",
            &common::sample("alertmanager-webhook-firing.json"),
        )
        .await;
    assert_eq!(code, 202, "{receipt}");
    rig.wait_for("trigger", 3).await;
    rig.wait_for("resolve", 3).await;
    wait_for_polls(&rig.bridge, 3).await;
    rig.assert_reconciled(&actions(&rig.sim, "trigger"), sent + GRACE)
        .await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs alertmanager"]
async fn a_restarted_alertmanager_sent_its_alerts_again_within_grace_resolves_nothing() {
    let mut rig = Rig::start(Plan {
        grace: GRACE,
        ..Plan::default()
    })
    .await;
    let (disk, cpu) = disk_and_cpu();
    let alerts = firing(&[&disk, &cpu]);
    rig.ams[0].post_alerts(&alerts).await;
    rig.wait_for("trigger", 2).await;
    // Their last events are older than grace: from then on, only the Alertmanager's own
    // uptime holds a reconcile back.
    wait_past(&rig.bridge, Timestamp::now(), GRACE, 2).await;

    rig.ams[0].restart(false).await;
    let restarted = rig.ams[0].started;
    // Empty for a few polls, until Prometheus re-sends (its evaluation interval), within grace.
    wait_for_polls(&rig.bridge, 2).await;
    rig.ams[0].post_alerts(&alerts).await;
    let resent = Timestamp::now();
    assert!(
        resent < restarted + GRACE,
        "the machine is too slow for this test: re-sent {resent}, grace ends {}",
        restarted + GRACE
    );
    // Past the time a reconcile would be due, and a few polls more.
    wait_past(&rig.bridge, restarted, GRACE, 4).await;
    assert!(
        actions(&rig.sim, "resolve").is_empty(),
        "{:?}",
        delivered(&rig.sim)
    );
    assert_eq!(rig.state(&disk.dedup_key()), Some(AlertState::Triggered));
    assert_eq!(rig.state(&cpu.dedup_key()), Some(AlertState::Triggered));
    let reconciled = "pagerbridge_reconciled_total{target=\"default\",action=\"resolve\"}";
    assert_eq!(rig.metric(reconciled).await.unwrap_or(0.0), 0.0);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs alertmanager"]
async fn of_an_ha_pair_nothing_is_reconciled_while_one_is_down_and_all_once_both_are_empty() {
    let mut rig = Rig::start(Plan {
        alertmanagers: 2,
        grace: GRACE,
        ..Plan::default()
    })
    .await;
    let (disk, cpu) = disk_and_cpu();
    // Prometheus sends to every Alertmanager of an HA set.
    for am in &rig.ams {
        am.post_alerts(&firing(&[&disk, &cpu])).await;
    }
    rig.wait_for("trigger", 2).await;

    // One down; the other back empty: the one down may still hold the alerts.
    rig.ams[1].stop().await;
    rig.ams[0].restart(true).await;
    wait_past(
        &rig.bridge,
        rig.ams[0].started,
        GRACE + Duration::from_secs(1),
        4,
    )
    .await;
    assert!(
        actions(&rig.sim, "resolve").is_empty(),
        "{:?}",
        delivered(&rig.sim)
    );
    let errors = "pagerbridge_silence_watcher_polls_total{result=\"error\"}";
    assert!(
        rig.metric(errors).await.is_some_and(|n| n >= 1.0),
        "a poll that cannot reach every Alertmanager failed"
    );

    // It comes back empty too: once it has been up past grace, each incident is resolved.
    rig.ams[1].start_again(true).await;
    let back = rig.ams[1].started;
    rig.wait_for("resolve", 2).await;
    wait_past(&rig.bridge, back, GRACE, 3).await;
    rig.assert_reconciled(&[disk.dedup_key(), cpu.dedup_key()], back + GRACE)
        .await;
}
