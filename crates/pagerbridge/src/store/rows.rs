//! The rows both backends read, and their one conversion to the domain types.
//!
//! The SQL differs between SQLite and PostgreSQL (placeholders, locks, aggregates), but the
//! columns it returns are the same: each backend decodes them into these plain row structs
//! (`sqlx::FromRow` is generic over the database), and the checks that stored data is sane —
//! known action and status, valid JSON and timestamps — happen here, once.
//!
//! Integer widths follow PostgreSQL's schema (`INTEGER` is 32 bits there); SQLite decodes its
//! 64-bit integers into them too. The outbox's JSON is text on PostgreSQL and LZ4 blocks on
//! SQLite ([`StoredJson`] reads both).

use pagerduty_events::Severity;
use serde_json::Value;

use super::lz4_json::StoredJson;
use super::suppress::Status;
use super::{
    Acceptance, Action, DeadLetter, IncidentSource, IncidentState, LaneStats, NewEvent, Notice,
    QueuedEvent, StoreError, from_millis,
};

/// An outbox row as a lane and the admin API see it (`queued_columns!` in each backend).
#[derive(sqlx::FromRow)]
pub(super) struct QueuedRow {
    id: i64,
    target: String,
    dedup_key: Option<String>,
    action: String,
    severity_rank: i32,
    event: StoredJson,
    alert: Option<StoredJson>,
    fingerprint: Option<String>,
    accepted_at: i64,
    attempts: i32,
    last_error: Option<String>,
}

impl TryFrom<QueuedRow> for QueuedEvent {
    type Error = StoreError;

    fn try_from(row: QueuedRow) -> Result<Self, StoreError> {
        let event = row.event.event()?;
        Ok(QueuedEvent {
            id: row.id,
            target: row.target,
            dedup_key: row.dedup_key,
            action: Action::parse(&row.action)?,
            severity: severity_from_rank(row.severity_rank),
            alert: row
                .alert
                .map(|alert| json("alert", &alert.alert(&event)?))
                .transpose()?,
            event: json("event", &event)?,
            fingerprint: row.fingerprint,
            accepted_at: from_millis(row.accepted_at)?,
            attempts: u32::try_from(row.attempts).unwrap_or(u32::MAX),
            last_error: row.last_error,
        })
    }
}

/// An outbox row the fallback webhook must hear about: the event, and whether it is dead.
#[derive(sqlx::FromRow)]
pub(super) struct NoticeRow {
    #[sqlx(flatten)]
    event: QueuedRow,
    status: String,
    dead_reason: Option<String>,
}

impl TryFrom<NoticeRow> for Notice {
    type Error = StoreError;

    fn try_from(row: NoticeRow) -> Result<Self, StoreError> {
        Ok(Notice::new(
            row.event.try_into()?,
            row.status == "dead",
            row.dead_reason,
        ))
    }
}

/// A dead or dropped outbox row (`dead_letter_columns!` in each backend).
#[derive(sqlx::FromRow)]
pub(super) struct DeadLetterRow {
    id: i64,
    target: String,
    dedup_key: Option<String>,
    action: String,
    event: StoredJson,
    accepted_at: i64,
    dead_at: Option<i64>,
    dead_reason: Option<String>,
    attempts: i32,
    superseded_by: Option<i64>,
    dropped_at: Option<i64>,
    drop_reason: Option<String>,
}

impl TryFrom<DeadLetterRow> for DeadLetter {
    type Error = StoreError;

    fn try_from(row: DeadLetterRow) -> Result<Self, StoreError> {
        Ok(DeadLetter {
            id: row.id,
            target: row.target,
            dedup_key: row.dedup_key,
            action: Action::parse(&row.action)?,
            event: json("event", &row.event.event()?)?,
            accepted_at: from_millis(row.accepted_at)?,
            dead_at: from_millis(row.dead_at.unwrap_or(0))?,
            reason: row.dead_reason.unwrap_or_default(),
            attempts: u32::try_from(row.attempts).unwrap_or(0),
            superseded_by: row.superseded_by,
            dropped_at: row.dropped_at.map(from_millis).transpose()?,
            drop_reason: row.drop_reason,
        })
    }
}

/// The columns of an [`IncidentRow`], as a macro so queries stay `&'static str` (sqlx refuses
/// SQL built at run time); the same on both stores.
macro_rules! incident_columns {
    () => {
        "target, dedup_key, fingerprint, labels_key, status, last_payload_hash, \
         last_trigger_at, last_sent_at, updated_at, source, first_event_at, chain"
    };
}
pub(super) use incident_columns;

/// [`super::Outbox::dedup_keys_for_fingerprints`]'s answer from the candidates its queries
/// found, (fingerprint, dedup key, `updated_at`): for each fingerprint the key last updated.
/// The sort is stable: of two updated in the same millisecond, the one found later wins.
pub(super) fn latest_keys(
    mut candidates: Vec<(String, String, i64)>,
) -> std::collections::HashMap<String, String> {
    candidates.sort_by_key(|(_, _, updated_at)| *updated_at);
    candidates
        .into_iter()
        .map(|(fingerprint, key, _)| (fingerprint, key))
        .collect()
}

/// The dedup keys the events name, each once, by target: what `accept` loads, a query per
/// target.
pub(super) fn dedup_keys_by_target<'a>(
    events: impl IntoIterator<Item = &'a NewEvent>,
) -> std::collections::BTreeMap<&'a str, std::collections::BTreeSet<&'a str>> {
    let mut keys: std::collections::BTreeMap<&str, std::collections::BTreeSet<&str>> =
        std::collections::BTreeMap::new();
    for event in events {
        if let Some(key) = &event.dedup_key {
            keys.entry(&event.target).or_default().insert(key);
        }
    }
    keys
}

