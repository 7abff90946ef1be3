//! Faults a test can inject: latency, outage windows, a queue of forced statuses and a
//! random failure rate, applied in that order before PagerDuty's own handling.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::Config;
use crate::responses::Reply;

/// The statuses a test may force: final HTTP statuses only.
const FORCEABLE: std::ops::RangeInclusive<u16> = 200..=599;

/// Outages are capped so that `now + outage` cannot overflow; ten years is "until reset".
const MAX_OUTAGE_SECONDS: u64 = 10 * 365 * 24 * 3600;

/// A change to the injected faults (`POST /_simulator/faults`), or a snapshot of them
/// (its answer, and [`Simulator::faults`](crate::Simulator::faults)).
///
/// Fields left out (`None`) keep their current value.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// Share of event requests answered `500 Simulated failure`, 0.0 to 1.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_rate: Option<f64>,
    /// Delay before each event request is answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// Statuses (200–599) to answer the next event requests with, one each, in order;
    /// replaces the queue. A forced 202 means "no fault this time": that request is handled
    /// normally and also skips the fail-rate draw. In a snapshot: what is left of the queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_status: Option<Vec<u16>>,
    /// Starts an outage (503 to every event request) of this many seconds from now;
    /// `0` ends one. In a snapshot: the seconds left, rounded up (0 when there is none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outage_seconds: Option<u64>,
    /// Adds `Retry-After: N` to every 429, forced or from the budget; `0` removes it.
    /// PagerDuty documents no such header, so it is off by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u64>,
}

impl Faults {
    /// What is wrong with a change sent over HTTP, which is refused rather than clamped.
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(rate) = self.fail_rate
            && !(0.0..=1.0).contains(&rate)
        {
            problems.push(format!("fail_rate {rate} is not between 0.0 and 1.0"));
        }
        for status in self.force_status.iter().flatten() {
            if !FORCEABLE.contains(status) {
                problems.push(format!("force_status {status} is not between 200 and 599"));
            }
        }
        problems
    }
}

/// The faults in force.
#[derive(Debug)]
pub(crate) struct FaultState {
    fail_rate: f64,
    latency: Duration,
    force_status: VecDeque<StatusCode>,
    outage_until: Option<Instant>,
    retry_after_seconds: Option<u64>,
}

impl FaultState {
    pub(crate) fn from_config(config: &Config) -> Self {
        Self {
            fail_rate: sane_rate(config.fail_rate),
            latency: config.latency,
            force_status: VecDeque::new(),
            outage_until: None,
            retry_after_seconds: None,
        }
    }

    /// Applies the fields that are set. Out-of-range values are clamped (`fail_rate`) or
    /// dropped (statuses outside 200–599), since this path has no way to report them.
    pub(crate) fn merge(&mut self, change: &Faults, now: Instant) {
        if let Some(rate) = change.fail_rate {
            self.fail_rate = sane_rate(rate);
        }
        if let Some(ms) = change.latency_ms {
            self.latency = Duration::from_millis(ms);
        }
        if let Some(statuses) = &change.force_status {
            self.force_status = statuses
                .iter()
                .filter(|status| FORCEABLE.contains(status))
                .filter_map(|&status| StatusCode::from_u16(status).ok())
                .collect();
        }
        if let Some(seconds) = change.outage_seconds {
            self.outage_until = (seconds > 0)
                .then(|| now.checked_add(Duration::from_secs(seconds.min(MAX_OUTAGE_SECONDS))))
                .flatten();
        }
        if let Some(seconds) = change.retry_after_seconds {
            self.retry_after_seconds = (seconds > 0).then_some(seconds);
        }
    }

    pub(crate) fn snapshot(&self, now: Instant) -> Faults {
        let outage_left = self
            .outage_until
            .map_or(Duration::ZERO, |until| until.saturating_duration_since(now));
        Faults {
            fail_rate: Some(self.fail_rate),
            latency_ms: Some(u64::try_from(self.latency.as_millis()).unwrap_or(u64::MAX)),
            force_status: Some(self.force_status.iter().map(StatusCode::as_u16).collect()),
            outage_seconds: Some(outage_left.as_secs() + u64::from(outage_left.subsec_nanos() > 0)),
            retry_after_seconds: self.retry_after_seconds,
        }
    }

