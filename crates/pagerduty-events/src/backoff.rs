//! Backoff: how long to wait after consecutive failures — exponential, capped, and by default
//! with full jitter.
//!
//! One type for every retry loop (the bridge's lanes, its fallback webhook, [`RetryPolicy`]),
//! so the rule is written once: the n-th consecutive failure waits at most
//! `min(max, base · 2^(n-1))`, and with full jitter a uniform draw below that ("Exponential
//! Backoff And Jitter", AWS), so senders that failed together do not come back together.
//!
//! [`RetryPolicy`]: crate::RetryPolicy

use std::time::Duration;

use rand::Rng;

/// Whether a pause is drawn below its cap or is the cap itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Jitter {
    /// A uniform draw in `[0, cap]`: for failures many senders share (5xx, timeouts).
    Full,
    /// Exactly the cap: for pauses someone else asked for, such as a 429's doubling.
    None,
}

/// Consecutive-failure backoff: [`Backoff::next`] after each failure, [`Backoff::reset`] after
/// a success.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    jitter: Jitter,
    /// Failures since the last reset.
    failures: u32,
}

impl Backoff {
    /// Full jitter, caps `base`, `2·base`, `4·base`… up to `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            jitter: Jitter::Full,
            failures: 0,
        }
    }

    /// The same caps with another jitter.
    pub fn with_jitter(self, jitter: Jitter) -> Self {
        Self { jitter, ..self }
    }

    /// Counts one more failure and returns the pause before the next try.
    #[allow(
        clippy::should_implement_trait,
        reason = "never ends, so an Iterator's Option would only be unwrapped"
    )]
    pub fn next(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let cap = cap(self.base, self.max, self.failures);
        match self.jitter {
            Jitter::Full => full_jitter(cap),
            Jitter::None => cap,
        }
    }

    /// A success: the next failure starts again from `base`.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Failures counted since the last reset.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// `min(max, base · 2^(failures-1))`, saturating.
pub(crate) fn cap(base: Duration, max: Duration, failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(31);
    base.saturating_mul(1u32 << exponent).min(max)
}

/// A uniform draw in `[0, cap]`.
pub(crate) fn full_jitter(cap: Duration) -> Duration {
    let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rand::rng().random_range(0..=nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn caps_double_up_to_max_and_reset_starts_over() {
        let mut backoff = Backoff::new(100 * MS, 1000 * MS).with_jitter(Jitter::None);
        let pauses: Vec<Duration> = (0..6).map(|_| backoff.next()).collect();
        assert_eq!(
            pauses,
            [100 * MS, 200 * MS, 400 * MS, 800 * MS, 1000 * MS, 1000 * MS]
        );
        assert_eq!(backoff.failures(), 6);
        backoff.reset();
        assert_eq!(backoff.next(), 100 * MS);
    }

    #[test]
    fn many_failures_saturate_at_max() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(300))
            .with_jitter(Jitter::None);
        for _ in 0..100 {
            assert!(backoff.next() <= Duration::from_secs(300));
        }
        assert_eq!(backoff.next(), Duration::from_secs(300));
    }

    #[test]
    fn full_jitter_stays_below_the_cap_and_spreads_over_it() {
        let mut low = 0;
        let mut high = 0;
        for _ in 0..200 {
            // The third failure: cap 400 ms.
            let mut backoff = Backoff::new(100 * MS, 1000 * MS);
            backoff.next();
            backoff.next();
            let pause = backoff.next();
            assert!(pause <= 400 * MS, "{pause:?}");
            low += usize::from(pause < 100 * MS);
            high += usize::from(pause > 300 * MS);
        }
        // Uniform on [0, 400 ms]: each side holds about a quarter of 200 draws; both being
        // empty would mean no jitter.
        assert!(low > 10 && high > 10, "low {low}, high {high}");
    }
}
