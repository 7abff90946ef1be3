//! Injected faults: forced statuses, fail rate, outages, latency, and the HTTP control route.

mod common;

use std::time::{Duration, Instant};

use common::{CHANGE, ENQUEUE, Harness, KEY_A, accepted, change, throttled, trigger};
use pagerduty_simulator::{Config, Faults};
use serde_json::{Value, json};

fn error_shape(status: &str, message: &str) -> Value {
    json!({"status": status, "message": message, "errors": []})
}

#[tokio::test]
async fn forced_statuses_are_answered_in_order_then_normal_handling_resumes() {
    let h = Harness::default().await;
    h.server.sim.set_faults(Faults {
        force_status: Some(vec![429, 500, 503, 400, 202]),
        retry_after_seconds: Some(7),
        ..Faults::default()
    });
    let event = trigger(KEY_A, "k", "x");

    let answer = h.post(ENQUEUE, &event).await;
    assert_eq!(answer.status, 429);
    assert_eq!(answer.body, throttled());
    assert_eq!(answer.header("retry-after"), Some("7"));

    let answer = h.post(ENQUEUE, &event).await;
    assert_eq!(answer.status, 500);
    assert_eq!(
        answer.body,
        error_shape("Internal Server Error", "Simulated failure")
    );

    let answer = h.post(ENQUEUE, &event).await;
    assert_eq!(answer.status, 503);
    assert_eq!(
        answer.body,
        error_shape("Service Unavailable", "Simulated failure")
    );

    let answer = h.post(ENQUEUE, &event).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.body["status"], "invalid event");
    assert_eq!(answer.body["message"], "Event object is invalid");
    assert!(h.server.sim.alerts().is_empty(), "no forced answer ingests");

    // A forced 202 is "no fault": the event is handled and ingested.
    let answer = h.post(ENQUEUE, &event).await;
    assert_eq!(answer.status, 202);
    assert_eq!(answer.body, accepted("k"));
    assert_eq!(h.server.sim.alerts().len(), 1);

    let answer = h.post(ENQUEUE, &event).await;
    assert_eq!(answer.status, 202);
    assert_eq!(h.server.sim.faults().force_status, Some(vec![]));
    assert_eq!(h.server.sim.stats().forced_or_failed, 4);
}

#[tokio::test]
async fn forced_429_has_no_retry_after_unless_asked() {
    let h = Harness::default().await;
    h.server.sim.set_faults(Faults {
        force_status: Some(vec![429]),
        ..Faults::default()
    });
    let answer = h.post(ENQUEUE, &trigger(KEY_A, "k", "x")).await;
    assert_eq!(answer.status, 429);
    assert_eq!(answer.header("retry-after"), None);
}

#[tokio::test]
async fn forced_statuses_apply_to_change_events_and_come_before_body_checks() {
    let h = Harness::default().await;
    h.server.sim.set_faults(Faults {
        force_status: Some(vec![502, 502]),
        ..Faults::default()
    });
    let answer = h.post(CHANGE, &change(KEY_A, "deploy")).await;
    assert_eq!(answer.status, 502);
    assert_eq!(answer.body, error_shape("Bad Gateway", "Simulated failure"));
    let answer = h
        .post_raw(ENQUEUE, "text/plain", b"not json".to_vec())
        .await;
    assert_eq!(answer.status, 502);
}

#[tokio::test]
async fn fail_rate_one_fails_every_request() {
    let h = Harness::default().await;
    h.server.sim.set_faults(Faults {
        fail_rate: Some(1.0),
        ..Faults::default()
    });
    for i in 0..20 {
        let answer = h.post(ENQUEUE, &trigger(KEY_A, "k", "x")).await;
        assert_eq!(answer.status, 500, "request {i}");
        assert_eq!(
            answer.body,
            error_shape("Internal Server Error", "Simulated failure")
        );
    }
    assert!(h.server.sim.alerts().is_empty());
    assert_eq!(h.server.sim.stats().forced_or_failed, 20);
}

#[tokio::test]
async fn fail_rate_from_the_config_applies_from_the_start() {
    let h = Harness::start(Config {
        fail_rate: 1.0,
        ..Config::default()
    })
    .await;
    assert_eq!(h.post(CHANGE, &change(KEY_A, "deploy")).await.status, 500);
}

#[tokio::test]
async fn forced_202_skips_the_fail_rate_draw() {
    let h = Harness::default().await;
    h.server.sim.set_faults(Faults {
        fail_rate: Some(1.0),
        force_status: Some(vec![202]),
        ..Faults::default()
    });
    assert_eq!(h.post(ENQUEUE, &trigger(KEY_A, "k", "x")).await.status, 202);
    assert_eq!(h.post(ENQUEUE, &trigger(KEY_A, "k", "x")).await.status, 500);
}

