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