    pub(crate) fn latency(&self) -> Duration {
        self.latency
    }

    pub(crate) fn retry_after_seconds(&self) -> Option<u64> {
        self.retry_after_seconds
    }

    /// The fault that answers this request, if any: outage, then the forced-status queue,
    /// then the fail-rate draw. Latency is applied by the caller before this, outside the
    /// lock.
    pub(crate) fn intercept(&mut self, now: Instant) -> Option<Reply> {
        if self.outage_until.is_some_and(|until| now < until) {
            return Some(Reply::outage());
        }
        if let Some(status) = self.force_status.pop_front() {
            return (status != StatusCode::ACCEPTED)
                .then(|| Reply::forced(status, self.retry_after_seconds));
        }
        if self.fail_rate > 0.0 && rand::rng().random_bool(self.fail_rate) {
            return Some(Reply::simulated_failure());
        }
        None
    }
}

/// `random_bool` panics outside 0.0..=1.0, and NaN compares with nothing.
fn sane_rate(rate: f64) -> f64 {
    if rate.is_nan() {
        0.0
    } else {
        rate.clamp(0.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keeps_fields_that_are_not_given() {
        let now = Instant::now();
        let mut faults = FaultState::from_config(&Config::default());
        faults.merge(
            &Faults {
                latency_ms: Some(250),
                ..Faults::default()
            },
            now,
        );
        faults.merge(
            &Faults {
                fail_rate: Some(0.5),
                ..Faults::default()
            },
            now,
        );
        let snapshot = faults.snapshot(now);
        assert_eq!(snapshot.latency_ms, Some(250));
        assert_eq!(snapshot.fail_rate, Some(0.5));
    }

    #[test]
    fn merge_clamps_and_drops_what_it_cannot_use() {
        let now = Instant::now();
        let mut faults = FaultState::from_config(&Config::default());
        let change = Faults {
            fail_rate: Some(f64::NAN),
            force_status: Some(vec![99, 500, 600, 429]),
            ..Faults::default()
        };
        faults.merge(&change, now);
        let snapshot = faults.snapshot(now);
        assert_eq!(snapshot.fail_rate, Some(0.0));
        assert_eq!(snapshot.force_status, Some(vec![500, 429]));
        faults.merge(
            &Faults {
                fail_rate: Some(7.0),
                ..Faults::default()
            },
            now,
        );
        assert_eq!(faults.snapshot(now).fail_rate, Some(1.0));
    }

    #[test]
    fn outage_snapshot_rounds_up_and_ends() {
        let now = Instant::now();
        let mut faults = FaultState::from_config(&Config::default());
        faults.merge(
            &Faults {
                outage_seconds: Some(10),
                ..Faults::default()
            },
            now,
        );
        let later = now + Duration::from_millis(500);
        assert_eq!(faults.snapshot(later).outage_seconds, Some(10));
        assert!(faults.intercept(later).is_some());
        assert!(faults.intercept(now + Duration::from_secs(10)).is_none());
        faults.merge(
            &Faults {
                outage_seconds: Some(u64::MAX),
                ..Faults::default()
            },
            now,
        );
        assert!(faults.intercept(now).is_some());
        faults.merge(
            &Faults {
                outage_seconds: Some(0),
                ..Faults::default()
            },
            now,
        );
        assert!(faults.intercept(now).is_none());
    }

    #[test]
    fn problems_name_each_bad_value() {
        let change = Faults {
            fail_rate: Some(1.5),
            force_status: Some(vec![503, 42]),
            ..Faults::default()
        };
        assert_eq!(
            change.problems(),
            vec![
                "fail_rate 1.5 is not between 0.0 and 1.0",
                "force_status 42 is not between 200 and 599"
            ]
        );
        assert!(Faults::default().problems().is_empty());
    }
}
