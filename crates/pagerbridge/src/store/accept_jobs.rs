//! What both stores' group commits of `accept` share: the job a caller queues, deciding a
//! batch of jobs in arrival order, and committing the batch together or, if that fails, each
//! job alone. The SQL that writes a batch is each store's own, and so is what a store prepares
//! of each event in the caller's task, off the writer (`P`: SQLite compresses the JSON).

use jiff::Timestamp;

use super::group_commit::GroupCommit;
use super::rows::acceptances;
use super::suppress::{Decider, SuppressionPolicy};
use super::{Acceptance, NewEvent, StoreError};

/// One `accept` call, waiting for the group commit.
#[derive(Debug)]
pub(super) struct AcceptJob<P = ()> {
    pub(super) events: Vec<NewEvent>,
    /// What the store prepared of each event, in the same order (one each: `submit` makes
    /// them).
    pub(super) prepared: Vec<P>,
    pub(super) policy: SuppressionPolicy,
    pub(super) now: Timestamp,
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
    };
    accepts
        .submit(job)
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
    let verdicts: Verdicts = jobs
        .iter()
        .map(|job| decider.decide(&job.events, &job.policy, job.now))
        .collect();
    // An incident's chain never changes, so the one decided last is every event's.
    let decider = &*decider;
    let queued = jobs
        .iter()
        .zip(&verdicts)
        .flat_map(|(job, verdicts)| {
            job.events
                .iter()
                .zip(&job.prepared)
                .zip(verdicts)
                .filter(|(_, verdict)| verdict.is_none())
                .map(move |((event, prepared), _)| Queued {
                    event,
                    prepared,
                    accepted_at: job.now,
                    chain: event
                        .dedup_key
                        .as_deref()
                        .and_then(|key| decider.chain(&event.target, key)),
                })
        })
        .collect();
    (verdicts, queued)
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
/// with `$commit` (an async function of `&[AcceptJob]` to each job's acceptances); if that
/// fails, each job alone, so that one bad request cannot fail the others. Evaluates to one
/// [`AcceptResult`] per job. A macro, not a function taking an async closure: the writer's
/// future must be `Send`, which the compiler cannot prove through a closure generic over the
/// slice's lifetime.
macro_rules! together_or_alone {
    ($jobs:expr, $commit:expr) => {{
        let jobs = $jobs;
        let mut results: Vec<$crate::store::accept_jobs::AcceptResult> = Vec::new();
        let mut grouped = false;
        if jobs.len() > 1 {
            match $commit(&jobs).await {
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
            for job in &jobs {
                let result = $commit(std::slice::from_ref(job))
                    .await
                    .map(|mut one: Vec<Vec<$crate::store::Acceptance>>| one.pop().unwrap_or_default());
                results.push(result);
            }
        }
        results
    }};
}
pub(super) use together_or_alone;
