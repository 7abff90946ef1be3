//! The lease keeper: a target's lane runs on this replica only while this replica holds the
//! lane's lease (`lane:<target>`, see [`crate::store::Leases`]).
//!
//! Every `lease_ttl / 3` the keeper acquires or renews the lease, so one missed round (a slow
//! database, a short pause) does not lose it. Holding it, the keeper runs the lane, fenced
//! with the lease's epoch; losing it (another replica took over, or our lease ran out while
//! the database did not answer), it tells the lane to stop. The lane also stops by itself at
//! the first send the store refuses as fenced, which covers a replica paused past its lease:
//! it wakes up still "running" the lane, but cannot take a budget slot any more.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::lane::Lane;
use super::pacer::Pacer;
use super::{LaneSettings, Shared};
use crate::internal_events::{InternalEvent, LaneOwnership};
use crate::store::{Fence, Lease, LeaseName, ReplicaId, Store};

/// Who this replica is and how long its leases last.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub replica: ReplicaId,
    pub ttl: Duration,
}

/// A lane this replica is running: its stop signal and task, under which lease.
struct Running {
    epoch: i64,
    stop: watch::Sender<Option<Instant>>,
    task: JoinHandle<()>,
}

impl Running {
    /// Asks the lane to stop, giving it until `deadline` to finish (a request in flight always
    /// finishes), and waits for it.
    async fn stop(self, deadline: Instant, target: &str) {
        let _ = self.stop.send(Some(deadline));
        if let Err(error) = self.task.await {
            tracing::error!(target_name = %target, %error, "a delivery lane crashed");
        }
    }
}

/// Keeps the lease of `target`'s lane and runs the lane while it is held, until `shutdown`
/// gives a drain deadline; then the lane drains and the lease is released.
pub(crate) async fn keep_lane(
    target: String,
    settings: LaneSettings,
    shared: Shared,
    wake: Arc<Notify>,
    leases: LeaseSettings,
    mut shutdown: watch::Receiver<Option<Instant>>,
) {
    let name = LeaseName::lane(&target);
    let store: Arc<dyn Store> = shared.store.clone();
    let mut running: Option<Running> = None;
    // Our lease as last granted; it still counts while the store does not answer, until its
    // expiry.
    let mut held: Option<Lease> = None;
    let deadline = loop {
        if let Some(deadline) = *shutdown.borrow() {
            break deadline;
        }
        let now = Timestamp::now();
        held = match store
            .acquire_or_renew(&name, &leases.replica, leases.ttl, now)
            .await
        {
            Ok(lease) => lease,
            Err(error) => {
                tracing::warn!(target_name = %target, %error, "cannot renew the lane's lease");
                held.filter(|lease| lease.expires_at > Timestamp::now())
            }
        };
        running = match (running, held) {
            // Still ours at the same epoch, and the lane is still going: leave it be.
            (Some(lane), Some(lease)) if lane.epoch == lease.epoch && !lane.task.is_finished() => {
                Some(lane)
            }
            (current, lease) => {
                if let Some(lane) = current {
                    lane.stop(Instant::now(), &target).await;
                    if lease.is_none() {
                        LaneOwnership {
                            target: &target,
                            epoch: None,
                        }
                        .emit(&shared.metrics);
                    }
                }
                lease.map(|lease| {
                    LaneOwnership {
                        target: &target,
                        epoch: Some(lease.epoch),
                    }
                    .emit(&shared.metrics);
                    start_lane(
                        &target,
                        &settings,
                        &shared,
                        &wake,
                        &leases,
                        &name,
                        lease.epoch,
                    )
                })
            }
        };
        tokio::select! {
            () = tokio::time::sleep(leases.ttl / 3) => {}
            // Shutdown began (or its sender is gone: stop too, at once).
            changed = shutdown.changed() => {
                if changed.is_err() {
                    break Instant::now();
                }
            }
        }
    };
    if let Some(lane) = running {
        let epoch = lane.epoch;
        lane.stop(deadline, &target).await;
        LaneOwnership {
            target: &target,
            epoch: None,
        }
        .emit(&shared.metrics);
        // Hand the lane over now rather than after the lease runs out.
        if let Err(error) = store.release(&name, &leases.replica, epoch).await {
            tracing::warn!(target_name = %target, %error, "cannot release the lane's lease");
        }
    }
}

