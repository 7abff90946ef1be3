//! PagerDuty's per-integration-key budget: a sliding look-back window that admits at most
//! `limit` requests per routing key, shared by alert and change events.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Admission times per routing key, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Budget {
    windows: HashMap<String, VecDeque<Instant>>,
    last_sweep: Option<Instant>,
}

impl Budget {
    /// Admits a request for `key` at `now` unless the key already had `limit` admissions
    /// within `window`. A refused request is not remembered: PagerDuty does not ingest it,
    /// so it must not push the key's window further out.
    pub(crate) fn try_admit(
        &mut self,
        key: &str,
        limit: u32,
        window: Duration,
        now: Instant,
    ) -> bool {
        if limit == 0 {
            return true;
        }
        self.sweep(window, now);
        let times = match self.windows.get_mut(key) {
            Some(times) => times,
            None => self.windows.entry(key.to_owned()).or_default(),
        };
        while times
            .front()
            .is_some_and(|&admitted| now.saturating_duration_since(admitted) >= window)
        {
            times.pop_front();
        }
        if times.len() >= limit as usize {
            return false;
        }
        times.push_back(now);
        true
    }

    /// Drops keys that have been quiet for a whole window, at most once per window, so a
    /// long-running simulator fed many distinct keys does not grow without bound.
    fn sweep(&mut self, window: Duration, now: Instant) {
        if self
            .last_sweep
            .is_some_and(|last| now.saturating_duration_since(last) < window)
        {
            return;
        }
        self.last_sweep = Some(now);
        self.windows.retain(|_, times| {
            times
                .back()
                .is_some_and(|&newest| now.saturating_duration_since(newest) < window)
        });
    }

    #[cfg(test)]
    fn tracked_keys(&self) -> usize {
        self.windows.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(60);

    #[test]
    fn admits_up_to_the_limit_within_the_window() {
        let mut budget = Budget::default();
        let start = Instant::now();
        for i in 0..3 {
            assert!(budget.try_admit("a", 3, WINDOW, start + Duration::from_secs(i)));
        }
        assert!(!budget.try_admit("a", 3, WINDOW, start + Duration::from_secs(59)));
    }

    #[test]
    fn slides_instead_of_resetting_at_fixed_boundaries() {
        let mut budget = Budget::default();
        let start = Instant::now();
        assert!(budget.try_admit("a", 2, WINDOW, start));
        assert!(budget.try_admit("a", 2, WINDOW, start + Duration::from_secs(30)));
        assert!(!budget.try_admit("a", 2, WINDOW, start + Duration::from_secs(59)));
        // Only the first admission has left the window.
        assert!(budget.try_admit("a", 2, WINDOW, start + Duration::from_secs(60)));
        assert!(!budget.try_admit("a", 2, WINDOW, start + Duration::from_secs(61)));
    }

    #[test]
    fn refused_requests_do_not_extend_the_window() {
        let mut budget = Budget::default();
        let start = Instant::now();
        assert!(budget.try_admit("a", 1, WINDOW, start));
        for s in 1..60 {
            assert!(!budget.try_admit("a", 1, WINDOW, start + Duration::from_secs(s)));
        }
        assert!(budget.try_admit("a", 1, WINDOW, start + Duration::from_secs(60)));
    }

    #[test]
    fn keys_have_separate_budgets() {
        let mut budget = Budget::default();
        let now = Instant::now();
        assert!(budget.try_admit("a", 1, WINDOW, now));
        assert!(!budget.try_admit("a", 1, WINDOW, now));
        assert!(budget.try_admit("b", 1, WINDOW, now));
    }

    #[test]
    fn zero_limit_admits_everything() {
        let mut budget = Budget::default();
        let now = Instant::now();
        for _ in 0..1000 {
            assert!(budget.try_admit("a", 0, WINDOW, now));
        }
    }

    #[test]
    fn quiet_keys_are_forgotten() {
        let mut budget = Budget::default();
        let start = Instant::now();
        for key in ["a", "b", "c"] {
            assert!(budget.try_admit(key, 5, WINDOW, start));
        }
        assert_eq!(budget.tracked_keys(), 3);
        assert!(budget.try_admit("d", 5, WINDOW, start + WINDOW));
        assert_eq!(budget.tracked_keys(), 1);
    }
}
