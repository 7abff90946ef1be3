//! "Sleep unless draining": how every delivery loop waits between rounds.
//!
//! A lane (and the fallback publisher) sleeps after a pause PagerDuty asked for, after a
//! failure, or when idle. Only an idle sleep may be cut short by new work; and once shutdown
//! has set a drain deadline, a sleep that would outlast it ends the loop instead.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;

/// Whether new work may end a sleep early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wake {
    /// Idle: new work ends the sleep.
    OnWork,
    /// A pause someone asked for (a 429, a backoff): new work must not cut it short.
    Never,
}

/// How a sleep ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Slept {
    /// A wake-up ended it early (only an idle sleep): a commit of new events, or a change
    /// of targets, which wakes every lane.
    Woken,
    /// Its time passed.
    Elapsed,
    /// Draining, and the sleep would outlast the deadline: the loop should stop.
    Stop,
}

impl Slept {
    /// Whether the loop goes on.
    pub(crate) fn goes_on(self) -> bool {
        self != Slept::Stop
    }
}

pub(crate) struct Pacer {
    wake: Arc<Notify>,
    /// `Some(deadline)` once shutdown began.
    stop: watch::Receiver<Option<Instant>>,
}

impl Pacer {
    pub(crate) fn new(wake: Arc<Notify>, stop: watch::Receiver<Option<Instant>>) -> Self {
        Self { wake, stop }
    }

    /// Whether shutdown has begun.
    pub(crate) fn draining(&self) -> bool {
        self.stop.borrow().is_some()
    }

    /// Whether shutdown has begun and its deadline has passed: time to stop even with work left.
    pub(crate) fn out_of_time(&self) -> bool {
        self.stop
            .borrow()
            .is_some_and(|deadline| Instant::now() >= deadline)
    }

    /// Sleeps for `pause`, or until new work if `wake` allows; says how the sleep ended.
    pub(crate) async fn sleep(&mut self, pause: Duration, wake: Wake) -> Slept {
        let until = Instant::now() + pause;
        loop {
            if let Some(deadline) = *self.stop.borrow()
                && until >= deadline
            {
                return Slept::Stop;
            }
            tokio::select! {
                () = tokio::time::sleep_until(until) => return Slept::Elapsed,
                () = self.wake.notified(), if wake == Wake::OnWork => return Slept::Woken,
                changed = self.stop.changed() => {
                    if changed.is_err() {
                        // Nobody can ask us to stop any more; just finish the pause.
                        tokio::time::sleep_until(until).await;
                        return Slept::Elapsed;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn work_ends_only_an_idle_sleep() {
        let wake = Arc::new(Notify::new());
        let (_stop, stop_rx) = watch::channel(None);
        let mut pacer = Pacer::new(wake.clone(), stop_rx);
        let start = Instant::now();
        wake.notify_one();
        assert_eq!(
            pacer.sleep(Duration::from_secs(10), Wake::OnWork).await,
            Slept::Woken
        );
        assert_eq!(start.elapsed(), Duration::ZERO);
        wake.notify_one();
        assert_eq!(
            pacer.sleep(Duration::from_secs(10), Wake::Never).await,
            Slept::Elapsed
        );
        assert_eq!(start.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_sleep_past_the_drain_deadline_stops_the_loop() {
        let (stop, stop_rx) = watch::channel(None);
        let mut pacer = Pacer::new(Arc::new(Notify::new()), stop_rx);
        assert!(!pacer.draining());
        stop.send(Some(Instant::now() + Duration::from_secs(5)))
            .expect("send");
        assert!(pacer.draining());
        assert_eq!(
            pacer.sleep(Duration::from_secs(1), Wake::OnWork).await,
            Slept::Elapsed
        );
        assert!(!pacer.out_of_time());
        assert_eq!(
            pacer.sleep(Duration::from_secs(10), Wake::Never).await,
            Slept::Stop
        );
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(pacer.out_of_time());
    }
}
