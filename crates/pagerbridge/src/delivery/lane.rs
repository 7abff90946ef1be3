//! One lane: the loop that delivers a target's events, one request at a time.
//!
//! The outcome table of DESIGN.md, in code ([`Lane::failed`] and [`Lane::delivered`]):
//!
//! | PagerDuty answer | what the lane does |
//! | --- | --- |
//! | 202 | remove the event, note the send on its incident |
//! | 400 | dead-letter the event with PagerDuty's errors |
//! | 429 | pause (`Retry-After`, else 5 s doubling up to `max_backoff`); the event keeps its place |
//! | 5xx, timeout, network | pause with exponential backoff and full jitter (1 s, 2 s, 4 s… caps, up to `max_backoff`); the event keeps its place |
//! | 401/403/404/other, or no key | mark the lane misconfigured and retry slowly |
//!
//! The state each outcome leaves the lane in (healthy, rate limited, backing off,
//! misconfigured) is reported on the lane's lease when it changes, for the admin API
//! ([`crate::store::LaneStates`]); the metric `pagerbridge_lane_state` follows it through the
//! internal events.
//!
//! The lane only decides: requests are built by [`super::request`], sent by a
//! [`PagerDutyService`](super::PagerDutyService), stored through a [`LaneStore`], waited for
//! by the [`Pacer`], and every outcome is logged and counted by an
//! [internal event](crate::internal_events).

use std::time::Duration;

use jiff::Timestamp;
use pagerduty_events::{Backoff, Jitter, RoutingKey, SendError};

use super::pacer::{Pacer, Slept, Wake};
use super::request::request_body;
use super::{LaneSettings, LaneStore, Shared};
use crate::internal_events::{
    BodyShrunk, DeadLetterReason, DeliveryPaused, EventDeadLettered, EventDelivered, InternalEvent,
    LaneMisconfigured, RequestCompleted, StorageFailed, StorageOperation,
};
use crate::store::{BudgetDecision, BudgetId, Fence, LaneState, QueuedEvent, StoreError};

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
    /// Wait this long, or until woken: the target has no key, which may come back at any
    /// moment (a re-created Secret) and spends nobody's budget meanwhile.
    Parked(Duration),
    /// Our lease on the lane is gone (another replica may drive it now): stop, send nothing.
    Fenced,
}

pub(crate) struct Lane<S: ?Sized> {
    target: String,
    settings: LaneSettings,
    shared: Shared<S>,
    pacer: Pacer,
    /// Consecutive 5xx/timeout/network failures.
    failures: Backoff,
    /// Consecutive 429s without `Retry-After`: PagerDuty's limit, so no jitter.
    throttles: Backoff,
    /// The lease every send is fenced with; `None` only where this process is the only
    /// sender (tests).
    fence: Option<Fence>,
    /// The state last recorded on the lease: reported again only when it changes.
    reported: Option<LaneState>,
    /// Whether the next step will likely find an event: after a wake-up (a commit of new events,
    /// or a change of targets), after any step that made progress, or after a pause. Such a
    /// step asks for its budget slot beside the read ([`Lane::step`]).
    expect_event: bool,
}

impl<S: LaneStore + ?Sized> Lane<S> {
    pub(crate) fn new(
        target: String,
        settings: LaneSettings,
        shared: Shared<S>,
        pacer: Pacer,
    ) -> Self {
        let failures = Backoff::new(settings.failure_backoff, settings.max_backoff)
            .with_jitter(settings.failure_jitter);
        let throttles = Backoff::new(settings.rate_limit_backoff, settings.max_backoff)
            .with_jitter(Jitter::None);
        Self {
            target,
            settings,
            shared,
            pacer,
            failures,
            throttles,
            fence: None,
            reported: None,
            expect_event: false,
        }
    }

    /// Fences every send with this lease: the lane stops at the first budget slot refused
    /// because the lease is no longer ours.
    pub(crate) fn fenced_by(mut self, fence: Fence) -> Self {
        self.fence = Some(fence);
        self
    }

    pub(crate) async fn run(mut self) {
        tracing::info!(target_name = %self.target, "delivery lane started");
        // Nothing has gone wrong yet under this lease, as its gauge says from the start.
        self.report(LaneState::Healthy).await;
        loop {
            let draining = self.pacer.draining();
            let keep_going = match self.step().await {
                Step::Progressed => {
                    self.expect_event = true;
                    true
                }
                // Draining and nothing left: done.
                Step::Idle if draining => false,
                Step::Idle => self.idle(self.settings.idle_poll).await,
                Step::Pause(pause) => {
                    // The event that asked for the pause is still there.
                    self.expect_event = true;
                    self.pacer.sleep(pause, Wake::Never).await.goes_on()
                }
                // Draining without a key: nothing can be sent before the deadline.
                Step::Parked(_) if draining => false,
                Step::Parked(pause) => self.idle(pause).await,
                Step::Fenced => {
                    tracing::warn!(target_name = %self.target, "lane lease lost; not sending");
                    false
                }
            };
            if !keep_going {
                break;
            }
        }
        tracing::info!(target_name = %self.target, "delivery lane stopped");
    }

