//! What the fallback webhook must be told: dead letters, and events stuck behind a lane that
//! has been failing too long. Each is told once per kind.

use async_trait::async_trait;
use jiff::Timestamp;
use serde::Serialize;

use super::{QueuedEvent, StoreError};

/// The outbox rows [`FallbackNotices::fallback_due`] selects, the same SQL on both stores
/// (`$1` failing since): dead letters not yet reported, and pending events accepted before
/// `$1` on a lane with an event failing since before `$1`, not yet reported as failing. Each
/// half is read from a partial index (migration 0008) holding only such rows (dead and
/// unreported, pending and failed), so a healthy lane's backlog is never read; a macro so that
/// queries stay `&'static str`.
macro_rules! fallback_due_ids {
    () => {
        "SELECT id FROM outbox WHERE status = 'dead' AND dead_notified_at IS NULL
         UNION ALL
         SELECT id FROM outbox
         WHERE status = 'pending' AND failing_notified_at IS NULL AND accepted_at < $1
           AND target IN (SELECT target FROM outbox
                          WHERE status = 'pending' AND first_failed_at < $1)"
    };
}
pub(super) use fallback_due_ids;

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

/// The fallback webhook's queue of notices.
#[async_trait]
pub trait FallbackNotices: Send + Sync + 'static {
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
}
