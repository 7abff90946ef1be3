//! What a lane's requests came to: one event per row of the outcome table.

use std::time::Duration;

use pagerduty_events::{Accepted, Endpoint, SendError};

use super::{DeadLetterReason, InternalEvent};
use crate::metrics::{
    EndpointLabels, ErrorLabels, LaneState, Metrics, ReasonLabels, RequestLabels, TargetLabel,
};
use crate::store::QueuedEvent;

/// A request to PagerDuty ended, whatever the answer: requests by endpoint and status, errors
/// by type, duration.
pub struct RequestCompleted<'a> {
    pub target: &'a str,
    pub endpoint: Endpoint,
    pub result: &'a Result<Accepted, SendError>,
    pub elapsed: Duration,
}

impl InternalEvent for RequestCompleted<'_> {
    fn emit(self, metrics: &Metrics) {
        let target = self.target.to_owned();
        let endpoint = self.endpoint.path().to_owned();
        let status = match self.result {
            Ok(_) => "202".to_owned(),
            Err(error) => error
                .status()
                .map_or_else(|| error.kind().to_owned(), |s| s.to_string()),
        };
        metrics
            .api_requests
            .get_or_create(&RequestLabels {
                target: target.clone(),
                endpoint: endpoint.clone(),
                status,
            })
            .inc();
        metrics
            .api_duration
            .get_or_create(&EndpointLabels {
                target: target.clone(),
                endpoint,
            })
            .observe(self.elapsed.as_secs_f64());
        if let Err(error) = self.result {
            metrics
                .api_errors
                .get_or_create(&ErrorLabels {
                    target,
                    error_type: error.kind().to_owned(),
                })
                .inc();
        }
    }
}

/// PagerDuty accepted an event (202): counted by action, lag observed, lane healthy.
pub struct EventDelivered<'a> {
    pub event: &'a QueuedEvent,
    /// From acceptance to the 202.
    pub lag: Duration,
}

impl InternalEvent for EventDelivered<'_> {
    fn emit(self, metrics: &Metrics) {
        let event = self.event;
        tracing::info!(
            target_name = %event.target,
            action = event.action.as_str(),
            dedup_key = event.dedup_key.as_deref().unwrap_or(""),
            event_id = event.id,
            lag_ms = self.lag.as_millis() as u64,
            "delivered to PagerDuty"
        );
        metrics.set_lane_state(&event.target, LaneState::Healthy);
        metrics.delivered(&event.target, event.action, event.severity);
        metrics
            .delivery_lag
            .get_or_create(&TargetLabel {
                target: event.target.clone(),
            })
            .observe(self.lag.as_secs_f64());
    }
}

/// An event went to dead letters: PagerDuty refused it, or it cannot be sent.
pub struct EventDeadLettered<'a> {
    pub event: &'a QueuedEvent,
    pub reason: DeadLetterReason,
    /// What an operator reads in the dead letter.
    pub detail: &'a str,
}

impl InternalEvent for EventDeadLettered<'_> {
    fn emit(self, metrics: &Metrics) {
        let event = self.event;
        tracing::error!(
            target_name = %event.target,
            action = event.action.as_str(),
            dedup_key = event.dedup_key.as_deref().unwrap_or(""),
            event_id = event.id,
            reason = self.detail,
            "event dead-lettered"
        );
        metrics
            .dead_lettered
            .get_or_create(&ReasonLabels {
                target: event.target.clone(),
                reason: self.reason.as_str().to_owned(),
            })
            .inc();
    }
}

/// A request failed in a way worth retrying (429, 5xx, timeout, network); the event keeps its
/// place and the lane pauses.
pub struct DeliveryPaused<'a> {
    pub event: &'a QueuedEvent,
    pub error: &'a SendError,
    pub pause: Duration,
}

impl InternalEvent for DeliveryPaused<'_> {
    fn emit(self, metrics: &Metrics) {
        let event = self.event;
        let state = if let SendError::RateLimited { .. } = self.error {
            metrics
                .rate_limit_hits
                .get_or_create(&TargetLabel {
                    target: event.target.clone(),
                })
                .inc();
            LaneState::RateLimited
        } else {
            LaneState::BackingOff
        };
        metrics.set_lane_state(&event.target, state);
        tracing::warn!(
            target_name = %event.target,
            action = event.action.as_str(),
            dedup_key = event.dedup_key.as_deref().unwrap_or(""),
            event_id = event.id,
            attempts = event.attempts + 1,
            pause_ms = self.pause.as_millis() as u64,
            error = %self.error,
            "PagerDuty request failed; the event keeps its place"
        );
    }
}

/// The lane's setup is wrong: no routing key, or an answer such as 401/403/404. Events stay
/// queued and the lane retries slowly.
pub struct LaneMisconfigured<'a> {
    pub target: &'a str,
    /// What is wrong (never the key).
    pub why: &'a str,
}

impl InternalEvent for LaneMisconfigured<'_> {
    fn emit(self, metrics: &Metrics) {
        tracing::error!(
            target_name = self.target,
            why = self.why,
            "lane misconfigured; events stay queued"
        );
        metrics.set_lane_state(self.target, LaneState::Misconfigured);
    }
}

/// A body over PagerDuty's size limit was shrunk (custom_details cut) before sending.
pub struct BodyShrunk<'a> {
    pub target: &'a str,
}

impl InternalEvent for BodyShrunk<'_> {
    fn emit(self, metrics: &Metrics) {
        tracing::warn!(
            target_name = self.target,
            "request body over 512,000 bytes; custom_details shrunk"
        );
        Metrics::count(&metrics.repaired, self.target, "body_shrunk");
    }
}
