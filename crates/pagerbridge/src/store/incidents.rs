//! Incident state as PagerDuty last heard it: what suppression is decided against, read for
//! metrics, the silence watcher and operators (the admin API's incidents), forgotten when
//! stale.

use async_trait::async_trait;
use jiff::Timestamp;

use super::suppress::Status;
use super::{IncidentSource, IncidentState, StoreError};

/// Which incidents [`Incidents::list_incidents`] lists: the criteria combine with "and", none
/// means every incident. Listed in (target, dedup key) order, a page at a time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncidentFilter {
    pub target: Option<String>,
    pub status: Option<StatusFilter>,
    pub dedup_key: Option<String>,
    /// The page starts after this incident, as (target, dedup key).
    pub after: Option<(String, String)>,
    /// At most this many.
    pub limit: u32,
}

/// An incident's status as a listing selects it: one status, or open (triggered or
/// acknowledged).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusFilter {
    Is(Status),
    Open,
}

impl StatusFilter {
    pub fn as_str(self) -> &'static str {
        match self {
            StatusFilter::Is(status) => status.as_str(),
            StatusFilter::Open => "open",
        }
    }

    /// `triggered`, `acknowledged`, `resolved` or `open`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "open" => Some(StatusFilter::Open),
            other => Status::parse(other).map(StatusFilter::Is),
        }
    }

    /// The stored statuses it selects, as the two values of [`LIST`]'s `status IN ($3, $4)`.
    pub(super) fn stored(self) -> (&'static str, &'static str) {
        match self {
            StatusFilter::Is(status) => (status.as_str(), status.as_str()),
            StatusFilter::Open => (Status::Triggered.as_str(), Status::Acknowledged.as_str()),
        }
    }
}

/// [`Incidents::list_incidents`], the same SQL on both stores. A row-value comparison pages
/// in exactly the order of `ORDER BY` (the primary key's), whatever the collation.
pub(super) const LIST: &str = concat!(
    "SELECT ",
    super::rows::incident_columns!(),
    " FROM incidents
     WHERE ($1 IS NULL OR target = $1)
       AND ($2 IS NULL OR dedup_key = $2)
       AND ($3 IS NULL OR status IN ($3, $4))
       AND ($5 IS NULL OR (target, dedup_key) > ($5, $6))
     ORDER BY target, dedup_key
     LIMIT $7"
);

/// Binds an [`IncidentFilter`] to [`LIST`] and runs it on `$pool`: evaluates to the incidents,
/// returning the store error with `?`. Both stores run it so.
macro_rules! list_incidents {
    ($pool:expr, $filter:expr) => {{
        let filter: &$crate::store::IncidentFilter = $filter;
        let (first, second) = filter.status.map(|s| s.stored()).unzip();
        let (after_target, after_key) = filter.after.clone().unzip();
        let rows = sqlx::query($crate::store::incidents::LIST)
            .bind(filter.target.as_deref())
            .bind(filter.dedup_key.as_deref())
            .bind(first)
            .bind(second)
            .bind(after_target)
            .bind(after_key)
            .bind(i64::from(filter.limit))
            .fetch_all($pool)
            .await?;
        rows.iter()
            .map($crate::store::rows::incident_from_row)
            .collect::<Result<Vec<_>, _>>()?
    }};
}
pub(super) use list_incidents;

/// One incident's state, the same SQL on both stores: `$1` target, `$2` dedup key.
pub(super) const ONE: &str = concat!(
    "SELECT ",
    super::rows::incident_columns!(),
    " FROM incidents WHERE target = $1 AND dedup_key = $2"
);

/// The open incidents of one source, the same SQL on both stores: `$1` the source.
pub(super) const OPEN_FROM: &str = concat!(
    "SELECT ",
    super::rows::incident_columns!(),
    " FROM incidents WHERE source = $1 AND status IN ('triggered', 'acknowledged')
     ORDER BY target, dedup_key"
);

/// The condition under which an incident (`incidents` unaliased) may be forgotten, the same
/// SQL on both stores: `$1` the cutoff. Not while it has events queued or dead-lettered: those
/// carry its chain (migration 0009), and a new event of the key must join them rather than
/// start an incident, and a chain, of its own.
macro_rules! expirable {
    () => {
        "updated_at < $1
         AND NOT EXISTS (SELECT 1 FROM outbox o
                         WHERE o.target = incidents.target AND o.chain = incidents.chain
                           AND o.dedup_key = incidents.dedup_key
                           AND o.status IN ('pending', 'dead'))"
    };
}
pub(super) use expirable;

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

    /// The incidents `filter` selects, in (target, dedup key) order, at most `filter.limit`.
    async fn list_incidents(
        &self,
        filter: &IncidentFilter,
    ) -> Result<Vec<IncidentState>, StoreError>;

    /// Forgets incident state last touched before `cutoff`, but not while the incident has
    /// events queued or dead-lettered; returns how many.
    async fn expire_incidents(&self, cutoff: Timestamp) -> Result<u64, StoreError>;
}
