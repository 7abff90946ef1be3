//! The conformance suite every [`Store`] implementation must pass.
//!
//! Each check takes a fresh, empty store. A backend's test file runs them all with
//! [`conformance_tests!`](crate::conformance_tests), so SQLite and PostgreSQL are held to the
//! same behaviour by the same code.

use std::time::Duration;

use jiff::Timestamp;
use pagerduty_events::Severity;
use serde_json::json;

use super::suppress::Status;
use super::{Acceptance, Action, BudgetDecision, NewEvent, NoticeKind, Store, SuppressionPolicy};

/// Generates one `#[tokio::test]` per conformance check; `$make` is an async expression
/// giving a fresh store and a guard kept alive for the test (e.g. its temporary directory).
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@each $make;
            queues_in_acceptance_order,
            per_incident_order_holds_while_an_older_event_is_pending,
            most_severe_eligible_event_goes_first,
            change_events_order_against_nothing,
            unchanged_retrigger_and_repeats_are_suppressed,
            delivered_events_leave_the_queue_and_mark_the_incident,
            failures_keep_the_event_in_place,
            dead_letters_unblock_the_incident_and_are_listed,
            old_events_expire_to_dead_letters,
            incident_state_expires,
            budget_is_a_sliding_window,
            settled_slots_count_from_the_answer,
            fingerprint_maps_to_the_last_dedup_key,
            stats_count_pending_dead_and_open_incidents,
            fallback_hears_of_dead_letters_and_long_failures_once,
        );
    };
    (@each $make:expr; $($check:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $check() {
                let (store, _guard) = $make.await;
                $crate::store::conformance::$check(&store).await;
            }
        )+
    };
}

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + seconds).expect("valid time")
}

fn event(target: &str, key: Option<&str>, action: Action, severity: Option<Severity>) -> NewEvent {
    NewEvent {
        target: target.to_owned(),
        dedup_key: key.map(str::to_owned),
        action,
        severity,
        event: json!({"event_action": action.as_str(), "dedup_key": key}),
        alert: Some(json!({"labels": {"alertname": "X"}})),
        fingerprint: key.map(|k| format!("fp-{k}")),
        payload_hash: (action == Action::Trigger).then(|| format!("hash-{}", key.unwrap_or(""))),
    }
}

fn trigger(key: &str, severity: Severity) -> NewEvent {
    event("t", Some(key), Action::Trigger, Some(severity))
}

async fn accept_one<S: Store>(store: &S, e: NewEvent, now: Timestamp) -> Acceptance {
    let mut out = store
        .accept(vec![e], &SuppressionPolicy::default(), now)
        .await
        .expect("accept");
    assert_eq!(out.len(), 1);
    out.remove(0)
}

fn queued_id(acceptance: &Acceptance) -> i64 {
    match acceptance {
        Acceptance::Queued { id } => *id,
        other => panic!("expected queued, got {other:?}"),
    }
}

async fn next_id<S: Store>(store: &S, target: &str) -> Option<i64> {
    store
        .next_eligible(target)
        .await
        .expect("next_eligible")
        .map(|e| e.id)
}

