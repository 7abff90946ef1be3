//! One lane: the loop that delivers a target's events, one request at a time.
//!
//! The outcome table of DESIGN.md, in code:
//!
//! | PagerDuty answer | what the lane does |
//! | --- | --- |
//! | 202 | remove the event, note the send on its incident |
//! | 400 | dead-letter the event with PagerDuty's errors |
//! | 429 | pause (`Retry-After`, else 5 s doubling up to `max_backoff`); the event keeps its place |
//! | 5xx, timeout, network | pause with exponential backoff and full jitter (1 s, 2 s, 4 s… caps, up to `max_backoff`); the event keeps its place |
//! | 401/403/404/other, or no key | mark the lane misconfigured and retry slowly |

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use pagerduty_events::{
    AlertEvent, ChangeEvent, Endpoint, RequestBody, RetryPolicy, RoutingKey, SendError,
};
use serde::Deserialize;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::{LaneSettings, Shared};
use crate::metrics::{EndpointLabels, ErrorLabels, LaneState, Metrics, RequestLabels, TargetLabel};
use crate::store::{Action, BudgetDecision, QueuedEvent};

/// A pause after a storage error: storage problems are usually brief (a locked file, a
/// failover) and the lane must not spin on them.
const STORE_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// The longest `Retry-After` obeyed; a larger one is treated as this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// What one step of the lane came to.
#[derive(Debug, PartialEq)]
enum Step {
    /// A request was made (or an event settled without one); look for the next at once.
    Progressed,
    /// Nothing to send.
    Idle,
    /// Wait this long before trying again.
    Pause(Duration),
}

pub(crate) struct Lane {
    target: String,
    settings: LaneSettings,
    shared: Shared,
    wake: Arc<Notify>,
    stop: watch::Receiver<Option<Instant>>,
    /// Consecutive 5xx/timeout/network failures.
    failures: u32,
    /// Consecutive 429s.
    throttles: u32,
}

impl Lane {
    pub(crate) fn new(
        target: String,
        settings: LaneSettings,
        shared: Shared,
        wake: Arc<Notify>,
        stop: watch::Receiver<Option<Instant>>,
    ) -> Self {
        Self {
            target,
            settings,
            shared,
            wake,
            stop,
            failures: 0,
            throttles: 0,
        }
    }

    pub(crate) async fn run(mut self) {
        tracing::info!(target_name = %self.target, "delivery lane started");
        loop {
            let draining = self.stop.borrow().is_some();
            let keep_going = match self.step().await {
                Step::Progressed => true,
                // Draining and nothing left: done.
                Step::Idle if draining => false,
                Step::Idle => self.wait(self.settings.idle_poll, true).await,
                Step::Pause(pause) => self.wait(pause, false).await,
            };
            if !keep_going {
                break;
            }
        }
        tracing::info!(target_name = %self.target, "delivery lane stopped");
    }

    /// Sleeps for `pause`. New events end the sleep only when the lane is idle (`wakeable`):
    /// a pause after a 429 or a failure is PagerDuty's, and new alerts must not cut it short.
    /// Returns false when the lane should stop: draining, and the pause outlasts the deadline.
    async fn wait(&mut self, pause: Duration, wakeable: bool) -> bool {
        let until = Instant::now() + pause;
        loop {
            if let Some(deadline) = *self.stop.borrow()
                && until >= deadline
            {
                return false;
            }
            tokio::select! {
                () = tokio::time::sleep_until(until) => return true,
                () = self.wake.notified(), if wakeable => return true,
                changed = self.stop.changed() => {
                    if changed.is_err() {
                        // Nobody can ask us to stop any more; just finish the pause.
                        tokio::time::sleep_until(until).await;
                        return true;
                    }
                }
            }
        }
    }

