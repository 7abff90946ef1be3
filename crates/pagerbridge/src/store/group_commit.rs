//! Group commit, as databases do it: callers that arrive while a commit is under way queue up,
//! and the next commit takes all of them at once — one transaction and one fsync for many
//! requests instead of one each. A single writer task drains the queue; each caller waits for
//! the answer to its own job. It knows nothing of SQL: the store gives it the function that
//! commits a batch.
//!
//! A store whose commit can return before its fsync (SQLite with `synchronous = NORMAL`) can
//! also pipeline the flush, as databases do: the writer commits the next batch while a
//! thread makes the previous one durable, one flush for every batch committed before it
//! began, and only then are their callers answered ([`GroupCommit::spawn_durable`]). The
//! writer's work and the disk's then overlap instead of taking turns.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

/// The most jobs one commit takes: bounds a batch's transaction, and the wait of the first
/// caller in it.
const MAX_JOBS: usize = 64;

/// The most batches one flush of [`GroupCommit::spawn_durable`] takes (never more than two
/// are committed and not yet answered).
const FLUSH_MAX: usize = 2;

/// A batch committed and waiting for its flush: the callers, their results, and its place in
/// the pipeline, given back once they are answered.
type Committed<R> = (Vec<oneshot::Sender<R>>, Vec<R>, OwnedSemaphorePermit);

/// A queue of jobs in front of one writer; cheap to clone.
#[derive(Debug)]
pub(super) struct GroupCommit<J, R> {
    queue: mpsc::UnboundedSender<(J, oneshot::Sender<R>)>,
}

impl<J, R> Clone for GroupCommit<J, R> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
        }
    }
}

impl<J: Send + 'static, R: Send + 'static> GroupCommit<J, R> {
    /// Starts `writers` writers on one queue: each takes what has queued up when it is free, so
    /// up to `writers` batches commit at once. `commit` takes a batch of jobs, in arrival
    /// order, and returns one result per job, in the same order; the writers stop when every
    /// handle is dropped. For a database that runs transactions in
    /// parallel (PostgreSQL), where one writer would leave it idle during each round trip;
    /// with a single writer (SQLite), batches are also committed in arrival order.
    pub(super) fn spawn_writers<F, Fut>(writers: usize, commit: F) -> Self
    where
        F: Fn(Vec<J>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<R>> + Send,
    {
        let (queue, jobs) = mpsc::unbounded_channel::<(J, oneshot::Sender<R>)>();
        let jobs = Arc::new(Mutex::new(jobs));
        let commit = Arc::new(commit);
        for _ in 0..writers.max(1) {
            let jobs = jobs.clone();
            let commit = commit.clone();
            tokio::spawn(async move {
                let mut batch = Vec::with_capacity(MAX_JOBS);
                // The queue is held only while taking a batch, not while committing it.
                while jobs.lock().await.recv_many(&mut batch, MAX_JOBS).await > 0 {
                    let (work, replies): (Vec<J>, Vec<oneshot::Sender<R>>) =
                        batch.drain(..).unzip();
                    answer(replies, commit(work).await);
                }
            });
        }
        Self { queue }
    }

    /// Starts one writer whose `commit` returns before its batch is durable, and a thread
    /// that makes committed batches durable with `durable` before their callers hear of them.
    /// The writer commits a batch while the one before is flushed, and waits for that flush
    /// before it commits another. `durable` (which may block) takes the results of every
    /// batch committed since its last call, in commit order, and gives back what to answer:
    /// the same results once flushed, or errors if the flush failed. Batches are committed,
    /// flushed and answered in arrival order.
    pub(super) fn spawn_durable<F, Fut, D>(commit: F, durable: D) -> Self
    where
        F: Fn(Vec<J>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<R>> + Send,
        D: Fn(Vec<R>) -> Vec<R> + Send + 'static,
    {
        let (queue, mut jobs) = mpsc::unbounded_channel::<(J, oneshot::Sender<R>)>();
        let (committed, mut to_flush) = mpsc::unbounded_channel::<Committed<R>>();
        // One batch flushing and one committing, no more: the writer would otherwise commit
        // each few jobs that queue during a flush on their own, and many small commits write
        // more pages than a few large ones. Under a burst, jobs queue up while it waits.
        let in_flight = Arc::new(Semaphore::new(2));
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(MAX_JOBS);
            loop {
                let Ok(permit) = in_flight.clone().acquire_owned().await else {
                    return;
                };
                if jobs.recv_many(&mut batch, MAX_JOBS).await == 0 {
                    return;
                }
                let (work, replies): (Vec<J>, Vec<oneshot::Sender<R>>) = batch.drain(..).unzip();
                let results = commit(work).await;
                if committed.send((replies, results, permit)).is_err() {
                    return;
                }
            }
        });
        // The flush blocks, and its callers should hear of it at once, not when a runtime
        // thread busy parsing requests gets round to it: a thread of its own (it ends when the
        // writer does).
        let flusher = std::thread::Builder::new()
            .name("pagerbridge-flush".into())
            .spawn(move || {
                let mut flush = Vec::new();
                // Whatever was committed while the last flush ran, in one flush.
                while to_flush.blocking_recv_many(&mut flush, FLUSH_MAX) > 0 {
                    let (mut replies, mut results, mut permits) =
                        (Vec::new(), Vec::new(), Vec::new());
                    for (batch_replies, batch_results, permit) in flush.drain(..) {
                        replies.extend(batch_replies);
                        results.extend(batch_results);
                        permits.push(permit);
                    }
                    answer(replies, durable(results));
                    // Answered: the writer may commit the next batch.
                    drop(permits);
                }
            });
        if let Err(error) = flusher {
            // Its queue is gone with it: the writer stops at its first batch, and every caller
            // hears that the store is closed.
            tracing::error!(%error, "could not start the storage flush thread");
        }
        Self { queue }
    }

