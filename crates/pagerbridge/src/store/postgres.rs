//! The PostgreSQL store: one database shared by several replicas (DESIGN.md, "Scale").
//!
//! It mirrors [`SqliteStore`](super::sqlite::SqliteStore) query for query; what differs is
//! concurrency. SQLite has one writer, so its read-decide-write transactions are serial for
//! free. Here several replicas write at once, so the read-decide-write paths serialise
//! explicitly with transaction-scoped advisory locks (released at commit or rollback, so a
//! crashed replica never leaves one behind):
//!
//! - `accept` locks every incident of the requests it commits together (group commit, see
//!   [`PostgresStore::connect`]) before reading their state, in one global order (the lock
//!   key's value) so that two requests naming the same incidents in different orders cannot
//!   deadlock. A lock, unlike `SELECT … FOR UPDATE`, also covers an incident that
//!   has no row yet — the case of two replicas receiving the first trigger at once. Ids are
//!   drawn under the lock, so within an incident the acceptance order is also the commit order
//!   and `next_eligible` never sees a later event of an incident before an earlier one.
//! - `take_budget` locks the routing key's budget (by its id), so the count-then-insert of the sliding window
//!   is atomic across replicas and the window is never overrun.
//! - `mark_delivered` takes the incident's lock too, before it notes `last_sent_at`: `accept`
//!   rewrites the whole incident row from what it read, and would otherwise put back an older
//!   `last_sent_at` committed in between.
//! - `replay` and `drop_dead` lock the incidents of the dead letters they select (same lock,
//!   same order) and re-read them under the locks: a replay decides from the incident's other
//!   events whether it is superseded, and `mark_delivered` of a newer event must not slip in
//!   between that decision and its commit.
//! - `expire_incidents` skips incident rows another transaction holds instead of waiting, so
//!   it cannot deadlock with an `accept` writing several incidents in another order.
//!
//! A replica can stop in the middle of one of those transactions and hold its locks: paused
//! (SIGSTOP, a stalled VM), or cut off with the server still waiting for its next statement.
//! Every session therefore sets `idle_in_transaction_session_timeout` ([`IDLE_IN_TRANSACTION`]):
//! the server ends it and rolls back, the locks go, and the others carry on (a lane waiting to
//! take the lane's lease over, an `accept` of the same incident) well within the lease's time
//! to live. The stalled replica finds its connection gone when it wakes.
//!
//! Those transactions begin `ISOLATION LEVEL READ COMMITTED` explicitly: each statement then
//! reads what was committed before it, so the state read after a lock is granted includes the
//! previous holder's writes. A server default of REPEATABLE READ would read a snapshot from
//! before the wait.

use std::borrow::Cow;
use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{FromRow, Postgres, Row, Transaction};