fn start_lane(
    target: &str,
    settings: &LaneSettings,
    shared: &Shared,
    wake: &Arc<Notify>,
    leases: &LeaseSettings,
    name: &LeaseName,
    epoch: i64,
) -> Running {
    let (stop, stop_rx) = watch::channel(None);
    let fence = Fence {
        name: name.clone(),
        owner: leases.replica.clone(),
        epoch,
    };
    let lane = Lane::new(
        target.to_owned(),
        settings.clone(),
        shared.clone(),
        Pacer::new(wake.clone(), stop_rx),
    )
    .fenced_by(fence);
    Running {
        epoch,
        stop,
        task: tokio::spawn(lane.run()),
    }
}

/// Two keepers (two replicas) on one real store, in real time: leases expire by the wall
/// clock, so a paused tokio clock cannot stand in for it. Every wait is on a condition.
#[cfg(test)]
mod tests {
    use async_trait::async_trait;
    use pagerduty_events::{Attempt, Endpoint, RequestBody, RoutingKey};

    use super::*;
    use crate::delivery::{PagerDutyService, RoutingKeys};
    use crate::metrics::{Metrics, TargetLabel};
    use crate::store::sqlite::SqliteStore;
    use crate::store::{BudgetSecret, Leases};

    const TARGET: &str = "default";
    const TTL: Duration = Duration::from_millis(1500);

    struct NoPagerDuty;

    #[async_trait]
    impl PagerDutyService for NoPagerDuty {
        async fn send(&self, _: Endpoint, _: &RoutingKey, _: RequestBody) -> Attempt {
            unreachable!("nothing is queued, so nothing is sent")
        }
    }

    struct NoKeys;

    impl RoutingKeys for NoKeys {
        fn get(&self, _target: &str) -> Option<RoutingKey> {
            None
        }
    }

    struct Replica {
        metrics: Arc<Metrics>,
        stop: watch::Sender<Option<Instant>>,
        task: JoinHandle<()>,
    }

    impl Replica {
        fn start(store: &Arc<SqliteStore>, id: &str) -> Self {
            let metrics = Arc::new(Metrics::new());
            let shared = Shared {
                store: store.clone() as Arc<dyn Store>,
                service: Arc::new(NoPagerDuty),
                keys: Arc::new(NoKeys),
                budget_secret: BudgetSecret::from_stored(&[7; 32]).expect("32 bytes"),
                metrics: metrics.clone(),
                fallback_wake: Arc::new(Notify::new()),
            };
            let leases = LeaseSettings {
                replica: ReplicaId::new(id).expect("id"),
                ttl: TTL,
            };
            let (stop, stop_rx) = watch::channel(None);
            let task = tokio::spawn(keep_lane(
                TARGET.to_owned(),
                LaneSettings::default(),
                shared,
                Arc::new(Notify::new()),
                leases,
                stop_rx,
            ));
            Self {
                metrics,
                stop,
                task,
            }
        }

        fn owns(&self) -> bool {
            let label = TargetLabel {
                target: TARGET.to_owned(),
            };
            self.metrics.lane_owned.get_or_create(&label).get() == 1
        }

        async fn shut_down(self) {
            self.stop
                .send(Some(Instant::now()))
                .expect("keeper listens");
            self.task.await.expect("keeper ends");
        }
    }

    async fn wait_for(what: &str, condition: impl Fn() -> bool) {
        tokio::time::timeout(Duration::from_secs(10), async {
            while !condition() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
    }

    #[tokio::test]
    async fn one_replica_drives_the_lane_and_another_takes_over_when_it_stops() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Arc::new(
            SqliteStore::open(&dir.path().join("leases.db"))
                .await
                .expect("store"),
        );
        let a = Replica::start(&store, "a");
        wait_for("a to drive the lane", || a.owns()).await;
        let b = Replica::start(&store, "b");
        // For more than a whole lease `b` tries too, and renewals keep the lane with `a`.
        let watch_until = Instant::now() + TTL * 3 / 2;
        while Instant::now() < watch_until {
            assert!(a.owns() && !b.owns(), "exactly one replica drives the lane");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let held = store.leases().await.expect("leases");
        assert_eq!((held[0].owner.as_str(), held[0].epoch), ("a", 1));

        // `a` stops: it releases the lease, so `b` need not wait for it to expire.
        let a_expiry = store.leases().await.expect("leases")[0].expires_at;
        a.shut_down().await;
        wait_for("b to take the lane over", || b.owns()).await;
        let held = store.leases().await.expect("leases");
        assert_eq!(held[0].owner.as_str(), "b");
        assert!(held[0].epoch > 1, "a takeover moves the epoch on");
        let taken_at = held[0].expires_at - jiff::SignedDuration::try_from(TTL).expect("ttl");
        assert!(
            taken_at < a_expiry,
            "taken over at {taken_at}, before a's lease would have expired ({a_expiry})"
        );
        b.shut_down().await;
    }
}
