//! Delivery: one lane per target drains the outbox into PagerDuty (DESIGN.md "Delivery").
//!
//! A lane sends one request at a time: the next eligible event (per-incident order, most severe
//! first), after taking a slot of its routing key's sliding-window budget (shared with every
//! replica and every target using the same key; see [`crate::store::BudgetId`]). What happens next depends
//! only on PagerDuty's answer — see [`lane`]'s outcome table. Lanes sleep until ingest wakes
//! them, the budget frees up, or a backoff ends; storage is the only shared state, so a restart
//! simply picks up where the last process stopped.
//!
//! As in Vector's sinks, the parts stay apart: [`request`] builds a request, a
//! [`PagerDutyService`] sends it, the lane decides what the answer means (with
//! [`pagerduty_events::Backoff`] for how long to wait, and [`pacer`] to wait unless draining),
//! and reads and writes storage only through [`LaneStore`].

pub mod fallback;
pub mod lane;
pub mod lane_store;
pub mod leases;
pub(crate) mod pacer;
pub(crate) mod request;
pub mod service;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use pagerduty_events::{Jitter, RoutingKey};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::lease_keeper::{Singleton, keep_singleton};
use crate::metrics::Metrics;
use crate::store::{BudgetSecret, Store};

pub use crate::lease_keeper::LeaseSettings;
pub use lane_store::LaneStore;
pub use service::PagerDutyService;

/// Where lanes get routing keys: looked up at every send, so a rotated key applies to events
/// already queued.
pub trait RoutingKeys: Send + Sync + 'static {
    fn get(&self, target: &str) -> Option<RoutingKey>;
}

/// A target's limit on its routing key's sliding-window budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    pub requests: u32,
    pub window: Duration,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            requests: 120,
            window: Duration::from_secs(60),
        }
    }
}

/// How a lane paces itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaneSettings {
    pub budget: Budget,
    /// First backoff cap after a 5xx/timeout/network error; doubles per consecutive failure.
    pub failure_backoff: Duration,
    /// Full jitter below the failure backoff's cap (the default), or the cap itself.
    pub failure_jitter: Jitter,
    /// First pause after a 429 without `Retry-After`; doubles per consecutive 429.
    pub rate_limit_backoff: Duration,
    /// No pause is longer than this.
    pub max_backoff: Duration,
    /// Pause after an answer that says the setup is wrong (401/403/404…) or a missing key.
    pub misconfigured_retry: Duration,
    /// How often an idle lane looks at storage even if nobody woke it (other replicas, replays).
    pub idle_poll: Duration,
}

impl Default for LaneSettings {
    fn default() -> Self {
        Self {
            budget: Budget::default(),
            failure_backoff: Duration::from_secs(1),
            failure_jitter: Jitter::Full,
            rate_limit_backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(300),
            misconfigured_retry: Duration::from_secs(60),
            idle_poll: Duration::from_secs(1),
        }
    }
}

/// Everything lanes share. `S` is the storage: every [`Store`] in production, a small fake in
/// the lane's tests.
pub struct Shared<S: ?Sized = dyn Store> {
    pub store: Arc<S>,
    pub service: Arc<dyn PagerDutyService>,
    pub keys: Arc<dyn RoutingKeys>,
    /// Names each routing key's budget ([`crate::store::SendBudget::budget_secret`]).
    pub budget_secret: BudgetSecret,
    pub metrics: Arc<Metrics>,
    /// Woken when an event is dead-lettered, so the fallback hears of it at once.
    pub fallback_wake: Arc<Notify>,
}

// By hand: a derive would ask for `S: Clone`, but only the `Arc`s are cloned.
impl<S: ?Sized> Clone for Shared<S> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            service: self.service.clone(),
            keys: self.keys.clone(),
            budget_secret: self.budget_secret.clone(),
            metrics: self.metrics.clone(),
            fallback_wake: self.fallback_wake.clone(),
        }
    }
}

/// The running lanes (and fallback publisher). Dropping it aborts them without draining or
/// releasing their leases; call [`Delivery::shutdown`].
pub struct Delivery {
    wakers: HashMap<String, Arc<Notify>>,
    fallback_wake: Arc<Notify>,
    stop: watch::Sender<Option<tokio::time::Instant>>,
    tasks: JoinSet<()>,
}

impl Delivery {
    /// Starts one lease keeper per target, which runs the target's lane while this replica
    /// holds its lease, and, when configured, the keeper of the fallback publisher, which runs
    /// it while this replica holds the `fallback` lease.
    pub fn start(
        shared: Shared,
        leases: LeaseSettings,
        lanes: Vec<(String, LaneSettings)>,
        fallback: Option<fallback::FallbackSettings>,
    ) -> anyhow::Result<Self> {
        let (stop, stop_rx) = watch::channel(None);
        let mut tasks = JoinSet::new();
        if let Some(settings) = fallback {
            shared.metrics.init_fallback();
            let lane = fallback::FallbackLane::new(
                settings,
                shared.store.clone(),
                shared.metrics.clone(),
            )?;
            let wake = shared.fallback_wake.clone();
            tasks.spawn(keep_singleton(
                Singleton::Fallback,
                shared.store.clone(),
                leases.clone(),
                shared.metrics.clone(),
                stop_rx.clone(),
                move |stop| tokio::spawn(lane.clone().run(pacer::Pacer::new(wake.clone(), stop))),
            ));
        }
        let mut wakers = HashMap::new();
        for (target, settings) in lanes {
            let wake = Arc::new(Notify::new());
            wakers.insert(target.clone(), wake.clone());
            shared.metrics.init_target(&target);
            shared
                .metrics
                .set_budget(&target, settings.budget.requests, settings.budget.window);
            tasks.spawn(leases::keep_lane(
                target,
                settings,
                shared.clone(),
                wake,
                leases.clone(),
                stop_rx.clone(),
            ));
        }
        Ok(Self {
            wakers,
            stop,
            tasks,
            fallback_wake: shared.fallback_wake,
        })
    }

    /// A handle ingest uses to wake lanes after a commit.
    pub fn waker(&self) -> LaneWaker {
        LaneWaker {
            wakers: Arc::new(self.wakers.clone()),
        }
    }

    /// Stops the lanes: each keeps delivering until its queue is empty or `drain` has passed,
    /// finishing any request in flight, then returns. Undelivered events stay in the outbox.
    pub async fn shutdown(mut self, drain: Duration) {
        let deadline = tokio::time::Instant::now() + drain;
        let _ = self.stop.send(Some(deadline));
        for wake in self.wakers.values() {
            wake.notify_one();
        }
        self.fallback_wake.notify_one();
        while let Some(result) = self.tasks.join_next().await {
            if let Err(error) = result {
                tracing::error!(%error, "a delivery lane crashed");
            }
        }
    }
}

/// Wakes the lane of a target (cheap to clone).
#[derive(Clone, Default)]
pub struct LaneWaker {
    wakers: Arc<HashMap<String, Arc<Notify>>>,
}

impl LaneWaker {
    pub fn wake(&self, target: &str) {
        if let Some(wake) = self.wakers.get(target) {
            wake.notify_one();
        }
    }
}