pub async fn queues_in_acceptance_order<S: Store>(store: &S) {
    let out = store
        .accept(
            vec![
                trigger("a", Severity::Info),
                trigger("b", Severity::Info),
                trigger("c", Severity::Info),
            ],
            &SuppressionPolicy::default(),
            at(0),
        )
        .await
        .expect("accept");
    let ids: Vec<i64> = out.iter().map(queued_id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids {ids:?}");
    let pending = store.pending(Some("t"), 10).await.expect("pending");
    let keys: Vec<_> = pending.iter().map(|e| e.dedup_key.clone()).collect();
    assert_eq!(keys, [Some("a".into()), Some("b".into()), Some("c".into())]);
    assert_eq!(pending[0].accepted_at, at(0));
    assert_eq!(pending[0].action, Action::Trigger);
    assert_eq!(pending[0].severity, Some(Severity::Info));
    assert_eq!(
        pending[0].alert,
        Some(json!({"labels": {"alertname": "X"}}))
    );
}

pub async fn per_incident_order_holds_while_an_older_event_is_pending<S: Store>(store: &S) {
    let first = queued_id(&accept_one(store, trigger("k", Severity::Info), at(0)).await);
    // A critical resolve of the same incident must still wait for the trigger.
    let resolve = queued_id(
        &accept_one(
            store,
            event("t", Some("k"), Action::Resolve, Some(Severity::Critical)),
            at(1),
        )
        .await,
    );
    assert_eq!(next_id(store, "t").await, Some(first));
    store
        .record_failure(first, "HTTP 500", at(1))
        .await
        .expect("failure");
    assert_eq!(
        next_id(store, "t").await,
        Some(first),
        "a failed event keeps its place"
    );
    store.mark_delivered(first, at(2)).await.expect("delivered");
    assert_eq!(next_id(store, "t").await, Some(resolve));
}

pub async fn most_severe_eligible_event_goes_first<S: Store>(store: &S) {
    for i in 0..5 {
        accept_one(store, trigger(&format!("info-{i}"), Severity::Info), at(i)).await;
    }
    let critical = queued_id(&accept_one(store, trigger("page", Severity::Critical), at(10)).await);
    let warning = queued_id(&accept_one(store, trigger("warn", Severity::Warning), at(11)).await);
    assert_eq!(next_id(store, "t").await, Some(critical));
    store
        .mark_delivered(critical, at(12))
        .await
        .expect("delivered");
    assert_eq!(next_id(store, "t").await, Some(warning));
    // Other targets are other lanes.
    assert_eq!(next_id(store, "other").await, None);
}

pub async fn change_events_order_against_nothing<S: Store>(store: &S) {
    let one = queued_id(&accept_one(store, event("t", None, Action::Change, None), at(0)).await);
    let two = queued_id(&accept_one(store, event("t", None, Action::Change, None), at(1)).await);
    store
        .record_failure(one, "timeout", at(1))
        .await
        .expect("failure");
    let pending: Vec<i64> = store
        .pending(Some("t"), 10)
        .await
        .expect("pending")
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(pending, [one, two]);
    store.mark_delivered(one, at(2)).await.expect("delivered");
    assert_eq!(next_id(store, "t").await, Some(two));
}

pub async fn unchanged_retrigger_and_repeats_are_suppressed<S: Store>(store: &S) {
    let policy = SuppressionPolicy {
        retrigger_after: Duration::from_secs(60),
    };
    let accept = |e: NewEvent, now: Timestamp| async move {
        store
            .accept(vec![e], &policy, now)
            .await
            .expect("accept")
            .remove(0)
    };
    assert!(matches!(
        accept(trigger("k", Severity::Error), at(0)).await,
        Acceptance::Queued { .. }
    ));
    assert_eq!(
        accept(trigger("k", Severity::Error), at(30)).await,
        Acceptance::Suppressed {
            reason: "unchanged_retrigger"
        }
    );
    let mut changed = trigger("k", Severity::Error);
    changed.payload_hash = Some("different".into());
    assert!(matches!(
        accept(changed, at(31)).await,
        Acceptance::Queued { .. }
    ));
    let resolve = || event("t", Some("k"), Action::Resolve, None);
    assert!(matches!(
        accept(resolve(), at(32)).await,
        Acceptance::Queued { .. }
    ));
    assert_eq!(
        accept(resolve(), at(33)).await,
        Acceptance::Suppressed {
            reason: "already_resolved"
        }
    );
    let state = store
        .incident("t", "k")
        .await
        .expect("incident")
        .expect("exists");
    assert_eq!(state.status, Status::Resolved);
    // Same key on another target is another incident.
    assert!(matches!(
        accept(event("other", Some("k"), Action::Resolve, None), at(34)).await,
        Acceptance::Queued { .. }
    ));
}

pub async fn delivered_events_leave_the_queue_and_mark_the_incident<S: Store>(store: &S) {
    let id = queued_id(&accept_one(store, trigger("k", Severity::Error), at(0)).await);
    store.mark_delivered(id, at(5)).await.expect("delivered");
    assert!(store.pending(None, 10).await.expect("pending").is_empty());
    let state = store
        .incident("t", "k")
        .await
        .expect("incident")
        .expect("exists");
    assert_eq!(state.last_sent_at, Some(at(5)));
    assert_eq!(state.status, Status::Triggered);
}

pub async fn failures_keep_the_event_in_place<S: Store>(store: &S) {
    let id = queued_id(&accept_one(store, trigger("k", Severity::Error), at(0)).await);
    store
        .record_failure(id, "HTTP 503", at(1))
        .await
        .expect("failure");
    store
        .record_failure(id, "timeout", at(2))
        .await
        .expect("failure");
    let next = store
        .next_eligible("t")
        .await
        .expect("next")
        .expect("still queued");
    assert_eq!(next.id, id);
    assert_eq!(next.attempts, 2);
    assert_eq!(next.last_error.as_deref(), Some("timeout"));
}

pub async fn dead_letters_unblock_the_incident_and_are_listed<S: Store>(store: &S) {
    let bad = queued_id(&accept_one(store, trigger("k", Severity::Error), at(0)).await);
    let resolve =
        queued_id(&accept_one(store, event("t", Some("k"), Action::Resolve, None), at(1)).await);
    store
        .dead_letter(
            bad,
            "PagerDuty rejected the event (HTTP 400): 'payload.source' is missing",
            at(2),
        )
        .await
        .expect("dead letter");
    assert_eq!(next_id(store, "t").await, Some(resolve));
    let dead = store.dead_letters(Some("t"), 10).await.expect("list");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, bad);
    assert_eq!(dead[0].dead_at, at(2));
    assert!(dead[0].reason.contains("HTTP 400"));
    assert!(
        store
            .dead_letters(Some("other"), 10)
            .await
            .expect("list")
            .is_empty()
    );
}