/// Each event's [`Acceptance`]: its suppression reason, or the next of the ids the queued ones
/// were given, in order.
pub(super) fn acceptances(
    verdicts: Vec<Option<&'static str>>,
    ids: &mut impl Iterator<Item = i64>,
) -> Result<Vec<Acceptance>, StoreError> {
    verdicts
        .into_iter()
        .map(|verdict| match verdict {
            Some(reason) => Ok(Acceptance::Suppressed { reason }),
            None => ids
                .next()
                .map(|id| Acceptance::Queued { id })
                .ok_or_else(|| StoreError::Corrupt("fewer ids than events queued".into())),
        })
        .collect()
}

/// A row of `incidents`.
#[derive(sqlx::FromRow)]
pub(super) struct IncidentRow {
    target: String,
    dedup_key: String,
    fingerprint: Option<String>,
    labels_key: Option<bool>,
    status: String,
    last_payload_hash: Option<String>,
    last_trigger_at: Option<i64>,
    last_sent_at: Option<i64>,
    updated_at: i64,
    source: Option<String>,
    first_event_at: Option<i64>,
    chain: i64,
}

impl TryFrom<IncidentRow> for IncidentState {
    type Error = StoreError;

    fn try_from(row: IncidentRow) -> Result<Self, StoreError> {
        Ok(IncidentState {
            status: Status::parse(&row.status)
                .ok_or_else(|| StoreError::Corrupt(format!("incident status {:?}", row.status)))?,
            target: row.target,
            dedup_key: row.dedup_key,
            fingerprint: row.fingerprint,
            // NULL: stored before it was recorded; the incident may be keyed either way.
            labels_key: row.labels_key.unwrap_or(false),
            last_payload_hash: row.last_payload_hash,
            last_trigger_at: row.last_trigger_at.map(from_millis).transpose()?,
            last_sent_at: row.last_sent_at.map(from_millis).transpose()?,
            updated_at: from_millis(row.updated_at)?,
            source: row
                .source
                .map(|source| {
                    IncidentSource::parse(&source)
                        .ok_or_else(|| StoreError::Corrupt(format!("incident source {source:?}")))
                })
                .transpose()?,
            first_event_at: row.first_event_at.map(from_millis).transpose()?,
            chain: row.chain,
        })
    }
}

/// One lane's counts, as `lane_stats` aggregates them.
#[derive(sqlx::FromRow)]
pub(super) struct LaneStatsRow {
    target: String,
    pending: i64,
    dead: i64,
    oldest: Option<i64>,
}

impl TryFrom<LaneStatsRow> for LaneStats {
    type Error = StoreError;

    fn try_from(row: LaneStatsRow) -> Result<Self, StoreError> {
        Ok(LaneStats {
            target: row.target,
            pending: u64::try_from(row.pending).unwrap_or(0),
            dead: u64::try_from(row.dead).unwrap_or(0),
            oldest_pending_accepted_at: row.oldest.map(from_millis).transpose()?,
        })
    }
}

/// A dead letter a replay selected, for [`ReplayReport::plan`](super::ReplayReport::plan).
#[derive(sqlx::FromRow)]
pub(super) struct ReplayCandidate {
    pub id: i64,
    pub target: String,
    /// `None` for change events.
    pub dedup_key: Option<String>,
    /// The newer event PagerDuty accepted while this one was dead.
    pub superseded_by: Option<i64>,
}

/// A dead or dropped event of an incident a replay touches.
#[derive(sqlx::FromRow)]
pub(super) struct SettledRow {
    pub id: i64,
    pub target: String,
    pub dedup_key: String,
    /// Dead (not dropped).
    pub dead: bool,
}

/// Each backend's rows, decoded and checked: one function per domain type, generic over the
/// database's row type, so `rows.iter().map(queued_from_row)` reads the same in both.
macro_rules! from_row {
    ($(#[$doc:meta] $name:ident: $row:ty => $domain:ty;)+) => {$(
        #[$doc]
        pub(super) fn $name<'r, R: sqlx::Row>(row: &'r R) -> Result<$domain, StoreError>
        where
            $row: sqlx::FromRow<'r, R>,
        {
            <$row as sqlx::FromRow<'r, R>>::from_row(row)?.try_into()
        }
    )+};
}

from_row! {
    /// An event waiting in the outbox.
    queued_from_row: QueuedRow => QueuedEvent;
    /// A notice for the fallback webhook (an outbox row with its status and dead reason).
    notice_from_row: NoticeRow => Notice;
    /// A dead (or dropped) letter.
    dead_letter_from_row: DeadLetterRow => DeadLetter;
    /// An incident's state.
    incident_from_row: IncidentRow => IncidentState;
    /// One lane's numbers.
    lane_stats_from_row: LaneStatsRow => LaneStats;
}

/// The inverse of [`super::severity_rank`]; ranks no severity has mean none (change events).
fn severity_from_rank(rank: i32) -> Option<Severity> {
    match rank {
        4 => Some(Severity::Critical),
        3 => Some(Severity::Error),
        2 => Some(Severity::Warning),
        1 => Some(Severity::Info),
        _ => None,
    }
}

fn json(column: &str, text: &str) -> Result<Value, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}
