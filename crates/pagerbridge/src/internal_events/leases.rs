//! A replica started or stopped driving a lane (took or lost its lease).

use super::InternalEvent;
use crate::metrics::{Metrics, TargetLabel};

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