use super::accept_jobs::{self, AcceptJob, AcceptResult};
use super::budget;
use super::group_commit::GroupCommit;
use super::leases as lease_sql;
use super::rows::{
    ReplayCandidate, SettledRow, dead_letter_from_row, dedup_keys_by_target, incident_from_row,
    lane_stats_from_row, latest_keys, notice_from_row, queued_from_row,
};
use super::suppress::{self, IncidentSource, IncidentState, SuppressionPolicy};
use super::{
    Acceptance, Action, BudgetDecision, BudgetId, BudgetSecret, DeadLetter, DeadLetterFilter,
    DeadLetters, Expired, FallbackNotices, Fence, FingerprintLookup, IncidentFilter, Incidents,
    JsonText, LaneStats, NewEvent, Notice, NoticeKind, Outbox, QueuedEvent, ReplayReport,
    SUPERSEDED_IN_FLIGHT, SendBudget, StoreError, severity_rank, to_millis,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// [`Outbox::fold_counts`]: the maintained counts are rows of changes here (see migration
/// 0008), which this sums into one row per (target, status), dropping those at zero. A
/// transaction adding changes meanwhile is not disturbed: the delete takes only the rows it
/// sees, and the sum of all rows stays the same at every commit.
const FOLD_COUNTS: [&str; 2] = [
    "WITH gone AS (DELETE FROM outbox_counts RETURNING target, status, n)
     INSERT INTO outbox_counts (target, status, n)
         SELECT target, status, SUM(n) FROM gone GROUP BY target, status HAVING SUM(n) <> 0",
    "WITH gone AS (DELETE FROM incident_counts RETURNING status, n)
     INSERT INTO incident_counts (status, n)
         SELECT status, SUM(n) FROM gone GROUP BY status HAVING SUM(n) <> 0",
];

/// How long the server lets a session sit idle inside a transaction before it ends it (see the
/// module documentation). Our transactions send their statements back to back, so a second
/// of silence means the replica stopped; it is below the shortest `delivery.lease_ttl` (2 s),
/// so the locks of a stalled lane owner are gone before its lease runs out.
const IDLE_IN_TRANSACTION: &str = "SET idle_in_transaction_session_timeout = '1s'";

/// How long a request waits for a connection from the pool before it fails (503 for ingest):
/// with the database down, a sender hears so promptly and retries, instead of its request
/// hanging for sqlx's default of 30 s.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// How the locked transactions begin; see the module documentation.
const BEGIN_READ_COMMITTED: &str = "BEGIN ISOLATION LEVEL READ COMMITTED";

/// Takes the locks of incidents, given their [`incident_lock_key`]s (`$1`), each once, in
/// ascending order of its `hashtext`. The first key names the lock space, so incident and
/// budget locks never collide with each other. One statement: PostgreSQL calls a volatile
/// function of the select list after the ORDER BY, so the locks are taken in order (EXPLAIN
/// VERBOSE shows the call above the sort).
const LOCK_INCIDENTS: &str = "SELECT pg_advisory_xact_lock(hashtext('pagerbridge/incident'), h)
     FROM (SELECT DISTINCT hashtext(k) AS h FROM unnest($1::text[]) AS k) AS keys
     ORDER BY h";

/// Writes what an `accept` batch decided in one statement (one round trip): the queued events
/// (`$1`…`$8` and their chains `$19`) into the outbox and the changed incidents (`$9`…`$18`,
/// `$20` and `$21`, each once) over their rows (an incident's chain is written once, when it is
/// first stored), and returns the new outbox ids in ascending order, which is the events' order (rows
/// are inserted in the order UNNEST yields them, and ids only grow). The rows travel as one
/// array per column, so the text is the same for any number of rows and each connection
/// prepares it once; a multi-row `VALUES` list is a new statement for every row count, parsed
/// and planned again.
const WRITE_ACCEPTED: &str = "WITH queued AS (
         INSERT INTO outbox (target, dedup_key, action, severity_rank, event, alert, fingerprint,
                             accepted_at, chain)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[],
                              $6::text[], $7::text[], $8::bigint[], $19::bigint[])
         RETURNING id),
     changed AS (
         INSERT INTO incidents (target, dedup_key, fingerprint, status, last_payload_hash,
                                last_trigger_at, last_sent_at, updated_at, source, first_event_at,
                                chain, labels_key)
         SELECT * FROM UNNEST($9::text[], $10::text[], $11::text[], $12::text[], $13::text[],
                              $14::bigint[], $15::bigint[], $16::bigint[], $17::text[],
                              $18::bigint[], $20::bigint[], $21::boolean[])
         ON CONFLICT (target, dedup_key) DO UPDATE SET
             fingerprint = excluded.fingerprint, labels_key = excluded.labels_key,
             status = excluded.status,
             last_payload_hash = excluded.last_payload_hash,
             last_trigger_at = excluded.last_trigger_at, last_sent_at = excluded.last_sent_at,
             updated_at = excluded.updated_at, source = excluded.source,
             first_event_at = excluded.first_event_at)
     SELECT id FROM queued ORDER BY id";

/// The PostgreSQL-backed [`Store`].
#[derive(Clone, Debug)]
pub struct PostgresStore {
    pool: PgPool,
    /// `accept`s go through [`ACCEPT_WRITERS`] writers per replica, so that requests arriving
    /// while they are busy share a transaction and its commit (one WAL flush).
    accepts: GroupCommit<AcceptJob, AcceptResult>,
}

