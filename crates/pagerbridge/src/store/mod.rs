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
    /// A newer event of the same incident that PagerDuty accepted while this one was dead:
    /// replaying this one would take PagerDuty back to an older state ([`Store::replay`]).
    pub superseded_by: Option<i64>,
    /// Set when an operator dropped it ([`Store::drop_dead`]); only listed when asked for.
    pub dropped_at: Option<Timestamp>,
    pub drop_reason: Option<String>,
}

/// Why the fallback webhook is told about an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    /// PagerDuty has been failing for this event's lane longer than `fallback_after`.
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

impl Notice {
    /// The notice for an outbox row: dead rows are reported with their dead-letter reason,
    /// pending ones as failing with their last error.
    pub(crate) fn new(event: QueuedEvent, dead: bool, dead_reason: Option<String>) -> Self {
        let (kind, reason) = if dead {
            (NoticeKind::DeadLettered, dead_reason.unwrap_or_default())
        } else {
            // Events behind a failing one have not failed themselves; they wait.
            let reason = event
                .last_error
                .clone()
                .unwrap_or_else(|| "waiting behind a failing delivery to PagerDuty".to_owned());
            (NoticeKind::Failing, reason)
        };
        Self {
            kind,
            event,
            reason,
        }
    }
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

/// What [`Store::expire_events`] dead-lettered: how many events per target, so housekeeping
/// can count `pagerbridge_dead_lettered_events_total{reason="expired"}` by target.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expired {
    pub per_target: std::collections::BTreeMap<String, u64>,
}

impl Expired {
    /// Counts the targets of the expired rows, one entry per row.
    pub(crate) fn from_targets(targets: impl IntoIterator<Item = String>) -> Self {
        let mut per_target = std::collections::BTreeMap::new();
        for target in targets {
            *per_target.entry(target).or_default() += 1;
        }
        Self { per_target }
    }

    /// Events expired, all targets together.
    pub fn total(&self) -> u64 {
        self.per_target.values().sum()
    }
}

/// Which dead letters an operator means: every criterion that is set must hold (AND).
///
/// A filter with no criterion selects **nothing** unless `all` is set, so that a forgotten
/// field can never turn "replay these" into "replay everything". `ids: Some(vec![])` selects
/// nothing either. `all` adds no condition of its own: `{all, target}` is just `{target}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeadLetterFilter {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ids: Option<Vec<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dedup_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    /// Dead-lettered at or after this time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_since: Option<Timestamp>,
    /// Dead-lettered before this time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_before: Option<Timestamp>,
    /// Select every dead letter the other criteria allow, even with no other criterion.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
}

impl DeadLetterFilter {
    /// Every dead letter.
    pub fn everything() -> Self {
        Self {
            all: true,
            ..Self::default()
        }
    }

    /// Exactly these dead letters.
    pub fn ids(ids: impl IntoIterator<Item = i64>) -> Self {
        Self {
            ids: Some(ids.into_iter().collect()),
            ..Self::default()
        }
    }

    /// Whether it names no criterion and is not `all`: such a filter selects nothing.
    pub fn is_empty(&self) -> bool {
        !self.all
            && self.ids.is_none()
            && self.target.is_none()
            && self.dedup_key.is_none()
            && self.action.is_none()
            && self.dead_since.is_none()
            && self.dead_before.is_none()
    }
}

/// A dead letter [`Store::replay`] left dead because a newer event of its incident superseded it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Superseded {
    pub id: i64,
    /// The newer event: delivered to PagerDuty, or dead/dropped and not part of this replay.
    pub by: i64,
}

/// What [`Store::replay`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReplayReport {
    /// Back in the queue under their original ids, in id order.
    pub replayed: Vec<i64>,
    /// Left dead, in id order.
    pub superseded: Vec<Superseded>,
    /// The targets of the replayed events: the lanes to wake.
    pub targets: Vec<String>,
}

