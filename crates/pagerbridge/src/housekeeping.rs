//! Housekeeping: events older than `delivery.max_event_age` are dead-lettered (counted by
//! target, reason `expired`), incident state older than `delivery.incident_ttl` is forgotten
//! and the store's maintained counts are folded ([`crate::store::Outbox::fold_counts`]),
//! every minute. It runs on one replica at a time, the holder of the `housekeeping` lease
//! ([`crate::lease_keeper`]); a replica that takes the lease over runs a round at once.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

use crate::config::DeliveryConfig;
use crate::internal_events::{EventsExpired, InternalEvent, StorageFailed, StorageOperation};
use crate::lease_keeper::{StopSignal, stopped};
use crate::metrics::Metrics;
use crate::store::Store;

/// How often old events are dead-lettered and stale incident state forgotten.
const EVERY: Duration = Duration::from_secs(60);

/// Runs [`housekeeping`] at once, then every [`EVERY`], until `stop` says so (a round under
/// way finishes first).
pub(crate) async fn run(
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    delivery: DeliveryConfig,
    mut stop: StopSignal,
) {
    // An interval's first tick is immediate.
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            biased;
            // A stop, or the keeper gone.
            () = stopped(&mut stop) => break,
            _ = tick.tick() => {
                housekeeping(store.as_ref(), &metrics, &delivery, Timestamp::now()).await;
            }
        }
    }
}

/// Dead-letters events past `max_event_age` (counted by target, reason `expired`) and forgets
/// incident state past `incident_ttl`, then folds the maintained counts.
async fn housekeeping(
    store: &dyn Store,
    metrics: &Metrics,
    delivery: &DeliveryConfig,
    now: Timestamp,
) {
    let before = |d: Duration| {
        jiff::SignedDuration::try_from(d)
            .ok()
            .and_then(|d| now.checked_sub(d).ok())
            .unwrap_or(Timestamp::MIN)
    };
    match store
        .expire_events(before(delivery.max_event_age), now)
        .await
    {
        Ok(expired) => {
            for (target, count) in &expired.per_target {
                EventsExpired {
                    target,
                    count: *count,
                }
                .emit(metrics);
            }
        }
        Err(error) => StorageFailed {
            operation: StorageOperation::Housekeeping,
            what: "expiring old events failed",
            target: None,
            error: &error,
        }
        .emit(metrics),
    }
    if let Err(error) = store.expire_incidents(before(delivery.incident_ttl)).await {
        StorageFailed {
            operation: StorageOperation::Housekeeping,
            what: "expiring incident state failed",
            target: None,
            error: &error,
        }
        .emit(metrics);
    }
    if let Err(error) = store.fold_counts().await {
        StorageFailed {
            operation: StorageOperation::Housekeeping,
            what: "folding the queue counts failed",
            target: None,
            error: &error,
        }
        .emit(metrics);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;
    use crate::store::{Action, Condition, NewEvent, Outbox, SuppressionPolicy};

    fn trigger(target: &str, key: &str) -> NewEvent {
        NewEvent {
            target: target.to_owned(),
            dedup_key: Some(key.to_owned()),
            action: Action::Trigger,
            severity: Some(pagerduty_events::Severity::Error),
            event: serde_json::json!({}).into(),
            alert: None,
            fingerprint: None,
            labels_key: false,
            payload_hash: None,
            condition: Condition::Always,
            source: None,
        }
    }

    fn expired_count(metrics: &Metrics, target: &str) -> u64 {
        metrics
            .dead_lettered
            .get_or_create(&crate::metrics::ReasonLabels {
                target: target.to_owned(),
                reason: "expired".to_owned(),
            })
            .get()
    }

    #[tokio::test]
    async fn housekeeping_counts_expired_events_by_target() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("bridge.db"))
            .await
            .expect("open");
        let accepted = Timestamp::from_second(1_800_000_000).expect("time");
        let events = vec![trigger("a", "1"), trigger("a", "2"), trigger("b", "3")];
        store
            .accept(events, &SuppressionPolicy::default(), accepted)
            .await
            .expect("accept");
        let metrics = Metrics::new();
        metrics.init_target("a");
        metrics.init_target("b");
        let delivery = DeliveryConfig::default();

        // Younger than max_event_age: nothing moves.
        housekeeping(&store, &metrics, &delivery, accepted).await;
        assert_eq!(expired_count(&metrics, "a"), 0);

        let later = accepted
            .checked_add(jiff::SignedDuration::try_from(delivery.max_event_age).expect("age"))
            .and_then(|t| t.checked_add(jiff::SignedDuration::from_secs(1)))
            .expect("time");
        housekeeping(&store, &metrics, &delivery, later).await;
        assert_eq!(expired_count(&metrics, "a"), 2);
        assert_eq!(expired_count(&metrics, "b"), 1);
        // Already dead: a second round counts nothing more.
        housekeeping(&store, &metrics, &delivery, later).await;
        assert_eq!(expired_count(&metrics, "a"), 2);
    }
}