impl PostgresStore {
    /// Connects to the database at `url` (a `postgres://` URL) and migrates it. Replicas
    /// starting together are safe: the migrator serialises them with its own lock.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::query(IDLE_IN_TRANSACTION).execute(conn).await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        let accepts = GroupCommit::spawn_writers(ACCEPT_WRITERS, {
            let pool = pool.clone();
            move |jobs| {
                let pool = pool.clone();
                async move {
                    let mut results = Vec::with_capacity(jobs.len());
                    for batch in lock_sized(jobs) {
                        results.extend(accept_jobs::together_or_alone!(batch, |batch| {
                            Self::accept_batch(&pool, batch)
                        }));
                    }
                    results
                }
            }
        });
        Ok(Self { pool, accepts })
    }

    /// The events of `jobs` in one transaction, in five round trips whatever their number:
    /// begin, the incidents locked, loaded, the rows written, commit (fully synchronous: the
    /// callers answer 2xx after it). The rules are applied in memory, job after job.
    async fn accept_batch(
        pool: &PgPool,
        jobs: &[AcceptJob],
    ) -> Result<Vec<Vec<Acceptance>>, StoreError> {
        let mut tx = pool.begin_with(BEGIN_READ_COMMITTED).await?;
        Self::lock_incidents(&mut tx, accept_jobs::events(jobs)).await?;
        let loaded = Self::load_incidents(&mut tx, accept_jobs::events(jobs)).await?;
        let mut decider = suppress::Decider::new(loaded);
        let (verdicts, queued) = accept_jobs::decide(&mut decider, jobs);
        let ids = Self::write_accepted(&mut tx, &queued, &decider.into_changed()).await?;
        tx.commit().await?;
        accept_jobs::answers(verdicts, ids)
    }

    /// Runs [`WRITE_ACCEPTED`]: the ids of the queued events, in order.
    async fn write_accepted(
        tx: &mut Transaction<'_, Postgres>,
        queued: &[accept_jobs::Queued<'_>],
        changed: &[IncidentState],
    ) -> Result<Vec<i64>, StoreError> {
        if queued.is_empty() && changed.is_empty() {
            return Ok(Vec::new());
        }
        let events = || queued.iter().map(|queued| queued.event);
        let ids = sqlx::query_scalar(WRITE_ACCEPTED)
            .bind(events().map(|e| e.target.as_str()).collect::<Vec<_>>())
            .bind(events().map(|e| e.dedup_key.as_deref()).collect::<Vec<_>>())
            .bind(events().map(|e| e.action.as_str()).collect::<Vec<_>>())
            .bind(
                events()
                    .map(|e| severity_rank(e.severity))
                    .collect::<Vec<_>>(),
            )
            .bind(events().map(|e| e.event.as_str()).collect::<Vec<_>>())
            .bind(
                events()
                    .map(|e| e.alert.as_ref().map(JsonText::as_str))
                    .collect::<Vec<_>>(),
            )
            .bind(
                events()
                    .map(|e| e.fingerprint.as_deref())
                    .collect::<Vec<_>>(),
            )
            .bind(
                queued
                    .iter()
                    .map(|queued| to_millis(queued.accepted_at))
                    .collect::<Vec<_>>(),
            )
            .bind(
                changed
                    .iter()
                    .map(|s| s.target.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                changed
                    .iter()
                    .map(|s| s.dedup_key.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                changed
                    .iter()
                    .map(|s| s.fingerprint.as_deref())
                    .collect::<Vec<_>>(),
            )
            .bind(
                changed
                    .iter()
                    .map(|s| s.status.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                changed
                    .iter()
                    .map(|s| s.last_payload_hash.as_deref())
                    .collect::<Vec<_>>(),
            )
            .bind(
                changed
                    .iter()
                    .map(|s| s.last_trigger_at.map(to_millis))
                    .collect::<Vec<_>>(),
            )
            .bind(
                changed
                    .iter()
                    .map(|s| s.last_sent_at.map(to_millis))
                    .collect::<Vec<_>>(),
            )
            .bind(
                changed
                    .iter()
                    .map(|s| to_millis(s.updated_at))
                    .collect::<Vec<_>>(),
            )
            .bind(
                changed
                    .iter()
                    .map(|s| s.source.map(IncidentSource::as_str))
                    .collect::<Vec<_>>(),
            )
            .bind(
                changed
                    .iter()
                    .map(|s| s.first_event_at.map(to_millis))
                    .collect::<Vec<_>>(),
            )
            .bind(queued.iter().map(|queued| queued.chain).collect::<Vec<_>>())
            .bind(changed.iter().map(|s| s.chain).collect::<Vec<_>>())
            .bind(changed.iter().map(|s| s.labels_key).collect::<Vec<_>>())
            .fetch_all(&mut **tx)
            .await?;
        Ok(ids)
    }

    /// A transaction for the bookkeeping of sends (a budget slot, its settling, a delivered
    /// or failed event): its commit does not wait for PostgreSQL's WAL flush
    /// (`synchronous_commit = off` for this transaction only), so no fsync stands between an
    /// accepted alert's commit and its request to PagerDuty. The bridge dying loses nothing
    /// (PostgreSQL has the commit); PostgreSQL itself crashing may lose its last such commits
    /// (a fraction of a second): a request or two over the budget, an event sent again
    /// (PagerDuty dedups it). Accepts stay fully synchronous.
    async fn begin_relaxed(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        let mut tx = self.pool.begin_with(BEGIN_READ_COMMITTED).await?;
        sqlx::query("SET LOCAL synchronous_commit = off")
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    async fn load_incident(
        conn: &mut PgConnection,
        target: &str,
        dedup_key: &str,
    ) -> Result<Option<IncidentState>, StoreError> {
        let row = sqlx::query(super::incidents::ONE)
            .bind(target)
            .bind(dedup_key)
            .fetch_optional(conn)
            .await?;
        row.as_ref().map(incident_from_row).transpose()
    }

    /// The stored states of the incidents `events` name, by (target, dedup key): one query
    /// per target (a request rarely spans more than one). The caller holds their locks.
    async fn load_incidents(
        tx: &mut Transaction<'_, Postgres>,
        events: impl Iterator<Item = &NewEvent>,
    ) -> Result<HashMap<(String, String), IncidentState>, StoreError> {
        let mut loaded = HashMap::new();
        for (target, keys) in dedup_keys_by_target(events) {
            let keys: Vec<&str> = keys.into_iter().collect();
            let rows = sqlx::query(concat!(
                "SELECT ",
                super::rows::incident_columns!(),
                " FROM incidents WHERE target = $1 AND dedup_key = ANY($2)"
            ))
            .bind(target)
            .bind(&keys)
            .fetch_all(&mut **tx)
            .await?;
            for row in &rows {
                let state = incident_from_row(row)?;
                loaded.insert((state.target.clone(), state.dedup_key.clone()), state);
            }
        }
        Ok(loaded)
    }

    /// Locks every incident the events name, each once, in ascending order of the lock's key,
    /// so that any two transactions wait for each other in one order and cannot deadlock.
    async fn lock_incidents(
        tx: &mut Transaction<'_, Postgres>,
        events: impl Iterator<Item = &NewEvent>,
    ) -> Result<(), StoreError> {
        let keys: Vec<String> = events
            .filter_map(|e| Some(incident_lock_key(&e.target, e.dedup_key.as_deref()?)))
            .collect();
        Self::lock_keys(tx, keys).await
    }

    /// Locks these incidents' keys ([`incident_lock_key`]) as [`Self::lock_incidents`] does.
    async fn lock_keys(
        tx: &mut Transaction<'_, Postgres>,
        keys: Vec<String>,
    ) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        sqlx::query(LOCK_INCIDENTS)
            .bind(&keys)
            .fetch_all(&mut **tx)
            .await?;
        Ok(())
    }
}

/// How many `accept` transactions a replica runs at once. PostgreSQL runs them in parallel
/// (the incident locks order only those that share an incident), and a single writer would
/// leave the server idle during each of its round trips: measured at 4 connections, one writer
/// ingested less than no group commit at all (2,613 against 3,284 alerts/s), four 4,530
/// (docs/performance.md). Requests beyond these share the next free writer's transaction.
/// Well under the pool's 10 connections, so lanes and the admin API still get one.
const ACCEPT_WRITERS: usize = 4;

/// The most events whose incidents one group-commit transaction locks. Advisory locks take
/// slots in the server's shared lock table, which all sessions share and which holds about
/// `max_locks_per_transaction × max_connections` (6,400 by default; some more fit until shared
/// memory runs out): a batch of 64 large requests could exhaust it. A single request above this
/// still goes alone, as before group commit.
const MAX_LOCKS_PER_BATCH: usize = 2_000;

/// `jobs` cut into consecutive batches that lock at most [`MAX_LOCKS_PER_BATCH`] incidents
/// each (a larger job makes a batch of its own), in arrival order.
fn lock_sized(jobs: Vec<AcceptJob>) -> Vec<Vec<AcceptJob>> {
    let mut batches: Vec<Vec<AcceptJob>> = Vec::new();
    let mut locks = 0;
    for job in jobs {
        let needs = job.events.len();
        match batches.last_mut() {
            Some(batch) if locks + needs <= MAX_LOCKS_PER_BATCH => {
                locks += needs;
                batch.push(job);
            }
            _ => {
                locks = needs;
                batches.push(vec![job]);
            }
        }
    }
    batches
}

/// What an incident's advisory lock is derived from. Targets containing `/` can make two
/// incidents share a lock; that only serialises them, it never lets one through unlocked.
fn incident_lock_key(target: &str, dedup_key: &str) -> String {
    format!("{target}/{dedup_key}")
}

/// PostgreSQL `TEXT` cannot hold NUL, which SQLite stores fine; error texts come from the
/// network, and refusing to record one would wedge its event, so NUL becomes U+FFFD there.
fn storable_text(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(text)
    }
}

/// The columns of a [`QueuedEvent`], as a macro so queries stay `&'static str` (sqlx refuses
/// SQL built at run time).
macro_rules! queued_columns {
    () => {
        "id, target, dedup_key, action, severity_rank, event, alert, fingerprint, accepted_at, \
         attempts, last_error"
    };
}

/// The columns of a [`DeadLetter`], as a macro for the same reason as `queued_columns!`.
macro_rules! dead_letter_columns {
    () => {
        "id, target, dedup_key, action, event, accepted_at, dead_at, dead_reason, attempts, \
         superseded_by, dropped_at, drop_reason"
    };
}

/// The conditions of a [`DeadLetterFilter`], bound by `bind_filter` as `$1`…`$7`. `$7` is
/// false for an empty filter, which therefore selects nothing.
macro_rules! dead_filter {
    () => {
        "($1::bigint[] IS NULL OR id = ANY($1)) AND ($2::text IS NULL OR target = $2)
         AND ($3::text IS NULL OR dedup_key = $3) AND ($4::text IS NULL OR action = $4)
         AND ($5::bigint IS NULL OR dead_at >= $5) AND ($6::bigint IS NULL OR dead_at < $6)
         AND $7::boolean"
    };
}

type PgQuery<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;

fn bind_filter<'q>(query: PgQuery<'q>, filter: &DeadLetterFilter) -> PgQuery<'q> {
    query
        .bind(filter.ids.clone())
        .bind(
            filter
                .target
                .as_deref()
                .map(|t| storable_text(t).into_owned()),
        )
        .bind(
            filter
                .dedup_key
                .as_deref()
                .map(|k| storable_text(k).into_owned()),
        )
        .bind(filter.action.map(Action::as_str))
        .bind(filter.dead_since.map(to_millis))
        .bind(filter.dead_before.map(to_millis))
        .bind(!filter.is_empty())
}

