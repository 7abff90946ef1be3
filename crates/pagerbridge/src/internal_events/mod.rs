//! What happened inside pagerbridge, as named events: one struct per event, whose
//! [`InternalEvent::emit`] both logs it and counts it (the pattern of Vector's
//! `internal_events`).
//!
//! Code that decides what to do (a lane reading PagerDuty's answer, housekeeping expiring old
//! events) then reads as the decision alone — `EventDeadLettered { … }.emit(&metrics)` — and a
//! metric's labels and its log line are written once, here, where they can be checked against
//! each other.

mod alertmanager;
mod delivery;
mod expired;
mod fallback;
mod ingest;
mod kubernetes;
mod leases;
mod storage;

pub use alertmanager::{AlertmanagerUnreadable, IncidentSynced};
pub use delivery::{
    BodyShrunk, DeliveryPaused, EventDeadLettered, EventDelivered, LaneMisconfigured,
    RequestCompleted,
};
pub use expired::EventsExpired;
pub use fallback::{FallbackNoticeFailed, FallbackNoticeSent};
pub use ingest::IngestAnswered;
pub use kubernetes::{
    SecretSkipped, SecretTargetApplied, SecretTargetRemoved, SecretWatchFailed, SkipReason,
};
pub use leases::{LaneOwnership, SingletonOwnership};
pub use storage::{StorageFailed, StorageOperation};

use crate::metrics::Metrics;

/// Something worth a log line and a metric.
pub trait InternalEvent {
    /// Logs the event and moves its metrics.
    fn emit(self, metrics: &Metrics);
}

/// Why an event went to dead letters: the `reason` label of
/// `pagerbridge_dead_lettered_events_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeadLetterReason {
    /// PagerDuty answered 400: the event itself is wrong.
    Rejected,
    /// The stored event no longer reads as a PagerDuty event; no request was made.
    Unsendable,
    /// Older than `max_event_age` without being delivered.
    Expired,
}

impl DeadLetterReason {
    pub const ALL: [DeadLetterReason; 3] = [
        DeadLetterReason::Rejected,
        DeadLetterReason::Unsendable,
        DeadLetterReason::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::Rejected => "rejected",
            DeadLetterReason::Unsendable => "unsendable",
            DeadLetterReason::Expired => "expired",
        }
    }
}
