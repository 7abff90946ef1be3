//! Several `pagerbridge serve` replicas on one PostgreSQL, as real processes: each a real binary,
//! one fresh database shared by all ([`TestDatabase`]), the simulator as PagerDuty with a tight
//! budget (20 requests per 2 s) so that lanes are always up against it.
//!
//! What is tested is what DESIGN.md promises for high availability (invariants 1–3 and 7):
//! whatever replica takes a request, whatever replica is killed or paused, nothing accepted is
//! lost, each incident's events arrive in order, a crash costs at most one duplicate, and
//! PagerDuty never sees the routing key over its budget.
//!
//! Every test is `#[ignore = "needs postgres"]` and has `postgres` in its name, but the one that
//! restarts PostgreSQL: it runs a private server ([`PrivatePostgres`], `needs initdb`), since
//! the shared one serves other tests meanwhile. One is cut off from PostgreSQL by a
//! [`pagerbridge_testkit::tcp_proxy::TcpProxy`] ([`postgres_through_a_proxy`]). Each replica
//! gets its own User-Agent (`PAGERBRIDGE_PAGERDUTY__USER_AGENT`), so the simulator's log says
//! which process sent what.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use pagerbridge_testkit::pg_server::PrivatePostgres;
use pagerbridge_testkit::postgres::TestDatabase;
use pagerduty_simulator::Config as SimConfig;
use serde_json::json;

/// PagerDuty's budget in these tests: 20 requests per 2 s per routing key.
const BUDGET: (u32, &str) = (20, "2s");
/// The lease's time to live: the shortest the configuration allows, so takeovers are quick.
const LEASE_TTL: Duration = Duration::from_secs(2);
/// Long enough for any delivery here at 10 requests per second, with takeovers between.
const WAIT: Duration = Duration::from_secs(90);

async fn simulator_at_20_per_2s() -> SpawnedSimulator {
    simulator(SimConfig {
        rate_limit: BUDGET.0,
        rate_window: Duration::from_secs(2),
        ..SimConfig::default()
    })
    .await
}

/// A setup for replicas of one database, with a 2 s lease.
fn replica_setup(sim: &SpawnedSimulator, database: &TestDatabase) -> Setup {
    Setup::new(&sim.base_url(), BUDGET, "", "")
        .with_postgres(&database.url)
        .with_lease_ttl("2s")
}

/// Starts a replica whose requests to PagerDuty carry the User-Agent `name`.
async fn start_replica(setup: &Setup, name: &str) -> Bridge {
    setup
        .start_with_env(&[("PAGERBRIDGE_PAGERDUTY__USER_AGENT", name)])
        .await
}

/// One native alert `Ha-{i}` with `status`.
fn one_alert(i: usize, status: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"alerts": [{
        "status": status,
        "labels": {"alertname": format!("Ha-{i}"), "severity": "critical", "instance": format!("host-{i}")},
        "annotations": {"summary": format!("replicated alert {i}")},
        "startsAt": "2026-11-29T10:00:00Z"
    }]}))
    .expect("json")
}

fn key_of(i: usize) -> String {
    expected_dedup_key(&[
        ("alertname", &format!("Ha-{i}")),
        ("instance", &format!("host-{i}")),
        ("severity", "critical"),
    ])
}

/// How many different (dedup key, action) PagerDuty accepted: duplicates count once.
fn distinct_deliveries(sim: &SpawnedSimulator) -> usize {
    let got: std::collections::BTreeSet<(String, String)> = delivered(sim).into_iter().collect();
    got.len()
}

/// The User-Agents of the requests PagerDuty answered 202, in arrival order.
fn senders(sim: &SpawnedSimulator) -> Vec<String> {
    sim.sim
        .events()
        .iter()
        .filter(|e| e.status == 202 && e.path == "/v2/enqueue")
        .map(|e| e.user_agent.clone().unwrap_or_default())
        .collect()
}