impl PostgresStore {
    /// The ids of the dead letters the filter selects, after locking their incidents; the
    /// caller re-reads them under the locks (a concurrent replay may have moved some).
    async fn lock_dead_letters(
        tx: &mut Transaction<'_, Postgres>,
        filter: &DeadLetterFilter,
    ) -> Result<Vec<i64>, StoreError> {
        let sql = concat!(
            "SELECT id, target, dedup_key FROM outbox WHERE status = 'dead' AND ",
            dead_filter!(),
            " ORDER BY id"
        );
        let rows = bind_filter(sqlx::query(sql), filter)
            .fetch_all(&mut **tx)
            .await?;
        let mut ids = Vec::with_capacity(rows.len());
        let mut keys = Vec::new();
        for row in &rows {
            ids.push(row.try_get("id")?);
            let target: String = row.try_get("target")?;
            if let Some(key) = row.try_get::<Option<String>, _>("dedup_key")? {
                keys.push(incident_lock_key(&target, &key));
            }
        }
        Self::lock_keys(tx, keys).await?;
        Ok(ids)
    }
}

#[async_trait]
impl Outbox for PostgresStore {
    async fn accept(
        &self,
        events: Vec<NewEvent>,
        policy: &SuppressionPolicy,
        now: Timestamp,
    ) -> Result<Vec<Acceptance>, StoreError> {
        accept_jobs::submit(&self.accepts, events, |_| (), policy, now).await
    }

