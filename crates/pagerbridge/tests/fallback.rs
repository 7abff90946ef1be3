//! The fallback publisher end to end: a webhook hears of dead letters and of events PagerDuty
//! has been failing for longer than `fallback.after`, at least once, even when it fails itself.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use common::{ROUTING_KEY, Setup, delivered, native_alerts, sample, simulator, wait_until};
use pagerduty_simulator::{Config as SimConfig, Faults};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// A webhook on loopback that records what it is sent, failing the first `fail_first` times.
#[derive(Clone, Default)]
struct Hook {
    received: Arc<Mutex<Vec<Value>>>,
    fail_first: Arc<Mutex<u32>>,
    attempts: Arc<Mutex<u32>>,
}

impl Hook {
    async fn start(fail_first: u32) -> (Hook, String) {
        let hook = Hook {
            fail_first: Arc::new(Mutex::new(fail_first)),
            ..Hook::default()
        };
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(hook.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (hook, url)
    }

    fn received(&self) -> Vec<Value> {
        self.received.lock().expect("lock").clone()
    }

    fn attempts(&self) -> u32 {
        *self.attempts.lock().expect("lock")
    }
}

async fn receive(State(hook): State<Hook>, Json(body): Json<Value>) -> StatusCode {
    *hook.attempts.lock().expect("lock") += 1;
    let mut fail = hook.fail_first.lock().expect("lock");
    if *fail > 0 {
        *fail -= 1;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    hook.received.lock().expect("lock").push(body);
    StatusCode::OK
}

fn fallback_yaml(url: &str, after: &str) -> String {
    format!("fallback:\n  url: \"{url}\"\n  after: \"{after}\"\n  timeout: \"2s\"")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_letter_reaches_the_fallback_even_if_it_fails_at_first() {
    let sim = simulator(SimConfig::default()).await;
    sim.sim.set_faults(Faults {
        force_status: Some(vec![400]),
        ..Faults::default()
    });
    let (hook, url) = Hook::start(2).await;
    let setup = Setup::new(
        &sim.base_url(),
        (120, "60s"),
        &fallback_yaml(&url, "2m"),
        "",
    );
    let bridge = setup.start().await;
    let (code, _) = bridge
        .post(
            "/api/v1/alertmanager",
            &sample("alertmanager-webhook-firing.json"),
        )
        .await;
    assert_eq!(code, 202);
    wait_until("the fallback notice", WAIT, || !hook.received().is_empty()).await;
    wait_until("the two other triggers", WAIT, || {
        delivered(&sim).len() == 2
    })
    .await;
    let notices = hook.received();
    assert_eq!(notices.len(), 1, "{notices:#?}");
    let notice = &notices[0];
    assert_eq!(notice["kind"], "dead_lettered");
    assert_eq!(notice["target"], "default");
    assert_eq!(notice["action"], "trigger");
    assert!(
        notice["reason"].as_str().unwrap_or("").contains("HTTP 400"),
        "{notice}"
    );
    assert_eq!(
        notice["alert"]["labels"]["instance"],
        "host-1.harness.test:9100"
    );
    assert_eq!(notice["pagerduty_event"]["payload"]["severity"], "critical");
    assert!(
        hook.attempts() >= 3,
        "the webhook failed twice and was retried"
    );
    assert!(!notice.to_string().contains(ROUTING_KEY));
    let (_, metrics) = bridge.get_text("/metrics").await;
    assert!(
        metrics
            .contains("pagerbridge_fallback_sends_total{kind=\"dead_lettered\",result=\"sent\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_outage_is_reported_and_everything_is_delivered_after_it() {
    let sim = simulator(SimConfig::default()).await;
    sim.sim.set_faults(Faults {
        outage_seconds: Some(600),
        ..Faults::default()
    });
    let (hook, url) = Hook::start(0).await;
    let setup = Setup::new(
        &sim.base_url(),
        (120, "60s"),
        &fallback_yaml(&url, "1s"),
        "",
    );
    let bridge = setup.start().await;
    let (code, _) = bridge
        .post(
            "/api/v1/alerts",
            &native_alerts("Outage", 3, "firing", "critical"),
        )
        .await;
    assert_eq!(code, 202);
    wait_until("a failing notice per event", WAIT, || {
        hook.received().len() >= 3
    })
    .await;
    for notice in hook.received() {
        assert_eq!(notice["kind"], "failing", "{notice}");
        let reason = notice["reason"].as_str().unwrap_or("");
        assert!(
            reason.contains("503") || reason.contains("waiting behind a failing delivery"),
            "{notice}"
        );
    }
    sim.sim.set_faults(Faults {
        outage_seconds: Some(0),
        ..Faults::default()
    });
    wait_until("delivery after the outage", WAIT, || {
        delivered(&sim).len() == 3
    })
    .await;
    // Each failing event is reported once, not at every retry.
    assert_eq!(hook.received().len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plain_http_fallback_to_a_remote_host_is_refused_at_startup() {
    let dir = tempfile::tempdir().expect("dir");
    let key = dir.path().join("key");
    std::fs::write(&key, ROUTING_KEY).expect("key");
    let config = dir.path().join("c.yaml");
    std::fs::write(
        &config,
        format!(
            "fallback:\n  url: \"http://hooks.example.com/x\"\ntargets:\n  - name: default\n    routing_key_file: \"{}\"\n",
            key.display()
        ),
    )
    .expect("write");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_pagerbridge"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("fallback.url"), "{stderr}");
    assert!(stderr.contains("loopback"), "{stderr}");
}