/// The reason a replayed event gets when, while it waited in the queue again, a newer event of
/// its incident (already in flight when the replay happened) reached PagerDuty first.
pub const SUPERSEDED_IN_FLIGHT: &str = "superseded: a newer event of the same incident reached PagerDuty while this replayed event waited";

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

    /// Dead-letters pending events accepted before `cutoff`; returns how many, per target.
    async fn expire_events(&self, cutoff: Timestamp, now: Timestamp)
    -> Result<Expired, StoreError>;

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
    /// pending events accepted before `failing_since` in a lane that has been failing since
    /// before then (the failing event itself and those stuck behind it).
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

    /// Dead letters the filter selects, in id order, with ids above `after_id` (paging);
    /// dropped ones too if `include_dropped`. An empty filter selects nothing (see
    /// [`DeadLetterFilter`]): list everything with [`DeadLetterFilter::everything`].
    async fn find_dead_letters(
        &self,
        filter: &DeadLetterFilter,
        include_dropped: bool,
        after_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<DeadLetter>, StoreError>;

    /// Puts the dead letters the filter selects back in the queue, in one transaction.
    ///
    /// **A replayed event keeps its original id**, and with it its place in its incident's
    /// order: it is delivered before any newer pending event of the same incident (the lane
    /// sends an incident's events in id order), so a trigger replayed after its resolve was
    /// queued still goes first. Its slate is wiped: `attempts`, `last_error`,
    /// `first_failed_at`, `dead_*`, and the fallback's `*_notified_at` are reset, and
    /// `max_event_age` counts again from the replay (not from acceptance), so an old event is
    /// not expired straight back.
    ///
    /// **Superseded events are not replayed.** Sending an event after a newer one of its
    /// incident would move PagerDuty back to an older state: a trigger replayed after its
    /// resolve went through would re-open a resolved alert and page someone; an old resolve
    /// would close an alert that fired again. So a dead letter stays dead, reported as
    /// [`Superseded`], when a newer event of its incident
    /// - was accepted by PagerDuty (recorded on the dead letter at delivery, `superseded_by`,
    ///   so the rule survives incident-state expiry), or
    /// - is dead or dropped and not part of this same replay (it would not follow).
    ///
    /// Newer events that are pending are fine: they are sent after the replayed one. Replaying
    /// an incident's dead letters together (a filter by target, by key, or `all`) therefore
    /// delivers them all, in order. Skipping, rather than re-sending the incident's latest
    /// state after the old event, is the simplest rule that is always right: PagerDuty already
    /// has (or was deliberately denied) the newer state, and the outbox does not keep the
    /// bodies of delivered events to send again. Should a newer event that was already in
    /// flight when the replay happened be delivered first, [`Store::mark_delivered`] puts the
    /// replayed event back to dead with [`SUPERSEDED_IN_FLIGHT`]. Change events belong to no
    /// incident and are always replayed.
    async fn replay(
        &self,
        filter: &DeadLetterFilter,
        now: Timestamp,
    ) -> Result<ReplayReport, StoreError>;

    /// Drops the dead letters the filter selects (never pending events): they get status
    /// `dropped` with the operator's reason and the time, and are kept as a record. Dropped
    /// events are never replayed, counted, expired or told to the fallback, and are listed only
    /// when asked for. Returns how many were dropped.
    async fn drop_dead(
        &self,
        filter: &DeadLetterFilter,
        reason: &str,
        now: Timestamp,
    ) -> Result<u64, StoreError>;
}

/// Which selected dead letters [`Store::replay`] must leave dead: the one rule both stores
/// apply (see [`Store::replay`]). `selected` rows are `(id, incident, superseded_by)` (no
/// incident for change events); `settled` are every dead or dropped row of their incidents,
/// `(id, incident, is dead)`, the selected ones included.
pub(crate) fn superseded_among<K: Eq + std::hash::Hash>(
    selected: &[(i64, Option<K>, Option<i64>)],
    settled: &[(i64, K, bool)],
) -> Vec<Superseded> {
    let chosen: std::collections::HashSet<i64> = selected.iter().map(|(id, ..)| *id).collect();
    // Per incident, the events that will not follow a replayed older one: dropped, or dead
    // and not part of this replay. Ascending, so the first above an id is the oldest blocker.
    let mut blockers: std::collections::HashMap<&K, Vec<i64>> = std::collections::HashMap::new();
    for (id, incident, dead) in settled {
        if !*dead || !chosen.contains(id) {
            blockers.entry(incident).or_default().push(*id);
        }
    }
    for ids in blockers.values_mut() {
        ids.sort_unstable();
    }
    selected
        .iter()
        .filter_map(|(id, incident, delivered_newer)| {
            let incident = incident.as_ref()?;
            let blocker = || {
                blockers
                    .get(incident)
                    .and_then(|ids| ids.iter().copied().find(|other| other > id))
            };
            let by = delivered_newer.or_else(blocker)?;
            Some(Superseded { id: *id, by })
        })
        .collect()
}

/// Milliseconds since the Unix epoch: how timestamps are stored, the same in every backend.
pub(crate) fn to_millis(at: Timestamp) -> i64 {
    at.as_millisecond()
}

pub(crate) fn from_millis(millis: i64) -> Result<Timestamp, StoreError> {
    Timestamp::from_millisecond(millis)
        .map_err(|e| StoreError::Corrupt(format!("timestamp {millis}: {e}")))
}
