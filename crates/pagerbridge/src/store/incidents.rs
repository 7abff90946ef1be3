//! Incident state as PagerDuty last heard it: what suppression is decided against, read for
//! metrics and the silence watcher, forgotten when stale.

use async_trait::async_trait;
use jiff::Timestamp;

use super::{IncidentSource, IncidentState, StoreError};

/// Reading and expiring incident state (`Outbox::accept` writes it).
#[async_trait]
pub trait Incidents: Send + Sync + 'static {
    /// The incident state of one key, if any.
    async fn incident(
        &self,
        target: &str,
        dedup_key: &str,
    ) -> Result<Option<IncidentState>, StoreError>;

    /// Incidents currently triggered or acknowledged.
    async fn open_incidents(&self) -> Result<u64, StoreError>;

    /// Every incident from `source` that is triggered or acknowledged, for the Alertmanager
    /// sync to hold against what Alertmanager says.
    async fn open_incidents_from(
        &self,
        source: IncidentSource,
    ) -> Result<Vec<IncidentState>, StoreError>;

    /// Forgets incident state last touched before `cutoff`; returns how many.
    async fn expire_incidents(&self, cutoff: Timestamp) -> Result<u64, StoreError>;
}
