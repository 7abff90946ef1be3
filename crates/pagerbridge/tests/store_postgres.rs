//! The store conformance suite against PostgreSQL, plus what only a shared database can get
//! wrong: two replicas (two `PostgresStore`s, two pools) racing on the same data.
//!
//! Each test gets a database of its own, `pb_test_<unix seconds>_<random>`, created on the
//! server at `PAGERBRIDGE_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`)
//! and dropped when the test ends. Databases a killed run left behind are dropped by the next
//! run once they are an hour old; the timestamp in the name says how old they are.
//!
//! Every test here is `#[ignore = "needs postgres"]`: `scripts/test` runs them when a server
//! answers, CI always does, and without a server they fail instead of passing untested
//! (`pagerbridge_testkit::needs`).

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jiff::Timestamp;
use pagerbridge::store::postgres::PostgresStore;
use pagerbridge::store::{
    Acceptance, Action, BudgetDecision, BudgetId, BudgetSecret, Condition, NewEvent, Outbox,
    SendBudget, SuppressionPolicy,
};
use pagerbridge_testkit::needs;
use pagerduty_events::{RoutingKey, Severity};
use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection};
use tokio::task::JoinSet;

#[macro_use]
mod conformance;

const PREFIX: &str = "pb_test_";
/// Older test databases are leftovers of killed runs: no test runs that long.
const STALE_AFTER: Duration = Duration::from_secs(3600);

fn server_url() -> String {
    needs::postgres_url()
}

/// The URL without its password, for messages.
fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                // Cannot fail: a URL with a password has a host.
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => "(unparsable URL)".to_owned(),
    }
}

/// An administrative connection to the server; a test without one fails.
async fn admin_connection(url: &str) -> PgConnection {
    let error =
        match tokio::time::timeout(Duration::from_secs(10), PgConnection::connect(url)).await {
            Ok(Ok(conn)) => return conn,
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer within 10s".to_owned(),
        };
    panic!("PostgreSQL not reachable at {}: {error}", redacted(url))
}

/// A name no other test, run or process picks: the creation time, for stale cleanup, then
/// process-seeded randomness, the process id and a counter.
fn unique_database_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(since_epoch.as_nanos());
    hasher.write_u32(std::process::id());
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    format!("{PREFIX}{}_{:016x}", since_epoch.as_secs(), hasher.finish())
}

/// Names are interpolated into DDL (identifiers cannot be bound), so only ours are accepted.
fn is_test_database_name(name: &str) -> bool {
    name.strip_prefix(PREFIX).is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase() || b == b'_')
    })
}

async fn drop_database(conn: &mut PgConnection, name: &str) -> Result<(), String> {
    if !is_test_database_name(name) {
        return Err(format!("refusing to drop {name:?}: not a test database"));
    }
    // FORCE: the test's pool may still hold connections to it.
    sqlx::raw_sql(AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
    )))
    .execute(conn)
    .await
    .map(drop)
    .map_err(|e| e.to_string())
}

/// Drops test databases older than [`STALE_AFTER`], once per process: what killed runs, whose
/// guards never ran, left behind. Best effort.
async fn drop_stale_databases(conn: &mut PgConnection) {
    static DONE: AtomicBool = AtomicBool::new(false);
    if DONE.swap(true, Ordering::Relaxed) {
        return;
    }
    let names: Vec<String> = match sqlx::query_scalar(
        "SELECT datname FROM pg_database WHERE datname LIKE 'pb\\_test\\_%'",
    )
    .fetch_all(&mut *conn)
    .await
    {
        Ok(names) => names,
        Err(e) => {
            eprintln!("warning: listing old test databases: {e}");
            return;
        }
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    for name in names {
        let created = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|secs| secs.parse::<u64>().ok());
        if created.is_some_and(|at| now.saturating_sub(at) > STALE_AFTER.as_secs())
            && let Err(e) = drop_database(conn, &name).await
        {
            eprintln!("warning: dropping old test database {name}: {e}");
        }
    }
}

/// A test's database; dropping the guard drops the database.
struct TestDatabase {
    server_url: String,
    name: String,
    /// Where the stores connect.
    url: String,
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop cannot await, and the test's runtime may be the one running this: a thread of
        // its own with a runtime of its own does the (short) cleanup.
        let server_url = self.server_url.clone();
        let name = self.name.clone();
        let cleanup = std::thread::spawn(move || -> Result<(), String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let mut conn = PgConnection::connect(&server_url)
                    .await
                    .map_err(|e| e.to_string())?;
                drop_database(&mut conn, &name).await?;
                conn.close().await.map_err(|e| e.to_string())
            })
        });
        match cleanup.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: dropping test database {}: {e}", self.name),
            Err(_) => eprintln!("warning: dropping test database {} panicked", self.name),
        }
    }
}

/// A migrated store on a fresh database, and the guard that drops it.
async fn fresh_store() -> (PostgresStore, TestDatabase) {
    let server_url = server_url();
    let mut admin = admin_connection(&server_url).await;
    drop_stale_databases(&mut admin).await;
    let name = unique_database_name();
    let mut url = url::Url::parse(&server_url).unwrap_or_else(|e| {
        panic!(
            "PAGERBRIDGE_TEST_POSTGRES_URL is not a URL ({e}): {}",
            redacted(&server_url)
        )
    });
    url.set_path(&format!("/{name}"));
    sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("creating test database {name}: {e}"));
    // From here on the guard owns the database, so a failure below still drops it.
    let database = TestDatabase {
        server_url,
        name,
        url: url.to_string(),
    };
    let _ = admin.close().await;
    let store = PostgresStore::connect(&database.url)
        .await
        .unwrap_or_else(|e| panic!("connecting to test database {}: {e}", database.name));
    (store, database)
}