    async fn dedup_keys_for_fingerprints(
        &self,
        target: &str,
        alerts: &[FingerprintLookup<'_>],
    ) -> Result<HashMap<String, String>, StoreError> {
        if alerts.is_empty() {
            return Ok(HashMap::new());
        }
        let fingerprints: Vec<&str> = alerts.iter().map(|a| a.fingerprint).collect();
        let labels_keys: Vec<&str> = alerts.iter().filter_map(|a| a.labels_key).collect();
        // The conditions repeat the partial index's, so that the planner may use it.
        let mut candidates: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT fingerprint, dedup_key, updated_at FROM incidents
             WHERE target = $1 AND fingerprint = ANY($2)
               AND fingerprint IS NOT NULL AND labels_key IS NOT TRUE
             ORDER BY updated_at, dedup_key",
        )
        .bind(target)
        .bind(&fingerprints)
        .fetch_all(&self.pool)
        .await?;
        if !labels_keys.is_empty() {
            candidates.extend(
                sqlx::query_as::<_, (String, String, i64)>(
                    "SELECT fingerprint, dedup_key, updated_at FROM incidents
                     WHERE target = $1 AND dedup_key = ANY($2) AND labels_key
                       AND fingerprint = ANY($3)",
                )
                .bind(target)
                .bind(&labels_keys)
                .bind(&fingerprints)
                .fetch_all(&self.pool)
                .await?,
            );
        }
        Ok(latest_keys(candidates))
    }

    async fn next_eligible(&self, target: &str) -> Result<Option<QueuedEvent>, StoreError> {
        // Eligible: the oldest pending event of its incident. Asked as a MIN, which is read
        // from the first entry of `outbox_chain` whatever the planner knows; as a NOT
        // EXISTS, PostgreSQL planned a scan of the whole lane per candidate on a table not yet
        // analyzed (77 ms at 100,000 queued, see docs/performance.md, "Backlog").
        let sql = concat!(
            "SELECT ",
            queued_columns!(),
            " FROM outbox o
             WHERE o.target = $1 AND o.status = 'pending'
               AND (o.dedup_key IS NULL
                    OR o.id = (SELECT MIN(p.id) FROM outbox p
                               WHERE p.target = o.target AND p.chain = o.chain
                                 AND p.dedup_key = o.dedup_key AND p.status = 'pending'))
             ORDER BY o.severity_rank DESC, o.id ASC
             LIMIT 1"
        );
        let row = sqlx::query(sql)
            .bind(target)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(queued_from_row).transpose()
    }