    async fn step(&mut self) -> Step {
        let store = &self.shared.store;
        let event = match store.next_eligible(&self.target).await {
            Ok(Some(event)) => event,
            Ok(None) => return Step::Idle,
            Err(error) => {
                tracing::error!(target_name = %self.target, %error, "cannot read the outbox");
                return Step::Pause(STORE_ERROR_PAUSE);
            }
        };
        let now = Timestamp::now();
        let budget = self.settings.budget;
        let slot = match store
            .take_budget(&self.target, budget.requests, budget.window, now)
            .await
        {
            Ok(BudgetDecision::Granted { slot }) => slot,
            Ok(BudgetDecision::WaitUntil(at)) => {
                let wait = Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO);
                tracing::debug!(target_name = %self.target, wait_ms = wait.as_millis() as u64, "budget full; waiting");
                return Step::Pause(wait.max(Duration::from_millis(1)));
            }
            Err(error) => {
                tracing::error!(target_name = %self.target, %error, "cannot read the send budget");
                return Step::Pause(STORE_ERROR_PAUSE);
            }
        };
        let Some(key) = self.shared.keys.get(&self.target) else {
            self.shared
                .metrics
                .set_lane_state(&self.target, LaneState::misconfigured);
            tracing::error!(target_name = %self.target, "no routing key for this target; events stay queued");
            return Step::Pause(self.settings.misconfigured_retry);
        };
        let (endpoint, body) = match request_body(&key, &event) {
            Ok(request) => request,
            Err(reason) => {
                self.dead_letter(&event, &reason).await;
                return Step::Progressed;
            }
        };
        if body.shrunk() {
            Metrics::count(&self.shared.metrics.repaired, &self.target, "body_shrunk");
        }
        let attempt = self.shared.client.send_body(endpoint, &key, body).await;
        if let Err(error) = store.settle_budget(slot, Timestamp::now()).await {
            tracing::warn!(target_name = %self.target, %error, "could not settle a budget slot");
        }
        self.observe_request(endpoint, &attempt.result, attempt.elapsed);
        match attempt.result {
            Ok(_) => self.delivered(&event).await,
            Err(error) => self.failed(&event, error).await,
        }
    }

    fn observe_request(
        &self,
        endpoint: Endpoint,
        result: &Result<pagerduty_events::Accepted, SendError>,
        elapsed: Duration,
    ) {
        let metrics = &self.shared.metrics;
        let status = match result {
            Ok(_) => "202".to_owned(),
            Err(error) => error
                .status()
                .map_or_else(|| error.kind().to_owned(), |s| s.to_string()),
        };
        metrics
            .api_requests
            .get_or_create(&RequestLabels {
                target: self.target.clone(),
                endpoint: endpoint.path().to_owned(),
                status,
            })
            .inc();
        metrics
            .api_duration
            .get_or_create(&EndpointLabels {
                target: self.target.clone(),
                endpoint: endpoint.path().to_owned(),
            })
            .observe(elapsed.as_secs_f64());
        if let Err(error) = result {
            metrics
                .api_errors
                .get_or_create(&ErrorLabels {
                    target: self.target.clone(),
                    error_type: error.kind().to_owned(),
                })
                .inc();
        }
    }

    async fn delivered(&mut self, event: &QueuedEvent) -> Step {
        let now = Timestamp::now();
        self.failures = 0;
        self.throttles = 0;
        let metrics = &self.shared.metrics;
        metrics.set_lane_state(&self.target, LaneState::healthy);
        metrics.delivered(&self.target, event.action, event.severity);
        let lag = now.duration_since(event.accepted_at).as_secs_f64().max(0.0);
        metrics
            .delivery_lag
            .get_or_create(&TargetLabel {
                target: self.target.clone(),
            })
            .observe(lag);
        tracing::info!(
            target_name = %self.target,
            action = event.action.as_str(),
            dedup_key = event.dedup_key.as_deref().unwrap_or(""),
            event_id = event.id,
            lag_ms = (lag * 1000.0) as u64,
            "delivered to PagerDuty"
        );
        if let Err(error) = self.shared.store.mark_delivered(event.id, now).await {
            // PagerDuty has it; it will be sent once more after a restart, harmlessly (same
            // dedup key). Pausing keeps the lane from resending it right away.
            tracing::error!(target_name = %self.target, event_id = event.id, %error, "delivered, but could not record it");
            return Step::Pause(STORE_ERROR_PAUSE);
        }
        Step::Progressed
    }

    async fn failed(&mut self, event: &QueuedEvent, error: SendError) -> Step {
        let metrics = &self.shared.metrics;
        if let SendError::InvalidEvent { .. } = error {
            self.dead_letter(event, &error.to_string()).await;
            return Step::Progressed;
        }
        if let Err(store_error) = self
            .shared
            .store
            .record_failure(event.id, &error.to_string(), Timestamp::now())
            .await
        {
            tracing::error!(target_name = %self.target, %store_error, "could not record a failed attempt");
        }
        let pause = match &error {
            SendError::RateLimited { retry_after } => {
                self.throttles += 1;
                metrics
                    .rate_limit_hits
                    .get_or_create(&TargetLabel {
                        target: self.target.clone(),
                    })
                    .inc();
                metrics.set_lane_state(&self.target, LaneState::rate_limited);
                match retry_after {
                    // PagerDuty's own word is honoured even past `max_backoff` (retrying sooner
                    // would only be refused again), within reason.
                    Some(asked) => (*asked).min(MAX_RETRY_AFTER),
                    None => doubling(self.settings.rate_limit_backoff, self.throttles)
                        .min(self.settings.max_backoff),
                }
            }
            SendError::UnexpectedStatus { .. } => {
                metrics.set_lane_state(&self.target, LaneState::misconfigured);
                self.settings.misconfigured_retry
            }
            _ => {
                self.failures += 1;
                metrics.set_lane_state(&self.target, LaneState::backing_off);
                RetryPolicy {
                    max_attempts: u32::MAX,
                    base_delay: self.settings.failure_backoff,
                    max_delay: self.settings.max_backoff,
                }
                .backoff(self.failures)
            }
        };
        tracing::warn!(
            target_name = %self.target,
            action = event.action.as_str(),
            dedup_key = event.dedup_key.as_deref().unwrap_or(""),
            event_id = event.id,
            attempts = event.attempts + 1,
            pause_ms = pause.as_millis() as u64,
            %error,
            "PagerDuty request failed; the event keeps its place"
        );
        Step::Pause(pause)
    }

    async fn dead_letter(&self, event: &QueuedEvent, reason: &str) {
        tracing::error!(
            target_name = %self.target,
            action = event.action.as_str(),
            dedup_key = event.dedup_key.as_deref().unwrap_or(""),
            event_id = event.id,
            reason,
            "event dead-lettered"
        );
        let kind = if reason.starts_with("PagerDuty rejected") {
            "rejected"
        } else {
            "unsendable"
        };
        Metrics::count(&self.shared.metrics.dead_lettered, &self.target, kind);
        if let Err(error) = self
            .shared
            .store
            .dead_letter(event.id, reason, Timestamp::now())
            .await
        {
            tracing::error!(target_name = %self.target, %error, "could not dead-letter the event");
        }
        self.shared.fallback_wake.notify_one();
    }
}

