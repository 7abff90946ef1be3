//! What both stores' group commits of `accept` share: the job a caller queues, deciding a
//! batch of jobs in arrival order, and committing the batch together or, if that fails, each
//! job alone. The SQL that writes a batch is each store's own, and so is what a store prepares
//! of each event in the caller's task, off the writer (`P`: SQLite compresses the JSON).

use std::ops::Range;

use jiff::Timestamp;
use tokio::sync::mpsc;

use super::group_commit::GroupCommit;
use super::rows::acceptances;
use super::suppress::{Decider, SuppressionPolicy};
use super::{Acceptance, EventParts, NewEvent, StoreError};

/// One `accept` call, waiting for the group commit.
#[derive(Debug)]
pub(super) struct AcceptJob<P = ()> {
    pub(super) events: Vec<NewEvent>,
    /// What the store prepared of each event, in the same order (one each: `submit` makes
    /// them).
    pub(super) prepared: Vec<P>,
    pub(super) policy: SuppressionPolicy,
    pub(super) now: Timestamp,
    /// The parts of the job still to come, when its caller makes them while the writer works
    /// on the first ([`submit_parts`]); `None` when every event is here. Only a store whose
    /// writer takes them ([`AcceptJob::receive`]) queues such a job.
    pub(super) more: Option<MoreParts<P>>,
}

/// A part of a job: its events and what the store prepared of each.
type Part<P> = (Vec<NewEvent>, Vec<P>);

/// The parts of a job still to come ([`AcceptJob::more`]).
#[derive(Debug)]
pub(super) struct MoreParts<P> {
    parts: mpsc::UnboundedReceiver<Part<P>>,
    /// How many are still to come.
    left: usize,
}

impl<P> AcceptJob<P> {
    /// Whether every event of the job is here.
    pub(super) fn complete(&self) -> bool {
        self.more.as_ref().is_none_or(|more| more.left == 0)
    }

    /// Waits for the job's next part, and adds it and any others already made to the job's
    /// events. Fails if the caller went away before making them all (its request was
    /// cancelled): the job must then be left out whole, since nobody was told of it.
    pub(super) async fn receive(&mut self) -> Result<(), StoreError> {
        let Some(more) = self.more.as_mut().filter(|more| more.left > 0) else {
            return Ok(());
        };
        let mut part = more.parts.recv().await;
        loop {
            let Some((events, prepared)) = part else {
                return Err(StoreError::Abandoned);
            };
            more.left -= 1;
            self.events.extend(events);
            self.prepared.extend(prepared);
            if more.left == 0 {
                return Ok(());
            }
            match more.parts.try_recv() {
                Ok(next) => part = Some(next),
                Err(mpsc::error::TryRecvError::Empty) => return Ok(()),
                Err(mpsc::error::TryRecvError::Disconnected) => part = None,
            }
        }
    }
}

/// The answer to one [`AcceptJob`].
pub(super) type AcceptResult = Result<Vec<Acceptance>, StoreError>;

/// Each job's verdicts, one per event: `None` to queue it, or why it is suppressed.
pub(super) type Verdicts = Vec<Vec<Option<&'static str>>>;

/// An `accept` through a store's group commit: its events queued as one job, and its answer.
pub(super) async fn submit<P: Send + 'static>(
    accepts: &GroupCommit<AcceptJob<P>, AcceptResult>,
    events: Vec<NewEvent>,
    prepare: impl Fn(&NewEvent) -> P,
    policy: &SuppressionPolicy,
    now: Timestamp,
) -> AcceptResult {
    let job = AcceptJob {
        prepared: events.iter().map(prepare).collect(),
        events,
        policy: *policy,
        now,
        more: None,
    };
    accepts
        .submit(job)
        .await
        .unwrap_or(Err(StoreError::Database(sqlx::Error::PoolClosed)))
}

/// An `accept` whose events are made a part at a time, through a store's group commit whose
/// writer takes a job's later parts as they come ([`AcceptJob::receive`]). When the writer
/// has nothing else to do, the first part is queued as soon as it is made and prepared, and
/// the writer loads and writes it while this task makes the next: the request's formatting
/// and the writer's work overlap instead of taking turns, all in one transaction still.
/// When other jobs are waiting, the job is queued whole once made: the writer has their
/// whole jobs to work on meanwhile, and one that waited for a part would hold them back.
pub(super) async fn submit_parts<P: Send + 'static>(
    accepts: &GroupCommit<AcceptJob<P>, AcceptResult>,
    parts: EventParts<'_>,
    prepare: impl Fn(&NewEvent) -> P,
    policy: &SuppressionPolicy,
    now: Timestamp,
) -> AcceptResult {
    if parts.len() < 2 || !accepts.idle() {
        let events = parts.into_iter().flat_map(|make| make()).collect();
        return submit(accepts, events, prepare, policy, now).await;
    }
    let mut parts = parts.into_iter();
    let left = parts.len() - 1;
    let events = parts.next().map(|make| make()).unwrap_or_default();
    let (send, receive) = mpsc::unbounded_channel();
    let answer = accepts.enqueue(AcceptJob {
        prepared: events.iter().map(&prepare).collect(),
        events,
        policy: *policy,
        now,
        more: Some(MoreParts {
            parts: receive,
            left,
        }),
    });
    // The writer, woken by this task, waits on this runtime thread until the task yields:
    // tokio runs a task woken by another next on the same thread, and no other thread takes
    // it from there. So the task yields after handing the writer each part, before it makes
    // the next: the writer starts on the part, and its statements run on SQLite's thread
    // while this one makes the next.
    tokio::task::yield_now().await;
    for make in parts {
        let events = make();
        let prepared = events.iter().map(&prepare).collect();
        if send.send((events, prepared)).is_err() {
            // The writer is gone: the answer says so.
            break;
        }
        tokio::task::yield_now().await;
    }
    answer
        .await
        .unwrap_or(Err(StoreError::Database(sqlx::Error::PoolClosed)))
}