conformance_tests!(fresh_store(), #[ignore = "needs postgres"]);

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + seconds).expect("valid time")
}

fn trigger(key: &str) -> NewEvent {
    NewEvent {
        target: "t".to_owned(),
        dedup_key: Some(key.to_owned()),
        action: Action::Trigger,
        severity: Some(Severity::Error),
        event: serde_json::json!({"event_action": "trigger", "dedup_key": key}),
        alert: None,
        fingerprint: Some(format!("fp-{key}")),
        payload_hash: Some("unchanged".to_owned()),
        condition: Condition::Always,
    }
}

/// The two replicas of a test: two pools on one database.
async fn two_replicas() -> (PostgresStore, PostgresStore, TestDatabase) {
    let (one, database) = fresh_store().await;
    let two = PostgresStore::connect(&database.url)
        .await
        .expect("second replica connects");
    (one, two, database)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs postgres"]
async fn replicas_never_overrun_the_shared_budget() {
    let (one, two, _database) = two_replicas().await;
    let key = RoutingKey::new("0123456789abcdef0123456789abfake").expect("key"); // fake test key
    let budget = BudgetId::new(&key, &one.budget_secret().await.expect("secret"));
    const LIMIT: u32 = 5;
    const TASKS: usize = 40;
    let window = Duration::from_secs(60);
    // Rounds: a fresh window; the full one, up to and including its last millisecond; the
    // next window once the first sends have left it.
    let just_after = |t: Timestamp| t + jiff::SignedDuration::from_millis(1);
    let rounds = [
        (at(0), LIMIT),
        (at(30), 0),
        (at(60), 0),
        (just_after(at(60)), LIMIT),
    ];
    for (now, expected) in rounds {
        let mut tasks = JoinSet::new();
        for i in 0..TASKS {
            let replica = if i % 2 == 0 { one.clone() } else { two.clone() };
            let budget = budget.clone();
            tasks.spawn(async move { replica.take_budget(&budget, LIMIT, window, now).await });
        }
        let mut granted = 0;
        while let Some(done) = tasks.join_next().await {
            match done.expect("task").expect("take_budget") {
                BudgetDecision::Granted { .. } => granted += 1,
                BudgetDecision::WaitUntil(until) => {
                    assert!(until > now, "waits until {until}, not after {now}");
                }
            }
        }
        assert_eq!(
            granted, expected,
            "grants at {now} from {TASKS} concurrent requests"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs postgres"]
async fn replicas_starting_together_agree_on_one_budget_secret() {
    let (one, two, database) = two_replicas().await;
    // Neither has asked yet: every concurrent first ask races to create the secret.
    let mut tasks = JoinSet::new();
    for i in 0..16 {
        let replica = if i % 2 == 0 { one.clone() } else { two.clone() };
        tasks.spawn(async move { replica.budget_secret().await });
    }
    let mut secrets: Vec<BudgetSecret> = Vec::new();
    while let Some(done) = tasks.join_next().await {
        secrets.push(done.expect("task").expect("budget_secret"));
    }
    secrets.dedup();
    assert_eq!(secrets.len(), 1, "one secret for every replica");
    let later = PostgresStore::connect(&database.url)
        .await
        .expect("a replica started later connects");
    assert_eq!(
        later.budget_secret().await.expect("secret"),
        secrets[0],
        "stable across restarts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs postgres"]
async fn replicas_queue_a_concurrent_unchanged_trigger_once() {
    let (one, two, _database) = two_replicas().await;
    const ROUNDS: usize = 20;
    let policy = SuppressionPolicy::default();
    for round in 0..ROUNDS {
        let key = format!("k{round}");
        let mut tasks = JoinSet::new();
        for replica in [one.clone(), two.clone()] {
            let event = trigger(&key);
            tasks.spawn(async move { replica.accept(vec![event], &policy, at(0)).await });
        }
        let mut outcomes = Vec::new();
        while let Some(done) = tasks.join_next().await {
            outcomes.extend(done.expect("task").expect("accept"));
        }
        let queued = outcomes
            .iter()
            .filter(|a| matches!(a, Acceptance::Queued { .. }))
            .count();
        assert_eq!(queued, 1, "{key}: {outcomes:?}");
        assert!(
            outcomes.contains(&Acceptance::Suppressed {
                reason: "unchanged_retrigger"
            }),
            "{key}: {outcomes:?}"
        );
    }
    let pending = one.pending(Some("t"), 1000).await.expect("pending");
    assert_eq!(pending.len(), ROUNDS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs postgres"]
async fn replicas_accepting_incidents_in_opposite_orders_do_not_deadlock() {
    let (one, two, _database) = two_replicas().await;
    let policy = SuppressionPolicy::default();
    for round in 0..20 {
        let (a, b) = (format!("a{round}"), format!("b{round}"));
        let forward = vec![trigger(&a), trigger(&b)];
        let backward = vec![trigger(&b), trigger(&a)];
        let mut tasks = JoinSet::new();
        for (replica, events) in [(one.clone(), forward), (two.clone(), backward)] {
            tasks.spawn(async move { replica.accept(events, &policy, at(round)).await });
        }
        let mut queued = 0;
        while let Some(done) = tasks.join_next().await {
            let outcomes = done
                .expect("task")
                .expect("accept must not fail with a deadlock");
            queued += outcomes
                .iter()
                .filter(|a| matches!(a, Acceptance::Queued { .. }))
                .count();
        }
        assert_eq!(queued, 2, "each incident queued once in round {round}");
    }
}
