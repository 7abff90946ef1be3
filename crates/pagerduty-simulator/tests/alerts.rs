//! PagerDuty's dedup semantics: what triggers, acknowledges and resolves do to alerts.

mod common;

use common::{ENQUEUE, Harness, KEY_A, KEY_B, accepted, action, trigger};
use pagerduty_simulator::{Alert, AlertState};
use serde_json::json;

#[tokio::test]
async fn valid_trigger_is_accepted_and_opens_an_alert() {
    let h = Harness::default().await;
    let answer = h
        .post(ENQUEUE, &trigger(KEY_A, "disk/db1", "Disk full on db1"))
        .await;
    assert_eq!(answer.status, 202);
    assert_eq!(answer.body, accepted("disk/db1"));

    let alerts = h.server.sim.alerts();
    assert_eq!(alerts.len(), 1);
    let alert = &alerts[0];
    assert_eq!(alert.id, 1);
    assert_eq!(alert.routing_key, KEY_A);
    assert_eq!(alert.dedup_key, "disk/db1");
    assert_eq!(alert.state, AlertState::Triggered);
    assert_eq!(alert.summary, "Disk full on db1");
    assert_eq!(alert.severity, "critical");
    assert_eq!(alert.source, "db1.example.com");
    assert_eq!(alert.history.len(), 1);
    assert_eq!(alert.history[0].action, "trigger");
    assert_eq!(alert.history[0].seq, 1);
    assert!(alert.created_at.parse::<jiff::Timestamp>().is_ok());
}

#[tokio::test]
async fn repeated_trigger_updates_the_open_alert() {
    let h = Harness::default().await;
    h.post(ENQUEUE, &trigger(KEY_A, "k", "first")).await;
    let mut second = trigger(KEY_A, "k", "second");
    second["payload"]["severity"] = json!("warning");
    let answer = h.post(ENQUEUE, &second).await;
    assert_eq!(answer.status, 202);
    assert_eq!(answer.body, accepted("k"));

    let alerts = h.server.sim.alerts();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].summary, "second");
    assert_eq!(alerts[0].severity, "warning");
    assert_eq!(alerts[0].state, AlertState::Triggered);
    let seqs: Vec<u64> = alerts[0].history.iter().map(|entry| entry.seq).collect();
    assert_eq!(seqs, vec![1, 2]);
}

#[tokio::test]
async fn acknowledge_keeps_the_alert_open_and_a_trigger_does_not_undo_it() {
    let h = Harness::default().await;
    h.post(ENQUEUE, &trigger(KEY_A, "k", "first")).await;
    let answer = h.post(ENQUEUE, &action(KEY_A, "acknowledge", "k")).await;
    assert_eq!(answer.status, 202);
    assert_eq!(answer.body, accepted("k"));
    assert_eq!(h.server.sim.alerts()[0].state, AlertState::Acknowledged);

    h.post(ENQUEUE, &trigger(KEY_A, "k", "again")).await;
    let alerts = h.server.sim.alerts();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].state, AlertState::Acknowledged);
    assert_eq!(alerts[0].summary, "again");
    let actions: Vec<&str> = alerts[0]
        .history
        .iter()
        .map(|e| e.action.as_str())
        .collect();
    assert_eq!(actions, vec!["trigger", "acknowledge", "trigger"]);
}

#[tokio::test]
async fn resolve_closes_the_alert() {
    let h = Harness::default().await;
    h.post(ENQUEUE, &trigger(KEY_A, "k", "first")).await;
    h.post(ENQUEUE, &action(KEY_A, "acknowledge", "k")).await;
    let answer = h.post(ENQUEUE, &action(KEY_A, "resolve", "k")).await;
    assert_eq!(answer.status, 202);
    assert_eq!(answer.body, accepted("k"));
    let alerts = h.server.sim.alerts();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].state, AlertState::Resolved);
    assert_eq!(alerts[0].history.len(), 3);
}

#[tokio::test]
async fn trigger_after_resolve_opens_a_new_alert() {
    let h = Harness::default().await;
    h.post(ENQUEUE, &trigger(KEY_A, "k", "first")).await;
    h.post(ENQUEUE, &action(KEY_A, "resolve", "k")).await;
    let answer = h.post(ENQUEUE, &trigger(KEY_A, "k", "second")).await;
    assert_eq!(answer.body, accepted("k"));

    let alerts = h.server.sim.alerts();
    let summary: Vec<(u64, AlertState, &str)> = alerts
        .iter()
        .map(|a| (a.id, a.state, a.summary.as_str()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, AlertState::Resolved, "first"),
            (2, AlertState::Triggered, "second")
        ]
    );
    // The new alert is the open one: an acknowledge reaches it, not the resolved one.
    h.post(ENQUEUE, &action(KEY_A, "acknowledge", "k")).await;
    let states: Vec<AlertState> = h.server.sim.alerts().iter().map(|a| a.state).collect();
    assert_eq!(states, vec![AlertState::Resolved, AlertState::Acknowledged]);
}