#[tokio::test]
async fn outage_answers_503_until_it_ends() {
    let h = Harness::default().await;
    h.server.sim.set_faults(Faults {
        outage_seconds: Some(1),
        force_status: Some(vec![500]),
        ..Faults::default()
    });
    let started = Instant::now();
    let answer = h.post(ENQUEUE, &trigger(KEY_A, "k", "x")).await;
    assert_eq!(answer.status, 503);
    assert_eq!(
        answer.body,
        error_shape("Service Unavailable", "Simulated outage")
    );
    assert_eq!(h.post(CHANGE, &change(KEY_A, "deploy")).await.status, 503);

    tokio::time::sleep(
        Duration::from_secs(1).saturating_sub(started.elapsed()) + Duration::from_millis(50),
    )
    .await;
    // The outage came first, so the forced status is still queued.
    assert_eq!(h.post(ENQUEUE, &trigger(KEY_A, "k", "x")).await.status, 500);
    assert_eq!(h.post(ENQUEUE, &trigger(KEY_A, "k", "x")).await.status, 202);
}

#[tokio::test]
async fn outage_of_zero_seconds_ends_an_outage() {
    let h = Harness::default().await;
    h.server.sim.set_faults(Faults {
        outage_seconds: Some(3600),
        ..Faults::default()
    });
    assert_eq!(h.post(ENQUEUE, &trigger(KEY_A, "k", "x")).await.status, 503);
    h.server.sim.set_faults(Faults {
        outage_seconds: Some(0),
        ..Faults::default()
    });
    assert_eq!(h.post(ENQUEUE, &trigger(KEY_A, "k", "x")).await.status, 202);
}

#[tokio::test]
async fn latency_delays_each_answer() {
    let h = Harness::default().await;
    h.server.sim.set_faults(Faults {
        latency_ms: Some(250),
        ..Faults::default()
    });
    let started = Instant::now();
    let answer = h.post(ENQUEUE, &trigger(KEY_A, "k", "x")).await;
    assert_eq!(answer.status, 202);
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn latency_from_the_config_applies_from_the_start() {
    let h = Harness::start(Config {
        latency: Duration::from_millis(200),
        ..Config::default()
    })
    .await;
    let started = Instant::now();
    h.post(ENQUEUE, &trigger(KEY_A, "k", "x")).await;
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn faults_route_merges_and_reports_the_faults_in_force() {
    let h = Harness::default().await;
    let answer = h
        .post("/_simulator/faults", &json!({"latency_ms": 5}))
        .await;
    assert_eq!(answer.status, 200);
    let answer = h
        .post(
            "/_simulator/faults",
            &json!({"fail_rate": 0.25, "force_status": [500, 429], "retry_after_seconds": 3}),
        )
        .await;
    assert_eq!(answer.status, 200);
    let faults: Faults = serde_json::from_value(answer.body).expect("Faults");
    assert_eq!(
        faults,
        Faults {
            fail_rate: Some(0.25),
            latency_ms: Some(5),
            force_status: Some(vec![500, 429]),
            outage_seconds: Some(0),
            retry_after_seconds: Some(3),
        }
    );
    let read: Faults = h.get("/_simulator/faults").await;
    assert_eq!(read, faults);
    assert_eq!(h.server.sim.faults(), faults);

    let answer = h
        .post("/_simulator/faults", &json!({"outage_seconds": 60}))
        .await;
    assert_eq!(answer.body["outage_seconds"], 60);
}

#[tokio::test]
async fn faults_route_refuses_what_it_cannot_use() {
    let h = Harness::default().await;
    let answer = h
        .post(
            "/_simulator/faults",
            &json!({"fail_rate": 1.5, "force_status": [700]}),
        )
        .await;
    assert_eq!(answer.status, 400);
    assert_eq!(
        answer.body["errors"],
        json!([
            "fail_rate 1.5 is not between 0.0 and 1.0",
            "force_status 700 is not between 200 and 599"
        ])
    );
    let answer = h.post("/_simulator/faults", &json!({"latency": 5})).await;
    assert_eq!(answer.status, 400, "unknown fields are typos");
    assert_eq!(
        h.server.sim.faults(),
        Harness::default().await.server.sim.faults()
    );
    assert!(
        h.server.sim.events().is_empty(),
        "control routes are not logged"
    );
}
