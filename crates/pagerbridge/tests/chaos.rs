//! Chaos: the real `pagerbridge serve` binary, a real SQLite file and the PagerDuty simulator
//! over loopback, under `kill -9` at random moments, a PagerDuty outage, 429 storms with
//! flapping 5xx, a PagerDuty slower than the client timeout (one that drops the late requests,
//! one that takes them in but answers too late), and a full disk (tmpfs; needs root, skipped
//! loudly without it unless `CI` is set).
//!
//! Each scenario ends with one line of figures, `CHAOS <name>: accepted=… lost=0 …`, printed
//! to stdout and stderr and appended to `target/chaos-report.txt` (nextest shows the output of
//! passing tests only with `--no-capture`), and then asserts on those figures.
//!
//! The figures come from the simulator's request log, i.e. from what PagerDuty would have
//! seen: `lost` counts accepted lifecycles missing a 202'd trigger or resolve; `out_of_order`
//! counts keys whose first 202'd resolve precedes their first 202'd trigger or that got a
//! trigger after their resolve; `duplicates` counts 202s beyond one per (key, action);
//! `phantom` counts keys PagerDuty got that no sender was ever told were accepted.
//!
//! The kill scenario's random delays come from a seeded generator; the seed is printed, and
//! `CHAOS_SEED=<n>` replays it.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use common::{ROUTING_KEY, Setup, delivered, expected_dedup_key, simulator, wait_until};
use pagerbridge_testkit::needs;
use pagerduty_simulator::{Config as SimConfig, Faults, SpawnedSimulator};
use serde_json::{Value, json};

const NATIVE: &str = "/api/v1/alerts";

// ----------------------------------------------------------------------------------------
// Figures and the report
// ----------------------------------------------------------------------------------------

/// Appends one line to the report, and prints it to stdout and stderr.
fn report(line: &str) {
    println!("{line}");
    eprintln!("{line}");
    let path = report_path();
    let stamped = format!("{} {line}\n", jiff::Timestamp::now());
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut file| file.write_all(stamped.as_bytes()));
    if let Err(error) = written {
        eprintln!("could not append to {}: {error}", path.display());
    }
}

/// `target/chaos-report.txt`: the parent of `CARGO_TARGET_TMPDIR` (`target/tmp`) is the
/// target directory.
fn report_path() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("chaos-report.txt")
}

/// What PagerDuty saw, measured against what senders were told was accepted.
#[derive(Debug, Default)]
struct Tally {
    /// Accepted events: (key, action) pairs a sender got a 2xx for.
    accepted: usize,
    /// Accepted keys (alert lifecycles).
    lifecycles: usize,
    /// Accepted events PagerDuty answered 202 at least once.
    delivered: usize,
    /// Lifecycles missing an accepted action.
    lost: usize,
    /// 202s beyond one per (key, action).
    duplicates: usize,
    /// Most 202s for a single (key, action).
    max_copies: usize,
    /// Keys with a resolve before their trigger, or a trigger after their resolve.
    out_of_order: usize,
    /// Keys PagerDuty got that were never accepted.
    phantom: usize,
    /// A few offending keys with what PagerDuty got for them, for the failure message.
    evidence: Vec<String>,
}

impl Tally {
    /// `log` is the simulator's 202-answered alert events in arrival order, `accepted` maps
    /// each accepted key to the actions accepted for it, in order.
    fn of(log: &[(String, String)], accepted: &BTreeMap<String, Vec<&'static str>>) -> Tally {
        let mut by_key: HashMap<&str, Vec<&str>> = HashMap::new();
        for (key, action) in log {
            by_key.entry(key).or_default().push(action);
        }
        let mut tally = Tally {
            lifecycles: accepted.len(),
            ..Tally::default()
        };
        let nothing = Vec::new();
        for (key, expected) in accepted {
            let seen = by_key.get(key.as_str()).unwrap_or(&nothing);
            let mut missing = false;
            for action in expected {
                tally.accepted += 1;
                let copies = seen.iter().filter(|a| *a == action).count();
                if copies == 0 {
                    missing = true;
                } else {
                    tally.delivered += 1;
                    tally.duplicates += copies - 1;
                    tally.max_copies = tally.max_copies.max(copies);
                }
            }
            let first = |action: &str| seen.iter().position(|a| *a == action);
            let last_trigger = seen.iter().rposition(|a| *a == "trigger");
            let out_of_order = match (first("trigger"), first("resolve")) {
                (Some(trigger), Some(resolve)) => {
                    resolve < trigger || last_trigger.is_some_and(|t| t > resolve)
                }
                _ => false,
            };
            if missing {
                tally.lost += 1;
            }
            if out_of_order {
                tally.out_of_order += 1;
            }
            if (missing || out_of_order) && tally.evidence.len() < 5 {
                tally.evidence.push(format!(
                    "{key}: accepted {expected:?}, PagerDuty got {seen:?}"
                ));
            }
        }
        for (key, seen) in &by_key {
            if !accepted.contains_key(*key) {
                tally.phantom += 1;
                if tally.evidence.len() < 5 {
                    tally
                        .evidence
                        .push(format!("{key}: never accepted, PagerDuty got {seen:?}"));
                }
            }
        }
        tally
    }

