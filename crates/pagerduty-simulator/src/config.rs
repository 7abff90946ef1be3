//! How a simulator is set up when it starts: PagerDuty's budget, the body size limit and the
//! faults it begins with (and returns to on reset).

use std::time::Duration;

/// Start-up settings of a [`Simulator`](crate::Simulator).
///
/// The defaults are PagerDuty's documented numbers: about 120 events per minute per
/// integration key over a 60 s look-back window, and 512 KB bodies (read as 512,000 bytes,
/// as Alertmanager does). Faults start switched off.
#[derive(Clone, Debug)]
pub struct Config {
    /// Requests admitted per routing key within `rate_window`; `0` switches the limiter off.
    pub rate_limit: u32,
    /// Length of the sliding look-back window of the limiter.
    pub rate_window: Duration,
    /// Share of event requests answered with a simulated 500, from 0.0 to 1.0
    /// (values outside that range are clamped).
    pub fail_rate: f64,
    /// Delay added before each event request is answered.
    pub latency: Duration,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            rate_limit: 120,
            rate_window: Duration::from_secs(60),
            fail_rate: 0.0,
            latency: Duration::ZERO,
            max_body_bytes: 512_000,
        }
    }
}