/// `base · 2^(n-1)`, saturating.
fn doubling(base: Duration, n: u32) -> Duration {
    base.saturating_mul(1u32 << n.saturating_sub(1).min(20))
}

/// The request for a queued event; an event that no longer parses is unsendable.
fn request_body(key: &RoutingKey, event: &QueuedEvent) -> Result<(Endpoint, RequestBody), String> {
    let unsendable = |e: serde_json::Error| format!("stored event cannot be read: {e}");
    match event.action {
        Action::Change => {
            let change: ChangeEvent = ChangeEvent::deserialize(&event.event).map_err(unsendable)?;
            Ok((Endpoint::ChangeEnqueue, RequestBody::change(key, &change)))
        }
        _ => {
            let alert: AlertEvent = AlertEvent::deserialize(&event.event).map_err(unsendable)?;
            Ok((Endpoint::Enqueue, RequestBody::alert(key, &alert)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_pauses_double() {
        let base = Duration::from_secs(5);
        assert_eq!(doubling(base, 1), Duration::from_secs(5));
        assert_eq!(doubling(base, 2), Duration::from_secs(10));
        assert_eq!(doubling(base, 4), Duration::from_secs(40));
        assert!(doubling(base, u32::MAX) > Duration::from_secs(3600));
    }
}
