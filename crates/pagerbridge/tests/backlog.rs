//! A large backlog, end to end: a critical alert posted behind 10,000 queued info alerts of
//! the same target (distinct dedup keys) is the next request the budget allows, through the
//! real `pagerbridge serve`, its lane and the simulator. The speed at larger backlogs is
//! measured by `examples/backlog.rs`, not here.

mod common;

use std::time::Duration;

use common::*;
use jiff::Timestamp;
use pagerbridge::store::postgres::PostgresStore;
use pagerbridge::store::sqlite::SqliteStore;
use pagerbridge::store::{
    Action, Condition, IncidentSource, JsonText, NewEvent, Outbox, SuppressionPolicy,
};
use pagerbridge_testkit::postgres::TestDatabase;
use pagerduty_events::{AlertEvent, DedupKey, Severity, Source, Summary, Trigger};
use pagerduty_simulator::Config as SimConfig;

const BACKLOG: usize = 10_000;
/// One request per window: after a request, the lane waits this long for its next slot, which
/// leaves the critical alert's POST ample time to be accepted before that slot comes.
const BUDGET: (u32, &str) = (1, "5s");
const WAIT: Duration = Duration::from_secs(30);

/// A firing info alert's trigger, as the pipeline queues it (PagerDuty event and source
/// alert), on target `default`.
fn info_event(i: usize) -> NewEvent {
    let key = format!("backlog-info-{i:05}");
    let instance = format!("host-{i:05}");
    let mut trigger = Trigger::new(
        Summary::new(format!("BacklogInfo on {instance}")).expect("summary"),
        Source::new(instance.clone()).expect("source"),
        Severity::Info,
    );
    trigger.dedup_key = Some(DedupKey::new(key.clone()).expect("key"));
    NewEvent {
        target: "default".to_owned(),
        dedup_key: Some(key),
        action: Action::Trigger,
        severity: Some(Severity::Info),
        event: JsonText::of(&AlertEvent::Trigger(trigger)).expect("event"),
        alert: Some(
            serde_json::json!({
                "labels": {"alertname": "BacklogInfo", "severity": "info", "instance": instance}
            })
            .into(),
        ),
        fingerprint: None,
        labels_key: false,
        payload_hash: Some(format!("{i:064x}")),
        condition: Condition::Always,
        source: Some(IncidentSource::Api),
    }
}

/// Queues the backlog through the store's own `accept`, a few thousand per transaction.
async fn fill(store: &dyn Outbox) {
    let events: Vec<NewEvent> = (0..BACKLOG).map(info_event).collect();
    for batch in events.chunks(2_500) {
        let accepted = store
            .accept(
                batch.to_vec(),
                &SuppressionPolicy::default(),
                Timestamp::now(),
            )
            .await
            .expect("accept");
        assert_eq!(accepted.len(), batch.len());
    }
}

/// Starts the bridge on the filled store; once it has sent its first request (spending the
/// budget's one slot), posts a critical alert and checks that the very next request the
/// simulator receives is that alert's.
async fn critical_goes_next(sim: &SpawnedSimulator, setup: &Setup) {
    let bridge = setup.start().await;
    wait_until("the first request", WAIT, || !sim.sim.events().is_empty()).await;
    let before = sim.sim.events().len();
    let (code, _) = bridge
        .post(
            "/api/v1/alerts",
            &native_alerts("BacklogCritical", 1, "firing", "critical"),
        )
        .await;
    assert_eq!(code, 202);
    let is_critical = |body: &serde_json::Value| body["payload"]["severity"] == "critical";
    wait_until("the critical alert's request", WAIT, || {
        sim.sim.events().iter().any(|e| is_critical(&e.body))
    })
    .await;
    let sent: Vec<String> = sim
        .sim
        .events()
        .iter()
        .map(|e| {
            e.body["payload"]["severity"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(
        sent.iter().position(|s| s == "critical"),
        Some(before),
        "the critical alert is the first request after {before} info ones: {sent:?}"
    );
    assert!(
        sent[..before].iter().all(|s| s == "info"),
        "only info alerts before it: {sent:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_critical_alert_behind_10000_info_alerts_is_sent_next() {
    let sim = simulator(SimConfig {
        rate_limit: 0,
        ..SimConfig::default()
    })
    .await;
    let setup = Setup::new(&sim.base_url(), BUDGET, "", "");
    {
        let store = SqliteStore::open(&setup.db_path()).await.expect("open");
        fill(&store).await;
    }
    critical_goes_next(&sim, &setup).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs postgres"]
async fn on_postgres_a_critical_alert_behind_10000_info_alerts_is_sent_next() {
    let database = TestDatabase::create().await;
    let sim = simulator(SimConfig {
        rate_limit: 0,
        ..SimConfig::default()
    })
    .await;
    let setup = Setup::new(&sim.base_url(), BUDGET, "", "").with_postgres(&database.url);
    {
        let store = PostgresStore::connect(&database.url)
            .await
            .expect("connect");
        fill(&store).await;
    }
    critical_goes_next(&sim, &setup).await;
}
