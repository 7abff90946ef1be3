//! The fallback webhook was told about an event, or failed to be.

use super::InternalEvent;
use crate::metrics::Metrics;
use crate::store::Notice;

/// The webhook answered 2xx for a notice.
pub struct FallbackNoticeSent<'a> {
    pub notice: &'a Notice,
    pub kind: &'static str,
}

impl InternalEvent for FallbackNoticeSent<'_> {
    fn emit(self, metrics: &Metrics) {
        let event = &self.notice.event;
        tracing::warn!(
            target_name = %event.target,
            kind = self.kind,
            event_id = event.id,
            dedup_key = event.dedup_key.as_deref().unwrap_or(""),
            "fallback webhook notified"
        );
        metrics.fallback_send(self.kind, "sent");
    }
}

/// The webhook failed (no 2xx, timeout, network); the notice stays due.
pub struct FallbackNoticeFailed<'a> {
    pub notice: &'a Notice,
    pub kind: &'static str,
    pub error: &'a str,
    pub pause: std::time::Duration,
}

impl InternalEvent for FallbackNoticeFailed<'_> {
    fn emit(self, metrics: &Metrics) {
        tracing::error!(
            error = self.error,
            kind = self.kind,
            event_id = self.notice.event.id,
            pause_ms = self.pause.as_millis() as u64,
            "fallback webhook failed; will retry"
        );
        metrics.fallback_send(self.kind, "failed");
    }
}
