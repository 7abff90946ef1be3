//! The client against the PagerDuty simulator over real HTTP on loopback: one test per outcome
//! of PagerDuty's contract (202, 400, 429 with Retry-After, 5xx, timeout, network error) and
//! the transport rule for plain http.

use std::time::{Duration, Instant};

use pagerduty_events::{
    AlertEvent, ChangeEvent, Client, DedupKey, Endpoint, RequestBody, RetryPolicy, RoutingKey,
    SendError, Severity, Source, Summary, Trigger,
};
use pagerduty_simulator::{Config, Faults, SpawnedSimulator, spawn_on_loopback};

const KEY: &str = "R0123456789abcdef0123456789abcde";

fn key() -> RoutingKey {
    RoutingKey::new(KEY).expect("valid key")
}

fn trigger(dedup: &str) -> AlertEvent {
    let mut trigger = Trigger::new(
        Summary::new("Disk full on db-1").expect("summary"),
        Source::new("db-1").expect("source"),
        Severity::Critical,
    );
    trigger.dedup_key = Some(DedupKey::new(dedup).expect("dedup key"));
    AlertEvent::Trigger(trigger)
}

fn fast_policy(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_secs(5),
    }
}

async fn simulator() -> SpawnedSimulator {
    spawn_on_loopback(Config::default())
        .await
        .expect("simulator starts")
}

fn client_for(sim: &SpawnedSimulator) -> Client {
    Client::builder()
        .base_url(sim.base_url())
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

async fn send_trigger(client: &Client, policy: &RetryPolicy) -> pagerduty_events::Outcome {
    let body = RequestBody::alert(&key(), &trigger("disk/db-1"));
    client
        .send_with_retry(Endpoint::Enqueue, &key(), body, policy)
        .await
}

#[tokio::test]
async fn accepted_trigger_reaches_enqueue_with_user_agent_and_key() {
    let sim = simulator().await;
    let accepted = client_for(&sim)
        .send_alert(&key(), &trigger("disk/db-1"))
        .await
        .expect("accepted");
    assert_eq!(accepted.status, "success");
    assert_eq!(accepted.message, "Event processed");
    assert_eq!(accepted.dedup_key.as_deref(), Some("disk/db-1"));

    let events = sim.sim.events();
    assert_eq!(events.len(), 1);
    let request = &events[0];
    assert_eq!(request.path, "/v2/enqueue");
    assert_eq!(request.status, 202);
    assert_eq!(
        request.user_agent.as_deref(),
        Some("AlertHistory/1.0 (+github.com/ipiton/alert-history)")
    );
    assert_eq!(request.content_type.as_deref(), Some("application/json"));
    assert_eq!(request.body["routing_key"], KEY);
    assert_eq!(request.body["payload"]["severity"], "critical");
    let alerts = sim.sim.alerts();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].dedup_key, "disk/db-1");
}

#[tokio::test]
async fn lifecycle_acknowledge_and_resolve() {
    let sim = simulator().await;
    let client = client_for(&sim);
    let dedup_key = DedupKey::new("disk/db-1").expect("key");
    client
        .send_alert(&key(), &trigger("disk/db-1"))
        .await
        .expect("trigger");
    for event in [
        AlertEvent::Acknowledge {
            dedup_key: dedup_key.clone(),
        },
        AlertEvent::Resolve {
            dedup_key,
            payload: None,
        },
    ] {
        let accepted = client.send_alert(&key(), &event).await.expect("accepted");
        assert_eq!(accepted.dedup_key.as_deref(), Some("disk/db-1"));
    }
    let alerts = sim.sim.alerts();
    assert_eq!(alerts.len(), 1);
    let actions: Vec<&str> = alerts[0]
        .history
        .iter()
        .map(|h| h.action.as_str())
        .collect();
    assert_eq!(actions, ["trigger", "acknowledge", "resolve"]);
}

#[tokio::test]
async fn change_event_goes_to_change_enqueue_and_has_no_dedup_key() {
    let sim = simulator().await;
    let event = ChangeEvent::new(Summary::new("Deploy #220").expect("summary"));
    let accepted = client_for(&sim)
        .send_change(&key(), &event)
        .await
        .expect("accepted");
    assert_eq!(accepted.message, "Change event processed");
    assert_eq!(accepted.dedup_key, None);
    let events = sim.sim.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].path, "/v2/change/enqueue");
    assert!(sim.sim.alerts().is_empty(), "change events open no alert");
}

