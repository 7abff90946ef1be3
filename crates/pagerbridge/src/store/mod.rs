//! Durable storage: the outbox of events to deliver, incident state, dead letters and the
//! per-target send budget, behind one trait.
//!
//! Two implementations share the [`Store`] trait and one conformance suite ([`conformance`]):
//! embedded SQLite (the default, zero setup) and PostgreSQL (several replicas). The
//! rules that are not storage — which events to suppress, how incident state moves — live in
//! [`suppress`], so both implementations apply them identically.
//!
//! Storage never holds a routing key: events name their target, and the key is looked up when
//! the request is written.

pub mod conformance;
pub mod postgres;
pub mod sqlite;
pub mod suppress;

use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use pagerduty_events::Severity;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use suppress::{IncidentState, SuppressionPolicy};

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

/// An event to put in the outbox.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    pub target: String,
    /// The incident's key; `None` for change events, which are independent of each other.
    pub dedup_key: Option<String>,
    pub action: Action,
    pub severity: Option<Severity>,
    /// The PagerDuty event without routing key (an `AlertEvent` or `ChangeEvent` as JSON).
    pub event: Value,
    /// The alert it came from, for dead letters and the fallback (optional).
    pub alert: Option<Value>,
    pub fingerprint: Option<String>,
    /// For triggers: hash of what the trigger shows, to suppress unchanged re-triggers.
    pub payload_hash: Option<String>,
}

/// What became of one [`NewEvent`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Acceptance {
    Queued {
        id: i64,
    },
    /// Not queued because PagerDuty already has this state; the reason is for metrics/logs.
    Suppressed {
        reason: &'static str,
    },
}

/// An event waiting in the outbox.
#[derive(Clone, Debug, PartialEq)]
pub struct QueuedEvent {
    /// Also the acceptance order.
    pub id: i64,
    pub target: String,
    pub dedup_key: Option<String>,
    pub action: Action,
    pub severity: Option<Severity>,
    pub event: Value,
    pub alert: Option<Value>,
    pub fingerprint: Option<String>,
    pub accepted_at: Timestamp,
    /// Requests made for it so far.
    pub attempts: u32,
    pub last_error: Option<String>,
}

/// A dead-lettered event: PagerDuty refused it, or it grew too old to matter.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeadLetter {
    pub id: i64,
    pub target: String,
    pub dedup_key: Option<String>,
    pub action: Action,
    pub event: Value,
    pub accepted_at: Timestamp,
    pub dead_at: Timestamp,
    pub reason: String,
    pub attempts: u32,
}

/// Why the fallback webhook is told about an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    /// PagerDuty has been failing for this event longer than `fallback_after`.
    Failing,
    /// The event was dead-lettered: PagerDuty refused it, or it grew too old.
    DeadLettered,
}

/// An event the fallback webhook must hear about.
#[derive(Clone, Debug, PartialEq)]
pub struct Notice {
    pub kind: NoticeKind,
    pub event: QueuedEvent,
    /// The dead-letter reason, or the last error.
    pub reason: String,
}

/// The answer of the shared send budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BudgetDecision {
    /// One request may be made now; it holds this slot. Settle the slot with the time the
    /// answer came back ([`Store::settle_budget`]).
    Granted { slot: i64 },
    /// The window is full until then.
    WaitUntil(Timestamp),
}

/// Numbers for one lane, for metrics and the admin API.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LaneStats {
    pub target: String,
    pub pending: u64,
    pub dead: u64,
    pub oldest_pending_accepted_at: Option<Timestamp>,
}

/// The durable state of the bridge.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Commits the events of one request in one transaction, applying the suppression rules
    /// against incident state and updating it. Returns one [`Acceptance`] per event, in order.
    async fn accept(
        &self,
        events: Vec<NewEvent>,
        policy: &SuppressionPolicy,
        now: Timestamp,
    ) -> Result<Vec<Acceptance>, StoreError>;

    /// The dedup key last used for an Alertmanager fingerprint on a target, if remembered.
    async fn dedup_key_for_fingerprint(
        &self,
        target: &str,
        fingerprint: &str,
    ) -> Result<Option<String>, StoreError>;

    /// The next event a lane may send: pending, with no older pending event of the same
    /// dedup key, most severe first, then oldest.
    async fn next_eligible(&self, target: &str) -> Result<Option<QueuedEvent>, StoreError>;

    /// PagerDuty accepted the event: remove it and note the send on its incident.
    async fn mark_delivered(&self, id: i64, now: Timestamp) -> Result<(), StoreError>;

    /// A request for the event failed in a way worth retrying; the event keeps its place.
    /// The first failure's time is kept, for the fallback's `fallback_after`.
    async fn record_failure(&self, id: i64, error: &str, now: Timestamp) -> Result<(), StoreError>;

    /// Moves the event to dead letters with a reason an operator can read.
    async fn dead_letter(&self, id: i64, reason: &str, now: Timestamp) -> Result<(), StoreError>;

    /// Dead-letters pending events accepted before `cutoff`; returns how many.
    async fn expire_events(&self, cutoff: Timestamp, now: Timestamp) -> Result<u64, StoreError>;

    /// Forgets incident state last touched before `cutoff`; returns how many.
    async fn expire_incidents(&self, cutoff: Timestamp) -> Result<u64, StoreError>;

    /// Takes one request from the target's sliding-window budget if there is room.
    async fn take_budget(
        &self,
        target: &str,
        limit: u32,
        window: Duration,
        now: Timestamp,
    ) -> Result<BudgetDecision, StoreError>;

    /// Moves a slot's time to when the request ended. PagerDuty counts a request when it
    /// arrives, somewhere between our send and its answer; counting the slot from the answer
    /// means our window can never be shorter than PagerDuty's, whatever the latency.
    async fn settle_budget(&self, slot: i64, at: Timestamp) -> Result<(), StoreError>;

    /// Per-lane numbers (every target with pending or dead events).
    async fn lane_stats(&self) -> Result<Vec<LaneStats>, StoreError>;

    /// Incidents currently triggered or acknowledged.
    async fn open_incidents(&self) -> Result<u64, StoreError>;

    /// The incident state of one key, if any.
    async fn incident(
        &self,
        target: &str,
        dedup_key: &str,
    ) -> Result<Option<IncidentState>, StoreError>;

    /// Dead letters, oldest first, optionally of one target.
    async fn dead_letters(
        &self,
        target: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DeadLetter>, StoreError>;

    /// Pending events, in acceptance order, optionally of one target.
    async fn pending(
        &self,
        target: Option<&str>,
        limit: u32,
    ) -> Result<Vec<QueuedEvent>, StoreError>;

    /// What the fallback webhook has not been told yet, oldest first: dead letters, and
    /// pending events whose first failure is older than `failing_since`.
    async fn fallback_due(
        &self,
        failing_since: Timestamp,
        limit: u32,
    ) -> Result<Vec<Notice>, StoreError>;

    /// The fallback webhook was told about the event.
    async fn mark_notified(
        &self,
        id: i64,
        kind: NoticeKind,
        at: Timestamp,
    ) -> Result<(), StoreError>;

    /// Whether storage answers (for `/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;
}

/// Milliseconds since the Unix epoch: how timestamps are stored, the same in every backend.
pub(crate) fn to_millis(at: Timestamp) -> i64 {
    at.as_millisecond()
}

pub(crate) fn from_millis(millis: i64) -> Result<Timestamp, StoreError> {
    Timestamp::from_millisecond(millis)
        .map_err(|e| StoreError::Corrupt(format!("timestamp {millis}: {e}")))
}
