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
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use pagerduty_events::{BaseUrl, Jitter, RoutingKey};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::lease_keeper::{Singleton, keep_singleton};
use crate::metrics::Metrics;
use crate::store::{BudgetSecret, Store};
use crate::targets::Targets;

pub use crate::lease_keeper::LeaseSettings;
pub use lane_store::LaneStore;
pub use service::PagerDutyService;

/// Where lanes get routing keys: looked up at every send, so a rotated key applies to events
/// already queued.
pub trait RoutingKeys: Send + Sync + 'static {
    fn get(&self, target: &str) -> Option<RoutingKey>;

    /// The target's budget now, when it can change while the lane runs; `None` keeps the
    /// lane's own [`LaneSettings::budget`].
    fn budget(&self, _target: &str) -> Option<Budget> {
        None
    }

    /// The target's own PagerDuty base URL now, read at every send like the key; `None`
    /// sends to the service's default (`pagerduty.url`).
    fn url(&self, _target: &str) -> Option<BaseUrl> {
        None
    }
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
    lanes: Arc<Lanes>,
    fallback_wake: Arc<Notify>,
    stop: watch::Sender<Option<tokio::time::Instant>>,
    /// The fallback publisher's keeper and the follower of the targets.
    tasks: JoinSet<()>,
}

/// The lease keepers of the lanes, one per target, started at start or when a target appears.
struct Lanes {
    shared: Shared,
    leases: LeaseSettings,
    stop: watch::Receiver<Option<tokio::time::Instant>>,
    wakers: Arc<RwLock<HashMap<String, Arc<Notify>>>>,
    /// `None` once shutdown has begun: no lane starts after that.
    tasks: Mutex<Option<JoinSet<()>>>,
}

impl Lanes {
    /// Starts `target`'s lane unless it runs already. A lane, once started, runs until
    /// shutdown, even if its target goes away: its queued events wait, never dropped.
    fn start(&self, target: &str, settings: LaneSettings) {
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(tasks) = tasks.as_mut() else {
            return;
        };
        let mut wakers = self.wakers.write().unwrap_or_else(PoisonError::into_inner);
        if wakers.contains_key(target) {
            return;
        }
        let wake = Arc::new(Notify::new());
        wakers.insert(target.to_owned(), wake.clone());
        self.shared.metrics.init_target(target);
        self.shared
            .metrics
            .set_budget(target, settings.budget.requests, settings.budget.window);
        tasks.spawn(leases::keep_lane(
            target.to_owned(),
            settings,
            self.shared.clone(),
            wake,
            self.leases.clone(),
            self.stop.clone(),
        ));
    }

    fn wake_all(&self) {
        let wakers = self.wakers.read().unwrap_or_else(PoisonError::into_inner);
        for wake in wakers.values() {
            wake.notify_one();
        }
    }
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
        let fallback_wake = shared.fallback_wake.clone();
        let running = Arc::new(Lanes {
            shared,
            leases,
            stop: stop_rx,
            wakers: Arc::default(),
            tasks: Mutex::new(Some(JoinSet::new())),
        });
        for (target, settings) in lanes {
            running.start(&target, settings);
        }
        Ok(Self {
            lanes: running,
            stop,
            tasks,
            fallback_wake,
        })
    }

    /// Follows `targets` until shutdown: starts the lane of each target that appears, with
    /// `settings` (a lane reads its target's key and budget at each send, so a changed
    /// target needs no restart), and wakes every lane at each change, so a lane parked for
    /// want of a key uses a returning key at once.
    pub fn follow(&mut self, targets: Targets, settings: LaneSettings) {
        let lanes = self.lanes.clone();
        let mut stop = self.stop.subscribe();
        let mut changes = targets.changes();
        self.tasks.spawn(async move {
            loop {
                for name in targets.snapshot().names() {
                    lanes.start(&name, settings.clone());
                }
                lanes.wake_all();
                tokio::select! {
                    changed = changes.changed() => if changed.is_err() { break },
                    _ = stop.wait_for(Option::is_some) => break,
                }
            }
        });
    }

    /// A handle ingest uses to wake lanes after a commit.
    pub fn waker(&self) -> LaneWaker {
        LaneWaker {
            wakers: self.lanes.wakers.clone(),
        }
    }

    /// Stops the lanes: each keeps delivering until its queue is empty or `drain` has passed,
    /// finishing any request in flight, then returns. Undelivered events stay in the outbox.
    pub async fn shutdown(mut self, drain: Duration) {
        let deadline = tokio::time::Instant::now() + drain;
        let _ = self.stop.send(Some(deadline));
        let lanes = self
            .lanes
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        self.lanes.wake_all();
        self.fallback_wake.notify_one();
        for mut tasks in lanes.into_iter().chain([std::mem::take(&mut self.tasks)]) {
            while let Some(result) = tasks.join_next().await {
                if let Err(error) = result {
                    tracing::error!(%error, "a delivery lane crashed");
                }
            }
        }
    }
}

/// Wakes the lane of a target (cheap to clone).
#[derive(Clone, Default)]
pub struct LaneWaker {
    wakers: Arc<RwLock<HashMap<String, Arc<Notify>>>>,
}

impl LaneWaker {
    pub fn wake(&self, target: &str) {
        let wakers = self.wakers.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(wake) = wakers.get(target) {
            wake.notify_one();
        }
    }
}