#[tokio::test]
async fn bad_request_is_not_retried() {
    let sim = simulator().await;
    sim.sim.set_faults(Faults {
        force_status: Some(vec![400]),
        ..Faults::default()
    });
    let outcome = send_trigger(&client_for(&sim), &fast_policy(3)).await;
    assert_eq!(outcome.attempts, 1);
    let error = outcome.result.expect_err("rejected");
    assert!(
        matches!(error, SendError::InvalidEvent { status: 400, .. }),
        "{error:?}"
    );
    assert!(!error.is_retryable());
    assert_eq!(sim.sim.events().len(), 1);
}

#[tokio::test]
async fn rate_limit_is_retried_after_the_delay_pagerduty_asks_for() {
    let sim = simulator().await;
    sim.sim.set_faults(Faults {
        force_status: Some(vec![429]),
        retry_after_seconds: Some(1),
        ..Faults::default()
    });
    let started = Instant::now();
    let outcome = send_trigger(&client_for(&sim), &fast_policy(3)).await;
    let elapsed = started.elapsed();
    assert!(outcome.result.is_ok(), "{:?}", outcome.result);
    assert_eq!(outcome.attempts, 2);
    assert!(
        elapsed >= Duration::from_secs(1),
        "retried after {elapsed:?}, before Retry-After: 1"
    );
    let statuses: Vec<u16> = sim.sim.events().iter().map(|e| e.status).collect();
    assert_eq!(statuses, [429, 202]);
}

#[tokio::test]
async fn real_budget_429_is_classified_as_rate_limited() {
    let sim = spawn_on_loopback(Config {
        rate_limit: 1,
        rate_window: Duration::from_secs(60),
        ..Config::default()
    })
    .await
    .expect("simulator");
    let client = client_for(&sim);
    client
        .send_alert(&key(), &trigger("a"))
        .await
        .expect("first fits");
    let error = client
        .send_alert(&key(), &trigger("b"))
        .await
        .expect_err("second is over budget");
    assert_eq!(error, SendError::RateLimited { retry_after: None });
    assert!(error.is_retryable());
}

#[tokio::test]
async fn server_errors_are_retried_three_times_then_reported() {
    let sim = simulator().await;
    sim.sim.set_faults(Faults {
        fail_rate: Some(1.0),
        ..Faults::default()
    });
    let outcome = send_trigger(&client_for(&sim), &fast_policy(3)).await;
    assert_eq!(outcome.attempts, 3);
    let error = outcome.result.expect_err("gave up");
    assert!(
        matches!(error, SendError::Server { status: 500, .. }),
        "{error:?}"
    );
    assert_eq!(sim.sim.events().len(), 3);
}

#[tokio::test]
async fn flapping_server_recovers_within_the_attempts() {
    let sim = simulator().await;
    sim.sim.set_faults(Faults {
        force_status: Some(vec![502, 503]),
        ..Faults::default()
    });
    let outcome = send_trigger(&client_for(&sim), &fast_policy(3)).await;
    assert!(outcome.result.is_ok(), "{:?}", outcome.result);
    assert_eq!(outcome.attempts, 3);
}

#[tokio::test]
async fn slow_answer_times_out() {
    let sim = simulator().await;
    sim.sim.set_faults(Faults {
        latency_ms: Some(2_000),
        ..Faults::default()
    });
    let client = Client::builder()
        .base_url(sim.base_url())
        .timeout(Duration::from_millis(200))
        .build()
        .expect("client");
    let started = Instant::now();
    let outcome = send_trigger(&client, &fast_policy(2)).await;
    let error = outcome.result.expect_err("timed out");
    assert_eq!(error, SendError::Timeout(Duration::from_millis(200)));
    assert!(error.is_retryable());
    assert_eq!(outcome.attempts, 2);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "did not wait for the slow answer"
    );
}

#[tokio::test]
async fn connection_refused_is_a_retryable_network_error() {
    // Bind then drop, so the port is very likely closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let client = Client::builder()
        .base_url(format!("http://127.0.0.1:{port}"))
        .build()
        .expect("client");
    let outcome = send_trigger(&client, &fast_policy(2)).await;
    assert_eq!(outcome.attempts, 2);
    let error = outcome.result.expect_err("refused");
    assert!(matches!(error, SendError::Network(_)), "{error:?}");
    assert!(!error.to_string().contains(KEY));
}

#[test]
fn plain_http_to_a_remote_host_is_refused() {
    let error = Client::builder()
        .base_url("http://events.pagerduty.com")
        .build()
        .expect_err("refused");
    assert!(
        error
            .to_string()
            .contains("plain http is only allowed to a loopback address"),
        "{error}"
    );
    assert!(
        Client::builder()
            .base_url("https://events.eu.pagerduty.com")
            .build()
            .is_ok()
    );
}
