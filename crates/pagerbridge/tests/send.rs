//! `pagerbridge send` as a subprocess against the simulator over loopback: what reaches
//! PagerDuty, what is printed, and the documented exit codes (0 accepted, 2 usage or local
//! validation, 3 rejected, 4 not delivered).

use std::path::PathBuf;
use std::process::Output;

use assert_cmd::Command;
use pagerduty_simulator::{Config, Faults, SpawnedSimulator, spawn_on_loopback};
use serde_json::Value;

const KEY: &str = "Zq9XsendTESTkey00000000000000042";

struct Fixture {
    sim: SpawnedSimulator,
    _dir: tempfile::TempDir,
    key_file: PathBuf,
}

async fn fixture() -> Fixture {
    let sim = spawn_on_loopback(Config::default())
        .await
        .expect("simulator");
    let dir = tempfile::tempdir().expect("temp dir");
    let key_file = dir.path().join("pd-key");
    std::fs::write(&key_file, format!("{KEY}\n")).expect("key file");
    Fixture {
        sim,
        _dir: dir,
        key_file,
    }
}

impl Fixture {
    /// Runs `pagerbridge send ARGS --url SIM --routing-key-file F` without blocking the
    /// runtime that serves the simulator.
    async fn send(&self, args: &[&str]) -> Output {
        let mut full: Vec<String> = vec!["send".into()];
        full.extend(args.iter().map(|a| a.to_string()));
        full.extend([
            "--url".into(),
            self.sim.base_url(),
            "--routing-key-file".into(),
            self.key_file.display().to_string(),
            "--retry-base-delay".into(),
            "10ms".into(),
        ]);
        run(full).await
    }
}

async fn run(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::cargo_bin("pagerbridge")
            .expect("binary")
            .args(&args)
            .env_remove("PAGERDUTY_ROUTING_KEY")
            .env_remove("PAGERDUTY_URL")
            .output()
            .expect("runs")
    })
    .await
    .expect("join")
}

fn stdout_json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