    /// Queues `job` and waits for its result; `None` if the writer is gone (the runtime is
    /// shutting down).
    pub(super) async fn submit(&self, job: J) -> Option<R> {
        let (reply, answer) = oneshot::channel();
        self.queue.send((job, reply)).ok()?;
        answer.await.ok()
    }
}

/// Sends each caller its result.
fn answer<R>(replies: Vec<oneshot::Sender<R>>, results: Vec<R>) {
    for (reply, result) in replies.into_iter().zip(results) {
        // A caller that gave up (its request was cancelled) is not waiting; its job is
        // committed all the same, as it would be without grouping.
        let _ = reply.send(result);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn jobs_that_queue_during_a_commit_share_the_next_and_each_gets_its_own_answer() {
        let batches = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = batches.clone();
        let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel::<()>();
        let (gate_tx, gate) = tokio::sync::watch::channel(false);
        let group = GroupCommit::spawn_writers(1, move |jobs: Vec<u32>| {
            let seen = seen.clone();
            let started = started_tx.clone();
            let mut gate = gate.clone();
            async move {
                let _ = started.send(());
                // Every commit waits for the gate, so that jobs queue behind the first.
                let _ = gate.wait_for(|open| *open).await;
                seen.lock().expect("lock").push(jobs.len());
                jobs.into_iter().map(|job| job * 10).collect::<Vec<u32>>()
            }
        });
        let first = tokio::spawn({
            let group = group.clone();
            async move { group.submit(1).await }
        });
        tokio::time::timeout(Duration::from_secs(5), started.recv())
            .await
            .expect("the writer takes the first job");
        // Queued while the first commit is under way.
        let answers: Vec<_> = (2..=20)
            .map(|job| {
                let (reply, answer) = oneshot::channel();
                group.queue.send((job, reply)).expect("queued");
                answer
            })
            .collect();
        gate_tx.send(true).expect("gate");
        assert_eq!(first.await.expect("task"), Some(10));
        for (job, answer) in (2..=20).zip(answers) {
            assert_eq!(answer.await.ok(), Some(job * 10));
        }
        assert_eq!(*batches.lock().expect("lock"), [1, 19]);
    }

    #[tokio::test]
    async fn a_durable_writer_commits_one_batch_while_the_last_is_flushed_and_answers_only_flushed_jobs()
     {
        let committed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let flushed = Arc::new(std::sync::Mutex::new(Vec::new()));
        // Every flush (on the flush thread) waits for the gate, so that commits pile up
        // behind it.
        let gate = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
        let (flushing_tx, mut flushing) = tokio::sync::mpsc::unbounded_channel::<()>();
        let group = GroupCommit::spawn_durable(
            {
                let committed = committed.clone();
                move |jobs: Vec<u32>| {
                    committed.lock().expect("lock").push(jobs.clone());
                    async move { jobs }
                }
            },
            {
                let (flushed, gate) = (flushed.clone(), gate.clone());
                move |results: Vec<u32>| {
                    let _ = flushing_tx.send(());
                    let (open, opened) = &*gate;
                    let open = open.lock().expect("lock");
                    drop(opened.wait_while(open, |open| !*open).expect("gate"));
                    flushed.lock().expect("lock").push(results.clone());
                    results.into_iter().map(|r| r + 100).collect::<Vec<u32>>()
                }
            },
        );
        let submit = |job: u32| {
            let group = group.clone();
            tokio::spawn(async move { group.submit(job).await })
        };
        let first = submit(1);
        tokio::time::timeout(Duration::from_secs(5), flushing.recv())
            .await
            .expect("the first commit is being flushed");
        // While that flush waits, the writer commits the next batch...
        let second = submit(2);
        tokio::time::timeout(Duration::from_secs(5), async {
            while committed.lock().expect("lock").len() < 2 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("committed while the flush is under way");
        // ...but no further one: these two wait for the first flush.
        let (third, fourth) = (submit(3), submit(4));
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert_eq!(committed.lock().expect("lock").len(), 2);
        assert!(!first.is_finished(), "answered before its flush");
        assert!(!second.is_finished());
        assert!(flushed.lock().expect("lock").is_empty());
        *gate.0.lock().expect("lock") = true;
        gate.1.notify_all();
        assert_eq!(first.await.expect("task"), Some(101));
        for (job, task) in [(2, second), (3, third), (4, fourth)] {
            assert_eq!(task.await.expect("task"), Some(job + 100));
        }
        // The two that waited share a commit.
        assert_eq!(
            *committed.lock().expect("lock"),
            [vec![1], vec![2], vec![3, 4]]
        );
        let flushed: Vec<u32> = flushed.lock().expect("lock").concat();
        assert_eq!(flushed, [1, 2, 3, 4], "flushed in commit order");
    }

    #[tokio::test]
    async fn a_batch_takes_at_most_max_jobs() {
        let batches = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = batches.clone();
        let group = GroupCommit::spawn_writers(1, move |jobs: Vec<usize>| {
            let seen = seen.clone();
            async move {
                seen.lock().expect("lock").push(jobs.len());
                jobs
            }
        });
        let answers: Vec<_> = (0..MAX_JOBS + 5)
            .map(|job| {
                let (reply, answer) = oneshot::channel();
                group.queue.send((job, reply)).expect("queued");
                answer
            })
            .collect();
        for (job, answer) in answers.into_iter().enumerate() {
            assert_eq!(answer.await.ok(), Some(job));
        }
        assert_eq!(*batches.lock().expect("lock"), [MAX_JOBS, 5]);
    }
}
