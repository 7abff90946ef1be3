//! `pagerbridge serve` and `check-config` on PostgreSQL, end to end: the real binary, a fresh
//! database of its own per test ([`TestDatabase`]), the simulator as PagerDuty.
//!
//! Every test is `#[ignore = "needs postgres"]` and has `postgres` in its name, so that the
//! runs that select PostgreSQL tests pick them up and the others skip them.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use pagerbridge_testkit::postgres::TestDatabase;
use pagerduty_simulator::Config as SimConfig;

const WAIT: Duration = Duration::from_secs(20);

/// The actions delivered, in order, and the dedup keys of the `action` ones.
fn keys_of(delivered: &[(String, String)], action: &str) -> Vec<String> {
    let mut keys: Vec<String> = delivered
        .iter()
        .filter(|(_, a)| a == action)
        .map(|(k, _)| k.clone())
        .collect();
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs postgres"]
async fn serve_on_postgres_delivers_real_samples_in_order() {
    let database = TestDatabase::create().await;
    let sim = simulator(SimConfig::default()).await;
    // The test server trusts every connection, so any password is accepted: this one must
    // never show in a log line.
    let url = with_password(&database.url, "s3cret-pw");
    let setup = Setup::new(&sim.base_url(), (120, "60s"), "", "").with_postgres(&url);
    let bridge = setup.start().await;
    assert!(
        bridge
            .logs()
            .iter()
            .any(|line| line.contains("(PostgreSQL)") && line.contains(":***@")),
        "the backend is logged, its password masked"
    );
    let (status, body) = bridge.get_text("/readyz").await;
    assert_eq!(status, 200, "{body}");

    let (status, receipt) = bridge
        .post(
            "/api/v1/alertmanager",
            &sample("alertmanager-webhook-firing.json"),
        )
        .await;
    assert_eq!(status, 202, "{receipt}");
    assert_eq!(receipt["queued"], 3);
    wait_until("3 triggers", WAIT, || delivered(&sim).len() == 3).await;
    // host-2 resolves first, then the other two.
    for name in [
        "alertmanager-webhook-partially-resolved.json",
        "alertmanager-webhook-resolved.json",
    ] {
        let (status, receipt) = bridge.post("/api/v1/alertmanager", &sample(name)).await;
        assert_eq!(status, 202, "{name}: {receipt}");
    }
    wait_until("3 resolves", WAIT, || delivered(&sim).len() == 6).await;

    let got = delivered(&sim);
    let actions: Vec<&str> = got.iter().map(|(_, a)| a.as_str()).collect();
    assert_eq!(
        actions,
        [
            "trigger", "trigger", "trigger", "resolve", "resolve", "resolve"
        ]
    );
    let triggered = keys_of(&got, "trigger");
    triggered.windows(2).for_each(|w| assert_ne!(w[0], w[1]));
    assert_eq!(triggered, keys_of(&got, "resolve"), "each alert resolved");
    assert_lifecycles(&got, &triggered, &["trigger", "resolve"], false);
    let leaked: Vec<String> = bridge
        .logs()
        .into_iter()
        .filter(|line| line.contains("s3cret-pw"))
        .collect();
    assert!(
        leaked.is_empty(),
        "the password leaked into logs: {leaked:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs postgres"]
async fn serve_on_postgres_kill_9_loses_nothing_accepted() {
    let database = TestDatabase::create().await;
    let sim = simulator(SimConfig::default()).await;
    let setup = Setup::new(&sim.base_url(), (1000, "60s"), "", "").with_postgres(&database.url);
    kill_9_during_an_outage_then_restart(&sim, &setup, "PgCrash", 20, WAIT).await;
}

/// `pagerbridge check-config` on `setup`'s file; (exit code, stdout, stderr).
fn check_config(setup: &Setup) -> (Option<i32>, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_pagerbridge"))
        .args(["check-config", "--config"])
        .arg(&setup.config)
        .env_remove("PAGERBRIDGE_CONFIG")
        .output()
        .expect("check-config runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `url` with `password` for its user (the test server trusts every connection, so a
/// password is accepted whatever it is).
fn with_password(url: &str, password: &str) -> String {
    let mut url = url::Url::parse(url).expect("test database URL");
    url.set_password(Some(password)).expect("a URL with a host");
    url.to_string()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs postgres"]
async fn check_config_reaches_postgres_and_masks_the_password() {
    let database = TestDatabase::create().await;
    let url = with_password(&database.url, "s3cret-pw");
    let setup = Setup::new("http://127.0.0.1:9", (120, "60s"), "", "").with_postgres(&url);
    let (code, stdout, stderr) = check_config(&setup);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains(":***@"), "{stdout}");
    assert!(stdout.contains("(PostgreSQL), reachable"), "{stdout}");
    assert!(!format!("{stdout}{stderr}").contains("s3cret-pw"));
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs postgres"]
async fn check_config_fails_when_postgres_is_unreachable() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let url = format!("postgres://pagerbridge:s3cret-pw@127.0.0.1:{port}/pagerbridge");
    let setup = Setup::new("http://127.0.0.1:9", (120, "60s"), "", "").with_postgres(&url);
    let (code, stdout, stderr) = check_config(&setup);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("is not reachable"), "{stderr}");
    assert!(stderr.contains(":***@127.0.0.1"), "{stderr}");
    assert!(!format!("{stdout}{stderr}").contains("s3cret-pw"));
}
