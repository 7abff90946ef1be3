//! Durable storage: the outbox of events to deliver, incident state, dead letters, the
//! per-routing-key send budget, the fallback's notices and the replicas' leases.
//!
//! Each concern is a trait of its own, in a file of its own: [`Outbox`], [`SendBudget`],
//! [`Incidents`], [`DeadLetters`], [`FallbackNotices`], [`Leases`] and
//! [`LaneStates`]. A backend implements them all, which
//! makes it a [`Store`]; a part of the service that needs one concern can take just that trait
//! (an `Arc<dyn Store>` upcasts to any of them).
//!
//! Two backends share the traits and one conformance suite (`tests/conformance/`): embedded
//! SQLite (the default, zero setup) and PostgreSQL (several replicas). The rules that are not
//! storage — which events to suppress, how incident state moves — live in [`suppress`], so
//! both backends apply them identically.
//!
//! Storage never holds a routing key: events name their target, and the key is looked up when
//! the request is written.

mod accept_jobs;
mod budget;
mod budget_id;
mod checkpointer;
mod dead_letters;
mod fallback;
mod group_commit;
mod incident_log;
mod incidents;
mod json_text;
mod leases;
mod lz4_json;
mod outbox;
pub mod postgres;
mod rows;
pub mod sqlite;
pub mod suppress;
mod wal_flush;

use jiff::Timestamp;
use pagerduty_events::Severity;
use serde::{Deserialize, Serialize};

pub use budget::{BudgetDecision, SendBudget};
pub use budget_id::{BudgetId, BudgetSecret};
pub use dead_letters::{
    DeadLetter, DeadLetterFilter, DeadLetters, Expired, ReplayReport, SUPERSEDED_IN_FLIGHT,
    Superseded,
};
pub use fallback::{FallbackNotices, Notice, NoticeKind};
pub use incidents::{IncidentFilter, Incidents, StatusFilter};
pub use json_text::JsonText;
pub use leases::{Fence, LaneState, LaneStates, Lease, LeaseInfo, LeaseName, Leases, ReplicaId};
pub use outbox::{
    Acceptance, CommitHook, Condition, FingerprintLookup, LaneStats, NewEvent, Outbox, QueuedEvent,
};
pub use suppress::{IncidentSource, IncidentState, SuppressionPolicy};

/// A storage failure. Ingest answers 503 on it, so senders retry; nothing is half-written
/// because every write is one transaction.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("storage migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// What kind of PagerDuty request an outbox row becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Trigger,
    Acknowledge,
    Resolve,
    Change,
}

impl Action {
    pub const ALL: [Action; 4] = [
        Action::Trigger,
        Action::Acknowledge,
        Action::Resolve,
        Action::Change,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Trigger => "trigger",
            Action::Acknowledge => "acknowledge",
            Action::Resolve => "resolve",
            Action::Change => "change",
        }
    }

    pub fn parse(text: &str) -> Result<Self, StoreError> {
        match text {
            "trigger" => Ok(Action::Trigger),
            "acknowledge" => Ok(Action::Acknowledge),
            "resolve" => Ok(Action::Resolve),
            "change" => Ok(Action::Change),
            other => Err(StoreError::Corrupt(format!("unknown action {other:?}"))),
        }
    }
}

/// Rank for "critical first": higher is more urgent. Change events come last.
pub fn severity_rank(severity: Option<Severity>) -> i64 {
    match severity {
        Some(Severity::Critical) => 4,
        Some(Severity::Error) => 3,
        Some(Severity::Warning) => 2,
        Some(Severity::Info) => 1,
        None => 0,
    }
}

/// All of the bridge's durable state: every concern's trait at once, what one backend
/// implements. Code that needs only part of it can take the narrow trait; an
/// `Arc<dyn Store>` upcasts to any of them.
pub trait Store:
    Outbox + SendBudget + Incidents + DeadLetters + FallbackNotices + Leases + LaneStates
{
}

impl<T> Store for T where
    T: Outbox + SendBudget + Incidents + DeadLetters + FallbackNotices + Leases + LaneStates
{
}

/// Milliseconds since the Unix epoch: how timestamps are stored, the same in every backend.
pub(crate) fn to_millis(at: Timestamp) -> i64 {
    at.as_millisecond()
}

pub(crate) fn from_millis(millis: i64) -> Result<Timestamp, StoreError> {
    Timestamp::from_millisecond(millis)
        .map_err(|e| StoreError::Corrupt(format!("timestamp {millis}: {e}")))
}
