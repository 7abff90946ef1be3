//! `pagerbridge simulate`, the binary: its flags reach the simulator, it says where it listens,
//! refuses nonsense, and stops cleanly on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

const KEY: &str = "0123456789abcdef0123456789abfake"; // fake test key

/// The simulator on a port of the kernel's choosing, and the base URL it printed.
fn start(args: &[&str]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pagerbridge"))
        .args(["simulate", "--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pagerbridge simulate starts");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    stderr
        .read_line(&mut line)
        .expect("the simulator says where it listens");
    // Keep reading, so that its later log lines never meet a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    let url = line
        .split_whitespace()
        .find(|word| word.starts_with("http://127.0.0.1:"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned();
    (child, url)
}

fn trigger(n: usize) -> serde_json::Value {
    json!({
        "routing_key": KEY,
        "event_action": "trigger",
        "payload": {"summary": format!("disk full {n}"), "source": "db-1", "severity": "error"}
    })
}

/// SIGTERM, then the exit status (at most 10 s).
fn terminate(mut child: Child) -> std::process::ExitStatus {
    let pid = child.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status();
    assert!(sent.is_ok_and(|s| s.success()), "could not send SIGTERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the simulator did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn its_rate_limit_flag_reaches_the_simulator_and_sigterm_stops_it() {
    let (child, url) = start(&["--rate-limit", "2", "--rate-window", "60s"]);
    let http = reqwest::Client::new();
    let mut statuses = Vec::new();
    for n in 0..3 {
        let answer = http
            .post(format!("{url}/v2/enqueue"))
            .json(&trigger(n))
            .send()
            .await
            .expect("the simulator answers");
        statuses.push(answer.status().as_u16());
    }
    assert_eq!(statuses, [202, 202, 429], "2 per 60 s, as the flags said");
    let alerts: serde_json::Value = http
        .get(format!("{url}/_simulator/alerts"))
        .send()
        .await
        .expect("inspection answers")
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        alerts.as_array().map(Vec::len),
        Some(2),
        "the 429 was not ingested: {alerts}"
    );
    assert!(terminate(child).success());
}

#[test]
fn a_fail_rate_outside_0_to_1_is_a_usage_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_pagerbridge"))
        .args(["simulate", "--listen", "127.0.0.1:0", "--fail-rate", "1.5"])
        .output()
        .expect("pagerbridge runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("1.5 is not between 0 and 1"), "{stderr}");
}

#[test]
fn a_port_in_use_is_an_error_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let addr = taken.local_addr().expect("address").to_string();
    let output = Command::new(env!("CARGO_BIN_EXE_pagerbridge"))
        .args(["simulate", "--listen", &addr])
        .output()
        .expect("pagerbridge runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
}
