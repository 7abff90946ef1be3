//! Housekeeping moved events older than `max_event_age` to dead letters.

use super::{DeadLetterReason, InternalEvent};
use crate::metrics::Metrics;

/// `count` events of `target` expired in one housekeeping round.
pub struct EventsExpired<'a> {
    pub target: &'a str,
    pub count: u64,
}

impl InternalEvent for EventsExpired<'_> {
    fn emit(self, metrics: &Metrics) {
        // An error: these alerts never reached PagerDuty and never will on their own.
        tracing::error!(
            target_name = self.target,
            expired = self.count,
            "events older than max_event_age moved to dead letters"
        );
        metrics
            .dead_lettered
            .get_or_create(&crate::metrics::ReasonLabels {
                target: self.target.to_owned(),
                reason: DeadLetterReason::Expired.as_str().to_owned(),
            })
            .inc_by(self.count);
    }
}
