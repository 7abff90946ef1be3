//! Dead letters: events PagerDuty refused, or that grew too old to matter, kept for operators
//! to list, replay or drop, and the rule that keeps a replay from taking PagerDuty back to an
//! older state.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::rows::{ReplayCandidate, SettledRow};
use super::{Action, StoreError};

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
    /// replaying this one would take PagerDuty back to an older state ([`DeadLetters::replay`]).
    pub superseded_by: Option<i64>,
    /// Set when an operator dropped it ([`DeadLetters::drop_dead`]); only listed when asked for.
    pub dropped_at: Option<Timestamp>,
    pub drop_reason: Option<String>,
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

/// A dead letter [`DeadLetters::replay`] left dead because a newer event of its incident superseded it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Superseded {
    pub id: i64,
    /// The newer event: delivered to PagerDuty, or dead/dropped and not part of this replay.
    pub by: i64,
}

/// What [`DeadLetters::replay`] did.
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

impl ReplayReport {
    /// Decides a replay: which of the selected dead letters go back to the queue and which
    /// stay dead as superseded (the one rule both stores apply, see [`DeadLetters::replay`]).
    /// `selected` are the dead letters the filter chose, in id order; `settled` every dead or
    /// dropped event of their incidents, the selected ones included.
    pub(super) fn plan(selected: &[ReplayCandidate], settled: &[SettledRow]) -> Self {
        let chosen: HashSet<i64> = selected.iter().map(|c| c.id).collect();
        // Per incident, the events that will not follow a replayed older one: dropped, or dead
        // and not part of this replay. Ascending, so the first above an id is the oldest blocker.
        let mut blockers: HashMap<(&str, &str), Vec<i64>> = HashMap::new();
        for row in settled {
            if !row.dead || !chosen.contains(&row.id) {
                blockers
                    .entry((&row.target, &row.dedup_key))
                    .or_default()
                    .push(row.id);
            }
        }
        for ids in blockers.values_mut() {
            ids.sort_unstable();
        }
        let superseded: Vec<Superseded> = selected
            .iter()
            .filter_map(|candidate| {
                // Change events belong to no incident: nothing supersedes them.
                let incident = (candidate.target.as_str(), candidate.dedup_key.as_deref()?);
                let blocker = || {
                    blockers
                        .get(&incident)
                        .and_then(|ids| ids.iter().copied().find(|other| *other > candidate.id))
                };
                let by = candidate.superseded_by.or_else(blocker)?;
                Some(Superseded {
                    id: candidate.id,
                    by,
                })
            })
            .collect();
        let skipped: HashSet<i64> = superseded.iter().map(|s| s.id).collect();
        let (replayed, mut targets): (Vec<i64>, Vec<String>) = selected
            .iter()
            .filter(|candidate| !skipped.contains(&candidate.id))
            .map(|candidate| (candidate.id, candidate.target.clone()))
            .unzip();
        targets.sort();
        targets.dedup();
        Self {
            replayed,
            superseded,
            targets,
        }
    }
}

/// What operators do with dead letters, and the expiry that makes them.
#[async_trait]
pub trait DeadLetters: Send + Sync + 'static {
    /// Dead letters, oldest first, optionally of one target.
    async fn dead_letters(
        &self,
        target: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DeadLetter>, StoreError>;

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
    /// flight when the replay happened be delivered first, [`Outbox::mark_delivered`] puts the
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

    /// Dead-letters pending events accepted before `cutoff`; says how many per target.
    async fn expire_events(&self, cutoff: Timestamp, now: Timestamp)
    -> Result<Expired, StoreError>;
}

/// What [`DeadLetters::expire_events`] dead-lettered: how many events per target, so
/// housekeeping can count `pagerbridge_dead_lettered_events_total{reason="expired"}` by target.
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
