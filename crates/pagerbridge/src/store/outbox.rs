//! The outbox: events accepted from senders wait here, per target lane, until PagerDuty
//! takes them. What a lane reads and writes while it delivers.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use jiff::Timestamp;
use pagerduty_events::Severity;
use serde::Serialize;
use serde_json::Value;

use super::{Action, IncidentSource, JsonText, StoreError, SuppressionPolicy};

/// An event to put in the outbox.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    pub target: String,
    /// The incident's key; `None` for change events, which are independent of each other.
    pub dedup_key: Option<String>,
    pub action: Action,
    pub severity: Option<Severity>,
    /// The PagerDuty event without routing key (an `AlertEvent` or `ChangeEvent` as JSON).
    pub event: JsonText,
    /// The alert it came from, for dead letters and the fallback (optional).
    pub alert: Option<JsonText>,
    pub fingerprint: Option<String>,
    /// The dedup key is the SHA-256 of the labels of the alert with `fingerprint`, the default
    /// key: the fingerprint implies it, so the store need not index the fingerprint to find it
    /// (`dedup_keys_for_fingerprints`). `false` when unsure.
    pub labels_key: bool,
    /// For triggers: hash of what the trigger shows, to suppress unchanged re-triggers.
    pub payload_hash: Option<String>,
    /// When the event is queued at all, decided inside `accept`'s transaction.
    pub condition: Condition,
    /// Where a trigger came from; recorded on the incident it opens or re-opens (other
    /// actions leave the incident's source as it is).
    pub source: Option<IncidentSource>,
}

/// An alert's fingerprint, to find the dedup key its incidents last used
/// ([`Outbox::dedup_keys_for_fingerprints`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FingerprintLookup<'a> {
    pub fingerprint: &'a str,
    /// The alert's labels' key (`format::alert_dedup_key`), to consider its incident too: the
    /// fingerprint index leaves out the incidents keyed by it ([`NewEvent::labels_key`]).
    /// `None` to consider only the keys the index holds.
    pub labels_key: Option<&'a str>,
}

/// A condition on queuing an event, evaluated against the incident's state inside the
/// transaction that would queue it, so no other commit can slip in between the check and the
/// write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Condition {
    /// The usual suppression rules only.
    #[default]
    Always,
    /// Only if the incident is triggered (not acknowledged, resolved or unknown): the silence
    /// watcher's acknowledge, which must never follow a resolve. Otherwise suppressed as
    /// `not_triggered`.
    WhileTriggered,
    /// Only if the incident is open (triggered or acknowledged): the Alertmanager sync's
    /// resolves. Otherwise suppressed as `not_open`.
    WhileOpen,
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

/// Numbers for one lane, for metrics and the admin API.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LaneStats {
    pub target: String,
    pub pending: u64,
    pub dead: u64,
    pub oldest_pending_accepted_at: Option<Timestamp>,
}

/// Called with the target of newly queued events as soon as they are committed: see
/// [`Outbox::on_commit`].
pub type CommitHook = Arc<dyn Fn(&str) + Send + Sync>;

/// The queue of events to deliver, and the incident state `accept` checks them against.
#[async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Has `hook` called with each target that has new events, once per commit, as soon as
    /// readers can see them: for a store whose `accept` makes its commit durable after it is
    /// visible (SQLite), so that a lane can send while the disk flushes, the sender's 2xx
    /// still waiting for it. A store whose commits are durable when visible need not call it
    /// (the default): `accept`'s caller wakes the lanes when it returns. Set once, at startup.
    fn on_commit(&self, _hook: CommitHook) {}

    /// Commits the events of one request in one transaction, applying the suppression rules
    /// against incident state and updating it. Returns one [`Acceptance`] per event, in order.
    async fn accept(
        &self,
        events: Vec<NewEvent>,
        policy: &SuppressionPolicy,
        now: Timestamp,
    ) -> Result<Vec<Acceptance>, StoreError>;

    /// The dedup key last used for each of these Alertmanager fingerprints on a target, for
    /// those remembered: the key of the fingerprint's latest incident (by `updated_at`) among
    /// those the fingerprint index holds (keys the fingerprint does not imply) and, where the
    /// lookup gives it, the one keyed by its alert's labels' key. A request's alerts at once.
    async fn dedup_keys_for_fingerprints(
        &self,
        target: &str,
        alerts: &[FingerprintLookup<'_>],
    ) -> Result<HashMap<String, String>, StoreError>;

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

    /// Pending events, in acceptance order, optionally of one target.
    async fn pending(
        &self,
        target: Option<&str>,
        limit: u32,
    ) -> Result<Vec<QueuedEvent>, StoreError>;

    /// Per-lane numbers (every target with events in the outbox). From maintained counts and
    /// an index, never by counting the outbox: a scrape costs the same whatever the backlog.
    async fn lane_stats(&self) -> Result<Vec<LaneStats>, StoreError>;

    /// Tidies the maintained counts behind [`Outbox::lane_stats`] and
    /// [`Incidents::open_incidents`](super::Incidents::open_incidents), so that reading them
    /// stays cheap; housekeeping calls it every round. The counts are right without it.
    async fn fold_counts(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Whether storage answers (for `/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;
}

/// [`Outbox::lane_stats`], the same SQL on both stores: the counts from `outbox_counts`
/// (migration 0008, kept by triggers in the transaction of every change to the outbox), the
/// oldest pending event from the first entry of the index `outbox_pending_age`. A target is
/// listed while it has rows of any status, as when the outbox itself was counted.
pub(super) const LANE_STATS: &str = "
    SELECT c.target,
           CAST(SUM(CASE WHEN c.status = 'pending' THEN c.n ELSE 0 END) AS BIGINT) AS pending,
           CAST(SUM(CASE WHEN c.status = 'dead' THEN c.n ELSE 0 END) AS BIGINT) AS dead,
           (SELECT MIN(o.accepted_at) FROM outbox o
            WHERE o.target = c.target AND o.status = 'pending') AS oldest
    FROM outbox_counts c
    GROUP BY c.target
    HAVING SUM(c.n) > 0
    ORDER BY c.target";

/// [`Incidents::open_incidents`](super::Incidents::open_incidents), the same SQL on both
/// stores, from the maintained `incident_counts`.
pub(super) const OPEN_INCIDENTS: &str = "
    SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM incident_counts
    WHERE status IN ('triggered', 'acknowledged')";

/// [`DeadLetters::expire_events`](super::DeadLetters::expire_events), the same SQL on both
/// stores: `$1` now, `$2` the cutoff. An event expires from its replay if it was replayed,
/// else from its acceptance; each half is read from an index of pending events
/// (`outbox_pending_age` per target, `outbox_pending_replayed`), so a round costs what it
/// expires, not the size of the backlog.
pub(super) const EXPIRE_EVENTS: &str = "
    UPDATE outbox SET status = 'dead', dead_at = $1,
           dead_reason = 'expired: older than max_event_age without being delivered'
    WHERE id IN (
        SELECT id FROM outbox
        WHERE status = 'pending' AND accepted_at < $2 AND replayed_at IS NULL
          AND target IN (SELECT DISTINCT target FROM outbox_counts)
        UNION ALL
        SELECT id FROM outbox
        WHERE status = 'pending' AND replayed_at IS NOT NULL AND replayed_at < $2)
    RETURNING target";
