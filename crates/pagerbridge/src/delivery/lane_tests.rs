//! The outcome table, row by row: a lane against a fake store and scripted PagerDuty answers,
//! with tokio's clock paused so every pause is measured exactly.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use pagerduty_events::{
    Accepted, AlertEvent, Attempt, BaseUrl, Endpoint, Jitter, RequestBody, RoutingKey, SendError,
    Severity, Source, Summary, Trigger,
};
use tokio::sync::{Notify, watch};

use super::*;
use crate::delivery::pacer::Pacer;
use crate::delivery::{Budget, PagerDutyService, RoutingKeys};
use crate::metrics::{
    EndpointLabels, ErrorLabels, LaneState, LaneStateLabels, Metrics, ReasonLabels, RequestLabels,
    TargetLabel, TriggerLabels,
};
use crate::store::{
    Acceptance, Action, BudgetSecret, LaneStates, LaneStats, LeaseName, NewEvent, Outbox,
    ReplicaId, SendBudget, StoreError, SuppressionPolicy,
};

const TARGET: &str = "default";
const KEY: &str = "0123456789abcdef0123456789abfake"; // fake test key
const SECOND: Duration = Duration::from_secs(1);

/// The outbox and budget, in memory.
#[derive(Default)]
struct FakeStore {
    pending: Mutex<VecDeque<QueuedEvent>>,
    delivered: Mutex<Vec<i64>>,
    dead: Mutex<Vec<(i64, String)>>,
    failures: Mutex<Vec<(i64, String)>>,
    /// Answers of `take_budget`, in order; granted once they run out.
    budget: Mutex<VecDeque<BudgetDecision>>,
    /// Every `take_budget`: the budget it named, with the limit and window.
    taken: Mutex<Vec<(BudgetId, u32, Duration)>>,
    /// Every slot given back (`release_budget`), in order.
    released: Mutex<Vec<i64>>,
    /// `next_eligible` fails this many times first.
    read_errors: Mutex<u32>,
    /// `take_budget` fails this many times first.
    budget_errors: Mutex<u32>,
    /// The lease of the lane as the store sees it: a fenced `take_budget` is refused unless
    /// its fence is this one (an in-memory stand-in for the lease table).
    lease: Mutex<Option<Fence>>,
    /// Every lane state reported under a fence that held, in order.
    states: Mutex<Vec<LaneState>>,
}

impl FakeStore {
    fn fence_holds(&self, fence: Option<&Fence>) -> bool {
        fence.is_none() || fence == self.lease.lock().expect("lock").as_ref()
    }
}

