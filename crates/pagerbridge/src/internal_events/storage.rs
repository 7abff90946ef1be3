//! Storage failed: every failed read or write of the outbox, leases, budget or incident state,
//! counted by what the bridge was doing, so that one alert covers them all whatever the store.

use super::InternalEvent;
use crate::metrics::{Metrics, OperationLabel};
use crate::store::StoreError;

/// What the bridge was doing when storage failed: the `operation` label of
/// `pagerbridge_storage_errors_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StorageOperation {
    /// Committing received alerts or change events (the sender got a 503).
    Ingest,
    /// A lane reading its next event or budget, or recording what PagerDuty answered.
    Delivery,
    /// Taking, renewing or releasing a lease of a lane or singleton.
    Leases,
    /// Expiring old events and incident state.
    Housekeeping,
    /// The fallback publisher reading due notices or recording one sent.
    Fallback,
    /// The silence watcher queueing acknowledges.
    Silence,
    /// An admin API request.
    Admin,
    /// Reading the queue gauges for a scrape of `/metrics`.
    Metrics,
}

impl StorageOperation {
    pub const ALL: [StorageOperation; 8] = [
        StorageOperation::Ingest,
        StorageOperation::Delivery,
        StorageOperation::Leases,
        StorageOperation::Housekeeping,
        StorageOperation::Fallback,
        StorageOperation::Silence,
        StorageOperation::Admin,
        StorageOperation::Metrics,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StorageOperation::Ingest => "ingest",
            StorageOperation::Delivery => "delivery",
            StorageOperation::Leases => "leases",
            StorageOperation::Housekeeping => "housekeeping",
            StorageOperation::Fallback => "fallback",
            StorageOperation::Silence => "silence",
            StorageOperation::Admin => "admin",
            StorageOperation::Metrics => "metrics",
        }
    }
}

/// A storage operation failed. The work retries on its own (a lane pauses a second, a lease
/// is tried again, a sender gets 503 and retries); the count is what tells a blip from an
/// outage.
pub struct StorageFailed<'a> {
    pub operation: StorageOperation,
    /// What could not be done, e.g. "cannot read the outbox".
    pub what: &'a str,
    /// The lane's target, when the work was a lane's.
    pub target: Option<&'a str>,
    pub error: &'a StoreError,
}

impl InternalEvent for StorageFailed<'_> {
    fn emit(self, metrics: &Metrics) {
        tracing::error!(
            operation = self.operation.as_str(),
            target_name = self.target,
            error = %self.error,
            "storage failed: {}",
            self.what
        );
        metrics
            .storage_errors
            .get_or_create(&OperationLabel {
                operation: self.operation.as_str().to_owned(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_is_counted_under_its_own_label() {
        let metrics = Metrics::new();
        let error = StoreError::Corrupt("injected".into());
        for (n, operation) in StorageOperation::ALL.into_iter().enumerate() {
            for _ in 0..=n {
                StorageFailed {
                    operation,
                    what: "testing",
                    target: Some("default"),
                    error: &error,
                }
                .emit(&metrics);
            }
        }
        let text = metrics.encode_prometheus_text();
        for (n, operation) in StorageOperation::ALL.into_iter().enumerate() {
            let line = format!(
                "pagerbridge_storage_errors_total{{operation=\"{}\"}} {}\n",
                operation.as_str(),
                n + 1
            );
            assert!(text.contains(&line), "{line:?} missing from\n{text}");
        }
    }

    #[test]
    fn every_operation_is_exported_at_zero_before_any_error() {
        let text = Metrics::new().encode_prometheus_text();
        for operation in StorageOperation::ALL {
            let line = format!(
                "pagerbridge_storage_errors_total{{operation=\"{}\"}} 0\n",
                operation.as_str()
            );
            assert!(text.contains(&line), "{line:?} missing from\n{text}");
        }
    }
}