#[tokio::test]
async fn acknowledge_or_resolve_of_unknown_key_is_accepted_and_dropped() {
    let h = Harness::default().await;
    for verb in ["acknowledge", "resolve"] {
        let answer = h
            .post(ENQUEUE, &action(KEY_A, verb, "never-triggered"))
            .await;
        assert_eq!(answer.status, 202, "{verb}");
        assert_eq!(answer.body, accepted("never-triggered"), "{verb}");
    }
    assert!(h.server.sim.alerts().is_empty());
    let stats = h.server.sim.stats();
    assert_eq!((stats.accepted, stats.dropped), (2, 2));
    assert_eq!(
        h.server.sim.events().len(),
        2,
        "dropped events are still logged"
    );
}

#[tokio::test]
async fn acknowledge_or_resolve_of_resolved_key_is_dropped() {
    let h = Harness::default().await;
    h.post(ENQUEUE, &trigger(KEY_A, "k", "first")).await;
    h.post(ENQUEUE, &action(KEY_A, "resolve", "k")).await;
    let before: Vec<Alert> = h.server.sim.alerts();
    for verb in ["acknowledge", "resolve"] {
        let answer = h.post(ENQUEUE, &action(KEY_A, verb, "k")).await;
        assert_eq!(answer.status, 202, "{verb}");
    }
    assert_eq!(h.server.sim.alerts(), before);
    assert_eq!(h.server.sim.stats().dropped, 2);
}

#[tokio::test]
async fn acknowledge_through_another_routing_key_does_nothing() {
    let h = Harness::default().await;
    h.post(ENQUEUE, &trigger(KEY_A, "k", "first")).await;
    let answer = h.post(ENQUEUE, &action(KEY_B, "acknowledge", "k")).await;
    assert_eq!(answer.status, 202);
    let answer = h.post(ENQUEUE, &action(KEY_B, "resolve", "k")).await;
    assert_eq!(answer.status, 202);
    let alerts = h.server.sim.alerts();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].state, AlertState::Triggered);
    assert_eq!(alerts[0].history.len(), 1);
}

#[tokio::test]
async fn same_dedup_key_under_two_routing_keys_is_two_alerts() {
    let h = Harness::default().await;
    h.post(ENQUEUE, &trigger(KEY_A, "k", "a")).await;
    h.post(ENQUEUE, &trigger(KEY_B, "k", "b")).await;
    let keys: Vec<String> = h
        .server
        .sim
        .alerts()
        .into_iter()
        .map(|a| a.routing_key)
        .collect();
    assert_eq!(keys, vec![KEY_A, KEY_B]);
}

#[tokio::test]
async fn trigger_without_dedup_key_gets_a_generated_one() {
    let h = Harness::default().await;
    let mut event = trigger(KEY_A, "", "no key");
    event.as_object_mut().expect("object").remove("dedup_key");

    let first = h.post(ENQUEUE, &event).await;
    let second = h.post(ENQUEUE, &event).await;
    assert_eq!((first.status, second.status), (202, 202));
    let generated: Vec<String> = [&first, &second]
        .iter()
        .map(|answer| {
            assert_eq!(answer.body["status"], "success");
            assert_eq!(answer.body["message"], "Event processed");
            answer.body["dedup_key"]
                .as_str()
                .expect("dedup_key")
                .to_owned()
        })
        .collect();
    for key in &generated {
        assert!(uuid::Uuid::try_parse(key).is_ok(), "{key} is a UUID");
    }
    assert_ne!(generated[0], generated[1], "each trigger gets its own key");

    // The returned key is the alert's, so it can be resolved with it.
    let alerts = h.server.sim.alerts();
    assert_eq!(alerts.len(), 2);
    assert_eq!(alerts[0].dedup_key, generated[0]);
    h.post(ENQUEUE, &action(KEY_A, "resolve", &generated[0]))
        .await;
    assert_eq!(h.server.sim.alerts()[0].state, AlertState::Resolved);
}
