//! PagerDuty's per-routing-key budget: a sliding window, 429 without ingesting, shared by
//! alert and change events.

mod common;

use std::time::Duration;

use common::{CHANGE, ENQUEUE, Harness, KEY_A, KEY_B, change, invalid, throttled, trigger};
use pagerduty_simulator::{Config, Faults};
use serde_json::json;

fn limited(rate_limit: u32, window_ms: u64) -> Config {
    Config {
        rate_limit,
        rate_window: Duration::from_millis(window_ms),
        ..Config::default()
    }
}

#[tokio::test]
async fn the_121st_request_for_a_key_within_a_minute_is_throttled() {
    let h = Harness::default().await;
    for i in 1..=120 {
        let answer = h
            .post(ENQUEUE, &trigger(KEY_A, &format!("k{i}"), "load"))
            .await;
        assert_eq!(answer.status, 202, "request {i}");
    }
    let answer = h.post(ENQUEUE, &trigger(KEY_A, "k121", "load")).await;
    assert_eq!(answer.status, 429);
    assert_eq!(answer.body, throttled());
    assert_eq!(answer.header("retry-after"), None);

    let alerts = h.server.sim.alerts();
    assert_eq!(alerts.len(), 120);
    assert!(
        alerts.iter().all(|alert| alert.dedup_key != "k121"),
        "not ingested"
    );

    let other = h.post(ENQUEUE, &trigger(KEY_B, "k1", "other key")).await;
    assert_eq!(other.status, 202, "another key has its own budget");

    let stats = h.server.sim.stats();
    assert_eq!(stats.budget_violations, 1);
    assert_eq!(stats.accepted, 121);
    assert_eq!(h.server.sim.events()[120].status, 429);
}

#[tokio::test]
async fn the_window_slides_and_frees_up() {
    let h = Harness::start(limited(5, 300)).await;
    for i in 0..5 {
        let answer = h.post(ENQUEUE, &trigger(KEY_A, "k", "x")).await;
        assert_eq!(answer.status, 202, "request {i}");
    }
    assert_eq!(h.post(ENQUEUE, &trigger(KEY_A, "k", "x")).await.status, 429);
    tokio::time::sleep(Duration::from_millis(320)).await;
    assert_eq!(h.post(ENQUEUE, &trigger(KEY_A, "k", "x")).await.status, 202);
}

#[tokio::test]
async fn throttled_requests_do_not_use_up_the_window() {
    let h = Harness::start(limited(1, 400)).await;
    assert_eq!(h.post(ENQUEUE, &trigger(KEY_A, "k", "x")).await.status, 202);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.post(ENQUEUE, &trigger(KEY_A, "k", "x")).await.status, 429);
    // 420 ms after the admitted request, 220 ms after the refused one: had the refusal
    // counted, the key would still be over its budget.
    tokio::time::sleep(Duration::from_millis(220)).await;
    assert_eq!(h.post(ENQUEUE, &trigger(KEY_A, "k", "x")).await.status, 202);
}

#[tokio::test]
async fn rate_limit_zero_never_throttles() {
    let h = Harness::start(Config {
        rate_limit: 0,
        ..Config::default()
    })
    .await;
    for i in 0..300 {
        let answer = h.post(ENQUEUE, &trigger(KEY_A, "k", "x")).await;
        assert_eq!(answer.status, 202, "request {i}");
    }
    assert_eq!(h.server.sim.stats().budget_violations, 0);
}

#[tokio::test]
async fn alert_and_change_events_share_a_budget() {
    let h = Harness::start(limited(2, 60_000)).await;
    assert_eq!(h.post(ENQUEUE, &trigger(KEY_A, "k", "x")).await.status, 202);
    assert_eq!(h.post(CHANGE, &change(KEY_A, "deploy")).await.status, 202);
    let answer = h.post(CHANGE, &change(KEY_A, "deploy")).await;
    assert_eq!(answer.status, 429);
    assert_eq!(answer.body, throttled());
    assert_eq!(h.post(ENQUEUE, &trigger(KEY_A, "k", "x")).await.status, 429);
    assert_eq!(h.server.sim.stats().change_events, 1);
}

#[tokio::test]
async fn invalid_events_count_against_the_key_they_name() {
    let h = Harness::start(limited(1, 60_000)).await;
    let invalid_event = json!({"routing_key": KEY_A});
    let answer = h.post(ENQUEUE, &invalid_event).await;
    assert_eq!(answer.status, 400);
    assert_eq!(
        answer.body,
        invalid(&["'event_action' is missing or blank"])
    );
    assert_eq!(h.post(ENQUEUE, &trigger(KEY_A, "k", "x")).await.status, 429);
}

#[tokio::test]
async fn events_without_a_routing_key_are_not_counted() {
    let h = Harness::start(limited(1, 60_000)).await;
    for _ in 0..3 {
        let answer = h.post(ENQUEUE, &json!({"event_action": "trigger"})).await;
        assert_eq!(answer.status, 400, "validated, not throttled");
    }
}

#[tokio::test]
async fn budget_429_carries_retry_after_when_asked() {
    let h = Harness::start(limited(1, 60_000)).await;
    h.server.sim.set_faults(Faults {
        retry_after_seconds: Some(30),
        ..Faults::default()
    });
    assert_eq!(h.post(ENQUEUE, &trigger(KEY_A, "k", "x")).await.status, 202);
    let answer = h.post(ENQUEUE, &trigger(KEY_A, "k", "x")).await;
    assert_eq!(answer.status, 429);
    assert_eq!(answer.header("retry-after"), Some("30"));
    assert_eq!(answer.body, throttled());
}