    fn figures(&self) -> String {
        format!(
            "accepted={} lifecycles={} delivered={} lost={} duplicates={} max_copies={} \
             out_of_order={} phantom={}",
            self.accepted,
            self.lifecycles,
            self.delivered,
            self.lost,
            self.duplicates,
            self.max_copies,
            self.out_of_order,
            self.phantom
        )
    }

    /// Nothing lost, nothing out of order, nothing PagerDuty should not have.
    fn assert_sound(&self, scenario: &str) {
        assert!(
            self.lost == 0 && self.out_of_order == 0 && self.phantom == 0,
            "{scenario}: {}\nevidence:\n{}",
            self.figures(),
            self.evidence.join("\n")
        );
    }
}

// ----------------------------------------------------------------------------------------
// Alerts and the sender
// ----------------------------------------------------------------------------------------

/// A batch of native alerts named `{prefix}-{i}` (labels as `common::native_alerts`), with a
/// description of `pad` bytes to make the request's transaction bigger.
fn batch(prefix: &str, n: usize, status: &str, pad: usize) -> Vec<u8> {
    let alerts: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "status": status,
                "labels": {
                    "alertname": format!("{prefix}-{i}"),
                    "severity": "error",
                    "instance": format!("host-{i}"),
                },
                "annotations": {
                    "summary": format!("{prefix} number {i}"),
                    "description": "d".repeat(pad),
                },
                "startsAt": "2026-11-29T10:00:00Z",
            })
        })
        .collect();
    serde_json::to_vec(&json!({ "alerts": alerts })).expect("json")
}

/// The dedup keys of `batch(prefix, n, …)`.
fn batch_keys(prefix: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            expected_dedup_key(&[
                ("alertname", &format!("{prefix}-{i}")),
                ("instance", &format!("host-{i}")),
                ("severity", "error"),
            ])
        })
        .collect()
}

fn action_of(status: &str) -> &'static str {
    match status {
        "firing" => "trigger",
        "resolved" => "resolve",
        other => panic!("no action for {other}"),
    }
}

/// One answer from the bridge.
#[derive(Debug)]
struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: Value,
}

/// Posts like Alertmanager does: retries until a 2xx, following the bridge to whatever
/// address it currently listens on. Records what was accepted, for the tally.
#[derive(Clone)]
struct Sender {
    http: reqwest::Client,
    addr: Arc<Mutex<SocketAddr>>,
    accepted: Arc<Mutex<BTreeMap<String, Vec<&'static str>>>>,
    /// Answers that are neither 2xx nor 503: a bug whatever the chaos.
    unexpected: Arc<Mutex<Vec<String>>>,
    /// Posts that were not accepted at the first try.
    retried: Arc<Mutex<usize>>,
}

impl Sender {
    fn new(addr: SocketAddr) -> Self {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("http client");
        Self {
            http,
            addr: Arc::new(Mutex::new(addr)),
            accepted: Arc::default(),
            unexpected: Arc::default(),
            retried: Arc::default(),
        }
    }

