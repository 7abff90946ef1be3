//! What a test can read back (the request log, alerts, stats, over HTTP and in process),
//! reset, and serving until shutdown.

mod common;

use std::time::Duration;

use common::{CHANGE, ENQUEUE, Harness, KEY_A, action, change, trigger};
use pagerduty_simulator::{Alert, Config, Faults, ReceivedRequest, Simulator, Stats, serve};
use serde_json::json;

#[tokio::test]
async fn requests_are_logged_in_order_with_their_answers() {
    let h = Harness::default().await;
    h.post(ENQUEUE, &trigger(KEY_A, "k", "x")).await;
    h.post_raw(ENQUEUE, "text/plain", b"hello \xff".to_vec())
        .await;
    h.post(CHANGE, &change(KEY_A, "deploy")).await;
    h.post("/v2/nowhere", &json!({})).await;
    h.get::<Stats>("/_simulator/stats").await;

    let events = h.server.sim.events();
    let summary: Vec<(u64, &str, u16)> = events
        .iter()
        .map(|e| (e.seq, e.path.as_str(), e.status))
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, ENQUEUE, 202),
            (2, ENQUEUE, 400),
            (3, CHANGE, 202),
            (4, "/v2/nowhere", 404)
        ]
    );
    assert!(events.iter().all(|e| e.method == "POST"));
    assert!(
        events
            .iter()
            .all(|e| e.user_agent.as_deref() == Some("simulator-tests/1.0"))
    );
    assert_eq!(events[0].content_type.as_deref(), Some("application/json"));
    assert_eq!(events[0].body, trigger(KEY_A, "k", "x"));
    assert_eq!(events[0].response["dedup_key"], "k");
    assert_eq!(events[1].content_type.as_deref(), Some("text/plain"));
    assert_eq!(events[1].body, json!("hello \u{fffd}"));
    assert_eq!(events[1].response["status"], "Unrecognized object");
    assert!(events[0].received_at.parse::<jiff::Timestamp>().is_ok());
}

#[tokio::test]
async fn http_views_match_the_in_process_ones() {
    let h = Harness::default().await;
    h.post(ENQUEUE, &trigger(KEY_A, "k", "x")).await;
    h.post(ENQUEUE, &action(KEY_A, "acknowledge", "k")).await;
    h.post(ENQUEUE, &json!({})).await;

    let events: Vec<ReceivedRequest> = h.get("/_simulator/events").await;
    let alerts: Vec<Alert> = h.get("/_simulator/alerts").await;
    let stats: Stats = h.get("/_simulator/stats").await;
    assert_eq!(events.len(), 3);
    assert_eq!(events, h.server.sim.events());
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts, h.server.sim.alerts());
    assert_eq!(stats, h.server.sim.stats());

    let raw: serde_json::Value = h.get("/_simulator/alerts").await;
    assert_eq!(raw[0]["state"], "acknowledged");
}

#[tokio::test]
async fn stats_count_each_kind_of_answer() {
    let h = Harness::start(Config {
        rate_limit: 3,
        ..Config::default()
    })
    .await;
    h.post(ENQUEUE, &trigger(KEY_A, "k", "x")).await; // accepted
    h.post(ENQUEUE, &action(KEY_A, "resolve", "other")).await; // accepted, dropped
    h.post(CHANGE, &change(KEY_A, "deploy")).await; // accepted, change event
    h.post(ENQUEUE, &trigger(KEY_A, "k", "x")).await; // budget
    h.post(ENQUEUE, &json!({"event_action": "trigger"})).await; // invalid
    h.post_raw(ENQUEUE, "application/json", b"nope".to_vec())
        .await; // invalid
    h.server.sim.set_faults(Faults {
        force_status: Some(vec![500]),
        ..Faults::default()
    });
    h.post(ENQUEUE, &trigger(KEY_A, "k", "x")).await; // forced
    h.post("/v2/events", &json!({})).await; // not found

    let stats = h.server.sim.stats();
    let expected = Stats {
        requests: 8,
        by_path: [
            (
                ENQUEUE.to_owned(),
                [("202", 2), ("400", 2), ("429", 1), ("500", 1)]
                    .into_iter()
                    .map(|(status, n)| (status.to_owned(), n))
                    .collect(),
            ),
            (CHANGE.to_owned(), [("202".to_owned(), 1)].into()),
            ("/v2/events".to_owned(), [("404".to_owned(), 1)].into()),
        ]
        .into(),
        accepted: 3,
        dropped: 1,
        rejected_invalid: 2,
        budget_violations: 1,
        forced_or_failed: 1,
        change_events: 1,
    };
    assert_eq!(stats, expected);
}

#[tokio::test]
async fn reset_clears_everything_and_restores_the_configured_faults() {
    let h = Harness::start(Config {
        rate_limit: 1,
        latency: Duration::from_millis(1),
        ..Config::default()
    })
    .await;
    h.post(ENQUEUE, &trigger(KEY_A, "k", "x")).await;
    assert_eq!(h.post(ENQUEUE, &trigger(KEY_A, "j", "x")).await.status, 429);
    h.server.sim.set_faults(Faults {
        latency_ms: Some(0),
        force_status: Some(vec![500]),
        outage_seconds: Some(60),
        retry_after_seconds: Some(9),
        ..Faults::default()
    });

    let answer = h.post("/_simulator/reset", &json!({})).await;
    assert_eq!(answer.status, 200);
    assert!(h.server.sim.events().is_empty());
    assert!(h.server.sim.alerts().is_empty());
    assert_eq!(h.server.sim.stats(), Stats::default());
    assert_eq!(
        h.server.sim.faults(),
        Faults {
            fail_rate: Some(0.0),
            latency_ms: Some(1),
            force_status: Some(vec![]),
            outage_seconds: Some(0),
            retry_after_seconds: None,
        }
    );

    // The budget is cleared too, and numbering starts again.
    let answer = h.post(ENQUEUE, &trigger(KEY_A, "j", "x")).await;
    assert_eq!(answer.status, 202);
    assert_eq!(h.server.sim.alerts()[0].id, 1);
    assert_eq!(h.server.sim.events()[0].seq, 1);
}

#[tokio::test]
async fn in_process_reset_matches_the_route() {
    let h = Harness::default().await;
    h.post(ENQUEUE, &trigger(KEY_A, "k", "x")).await;
    h.server.sim.reset();
    assert!(h.server.sim.events().is_empty());
    assert!(h.server.sim.alerts().is_empty());
}

#[tokio::test]
async fn serve_returns_when_shutdown_resolves() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(Simulator::new(Config::default()), listener, async {
        let _ = stopped.await;
    }));
    stop.send(()).expect("server is waiting");
    let result = tokio::time::timeout(Duration::from_secs(2), server)
        .await
        .expect("stops in time")
        .expect("task did not panic");
    assert!(result.is_ok());
}

#[tokio::test]
async fn dropping_a_spawned_simulator_stops_it() {
    let h = Harness::default().await;
    let url = h.url("/_simulator/stats");
    drop(h);
    // The abort takes effect at the task's next poll; a fresh connection then finds no one.
    let refused = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            let fresh = reqwest::Client::new();
            if fresh.get(&url).send().await.is_err() {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(refused.is_ok(), "still answering after drop");
}