    /// Sleeps for `pause` or until new work comes: only then is an event expected next.
    /// Returns whether the loop goes on.
    async fn idle(&mut self, pause: Duration) -> bool {
        let slept = self.pacer.sleep(pause, Wake::OnWork).await;
        self.expect_event = slept == Slept::Woken;
        slept.goes_on()
    }

    async fn step(&mut self) -> Step {
        let store = &self.shared.store;
        let key = self.shared.keys.get(&self.target);
        // When an event is expected (the lane was woken by a commit, or a burst goes on), its
        // budget slot is asked for beside the read, on the store's other connection: a page
        // waits for one round trip less. A slot taken for nothing is given back. A lane that
        // only polls reads first and writes nothing.
        let (read, early) = match key.as_ref().filter(|_| self.expect_event) {
            Some(key) => {
                let (read, slot) =
                    tokio::join!(store.next_eligible(&self.target), self.take_slot(key));
                (read, Some(slot))
            }
            None => (store.next_eligible(&self.target).await, None),
        };
        // Told that the lease is gone: stop at once, whatever the read found.
        if let Some(Ok(BudgetDecision::Fenced)) = early {
            return Step::Fenced;
        }
        let event = match read {
            Ok(Some(event)) => event,
            Ok(None) => {
                self.release(early).await;
                return Step::Idle;
            }
            Err(error) => {
                self.release(early).await;
                self.storage_failed("cannot read the outbox", &error);
                return Step::Pause(STORE_ERROR_PAUSE);
            }
        };
        // The key before the slot: a lane without one must not spend a slot of anyone's
        // budget. The budget is the key's (PagerDuty limits per key), named by the key this
        // very request goes out with, so a rotation moves the lane to the new key's budget at
        // once. A key missing before the read is asked again: it may have come meanwhile.
        let Some(key) = key.or_else(|| self.shared.keys.get(&self.target)) else {
            LaneMisconfigured {
                target: &self.target,
                why: "no routing key for this target",
            }
            .emit(&self.shared.metrics);
            self.report(LaneState::Misconfigured).await;
            return Step::Parked(self.settings.misconfigured_retry);
        };
        // The request next, so that one that cannot be made holds no slot either.
        let (endpoint, body) = match request_body(&key, &event) {
            Ok(request) => request,
            Err(error) => {
                self.release(early).await;
                let detail = format!("stored event cannot be read: {error}");
                self.dead_letter(&event, DeadLetterReason::Unsendable, &detail)
                    .await;
                return Step::Progressed;
            }
        };
        let decision = match early {
            Some(decision) => decision,
            None => self.take_slot(&key).await,
        };
        let slot = match decision {
            Ok(BudgetDecision::Granted { slot }) => slot,
            Ok(BudgetDecision::WaitUntil(at)) => {
                let wait = Duration::try_from(at.duration_since(Timestamp::now()))
                    .unwrap_or(Duration::ZERO);
                tracing::debug!(target_name = %self.target, wait_ms = wait.as_millis() as u64, "budget full; waiting");
                return Step::Pause(wait.max(Duration::from_millis(1)));
            }
            Ok(BudgetDecision::Fenced) => return Step::Fenced,
            Err(error) => {
                self.storage_failed("cannot read the send budget", &error);
                return Step::Pause(STORE_ERROR_PAUSE);
            }
        };
        if body.shrunk() {
            BodyShrunk {
                target: &self.target,
            }
            .emit(&self.shared.metrics);
        }
        let base = self.shared.keys.url(&self.target);
        let attempt = self
            .shared
            .service
            .send(base.as_ref(), endpoint, &key, body)
            .await;
        if let Err(error) = store.settle_budget(slot, Timestamp::now()).await {
            self.storage_failed("could not settle a budget slot", &error);
        }
        RequestCompleted {
            target: &self.target,
            endpoint,
            result: &attempt.result,
            elapsed: attempt.elapsed,
        }
        .emit(&self.shared.metrics);
        match attempt.result {
            Ok(_) => self.delivered(&event).await,
            Err(error) => self.failed(&event, error).await,
        }
    }

    /// A slot of `key`'s budget for one request now, under the lane's fence.
    async fn take_slot(&self, key: &RoutingKey) -> Result<BudgetDecision, StoreError> {
        let budget_id = BudgetId::new(key, &self.shared.budget_secret);
        // Asked at every send, like the key: a target's options may change while it runs.
        let budget = self
            .shared
            .keys
            .budget(&self.target)
            .unwrap_or(self.settings.budget);
        self.shared
            .metrics
            .set_budget(&self.target, budget.requests, budget.window);
        self.shared
            .store
            .take_budget(
                self.fence.as_ref(),
                &budget_id,
                budget.requests,
                budget.window,
                Timestamp::now(),
            )
            .await
    }