pub async fn old_events_expire_to_dead_letters<S: Store>(store: &S) {
    accept_one(store, trigger("old", Severity::Error), at(0)).await;
    let fresh = queued_id(&accept_one(store, trigger("fresh", Severity::Error), at(100)).await);
    assert_eq!(
        store.expire_events(at(50), at(200)).await.expect("expire"),
        1
    );
    assert_eq!(next_id(store, "t").await, Some(fresh));
    let dead = store.dead_letters(None, 10).await.expect("list");
    assert_eq!(dead.len(), 1);
    assert!(dead[0].reason.contains("expired"), "{}", dead[0].reason);
}

pub async fn incident_state_expires<S: Store>(store: &S) {
    accept_one(store, trigger("old", Severity::Error), at(0)).await;
    accept_one(store, trigger("new", Severity::Error), at(100)).await;
    assert_eq!(store.expire_incidents(at(50)).await.expect("expire"), 1);
    assert!(store.incident("t", "old").await.expect("get").is_none());
    assert!(store.incident("t", "new").await.expect("get").is_some());
}

fn granted(decision: BudgetDecision) -> i64 {
    match decision {
        BudgetDecision::Granted { slot } => slot,
        other => panic!("expected a granted slot, got {other:?}"),
    }
}

fn millis_after(at: Timestamp, millis: i64) -> Timestamp {
    at.checked_add(jiff::SignedDuration::from_millis(millis))
        .expect("in range")
}

pub async fn budget_is_a_sliding_window<S: Store>(store: &S) {
    let window = Duration::from_secs(10);
    for i in 0..3 {
        granted(
            store
                .take_budget("t", 3, window, at(i))
                .await
                .expect("budget"),
        );
    }
    assert_eq!(
        store
            .take_budget("t", 3, window, at(5))
            .await
            .expect("budget"),
        BudgetDecision::WaitUntil(millis_after(at(10), 1)),
        "full until the first send has left the window"
    );
    granted(
        store
            .take_budget("other", 3, window, at(5))
            .await
            .expect("targets have their own budgets"),
    );
    assert!(
        matches!(
            store
                .take_budget("t", 3, window, at(10))
                .await
                .expect("budget"),
            BudgetDecision::WaitUntil(_)
        ),
        "a send exactly one window old still counts"
    );
    granted(
        store
            .take_budget("t", 3, window, millis_after(at(10), 1))
            .await
            .expect("budget"),
    );
}

