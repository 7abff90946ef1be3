//! A target's lane under its lease: the lane runs on this replica only while this replica holds
//! `lane:<target>` (see [`crate::store::Leases`]), kept by the generic keeper of
//! [`crate::lease_keeper`] (renewals, takeover, release on shutdown).
//!
//! What is the lane's own: it runs fenced with the lease's epoch, and `pagerbridge_lane_owned`
//! says whether this replica drives it ([`LaneOwnership`]). The keeper stops the lane when the
//! lease is lost; the lane also stops by itself at the first send the store refuses as fenced,
//! which covers a replica paused past its lease: it wakes up still "running" the lane, but
//! cannot take a budget slot any more.

use std::sync::Arc;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::lane::Lane;
use super::pacer::Pacer;
use super::{LaneSettings, Shared};
use crate::internal_events::{InternalEvent, LaneOwnership};
use crate::lease_keeper::{LeaseSettings, keep_leased};
use crate::store::{Fence, LeaseName};

/// Keeps the lease of `target`'s lane and runs the lane while it is held, until `shutdown`
/// gives a drain deadline; then the lane drains and the lease is released.
pub(crate) async fn keep_lane(
    target: String,
    settings: LaneSettings,
    shared: Shared,
    wake: Arc<Notify>,
    leases: LeaseSettings,
    shutdown: watch::Receiver<Option<Instant>>,
) {
    let name = LeaseName::lane(&target);
    let replica = leases.replica.clone();
    keep_leased(
        name.clone(),
        shared.store.clone(),
        leases,
        &shared.metrics,
        shutdown,
        |epoch, stop| {
            let fence = Fence {
                name: name.clone(),
                owner: replica.clone(),
                epoch,
            };
            let lane = Lane::new(
                target.clone(),
                settings.clone(),
                shared.clone(),
                Pacer::new(wake.clone(), stop),
            )
            .fenced_by(fence);
            tokio::spawn(lane.run())
        },
        |epoch| {
            LaneOwnership {
                target: &target,
                epoch,
            }
            .emit(&shared.metrics)
        },
    )
    .await;
}

/// Two keepers (two replicas) on one real store, in real time: leases expire by the wall
/// clock, so a paused tokio clock cannot stand in for it. Every wait is on a condition.
#[cfg(test)]
mod tests {
    use std::time::Duration;

    use async_trait::async_trait;
    use pagerduty_events::{Attempt, BaseUrl, Endpoint, RequestBody, RoutingKey};
    use tokio::task::JoinHandle;

    use crate::lease_keeper::tests::wait_for;

    use super::*;
    use crate::delivery::{PagerDutyService, RoutingKeys};
    use crate::metrics::{Metrics, TargetLabel};
    use crate::store::sqlite::SqliteStore;
    use crate::store::{BudgetSecret, Leases, ReplicaId, Store};

    const TARGET: &str = "default";
    const TTL: Duration = Duration::from_millis(1500);

    struct NoPagerDuty;

    #[async_trait]
    impl PagerDutyService for NoPagerDuty {
        async fn send(
            &self,
            _: Option<&BaseUrl>,
            _: Endpoint,
            _: &RoutingKey,
            _: RequestBody,
        ) -> Attempt {
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