/// The lane reads and writes only these four of the outbox's methods (and the budget's); the
/// others belong to ingest and the admin API, and reaching one here is a bug in the lane.
#[async_trait]
impl Outbox for FakeStore {
    async fn accept(
        &self,
        _: Vec<NewEvent>,
        _: &SuppressionPolicy,
        _: Timestamp,
    ) -> Result<Vec<Acceptance>, StoreError> {
        unreachable!("a lane never accepts events")
    }
    async fn dedup_keys_for_fingerprints(
        &self,
        _: &str,
        _: &[crate::store::FingerprintLookup<'_>],
    ) -> Result<std::collections::HashMap<String, String>, StoreError> {
        unreachable!("a lane never looks up fingerprints")
    }
    async fn pending(&self, _: Option<&str>, _: u32) -> Result<Vec<QueuedEvent>, StoreError> {
        unreachable!("a lane never lists the queue")
    }
    async fn lane_stats(&self) -> Result<Vec<LaneStats>, StoreError> {
        unreachable!("a lane never reads lane statistics")
    }
    async fn ping(&self) -> Result<(), StoreError> {
        unreachable!("a lane never pings storage")
    }
    async fn next_eligible(&self, _target: &str) -> Result<Option<QueuedEvent>, StoreError> {
        let mut errors = self.read_errors.lock().expect("lock");
        if *errors > 0 {
            *errors -= 1;
            return Err(StoreError::Corrupt("injected".into()));
        }
        Ok(self.pending.lock().expect("lock").front().cloned())
    }
    async fn mark_delivered(&self, id: i64, _now: Timestamp) -> Result<(), StoreError> {
        self.pending.lock().expect("lock").retain(|e| e.id != id);
        self.delivered.lock().expect("lock").push(id);
        Ok(())
    }
    async fn record_failure(&self, id: i64, error: &str, _: Timestamp) -> Result<(), StoreError> {
        self.failures
            .lock()
            .expect("lock")
            .push((id, error.to_owned()));
        Ok(())
    }
    async fn dead_letter(&self, id: i64, reason: &str, _: Timestamp) -> Result<(), StoreError> {
        self.pending.lock().expect("lock").retain(|e| e.id != id);
        self.dead
            .lock()
            .expect("lock")
            .push((id, reason.to_owned()));
        Ok(())
    }
}

#[async_trait]
impl SendBudget for FakeStore {
    async fn budget_secret(&self) -> Result<BudgetSecret, StoreError> {
        Ok(secret())
    }
    async fn take_budget(
        &self,
        fence: Option<&Fence>,
        budget: &BudgetId,
        limit: u32,
        window: Duration,
        _now: Timestamp,
    ) -> Result<BudgetDecision, StoreError> {
        if !self.fence_holds(fence) {
            return Ok(BudgetDecision::Fenced);
        }
        {
            let mut errors = self.budget_errors.lock().expect("lock");
            if *errors > 0 {
                *errors -= 1;
                return Err(StoreError::Corrupt("budget unreadable".into()));
            }
        }
        self.taken
            .lock()
            .expect("lock")
            .push((budget.clone(), limit, window));
        let next = self.budget.lock().expect("lock").pop_front();
        Ok(next.unwrap_or(BudgetDecision::Granted { slot: 1 }))
    }
    async fn settle_budget(&self, _slot: i64, _at: Timestamp) -> Result<(), StoreError> {
        Ok(())
    }
    async fn release_budget(&self, slot: i64) -> Result<(), StoreError> {
        self.released.lock().expect("lock").push(slot);
        Ok(())
    }
    async fn budget_used(
        &self,
        _: &BudgetId,
        _: Duration,
        _: Timestamp,
    ) -> Result<u64, StoreError> {
        unreachable!("a lane never reads its budget's use")
    }
}

#[async_trait]
impl LaneStates for FakeStore {
    async fn report_lane_state(
        &self,
        fence: &Fence,
        state: LaneState,
        _now: Timestamp,
    ) -> Result<bool, StoreError> {
        let holds = self.fence_holds(Some(fence));
        if holds {
            self.states.lock().expect("lock").push(state);
        }
        Ok(holds)
    }
}

/// PagerDuty, answering from a script (202 once it runs out), remembering what it was sent.
#[derive(Default)]
struct FakePagerDuty {
    answers: Mutex<VecDeque<Result<Accepted, SendError>>>,
    sent: Mutex<Vec<(tokio::time::Instant, Endpoint)>>,
    /// The base URL of each request, in order (`None`: the service's default).
    bases: Mutex<Vec<Option<String>>>,
}

#[async_trait]
impl PagerDutyService for FakePagerDuty {
    async fn send(
        &self,
        base: Option<&BaseUrl>,
        endpoint: Endpoint,
        _key: &RoutingKey,
        _body: RequestBody,
    ) -> Attempt {
        self.bases
            .lock()
            .expect("lock")
            .push(base.map(|b| b.as_str().to_owned()));
        self.sent
            .lock()
            .expect("lock")
            .push((tokio::time::Instant::now(), endpoint));
        let answer = self.answers.lock().expect("lock").pop_front();
        Attempt {
            result: answer.unwrap_or_else(|| Ok(Accepted::default())),
            elapsed: Duration::from_millis(30),
        }
    }
}

struct Keys(Option<RoutingKey>);

impl RoutingKeys for Keys {
    fn get(&self, _target: &str) -> Option<RoutingKey> {
        self.0.clone()
    }
}

struct Harness {
    lane: Lane<FakeStore>,
    store: Arc<FakeStore>,
    pagerduty: Arc<FakePagerDuty>,
    metrics: Arc<Metrics>,
    fallback_wake: Arc<Notify>,
    /// The lane's wake-up: what a commit of new events notifies.
    wake: Arc<Notify>,
    _stop: watch::Sender<Option<tokio::time::Instant>>,
}

fn settings() -> LaneSettings {
    LaneSettings {
        failure_jitter: Jitter::None,
        max_backoff: Duration::from_secs(30),
        ..LaneSettings::default()
    }
}

fn harness_with(settings: LaneSettings, key: Option<&str>) -> Harness {
    let store = Arc::new(FakeStore::default());
    let pagerduty = Arc::new(FakePagerDuty::default());
    let metrics = Arc::new(Metrics::new());
    metrics.init_target(TARGET);
    let fallback_wake = Arc::new(Notify::new());
    let (stop, stop_rx) = watch::channel(None);
    let wake = Arc::new(Notify::new());
    let shared = Shared {
        store: store.clone(),
        service: pagerduty.clone(),
        keys: Arc::new(Keys(key.map(|k| RoutingKey::new(k).expect("key")))),
        budget_secret: secret(),
        metrics: metrics.clone(),
        fallback_wake: fallback_wake.clone(),
    };
    let lane = Lane::new(
        TARGET.to_owned(),
        settings,
        shared,
        Pacer::new(wake.clone(), stop_rx),
    );
    Harness {
        lane,
        wake,
        store,
        pagerduty,
        metrics,
        fallback_wake,
        _stop: stop,
    }
}

/// The secret the lane derives budget ids with.
fn secret() -> BudgetSecret {
    BudgetSecret::from_stored(&[9; 32]).expect("32 bytes")
}

fn harness() -> Harness {
    harness_with(settings(), Some(KEY))
}

fn trigger(id: i64, severity: Severity) -> QueuedEvent {
    let event = AlertEvent::Trigger(Trigger::new(
        Summary::truncating("Disk full on db-1").expect("summary"),
        Source::new("db-1").expect("source"),
        severity,
    ));
    QueuedEvent {
        id,
        target: TARGET.to_owned(),
        dedup_key: Some(format!("k{id}")),
        action: Action::Trigger,
        severity: Some(severity),
        event: serde_json::to_value(event).expect("json"),
        alert: None,
        fingerprint: None,
        accepted_at: Timestamp::now(),
        attempts: 0,
        last_error: None,
    }
}

/// A stored event that cannot be made into a request (an action PagerDuty has not).
fn unsendable(id: i64) -> QueuedEvent {
    let mut event = trigger(id, Severity::Error);
    event.event = serde_json::json!({"event_action": "explode"});
    event
}

impl Harness {
    fn queue(&self, events: impl IntoIterator<Item = QueuedEvent>) {
        self.store.pending.lock().expect("lock").extend(events);
    }
    fn answer(&self, answers: impl IntoIterator<Item = Result<Accepted, SendError>>) {
        self.pagerduty.answers.lock().expect("lock").extend(answers);
    }
    fn pending_ids(&self) -> Vec<i64> {
        self.store
            .pending
            .lock()
            .expect("lock")
            .iter()
            .map(|e| e.id)
            .collect()
    }
    fn requests(&self, status: &str) -> u64 {
        self.metrics
            .api_requests
            .get_or_create(&RequestLabels {
                target: TARGET.into(),
                endpoint: "/v2/enqueue".into(),
                status: status.into(),
            })
            .get()
    }
    fn errors(&self, error_type: &str) -> u64 {
        self.metrics
            .api_errors
            .get_or_create(&ErrorLabels {
                target: TARGET.into(),
                error_type: error_type.into(),
            })
            .get()
    }
    fn dead_lettered(&self, reason: &str) -> u64 {
        self.metrics
            .dead_lettered
            .get_or_create(&ReasonLabels {
                target: TARGET.into(),
                reason: reason.into(),
            })
            .get()
    }
    fn rate_limit_hits(&self) -> u64 {
        self.metrics
            .rate_limit_hits
            .get_or_create(&TargetLabel {
                target: TARGET.into(),
            })
            .get()
    }
    fn state(&self) -> LaneState {
        let on = LaneState::ALL.into_iter().filter(|state| {
            self.metrics
                .lane_state
                .get_or_create(&LaneStateLabels {
                    target: TARGET.into(),
                    state: *state,
                })
                .get()
                == 1
        });
        let on: Vec<LaneState> = on.collect();
        assert_eq!(on.len(), 1, "exactly one state is on: {on:?}");
        on[0]
    }
    /// `pagerbridge_storage_errors_total{operation="delivery"}`.
    fn storage_errors(&self) -> u64 {
        self.metrics
            .storage_errors
            .get_or_create(&crate::metrics::OperationLabel {
                operation: "delivery".into(),
            })
            .get()
    }
    /// Durations observed on the enqueue endpoint (the histogram's count, from the text).
    fn durations_observed(&self) -> u64 {
        let _ = self.metrics.api_duration.get_or_create(&EndpointLabels {
            target: TARGET.into(),
            endpoint: "/v2/enqueue".into(),
        });
        let text = self.metrics.encode_prometheus_text();
        let prefix = format!(
            "pagerduty_api_duration_seconds_count{{target=\"{TARGET}\",endpoint=\"/v2/enqueue\"}} "
        );
        text.lines()
            .find_map(|line| line.strip_prefix(prefix.as_str()))
            .and_then(|count| count.parse().ok())
            .expect("duration count")
    }
}

fn server_error() -> Result<Accepted, SendError> {
    Err(SendError::Server {
        status: 503,
        message: "unavailable".into(),
    })
}

fn unexpected(status: u16) -> Result<Accepted, SendError> {
    Err(SendError::UnexpectedStatus {
        status,
        body: String::new(),
    })
}

#[tokio::test(start_paused = true)]
async fn accepted_202_removes_the_event_counts_it_and_the_lane_is_healthy() {
    let mut h = harness();
    h.queue([trigger(1, Severity::Critical)]);
    assert_eq!(h.lane.step().await, Step::Progressed);
    assert_eq!(*h.store.delivered.lock().expect("lock"), [1]);
    assert!(h.pending_ids().is_empty());
    let triggered = |severity: &str| {
        h.metrics
            .events_triggered
            .get_or_create(&TriggerLabels {
                target: TARGET.into(),
                severity: severity.into(),
            })
            .get()
    };
    assert_eq!(triggered("critical"), 1);
    assert_eq!(triggered("error"), 0);
    assert_eq!(h.requests("202"), 1);
    assert_eq!(h.durations_observed(), 1);
    assert_eq!(h.state(), LaneState::Healthy);
    assert_eq!(h.lane.step().await, Step::Idle);
}

#[tokio::test(start_paused = true)]
async fn rejected_400_is_dead_lettered_with_its_reason_and_the_next_event_flows() {
    let mut h = harness();
    h.queue([trigger(1, Severity::Error), trigger(2, Severity::Error)]);
    h.answer([Err(SendError::InvalidEvent {
        status: 400,
        message: "Event object is invalid".into(),
        errors: vec!["'payload.source' is missing or blank".into()],
    })]);
    let woken = h.fallback_wake.notified();
    assert_eq!(h.lane.step().await, Step::Progressed);
    woken.await; // the fallback hears of it at once
    let dead = h.store.dead.lock().expect("lock").clone();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].0, 1);
    assert!(dead[0].1.contains("payload.source"), "{}", dead[0].1);
    assert_eq!(h.dead_lettered("rejected"), 1);
    assert_eq!(h.dead_lettered("unsendable"), 0);
    assert_eq!(h.requests("400"), 1);
    assert_eq!(h.errors("invalid_event"), 1);
    assert_eq!(h.lane.step().await, Step::Progressed);
    assert_eq!(*h.store.delivered.lock().expect("lock"), [2]);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_the_pause_even_past_max_backoff_up_to_an_hour() {
    let mut h = harness();
    h.queue([trigger(1, Severity::Error)]);
    h.answer([
        Err(SendError::RateLimited {
            retry_after: Some(Duration::from_secs(7)),
        }),
        Err(SendError::RateLimited {
            retry_after: Some(Duration::from_secs(120)),
        }),
        Err(SendError::RateLimited {
            retry_after: Some(Duration::from_secs(86_400)),
        }),
    ]);
    assert_eq!(h.lane.step().await, Step::Pause(7 * SECOND));
    assert_eq!(h.state(), LaneState::RateLimited);
    // max_backoff is 30 s; PagerDuty's word wins.
    assert_eq!(h.lane.step().await, Step::Pause(120 * SECOND));
    assert_eq!(h.lane.step().await, Step::Pause(3600 * SECOND));
    assert_eq!(h.rate_limit_hits(), 3);
    assert_eq!(h.requests("429"), 3);
    assert_eq!(h.errors("rate_limited"), 3);
    assert_eq!(h.pending_ids(), [1], "the event keeps its place");
    assert_eq!(h.store.failures.lock().expect("lock").len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_429_without_retry_after_doubles_up_to_max_backoff_and_resets_on_success() {
    let mut h = harness();
    h.queue([trigger(1, Severity::Error), trigger(2, Severity::Error)]);
    let limited = || Err(SendError::RateLimited { retry_after: None });
    h.answer([
        limited(),
        limited(),
        limited(),
        limited(),
        Ok(Accepted::default()),
        limited(),
    ]);
    let pauses = [5, 10, 20, 30].map(|s| Step::Pause(s * SECOND));
    for expected in pauses {
        assert_eq!(h.lane.step().await, expected);
    }
    assert_eq!(h.pending_ids(), [1, 2], "the event keeps its place");
    assert_eq!(h.lane.step().await, Step::Progressed);
    assert_eq!(h.state(), LaneState::Healthy);
    assert_eq!(h.lane.step().await, Step::Pause(5 * SECOND));
    assert_eq!(h.rate_limit_hits(), 5);
}

#[tokio::test(start_paused = true)]
async fn server_errors_timeouts_and_network_failures_back_off_capped_and_reset() {
    let mut h = harness();
    h.queue([trigger(1, Severity::Error)]);
    h.answer([
        server_error(),
        Err(SendError::Timeout(10 * SECOND)),
        Err(SendError::Network("connection reset".into())),
        server_error(),
        server_error(),
        server_error(),
        Ok(Accepted::default()),
    ]);
    for expected in [1, 2, 4, 8, 16, 30] {
        assert_eq!(h.lane.step().await, Step::Pause(expected * SECOND));
        assert_eq!(h.state(), LaneState::BackingOff);
    }
    assert_eq!(h.errors("server_error"), 4);
    assert_eq!(h.errors("timeout"), 1);
    assert_eq!(h.errors("network"), 1);
    assert_eq!(h.requests("503"), 4);
    assert_eq!(h.requests("timeout"), 1);
    assert_eq!(h.rate_limit_hits(), 0);
    assert_eq!(h.lane.step().await, Step::Progressed);
    // After a success the next failure starts again from 1 s.
    h.queue([trigger(2, Severity::Error)]);
    h.answer([server_error()]);
    assert_eq!(h.lane.step().await, Step::Pause(SECOND));
}

#[tokio::test(start_paused = true)]
async fn full_jitter_keeps_every_failure_pause_below_its_cap() {
    let mut h = harness_with(
        LaneSettings {
            failure_jitter: Jitter::Full,
            ..settings()
        },
        Some(KEY),
    );
    h.queue([trigger(1, Severity::Error)]);
    h.answer((0..8).map(|_| server_error()));
    for cap in [1, 2, 4, 8, 16, 30, 30, 30] {
        let Step::Pause(pause) = h.lane.step().await else {
            panic!("a failure pauses");
        };
        assert!(pause <= cap * SECOND, "{pause:?} above {cap} s");
    }
}

#[tokio::test(start_paused = true)]
async fn unexpected_statuses_mark_the_lane_misconfigured_and_retry_slowly() {
    for status in [401, 403, 404, 302] {
        let mut h = harness();
        h.queue([trigger(1, Severity::Error)]);
        h.answer([unexpected(status)]);
        assert_eq!(h.lane.step().await, Step::Pause(60 * SECOND), "{status}");
        assert_eq!(h.state(), LaneState::Misconfigured, "{status}");
        assert_eq!(h.errors("unexpected_status"), 1);
        assert_eq!(h.requests(&status.to_string()), 1);
        assert_eq!(h.pending_ids(), [1], "{status}: the event stays queued");
        assert!(h.store.dead.lock().expect("lock").is_empty());
    }
}

#[tokio::test(start_paused = true)]
async fn a_missing_routing_key_marks_the_lane_misconfigured_without_a_request() {
    let mut h = harness_with(settings(), None);
    h.queue([trigger(1, Severity::Error)]);
    // Parked, not paused: a key that comes back (a re-created Secret) wakes the lane.
    assert_eq!(h.lane.step().await, Step::Parked(60 * SECOND));
    assert_eq!(h.state(), LaneState::Misconfigured);
    assert!(h.pagerduty.sent.lock().expect("lock").is_empty());
    assert_eq!(h.pending_ids(), [1]);
    assert!(
        h.store.taken.lock().expect("lock").is_empty(),
        "no budget slot is spent without a key"
    );
}

#[tokio::test(start_paused = true)]
async fn the_budget_taken_is_the_routing_keys_with_the_targets_limit() {
    let mut h = harness();
    h.queue([trigger(1, Severity::Error)]);
    assert_eq!(h.lane.step().await, Step::Progressed);
    let key = RoutingKey::new(KEY).expect("key");
    let budget = settings().budget;
    assert_eq!(
        *h.store.taken.lock().expect("lock"),
        [(
            BudgetId::new(&key, &secret()),
            budget.requests,
            budget.window
        )]
    );
}

/// Keys whose target's budget can change while the lane runs (a Secret's `rate_limit`).
struct ChangingBudget(Mutex<Budget>);

impl RoutingKeys for ChangingBudget {
    fn get(&self, _target: &str) -> Option<RoutingKey> {
        RoutingKey::new(KEY).ok()
    }

    fn budget(&self, _target: &str) -> Option<Budget> {
        Some(*self.0.lock().expect("lock"))
    }
}

#[tokio::test(start_paused = true)]
async fn the_targets_current_budget_is_read_at_each_send() {
    let mut h = harness();
    let first = Budget {
        requests: 7,
        window: Duration::from_secs(10),
    };
    let keys = Arc::new(ChangingBudget(Mutex::new(first)));
    h.lane.shared.keys = keys.clone();
    h.queue([trigger(1, Severity::Error), trigger(2, Severity::Error)]);
    assert_eq!(h.lane.step().await, Step::Progressed);
    let second = Budget {
        requests: 3,
        window: Duration::from_secs(60),
    };
    *keys.0.lock().expect("lock") = second;
    assert_eq!(h.lane.step().await, Step::Progressed);
    let limits: Vec<(u32, Duration)> = h
        .store
        .taken
        .lock()
        .expect("lock")
        .iter()
        .map(|(_, requests, window)| (*requests, *window))
        .collect();
    assert_eq!(
        limits,
        [
            (first.requests, first.window),
            (second.requests, second.window)
        ],
        "not the lane's own {:?}",
        settings().budget
    );
}

/// Keys whose target's PagerDuty URL can change while the lane runs (a Secret's `url`).
struct ChangingUrl(Mutex<Option<BaseUrl>>);

impl RoutingKeys for ChangingUrl {
    fn get(&self, _target: &str) -> Option<RoutingKey> {
        RoutingKey::new(KEY).ok()
    }

    fn url(&self, _target: &str) -> Option<BaseUrl> {
        self.0.lock().expect("lock").clone()
    }
}

#[tokio::test(start_paused = true)]
async fn the_targets_current_url_is_read_at_each_send() {
    let mut h = harness();
    let keys = Arc::new(ChangingUrl(Mutex::new(None)));
    h.lane.shared.keys = keys.clone();
    h.queue([trigger(1, Severity::Error), trigger(2, Severity::Error)]);
    assert_eq!(h.lane.step().await, Step::Progressed);
    let eu = BaseUrl::parse("https://events.eu.pagerduty.com").expect("valid");
    *keys.0.lock().expect("lock") = Some(eu);
    assert_eq!(h.lane.step().await, Step::Progressed);
    assert_eq!(
        *h.pagerduty.bases.lock().expect("lock"),
        [None, Some("https://events.eu.pagerduty.com/".to_owned())]
    );
}

#[tokio::test(start_paused = true)]
async fn an_unreadable_stored_event_is_dead_lettered_as_unsendable() {
    let mut h = harness();
    h.queue([unsendable(1), trigger(2, Severity::Error)]);
    assert_eq!(h.lane.step().await, Step::Progressed);
    assert!(h.pagerduty.sent.lock().expect("lock").is_empty());
    let dead = h.store.dead.lock().expect("lock").clone();
    assert_eq!(dead[0].0, 1);
    assert!(
        dead[0].1.starts_with("stored event cannot be read"),
        "{}",
        dead[0].1
    );
    assert_eq!(h.dead_lettered("unsendable"), 1);
    assert_eq!(h.dead_lettered("rejected"), 0);
    assert_eq!(h.lane.step().await, Step::Progressed);
    assert_eq!(*h.store.delivered.lock().expect("lock"), [2]);
}

#[tokio::test(start_paused = true)]
async fn a_full_budget_waits_until_the_slot_frees() {
    let mut h = harness();
    h.queue([trigger(1, Severity::Error)]);
    let frees = Timestamp::now() + jiff::SignedDuration::from_secs(20);
    h.store
        .budget
        .lock()
        .expect("lock")
        .push_back(BudgetDecision::WaitUntil(frees));
    let Step::Pause(pause) = h.lane.step().await else {
        panic!("a full budget pauses");
    };
    // Computed from the wall clock, so within a little of 20 s.
    assert!(pause <= 20 * SECOND && pause > 19 * SECOND, "{pause:?}");
    assert!(h.pagerduty.sent.lock().expect("lock").is_empty());
    assert_eq!(h.lane.step().await, Step::Progressed);
}

#[tokio::test(start_paused = true)]
async fn a_storage_error_pauses_the_lane() {
    let mut h = harness();
    h.queue([trigger(1, Severity::Error)]);
    *h.store.read_errors.lock().expect("lock") = 1;
    assert_eq!(h.storage_errors(), 0);
    assert_eq!(h.lane.step().await, Step::Pause(STORE_ERROR_PAUSE));
    assert!(h.pagerduty.sent.lock().expect("lock").is_empty());
    assert_eq!(h.storage_errors(), 1, "counted as a delivery storage error");
    assert_eq!(h.lane.step().await, Step::Progressed);
    assert_eq!(h.storage_errors(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_running_lane_resends_exactly_when_the_429_pause_ends() {
    let h = harness();
    h.queue([trigger(1, Severity::Error), trigger(2, Severity::Error)]);
    h.answer([Err(SendError::RateLimited {
        retry_after: Some(Duration::from_secs(7)),
    })]);
    let pagerduty = h.pagerduty.clone();
    let store = h.store.clone();
    let start = tokio::time::Instant::now();
    let lane = tokio::spawn(h.lane.run());
    while store.delivered.lock().expect("lock").len() < 2 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    lane.abort();
    let sent: Vec<Duration> = pagerduty
        .sent
        .lock()
        .expect("lock")
        .iter()
        .map(|(at, _)| *at - start)
        .collect();
    assert_eq!(sent, [Duration::ZERO, 7 * SECOND, 7 * SECOND]);
    assert_eq!(*store.delivered.lock().expect("lock"), [1, 2], "in order");
}

fn fence(owner: &str, epoch: i64) -> Fence {
    Fence {
        name: LeaseName::lane(TARGET),
        owner: ReplicaId::new(owner).expect("id"),
        epoch,
    }
}

#[tokio::test(start_paused = true)]
async fn a_lane_without_the_lease_sends_nothing_and_stops() {
    let h = harness();
    // Another replica holds the lane.
    *h.store.lease.lock().expect("lock") = Some(fence("other", 2));
    h.queue([trigger(1, Severity::Error)]);
    let Harness {
        lane,
        store,
        pagerduty,
        _stop,
        ..
    } = h;
    tokio::time::timeout(60 * SECOND, lane.fenced_by(fence("me", 1)).run())
        .await
        .expect("a fenced lane stops instead of retrying");
    assert!(pagerduty.sent.lock().expect("lock").is_empty());
    assert_eq!(
        store.pending.lock().expect("lock").len(),
        1,
        "the event waits for the owner"
    );
    assert!(
        store.states.lock().expect("lock").is_empty(),
        "no state reported on another's lease"
    );
}

#[tokio::test(start_paused = true)]
async fn losing_the_lease_mid_way_stops_sends_and_renewal_keeps_them_going() {
    let mut h = harness();
    let ours = fence("me", 1);
    *h.store.lease.lock().expect("lock") = Some(ours.clone());
    h.lane = h.lane.fenced_by(ours.clone());
    h.queue((1..=3).map(|id| trigger(id, Severity::Error)));
    assert_eq!(h.lane.step().await, Step::Progressed);
    // A renewal keeps owner and epoch: the fence still holds.
    *h.store.lease.lock().expect("lock") = Some(ours);
    assert_eq!(h.lane.step().await, Step::Progressed);
    // Taken over (our lease expired while we were stalled): the next send is refused.
    *h.store.lease.lock().expect("lock") = Some(fence("other", 2));
    assert_eq!(h.lane.step().await, Step::Fenced);
    assert_eq!(h.pagerduty.sent.lock().expect("lock").len(), 2);
    assert_eq!(h.pending_ids(), [3]);
}

#[tokio::test(start_paused = true)]
async fn the_lane_reports_its_state_on_its_lease_only_when_it_changes() {
    let mut h = harness();
    let ours = fence("me", 1);
    *h.store.lease.lock().expect("lock") = Some(ours.clone());
    h.lane = h.lane.fenced_by(ours);
    h.queue((1..=5).map(|id| trigger(id, Severity::Error)));
    let limited = || Err(SendError::RateLimited { retry_after: None });
    h.answer([
        Ok(Accepted::default()),
        Ok(Accepted::default()),
        limited(),
        limited(),
        server_error(),
        Ok(Accepted::default()),
        Ok(Accepted::default()),
    ]);
    for _ in 0..7 {
        h.lane.step().await;
    }
    assert_eq!(h.pending_ids(), [5]);
    assert_eq!(
        *h.store.states.lock().expect("lock"),
        [
            LaneState::Healthy,
            LaneState::RateLimited,
            LaneState::BackingOff,
            LaneState::Healthy
        ],
        "one write per change, none per send"
    );
}

#[tokio::test(start_paused = true)]
async fn an_expected_event_gets_its_slot_beside_the_read_and_a_slot_for_nothing_goes_back() {
    let mut h = harness();
    // Woken, but the event is gone (sent in the round before): the slot goes back.
    h.lane.expect_event = true;
    assert_eq!(h.lane.step().await, Step::Idle);
    assert_eq!(h.store.taken.lock().expect("lock").len(), 1);
    assert_eq!(*h.store.released.lock().expect("lock"), [1]);
    // Woken with an event: one slot, used, kept.
    h.queue([trigger(7, Severity::Error)]);
    h.lane.expect_event = true;
    assert_eq!(h.lane.step().await, Step::Progressed);
    assert_eq!(*h.store.delivered.lock().expect("lock"), [7]);
    assert_eq!(h.store.taken.lock().expect("lock").len(), 2);
    assert_eq!(*h.store.released.lock().expect("lock"), [1]);
}

#[tokio::test(start_paused = true)]
async fn a_polling_lane_reads_first_and_takes_no_slot_for_nothing() {
    let mut h = harness();
    assert_eq!(h.lane.step().await, Step::Idle);
    assert!(h.store.taken.lock().expect("lock").is_empty());
    assert!(h.store.released.lock().expect("lock").is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_slot_taken_beside_an_unsendable_event_goes_back() {
    let mut h = harness();
    h.queue([unsendable(1)]);
    h.lane.expect_event = true;
    assert_eq!(h.lane.step().await, Step::Progressed);
    assert_eq!(h.dead_lettered("unsendable"), 1);
    assert!(h.pagerduty.sent.lock().expect("lock").is_empty());
    assert_eq!(*h.store.released.lock().expect("lock"), [1]);
}

#[tokio::test(start_paused = true)]
async fn an_expected_event_without_a_key_spends_no_slot() {
    let mut h = harness_with(settings(), None);
    h.queue([trigger(1, Severity::Error)]);
    h.lane.expect_event = true;
    assert_eq!(
        h.lane.step().await,
        Step::Parked(settings().misconfigured_retry)
    );
    assert!(h.store.taken.lock().expect("lock").is_empty());
    assert!(h.store.released.lock().expect("lock").is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_event_is_expected_after_a_wake_not_after_a_poll_that_timed_out() {
    let mut h = harness();
    h.lane.expect_event = true;
    assert!(h.lane.idle(SECOND).await);
    assert!(!h.lane.expect_event, "the poll's time passed: nothing new");
    h.wake.notify_one();
    assert!(h.lane.idle(SECOND).await);
    assert!(h.lane.expect_event, "woken by a commit");
}

#[tokio::test(start_paused = true)]
async fn a_slot_that_could_not_be_taken_beside_an_empty_read_is_still_reported() {
    let mut h = harness();
    *h.store.budget_errors.lock().expect("lock") = 1;
    h.lane.expect_event = true;
    assert_eq!(h.lane.step().await, Step::Idle);
    assert_eq!(h.storage_errors(), 1, "counted as a delivery storage error");
    assert!(h.store.released.lock().expect("lock").is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_expected_event_stops_at_a_fenced_slot_and_waits_on_a_full_budget() {
    let mut h = harness();
    // Fenced: the lane stops before it does anything with what it read, even an event it
    // could not send (which it would otherwise dead-letter).
    h.queue([unsendable(1)]);
    h.store.budget.lock().expect("lock").extend([
        BudgetDecision::Fenced,
        BudgetDecision::WaitUntil(Timestamp::now() + jiff::SignedDuration::from_secs(20)),
    ]);
    h.lane.expect_event = true;
    assert_eq!(h.lane.step().await, Step::Fenced);
    assert!(h.store.dead.lock().expect("lock").is_empty());
    h.store.pending.lock().expect("lock").clear();
    h.queue([trigger(2, Severity::Error)]);
    h.lane.expect_event = true;
    let Step::Pause(pause) = h.lane.step().await else {
        panic!("a full budget pauses");
    };
    assert!(pause <= 20 * SECOND && pause > 19 * SECOND, "{pause:?}");
    assert!(h.pagerduty.sent.lock().expect("lock").is_empty());
    assert!(h.store.released.lock().expect("lock").is_empty());
    assert_eq!(h.pending_ids(), [2], "the event keeps its place");
}
