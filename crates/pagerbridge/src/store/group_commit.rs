//! Group commit, as databases do it: callers that arrive while a commit is under way queue up,
//! and the next commit takes all of them at once — one transaction and one fsync for many
//! requests instead of one each. A single writer task drains the queue; each caller waits for
//! the answer to its own job. It knows nothing of SQL: the store gives it the function that
//! commits a batch.
//!
//! A store whose commit can return before its fsync (SQLite with `synchronous = NORMAL`) can
//! also pipeline the flush, as databases do: the writer commits the next batch while another
//! task makes the previous ones durable, one flush for every batch committed before it
//! began, and only then are their callers answered ([`GroupCommit::spawn_durable`]). The
//! writer's work and the disk's then overlap instead of taking turns.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};

/// The most jobs one commit takes: bounds a batch's transaction, and the wait of the first
/// caller in it.
const MAX_JOBS: usize = 64;

/// The most answers one flush of [`GroupCommit::spawn_durable`] takes: a bound, not a
/// target (the callers waiting are about as many as the connections sending).
const FLUSH_MAX: usize = 16 * MAX_JOBS;

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

    /// Starts one writer whose `commit` returns before its batch is durable, and a second
    /// task that makes committed batches durable with `durable` before their callers hear of
    /// them. `durable` takes the results of every batch committed since its last call (in
    /// commit order) and gives back what to answer: the same results once flushed, or errors
    /// if the flush failed. Batches are committed, flushed and answered in arrival order.
    pub(super) fn spawn_durable<F, Fut, D, DFut>(commit: F, durable: D) -> Self
    where
        F: Fn(Vec<J>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<R>> + Send,
        D: Fn(Vec<R>) -> DFut + Send + Sync + 'static,
        DFut: Future<Output = Vec<R>> + Send,
    {
        let (queue, mut jobs) = mpsc::unbounded_channel::<(J, oneshot::Sender<R>)>();
        let (committed, mut to_flush) = mpsc::unbounded_channel::<(oneshot::Sender<R>, R)>();
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(MAX_JOBS);
            while jobs.recv_many(&mut batch, MAX_JOBS).await > 0 {
                let (work, replies): (Vec<J>, Vec<oneshot::Sender<R>>) = batch.drain(..).unzip();
                let results = commit(work).await;
                for answer in replies.into_iter().zip(results) {
                    if committed.send(answer).is_err() {
                        return;
                    }
                }
            }
        });
        tokio::spawn(async move {
            let mut flush = Vec::new();
            // Whatever was committed while the last flush ran, in one flush.
            while to_flush.recv_many(&mut flush, FLUSH_MAX).await > 0 {
                let (replies, results): (Vec<oneshot::Sender<R>>, Vec<R>) = flush.drain(..).unzip();
                answer(replies, durable(results).await);
            }
        });
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
    async fn a_durable_writer_commits_the_next_batch_while_the_last_is_flushed_and_answers_only_flushed_jobs()
     {
        let committed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let flushed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (gate_tx, gate) = tokio::sync::watch::channel(false);
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
                let flushed = flushed.clone();
                move |results: Vec<u32>| {
                    let (flushed, flushing, mut gate) =
                        (flushed.clone(), flushing_tx.clone(), gate.clone());
                    async move {
                        let _ = flushing.send(());
                        // Every flush waits for the gate, so that commits pile up behind it.
                        let _ = gate.wait_for(|open| *open).await;
                        flushed.lock().expect("lock").push(results.clone());
                        results.into_iter().map(|r| r + 100).collect::<Vec<u32>>()
                    }
                }
            },
        );
        let first = tokio::spawn({
            let group = group.clone();
            async move { group.submit(1).await }
        });
        tokio::time::timeout(Duration::from_secs(5), flushing.recv())
            .await
            .expect("the first commit is being flushed");
        // While that flush waits, the writer commits more, each batch on its own.
        let mut later = Vec::new();
        for job in 2..=4 {
            later.push(tokio::spawn({
                let group = group.clone();
                async move { group.submit(job).await }
            }));
            let wanted = job as usize;
            tokio::time::timeout(Duration::from_secs(5), async {
                while committed.lock().expect("lock").len() < wanted {
                    tokio::task::yield_now().await;
                }
            })
            .await
            .expect("committed while the flush is under way");
        }
        assert!(!first.is_finished(), "answered before its flush");
        assert!(later.iter().all(|task| !task.is_finished()));
        assert!(flushed.lock().expect("lock").is_empty());
        gate_tx.send(true).expect("gate");
        assert_eq!(first.await.expect("task"), Some(101));
        for (job, task) in (2..=4).zip(later) {
            assert_eq!(task.await.expect("task"), Some(job + 100));
        }
        assert_eq!(
            *committed.lock().expect("lock"),
            [vec![1], vec![2], vec![3], vec![4]]
        );
        // The three committed during the first flush share the next one.
        assert_eq!(*flushed.lock().expect("lock"), [vec![1], vec![2, 3, 4]]);
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