pub async fn settled_slots_count_from_the_answer<S: Store>(store: &S) {
    let window = Duration::from_secs(10);
    let slow = granted(
        store
            .take_budget("t", 1, window, at(0))
            .await
            .expect("budget"),
    );
    // The request took 4 s to answer: its slot now ends at 14 s, not 10 s.
    store.settle_budget(slow, at(4)).await.expect("settle");
    assert_eq!(
        store
            .take_budget("t", 1, window, at(12))
            .await
            .expect("budget"),
        BudgetDecision::WaitUntil(millis_after(at(14), 1))
    );
    granted(
        store
            .take_budget("t", 1, window, millis_after(at(14), 1))
            .await
            .expect("budget"),
    );
    // Settling never moves a slot back in time.
    let late = granted(
        store
            .take_budget("u", 1, window, at(20))
            .await
            .expect("budget"),
    );
    store.settle_budget(late, at(3)).await.expect("settle");
    assert!(matches!(
        store
            .take_budget("u", 1, window, at(25))
            .await
            .expect("budget"),
        BudgetDecision::WaitUntil(_)
    ));
}

pub async fn fingerprint_maps_to_the_last_dedup_key<S: Store>(store: &S) {
    accept_one(store, trigger("k1", Severity::Error), at(0)).await;
    assert_eq!(
        store
            .dedup_key_for_fingerprint("t", "fp-k1")
            .await
            .expect("lookup")
            .as_deref(),
        Some("k1")
    );
    assert_eq!(
        store
            .dedup_key_for_fingerprint("t", "nope")
            .await
            .expect("lookup"),
        None
    );
    assert_eq!(
        store
            .dedup_key_for_fingerprint("other", "fp-k1")
            .await
            .expect("lookup"),
        None
    );
}

pub async fn stats_count_pending_dead_and_open_incidents<S: Store>(store: &S) {
    let a = queued_id(&accept_one(store, trigger("a", Severity::Error), at(0)).await);
    accept_one(store, trigger("b", Severity::Error), at(1)).await;
    accept_one(store, event("t", Some("c"), Action::Resolve, None), at(2)).await;
    store.dead_letter(a, "rejected", at(3)).await.expect("dead");
    let stats = store.lane_stats().await.expect("stats");
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0].target, "t");
    assert_eq!(stats[0].pending, 2);
    assert_eq!(stats[0].dead, 1);
    assert_eq!(stats[0].oldest_pending_accepted_at, Some(at(1)));
    assert_eq!(
        store.open_incidents().await.expect("open"),
        2,
        "a and b; c is resolved"
    );
    store.ping().await.expect("ping");
}

pub async fn fallback_hears_of_dead_letters_and_long_failures_once<S: Store>(store: &S) {
    let dead = queued_id(&accept_one(store, trigger("dead", Severity::Error), at(0)).await);
    let failing = queued_id(&accept_one(store, trigger("failing", Severity::Error), at(0)).await);
    let fresh = queued_id(&accept_one(store, trigger("fresh", Severity::Error), at(0)).await);
    store
        .dead_letter(dead, "HTTP 400: bad", at(1))
        .await
        .expect("dead");
    store
        .record_failure(failing, "HTTP 503", at(10))
        .await
        .expect("failure");
    store
        .record_failure(failing, "timeout", at(20))
        .await
        .expect("failure");
    store
        .record_failure(fresh, "HTTP 503", at(100))
        .await
        .expect("failure");

    // Failing since before 50 s: only `failing` (its first failure was at 10 s).
    let due = store.fallback_due(at(50), 10).await.expect("due");
    let seen: Vec<(i64, NoticeKind, &str)> = due
        .iter()
        .map(|n| (n.event.id, n.kind, n.reason.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            (dead, NoticeKind::DeadLettered, "HTTP 400: bad"),
            (failing, NoticeKind::Failing, "timeout"),
        ]
    );
    store
        .mark_notified(dead, NoticeKind::DeadLettered, at(51))
        .await
        .expect("mark");
    store
        .mark_notified(failing, NoticeKind::Failing, at(51))
        .await
        .expect("mark");
    assert!(
        store
            .fallback_due(at(50), 10)
            .await
            .expect("due")
            .is_empty()
    );
    // A failing event that then dies is told about again, as dead.
    store
        .dead_letter(failing, "expired", at(60))
        .await
        .expect("dead");
    let due = store.fallback_due(at(50), 10).await.expect("due");
    assert_eq!(due.len(), 1);
    assert_eq!(
        (due[0].event.id, due[0].kind),
        (failing, NoticeKind::DeadLettered)
    );
}
