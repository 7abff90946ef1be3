//! The store conformance suite against PostgreSQL, plus what only a shared database can get
//! wrong: two replicas (two `PostgresStore`s, two pools) racing on the same data.
//!
//! Each test gets a database of its own ([`pagerbridge_testkit::postgres::TestDatabase`]),
//! dropped when the test ends.
//!
//! Every test here is `#[ignore = "needs postgres"]`: `scripts/test` runs them when a server
//! answers, CI always does, and without a server they fail instead of passing untested
//! (`pagerbridge_testkit::needs`).

use std::time::Duration;

use jiff::Timestamp;
use pagerbridge::store::postgres::PostgresStore;
use pagerbridge::store::{
    Acceptance, Action, BudgetDecision, BudgetId, BudgetSecret, Condition, LeaseName, Leases,
    NewEvent, Outbox, ReplicaId, SendBudget, SuppressionPolicy,
};
use pagerbridge_testkit::postgres::TestDatabase;
use pagerduty_events::{RoutingKey, Severity};
use tokio::task::JoinSet;

#[macro_use]
mod conformance;

/// A migrated store on a fresh database, and the guard that drops it.
async fn fresh_store() -> (PostgresStore, TestDatabase) {
    let database = TestDatabase::create().await;
    let store = PostgresStore::connect(&database.url)
        .await
        .unwrap_or_else(|e| panic!("connecting to test database {}: {e}", database.name()));
    (store, database)
}

conformance_tests!(fresh_store(), #[ignore = "needs postgres"]);

/// Replicas start together: three connects on one fresh database migrate it once (sqlx's
/// migrator takes an advisory lock) and all three get a working store.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs postgres"]
async fn replicas_starting_at_once_migrate_safely() {
    let database = TestDatabase::create().await;
    let mut starts = JoinSet::new();
    for _ in 0..3 {
        let url = database.url.clone();
        starts.spawn(async move { PostgresStore::connect(&url).await });
    }
    let mut stores = Vec::new();
    while let Some(started) = starts.join_next().await {
        stores.push(started.expect("task").expect("concurrent connect migrates"));
    }
    assert_eq!(stores.len(), 3);
    let policy = SuppressionPolicy::default();
    for (i, store) in stores.iter().enumerate() {
        store.ping().await.expect("ping");
        store
            .accept(vec![trigger(&format!("k{i}"))], &policy, at(0))
            .await
            .expect("accept after a concurrent migration");
    }
    let pending = stores[0].pending(Some("t"), 10).await.expect("pending");
    assert_eq!(
        pending.len(),
        3,
        "each replica's event is in the one database"
    );
}

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + seconds).expect("valid time")
}

fn trigger(key: &str) -> NewEvent {
    NewEvent {
        target: "t".to_owned(),
        dedup_key: Some(key.to_owned()),
        action: Action::Trigger,
        severity: Some(Severity::Error),
        event: serde_json::json!({"event_action": "trigger", "dedup_key": key}).into(),
        alert: None,
        fingerprint: Some(format!("fp-{key}")),
        labels_key: false,
        payload_hash: Some("unchanged".to_owned()),
        condition: Condition::Always,
        source: None,
    }
}

/// Requests accepted together share a transaction (group commit); one that PostgreSQL refuses
/// (a NUL in a dedup key: `TEXT` cannot hold it) fails alone, and the others are committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs postgres"]
async fn a_refused_request_fails_alone_among_concurrent_ones() {
    let (store, _database) = fresh_store().await;
    let policy = SuppressionPolicy::default();
    let requests = (0..8).map(|r| {
        let key = if r == 3 {
            "bad\0key".to_owned()
        } else {
            format!("good-{r}")
        };
        store.accept(vec![trigger(&key)], &policy, at(0))
    });
    let answers = futures_util::future::join_all(requests).await;
    for (r, answer) in answers.iter().enumerate() {
        if r == 3 {
            assert!(answer.is_err(), "the NUL is refused: {answer:?}");
        } else {
            let answer = answer.as_ref().expect("the others are accepted");
            assert!(
                matches!(answer[..], [Acceptance::Queued { .. }]),
                "{answer:?}"
            );
        }
    }
    let pending = store.pending(Some("t"), 20).await.expect("pending");
    // Which of these concurrent requests commits first is not defined: four writers take
    // batches in parallel (1 in about 20 runs queued good-1 before good-0).
    let mut keys: Vec<&str> = pending
        .iter()
        .filter_map(|e| e.dedup_key.as_deref())
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "good-0", "good-1", "good-2", "good-4", "good-5", "good-6", "good-7"
        ]
    );
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
            tasks
                .spawn(async move { replica.take_budget(None, &budget, LIMIT, window, now).await });
        }
        let mut granted = 0;
        while let Some(done) = tasks.join_next().await {
            match done.expect("task").expect("take_budget") {
                BudgetDecision::Granted { slot } => {
                    granted += 1;
                    // Answered at once.
                    one.settle_budget(slot, now).await.expect("settle");
                }
                BudgetDecision::WaitUntil(until) => {
                    assert!(until > now, "waits until {until}, not after {now}");
                }
                BudgetDecision::Fenced => panic!("a take without a fence was fenced"),
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

/// Two replicas racing for one lease, free or expired, round after round: exactly one wins
/// each round, and every takeover moves the epoch on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs postgres"]
async fn replicas_racing_for_an_expired_lease_elect_exactly_one() {
    let (one, two, _database) = two_replicas().await;
    let lane = LeaseName::lane("t");
    let ttl = Duration::from_secs(10);
    let mut last_epoch = 0;
    for round in 0..30 {
        // Each round starts after the last winner's lease has expired (or, first, with none).
        let now = at(round * 20);
        let mut racers = JoinSet::new();
        for (i, store) in [one.clone(), two.clone(), one.clone(), two.clone()]
            .into_iter()
            .enumerate()
        {
            let lane = lane.clone();
            // A new id per racer and round: nobody renews, everyone takes over.
            let owner = ReplicaId::new(format!("r{round}-{i}")).expect("id");
            racers.spawn(async move { store.acquire_or_renew(&lane, &owner, ttl, now).await });
        }
        let mut winners = Vec::new();
        while let Some(done) = racers.join_next().await {
            if let Some(lease) = done.expect("task").expect("acquire_or_renew") {
                winners.push(lease);
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        assert_eq!(winners[0].epoch, last_epoch + 1, "round {round}");
        last_epoch = winners[0].epoch;
    }
}
