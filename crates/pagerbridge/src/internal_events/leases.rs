//! A replica started or stopped driving a lane or running a singleton (took or lost its lease).

use super::InternalEvent;
use crate::lease_keeper::Singleton;
use crate::metrics::{Metrics, SingletonLabel, TargetLabel};

/// This replica now drives the lane (`epoch: Some`) or no longer does (`None`):
/// `pagerbridge_lane_owned{target}` is 1 or 0.
pub struct LaneOwnership<'a> {
    pub target: &'a str,
    pub epoch: Option<i64>,
}

impl InternalEvent for LaneOwnership<'_> {
    fn emit(self, metrics: &Metrics) {
        match self.epoch {
            Some(epoch) => {
                tracing::info!(target_name = %self.target, epoch, "this replica drives the lane");
            }
            None => {
                tracing::info!(target_name = %self.target, "this replica no longer drives the lane")
            }
        }
        metrics
            .lane_owned
            .get_or_create(&TargetLabel {
                target: self.target.to_owned(),
            })
            .set(i64::from(self.epoch.is_some()));
    }
}

/// This replica now runs a singleton (`epoch: Some`) or no longer does (`None`):
/// `pagerbridge_singleton_owned{singleton}` is 1 or 0.
pub struct SingletonOwnership {
    pub singleton: Singleton,
    pub epoch: Option<i64>,
}

impl InternalEvent for SingletonOwnership {
    fn emit(self, metrics: &Metrics) {
        let singleton = self.singleton.as_str();
        match self.epoch {
            Some(epoch) => tracing::info!(singleton, epoch, "this replica runs the singleton"),
            None => tracing::info!(singleton, "this replica no longer runs the singleton"),
        }
        metrics
            .singleton_owned
            .get_or_create(&SingletonLabel {
                singleton: singleton.to_owned(),
            })
            .set(i64::from(self.epoch.is_some()));
    }
}