    async fn mark_delivered(&self, id: i64, now: Timestamp) -> Result<(), StoreError> {
        let mut tx = self.begin_relaxed().await?;
        let incident: Option<(String, Option<String>, Option<i64>)> =
            sqlx::query_as("DELETE FROM outbox WHERE id = $1 RETURNING target, dedup_key, chain")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some((target, Some(dedup_key), chain)) = incident {
            // Under the incident's lock, so a concurrent accept's rewrite of the row does not
            // put back the `last_sent_at` it read (see the module documentation).
            sqlx::query(
                "SELECT pg_advisory_xact_lock(hashtext('pagerbridge/incident'), hashtext($1))",
            )
            .bind(incident_lock_key(&target, &dedup_key))
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE incidents SET last_sent_at = $1 WHERE target = $2 AND dedup_key = $3",
            )
            .bind(to_millis(now))
            .bind(&target)
            .bind(&dedup_key)
            .execute(&mut *tx)
            .await?;
            // Older dead letters of the incident are superseded now (see `DeadLetters::replay`). An
            // older *pending* event exists only if it was replayed while this one was in
            // flight: sending it now would regress PagerDuty, so it goes back to dead.
            sqlx::query(
                "UPDATE outbox SET superseded_by = $1
                 WHERE target = $2 AND dedup_key = $3 AND status = 'dead'
                   AND status <> 'pending' AND id < $1",
            )
            .bind(id)
            .bind(&target)
            .bind(&dedup_key)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE outbox SET status = 'dead', superseded_by = $1, dead_at = $4,
                        dead_reason = $5, dead_notified_at = $4
                 WHERE target = $2 AND chain = $6 AND dedup_key = $3 AND status = 'pending'
                   AND id < $1",
            )
            .bind(id)
            .bind(&target)
            .bind(&dedup_key)
            .bind(to_millis(now))
            .bind(SUPERSEDED_IN_FLIGHT)
            .bind(chain)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn record_failure(&self, id: i64, error: &str, now: Timestamp) -> Result<(), StoreError> {
        let mut tx = self.begin_relaxed().await?;
        sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, last_error = $1,
                    first_failed_at = COALESCE(first_failed_at, $2)
             WHERE id = $3",
        )
        .bind(storable_text(error))
        .bind(to_millis(now))
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn dead_letter(&self, id: i64, reason: &str, now: Timestamp) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE outbox SET status = 'dead', dead_at = $1, dead_reason = $2
             WHERE id = $3 AND status = 'pending'",
        )
        .bind(to_millis(now))
        .bind(storable_text(reason))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn pending(
        &self,
        target: Option<&str>,
        limit: u32,
    ) -> Result<Vec<QueuedEvent>, StoreError> {
        let sql = concat!(
            "SELECT ",
            queued_columns!(),
            " FROM outbox WHERE status = 'pending' AND ($1::text IS NULL OR target = $1)
             ORDER BY id LIMIT $2"
        );
        let rows = sqlx::query(sql)
            .bind(target)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(queued_from_row).collect()
    }

    async fn lane_stats(&self) -> Result<Vec<LaneStats>, StoreError> {
        let rows = sqlx::query(super::outbox::LANE_STATS)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(lane_stats_from_row).collect()
    }

    async fn fold_counts(&self) -> Result<(), StoreError> {
        for fold in FOLD_COUNTS {
            sqlx::query(fold).execute(&self.pool).await?;
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

#[async_trait]
impl SendBudget for PostgresStore {
    async fn budget_secret(&self) -> Result<BudgetSecret, StoreError> {
        let stored: Vec<u8> = sqlx::query_scalar(budget::TAKE_SECRET)
            .bind(BudgetSecret::generate().as_bytes().as_slice())
            .fetch_one(&self.pool)
            .await?;
        budget::stored_secret(&stored)
    }

    async fn take_budget(
        &self,
        fence: Option<&Fence>,
        budget: &BudgetId,
        limit: u32,
        window: Duration,
        now: Timestamp,
    ) -> Result<BudgetDecision, StoreError> {
        let since = budget::window_start(now, window);
        let mut tx = self.begin_relaxed().await?;
        // `FOR SHARE` holds the lease row until we commit: a takeover (an update of that row)
        // waits for this slot, or this check sees the takeover. Either way no slot is taken
        // after another replica owns the lane.
        if !super::leases::fence_holds!(lease_sql::FENCE_HOLDS_FOR_SHARE, fence, now, &mut *tx) {
            return Ok(BudgetDecision::Fenced);
        }
        // Every replica counts and inserts under this lock: without it two could both see
        // room for the last request and both take it.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('pagerbridge/budget'), hashtext($1))")
            .bind(budget.as_str())
            .execute(&mut *tx)
            .await?;
        // A slot exactly one window old still counts: err on the side of PagerDuty's limit.
        sqlx::query("DELETE FROM budget_sends WHERE budget = $1 AND sent_at < $2")
            .bind(budget.as_str())
            .bind(since)
            .execute(&mut *tx)
            .await?;
        let (used, oldest, in_flight): (i64, Option<i64>, bool) = sqlx::query_as(
            "SELECT COUNT(*), MIN(CASE WHEN sent_at <= $2 THEN sent_at END),
                    COALESCE(BOOL_OR(sent_at > $2), false)
                 FROM budget_sends WHERE budget = $1",
        )
        .bind(budget.as_str())
        .bind(to_millis(now))
        .fetch_one(&mut *tx)
        .await?;
        let decision = if used < i64::from(limit) {
            let slot: i64 = sqlx::query_scalar(
                "INSERT INTO budget_sends (budget, sent_at) VALUES ($1, $2) RETURNING id",
            )
            .bind(budget.as_str())
            .bind(budget::in_flight_until(now, window))
            .fetch_one(&mut *tx)
            .await?;
            BudgetDecision::Granted { slot }
        } else {
            BudgetDecision::WaitUntil(budget::when_full(oldest, in_flight, now, window)?)
        };
        tx.commit().await?;
        Ok(decision)
    }

    async fn settle_budget(&self, slot: i64, at: Timestamp) -> Result<(), StoreError> {
        // No budget lock: before and after, the slot counts at least as long as PagerDuty
        // counts its request, so whichever commits first, the window is not overrun.
        let mut tx = self.begin_relaxed().await?;
        sqlx::query("UPDATE budget_sends SET sent_at = $1 WHERE id = $2")
            .bind(to_millis(at))
            .bind(slot)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn release_budget(&self, slot: i64) -> Result<(), StoreError> {
        // No budget lock, as for a settle: the window only loses a slot no request holds.
        let mut tx = self.begin_relaxed().await?;
        sqlx::query(budget::RELEASE)
            .bind(slot)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn budget_used(
        &self,
        budget: &BudgetId,
        window: Duration,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        Ok(budget::budget_used!(&self.pool, budget, window, now))
    }
}

// The same statements on both stores; see `leases.rs`.
super::leases::impl_leases!(PostgresStore);

#[async_trait]
impl Incidents for PostgresStore {
    async fn incident(
        &self,
        target: &str,
        dedup_key: &str,
    ) -> Result<Option<IncidentState>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Self::load_incident(&mut conn, target, dedup_key).await
    }

    async fn open_incidents(&self) -> Result<u64, StoreError> {
        let count: i64 = sqlx::query_scalar(super::outbox::OPEN_INCIDENTS)
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn open_incidents_from(
        &self,
        source: IncidentSource,
    ) -> Result<Vec<IncidentState>, StoreError> {
        let rows = sqlx::query(super::incidents::OPEN_FROM)
            .bind(source.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(incident_from_row).collect()
    }

    async fn list_incidents(
        &self,
        filter: &IncidentFilter,
    ) -> Result<Vec<IncidentState>, StoreError> {
        Ok(super::incidents::list_incidents!(&self.pool, filter))
    }

    async fn expire_incidents(&self, cutoff: Timestamp) -> Result<u64, StoreError> {
        // Rows locked right now belong to an `accept` or `mark_delivered` touching them, so they
        // are about to be fresh: skipping them, instead of waiting, also rules out a deadlock
        // with an `accept` that writes several incidents in another order than this scan.
        let done = sqlx::query(concat!(
            "DELETE FROM incidents WHERE (target, dedup_key) IN (
                 SELECT target, dedup_key FROM incidents WHERE ",
            super::incidents::expirable!(),
            " FOR UPDATE SKIP LOCKED)"
        ))
        .bind(to_millis(cutoff))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl DeadLetters for PostgresStore {
    async fn dead_letters(
        &self,
        target: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let sql = concat!(
            "SELECT ",
            dead_letter_columns!(),
            " FROM outbox WHERE status = 'dead' AND ($1::text IS NULL OR target = $1)
             ORDER BY id LIMIT $2"
        );
        let rows = sqlx::query(sql)
            .bind(target)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(dead_letter_from_row).collect()
    }

    async fn find_dead_letters(
        &self,
        filter: &DeadLetterFilter,
        include_dropped: bool,
        after_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let sql = concat!(
            "SELECT ",
            dead_letter_columns!(),
            " FROM outbox WHERE (status = 'dead' OR ($8 AND status = 'dropped')) AND ",
            dead_filter!(),
            " AND id > $9 ORDER BY id LIMIT $10"
        );
        let rows = bind_filter(sqlx::query(sql), filter)
            .bind(include_dropped)
            .bind(after_id.unwrap_or(i64::MIN))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(dead_letter_from_row).collect()
    }

    async fn replay(
        &self,
        filter: &DeadLetterFilter,
        now: Timestamp,
    ) -> Result<ReplayReport, StoreError> {
        let mut tx = self.pool.begin_with(BEGIN_READ_COMMITTED).await?;
        let ids = Self::lock_dead_letters(&mut tx, filter).await?;
        // Re-read under the locks: what is still dead, and whether a delivery superseded it.
        let rows = sqlx::query(
            "SELECT id, target, dedup_key, superseded_by FROM outbox
             WHERE id = ANY($1) AND status = 'dead' ORDER BY id",
        )
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        let selected = rows
            .iter()
            .map(ReplayCandidate::from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let ids: Vec<i64> = selected.iter().map(|c| c.id).collect();
        // Every dead or dropped event of the selected events' incidents.
        let settled: Vec<SettledRow> = sqlx::query_as(
            "SELECT o.id, o.target, o.dedup_key, o.status = 'dead' AS dead
             FROM (SELECT DISTINCT target, dedup_key FROM outbox
                   WHERE id = ANY($1) AND dedup_key IS NOT NULL) s
             JOIN outbox o ON o.target = s.target AND o.dedup_key = s.dedup_key
                           AND o.status <> 'pending'
             WHERE o.status IN ('dead', 'dropped')",
        )
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        let plan = ReplayReport::plan(&selected, &settled);
        sqlx::query(
            "UPDATE outbox SET status = 'pending', attempts = 0, last_error = NULL,
                    first_failed_at = NULL, failing_notified_at = NULL, dead_at = NULL,
                    dead_reason = NULL, dead_notified_at = NULL, replayed_at = $2
             WHERE id = ANY($1) AND status = 'dead'",
        )
        .bind(&plan.replayed)
        .bind(to_millis(now))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(plan)
    }

    async fn drop_dead(
        &self,
        filter: &DeadLetterFilter,
        reason: &str,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin_with(BEGIN_READ_COMMITTED).await?;
        let ids = Self::lock_dead_letters(&mut tx, filter).await?;
        let done = sqlx::query(
            "UPDATE outbox SET status = 'dropped', dropped_at = $2, drop_reason = $3
             WHERE id = ANY($1) AND status = 'dead'",
        )
        .bind(&ids)
        .bind(to_millis(now))
        .bind(storable_text(reason))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    async fn expire_events(
        &self,
        cutoff: Timestamp,
        now: Timestamp,
    ) -> Result<Expired, StoreError> {
        let targets: Vec<String> = sqlx::query_scalar(super::outbox::EXPIRE_EVENTS)
            .bind(to_millis(now))
            .bind(to_millis(cutoff))
            .fetch_all(&self.pool)
            .await?;
        Ok(Expired::from_targets(targets))
    }
}

#[async_trait]
impl FallbackNotices for PostgresStore {
    async fn fallback_due(
        &self,
        failing_since: Timestamp,
        limit: u32,
    ) -> Result<Vec<Notice>, StoreError> {
        let sql = concat!(
            "SELECT ",
            queued_columns!(),
            ", status, dead_reason FROM outbox WHERE id IN (",
            super::fallback::fallback_due_ids!(),
            ") ORDER BY id LIMIT $2"
        );
        let rows = sqlx::query(sql)
            .bind(to_millis(failing_since))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(notice_from_row).collect()
    }

    async fn mark_notified(
        &self,
        id: i64,
        kind: NoticeKind,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        let sql = match kind {
            NoticeKind::Failing => "UPDATE outbox SET failing_notified_at = $1 WHERE id = $2",
            NoticeKind::DeadLettered => "UPDATE outbox SET dead_notified_at = $1 WHERE id = $2",
        };
        sqlx::query(sql)
            .bind(to_millis(at))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// Sessions the store opens, against a real server (`#[ignore = "needs postgres"]`).
#[cfg(test)]
mod tests {
    use pagerbridge_testkit::postgres::TestDatabase;

    use super::*;

    /// Group commit cuts the queued jobs into transactions of at most `MAX_LOCKS_PER_BATCH`
    /// incident locks, keeping their order; a job larger than that goes alone.
    #[test]
    fn group_commit_batches_stay_within_the_lock_budget() {
        let job = |events: usize| AcceptJob {
            events: (0..events)
                .map(|i| NewEvent {
                    target: "t".into(),
                    dedup_key: Some(format!("k{i}")),
                    action: Action::Trigger,
                    severity: None,
                    event: serde_json::Value::Null.into(),
                    alert: None,
                    fingerprint: None,
                    labels_key: false,
                    payload_hash: None,
                    condition: super::super::Condition::Always,
                    source: None,
                })
                .collect(),
            prepared: vec![(); events],
            policy: SuppressionPolicy::default(),
            now: Timestamp::UNIX_EPOCH,
        };
        let sizes = [100, 1_900, 1, MAX_LOCKS_PER_BATCH + 1, 5, 7];
        let batches = lock_sized(sizes.iter().map(|&n| job(n)).collect());
        let shape: Vec<Vec<usize>> = batches
            .iter()
            .map(|batch| batch.iter().map(|job| job.events.len()).collect())
            .collect();
        assert_eq!(
            shape,
            [
                vec![100, 1_900],
                vec![1],
                vec![MAX_LOCKS_PER_BATCH + 1],
                vec![5, 7]
            ]
        );
    }

    /// A replica that stops inside a transaction (paused, cut off) must not hold its locks
    /// past a second: the server ends its session, and another replica gets the lock.
    #[tokio::test]
    #[ignore = "needs postgres"]
    async fn a_postgres_session_stalled_in_a_transaction_loses_its_locks() {
        let database = TestDatabase::create().await;
        let store = PostgresStore::connect(&database.url)
            .await
            .expect("connect");
        let mut stalled = store.pool.begin().await.expect("begin");
        sqlx::query("SELECT pg_advisory_xact_lock(42)")
            .execute(&mut *stalled)
            .await
            .expect("lock");

        // Another session waits for the lock, and gets it once the server has ended the
        // stalled one (after its second of silence), well before this wait's own limit.
        let started = std::time::Instant::now();
        let mut other = store.pool.begin().await.expect("begin");
        sqlx::query("SET LOCAL lock_timeout = '10s'")
            .execute(&mut *other)
            .await
            .expect("lock_timeout");
        sqlx::query("SELECT pg_advisory_xact_lock(42)")
            .execute(&mut *other)
            .await
            .expect("the stalled session's lock is released");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(900),
            "the lock was held until the stalled session was ended ({waited:?})"
        );
        other.commit().await.expect("commit");

        // The stalled one learns its transaction is gone at its next statement.
        let next = sqlx::query("SELECT 1").execute(&mut *stalled).await;
        assert!(next.is_err(), "the stalled session was ended: {next:?}");
    }
}