    fn point_at(&self, addr: SocketAddr) {
        *self.addr.lock().expect("addr") = addr;
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr.lock().expect("addr"))
    }

    async fn post_once(&self, path: &str, body: &[u8]) -> Result<Answer, reqwest::Error> {
        let response = self
            .http
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .await?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.json().await.unwrap_or(Value::Null);
        Ok(Answer {
            status,
            retry_after,
            body,
        })
    }

    async fn get(&self, path: &str) -> Option<(u16, String)> {
        let response = self.http.get(self.url(path)).send().await.ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.unwrap_or_default()))
    }

    /// Posts `body` until it is accepted (2xx); connection errors and 503 are retried, any
    /// other answer is recorded as unexpected and given up on. Returns whether it was
    /// accepted; records `keys` × `action` as accepted if so.
    async fn post_until_accepted(
        &self,
        body: &[u8],
        keys: &[String],
        action: &'static str,
        deadline: Instant,
    ) -> bool {
        let mut tries = 0;
        loop {
            assert!(
                Instant::now() < deadline,
                "a post was not accepted in time ({tries} tries)"
            );
            tries += 1;
            if tries == 2 {
                *self.retried.lock().expect("retried") += 1;
            }
            match self.post_once(NATIVE, body).await {
                Ok(answer) if (200..300).contains(&answer.status) => {
                    self.record(keys, action);
                    return true;
                }
                Ok(answer) if answer.status == 503 => {}
                Ok(answer) => {
                    self.unexpected
                        .lock()
                        .expect("unexpected")
                        .push(format!("{answer:?}"));
                    return false;
                }
                // Refused, reset or cut short while the bridge is down: normal, retry.
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn record(&self, keys: &[String], action: &'static str) {
        let mut accepted = self.accepted.lock().expect("accepted");
        for key in keys {
            accepted.entry(key.clone()).or_default().push(action);
        }
    }

    fn accepted(&self) -> BTreeMap<String, Vec<&'static str>> {
        self.accepted.lock().expect("accepted").clone()
    }

    fn unexpected(&self) -> Vec<String> {
        self.unexpected.lock().expect("unexpected").clone()
    }

    fn retried(&self) -> usize {
        *self.retried.lock().expect("retried")
    }

    /// `pagerbridge_queue_depth` of the default target, if the bridge answers.
    async fn queue_depth(&self) -> Option<u64> {
        let (status, text) = self.get("/metrics").await?;
        if status != 200 {
            return None;
        }
        text.lines()
            .find_map(|line| line.strip_prefix("pagerbridge_queue_depth{target=\"default\"} "))
            .and_then(|value| value.trim().parse().ok())
    }
}

/// Waits until every accepted event reached PagerDuty and the bridge's queue is empty (so no
/// late resend can still change the figures), then tallies.
async fn settle(sim: &SpawnedSimulator, sender: &Sender, timeout: Duration) -> Tally {
    let accepted = sender.accepted();
    let deadline = Instant::now() + timeout;
    loop {
        let tally = Tally::of(&delivered(sim), &accepted);
        let depth = sender.queue_depth().await;
        if tally.lost == 0 && depth == Some(0) {
            return tally;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for every accepted event to be delivered: {} \
             queue_depth={depth:?}\nevidence:\n{}",
            tally.figures(),
            tally.evidence.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Lines of a bridge's log that speak of a panic.
fn panics(logs: &[String]) -> Vec<String> {
    logs.iter()
        .filter(|line| line.contains("panicked"))
        .cloned()
        .collect()
}

/// splitmix64: small, seeded, good enough to pick delays.
struct Rng(u64);

impl Rng {
    /// From `CHAOS_SEED` if set, else from the clock.
    fn from_env_or_clock() -> (Rng, u64) {
        let seed = std::env::var("CHAOS_SEED")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(42)
            });
        (Rng(seed), seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `low..=high`.
    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }
}

// ----------------------------------------------------------------------------------------
// A fallback webhook
// ----------------------------------------------------------------------------------------

#[derive(Clone, Default)]
struct Hook {
    received: Arc<Mutex<Vec<Value>>>,
}

impl Hook {
    async fn start() -> (Hook, String) {
        let hook = Hook::default();
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(hook_receive))
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
        self.received.lock().expect("hook").clone()
    }
}

async fn hook_receive(State(hook): State<Hook>, Json(body): Json<Value>) -> StatusCode {
    hook.received.lock().expect("hook").push(body);
    StatusCode::OK
}

// ----------------------------------------------------------------------------------------
// 1. kill -9 at random moments
// ----------------------------------------------------------------------------------------

/// 300 alerts × (firing, resolved) in batches of 5, posted by a sender that retries like
/// Alertmanager, while the bridge is killed with SIGKILL at random moments and restarted
/// (on a new port) each time; PagerDuty fails 10 % of requests, and its budget (100 per second,
/// the bridge's too) is about what limits delivery.
#[tokio::test(flavor = "multi_thread")]
async fn chaos_kill9_at_random_moments() {
    const BATCHES: usize = 60;
    const PER_BATCH: usize = 5;
    const MIN_KILLS: usize = 5;
    const MAX_KILLS: usize = 12;
    let started = Instant::now();
    let (mut rng, seed) = Rng::from_env_or_clock();
    eprintln!("chaos kill9: seed {seed} (CHAOS_SEED={seed} replays the kill delays)");
    // A budget that is about the bottleneck (~670 requests at 100 per second), on both sides: a
    // restart must not let the bridge burst past what it already spent.
    let sim = simulator(SimConfig {
        rate_limit: 100,
        rate_window: Duration::from_secs(1),
        fail_rate: 0.1,
        ..SimConfig::default()
    })
    .await;
    let setup = Setup::new(&sim.base_url(), (100, "1s"), "", "");
    let mut bridge = setup.start().await;
    let sender = Sender::new(bridge.addr);
    let deadline = Instant::now() + Duration::from_secs(40);

    let posting = tokio::spawn({
        let sender = sender.clone();
        async move {
            // Firing batch b, then resolved batch b-2: triggers and resolves interleave in
            // the outbox, and a resolve is posted only after its firing was accepted.
            for b in 0..BATCHES + 2 {
                for (status, n) in [("firing", b), ("resolved", b.wrapping_sub(2))] {
                    if n < BATCHES {
                        let prefix = format!("Kill{n}");
                        let keys = batch_keys(&prefix, PER_BATCH);
                        let body = batch(&prefix, PER_BATCH, status, 0);
                        sender
                            .post_until_accepted(&body, &keys, action_of(status), deadline)
                            .await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(60)).await;
            }
        }
    });

    let mut kills = 0;
    let mut delays = Vec::new();
    let mut panicked = Vec::new();
    while kills < MIN_KILLS || (!posting.is_finished() && kills < MAX_KILLS) {
        let delay = rng.between(150, 600);
        delays.push(delay);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        panicked.extend(panics(&bridge.logs()));
        bridge.kill9();
        kills += 1;
        bridge = setup.start().await;
        sender.point_at(bridge.addr);
    }
    posting.await.expect("the sender finished");
    let tally = settle(&sim, &sender, Duration::from_secs(45)).await;
    panicked.extend(panics(&bridge.logs()));
    let stats = sim.sim.stats();
    report(&format!(
        "CHAOS kill9: {} budget_violations={} kills={kills} retried_posts={} \
         pd_failures={} seed={seed} delays_ms={delays:?} secs={:.1}",
        tally.figures(),
        stats.budget_violations,
        sender.retried(),
        stats.forced_or_failed,
        started.elapsed().as_secs_f64()
    ));

    assert_eq!(
        sender.unexpected(),
        Vec::<String>::new(),
        "answers besides 2xx/503"
    );
    assert_eq!(panicked, Vec::<String>::new(), "the bridge panicked");
    assert_eq!(
        tally.lifecycles,
        BATCHES * PER_BATCH,
        "every lifecycle accepted"
    );
    tally.assert_sound("kill9");
    // One lane sends one request at a time: each kill can cut at most one send off its commit.
    assert!(
        tally.duplicates <= kills,
        "more duplicates than kills: {}",
        tally.figures()
    );
    assert_eq!(stats.budget_violations, 0);
}

// ----------------------------------------------------------------------------------------
// 2. PagerDuty outage, then recovery
// ----------------------------------------------------------------------------------------

/// PagerDuty answers 503 to everything for 5 s while alerts keep arriving: the fallback
/// webhook hears of the failing events, and once PagerDuty is back everything is delivered,
/// in per-incident order, within the budget (20 per 2 s, on both sides).
#[tokio::test(flavor = "multi_thread")]
async fn chaos_pagerduty_outage_then_recovery() {
    const BATCHES: usize = 10;
    const PER_BATCH: usize = 3;
    let started = Instant::now();
    let sim = simulator(SimConfig {
        rate_limit: 20,
        rate_window: Duration::from_secs(2),
        ..SimConfig::default()
    })
    .await;
    let (hook, hook_url) = Hook::start().await;
    let fallback = format!("fallback:\n  url: \"{hook_url}\"\n  after: \"1s\"\n  timeout: \"2s\"");
    let setup = Setup::new(&sim.base_url(), (20, "2s"), &fallback, "");
    let bridge = setup.start().await;
    let sender = Sender::new(bridge.addr);
    sim.sim.set_faults(Faults {
        outage_seconds: Some(5),
        ..Faults::default()
    });
    let outage_ends = Instant::now() + Duration::from_secs(5);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut posted_during_outage = 0;
    for b in 0..BATCHES + 2 {
        for (status, n) in [("firing", b), ("resolved", b.wrapping_sub(2))] {
            if n < BATCHES {
                let prefix = format!("Outage{n}");
                let keys = batch_keys(&prefix, PER_BATCH);
                let body = batch(&prefix, PER_BATCH, status, 0);
                sender
                    .post_until_accepted(&body, &keys, action_of(status), deadline)
                    .await;
                posted_during_outage += usize::from(Instant::now() < outage_ends);
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    wait_until("a failing notice", Duration::from_secs(20), || {
        hook.received().iter().any(|n| n["kind"] == "failing")
    })
    .await;
    let tally = settle(&sim, &sender, Duration::from_secs(45)).await;
    let stats = sim.sim.stats();
    let notices = hook.received();
    let failing = notices.iter().filter(|n| n["kind"] == "failing").count();
    let outage_503 = stats
        .by_path
        .get("/v2/enqueue")
        .and_then(|by_status| by_status.get("503"))
        .copied()
        .unwrap_or(0);
    report(&format!(
        "CHAOS outage: {} budget_violations={} outage_503s={outage_503} \
         failing_notices={failing} other_notices={} posts_during_outage={posted_during_outage}/{} \
         retried_posts={} secs={:.1}",
        tally.figures(),
        stats.budget_violations,
        notices.len() - failing,
        2 * BATCHES,
        sender.retried(),
        started.elapsed().as_secs_f64()
    ));

    assert!(posted_during_outage > 0, "alerts arrived during the outage");
    assert_eq!(
        sender.unexpected(),
        Vec::<String>::new(),
        "answers besides 2xx"
    );
    assert_eq!(sender.retried(), 0, "ingest does not depend on PagerDuty");
    assert_eq!(panics(&bridge.logs()), Vec::<String>::new());
    tally.assert_sound("outage");
    assert_eq!(tally.duplicates, 0, "no crash, so no duplicate");
    assert_eq!(stats.budget_violations, 0, "{stats:?}");
    assert!(outage_503 > 0, "the bridge tried during the outage");
    assert!(failing > 0);
    assert_eq!(failing, notices.len(), "only failing notices: {notices:#?}");
    for notice in &notices {
        assert!(!notice.to_string().contains(ROUTING_KEY), "{notice}");
    }
}

// ----------------------------------------------------------------------------------------
// 3. 429 storms and flapping 5xx
// ----------------------------------------------------------------------------------------

/// A budget of 10 per 2 s on both sides, 30 % of requests failing with 500, and runs of
/// forced 429s (first without, then with `Retry-After`) mixed with 5xx: no budget violation,
/// nothing dropped, order kept.
#[tokio::test(flavor = "multi_thread")]
async fn chaos_429_storms_and_flapping_5xx() {
    const ALERTS: usize = 12;
    const PER_BATCH: usize = 4;
    let started = Instant::now();
    let sim = simulator(SimConfig {
        rate_limit: 10,
        rate_window: Duration::from_secs(2),
        ..SimConfig::default()
    })
    .await;
    let first_storm = vec![429, 429, 429, 500, 429, 502, 429, 429];
    let second_storm = vec![429, 429, 503, 429, 429, 500, 429];
    sim.sim.set_faults(Faults {
        fail_rate: Some(0.3),
        force_status: Some(first_storm.clone()),
        ..Faults::default()
    });
    let setup = Setup::new(&sim.base_url(), (10, "2s"), "", "");
    let bridge = setup.start().await;
    let sender = Sender::new(bridge.addr);
    let deadline = Instant::now() + Duration::from_secs(30);
    let post = |status: &'static str| {
        let sender = sender.clone();
        async move {
            for b in 0..ALERTS / PER_BATCH {
                let prefix = format!("Storm{b}");
                let keys = batch_keys(&prefix, PER_BATCH);
                let body = batch(&prefix, PER_BATCH, status, 0);
                sender
                    .post_until_accepted(&body, &keys, action_of(status), deadline)
                    .await;
            }
        }
    };
    post("firing").await;
    let storm_over = || sim.sim.faults().force_status.is_some_and(|q| q.is_empty());
    wait_until("the first 429 storm", Duration::from_secs(20), storm_over).await;
    let second_from = sim.sim.events().len();
    sim.sim.set_faults(Faults {
        retry_after_seconds: Some(1),
        force_status: Some(second_storm.clone()),
        ..Faults::default()
    });
    post("resolved").await;
    wait_until("the second 429 storm", Duration::from_secs(20), storm_over).await;
    let tally = settle(&sim, &sender, Duration::from_secs(50)).await;
    let stats = sim.sim.stats();
    let events = sim.sim.events();
    let throttled = events.iter().filter(|e| e.status == 429).count();
    // After a 429 the lane pauses: `Retry-After` (honoured in full), else 5 s doubling capped
    // by `max_backoff` (500 ms in the harness), so the next request comes >= 500 ms later, and
    // new alerts arriving meanwhile must not cut the pause short.
    let at = |i: usize| {
        events[i]
            .received_at
            .parse::<jiff::Timestamp>()
            .expect("received_at")
    };
    let gap_after = |i: usize| at(i + 1).duration_since(at(i)).as_millis() as i64;
    let gaps: Vec<(usize, i64)> = (0..events.len().saturating_sub(1))
        .filter(|&i| events[i].status == 429)
        .map(|i| (i, gap_after(i)))
        .collect();
    let cut_short = gaps.iter().filter(|(_, gap)| *gap < 480).count();
    let min_with_retry_after = gaps
        .iter()
        .filter(|(i, _)| *i >= second_from)
        .map(|(_, gap)| *gap)
        .min();
    report(&format!(
        "CHAOS storms: {} budget_violations={} requests={} answered_429={throttled} \
         forced_or_failed={} pauses_after_429_under_480ms={cut_short}/{} \
         min_gap_after_retry_after_1s_ms={} secs={:.1}",
        tally.figures(),
        stats.budget_violations,
        stats.requests,
        stats.forced_or_failed,
        gaps.len(),
        min_with_retry_after.unwrap_or(-1),
        started.elapsed().as_secs_f64()
    ));

    assert_eq!(
        sender.unexpected(),
        Vec::<String>::new(),
        "answers besides 2xx"
    );
    assert_eq!(panics(&bridge.logs()), Vec::<String>::new());
    assert_eq!(tally.lifecycles, ALERTS);
    tally.assert_sound("storms");
    assert_eq!(tally.duplicates, 0, "no crash, so no duplicate");
    assert_eq!(stats.budget_violations, 0, "{stats:?}");
    assert_eq!(cut_short, 0, "pauses after a 429 were cut short: {gaps:?}");
    assert!(
        min_with_retry_after.is_some_and(|gap| gap >= 980),
        "Retry-After: 1 was not honoured: {gaps:?}"
    );
    assert!(
        throttled
            >= first_storm
                .iter()
                .chain(&second_storm)
                .filter(|s| **s == 429)
                .count(),
        "the storms happened: {stats:?}"
    );
}

// ----------------------------------------------------------------------------------------
// 4. PagerDuty slower than the client timeout
// ----------------------------------------------------------------------------------------

/// The bridge gives up on PagerDuty after 300 ms while PagerDuty (the simulator's latency)
/// takes 500 ms, for a while: every event is delivered once PagerDuty is fast again, with at
/// most one duplicate each. (The simulator sleeps before it handles a request and is cancelled
/// when the client hangs up, so here it ingests none of the timed-out requests; the next
/// scenario plays a PagerDuty that does.)
#[tokio::test(flavor = "multi_thread")]
async fn chaos_pagerduty_slower_than_the_timeout() {
    const ALERTS: usize = 10;
    let started = Instant::now();
    let sim = simulator(SimConfig::default()).await;
    sim.sim.set_faults(Faults {
        latency_ms: Some(500),
        ..Faults::default()
    });
    let setup = Setup::new(&sim.base_url(), (120, "60s"), "", "").with_pagerduty_timeout("300ms");
    let bridge = setup.start().await;
    let sender = Sender::new(bridge.addr);
    let deadline = Instant::now() + Duration::from_secs(20);
    let keys = batch_keys("Slow", ALERTS);
    for status in ["firing", "resolved"] {
        let body = batch("Slow", ALERTS, status, 0);
        sender
            .post_until_accepted(&body, &keys, action_of(status), deadline)
            .await;
    }
    let timeouts = || {
        bridge
            .logs()
            .iter()
            .filter(|l| l.contains("the event keeps its place") && l.contains("did not answer"))
            .count()
    };
    wait_until(
        "the bridge to time out a few times",
        Duration::from_secs(20),
        || timeouts() >= 3,
    )
    .await;
    let slow_for = started.elapsed();
    sim.sim.set_faults(Faults {
        latency_ms: Some(0),
        ..Faults::default()
    });
    let tally = settle(&sim, &sender, Duration::from_secs(30)).await;
    let stats = sim.sim.stats();
    report(&format!(
        "CHAOS slow: {} budget_violations={} timeouts={} slow_phase_ms={} \
         pd_requests_logged={} secs={:.1}",
        tally.figures(),
        stats.budget_violations,
        timeouts(),
        slow_for.as_millis(),
        stats.requests,
        started.elapsed().as_secs_f64()
    ));

    assert_eq!(
        sender.unexpected(),
        Vec::<String>::new(),
        "answers besides 2xx"
    );
    assert_eq!(panics(&bridge.logs()), Vec::<String>::new());
    assert_eq!(tally.lifecycles, ALERTS);
    tally.assert_sound("slow");
    assert!(
        tally.max_copies <= 2,
        "at most one duplicate per event: {}",
        tally.figures()
    );
}

/// A PagerDuty that takes an event in at once but answers only after `delay` the first time
/// it sees each (dedup_key, action): a proxy in front of the simulator. The simulator itself
/// cannot play this part, since it sleeps *before* handling a request and is cancelled when
/// the client gives up, so it never ingests a request whose answer came too late.
#[derive(Clone)]
struct LateAnswers {
    upstream: String,
    http: reqwest::Client,
    delay: Duration,
    seen: Arc<Mutex<std::collections::HashSet<(String, String)>>>,
    late: Arc<Mutex<usize>>,
}

impl LateAnswers {
    async fn start(upstream: String, delay: Duration) -> (LateAnswers, String) {
        let proxy = LateAnswers {
            upstream,
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("http client"),
            delay,
            seen: Arc::default(),
            late: Arc::default(),
        };
        let app = axum::Router::new()
            .route("/v2/enqueue", axum::routing::post(late_answer))
            .with_state(proxy.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (proxy, url)
    }

    fn late(&self) -> usize {
        *self.late.lock().expect("late")
    }
}

async fn late_answer(
    State(proxy): State<LateAnswers>,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let id = (
        event["dedup_key"].as_str().unwrap_or_default().to_owned(),
        event["event_action"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    );
    let first = proxy.seen.lock().expect("seen").insert(id);
    // PagerDuty takes the event in now, whatever happens to the answer.
    let answer = proxy
        .http
        .post(format!("{}/v2/enqueue", proxy.upstream))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await;
    let (status, bytes) = match answer {
        Ok(answer) => (
            answer.status().as_u16(),
            answer.bytes().await.unwrap_or_default(),
        ),
        Err(_) => (502, axum::body::Bytes::new()),
    };
    if first {
        *proxy.late.lock().expect("late") += 1;
        tokio::time::sleep(proxy.delay).await;
    }
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    (status, [("content-type", "application/json")], bytes).into_response()
}

/// The client timeout is 300 ms and PagerDuty takes each event in but answers its first
/// request for it only after 500 ms: each event is sent again after its timeout, so PagerDuty
/// gets it twice. Every event is delivered, in order, with at most one duplicate each.
#[tokio::test(flavor = "multi_thread")]
async fn chaos_pagerduty_answers_after_the_timeout() {
    const ALERTS: usize = 8;
    let started = Instant::now();
    let sim = simulator(SimConfig::default()).await;
    let (proxy, url) = LateAnswers::start(sim.base_url(), Duration::from_millis(500)).await;
    let setup = Setup::new(&url, (120, "60s"), "", "").with_pagerduty_timeout("300ms");
    let bridge = setup.start().await;
    let sender = Sender::new(bridge.addr);
    let deadline = Instant::now() + Duration::from_secs(20);
    let keys = batch_keys("Late", ALERTS);
    for status in ["firing", "resolved"] {
        let body = batch("Late", ALERTS, status, 0);
        sender
            .post_until_accepted(&body, &keys, action_of(status), deadline)
            .await;
    }
    let tally = settle(&sim, &sender, Duration::from_secs(40)).await;
    let timeouts = bridge
        .logs()
        .iter()
        .filter(|l| l.contains("the event keeps its place") && l.contains("did not answer"))
        .count();
    let stats = sim.sim.stats();
    report(&format!(
        "CHAOS late: {} budget_violations={} timeouts={timeouts} answered_late={} secs={:.1}",
        tally.figures(),
        stats.budget_violations,
        proxy.late(),
        started.elapsed().as_secs_f64()
    ));

    assert_eq!(
        sender.unexpected(),
        Vec::<String>::new(),
        "answers besides 2xx"
    );
    assert_eq!(panics(&bridge.logs()), Vec::<String>::new());
    assert_eq!(tally.lifecycles, ALERTS);
    tally.assert_sound("late");
    assert!(
        tally.max_copies <= 2,
        "at most one duplicate per event: {}",
        tally.figures()
    );
    assert!(
        tally.duplicates <= timeouts,
        "a duplicate only where an answer came too late: {}",
        tally.figures()
    );
    assert!(tally.duplicates > 0, "the late answers made duplicates");
}

// ----------------------------------------------------------------------------------------
// 5. Storage failure: a full disk
// ----------------------------------------------------------------------------------------

/// A tmpfs mounted for the test, unmounted when dropped (also on panic).
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let output = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if output.status.success() {
            Ok(Tmpfs {
                dir: dir.to_owned(),
            })
        } else {
            Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = std::process::Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.dir)
                .status();
        }
    }
}

/// Writes `path` until the file system is full.
fn fill(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).expect("filler");
    let mut written = 0u64;
    for chunk in [1 << 16, 1 << 12, 1 << 9, 1] {
        let bytes = vec![0xA5u8; chunk];
        loop {
            match file.write(&bytes) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
    }
    let _ = file.sync_all();
    written
}

/// The bridge's SQLite file on a 16 MiB tmpfs (room for the database and SQLite's WAL, which
/// the checkpointer keeps to a few MiB under a trickle of posts) that is then filled, while PagerDuty is down so
/// that what is accepted stays queued: ingest must answer 503 (`storage_unavailable`,
/// `Retry-After`) and store nothing of a refused request. Once space is freed, the same
/// process accepts posts again; then it is killed (-9) and restarted, PagerDuty comes back,
/// and everything that ever got a 2xx is delivered, and nothing that got a 503.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs tmpfs"]
async fn chaos_storage_full_on_a_tmpfs() {
    needs::tmpfs();
    const PER_BATCH: usize = 10;
    const FULL_POSTS: usize = 12;
    let started = Instant::now();
    let sim = simulator(SimConfig {
        rate_limit: 0,
        ..SimConfig::default()
    })
    .await;
    let setup = Setup::new(&sim.base_url(), (100_000, "60s"), "", "");
    let data = setup.db_path().parent().expect("data dir").to_owned();
    let tmpfs = Tmpfs::mount(&data, "16M")
        .unwrap_or_else(|error| panic!("cannot mount a tmpfs at {}: {error}", data.display()));
    let mut bridge = setup.start().await;
    let sender = Sender::new(bridge.addr);
    let deadline = Instant::now() + Duration::from_secs(45);

    // Warm up: the bridge works on the tmpfs.
    let body = batch("Before", PER_BATCH, "firing", 200);
    let keys = batch_keys("Before", PER_BATCH);
    sender
        .post_until_accepted(&body, &keys, "trigger", deadline)
        .await;
    settle(&sim, &sender, Duration::from_secs(20)).await;

    // PagerDuty goes down, so whatever is accepted from now on stays in the outbox.
    sim.sim.set_faults(Faults {
        outage_seconds: Some(600),
        ..Faults::default()
    });
    // Fill the disk, then post: every answer must be 2xx (there was room after all) or 503
    // with `storage_unavailable` and `Retry-After`.
    let filler = tmpfs.dir.join("filler");
    let filled = fill(&filler);
    let mut refused: Vec<(Vec<u8>, Vec<String>)> = Vec::new();
    let mut bad_503 = Vec::new();
    let mut accepted_while_full = 0;
    for b in 0..FULL_POSTS {
        let prefix = format!("Full{b}");
        let body = batch(&prefix, PER_BATCH, "firing", 2000);
        let keys = batch_keys(&prefix, PER_BATCH);
        match sender.post_once(NATIVE, &body).await {
            Ok(answer) if (200..300).contains(&answer.status) => {
                sender.record(&keys, "trigger");
                accepted_while_full += 1;
            }
            Ok(answer) if answer.status == 503 => {
                if answer.body["error"] != "storage_unavailable" || answer.retry_after.is_none() {
                    bad_503.push(format!("{answer:?}"));
                }
                refused.push((body, keys));
            }
            Ok(answer) => sender
                .unexpected
                .lock()
                .expect("unexpected")
                .push(format!("{answer:?}")),
            Err(error) => sender
                .unexpected
                .lock()
                .expect("unexpected")
                .push(format!("no answer: {error}")),
        }
    }
    let ready_while_full = sender.get("/readyz").await.map(|(status, _)| status);
    let alive_while_full = sender.get("/healthz").await.map(|(status, _)| status);

    // Free the space: the same process accepts posts again, without a restart.
    std::fs::remove_file(&filler).expect("remove the filler");
    let body = batch("After", PER_BATCH, "firing", 200);
    let keys = batch_keys("After", PER_BATCH);
    let recovered = sender
        .post_until_accepted(&body, &keys, "trigger", deadline)
        .await;
    let ready_after = sender.get("/readyz").await.map(|(status, _)| status);
    let mut logs = bridge.logs();

    // A crash now loses nothing that got a 2xx, full disk or not.
    bridge.kill9();
    bridge = setup.start().await;
    sender.point_at(bridge.addr);
    sim.sim.set_faults(Faults {
        outage_seconds: Some(0),
        ..Faults::default()
    });
    // Everything accepted is delivered, and nothing of a refused request is.
    let tally_before_retry = settle(&sim, &sender, Duration::from_secs(30)).await;
    // Then the refused requests are retried, as Alertmanager would.
    for (body, keys) in &refused {
        sender
            .post_until_accepted(body, keys, "trigger", deadline)
            .await;
    }
    let tally = settle(&sim, &sender, Duration::from_secs(30)).await;
    logs.extend(bridge.logs());
    let storage_errors = logs
        .iter()
        .filter(|l| l.contains("database or disk is full"))
        .count();
    report(&format!(
        "CHAOS storage: {} filled_bytes={filled} posts_while_full={FULL_POSTS} \
         refused_503={} accepted_while_full={accepted_while_full} \
         refused_but_delivered={} readyz_full={ready_while_full:?} \
         healthz_full={alive_while_full:?} readyz_after={ready_after:?} \
         disk_full_errors_logged={storage_errors} secs={:.1}",
        tally.figures(),
        refused.len(),
        tally_before_retry.phantom,
        started.elapsed().as_secs_f64()
    ));

    assert_eq!(
        sender.unexpected(),
        Vec::<String>::new(),
        "answers besides 2xx/503"
    );
    assert_eq!(
        bad_503,
        Vec::<String>::new(),
        "503s without their JSON or Retry-After"
    );
    assert_eq!(panics(&logs), Vec::<String>::new(), "the bridge panicked");
    assert!(
        !refused.is_empty(),
        "a full disk made ingest answer 503 at least once"
    );
    assert!(recovered, "posts are accepted once there is room again");
    assert_eq!(ready_after, Some(200));
    tally_before_retry.assert_sound("storage, refused requests left out");
    tally.assert_sound("storage");
    assert_eq!(
        tally.duplicates, 0,
        "PagerDuty was down while the bridge was killed"
    );
    drop(bridge);
    drop(tmpfs);
}