    /// Gives back a slot taken beside a read that found nothing to send. If that fails, the
    /// slot counts as if its request were still in flight, for two windows at most: the budget
    /// errs on PagerDuty's side. A slot that could not be taken is reported here, since no send
    /// will report it.
    async fn release(&self, early: Option<Result<BudgetDecision, StoreError>>) {
        match early {
            Some(Ok(BudgetDecision::Granted { slot })) => {
                if let Err(error) = self.shared.store.release_budget(slot).await {
                    self.storage_failed("could not give back an unused budget slot", &error);
                }
            }
            Some(Err(error)) => self.storage_failed("cannot read the send budget", &error),
            Some(Ok(BudgetDecision::WaitUntil(_) | BudgetDecision::Fenced)) | None => {}
        }
    }

    /// 202.
    async fn delivered(&mut self, event: &QueuedEvent) -> Step {
        let now = Timestamp::now();
        self.failures.reset();
        self.throttles.reset();
        let lag = Duration::try_from(now.duration_since(event.accepted_at)).unwrap_or_default();
        EventDelivered { event, lag }.emit(&self.shared.metrics);
        if let Err(error) = self.shared.store.mark_delivered(event.id, now).await {
            // PagerDuty has it; it will be sent once more after a restart, harmlessly (same
            // dedup key). Pausing keeps the lane from resending it right away.
            let what = format!("event {} delivered, but could not record it", event.id);
            self.storage_failed(&what, &error);
            return Step::Pause(STORE_ERROR_PAUSE);
        }
        self.report(LaneState::Healthy).await;
        Step::Progressed
    }

    /// Every answer but a 202: the rest of the outcome table.
    async fn failed(&mut self, event: &QueuedEvent, error: SendError) -> Step {
        let (pause, state) = match &error {
            SendError::InvalidEvent { .. } => {
                self.dead_letter(event, DeadLetterReason::Rejected, &error.to_string())
                    .await;
                return Step::Progressed;
            }
            SendError::UnexpectedStatus { .. } => {
                LaneMisconfigured {
                    target: &self.target,
                    why: &error.to_string(),
                }
                .emit(&self.shared.metrics);
                (self.settings.misconfigured_retry, LaneState::Misconfigured)
            }
            // PagerDuty's own word is honoured even past `max_backoff` (retrying sooner would
            // only be refused again), within reason.
            SendError::RateLimited {
                retry_after: Some(asked),
            } => ((*asked).min(MAX_RETRY_AFTER), LaneState::RateLimited),
            SendError::RateLimited { retry_after: None } => {
                (self.throttles.next(), LaneState::RateLimited)
            }
            SendError::Server { .. } | SendError::Timeout(_) | SendError::Network(_) => {
                (self.failures.next(), LaneState::BackingOff)
            }
        };
        if error.is_retryable() {
            DeliveryPaused {
                event,
                error: &error,
                pause,
            }
            .emit(&self.shared.metrics);
        }
        if let Err(store_error) = self
            .shared
            .store
            .record_failure(event.id, &error.to_string(), Timestamp::now())
            .await
        {
            self.storage_failed("could not record a failed attempt", &store_error);
        }
        self.report(state).await;
        Step::Pause(pause)
    }

    /// Records the lane's state on its lease when it changed (not at every send). Without a
    /// fence there is no lease to record it on. A lease lost meanwhile refuses the report;
    /// the next budget slot stops the lane. A storage error leaves it to the next report.
    async fn report(&mut self, state: LaneState) {
        let Some(fence) = &self.fence else { return };
        if self.reported == Some(state) {
            return;
        }
        match self
            .shared
            .store
            .report_lane_state(fence, state, Timestamp::now())
            .await
        {
            Ok(_) => self.reported = Some(state),
            Err(error) => self.storage_failed("could not record the lane's state", &error),
        }
    }

    async fn dead_letter(&self, event: &QueuedEvent, reason: DeadLetterReason, detail: &str) {
        EventDeadLettered {
            event,
            reason,
            detail,
        }
        .emit(&self.shared.metrics);
        if let Err(error) = self
            .shared
            .store
            .dead_letter(event.id, detail, Timestamp::now())
            .await
        {
            self.storage_failed("could not dead-letter the event", &error);
        }
        self.shared.fallback_wake.notify_one();
    }

    fn storage_failed(&self, what: &str, error: &StoreError) {
        StorageFailed {
            operation: StorageOperation::Delivery,
            what,
            target: Some(&self.target),
            error,
        }
        .emit(&self.shared.metrics);
    }
}

#[cfg(test)]
#[path = "lane_tests.rs"]
mod tests;