/// Every event of `jobs`, in arrival order.
pub(super) fn events<P>(jobs: &[AcceptJob<P>]) -> impl Iterator<Item = &NewEvent> {
    jobs.iter().flat_map(|job| &job.events)
}

/// An event to queue.
#[derive(Debug)]
pub(super) struct Queued<'a, P = ()> {
    pub(super) event: &'a NewEvent,
    /// What the store prepared of it.
    pub(super) prepared: &'a P,
    pub(super) accepted_at: Timestamp,
    /// Its incident's chain; `None` for change events, which have no incident.
    pub(super) chain: Option<i64>,
}

/// The suppression rules applied to each job in turn, so that a later request sees what an
/// earlier one of the batch did: each job's verdicts, and the events to queue in order.
pub(super) fn decide<'a, P>(
    decider: &mut Decider,
    jobs: &'a [AcceptJob<P>],
) -> (Verdicts, Vec<Queued<'a, P>>) {
    let mut verdicts: Verdicts = vec![Vec::new(); jobs.len()];
    let spans: Vec<Span> = (0..jobs.len())
        .map(|job| (job, 0..jobs[job].events.len()))
        .collect();
    let queued = decide_spans(decider, jobs, &spans, &mut verdicts);
    (verdicts, queued)
}

/// Events of a batch's jobs, as the index of a job and a range of its events.
pub(super) type Span = (usize, Range<usize>);

/// [`decide`] for some of the jobs' events, `spans` in arrival order, for a writer that
/// decides and writes a batch a part at a time: each span's verdicts are added to its job's,
/// and the events to queue are given in order.
pub(super) fn decide_spans<'a, P>(
    decider: &mut Decider,
    jobs: &'a [AcceptJob<P>],
    spans: &[Span],
    verdicts: &mut Verdicts,
) -> Vec<Queued<'a, P>> {
    let decided: Vec<Vec<Option<&'static str>>> = spans
        .iter()
        .map(|(job, range)| {
            let job = &jobs[*job];
            decider.decide(&job.events[range.clone()], &job.policy, job.now)
        })
        .collect();
    // An incident's chain never changes, so the one decided last is every event's.
    let decider = &*decider;
    let mut queued = Vec::new();
    for ((index, range), decided) in spans.iter().zip(decided) {
        let job = &jobs[*index];
        for ((event, prepared), verdict) in job.events[range.clone()]
            .iter()
            .zip(&job.prepared[range.clone()])
            .zip(&decided)
        {
            if verdict.is_none() {
                queued.push(Queued {
                    event,
                    prepared,
                    accepted_at: job.now,
                    chain: event
                        .dedup_key
                        .as_deref()
                        .and_then(|key| decider.chain(&event.target, key)),
                });
            }
        }
        verdicts[*index].extend(decided);
    }
    queued
}

/// Each job's acceptances, given the ids its queued events were given, in order.
pub(super) fn answers(
    verdicts: Verdicts,
    ids: Vec<i64>,
) -> Result<Vec<Vec<Acceptance>>, StoreError> {
    let mut ids = ids.into_iter();
    verdicts
        .into_iter()
        .map(|verdicts| acceptances(verdicts, &mut ids))
        .collect()
}

/// Commits the jobs that queued up together (`$jobs`, a `Vec<AcceptJob>`) in one transaction
/// with `$commit` (an async function of `&mut [AcceptJob]` to each job's acceptances; it may
/// add a job's later parts to it); if that
/// fails, each job alone, so that one bad request cannot fail the others. Evaluates to one
/// [`AcceptResult`] per job. A macro, not a function taking an async closure: the writer's
/// future must be `Send`, which the compiler cannot prove through a closure generic over the
/// slice's lifetime.
macro_rules! together_or_alone {
    ($jobs:expr, $commit:expr) => {{
        let mut jobs = $jobs;
        let mut results: Vec<$crate::store::accept_jobs::AcceptResult> = Vec::new();
        let mut grouped = false;
        if jobs.len() > 1 {
            match $commit(&mut jobs).await {
                Ok(answers) => {
                    results.extend(answers.into_iter().map(Ok));
                    grouped = true;
                }
                Err(error) => {
                    tracing::debug!(%error, requests = jobs.len(), "a group commit failed; committing its requests one by one");
                }
            }
        }
        if !grouped {
            for job in &mut jobs {
                let result = $commit(std::slice::from_mut(job))
                    .await
                    .map(|mut one: Vec<Vec<$crate::store::Acceptance>>| one.pop().unwrap_or_default());
                results.push(result);
            }
        }
        results
    }};
}
pub(super) use together_or_alone;
