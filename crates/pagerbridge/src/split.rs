//! A request's CPU work shared with an idle core: the second half of a list mapped on one of
//! tokio's blocking threads while the request's own task maps the first.
//!
//! Why: at one connection a webhook of 100 alerts is parsed, formatted and serialized on one
//! worker thread while the other core waits for it (the writer has nothing to do until the
//! request's events arrive); formatting and serializing are about a third of the request's
//! time, and each alert's are independent of the others'. A blocking thread, not a spawned
//! task: a task spawned or woken from a worker waits in that worker's LIFO slot, where no
//! other worker steals it, so it would run after the first half, not beside it.
//!
//! Only when it can pay: the list is long enough for a hand-off (tens of microseconds) to be
//! worth it, and no other request is mapping at the same time (then both cores are busy, and
//! a hand-off would only add to the work).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Splits the work of requests that would otherwise leave a core idle.
#[derive(Debug)]
pub struct Split {
    /// Requests mapping now, whether split or not.
    busy: AtomicUsize,
    /// The shortest list that is split.
    min_items: usize,
}

/// The blocking thread stopped before it mapped its half: the runtime is shutting down.
#[derive(Debug, thiserror::Error)]
#[error("the service is shutting down")]
pub struct Interrupted;

impl Split {
    /// Lists of at least `min_items` are split (never with fewer than 2).
    pub fn new(min_items: usize) -> Self {
        Self {
            busy: AtomicUsize::new(0),
            min_items: min_items.max(2),
        }
    }

    /// `items` mapped by `f`, in order. The second half goes to a blocking thread when the list
    /// is long enough and no other call is mapping; otherwise all of it is mapped here.
    pub async fn map<T, U, F>(&self, mut items: Vec<T>, f: F) -> Result<Vec<U>, Interrupted>
    where
        T: Send + 'static,
        U: Send + 'static,
        F: Fn(T) -> U + Send + Sync + 'static,
    {
        let busy = Busy::enter(&self.busy);
        if busy.others > 0 || items.len() < self.min_items {
            return Ok(items.into_iter().map(f).collect());
        }
        let f = Arc::new(f);
        let theirs = items.split_off(items.len() / 2);
        let handle = tokio::task::spawn_blocking({
            let f = f.clone();
            move || theirs.into_iter().map(|item| f(item)).collect::<Vec<U>>()
        });
        let mut mapped: Vec<U> = items.into_iter().map(|item| f(item)).collect();
        match handle.await {
            Ok(theirs) => {
                mapped.extend(theirs);
                Ok(mapped)
            }
            // A panic in `f` is a bug: it unwinds the caller as it would have unmapped.
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(_) => Err(Interrupted),
        }
    }
}

/// One call counted in [`Split::busy`] while it maps, however it ends.
struct Busy<'a> {
    count: &'a AtomicUsize,
    /// Calls that were mapping when this one began.
    others: usize,
}

impl<'a> Busy<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        let others = count.fetch_add(1, Ordering::AcqRel);
        Self { count, others }
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread::ThreadId;

    /// Each item with the thread that mapped it.
    fn tagged(
        n: usize,
    ) -> (
        Vec<usize>,
        impl Fn(usize) -> (usize, ThreadId) + Send + Sync,
    ) {
        ((0..n).collect(), |i| (i * 10, std::thread::current().id()))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_long_list_is_mapped_in_order_half_on_another_thread() {
        let split = Split::new(8);
        let (items, f) = tagged(9);
        let here = std::thread::current().id();
        let mapped = split.map(items, f).await.expect("mapped");
        let values: Vec<usize> = mapped.iter().map(|(v, _)| *v).collect();
        assert_eq!(values, (0..9).map(|i| i * 10).collect::<Vec<_>>());
        assert!(mapped[..4].iter().all(|(_, thread)| *thread == here));
        assert!(mapped[4..].iter().all(|(_, thread)| *thread != here));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_short_list_is_mapped_here() {
        let split = Split::new(8);
        let (items, f) = tagged(7);
        let here = std::thread::current().id();
        let mapped = split.map(items, f).await.expect("mapped");
        assert_eq!(mapped.len(), 7);
        assert!(mapped.iter().all(|(_, thread)| *thread == here));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_list_is_mapped_here_while_another_call_maps() {
        let split = Arc::new(Split::new(2));
        let (entered, wait) = (
            Arc::new(tokio::sync::Notify::new()),
            Arc::new(std::sync::Barrier::new(2)),
        );
        // The first call's item blocks its thread until the second call is done.
        let first = tokio::spawn({
            let (split, entered, wait) = (split.clone(), entered.clone(), wait.clone());
            async move {
                split
                    .map(vec![0], move |i| {
                        entered.notify_one();
                        wait.wait();
                        i
                    })
                    .await
            }
        });
        entered.notified().await;
        let (items, f) = tagged(10);
        let here = std::thread::current().id();
        let mapped = split.map(items, f).await.expect("mapped");
        wait.wait();
        assert_eq!(first.await.expect("joined").expect("mapped"), vec![0]);
        assert!(mapped.iter().all(|(_, thread)| *thread == here));
        // Both calls ended, so the next long list is split again.
        let (items, f) = tagged(10);
        let mapped = split.map(items, f).await.expect("mapped");
        assert!(mapped[5..].iter().all(|(_, thread)| *thread != here));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[should_panic(expected = "item 7")]
    async fn a_panic_on_the_other_thread_unwinds_the_caller() {
        let split = Split::new(2);
        let _ = split
            .map((0..8).collect(), |i: usize| {
                assert!(i != 7, "item {i}");
                i
            })
            .await;
    }
}