fn assert_no_key(output: &Output) {
    let all = [output.stdout.as_slice(), output.stderr.as_slice()].concat();
    assert!(
        !String::from_utf8_lossy(&all).contains(KEY),
        "the routing key leaked into the output"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn trigger_with_every_option_is_accepted_and_schema_valid() {
    let fx = fixture().await;
    let output = fx
        .send(&[
            "trigger",
            "--summary",
            "Disk full on db-1",
            "--source",
            "db-1.example.com",
            "--severity",
            "critical",
            "--dedup-key",
            "disk/db-1",
            "--component",
            "postgres",
            "--group",
            "prod",
            "--class",
            "disk",
            "--timestamp",
            "2026-11-29T08:42:58Z",
            "--custom-details",
            r#"{"free":"1%","load":0.75}"#,
            "--link",
            "https://runbooks.example.com/disk,Runbook, with comma",
            "--link",
            "https://grafana.example.com/d/1",
            "--image",
            "https://grafana.example.com/render/1.png,https://grafana.example.com/d/1,Disk graph",
            "--client",
            "CI",
            "--client-url",
            "https://ci.example.com/build/1",
        ])
        .await;
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let answer = stdout_json(&output);
    assert_eq!(answer["status"], "success");
    assert_eq!(answer["dedup_key"], "disk/db-1");
    assert_no_key(&output);

    let events = fx.sim.sim.events();
    assert_eq!(events.len(), 1);
    let request = &events[0];
    assert_eq!(request.path, "/v2/enqueue");
    assert_eq!(
        request.user_agent.as_deref(),
        Some("AlertHistory/1.0 (+github.com/ipiton/alert-history)")
    );
    let body = &request.body;
    assert_eq!(body["routing_key"], KEY);
    assert_eq!(body["event_action"], "trigger");
    assert_eq!(body["payload"]["timestamp"], "2026-11-29T08:42:58Z");
    assert_eq!(body["payload"]["custom_details"]["load"], 0.75);
    assert_eq!(body["links"][0]["text"], "Runbook, with comma");
    assert_eq!(body["images"][0]["alt"], "Disk graph");
    pagerbridge_testkit::schema::assert_valid_enqueue(body);
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledge_resolve_and_change_reach_their_endpoints() {
    let fx = fixture().await;
    let trigger = fx
        .send(&[
            "trigger",
            "--summary",
            "s",
            "--source",
            "h",
            "--severity",
            "info",
            "--dedup-key",
            "k1",
        ])
        .await;
    assert_eq!(trigger.status.code(), Some(0), "{trigger:?}");
    for action in ["acknowledge", "resolve"] {
        let output = fx.send(&[action, "--dedup-key", "k1"]).await;
        assert_eq!(output.status.code(), Some(0), "{output:?}");
        assert_eq!(stdout_json(&output)["dedup_key"], "k1");
    }
    let change = fx
        .send(&[
            "change",
            "--summary",
            "Deploy #220",
            "--source",
            "ci",
            "--link",
            "https://ci.example.com/220,Build",
        ])
        .await;
    assert_eq!(change.status.code(), Some(0), "{change:?}");
    let answer = stdout_json(&change);
    assert_eq!(answer["message"], "Change event processed");
    assert!(answer.get("dedup_key").is_none());

    let events = fx.sim.sim.events();
    let paths: Vec<&str> = events.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/v2/enqueue",
            "/v2/enqueue",
            "/v2/enqueue",
            "/v2/change/enqueue"
        ]
    );
    pagerbridge_testkit::schema::assert_valid_enqueue(&events[1].body);
    pagerbridge_testkit::schema::assert_valid_change(&events[3].body);
    let alerts = fx.sim.sim.alerts();
    assert_eq!(alerts.len(), 1);
    assert_eq!(
        serde_json::to_value(alerts[0].state).expect("state"),
        "resolved"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn server_errors_make_exactly_three_attempts_then_exit_4() {
    let fx = fixture().await;
    fx.sim.sim.set_faults(Faults {
        fail_rate: Some(1.0),
        ..Faults::default()
    });
    let output = fx
        .send(&[
            "trigger",
            "--summary",
            "s",
            "--source",
            "h",
            "--severity",
            "error",
            "--dedup-key",
            "k",
        ])
        .await;
    assert_eq!(output.status.code(), Some(4), "{output:?}");
    assert_eq!(fx.sim.sim.events().len(), 3);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("not delivered after 3 attempts"),
        "{stderr}"
    );
    assert_no_key(&output);
}

#[tokio::test(flavor = "multi_thread")]
async fn rejected_event_makes_one_attempt_then_exits_3() {
    let fx = fixture().await;
    fx.sim.sim.set_faults(Faults {
        force_status: Some(vec![400]),
        ..Faults::default()
    });
    let output = fx
        .send(&[
            "trigger",
            "--summary",
            "s",
            "--source",
            "h",
            "--severity",
            "error",
            "--dedup-key",
            "k",
        ])
        .await;
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    assert_eq!(fx.sim.sim.events().len(), 1);
    assert_eq!(stdout_json(&output)["status"], "invalid event");
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limited_until_attempts_run_out_exits_4() {
    let sim = spawn_on_loopback(Config {
        rate_limit: 1,
        ..Config::default()
    })
    .await
    .expect("simulator");
    let dir = tempfile::tempdir().expect("dir");
    let key_file = dir.path().join("k");
    std::fs::write(&key_file, KEY).expect("key");
    let fx = Fixture {
        sim,
        _dir: dir,
        key_file,
    };
    let args = [
        "trigger",
        "--summary",
        "s",
        "--source",
        "h",
        "--severity",
        "error",
        "--dedup-key",
        "k",
    ];
    assert_eq!(fx.send(&args).await.status.code(), Some(0));
    let output = fx.send(&args).await;
    assert_eq!(output.status.code(), Some(4), "{output:?}");
    assert_eq!(fx.sim.sim.stats().budget_violations, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn local_validation_errors_exit_2_and_send_nothing() {
    let fx = fixture().await;
    let cases: [&[&str]; 6] = [
        &[
            "trigger",
            "--summary",
            "s",
            "--source",
            "h",
            "--severity",
            "page",
        ],
        &[
            "trigger",
            "--summary",
            "s",
            "--source",
            " ",
            "--severity",
            "info",
        ],
        &[
            "trigger",
            "--summary",
            "s",
            "--source",
            "h",
            "--severity",
            "info",
            "--image",
            "http://insecure.example/x.png",
        ],
        &[
            "trigger",
            "--summary",
            "s",
            "--source",
            "h",
            "--severity",
            "info",
            "--custom-details",
            "[1,2]",
        ],
        &["resolve", "--dedup-key", &"k".repeat(256)],
        &["change", "--summary", "", "--link", "https://x.example"],
    ];
    for args in cases {
        let output = fx.send(args).await;
        assert_eq!(output.status.code(), Some(2), "{args:?}: {output:?}");
        assert!(!output.stderr.is_empty(), "{args:?} printed no reason");
    }
    assert!(fx.sim.sim.events().is_empty(), "nothing may be sent");
}

#[tokio::test(flavor = "multi_thread")]
async fn routing_key_problems_exit_2_without_showing_the_key() {
    let no_key = run(vec![
        "send".into(),
        "resolve".into(),
        "--dedup-key".into(),
        "k".into(),
        "--url".into(),
        "http://127.0.0.1:9".into(),
    ])
    .await;
    assert_eq!(no_key.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&no_key.stderr).contains("PAGERDUTY_ROUTING_KEY"));

    let dir = tempfile::tempdir().expect("dir");
    let bad = dir.path().join("bad");
    let bad_key = "not-a-valid-routing-key-secret!!";
    std::fs::write(&bad, bad_key).expect("write");
    let output = run(vec![
        "send".into(),
        "resolve".into(),
        "--dedup-key".into(),
        "k".into(),
        "--routing-key-file".into(),
        bad.display().to_string(),
    ])
    .await;
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("non-alphanumeric"), "{stderr}");
    assert!(!stderr.contains(bad_key), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_http_to_a_remote_host_exits_2() {
    let fx = fixture().await;
    let output = run(vec![
        "send".into(),
        "resolve".into(),
        "--dedup-key".into(),
        "k".into(),
        "--url".into(),
        "http://events.pagerduty.com".into(),
        "--routing-key-file".into(),
        fx.key_file.display().to_string(),
    ])
    .await;
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("loopback"));
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_prints_the_masked_body_and_sends_nothing() {
    let fx = fixture().await;
    let long_summary = "ü".repeat(2000);
    let output = fx
        .send(&[
            "trigger",
            "--summary",
            &long_summary,
            "--source",
            "h",
            "--severity",
            "warning",
            "--dry-run",
        ])
        .await;
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let body = stdout_json(&output);
    assert_eq!(body["routing_key"], "…0042");
    let summary = body["payload"]["summary"].as_str().expect("summary");
    assert_eq!(summary.chars().count(), 1024);
    assert!(summary.ends_with('…'));
    assert_no_key(&output);
    assert!(fx.sim.sim.events().is_empty());
}