/// Waits until one of `replicas` drives the default lane, and says which.
async fn lane_owner(replicas: &[Bridge], timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        for (i, replica) in replicas.iter().enumerate() {
            if replica.owns_lane("default").await {
                return i;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no replica took the lane within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `kill -9`s the replica that drives the default lane and returns how long the survivors took
/// to take the lane over (by their gauges, polled every 20 ms).
async fn kill_the_owner(replicas: &mut Vec<Bridge>) -> Duration {
    let owner = lane_owner(replicas, WAIT).await;
    replicas.remove(owner).kill9();
    let killed = Instant::now();
    lane_owner(replicas, WAIT).await;
    killed.elapsed()
}

/// The promise: another replica takes the lane over within `lease_ttl` + 1 s of its owner's
/// death or isolation (the owner renewed at most `lease_ttl` before; the others try often
/// enough).
fn assert_takeovers_within_the_lease(takeovers: &[Duration]) {
    eprintln!("lane takeovers took {takeovers:?}");
    assert!(!takeovers.is_empty(), "the lane owner was killed");
    for took in takeovers {
        assert!(
            *took <= LEASE_TTL + Duration::from_secs(1),
            "a takeover took {took:?}, more than lease_ttl ({LEASE_TTL:?}) + 1 s: {takeovers:?}"
        );
    }
}

/// Checks what PagerDuty got: every alert `0..n` triggered then resolved, in that order, with
/// at most `kills` duplicates in all (a request in flight when its sender died is sent again),
/// and never a request over the budget.
fn assert_delivered_exactly(sim: &SpawnedSimulator, n: usize, kills: usize) {
    let got = delivered(sim);
    let keys: Vec<String> = (0..n).map(key_of).collect();
    assert_lifecycles(&got, &keys, &["trigger", "resolve"], true);
    let duplicates = got.len() - 2 * n;
    assert!(
        duplicates <= kills,
        "{duplicates} duplicates after {kills} kills: {got:?}"
    );
    let stats = sim.sim.stats();
    assert_eq!(
        stats.budget_violations, 0,
        "a request went over the routing key's budget: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs postgres"]
async fn three_replicas_on_postgres_lose_nothing_to_random_kill_9() {
    let database = TestDatabase::create().await;
    let sim = simulator_at_20_per_2s().await;
    let setup = replica_setup(&sim, &database);
    let mut started = 0;
    let mut replicas = Vec::new();
    for _ in 0..3 {
        started += 1;
        replicas.push(start_replica(&setup, &format!("replica-{started}")).await);
    }
    // A small deterministic generator: the same kills on every run, still spread over the
    // replicas and the steps.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |bound: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % bound as u64) as usize
    };

    // Lifecycles posted round-robin: alert i fires at step i and resolves 10 steps later, so
    // the two ends of one incident usually reach different replicas. Every 12 steps a replica
    // dies (every other time the lane's owner) and a new process takes its place.
    let n = 60;
    let mut kills = 0;
    let mut takeovers = Vec::new();
    let mut step = 0;
    let posts = (0..n + 10).flat_map(|i| {
        let trigger = (i < n).then_some((i, "firing"));
        let resolve = (i >= 10).then(|| (i - 10, "resolved"));
        trigger.into_iter().chain(resolve)
    });
    for (i, status) in posts {
        step += 1;
        if step % 12 == 0 {
            if kills % 2 == 0 {
                takeovers.push(kill_the_owner(&mut replicas).await);
            } else {
                replicas.remove(next(replicas.len())).kill9();
            }
            kills += 1;
            started += 1;
            replicas.push(start_replica(&setup, &format!("replica-{started}")).await);
        }
        let replica = &replicas[step % replicas.len()];
        let (code, receipt) = replica.post("/api/v1/alerts", &one_alert(i, status)).await;
        assert_eq!(code, 202, "alert {i} {status}: {receipt}");
    }
    // The backlog drains at the budget's pace; keep killing the lane's owner meanwhile.
    while distinct_deliveries(&sim) < 2 * n && kills < 16 {
        let before = distinct_deliveries(&sim);
        wait_until("a few more deliveries", WAIT, || {
            distinct_deliveries(&sim) >= (before + 15).min(2 * n)
        })
        .await;
        takeovers.push(kill_the_owner(&mut replicas).await);
        kills += 1;
        started += 1;
        replicas.push(start_replica(&setup, &format!("replica-{started}")).await);
    }
    wait_until("every lifecycle delivered", WAIT, || {
        distinct_deliveries(&sim) == 2 * n
    })
    .await;
    assert_delivered_exactly(&sim, n, kills);
    assert_takeovers_within_the_lease(&takeovers);
    let senders = senders(&sim);
    let distinct: std::collections::BTreeSet<&String> = senders.iter().collect();
    assert!(
        distinct.len() >= 4,
        "delivery moved between replicas as they died: {distinct:?}"
    );
}

/// The lane's owner `a` is isolated from the others by `isolate` (paused, cut off from the
/// database) with a backlog queued, and stays so past its lease; then `heal` ends it. `b` must
/// take the lane over within `lease_ttl` + 1 s, `a` must send at most the one request it had
/// in flight, learn it lost the lane once healed, and together they deliver every trigger in
/// order, within the budget.
async fn the_owner_is_isolated_then_healed(
    sim: &SpawnedSimulator,
    a: &Bridge,
    b: &Bridge,
    isolate: impl FnOnce(),
    heal: impl FnOnce(),
) {
    // A backlog of 80 triggers: 8 s of budget, so there is plenty left when `a` is back.
    let n = 80;
    let prefix = "Isolated";
    let (code, receipt) = b
        .post(
            "/api/v1/alerts",
            &native_alerts(prefix, n, "firing", "critical"),
        )
        .await;
    assert_eq!(code, 202, "{receipt}");
    let sent_by = |name: &str| senders(sim).iter().filter(|s| *s == name).count();
    wait_until("replica-a to be sending", WAIT, || {
        sent_by("replica-a") >= 5
    })
    .await;
    isolate();
    let isolated = Instant::now();
    let sent_before = sent_by("replica-a");

    wait_until_async("replica-b to take the lane over", WAIT, || {
        b.owns_lane("default")
    })
    .await;
    assert_takeovers_within_the_lease(&[isolated.elapsed()]);
    wait_until("replica-b to be sending", WAIT, || sent_by("replica-b") > 0).await;
    // `a` stays isolated well past its lease.
    let past_the_lease = isolated + LEASE_TTL + Duration::from_secs(1);
    tokio::time::sleep(past_the_lease.saturating_duration_since(Instant::now())).await;
    let left = n - distinct_deliveries(sim).min(n);
    assert!(
        left >= 20,
        "{left} triggers are still queued when `a` is back"
    );
    heal();

    wait_until_async("replica-a to see it lost the lane", WAIT, || async {
        a.lane_owned("default").await == Some(false)
    })
    .await;
    wait_until("every trigger delivered", WAIT, || {
        distinct_deliveries(sim) == n
    })
    .await;
    let sent_after = sent_by("replica-a") - sent_before;
    assert!(
        sent_after <= 1,
        "replica-a sent {sent_after} requests after it was isolated"
    );
    assert!(b.owns_lane("default").await, "replica-b kept the lane");
    let keys: Vec<String> = (0..n)
        .map(|i| {
            expected_dedup_key(&[
                ("alertname", &format!("{prefix}-{i}")),
                ("instance", &format!("host-{i}")),
                ("severity", "critical"),
            ])
        })
        .collect();
    let got = delivered(sim);
    assert_lifecycles(&got, &keys, &["trigger"], true);
    assert!(got.len() <= n + 1, "at most one duplicate: {got:?}");
    let stats = sim.sim.stats();
    assert_eq!(stats.budget_violations, 0, "over the budget: {stats:?}");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs postgres"]
async fn a_paused_lane_owner_on_postgres_never_sends_after_its_lease_is_gone() {
    let database = TestDatabase::create().await;
    let sim = simulator_at_20_per_2s().await;
    let setup = replica_setup(&sim, &database);
    let a = start_replica(&setup, "replica-a").await;
    lane_owner(std::slice::from_ref(&a), WAIT).await;
    let b = start_replica(&setup, "replica-b").await;
    the_owner_is_isolated_then_healed(&sim, &a, &b, || a.signal("STOP"), || a.signal("CONT")).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs postgres"]
async fn a_replica_cut_off_from_postgres_hands_its_lane_over_and_stops_sending() {
    let database = TestDatabase::create().await;
    let sim = simulator_at_20_per_2s().await;
    // `a` reaches the database through a proxy the test cuts; `b` directly.
    let (proxy, url) = postgres_through_a_proxy(&database.url);
    let setup_a = Setup::new(&sim.base_url(), BUDGET, "", "")
        .with_postgres(&url)
        .with_lease_ttl("2s");
    let a = start_replica(&setup_a, "replica-a").await;
    lane_owner(std::slice::from_ref(&a), WAIT).await;
    let b = start_replica(&replica_setup(&sim, &database), "replica-b").await;
    the_owner_is_isolated_then_healed(&sim, &a, &b, || proxy.cut(), || proxy.restore()).await;
}

/// PostgreSQL (a private server of this test's) is restarted while alerts pour in: while it is
/// down, ingest answers 503 with `Retry-After` and never a 2xx; every alert answered 2xx is
/// delivered once it is back.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs initdb"]
async fn a_database_restart_mid_storm_answers_503_and_loses_nothing_initdb() {
    let server = Arc::new(
        tokio::task::spawn_blocking(PrivatePostgres::start)
            .await
            .expect("private server"),
    );
    let sim = simulator_at_20_per_2s().await;
    let setup = Setup::new(&sim.base_url(), BUDGET, "", "")
        .with_postgres(&server.url())
        .with_lease_ttl("2s");
    let a = start_replica(&setup, "replica-a").await;
    let b = start_replica(&setup, "replica-b").await;

    // The storm: one alert per request, round-robin, until told to stop; each answer noted.
    let answers: Arc<Mutex<Vec<Answer>>> = Arc::default();
    let storming = Arc::new(AtomicBool::new(true));
    let storm = tokio::spawn(storm(
        vec![a.url("/api/v1/alerts"), b.url("/api/v1/alerts")],
        answers.clone(),
        storming.clone(),
    ));
    let count = |status: u16| {
        answers
            .lock()
            .expect("answers")
            .iter()
            .filter(|a| a.status == status)
            .count()
    };
    wait_until("alerts accepted before the restart", WAIT, || {
        count(202) >= 20
    })
    .await;
    let stopping = server.clone();
    tokio::task::spawn_blocking(move || stopping.stop())
        .await
        .expect("stop");
    wait_until("503s while the database is down", WAIT, || count(503) >= 4).await;
    let (code, _) = a.get_text("/readyz").await;
    assert_eq!(code, 503, "not ready without its database");
    let accepted_while_down = count(202);
    let starting = server.clone();
    tokio::task::spawn_blocking(move || starting.start_again())
        .await
        .expect("start again");
    wait_until("alerts accepted after the restart", WAIT, || {
        count(202) >= accepted_while_down + 20
    })
    .await;
    storming.store(false, Ordering::Relaxed);
    storm.await.expect("storm");

    let answers = answers.lock().expect("answers").clone();
    eprintln!(
        "storm through a database restart: {} alerts answered 202, {} answered 503",
        count(202),
        count(503)
    );
    for answer in &answers {
        match answer.status {
            202 => {}
            503 => assert!(
                answer.retry_after.is_some(),
                "a 503 without Retry-After: {answer:?}"
            ),
            other => panic!("alert {} answered {other}: {answer:?}", answer.alert),
        }
    }
    let accepted: Vec<String> = answers
        .iter()
        .filter(|a| a.status == 202)
        .map(|a| key_of(a.alert))
        .collect();
    wait_until("every accepted alert delivered", WAIT, || {
        let got: std::collections::BTreeSet<String> =
            delivered(&sim).into_iter().map(|(key, _)| key).collect();
        accepted.iter().all(|key| got.contains(key))
    })
    .await;
    let stats = sim.sim.stats();
    assert_eq!(stats.budget_violations, 0, "over the budget: {stats:?}");
}

/// One answer of the storm: which alert, what status, the `Retry-After` header if any.
#[derive(Clone, Debug)]
struct Answer {
    alert: usize,
    status: u16,
    retry_after: Option<String>,
}

/// Posts alerts `Ha-0`, `Ha-1`, … one per request, round-robin over `urls`, while `storming`.
/// A request that gets no answer at all (connection refused, timeout) is a test failure: the
/// replicas stay up, only their database goes.
async fn storm(urls: Vec<String>, answers: Arc<Mutex<Vec<Answer>>>, storming: Arc<AtomicBool>) {
    let http = reqwest::Client::new();
    let mut alert = 0;
    while storming.load(Ordering::Relaxed) {
        let url = &urls[alert % urls.len()];
        let response = http
            .post(url)
            .header("content-type", "application/json")
            .body(one_alert(alert, "firing"))
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .unwrap_or_else(|e| panic!("alert {alert}: no answer from {url}: {e}"));
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        answers.lock().expect("answers").push(Answer {
            alert,
            status: response.status().as_u16(),
            retry_after,
        });
        alert += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs postgres"]
async fn two_targets_sharing_a_key_on_two_postgres_replicas_share_its_budget() {
    let database = TestDatabase::create().await;
    let sim = tight_simulator().await;
    let setup = setup_of_two_targets_sharing_a_key(&sim)
        .with_postgres(&database.url)
        .with_lease_ttl("2s");
    let a = setup.start().await;
    let b = setup.start().await;
    two_targets_sharing_a_key_stay_within_its_budget(&sim, &[&a, &b]).await;
}
