//! The conformance suite every [`Store`] implementation must pass.
//!
//! Each check takes a fresh, empty store. A backend's test file includes this module
//! (`#[macro_use] mod conformance;`) and runs every check with `conformance_tests!`, so SQLite
//! and PostgreSQL are held to the same behaviour by the same code. It is test code, so it
//! lives with the tests rather than in the shipped crate.

use std::time::Duration;

use jiff::Timestamp;
use pagerduty_events::{RoutingKey, Severity};
use serde_json::json;

use pagerbridge::store::suppress::Status;
use pagerbridge::store::{
    Acceptance, Action, BudgetDecision, BudgetId, BudgetSecret, Condition, DeadLetterFilter, Fence,
    FingerprintLookup, IncidentSource, LaneState, Lease, LeaseName, NewEvent, NoticeKind,
    ReplicaId, Store, Superseded, SuppressionPolicy,
};
use pagerbridge::store::{IncidentFilter, StatusFilter};

/// Generates one `#[tokio::test]` per conformance check; `$make` is an async expression
/// giving a fresh store and a guard kept alive for the test (e.g. its temporary directory).
/// Attributes after it go on every test: `conformance_tests!(make(), #[ignore = "needs …"])`.
macro_rules! conformance_tests {
    ($make:expr $(, #[$attr:meta])* $(,)?) => {
        conformance_tests!(@each [$(#[$attr])*] $make;
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
            an_incident_is_not_forgotten_while_it_has_queued_or_dead_events,
            budget_is_a_sliding_window,
            settled_slots_count_from_the_answer,
            a_slot_in_flight_counts_until_it_is_settled,
            a_released_slot_no_longer_counts,
            a_full_window_with_a_slot_in_flight_is_looked_at_again_soon,
            targets_sharing_a_budget_share_one_window,
            the_budget_secret_is_created_once,
            fingerprint_maps_to_the_last_dedup_key,
            incidents_keyed_by_their_labels_are_found_by_that_key,
            stats_count_pending_dead_and_open_incidents,
            fallback_hears_of_dead_letters_and_long_failures_once,
            replay_puts_a_dead_letter_back_in_its_place_with_a_clean_slate,
            replay_skips_what_a_delivered_newer_event_superseded,
            replay_of_a_whole_incident_keeps_its_order,
            a_replay_overtaken_in_flight_goes_back_to_dead,
            replay_and_drop_select_by_filter_and_never_by_default,
            drop_keeps_a_record_and_touches_only_dead_letters,
            replayed_events_expire_from_their_replay,
            a_conditional_acknowledge_is_decided_inside_the_transaction,
            a_conditional_resolve_acts_only_on_open_incidents,
            incidents_remember_their_source_and_first_event,
            one_request_decides_its_events_in_order,
            concurrent_requests_each_get_their_own_answers,
            a_lease_is_renewed_by_its_owner_and_taken_over_after_expiry,
            a_stale_owner_cannot_renew_after_a_takeover,
            a_released_lease_is_free_at_once_with_a_new_epoch,
            a_stale_fence_is_refused_and_takes_no_slot,
            a_lane_state_is_reported_by_its_owner_and_cleared_by_a_takeover,
            budget_use_counts_the_window_and_slots_in_flight,
            incidents_are_listed_by_filter_in_key_order_a_page_at_a_time,
            counts_stay_right_across_every_change,
        );
    };
    // The attributes travel as one token tree, so that they can be repeated per check.
    (@each $attrs:tt $make:expr; $($check:ident),+ $(,)?) => {
        $( conformance_tests!(@one $attrs $make; $check); )+
    };
    (@one [$(#[$attr:meta])*] $make:expr; $check:ident) => {
        #[tokio::test]
        $(#[$attr])*
        async fn $check() {
            let (store, _guard) = $make.await;
            $crate::conformance::$check(&store).await;
        }
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
        event: json!({"event_action": action.as_str(), "dedup_key": key}).into(),
        alert: Some(json!({"labels": {"alertname": "X"}}).into()),
        fingerprint: key.map(|k| format!("fp-{k}")),
        labels_key: false,
        payload_hash: (action == Action::Trigger).then(|| format!("hash-{}", key.unwrap_or(""))),
        condition: Condition::Always,
        source: None,
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
    accept_one(store, trigger("older", Severity::Error), at(0)).await;
    let other = event("u", Some("old"), Action::Trigger, Some(Severity::Info));
    accept_one(store, other, at(0)).await;
    let fresh = queued_id(&accept_one(store, trigger("fresh", Severity::Error), at(100)).await);
    let expired = store.expire_events(at(50), at(200)).await.expect("expire");
    assert_eq!(
        expired.per_target,
        [("t".to_owned(), 2), ("u".to_owned(), 1)].into()
    );
    assert_eq!(next_id(store, "t").await, Some(fresh));
    let dead = store.dead_letters(None, 10).await.expect("list");
    assert_eq!(dead.len(), 3);
    for letter in &dead {
        assert!(letter.reason.contains("expired"), "{}", letter.reason);
    }
}

pub async fn incident_state_expires<S: Store>(store: &S) {
    let old = queued_id(&accept_one(store, trigger("old", Severity::Error), at(0)).await);
    accept_one(store, trigger("new", Severity::Error), at(100)).await;
    store.mark_delivered(old, at(1)).await.expect("delivered");
    assert_eq!(store.expire_incidents(at(50)).await.expect("expire"), 1);
    assert!(store.incident("t", "old").await.expect("get").is_none());
    assert!(store.incident("t", "new").await.expect("get").is_some());
}

/// An incident's queued and dead events carry its chain (the key of the index of its events,
/// migration 0009): forgetting it under them would let a new event of the key start another
/// incident, whose events would not wait for the older ones.
pub async fn an_incident_is_not_forgotten_while_it_has_queued_or_dead_events<S: Store>(store: &S) {
    let queued = queued_id(&accept_one(store, trigger("queued", Severity::Info), at(0)).await);
    let dead = queued_id(&accept_one(store, trigger("dead", Severity::Info), at(0)).await);
    let sent = queued_id(&accept_one(store, trigger("sent", Severity::Info), at(0)).await);
    store
        .dead_letter(dead, "HTTP 400", at(1))
        .await
        .expect("dead");
    store.mark_delivered(sent, at(1)).await.expect("delivered");
    assert_eq!(store.expire_incidents(at(50)).await.expect("expire"), 1);
    assert!(store.incident("t", "sent").await.expect("get").is_none());
    for key in ["queued", "dead"] {
        assert!(
            store.incident("t", key).await.expect("get").is_some(),
            "{key}"
        );
    }
    // A critical resolve of the queued incident, long after: it still waits for the trigger.
    let resolve = queued_id(
        &accept_one(
            store,
            event(
                "t",
                Some("queued"),
                Action::Resolve,
                Some(Severity::Critical),
            ),
            at(100),
        )
        .await,
    );
    assert_eq!(next_id(store, "t").await, Some(queued));
    store
        .mark_delivered(queued, at(101))
        .await
        .expect("delivered");
    assert_eq!(next_id(store, "t").await, Some(resolve));
    store
        .mark_delivered(resolve, at(102))
        .await
        .expect("delivered");
    // The dead letter, dropped, no longer holds its incident; nor does anything hold the other.
    let dropped = store
        .drop_dead(&DeadLetterFilter::everything(), "obsolete", at(103))
        .await
        .expect("drop");
    assert_eq!(dropped, 1);
    assert_eq!(store.expire_incidents(at(200)).await.expect("expire"), 2);
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

/// The budget of the routing key made of `seed` repeated (a fixed secret: the stores only
/// ever see ids).
fn budget(seed: char) -> BudgetId {
    let key = RoutingKey::new(&seed.to_string().repeat(32)).expect("valid key");
    BudgetId::new(
        &key,
        &BudgetSecret::from_stored(&[1; 32]).expect("32 bytes"),
    )
}

pub async fn targets_sharing_a_budget_share_one_window<S: Store>(store: &S) {
    let window = Duration::from_secs(10);
    let shared = budget('k');
    // Two targets (two lanes) with the same key and limit: three requests between them.
    for (i, _target) in ["a", "b", "a"].into_iter().enumerate() {
        granted(
            store
                .take_budget(None, &shared, 3, window, at(i as i64))
                .await
                .expect("budget"),
        );
    }
    for _target in ["a", "b"] {
        assert!(
            matches!(
                store
                    .take_budget(None, &shared, 3, window, at(4))
                    .await
                    .expect("budget"),
                BudgetDecision::WaitUntil(_)
            ),
            "the one window is full for every target"
        );
    }
    // A target configured with a larger limit counts the same slots against its own.
    granted(
        store
            .take_budget(None, &shared, 4, window, at(4))
            .await
            .expect("budget"),
    );
    // Another key has a window of its own.
    granted(
        store
            .take_budget(None, &budget('m'), 3, window, at(4))
            .await
            .expect("budget"),
    );
}

pub async fn the_budget_secret_is_created_once<S: Store>(store: &S) {
    let first = store.budget_secret().await.expect("secret");
    assert_eq!(store.budget_secret().await.expect("secret"), first);
    assert_ne!(
        first,
        BudgetSecret::from_stored(&[0; 32]).expect("32 bytes"),
        "random, not a default"
    );
}

pub async fn budget_is_a_sliding_window<S: Store>(store: &S) {
    let window = Duration::from_secs(10);
    for i in 0..3 {
        let slot = granted(
            store
                .take_budget(None, &budget('t'), 3, window, at(i))
                .await
                .expect("budget"),
        );
        // Answered at once.
        store.settle_budget(slot, at(i)).await.expect("settle");
    }
    assert_eq!(
        store
            .take_budget(None, &budget('t'), 3, window, at(5))
            .await
            .expect("budget"),
        BudgetDecision::WaitUntil(millis_after(at(10), 1)),
        "full until the first send has left the window"
    );
    granted(
        store
            .take_budget(None, &budget('o'), 3, window, at(5))
            .await
            .expect("other keys have their own budgets"),
    );
    assert!(
        matches!(
            store
                .take_budget(None, &budget('t'), 3, window, at(10))
                .await
                .expect("budget"),
            BudgetDecision::WaitUntil(_)
        ),
        "a send exactly one window old still counts"
    );
    granted(
        store
            .take_budget(None, &budget('t'), 3, window, millis_after(at(10), 1))
            .await
            .expect("budget"),
    );
}

pub async fn settled_slots_count_from_the_answer<S: Store>(store: &S) {
    let window = Duration::from_secs(10);
    let slow = granted(
        store
            .take_budget(None, &budget('t'), 1, window, at(0))
            .await
            .expect("budget"),
    );
    // The request took 4 s to answer: its slot now ends at 14 s, not 10 s.
    store.settle_budget(slow, at(4)).await.expect("settle");
    assert_eq!(
        store
            .take_budget(None, &budget('t'), 1, window, at(12))
            .await
            .expect("budget"),
        BudgetDecision::WaitUntil(millis_after(at(14), 1))
    );
    granted(
        store
            .take_budget(None, &budget('t'), 1, window, millis_after(at(14), 1))
            .await
            .expect("budget"),
    );
}

pub async fn a_released_slot_no_longer_counts<S: Store>(store: &S) {
    let window = Duration::from_secs(10);
    let kept = granted(
        store
            .take_budget(None, &budget('r'), 2, window, at(0))
            .await
            .expect("budget"),
    );
    let unused = granted(
        store
            .take_budget(None, &budget('r'), 2, window, at(1))
            .await
            .expect("budget"),
    );
    assert!(
        matches!(
            store
                .take_budget(None, &budget('r'), 2, window, at(2))
                .await
                .expect("budget"),
            BudgetDecision::WaitUntil(_)
        ),
        "full with both slots held"
    );
    store.release_budget(unused).await.expect("release");
    assert_eq!(
        store
            .budget_used(&budget('r'), window, at(2))
            .await
            .expect("used"),
        1,
        "only the kept slot counts"
    );
    granted(
        store
            .take_budget(None, &budget('r'), 2, window, at(2))
            .await
            .expect("the released slot's place is free"),
    );
    // The kept slot was not touched, and a slot unknown (or released twice) is no error.
    store.release_budget(unused).await.expect("release again");
    store.settle_budget(kept, at(0)).await.expect("settle");
    assert_eq!(
        store
            .budget_used(&budget('r'), window, at(3))
            .await
            .expect("used"),
        2
    );
}

pub async fn a_full_window_with_a_slot_in_flight_is_looked_at_again_soon<S: Store>(store: &S) {
    let window = Duration::from_secs(10);
    let sent = granted(
        store
            .take_budget(None, &budget('s'), 2, window, at(0))
            .await
            .expect("budget"),
    );
    store.settle_budget(sent, at(0)).await.expect("settle");
    let in_flight = granted(
        store
            .take_budget(None, &budget('s'), 2, window, at(1))
            .await
            .expect("budget"),
    );
    // The settled slot leaves at 10 s, but the one in flight may be given back any moment.
    assert_eq!(
        store
            .take_budget(None, &budget('s'), 2, window, at(2))
            .await
            .expect("budget"),
        BudgetDecision::WaitUntil(millis_after(at(2), 50))
    );
    store.release_budget(in_flight).await.expect("release");
    granted(
        store
            .take_budget(None, &budget('s'), 2, window, millis_after(at(2), 50))
            .await
            .expect("the released slot's place is free"),
    );
    // Full of settled slots only: the exact time the oldest leaves.
    let third = granted(
        store
            .take_budget(None, &budget('u'), 1, window, at(0))
            .await
            .expect("budget"),
    );
    store.settle_budget(third, at(0)).await.expect("settle");
    assert_eq!(
        store
            .take_budget(None, &budget('u'), 1, window, at(3))
            .await
            .expect("budget"),
        BudgetDecision::WaitUntil(millis_after(at(10), 1))
    );
}

pub async fn a_slot_in_flight_counts_until_it_is_settled<S: Store>(store: &S) {
    let window = Duration::from_secs(10);
    let slot = granted(
        store
            .take_budget(None, &budget('f'), 1, window, at(0))
            .await
            .expect("budget"),
    );
    // Not answered yet: PagerDuty may count the request from any moment until the answer.
    // Nobody knows when that will be, so the caller looks again soon.
    assert_eq!(
        store
            .take_budget(None, &budget('f'), 1, window, at(5))
            .await
            .expect("budget"),
        BudgetDecision::WaitUntil(millis_after(at(5), 50)),
        "a request in flight holds its slot"
    );
    // Still unanswered past its own window: it holds the slot for a second window.
    assert_eq!(
        store
            .take_budget(None, &budget('f'), 1, window, at(15))
            .await
            .expect("budget"),
        BudgetDecision::WaitUntil(millis_after(at(20), 1)),
        "a request in flight past its window still holds its slot"
    );
    store.settle_budget(slot, at(16)).await.expect("settle");
    assert_eq!(
        store
            .take_budget(None, &budget('f'), 1, window, at(17))
            .await
            .expect("budget"),
        BudgetDecision::WaitUntil(millis_after(at(26), 1)),
        "a settled slot counts from its answer"
    );
    // A slot never settled (its replica died) counts for two windows, then frees.
    granted(
        store
            .take_budget(None, &budget('g'), 1, window, at(0))
            .await
            .expect("budget"),
    );
    assert!(matches!(
        store
            .take_budget(None, &budget('g'), 1, window, at(20))
            .await
            .expect("budget"),
        BudgetDecision::WaitUntil(_)
    ));
    granted(
        store
            .take_budget(None, &budget('g'), 1, window, millis_after(at(20), 1))
            .await
            .expect("budget"),
    );
}

pub async fn fingerprint_maps_to_the_last_dedup_key<S: Store>(store: &S) {
    accept_one(store, trigger("k1", Severity::Error), at(0)).await;
    accept_one(store, trigger("k2", Severity::Error), at(0)).await;
    // The same alert under a new key (its target's `dedup` switched): the newer key wins.
    let moved = NewEvent {
        fingerprint: Some("fp-k1".to_owned()),
        ..trigger("k1-new", Severity::Error)
    };
    accept_one(store, moved, at(5)).await;
    let pairs = remembered(
        store,
        "t",
        &[("fp-k1", None), ("fp-k2", None), ("nope", None)],
    )
    .await;
    assert_eq!(pairs, ["fp-k1=k1-new", "fp-k2=k2"]);
    assert!(
        remembered(store, "other", &[("fp-k1", None)])
            .await
            .is_empty()
    );
    assert!(remembered(store, "t", &[]).await.is_empty());
}

/// `dedup_keys_for_fingerprints` of (fingerprint, labels' key) pairs: `fingerprint=key`, sorted.
async fn remembered<S: Store>(
    store: &S,
    target: &str,
    alerts: &[(&str, Option<&str>)],
) -> Vec<String> {
    let lookups: Vec<FingerprintLookup<'_>> = alerts
        .iter()
        .map(|&(fingerprint, labels_key)| FingerprintLookup {
            fingerprint,
            labels_key,
        })
        .collect();
    let mut pairs: Vec<String> = store
        .dedup_keys_for_fingerprints(target, &lookups)
        .await
        .expect("lookup")
        .into_iter()
        .map(|(fingerprint, key)| format!("{fingerprint}={key}"))
        .collect();
    pairs.sort_unstable();
    pairs
}

/// An incident keyed by its alert's labels' key (the default) is left out of the fingerprint
/// index: found through that key when the lookup gives it, and then the latest of the
/// fingerprint's incidents wins, whichever way each is keyed.
pub async fn incidents_keyed_by_their_labels_are_found_by_that_key<S: Store>(store: &S) {
    let by_labels = |key: &str, fingerprint: &str| NewEvent {
        fingerprint: Some(fingerprint.to_owned()),
        labels_key: true,
        ..trigger(key, Severity::Error)
    };
    accept_one(store, by_labels("labels-a", "fp-a"), at(0)).await;
    // Without its labels' key, a lookup cannot see it: it is not in the index.
    assert!(remembered(store, "t", &[("fp-a", None)]).await.is_empty());
    let pairs = remembered(store, "t", &[("fp-a", Some("labels-a"))]).await;
    assert_eq!(pairs, ["fp-a=labels-a"]);
    // Another alert's labels' key does not answer for this fingerprint.
    assert!(
        remembered(store, "t", &[("fp-b", Some("labels-a"))])
            .await
            .is_empty()
    );

    // Later, the same alert under a group key (its target's `dedup` switched): the newer wins.
    let grouped = NewEvent {
        fingerprint: Some("fp-a".to_owned()),
        ..trigger("group-1", Severity::Error)
    };
    accept_one(store, grouped, at(5)).await;
    let pairs = remembered(store, "t", &[("fp-a", Some("labels-a"))]).await;
    assert_eq!(pairs, ["fp-a=group-1"]);
    // Switched back: the labels-keyed incident is updated last, and wins again.
    accept_one(
        store,
        NewEvent {
            payload_hash: Some("changed".to_owned()),
            ..by_labels("labels-a", "fp-a")
        },
        at(9),
    )
    .await;
    let pairs = remembered(store, "t", &[("fp-a", Some("labels-a"))]).await;
    assert_eq!(pairs, ["fp-a=labels-a"]);
    // Without the labels' key, only the index's answer is left.
    let pairs = remembered(store, "t", &[("fp-a", None)]).await;
    assert_eq!(pairs, ["fp-a=group-1"]);
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
    let waiting = queued_id(&accept_one(store, trigger("waiting", Severity::Info), at(1)).await);
    accept_one(store, trigger("fresh", Severity::Error), at(100)).await;
    accept_one(
        store,
        event("calm", Some("k"), Action::Resolve, None),
        at(0),
    )
    .await;
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

    // The lane of `t` has been failing since 10 s; `calm` has had no failure.
    let due = store.fallback_due(at(50), 10).await.expect("due");
    let seen: Vec<(i64, NoticeKind)> = due.iter().map(|n| (n.event.id, n.kind)).collect();
    assert_eq!(
        seen,
        [
            (dead, NoticeKind::DeadLettered),
            (failing, NoticeKind::Failing),
            (waiting, NoticeKind::Failing),
        ]
    );
    assert_eq!(due[0].reason, "HTTP 400: bad");
    assert_eq!(due[1].reason, "timeout");
    assert!(
        due[2].reason.contains("waiting behind"),
        "{}",
        due[2].reason
    );
    // Not yet failing long enough: nothing pending is due.
    let early = store.fallback_due(at(5), 10).await.expect("due");
    assert_eq!(early.iter().map(|n| n.event.id).collect::<Vec<_>>(), [dead]);

    for (id, kind) in seen {
        store.mark_notified(id, kind, at(51)).await.expect("mark");
    }
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

async fn dead_ids<S: Store>(store: &S) -> Vec<i64> {
    store
        .find_dead_letters(&DeadLetterFilter::everything(), false, None, 1000)
        .await
        .expect("list")
        .iter()
        .map(|d| d.id)
        .collect()
}

async fn pending_ids<S: Store>(store: &S) -> Vec<i64> {
    store
        .pending(None, 1000)
        .await
        .expect("pending")
        .iter()
        .map(|e| e.id)
        .collect()
}

pub async fn replay_puts_a_dead_letter_back_in_its_place_with_a_clean_slate<S: Store>(store: &S) {
    let trigger_id = queued_id(&accept_one(store, trigger("k", Severity::Error), at(0)).await);
    store
        .record_failure(trigger_id, "HTTP 503", at(1))
        .await
        .expect("failure");
    store
        .dead_letter(trigger_id, "PagerDuty rejected the event (HTTP 400)", at(2))
        .await
        .expect("dead");
    store
        .mark_notified(trigger_id, NoticeKind::DeadLettered, at(3))
        .await
        .expect("notified");
    // A newer event of the same incident, still pending (queued after the trigger died).
    let ack = queued_id(
        &accept_one(
            store,
            event(
                "t",
                Some("k"),
                Action::Acknowledge,
                Some(Severity::Critical),
            ),
            at(4),
        )
        .await,
    );
    assert_eq!(next_id(store, "t").await, Some(ack));

    let report = store
        .replay(&DeadLetterFilter::ids([trigger_id]), at(10))
        .await
        .expect("replay");
    assert_eq!(report.replayed, [trigger_id]);
    assert!(report.superseded.is_empty(), "{report:?}");
    assert_eq!(report.targets, ["t"]);

    // The original id, so it goes before the newer acknowledge of its incident.
    assert_eq!(pending_ids(store).await, [trigger_id, ack]);
    let again = store
        .next_eligible("t")
        .await
        .expect("next")
        .expect("replayed event is eligible");
    assert_eq!(again.id, trigger_id);
    assert_eq!(again.attempts, 0);
    assert_eq!(again.last_error, None);
    assert_eq!(again.accepted_at, at(0), "acceptance time is history");
    assert!(dead_ids(store).await.is_empty());
    let stats = store.lane_stats().await.expect("stats");
    assert_eq!((stats[0].pending, stats[0].dead), (2, 0));
    // first_failed_at and the notices were reset: the fallback hears of it afresh if it fails.
    assert!(
        store
            .fallback_due(at(1000), 10)
            .await
            .expect("due")
            .is_empty()
    );
    store
        .dead_letter(trigger_id, "rejected again", at(11))
        .await
        .expect("dead");
    let due = store.fallback_due(at(0), 10).await.expect("due");
    assert_eq!(
        due.iter().map(|n| (n.event.id, n.kind)).collect::<Vec<_>>(),
        [(trigger_id, NoticeKind::DeadLettered)]
    );
    // Replaying it again is harmless; replaying something not dead does nothing.
    let report = store
        .replay(&DeadLetterFilter::ids([ack, 999_999]), at(12))
        .await
        .expect("replay");
    assert_eq!(report, Default::default());
}

pub async fn replay_skips_what_a_delivered_newer_event_superseded<S: Store>(store: &S) {
    // The trigger dies, then the alert resolves and PagerDuty takes the resolve: replaying the
    // trigger now would re-open a resolved alert.
    let old_trigger = queued_id(&accept_one(store, trigger("k", Severity::Error), at(0)).await);
    store
        .dead_letter(old_trigger, "HTTP 400", at(1))
        .await
        .expect("dead");
    let resolve =
        queued_id(&accept_one(store, event("t", Some("k"), Action::Resolve, None), at(2)).await);
    store
        .mark_delivered(resolve, at(3))
        .await
        .expect("delivered");
    // And a resolve that died, after which the alert fired again and that trigger went through.
    let old_resolve =
        queued_id(&accept_one(store, event("t", Some("j"), Action::Resolve, None), at(4)).await);
    store
        .dead_letter(old_resolve, "HTTP 400", at(5))
        .await
        .expect("dead");
    let refire = queued_id(&accept_one(store, trigger("j", Severity::Error), at(6)).await);
    store
        .mark_delivered(refire, at(7))
        .await
        .expect("delivered");
    // Unrelated: an independent change event and a trigger of another incident.
    let change = queued_id(&accept_one(store, event("t", None, Action::Change, None), at(8)).await);
    let other = queued_id(&accept_one(store, trigger("other", Severity::Error), at(8)).await);
    for id in [change, other] {
        store
            .dead_letter(id, "HTTP 400", at(9))
            .await
            .expect("dead");
    }
    // Incident state expiring does not make the superseded replayable.
    store.expire_incidents(at(100)).await.expect("expire");

    let report = store
        .replay(&DeadLetterFilter::everything(), at(10))
        .await
        .expect("replay");
    assert_eq!(report.replayed, [change, other]);
    assert_eq!(
        report.superseded,
        [
            Superseded {
                id: old_trigger,
                by: resolve
            },
            Superseded {
                id: old_resolve,
                by: refire
            },
        ]
    );
    assert_eq!(pending_ids(store).await, [change, other]);
    let dead = store
        .find_dead_letters(&DeadLetterFilter::everything(), false, None, 10)
        .await
        .expect("list");
    assert_eq!(
        dead.iter()
            .map(|d| (d.id, d.superseded_by))
            .collect::<Vec<_>>(),
        [(old_trigger, Some(resolve)), (old_resolve, Some(refire))],
        "superseded events stay dead letters, saying by what"
    );
    assert_eq!(dead[0].reason, "HTTP 400", "the original reason is kept");
}

pub async fn replay_of_a_whole_incident_keeps_its_order<S: Store>(store: &S) {
    // An outage long enough for everything to expire: trigger, acknowledge and resolve of `k`.
    let mut ids = Vec::new();
    for (i, action) in [Action::Trigger, Action::Acknowledge, Action::Resolve]
        .into_iter()
        .enumerate()
    {
        let e = event("t", Some("k"), action, Some(Severity::Warning));
        ids.push(queued_id(&accept_one(store, e, at(i as i64)).await));
    }
    let late = queued_id(&accept_one(store, trigger("late", Severity::Critical), at(50)).await);
    assert_eq!(
        store
            .expire_events(at(10), at(20))
            .await
            .expect("expire")
            .total(),
        3
    );

    // Only the trigger: its incident's acknowledge and resolve are dead and would not follow,
    // so PagerDuty would be left triggered. Superseded by the oldest of them.
    let report = store
        .replay(&DeadLetterFilter::ids([ids[0]]), at(21))
        .await
        .expect("replay");
    assert!(report.replayed.is_empty(), "{report:?}");
    assert_eq!(
        report.superseded,
        [Superseded {
            id: ids[0],
            by: ids[1]
        }]
    );

    // The whole incident: all three, in their original order.
    let filter = DeadLetterFilter {
        dedup_key: Some("k".into()),
        ..DeadLetterFilter::default()
    };
    let report = store.replay(&filter, at(22)).await.expect("replay");
    assert_eq!(report.replayed, ids);
    assert!(report.superseded.is_empty());
    // `late` is more severe, but it is another incident: per-incident order is what holds.
    assert_eq!(next_id(store, "t").await, Some(late));
    store.mark_delivered(late, at(23)).await.expect("delivered");
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(next_id(store, "t").await, Some(*id), "step {i}");
        store
            .mark_delivered(*id, at(24 + i as i64))
            .await
            .expect("delivered");
    }
    assert_eq!(next_id(store, "t").await, None);
    assert!(dead_ids(store).await.is_empty());
}

pub async fn a_replay_overtaken_in_flight_goes_back_to_dead<S: Store>(store: &S) {
    let old = queued_id(&accept_one(store, trigger("k", Severity::Error), at(0)).await);
    store
        .dead_letter(old, "HTTP 400", at(1))
        .await
        .expect("dead");
    let resolve =
        queued_id(&accept_one(store, event("t", Some("k"), Action::Resolve, None), at(2)).await);
    // The lane has picked the resolve and is sending it when the operator replays the trigger.
    assert_eq!(next_id(store, "t").await, Some(resolve));
    let report = store
        .replay(&DeadLetterFilter::ids([old]), at(3))
        .await
        .expect("replay");
    assert_eq!(
        report.replayed,
        [old],
        "the resolve is pending: it would follow"
    );
    store
        .mark_delivered(resolve, at(4))
        .await
        .expect("delivered");
    // The trigger must not be sent after its resolve reached PagerDuty.
    assert_eq!(next_id(store, "t").await, None);
    let dead = store
        .find_dead_letters(&DeadLetterFilter::everything(), false, None, 10)
        .await
        .expect("list");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, old);
    assert_eq!(dead[0].superseded_by, Some(resolve));
    assert!(
        dead[0].reason.starts_with("superseded"),
        "{}",
        dead[0].reason
    );
    // Nothing for humans to act on: the fallback is not told.
    assert!(store.fallback_due(at(0), 10).await.expect("due").is_empty());
}

pub async fn replay_and_drop_select_by_filter_and_never_by_default<S: Store>(store: &S) {
    // Independent incidents on two targets, dead at 10 s, 20 s, 30 s, 40 s.
    let mut ids = Vec::new();
    for (i, (target, action)) in [
        ("t", Action::Trigger),
        ("t", Action::Resolve),
        ("u", Action::Trigger),
        ("u", Action::Acknowledge),
    ]
    .into_iter()
    .enumerate()
    {
        let key = format!("k{i}");
        let e = event(target, Some(&key), action, Some(Severity::Error));
        let id = queued_id(&accept_one(store, e, at(0)).await);
        store
            .dead_letter(id, "HTTP 400", at(10 * (i as i64 + 1)))
            .await
            .expect("dead");
        ids.push(id);
    }
    let find = |filter: DeadLetterFilter| async move {
        store
            .find_dead_letters(&filter, false, None, 100)
            .await
            .expect("find")
            .iter()
            .map(|d| d.id)
            .collect::<Vec<_>>()
    };
    // An empty filter selects nothing, for listing, replay and drop alike.
    assert!(find(DeadLetterFilter::default()).await.is_empty());
    assert!(DeadLetterFilter::default().is_empty());
    let nothing = store
        .replay(&DeadLetterFilter::default(), at(50))
        .await
        .expect("replay");
    assert!(nothing.replayed.is_empty());
    assert_eq!(
        store
            .drop_dead(&DeadLetterFilter::default(), "oops", at(50))
            .await
            .expect("drop"),
        0
    );
    assert!(find(DeadLetterFilter::ids([])).await.is_empty());
    assert_eq!(find(DeadLetterFilter::everything()).await, ids);

    let by_target = DeadLetterFilter {
        target: Some("u".into()),
        ..DeadLetterFilter::default()
    };
    assert_eq!(find(by_target).await, ids[2..]);
    let by_action = DeadLetterFilter {
        action: Some(Action::Trigger),
        ..DeadLetterFilter::default()
    };
    assert_eq!(find(by_action).await, [ids[0], ids[2]]);
    let by_time = DeadLetterFilter {
        dead_since: Some(at(20)),
        dead_before: Some(at(40)),
        ..DeadLetterFilter::default()
    };
    assert_eq!(find(by_time).await, [ids[1], ids[2]]);
    // Criteria combine: the trigger on `u` only.
    let both = DeadLetterFilter {
        target: Some("u".into()),
        action: Some(Action::Trigger),
        all: true,
        ..DeadLetterFilter::default()
    };
    assert_eq!(find(both.clone()).await, [ids[2]]);
    let by_key_and_ids = DeadLetterFilter {
        ids: Some(vec![ids[0], ids[1]]),
        dedup_key: Some("k1".into()),
        ..DeadLetterFilter::default()
    };
    assert_eq!(find(by_key_and_ids).await, [ids[1]]);
    // Paging.
    let page = store
        .find_dead_letters(&DeadLetterFilter::everything(), false, Some(ids[1]), 1)
        .await
        .expect("page");
    assert_eq!(page.iter().map(|d| d.id).collect::<Vec<_>>(), [ids[2]]);

    let report = store.replay(&both, at(50)).await.expect("replay");
    assert_eq!(report.replayed, [ids[2]]);
    assert_eq!(report.targets, ["u"]);
    assert_eq!(pending_ids(store).await, [ids[2]]);
    let dropped = store
        .drop_dead(
            &DeadLetterFilter {
                target: Some("t".into()),
                ..DeadLetterFilter::default()
            },
            "known bad payloads",
            at(51),
        )
        .await
        .expect("drop");
    assert_eq!(dropped, 2);
    assert_eq!(dead_ids(store).await, [ids[3]]);
}

pub async fn drop_keeps_a_record_and_touches_only_dead_letters<S: Store>(store: &S) {
    let bad = queued_id(&accept_one(store, trigger("bad", Severity::Error), at(0)).await);
    let queued = queued_id(&accept_one(store, trigger("queued", Severity::Error), at(0)).await);
    store
        .dead_letter(bad, "HTTP 400", at(1))
        .await
        .expect("dead");
    // A pending event is never dropped, even by id.
    let dropped = store
        .drop_dead(&DeadLetterFilter::ids([queued]), "no", at(2))
        .await
        .expect("drop");
    assert_eq!(dropped, 0);
    assert_eq!(pending_ids(store).await, [queued]);

    let reason = "duplicate of INC-42, handled by hand";
    let dropped = store
        .drop_dead(&DeadLetterFilter::everything(), reason, at(3))
        .await
        .expect("drop");
    assert_eq!(dropped, 1);
    // Gone from the dead letters, the counts and the fallback; never replayed.
    assert!(dead_ids(store).await.is_empty());
    assert!(store.dead_letters(None, 10).await.expect("list").is_empty());
    let stats = store.lane_stats().await.expect("stats");
    assert_eq!((stats[0].pending, stats[0].dead), (1, 0));
    assert!(
        store
            .fallback_due(at(0), 10)
            .await
            .expect("due")
            .iter()
            .all(|n| n.event.id != bad)
    );
    let report = store
        .replay(&DeadLetterFilter::everything(), at(4))
        .await
        .expect("replay");
    assert!(report.replayed.is_empty());
    assert_eq!(pending_ids(store).await, [queued]);
    // Dropping again finds nothing.
    assert_eq!(
        store
            .drop_dead(&DeadLetterFilter::ids([bad]), "again", at(5))
            .await
            .expect("drop"),
        0
    );
    // The record: listed when asked for, with the reason, the time and the original reason.
    let record = store
        .find_dead_letters(&DeadLetterFilter::everything(), true, None, 10)
        .await
        .expect("list");
    assert_eq!(record.len(), 1);
    assert_eq!(record[0].id, bad);
    assert_eq!(record[0].drop_reason.as_deref(), Some(reason));
    assert_eq!(record[0].dropped_at, Some(at(3)));
    assert_eq!(record[0].reason, "HTTP 400");
}

pub async fn replayed_events_expire_from_their_replay<S: Store>(store: &S) {
    let old = queued_id(&accept_one(store, trigger("k", Severity::Error), at(0)).await);
    assert_eq!(
        store
            .expire_events(at(100), at(100))
            .await
            .expect("expire")
            .total(),
        1
    );
    let report = store
        .replay(&DeadLetterFilter::ids([old]), at(1000))
        .await
        .expect("replay");
    assert_eq!(report.replayed, [old]);
    // Accepted at 0 s, but replayed at 1000 s: not too old at a cutoff of 500 s.
    assert_eq!(
        store
            .expire_events(at(500), at(1001))
            .await
            .expect("expire")
            .total(),
        0
    );
    assert_eq!(next_id(store, "t").await, Some(old));
    assert_eq!(
        store
            .expire_events(at(1001), at(1002))
            .await
            .expect("expire")
            .total(),
        1
    );
}

/// The silence watcher's acknowledge (`Condition::WhileTriggered`) is queued only while the
/// incident is triggered *as the accepting transaction sees it*: an acknowledge planned while
/// the incident was triggered, whose resolve committed first, is suppressed, never sent after
/// the resolve.
pub async fn a_conditional_acknowledge_is_decided_inside_the_transaction<S: Store>(store: &S) {
    let acknowledge = |key: &str| NewEvent {
        condition: Condition::WhileTriggered,
        ..event("t", Some(key), Action::Acknowledge, None)
    };
    // Triggered: queued, and the incident is acknowledged.
    let trigger_a = queued_id(&accept_one(store, trigger("a", Severity::Error), at(0)).await);
    let ack_a = queued_id(&accept_one(store, acknowledge("a"), at(1)).await);
    let state = store
        .incident("t", "a")
        .await
        .expect("incident")
        .expect("a");
    assert_eq!(state.status, Status::Acknowledged);
    // The race: the resolve commits between the watcher's look and its accept.
    let trigger_b = queued_id(&accept_one(store, trigger("b", Severity::Error), at(0)).await);
    let resolve_b =
        queued_id(&accept_one(store, event("t", Some("b"), Action::Resolve, None), at(1)).await);
    assert_eq!(
        accept_one(store, acknowledge("b"), at(2)).await,
        Acceptance::Suppressed {
            reason: "not_triggered"
        }
    );
    let state = store
        .incident("t", "b")
        .await
        .expect("incident")
        .expect("b");
    assert_eq!(
        state.status,
        Status::Resolved,
        "the suppressed ack left it alone"
    );
    // An incident never seen, or already acknowledged, is not acknowledged either.
    for key in ["unknown", "a"] {
        assert_eq!(
            accept_one(store, acknowledge(key), at(3)).await,
            Acceptance::Suppressed {
                reason: "not_triggered"
            },
            "{key}"
        );
    }
    assert_eq!(
        pending_ids(store).await,
        [trigger_a, ack_a, trigger_b, resolve_b]
    );
}

const LEASE_TTL: Duration = Duration::from_secs(10);

fn replica(name: &str) -> ReplicaId {
    ReplicaId::new(name).expect("non-empty id")
}

/// `acquire_or_renew` that must succeed.
async fn acquire<S: Store>(
    store: &S,
    lane: &LeaseName,
    owner: &ReplicaId,
    now: Timestamp,
) -> Lease {
    store
        .acquire_or_renew(lane, owner, LEASE_TTL, now)
        .await
        .expect("lease store")
        .unwrap_or_else(|| panic!("{owner} gets {lane} at {now}"))
}

pub async fn a_lease_is_renewed_by_its_owner_and_taken_over_after_expiry<S: Store>(store: &S) {
    let lane = LeaseName::lane("t");
    let (a, b) = (replica("a"), replica("b"));
    let first = acquire(store, &lane, &a, at(0)).await;
    assert_eq!(first.expires_at, at(10));
    // Another replica cannot take it while it lasts, up to its last millisecond.
    for now in [at(1), millis_after(at(10), -1)] {
        assert_eq!(
            store
                .acquire_or_renew(&lane, &b, LEASE_TTL, now)
                .await
                .expect("lease store"),
            None,
            "{b} must not take {lane} at {now}"
        );
    }
    // The owner renews: same epoch, later expiry.
    let renewed = acquire(store, &lane, &a, at(5)).await;
    assert_eq!(renewed.epoch, first.epoch);
    assert_eq!(renewed.expires_at, at(15));
    assert!(
        store
            .acquire_or_renew(&lane, &b, LEASE_TTL, at(14))
            .await
            .expect("lease store")
            .is_none()
    );
    // Expired: anyone takes it, with a new epoch.
    let taken = acquire(store, &lane, &b, at(15)).await;
    assert_eq!(taken.epoch, first.epoch + 1);
    assert_eq!(taken.expires_at, at(25));
    // Another lease is independent of this one.
    let other = LeaseName::singleton("housekeeping");
    acquire(store, &other, &a, at(15)).await;
    let listed = store.leases().await.expect("leases");
    let summary: Vec<_> = listed
        .iter()
        .map(|l| (l.name.as_str(), l.owner.as_str(), l.expires_at))
        .collect();
    assert_eq!(
        summary,
        [("housekeeping", "a", at(25)), ("lane:t", "b", at(25))]
    );
    assert_eq!(listed[1].epoch, taken.epoch);
}

pub async fn a_stale_owner_cannot_renew_after_a_takeover<S: Store>(store: &S) {
    let lane = LeaseName::lane("t");
    let (a, b) = (replica("a"), replica("b"));
    acquire(store, &lane, &a, at(0)).await;
    // `a` stalled past its expiry; `b` took over.
    let taken = acquire(store, &lane, &b, at(11)).await;
    assert_eq!(
        store
            .acquire_or_renew(&lane, &a, LEASE_TTL, at(12))
            .await
            .expect("lease store"),
        None,
        "a stale owner's renewal fails"
    );
    // And `b` still holds it, at its epoch.
    assert_eq!(acquire(store, &lane, &b, at(12)).await.epoch, taken.epoch);
}

pub async fn a_released_lease_is_free_at_once_with_a_new_epoch<S: Store>(store: &S) {
    let lane = LeaseName::lane("t");
    let (a, b) = (replica("a"), replica("b"));
    let held = acquire(store, &lane, &a, at(0)).await;
    // A release naming a wrong epoch or owner does nothing.
    store
        .release(&lane, &a, held.epoch + 1)
        .await
        .expect("release");
    store.release(&lane, &b, held.epoch).await.expect("release");
    assert!(
        store
            .acquire_or_renew(&lane, &b, LEASE_TTL, at(1))
            .await
            .expect("lease store")
            .is_none()
    );
    store.release(&lane, &a, held.epoch).await.expect("release");
    let taken = acquire(store, &lane, &b, at(1)).await;
    assert!(taken.epoch > held.epoch, "a takeover moves the epoch on");
    // The released fence is dead even were its owner to come back.
    let fence = Fence {
        name: lane.clone(),
        owner: a.clone(),
        epoch: held.epoch,
    };
    assert_eq!(
        store
            .take_budget(
                Some(&fence),
                &budget('k'),
                3,
                Duration::from_secs(10),
                at(2)
            )
            .await
            .expect("budget"),
        BudgetDecision::Fenced
    );
}

pub async fn a_stale_fence_is_refused_and_takes_no_slot<S: Store>(store: &S) {
    let lane = LeaseName::lane("t");
    let (a, b) = (replica("a"), replica("b"));
    let window = Duration::from_secs(60);
    let key = budget('k');
    let held = acquire(store, &lane, &a, at(0)).await;
    let ours = Fence {
        name: lane.clone(),
        owner: a.clone(),
        epoch: held.epoch,
    };
    granted(
        store
            .take_budget(Some(&ours), &key, 2, window, at(1))
            .await
            .expect("budget"),
    );
    // At and after the expiry the fence no longer holds, even before anyone took over.
    assert_eq!(
        store
            .take_budget(Some(&ours), &key, 2, window, at(10))
            .await
            .expect("budget"),
        BudgetDecision::Fenced
    );
    let taken = acquire(store, &lane, &b, at(11)).await;
    assert_eq!(
        store
            .take_budget(Some(&ours), &key, 2, window, at(12))
            .await
            .expect("budget"),
        BudgetDecision::Fenced,
        "the old owner's fence is refused after a takeover"
    );
    // A fence naming another lease, or the right owner at a wrong epoch, is refused too.
    let wrong_lease = Fence {
        name: LeaseName::lane("u"),
        owner: b.clone(),
        epoch: taken.epoch,
    };
    let wrong_epoch = Fence {
        name: lane.clone(),
        owner: b.clone(),
        epoch: held.epoch,
    };
    for fence in [&wrong_lease, &wrong_epoch] {
        assert_eq!(
            store
                .take_budget(Some(fence), &key, 2, window, at(12))
                .await
                .expect("budget"),
            BudgetDecision::Fenced
        );
    }
    // None of the refusals took a slot: the new owner still has the one left of two.
    let theirs = Fence {
        name: lane,
        owner: b,
        epoch: taken.epoch,
    };
    granted(
        store
            .take_budget(Some(&theirs), &key, 2, window, at(12))
            .await
            .expect("budget"),
    );
    assert!(matches!(
        store
            .take_budget(Some(&theirs), &key, 2, window, at(13))
            .await
            .expect("budget"),
        BudgetDecision::WaitUntil(_)
    ));
}

/// The lane state recorded on `name`'s lease, if the lease exists.
async fn lane_state_of<S: Store>(store: &S, name: &LeaseName) -> Option<LaneState> {
    store
        .leases()
        .await
        .expect("leases")
        .into_iter()
        .find(|l| &l.name == name)
        .and_then(|l| l.lane_state)
}

pub async fn a_lane_state_is_reported_by_its_owner_and_cleared_by_a_takeover<S: Store>(store: &S) {
    let lane = LeaseName::lane("t");
    let (a, b) = (replica("a"), replica("b"));
    let held = acquire(store, &lane, &a, at(0)).await;
    assert_eq!(
        lane_state_of(store, &lane).await,
        None,
        "none until reported"
    );
    let ours = Fence {
        name: lane.clone(),
        owner: a.clone(),
        epoch: held.epoch,
    };
    for state in LaneState::ALL {
        assert!(
            store
                .report_lane_state(&ours, state, at(1))
                .await
                .expect("report")
        );
        assert_eq!(lane_state_of(store, &lane).await, Some(state));
    }
    // A renewal keeps it; singletons have none.
    acquire(store, &lane, &a, at(5)).await;
    assert_eq!(
        lane_state_of(store, &lane).await,
        Some(LaneState::Misconfigured)
    );
    let singleton = LeaseName::singleton("housekeeping");
    acquire(store, &singleton, &a, at(5)).await;
    assert_eq!(lane_state_of(store, &singleton).await, None);
    // A stale fence reports nothing: expired, a wrong epoch, another owner.
    let wrong_epoch = Fence {
        epoch: held.epoch + 1,
        ..ours.clone()
    };
    let another = Fence {
        owner: b.clone(),
        ..ours.clone()
    };
    for (fence, now) in [(&ours, at(15)), (&wrong_epoch, at(6)), (&another, at(6))] {
        assert!(
            !store
                .report_lane_state(fence, LaneState::Healthy, now)
                .await
                .expect("report"),
            "{fence:?} at {now}"
        );
    }
    assert_eq!(
        lane_state_of(store, &lane).await,
        Some(LaneState::Misconfigured)
    );
    // A new owner starts without the old owner's state.
    let taken = acquire(store, &lane, &b, at(15)).await;
    assert_eq!(lane_state_of(store, &lane).await, None);
    let theirs = Fence {
        name: lane.clone(),
        owner: b.clone(),
        epoch: taken.epoch,
    };
    assert!(
        store
            .report_lane_state(&theirs, LaneState::RateLimited, at(16))
            .await
            .expect("report")
    );
    assert_eq!(
        lane_state_of(store, &lane).await,
        Some(LaneState::RateLimited)
    );
    // And a release clears it.
    store
        .release(&lane, &b, taken.epoch)
        .await
        .expect("release");
    assert_eq!(lane_state_of(store, &lane).await, None);
}

pub async fn budget_use_counts_the_window_and_slots_in_flight<S: Store>(store: &S) {
    let window = Duration::from_secs(10);
    let key = budget('u');
    let used = |now| store.budget_used(&key, window, now);
    assert_eq!(used(at(0)).await.expect("used"), 0);
    for i in 0..2 {
        let slot = granted(
            store
                .take_budget(None, &budget('u'), 5, window, at(i))
                .await
                .expect("budget"),
        );
        store.settle_budget(slot, at(i)).await.expect("settle");
    }
    // One more, still in flight.
    granted(
        store
            .take_budget(None, &budget('u'), 5, window, at(3))
            .await
            .expect("budget"),
    );
    granted(
        store
            .take_budget(None, &budget('v'), 5, window, at(3))
            .await
            .expect("budget"),
    );
    assert_eq!(used(at(4)).await.expect("used"), 3, "in flight included");
    // A send exactly one window old still counts, as when taking a slot.
    assert_eq!(used(at(10)).await.expect("used"), 3);
    assert_eq!(used(millis_after(at(10), 1)).await.expect("used"), 2);
    assert_eq!(used(at(12)).await.expect("used"), 1, "the one in flight");
    assert_eq!(
        store
            .budget_used(&budget('v'), window, at(4))
            .await
            .expect("used"),
        1,
        "another key's budget is its own"
    );
}

pub async fn a_conditional_resolve_acts_only_on_open_incidents<S: Store>(store: &S) {
    let resolve = |key: &str| NewEvent {
        condition: Condition::WhileOpen,
        ..event("t", Some(key), Action::Resolve, None)
    };
    // Triggered, and acknowledged: both open, both resolved.
    accept_one(store, trigger("a", Severity::Error), at(0)).await;
    accept_one(store, trigger("b", Severity::Error), at(0)).await;
    accept_one(
        store,
        event("t", Some("b"), Action::Acknowledge, None),
        at(1),
    )
    .await;
    for key in ["a", "b"] {
        queued_id(&accept_one(store, resolve(key), at(2)).await);
        let state = store.incident("t", key).await.expect("incident");
        assert_eq!(state.map(|s| s.status), Some(Status::Resolved), "{key}");
    }
    // Resolved already, or never seen: nothing.
    for key in ["a", "unknown"] {
        assert_eq!(
            accept_one(store, resolve(key), at(3)).await,
            Acceptance::Suppressed { reason: "not_open" },
            "{key}"
        );
    }
    assert_eq!(
        store.incident("t", "unknown").await.expect("incident"),
        None
    );
}

pub async fn incidents_remember_their_source_and_first_event<S: Store>(store: &S) {
    let from = |key: &str, source: Option<IncidentSource>| NewEvent {
        source,
        ..trigger(key, Severity::Error)
    };
    accept_one(store, from("am", Some(IncidentSource::Alertmanager)), at(0)).await;
    accept_one(store, from("api", Some(IncidentSource::Api)), at(0)).await;
    accept_one(store, from("unknown", None), at(0)).await;
    accept_one(
        store,
        from("acked", Some(IncidentSource::Alertmanager)),
        at(0),
    )
    .await;
    accept_one(
        store,
        from("closed", Some(IncidentSource::Alertmanager)),
        at(0),
    )
    .await;
    // Later events keep the first event's time, and only a trigger changes the source.
    accept_one(
        store,
        event("t", Some("acked"), Action::Acknowledge, None),
        at(5),
    )
    .await;
    accept_one(
        store,
        event("t", Some("closed"), Action::Resolve, None),
        at(5),
    )
    .await;
    let acked = store
        .incident("t", "acked")
        .await
        .expect("incident")
        .expect("acked");
    assert_eq!(acked.source, Some(IncidentSource::Alertmanager));
    assert_eq!(acked.first_event_at, Some(at(0)));
    assert_eq!(acked.updated_at, at(5));
    let open = store
        .open_incidents_from(IncidentSource::Alertmanager)
        .await
        .expect("open incidents");
    let keys: Vec<&str> = open.iter().map(|i| i.dedup_key.as_str()).collect();
    assert_eq!(
        keys,
        ["acked", "am"],
        "open, from Alertmanager, in key order"
    );
    let api = store
        .open_incidents_from(IncidentSource::Api)
        .await
        .expect("open incidents");
    assert_eq!(api.len(), 1);
    assert_eq!(api[0].dedup_key, "api");
    assert_eq!(api[0].fingerprint.as_deref(), Some("fp-api"));
}

pub async fn one_request_decides_its_events_in_order<S: Store>(store: &S) {
    accept_one(store, trigger("known", Severity::Error), at(0)).await;
    let events = vec![
        // A repeat of what is stored: suppressed.
        trigger("known", Severity::Error),
        // A new incident, repeated, resolved, resolved again, then triggered anew.
        trigger("new", Severity::Warning),
        trigger("new", Severity::Warning),
        event("t", Some("new"), Action::Resolve, None),
        event("t", Some("new"), Action::Resolve, None),
        trigger("new", Severity::Warning),
        // Another target's incident of the same key is its own.
        event("u", Some("new"), Action::Trigger, Some(Severity::Info)),
        event("t", None, Action::Change, None),
    ];
    let out = store
        .accept(events, &SuppressionPolicy::default(), at(1))
        .await
        .expect("accept");
    let reasons: Vec<Option<&str>> = out
        .iter()
        .map(|acceptance| match acceptance {
            Acceptance::Queued { .. } => None,
            Acceptance::Suppressed { reason } => Some(*reason),
        })
        .collect();
    assert_eq!(
        reasons,
        [
            Some("unchanged_retrigger"),
            None,
            Some("unchanged_retrigger"),
            None,
            Some("already_resolved"),
            None,
            None,
            None,
        ]
    );
    // Queued in the request's order, ids growing.
    let ids: Vec<i64> = out
        .iter()
        .filter_map(|acceptance| match acceptance {
            Acceptance::Queued { id } => Some(*id),
            Acceptance::Suppressed { .. } => None,
        })
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let pending = store.pending(None, 100).await.expect("pending");
    let actions: Vec<(String, Option<String>, Action)> = pending
        .iter()
        .filter(|e| e.id >= ids[0])
        .map(|e| (e.target.clone(), e.dedup_key.clone(), e.action))
        .collect();
    let key = |k: &str| Some(k.to_owned());
    assert_eq!(
        actions,
        [
            ("t".to_owned(), key("new"), Action::Trigger),
            ("t".to_owned(), key("new"), Action::Resolve),
            ("t".to_owned(), key("new"), Action::Trigger),
            ("u".to_owned(), key("new"), Action::Trigger),
            ("t".to_owned(), None, Action::Change),
        ]
    );
    let new = store
        .incident("t", "new")
        .await
        .expect("incident")
        .expect("new");
    assert_eq!(new.status, Status::Triggered);
    assert_eq!(new.first_event_at, Some(at(1)));
    let other = store
        .incident("u", "new")
        .await
        .expect("incident")
        .expect("u");
    assert_eq!(other.status, Status::Triggered);
}

/// Requests accepted at the same time (which a store may commit together, group commit) each
/// get their own answers, in their own order, and see each other as if one after the other:
/// of the same trigger sent by all of them, exactly one is queued.
pub async fn concurrent_requests_each_get_their_own_answers<S: Store>(store: &S) {
    const REQUESTS: usize = 12;
    let policy = SuppressionPolicy::default();
    let requests = (0..REQUESTS).map(|r| {
        let events = vec![
            trigger(&format!("own-{r}-a"), Severity::Error),
            trigger("shared", Severity::Critical),
            trigger(&format!("own-{r}-b"), Severity::Info),
        ];
        store.accept(events, &policy, at(0))
    });
    let answers: Vec<Vec<Acceptance>> = futures_util::future::join_all(requests)
        .await
        .into_iter()
        .map(|answer| answer.expect("accept"))
        .collect();
    let mut all_ids = Vec::new();
    let mut shared_queued = 0;
    for answer in &answers {
        assert_eq!(answer.len(), 3, "{answer:?}");
        let (own_a, own_b) = (queued_id(&answer[0]), queued_id(&answer[2]));
        match answer[1] {
            Acceptance::Queued { id } => {
                shared_queued += 1;
                assert!(own_a < id && id < own_b, "{answer:?}");
                all_ids.push(id);
            }
            Acceptance::Suppressed { reason } => {
                assert_eq!(reason, "unchanged_retrigger", "{answer:?}");
                assert!(own_a < own_b, "{answer:?}");
            }
        }
        all_ids.extend([own_a, own_b]);
    }
    assert_eq!(shared_queued, 1, "{answers:?}");
    all_ids.sort_unstable();
    all_ids.dedup();
    assert_eq!(
        all_ids.len(),
        2 * REQUESTS + 1,
        "every queued event has an id of its own"
    );
    let pending = store.pending(None, 100).await.expect("pending");
    let pending_ids: Vec<i64> = pending.iter().map(|e| e.id).collect();
    assert_eq!(pending_ids, all_ids);
}

/// Every incident the filter selects, as (target, dedup key, status).
async fn listed<S: Store>(store: &S, filter: &IncidentFilter) -> Vec<(String, String, Status)> {
    store
        .list_incidents(filter)
        .await
        .expect("list incidents")
        .into_iter()
        .map(|i| (i.target, i.dedup_key, i.status))
        .collect()
}

pub async fn incidents_are_listed_by_filter_in_key_order_a_page_at_a_time<S: Store>(store: &S) {
    // Two targets; in each, one incident per status. Keys chosen so that every collation
    // sorts them alike.
    for target in ["b", "a"] {
        for (key, then) in [
            ("k3", None),
            ("k1", Some(Action::Acknowledge)),
            ("k2", Some(Action::Resolve)),
        ] {
            accept_one(
                store,
                event(target, Some(key), Action::Trigger, Some(Severity::Error)),
                at(0),
            )
            .await;
            if let Some(action) = then {
                accept_one(store, event(target, Some(key), action, None), at(1)).await;
            }
        }
    }
    let every = IncidentFilter {
        target: None,
        status: None,
        dedup_key: None,
        after: None,
        limit: 100,
    };
    let all = listed(store, &every).await;
    let expected: Vec<(String, String, Status)> = [
        ("a", "k1", Status::Acknowledged),
        ("a", "k2", Status::Resolved),
        ("a", "k3", Status::Triggered),
        ("b", "k1", Status::Acknowledged),
        ("b", "k2", Status::Resolved),
        ("b", "k3", Status::Triggered),
    ]
    .into_iter()
    .map(|(t, k, s)| (t.to_owned(), k.to_owned(), s))
    .collect();
    assert_eq!(all, expected);
    // The full state, source and first event included.
    let first = &store.list_incidents(&every).await.expect("list")[0];
    assert_eq!(
        (
            first.fingerprint.as_deref(),
            first.first_event_at,
            first.updated_at
        ),
        (Some("fp-k1"), Some(at(0)), at(1))
    );

    let only =
        |target: Option<&str>, status: Option<StatusFilter>, key: Option<&str>| IncidentFilter {
            target: target.map(str::to_owned),
            status,
            dedup_key: key.map(str::to_owned),
            ..every.clone()
        };
    let pick = |indexes: &[usize]| -> Vec<(String, String, Status)> {
        indexes.iter().map(|i| expected[*i].clone()).collect()
    };
    assert_eq!(
        listed(store, &only(Some("b"), None, None)).await,
        pick(&[3, 4, 5])
    );
    assert_eq!(
        listed(store, &only(None, Some(StatusFilter::Open), None)).await,
        pick(&[0, 2, 3, 5])
    );
    for (status, indexes) in [
        (Status::Triggered, [2, 5]),
        (Status::Acknowledged, [0, 3]),
        (Status::Resolved, [1, 4]),
    ] {
        assert_eq!(
            listed(store, &only(None, Some(StatusFilter::Is(status)), None)).await,
            pick(&indexes)
        );
    }
    assert_eq!(
        listed(
            store,
            &only(Some("a"), Some(StatusFilter::Open), Some("k3"))
        )
        .await,
        pick(&[2]),
        "criteria combine"
    );
    assert_eq!(
        listed(store, &only(None, None, Some("k2"))).await,
        pick(&[1, 4])
    );
    assert!(listed(store, &only(Some("c"), None, None)).await.is_empty());

    // Pages of two, each after the last row of the one before, to the end.
    let mut pages = Vec::new();
    let mut page = IncidentFilter {
        limit: 2,
        ..every.clone()
    };
    loop {
        let rows = listed(store, &page).await;
        let Some((target, key, _)) = rows.last().cloned() else {
            break;
        };
        pages.push(rows);
        page.after = Some((target, key));
    }
    assert_eq!(pages, [pick(&[0, 1]), pick(&[2, 3]), pick(&[4, 5])]);
    // After a key that is not there, the page starts at the next one; filters apply too.
    let after_missing = IncidentFilter {
        after: Some(("a".to_owned(), "k25".to_owned())),
        status: Some(StatusFilter::Open),
        ..every.clone()
    };
    assert_eq!(listed(store, &after_missing).await, pick(&[2, 3, 5]));
}

/// What `lane_stats` and `open_incidents` must say, worked out from the store's listings
/// (pending events, dead letters, open incidents), which read the rows themselves.
async fn assert_counts_match_the_rows<S: Store>(store: &S, step: &str) {
    use std::collections::BTreeMap;
    let mut expected: BTreeMap<String, (u64, u64, Option<Timestamp>)> = BTreeMap::new();
    for event in store.pending(None, 1000).await.expect("pending") {
        let lane = expected.entry(event.target.clone()).or_default();
        lane.0 += 1;
        lane.2 = Some(
            lane.2
                .map_or(event.accepted_at, |t| t.min(event.accepted_at)),
        );
    }
    for dead in store.dead_letters(None, 1000).await.expect("dead letters") {
        expected.entry(dead.target.clone()).or_default().1 += 1;
    }
    let stats = store.lane_stats().await.expect("stats");
    let mut counted: BTreeMap<String, (u64, u64, Option<Timestamp>)> = BTreeMap::new();
    for lane in stats {
        // A target with only dropped records is listed with nothing to count.
        if (lane.pending, lane.dead) != (0, 0) || lane.oldest_pending_accepted_at.is_some() {
            counted.insert(
                lane.target,
                (lane.pending, lane.dead, lane.oldest_pending_accepted_at),
            );
        }
    }
    assert_eq!(counted, expected, "lane stats after {step}");
    let open = store
        .list_incidents(&IncidentFilter {
            target: None,
            status: Some(StatusFilter::Open),
            dedup_key: None,
            after: None,
            limit: 1000,
        })
        .await
        .expect("incidents")
        .len();
    assert_eq!(
        store.open_incidents().await.expect("open"),
        open as u64,
        "open incidents after {step}"
    );
}

/// The counts behind `lane_stats` and `open_incidents` are maintained as rows change, not
/// counted at each read: they must follow every kind of change, and folding them changes
/// nothing.
pub async fn counts_stay_right_across_every_change<S: Store>(store: &S) {
    let check = |step: &'static str| assert_counts_match_the_rows(store, step);
    check("nothing").await;
    let policy = SuppressionPolicy::default();
    let accepted = store
        .accept(
            vec![
                trigger("k1", Severity::Error),
                trigger("k2", Severity::Warning),
                trigger("k3", Severity::Info),
                event("u", Some("k4"), Action::Trigger, Some(Severity::Critical)),
                event("u", None, Action::Change, None),
            ],
            &policy,
            at(0),
        )
        .await
        .expect("accept");
    let ids: Vec<i64> = accepted.iter().map(queued_id).collect();
    check("an accept of two targets").await;
    // Suppressed: nothing queued, nothing counted.
    accept_one(store, trigger("k1", Severity::Error), at(1)).await;
    check("a suppressed repeat").await;
    store
        .mark_delivered(ids[0], at(2))
        .await
        .expect("delivered");
    check("a delivery").await;
    store
        .record_failure(ids[2], "HTTP 500", at(2))
        .await
        .expect("failure");
    check("a failure").await;
    store
        .dead_letter(ids[1], "HTTP 400", at(3))
        .await
        .expect("dead");
    check("a dead letter").await;
    store
        .replay(&DeadLetterFilter::ids([ids[1]]), at(4))
        .await
        .expect("replay");
    check("a replay").await;
    store
        .dead_letter(ids[1], "HTTP 400", at(5))
        .await
        .expect("dead");
    store
        .drop_dead(&DeadLetterFilter::ids([ids[1]]), "by hand", at(6))
        .await
        .expect("drop");
    check("a drop").await;
    accept_one(store, event("u", Some("k4"), Action::Resolve, None), at(7)).await;
    check("a resolve").await;
    store.fold_counts().await.expect("fold");
    check("a fold").await;
    let expired = store.expire_events(at(100), at(100)).await.expect("expire");
    assert_eq!(
        expired.per_target.values().sum::<u64>(),
        4,
        "k3, k4 ×2, the change"
    );
    check("an expiry").await;
    store.expire_incidents(at(100)).await.expect("forget");
    check("incidents forgotten").await;
    store.fold_counts().await.expect("fold");
    check("a second fold").await;
}
