//! The embedded SQLite store: one file, zero setup, the default.
//!
//! Durability settings are the point: WAL journal with `synchronous=FULL`, so a transaction
//! that returned is on disk and survives `kill -9` or power loss. Accepts commit without the
//! fsync and are answered only once [`Wal::flush_for`] has flushed the WAL, on another thread
//! while the writer commits the next batch; their lanes hear of them at the commit, so a send
//! can overlap the flush ([`Outbox::on_commit`]). The bookkeeping of sends (budget slots,
//! delivered and failed events) commits without an fsync, which still survives `kill -9` (see
//! [`SqliteStore::relaxed_connection`]): no fsync stands between an accepted alert's commit and
//! its request to PagerDuty. One connection does every write:
//! SQLite admits one writer at a time anyway, and a single connection rules out `SQLITE_BUSY`
//! between our own transactions. Accepts that arrive together share one commit
//! ([`super::group_commit`]). The reads on the path of an alert (an ingest's fingerprint
//! lookup, a lane's next event) go to a small pool of read-only connections instead: in WAL
//! mode a reader sees every commit made before it starts and waits for no writer, so a
//! request formats while another's commit is under way instead of queuing behind its fsync.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::TryStreamExt;
use jiff::Timestamp;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteQueryResult, SqliteSynchronous,
};
use sqlx::{Connection, Executor, FromRow, Sqlite, Transaction};

use super::accept_jobs::{self, AcceptJob, AcceptResult};
use super::budget;
use super::checkpointer::{self, Checkpointer};
use super::group_commit::GroupCommit;
use super::incident_log::{self, Folder, Unfolded};
use super::leases as lease_sql;
use super::lz4_json::Packed;
use super::rows::{
    ReplayCandidate, SettledRow, dead_letter_from_row, dedup_keys_by_target, incident_from_row,
    lane_stats_from_row, latest_keys, notice_from_row, queued_from_row,
};
use super::suppress::{self, IncidentSource, IncidentState, SuppressionPolicy};
use super::wal_flush::Wal;
use super::{
    Acceptance, Action, BudgetDecision, BudgetId, BudgetSecret, CommitHook, DeadLetter,
    DeadLetterFilter, DeadLetters, Expired, FallbackNotices, Fence, FingerprintLookup,
    IncidentFilter, Incidents, LaneStats, NewEvent, Notice, NoticeKind, Outbox, QueuedEvent,
    ReplayReport, SUPERSEDED_IN_FLIGHT, SendBudget, StoreError, severity_rank, to_millis,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// Rows per multi-row statement of `accept`: well under SQLite's 32,766 bound parameters.
const ROWS_PER_STATEMENT: usize = 500;

/// [`Outbox::fold_counts`]: the maintained counts are one row per (target, status) here (one
/// writer at a time, so no one waits on them); only rows that came back to zero go, e.g. of a
/// target since removed.
const FOLD_COUNTS: [&str; 2] = [
    "DELETE FROM outbox_counts WHERE n = 0",
    "DELETE FROM incident_counts WHERE n = 0",
];

/// Read-only connections for the reads on the path of an alert: one per core of the
/// machine this was sized on (the handlers that ask run on that many threads).
const READERS: u32 = 2;

/// Page cache of each reader, as SQLite's `cache_size` takes it (negative: in KiB).
const READER_CACHE_KIB: i32 = -2048;

/// The SQLite-backed [`Store`].
#[derive(Clone, Debug)]
pub struct SqliteStore {
    /// The one connection that writes (and serves the reads off the hot path).
    pool: SqlitePool,
    /// Read-only connections ([`READERS`]), opened once the file is migrated.
    readers: SqlitePool,
    /// Whether the connection may run with `synchronous = NORMAL` (see
    /// [`SqliteStore::relaxed_connection`]); it is set back to FULL before any other user
    /// gets it, however its last user ended.
    relaxed: Arc<AtomicBool>,
    /// `accept`s go through one writer, so that requests arriving together share a commit.
    accepts: GroupCommit<AcceptJob<Packed>, AcceptResult>,
    /// Told of each accept's commit before it is flushed ([`Outbox::on_commit`]).
    committed: Arc<CommitHookCell>,
    /// Whether the fingerprint index may hold an incident (see [`Remembered`]).
    remembered: Arc<Remembered>,
    /// The incidents' states appended to `incident_log` and not yet folded into `incidents`
    /// ([`incident_log`]).
    unfolded: Arc<Unfolded>,
    /// Folds the log when it is long or old, until the last clone is dropped.
    _folder: Arc<Folder>,
    /// WAL checkpoints on a connection of their own, until the last clone is dropped.
    _checkpointer: Arc<Checkpointer>,
}

impl SqliteStore {
    /// Opens (creating if missing, with its directory) and migrates the database file.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_folding_after(path, incident_log::FOLD_AFTER).await
    }

    /// [`SqliteStore::open`], with the incidents' log folded after `fold_after` when it is
    /// short (tests wait longer, so that the log holds what they put there).
    async fn open_folding_after(path: &Path, fold_after: Duration) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Database(sqlx::Error::Io(std::io::Error::new(
                    e.kind(),
                    format!("creating {}: {e}", dir.display()),
                )))
            })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5))
            // Statement journals (a multi-row insert's undo) in memory, not in temp files.
            .pragma("temp_store", "memory")
            // 16 MiB of page cache, not 2: an accept touches pages of several indexes keyed
            // by hashes, all over the file; each miss is a read.
            .pragma("cache_size", "-16384");
        Self::connect(options, fold_after).await
    }

    async fn connect(
        options: SqliteConnectOptions,
        fold_after: Duration,
    ) -> Result<Self, StoreError> {
        // The checkpointer's connection is opened once the file exists in WAL mode and is
        // migrated: two connections creating it at once could collide.
        let checkpointer_options = options.clone().create_if_missing(false);
        let database = options.get_filename().to_owned();
        // `query_only`: a reader that tried to write would fail, not take the write lock. A
        // 2 MiB page cache each, not the writer's 16: their reads are point lookups, and
        // memory must stay flat under a backlog of a million events.
        let reader_options = checkpointer_options
            .clone()
            .pragma("query_only", "true")
            .pragma("cache_size", READER_CACHE_KIB.to_string());
        let options = options.pragma(
            "wal_autocheckpoint",
            checkpointer::WRITER_AUTOCHECKPOINT_PAGES.to_string(),
        );
        let relaxed = Arc::new(AtomicBool::new(false));
        let acquired = relaxed.clone();
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            // Keep the one connection for the life of the pool: reopening costs a migration check.
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(Duration::from_secs(30))
            // No ping at each acquire (sqlx's default): a round trip to SQLite's thread before
            // every statement of the page path, for a connection that `after_release` below
            // has just checked.
            .test_before_acquire(false)
            // Every commit but the bookkeeping of sends and the accepts' (flushed apart) is
            // fsync'd: whatever the last user did, the connection is FULL again before any
            // other user gets it. Done here, when such a user takes it, and not when a relaxed
            // one gives it back: the page path's users follow one another (an accept, a
            // budget slot, a delivered event), and each would otherwise wait for a round trip
            // to SQLite's thread that only set FULL for the next to set NORMAL again.
            .before_acquire(move |conn, _meta| {
                let relaxed = acquired.clone();
                Box::pin(async move {
                    if RELAXING.try_with(|_| ()).is_err() && relaxed.swap(false, Ordering::SeqCst) {
                        sqlx::query("PRAGMA synchronous = FULL")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(true)
                })
            })
            // On some errors (SQLITE_FULL, SQLITE_IOERR…) SQLite rolls the transaction back by
            // itself; sqlx's ROLLBACK then fails and sqlx still counts a transaction as open,
            // so its next `begin` is a SAVEPOINT inside a transaction that nobody commits, and
            // every later "commit" (and 2xx) would vanish at the next restart. A connection
            // released in that state is closed, never reused; the pool opens a new one.
            .after_release(|conn, _meta| {
                Box::pin(async move {
                    // A transaction dropped uncommitted left its rollback queued (sqlx counts
                    // it open until then): a ping runs it before the look below. A user that
                    // committed left nothing to run, and the next waits for no round trip.
                    if !conn.is_in_transaction() {
                        return Ok(true);
                    }
                    conn.ping().await?;
                    let stuck = conn.is_in_transaction();
                    if stuck {
                        tracing::error!(
                            "a storage connection was left inside a transaction after an error; \
                             replacing it"
                        );
                    }
                    Ok(!stuck)
                })
            })
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        let unfolded = Arc::new(Unfolded::default());
        // What the log held when the last process stopped (a crash between an accept and its
        // fold), folded before anything reads `incidents`.
        Self::fold_on(relaxing(&pool, &relaxed).await?, &unfolded).await?;
        let folder = Folder::spawn(unfolded.clone(), fold_after, {
            let (pool, relaxed, unfolded) = (pool.clone(), relaxed.clone(), unfolded.clone());
            move || {
                let (pool, relaxed, unfolded) = (pool.clone(), relaxed.clone(), unfolded.clone());
                async move { Self::fold_log(&pool, &relaxed, &unfolded).await }
            }
        });
        let remembered = Arc::new(Remembered::read(&pool).await?);
        let readers = SqlitePoolOptions::new()
            .max_connections(READERS)
            .acquire_timeout(Duration::from_secs(30))
            // Read-only statements outside transactions leave nothing to check: no ping (a
            // round trip) before each.
            .test_before_acquire(false)
            .connect_lazy_with(reader_options);
        let checkpointer = Checkpointer::spawn(checkpointer_options, {
            let (pool, relaxed) = (pool.clone(), relaxed.clone());
            // The restart's statement relaxes the connection itself (the row needs no fsync,
            // nor, mostly, the new WAL header: see `checkpointer::RESTART_WAL_UNSYNCED`); it
            // goes back to FULL before a user that needs it gets it.
            move || {
                let (pool, relaxed) = (pool.clone(), relaxed.clone());
                async move { relaxing(&pool, &relaxed).await }
            }
        });
        let wal = Wal::beside(&database);
        let committed = Arc::new(CommitHookCell::default());
        let accepts = GroupCommit::spawn_durable(
            {
                let writer = Writer {
                    pool: pool.clone(),
                    relaxed: relaxed.clone(),
                    committed: committed.clone(),
                    remembered: remembered.clone(),
                    unfolded: unfolded.clone(),
                };
                move |jobs| {
                    let writer = writer.clone();
                    async move {
                        accept_jobs::together_or_alone!(jobs, |batch| Self::accept_batch(
                            &writer, batch
                        ))
                    }
                }
            },
            move |results| wal.flush_for(results),
        );
        Ok(Self {
            pool,
            readers,
            relaxed,
            accepts,
            committed,
            remembered,
            unfolded,
            _folder: Arc::new(folder),
            _checkpointer: Arc::new(checkpointer),
        })
    }

    /// The connection, with `synchronous = NORMAL` (FULL again for the next user that is not
    /// relaxed): for the bookkeeping of sends (a budget slot, its settling, a delivered or
    /// failed event), whose commits then skip their fsync. In WAL mode such a commit is still
    /// on disk for a restart of the process, including `kill -9`; only a power loss or an OS
    /// crash may lose the last ones, and the next fsync'd commit (any accept) makes them
    /// durable too. What that could cost after a power loss: a request or two over the budget,
    /// an event sent again (PagerDuty dedups it). It keeps fsyncs off the page path: the send
    /// waits for none.
    async fn relaxed_connection(&self) -> Result<PoolConnection<Sqlite>, StoreError> {
        relax(&self.pool, &self.relaxed).await
    }

    async fn load_incident(
        tx: &mut Transaction<'_, Sqlite>,
        target: &str,
        dedup_key: &str,
    ) -> Result<Option<IncidentState>, StoreError> {
        let row = sqlx::query(super::incidents::ONE)
            .bind(target)
            .bind(dedup_key)
            .fetch_optional(&mut **tx)
            .await?;
        row.as_ref().map(incident_from_row).transpose()
    }

    /// The events of `jobs` in one transaction, in two round trips to SQLite's thread whatever
    /// their number (the transaction begun and the incidents loaded; the rows written and
    /// committed): the answer of each job. sqlx's `Transaction` would take two more, its
    /// `BEGIN` and its `COMMIT` each a round trip of its own, and each round trip costs two
    /// thread wake-ups on the path of every page; so the transaction is this batch's own
    /// SQL, and a batch that fails closes the connection, which rolls it back.
    ///
    /// The commit skips its fsync (`synchronous = NORMAL`): the group commit answers no job
    /// before [`Wal::flush_for`] has made it durable, and commits the next batch meanwhile.
    /// `committed` hears of the targets with new events right after the commit, before the
    /// flush: their lanes can send meanwhile.
    ///
    /// The incidents' new states are appended to `incident_log` when none of them belongs in
    /// the fingerprint index, and decided against the log's states as well as `incidents`';
    /// otherwise the log is folded first and they are upserted into `incidents`
    /// ([`incident_log`]).
    async fn accept_batch(
        writer: &Writer,
        jobs: &[AcceptJob<Packed>],
    ) -> Result<Vec<Vec<Acceptance>>, StoreError> {
        let mut tx = OwnTransaction::on(relaxing(&writer.pool, &writer.relaxed).await?);
        let mut loaded = Self::begin_and_load(&mut tx.conn, accept_jobs::events(jobs)).await?;
        writer.unfolded.overlay(
            &mut loaded,
            accept_jobs::events(jobs)
                .filter_map(|event| Some((event.target.as_str(), event.dedup_key.as_deref()?))),
        );
        let mut decider = suppress::Decider::new(loaded);
        let (verdicts, queued) = accept_jobs::decide(&mut decider, jobs);
        let created = decider.created_by_status();
        let changed = decider.into_changed();
        writer.remembered.note(&changed);
        let incidents = if changed.iter().all(incident_log::loggable) {
            IncidentWrites::Log
        } else {
            IncidentWrites::Upsert {
                fold_first: !writer.unfolded.is_empty(),
            }
        };
        // A fold first holds off the fingerprint lookup's readers until it is done.
        let folding = match incidents {
            IncidentWrites::Upsert { fold_first: true } => Some(writer.unfolded.folding().await),
            _ => None,
        };
        let ids = Self::write_and_commit(
            &mut tx.conn,
            &queued,
            &changed,
            created,
            incidents,
            || match (incidents, folding) {
                (IncidentWrites::Log, _) => writer.unfolded.logged(&changed),
                (_, Some(folding)) => writer.unfolded.folded(folding),
                _ => {}
            },
        )
        .await?;
        tx.committed();
        if let Some(hook) = writer.committed.0.get() {
            let targets: BTreeSet<&str> = queued.iter().map(|q| q.event.target.as_str()).collect();
            for target in targets {
                hook(target);
            }
        }
        accept_jobs::answers(verdicts, ids)
    }

    /// Writes what a batch decided and commits, in one round trip to SQLite's thread (a query
    /// of several statements): the incidents' log folded if `incidents` says so, the counts of
    /// what it inserts, the incidents' new states (to the log, or upserted), the queued events,
    /// in order, then `COMMIT`. The ids of the events:
    /// no `RETURNING` (like a row trigger, it makes SQLite copy every row into a temporary
    /// table before inserting it); one writer inserts and each row gets the next id
    /// (AUTOINCREMENT: one more than the largest ever), and the outbox's inserts come last, so
    /// the events hold the ids that end at the last one inserted. `on_commit` runs once the
    /// commit has succeeded, before what it wrote is checked.
    async fn write_and_commit(
        conn: &mut SqliteConnection,
        queued: &[accept_jobs::Queued<'_, Packed>],
        changed: &[IncidentState],
        created: BTreeMap<&'static str, i64>,
        incidents: IncidentWrites,
        on_commit: impl FnOnce(),
    ) -> Result<Vec<i64>, StoreError> {
        let mut sql = sqlx::QueryBuilder::<Sqlite>::new("");
        let mut statements: u64 = 0;
        // The fold's two statements (insert, delete) come first.
        let fold_statements = match incidents {
            IncidentWrites::Upsert { fold_first: true } => {
                sql.push(incident_log::fold!());
                2
            }
            _ => 0,
        };
        // Inserts are counted here, not by triggers (migration 0010): the queued events,
        // pending, per target, and the new incidents per status. Updates of incidents that
        // change their status are counted by a trigger.
        let mut pending: BTreeMap<&str, i64> = BTreeMap::new();
        for queued in queued {
            *pending.entry(queued.event.target.as_str()).or_insert(0) += 1;
        }
        for (target, n) in pending {
            sql.push("INSERT INTO outbox_counts (target, status, n) VALUES (")
                .push_bind(target)
                .push(", 'pending', ")
                .push_bind(n)
                .push(") ON CONFLICT (target, status) DO UPDATE SET n = n + excluded.n;");
            statements += 1;
        }
        for (status, n) in created {
            sql.push("INSERT INTO incident_counts (status, n) VALUES (")
                .push_bind(status)
                .push(", ")
                .push_bind(n)
                .push(") ON CONFLICT (status) DO UPDATE SET n = n + excluded.n;");
            statements += 1;
        }
        for chunk in changed.chunks(ROWS_PER_STATEMENT) {
            sql.push(match incidents {
                IncidentWrites::Log => concat!(
                    "INSERT INTO incident_log (",
                    super::rows::incident_columns!(),
                    ") "
                ),
                IncidentWrites::Upsert { .. } => concat!(
                    "INSERT INTO incidents (",
                    super::rows::incident_columns!(),
                    ") "
                ),
            });
            sql.push_values(chunk, |mut row, state| {
                row.push_bind(state.target.as_str())
                    .push_bind(state.dedup_key.as_str())
                    .push_bind(state.fingerprint.as_deref())
                    .push_bind(state.labels_key)
                    .push_bind(state.status.as_str())
                    .push_bind(state.last_payload_hash.as_deref())
                    .push_bind(state.last_trigger_at.map(to_millis))
                    .push_bind(state.last_sent_at.map(to_millis))
                    .push_bind(to_millis(state.updated_at))
                    .push_bind(state.source.map(IncidentSource::as_str))
                    .push_bind(state.first_event_at.map(to_millis))
                    .push_bind(state.chain);
            });
            sql.push(match incidents {
                IncidentWrites::Log => ";",
                IncidentWrites::Upsert { .. } => concat!(incident_log::upsert_incident!(), ";"),
            });
        }
        for chunk in queued.chunks(ROWS_PER_STATEMENT) {
            sql.push(
                "INSERT INTO outbox (target, dedup_key, action, severity_rank, event, alert,
                                     fingerprint, accepted_at, chain) ",
            );
            sql.push_values(chunk, |mut row, queued| {
                let event = queued.event;
                row.push_bind(event.target.as_str())
                    .push_bind(event.dedup_key.as_deref())
                    .push_bind(event.action.as_str())
                    .push_bind(severity_rank(event.severity))
                    .push_bind(queued.prepared.event.as_slice())
                    .push_bind(queued.prepared.alert.as_deref())
                    .push_bind(event.fingerprint.as_deref())
                    .push_bind(to_millis(queued.accepted_at))
                    .push_bind(queued.chain);
            });
            sql.push(";");
        }
        sql.push("COMMIT");
        // One result per statement, the `COMMIT`'s last: it repeats the count of the statement
        // before it (SQLite's `changes()` is the last insert's, update's or delete's), so it is
        // left out of the sum.
        let done: Vec<SqliteQueryResult> = (&mut *conn)
            .fetch_many(sql.build())
            .try_filter_map(|step| async move { Ok(step.left()) })
            .try_collect()
            .await?;
        on_commit();
        let (Some(commit), written) = (done.last(), done.len().saturating_sub(1)) else {
            return Err(StoreError::Corrupt("accept ran no statement".into()));
        };
        // The fold moves each row of the log once: as many inserted or updated as deleted.
        let (fold, done) = done[..written].split_at(fold_statements.min(written));
        if let [insert, delete] = fold
            && insert.rows_affected() != delete.rows_affected()
        {
            return Err(StoreError::Corrupt(format!(
                "a fold applied {} of the log's {} rows",
                insert.rows_affected(),
                delete.rows_affected()
            )));
        }
        let rows_affected: u64 = done.iter().map(|d| d.rows_affected()).sum();
        // Each count and each incident row is one change (an upsert's update too; what
        // triggers change is not counted), each event one. Checked after the commit: a
        // mismatch means a bug, not bad input, and the callers' retries are suppressed as
        // repeats of what was committed.
        let expected = statements + changed.len() as u64 + queued.len() as u64;
        if rows_affected != expected {
            return Err(StoreError::Corrupt(format!(
                "accept wrote {rows_affected} rows, not {expected}"
            )));
        }
        let rows = queued.len() as i64;
        let last = commit.last_insert_rowid();
        Ok((last - rows + 1..=last).collect())
    }

    /// Folds the incidents' log ([`incident_log`]) on the writer's connection, if it holds
    /// anything: for the folder, and for readers of `incidents` before they read.
    async fn fold_log(
        pool: &SqlitePool,
        relaxed: &AtomicBool,
        unfolded: &Unfolded,
    ) -> Result<(), StoreError> {
        // Asked again holding the connection: another fold may have emptied it meanwhile.
        if unfolded.is_empty() {
            return Ok(());
        }
        let conn = relaxing(pool, relaxed).await?;
        if unfolded.is_empty() {
            return Ok(());
        }
        Self::fold_on(conn, unfolded).await
    }

    /// Folds the incidents' log on `conn`, the writer's, in a transaction of its own
    /// ([`incident_log::FOLD`]), and tells `unfolded` before the connection goes back.
    async fn fold_on(conn: PoolConnection<Sqlite>, unfolded: &Unfolded) -> Result<(), StoreError> {
        let folding = unfolded.folding().await;
        let mut tx = OwnTransaction::on(conn);
        sqlx::query(incident_log::FOLD)
            .execute(&mut *tx.conn)
            .await?;
        tx.committed();
        unfolded.folded(folding);
        Ok(())
    }

    /// Folds the incidents' log before a read of `incidents` ([`incident_log`]). On a task of
    /// its own, which runs to its end even if this caller gives up (an HTTP handler's time
    /// limit, a client gone): SQLite's thread would finish the fold anyway, and the map of
    /// unfolded states must hear of its commit.
    async fn fold_first(&self) -> Result<(), StoreError> {
        let (pool, relaxed, unfolded) = (
            self.pool.clone(),
            self.relaxed.clone(),
            self.unfolded.clone(),
        );
        to_the_end(async move { Self::fold_log(&pool, &relaxed, &unfolded).await }).await
    }

    /// Relaxes the connection and begins the transaction ([`RELAX_AND_BEGIN`]) with the first
    /// query, then the stored states of the incidents `events` name, by (target, dedup key):
    /// one query per target (a request rarely spans more than one).
    async fn begin_and_load(
        conn: &mut SqliteConnection,
        events: impl Iterator<Item = &NewEvent>,
    ) -> Result<HashMap<(String, String), IncidentState>, StoreError> {
        let mut loaded = HashMap::new();
        let mut begun = false;
        for (target, keys) in dedup_keys_by_target(events) {
            let keys = serde_json::to_string(&keys)
                .map_err(|error| StoreError::Corrupt(format!("dedup keys: {error}")))?;
            let sql = if begun {
                LOAD_INCIDENTS
            } else {
                BEGIN_AND_LOAD_INCIDENTS
            };
            begun = true;
            let rows = sqlx::query(sql)
                .bind(target)
                .bind(keys)
                .fetch_all(&mut *conn)
                .await?;
            for row in &rows {
                let state = incident_from_row(row)?;
                loaded.insert((state.target.clone(), state.dedup_key.clone()), state);
            }
        }
        // Only change events, no incident to load.
        if !begun {
            sqlx::query(RELAX_AND_BEGIN).execute(&mut *conn).await?;
        }
        Ok(loaded)
    }
}

/// Runs `work` on a task of its own and waits for it: the work goes on to its end even if the
/// caller's future is dropped (see [`SqliteStore::fold_first`]).
async fn to_the_end<T: Send + 'static>(
    work: impl Future<Output = Result<T, StoreError>> + Send + 'static,
) -> Result<T, StoreError> {
    match tokio::spawn(work).await {
        Ok(result) => result,
        Err(error) => {
            tracing::error!(%error, "a storage task ended before it finished");
            Err(StoreError::Database(sqlx::Error::WorkerCrashed))
        }
    }
}

/// What the group commit's writer works with: the store's parts an accept needs.
#[derive(Clone)]
struct Writer {
    pool: SqlitePool,
    relaxed: Arc<AtomicBool>,
    committed: Arc<CommitHookCell>,
    remembered: Arc<Remembered>,
    unfolded: Arc<Unfolded>,
}

/// Where an accept writes its incidents' new states ([`incident_log`]).
#[derive(Clone, Copy, Debug)]
enum IncidentWrites {
    /// Appended to `incident_log`.
    Log,
    /// Upserted into `incidents`, after folding the log when it holds anything.
    Upsert { fold_first: bool },
}

/// Whether the fingerprint index (`incidents_fingerprint_remembered`) may hold an incident.
///
/// Under the default `dedup: alert` every incident is keyed by its labels, the index stays
/// empty, and an ingest's lookup of its fingerprints there would be a round trip to a reader's
/// thread for nothing, on the path of every page. One process owns the file and only the
/// writer adds to the index, so the writer sets this before it writes such an incident (a
/// reader that sees it unset cannot see the incident either), and opening the store reads it
/// from the file. It is never unset while the store is open: an index emptied by expiry is
/// only asked again for nothing until the next start.
#[derive(Debug)]
struct Remembered(AtomicBool);

impl Remembered {
    async fn read(pool: &SqlitePool) -> Result<Self, StoreError> {
        let any: bool = sqlx::query_scalar(ANY_REMEMBERED).fetch_one(pool).await?;
        Ok(Self(AtomicBool::new(any)))
    }

    /// Called by the writer with the incidents it is about to write.
    fn note(&self, changed: &[IncidentState]) {
        if changed
            .iter()
            .any(|state| state.fingerprint.is_some() && !state.labels_key)
        {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    fn any(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Whether any incident is in the fingerprint index: its conditions, as in [`BY_FINGERPRINT`].
const ANY_REMEMBERED: &str = "SELECT EXISTS (SELECT 1 FROM incidents
     WHERE fingerprint IS NOT NULL AND labels_key IS NOT 1)";

/// The store's [`CommitHook`], once [`Outbox::on_commit`] has set it.
#[derive(Default)]
struct CommitHookCell(OnceLock<CommitHook>);

impl std::fmt::Debug for CommitHookCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CommitHookCell")
            .field(&if self.0.get().is_some() {
                "set"
            } else {
                "unset"
            })
            .finish()
    }
}

/// The writer's connection with `synchronous = NORMAL` ([`SqliteStore::relaxed_connection`]);
/// `relaxed` is the store's flag that has it set back for the next user that is not relaxed.
async fn relax(
    pool: &SqlitePool,
    relaxed: &AtomicBool,
) -> Result<PoolConnection<Sqlite>, StoreError> {
    let mut conn = relaxing(pool, relaxed).await?;
    sqlx::query(RELAX).execute(&mut *conn).await?;
    Ok(conn)
}

/// [`RELAX`], then `BEGIN`, as a macro so that [`BEGIN_AND_LOAD_INCIDENTS`] can start with it.
macro_rules! relax_and_begin {
    () => {
        "PRAGMA synchronous = NORMAL; BEGIN"
    };
}

/// [`RELAX`], then `BEGIN`: in one round trip.
const RELAX_AND_BEGIN: &str = relax_and_begin!();

/// The incidents of one target with the given dedup keys (a JSON array).
macro_rules! load_incidents {
    () => {
        concat!(
            "SELECT ",
            super::rows::incident_columns!(),
            " FROM incidents WHERE target = ? AND dedup_key IN (SELECT value FROM json_each(?))"
        )
    };
}

/// An accept's first query: [`RELAX_AND_BEGIN`], then the first target's incidents.
const BEGIN_AND_LOAD_INCIDENTS: &str = concat!(relax_and_begin!(), "; ", load_incidents!());

/// Another target's incidents, in the transaction begun by [`BEGIN_AND_LOAD_INCIDENTS`].
const LOAD_INCIDENTS: &str = load_incidents!();

/// The writer's connection inside a transaction begun with SQL of the store's own: closed,
/// not given back to the pool, unless [`OwnTransaction::committed`] says the transaction
/// ended (closing a connection rolls back what it had not committed). sqlx knows nothing of
/// such a transaction, so a connection given back inside one would run its next user's
/// statements in it, and they would vanish with it.
struct OwnTransaction {
    conn: PoolConnection<Sqlite>,
    open: bool,
}

impl OwnTransaction {
    /// The transaction is about to begin on `conn`.
    fn on(conn: PoolConnection<Sqlite>) -> Self {
        Self { conn, open: true }
    }

    /// The transaction is committed: the connection goes back to the pool when dropped.
    fn committed(&mut self) {
        self.open = false;
    }
}

impl Drop for OwnTransaction {
    fn drop(&mut self) {
        if self.open {
            self.conn.close_on_drop();
        }
    }
}

/// Sets the connection's `synchronous` to NORMAL: a user of [`relaxing`] runs it with its first
/// statement, in one query, to save a round trip to SQLite's thread on the page path.
const RELAX: &str = "PRAGMA synchronous = NORMAL";

tokio::task_local! {
    /// Set while [`relaxing`] acquires the writer's connection: the pool's `before_acquire`
    /// then leaves `synchronous` as it is. Any other acquire, whatever the caller, gets FULL.
    static RELAXING: ();
}

/// The writer's connection, flagged to go back to FULL before a user that is not relaxed gets
/// it, for a user that relaxes it in its first query ([`RELAX`] before its own statements).
/// One that forgot would only fsync its commits.
async fn relaxing(
    pool: &SqlitePool,
    relaxed: &AtomicBool,
) -> Result<PoolConnection<Sqlite>, StoreError> {
    let conn = RELAXING.scope((), pool.acquire()).await?;
    relaxed.store(true, Ordering::SeqCst);
    Ok(conn)
}

/// The incidents of some fingerprints that the fingerprint index holds (migration 0012): the
/// conditions repeat the partial index's, so that SQLite's planner may use it.
const BY_FINGERPRINT: &str = "SELECT fingerprint, dedup_key, updated_at FROM incidents
     WHERE target = ? AND fingerprint IN (SELECT value FROM json_each(?))
       AND fingerprint IS NOT NULL AND labels_key IS NOT 1
     ORDER BY updated_at, rowid";

/// The incidents keyed by some alerts' labels' keys, of their fingerprints: by primary key.
const BY_LABELS_KEY: &str = "SELECT fingerprint, dedup_key, updated_at FROM incidents
     WHERE target = ? AND dedup_key IN (SELECT value FROM json_each(?))
       AND labels_key = 1 AND fingerprint IN (SELECT value FROM json_each(?))";

/// [`Outbox::mark_delivered`]: `?1` the event's id, `?2` now, `?3` the reason for an older
/// pending event put back to dead. The send is noted on the incident, in `incidents` and on
/// its states in the log (a new incident is only there; the log is not indexed, and is
/// folded at about `incident_log::FOLD_AT` rows). Older dead letters of
/// the incident are superseded now (see `DeadLetters::replay`). An older *pending* event
/// exists only if it was replayed while this one was in flight: sending it now would regress
/// PagerDuty, so it goes back to dead. Then the event's row goes.
const MARK_DELIVERED: &str = "
    UPDATE incidents SET last_sent_at = ?2
     WHERE (target, dedup_key) IN (SELECT target, dedup_key FROM outbox WHERE id = ?1);
    UPDATE incident_log SET last_sent_at = ?2
     WHERE (target, dedup_key) IN (SELECT target, dedup_key FROM outbox WHERE id = ?1);
    UPDATE outbox SET superseded_by = ?1
     WHERE (target, dedup_key) IN (SELECT target, dedup_key FROM outbox WHERE id = ?1)
       AND status = 'dead' AND status <> 'pending' AND id < ?1;
    UPDATE outbox SET status = 'dead', superseded_by = ?1, dead_at = ?2, dead_reason = ?3,
                      dead_notified_at = ?2
     WHERE (target, chain, dedup_key) IN (SELECT target, chain, dedup_key FROM outbox WHERE id = ?1)
       AND status = 'pending' AND id < ?1;
    DELETE FROM outbox WHERE id = ?1;";

/// [`SendBudget::take_budget`] when the window has room and the fence holds, as one query:
/// the slots that left the window deleted, then one taken, atomically with both checks (one
/// statement; the fence's condition is `leases::FENCE_HOLDS`'s). `?1` budget, `?2` the
/// window's start, `?3` the new slot's time, `?4` the limit, `?5`–`?7` the fence's lease name,
/// owner and epoch (all NULL without a fence), `?8` now. Returns the slot, or no row when
/// either check failed. It relaxes the connection first ([`relaxing`]).
const TAKE_BUDGET_SLOT: &str = "PRAGMA synchronous = NORMAL;
     DELETE FROM budget_sends WHERE budget = ?1 AND sent_at < ?2;
     INSERT INTO budget_sends (budget, sent_at)
     SELECT ?1, ?3
      WHERE (SELECT COUNT(*) FROM budget_sends WHERE budget = ?1) < ?4
        AND (?5 IS NULL
             OR EXISTS (SELECT 1 FROM leases
                         WHERE name = ?5 AND owner = ?6 AND epoch = ?7 AND expires_at > ?8))
     RETURNING id";

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

/// The conditions of a [`DeadLetterFilter`], bound by `bind_filter` as `?1`…`?7`. `?7` is
/// false for an empty filter, which therefore selects nothing.
macro_rules! dead_filter {
    () => {
        "(?1 IS NULL OR id IN (SELECT value FROM json_each(?1)))
         AND (?2 IS NULL OR target = ?2) AND (?3 IS NULL OR dedup_key = ?3)
         AND (?4 IS NULL OR action = ?4) AND (?5 IS NULL OR dead_at >= ?5)
         AND (?6 IS NULL OR dead_at < ?6) AND ?7"
    };
}

type SqliteQuery<'q> = sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments>;

fn bind_filter<'q>(query: SqliteQuery<'q>, filter: &DeadLetterFilter) -> SqliteQuery<'q> {
    query
        .bind(filter.ids.as_deref().map(id_list))
        .bind(filter.target.clone())
        .bind(filter.dedup_key.clone())
        .bind(filter.action.map(Action::as_str))
        .bind(filter.dead_since.map(to_millis))
        .bind(filter.dead_before.map(to_millis))
        .bind(!filter.is_empty())
}

/// A JSON array of ids, for `id IN (SELECT value FROM json_each(?))`.
fn id_list(ids: &[i64]) -> String {
    let items: Vec<String> = ids.iter().map(i64::to_string).collect();
    format!("[{}]", items.join(","))
}

#[async_trait]
impl Outbox for SqliteStore {
    fn on_commit(&self, hook: CommitHook) {
        if self.committed.0.set(hook).is_err() {
            tracing::warn!("a second commit hook was ignored: the store has one already");
        }
    }

    async fn accept(
        &self,
        events: Vec<NewEvent>,
        policy: &SuppressionPolicy,
        now: Timestamp,
    ) -> Result<Vec<Acceptance>, StoreError> {
        accept_jobs::submit(&self.accepts, events, Packed::of, policy, now).await
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
        let json = |list: &[&str]| {
            serde_json::to_string(list)
                .map_err(|error| StoreError::Corrupt(format!("fingerprints: {error}")))
        };
        let listed = json(&fingerprints)?;
        let mut candidates: Vec<(String, String, i64)> = Vec::new();
        let asks_index = self.remembered.any();
        if !asks_index && labels_keys.is_empty() {
            return Ok(HashMap::new());
        }
        // The reader first, then the gate: a fold waiting at the gate holds the writer, and
        // must not wait for a reader to be free as well.
        let mut reader = self.readers.acquire().await?;
        // No fold between what `incidents` gives and what the log's states add to it.
        let reading = self.unfolded.reading().await;
        if asks_index {
            candidates = sqlx::query_as(BY_FINGERPRINT)
                .bind(target)
                .bind(&listed)
                .fetch_all(&mut *reader)
                .await?;
        }
        if !labels_keys.is_empty() {
            candidates.extend(
                sqlx::query_as::<_, (String, String, i64)>(BY_LABELS_KEY)
                    .bind(target)
                    .bind(json(&labels_keys)?)
                    .bind(&listed)
                    .fetch_all(&mut *reader)
                    .await?,
            );
        }
        self.unfolded.merge_lookup(
            &reading,
            target,
            &mut candidates,
            &labels_keys,
            &fingerprints,
        );
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
             WHERE o.target = ? AND o.status = 'pending'
               AND (o.dedup_key IS NULL
                    OR o.id = (SELECT MIN(p.id) FROM outbox p
                               WHERE p.target = o.target AND p.chain = o.chain
                                 AND p.dedup_key = o.dedup_key AND p.status = 'pending'))
             ORDER BY o.severity_rank DESC, o.id ASC
             LIMIT 1"
        );
        let row = sqlx::query(sql)
            .bind(target)
            .fetch_optional(&self.readers)
            .await?;
        row.as_ref().map(queued_from_row).transpose()
    }

    async fn mark_delivered(&self, id: i64, now: Timestamp) -> Result<(), StoreError> {
        let mut conn = relaxing(&self.pool, &self.relaxed).await?;
        let mut tx = conn.begin_with(RELAX_AND_BEGIN).await?;
        // One round trip to SQLite's thread for all five statements (the writer is held
        // meanwhile, and the next accept may be waiting for it). The event's incident is read
        // from its row before the row goes; a change event (no dedup key) matches nothing.
        sqlx::query(MARK_DELIVERED)
            .bind(id)
            .bind(to_millis(now))
            .bind(SUPERSEDED_IN_FLIGHT)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn record_failure(&self, id: i64, error: &str, now: Timestamp) -> Result<(), StoreError> {
        let mut conn = self.relaxed_connection().await?;
        sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ?,
                    first_failed_at = COALESCE(first_failed_at, ?)
             WHERE id = ?",
        )
        .bind(error)
        .bind(to_millis(now))
        .bind(id)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    async fn dead_letter(&self, id: i64, reason: &str, now: Timestamp) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE outbox SET status = 'dead', dead_at = ?, dead_reason = ?
             WHERE id = ? AND status = 'pending'",
        )
        .bind(to_millis(now))
        .bind(reason)
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
            " FROM outbox WHERE status = 'pending' AND (?1 IS NULL OR target = ?1)
             ORDER BY id LIMIT ?2"
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
impl SendBudget for SqliteStore {
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
        let mut conn = relaxing(&self.pool, &self.relaxed).await?;
        // A slot granted in one round trip to SQLite's thread (a send waits for it); a slot
        // exactly one window old still counts, erring on the side of PagerDuty's limit.
        let (name, owner, epoch) = match fence {
            Some(fence) => (
                Some(fence.name.as_str()),
                Some(fence.owner.as_str()),
                Some(fence.epoch),
            ),
            None => (None, None, None),
        };
        let granted: Option<i64> = sqlx::query_scalar(TAKE_BUDGET_SLOT)
            .bind(budget.as_str())
            .bind(since)
            .bind(budget::in_flight_until(now, window))
            .bind(i64::from(limit))
            .bind(name)
            .bind(owner)
            .bind(epoch)
            .bind(to_millis(now))
            .fetch_optional(&mut *conn)
            .await?;
        if let Some(slot) = granted {
            return Ok(BudgetDecision::Granted { slot });
        }
        // Not granted: the fence failed, or the window is full. This connection is the only
        // one that writes, and it is held, so what the query saw is still so: tell which.
        if !super::leases::fence_holds!(lease_sql::FENCE_HOLDS, fence, now, &mut *conn) {
            return Ok(BudgetDecision::Fenced);
        }
        let (oldest, in_flight): (Option<i64>, bool) = sqlx::query_as(
            "SELECT MIN(CASE WHEN sent_at <= ?2 THEN sent_at END),
                    COALESCE(MAX(sent_at > ?2), false)
               FROM budget_sends WHERE budget = ?1",
        )
        .bind(budget.as_str())
        .bind(to_millis(now))
        .fetch_one(&mut *conn)
        .await?;
        Ok(BudgetDecision::WaitUntil(budget::when_full(
            oldest, in_flight, now, window,
        )?))
    }

    async fn settle_budget(&self, slot: i64, at: Timestamp) -> Result<(), StoreError> {
        let mut conn = self.relaxed_connection().await?;
        sqlx::query("UPDATE budget_sends SET sent_at = ? WHERE id = ?")
            .bind(to_millis(at))
            .bind(slot)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    async fn release_budget(&self, slot: i64) -> Result<(), StoreError> {
        let mut conn = self.relaxed_connection().await?;
        sqlx::query(budget::RELEASE)
            .bind(slot)
            .execute(&mut *conn)
            .await?;
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
super::leases::impl_leases!(SqliteStore);

#[async_trait]
impl Incidents for SqliteStore {
    async fn incident(
        &self,
        target: &str,
        dedup_key: &str,
    ) -> Result<Option<IncidentState>, StoreError> {
        self.fold_first().await?;
        let mut tx = self.pool.begin().await?;
        let state = Self::load_incident(&mut tx, target, dedup_key).await?;
        tx.commit().await?;
        Ok(state)
    }

    async fn open_incidents(&self) -> Result<u64, StoreError> {
        // The counts of status changes still in the log are made by the fold.
        self.fold_first().await?;
        let count: i64 = sqlx::query_scalar(super::outbox::OPEN_INCIDENTS)
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn open_incidents_from(
        &self,
        source: IncidentSource,
    ) -> Result<Vec<IncidentState>, StoreError> {
        self.fold_first().await?;
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
        self.fold_first().await?;
        Ok(super::incidents::list_incidents!(&self.pool, filter))
    }

    async fn expire_incidents(&self, cutoff: Timestamp) -> Result<u64, StoreError> {
        // The log folded in the same transaction: an incident must not be forgotten while a
        // later state of it waits there (the fold would bring it back uncounted). To the end
        // whatever the caller does, as `fold_first`.
        let (pool, unfolded) = (self.pool.clone(), self.unfolded.clone());
        to_the_end(async move {
            let mut conn = pool.acquire().await?;
            let folding = unfolded.folding().await;
            let mut tx = conn.begin().await?;
            sqlx::query(incident_log::fold!()).execute(&mut *tx).await?;
            let done = sqlx::query(concat!(
                "DELETE FROM incidents WHERE ",
                super::incidents::expirable!()
            ))
            .bind(to_millis(cutoff))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            unfolded.folded(folding);
            Ok(done.rows_affected())
        })
        .await
    }
}

#[async_trait]
impl DeadLetters for SqliteStore {
    async fn dead_letters(
        &self,
        target: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let sql = concat!(
            "SELECT ",
            dead_letter_columns!(),
            " FROM outbox WHERE status = 'dead' AND (?1 IS NULL OR target = ?1)
             ORDER BY id LIMIT ?2"
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
            " FROM outbox WHERE (status = 'dead' OR (?8 AND status = 'dropped')) AND ",
            dead_filter!(),
            " AND id > ?9 ORDER BY id LIMIT ?10"
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
        // One writer at a time in SQLite: the transaction sees a stable outbox, and no lane
        // commits a delivery in between.
        let mut tx = self.pool.begin().await?;
        let sql = concat!(
            "SELECT id, target, dedup_key, superseded_by FROM outbox WHERE status = 'dead' AND ",
            dead_filter!(),
            " ORDER BY id"
        );
        let rows = bind_filter(sqlx::query(sql), filter)
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
                   WHERE id IN (SELECT value FROM json_each(?1)) AND dedup_key IS NOT NULL) s
             JOIN outbox o INDEXED BY outbox_settled
                  ON o.target = s.target AND o.dedup_key = s.dedup_key
             WHERE o.status IN ('dead', 'dropped') AND o.status <> 'pending'",
        )
        .bind(id_list(&ids))
        .fetch_all(&mut *tx)
        .await?;
        let plan = ReplayReport::plan(&selected, &settled);
        sqlx::query(
            "UPDATE outbox SET status = 'pending', attempts = 0, last_error = NULL,
                    first_failed_at = NULL, failing_notified_at = NULL, dead_at = NULL,
                    dead_reason = NULL, dead_notified_at = NULL, replayed_at = ?2
             WHERE id IN (SELECT value FROM json_each(?1)) AND status = 'dead'",
        )
        .bind(id_list(&plan.replayed))
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
        let sql = concat!(
            "UPDATE outbox SET status = 'dropped', dropped_at = ?8, drop_reason = ?9
             WHERE status = 'dead' AND ",
            dead_filter!()
        );
        let done = bind_filter(sqlx::query(sql), filter)
            .bind(to_millis(now))
            .bind(reason)
            .execute(&self.pool)
            .await?;
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
impl FallbackNotices for SqliteStore {
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
            NoticeKind::Failing => "UPDATE outbox SET failing_notified_at = ? WHERE id = ?",
            NoticeKind::DeadLettered => "UPDATE outbox SET dead_notified_at = ? WHERE id = ?",
        };
        sqlx::query(sql)
            .bind(to_millis(at))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store on a file in a temporary directory, which lives as long as the first half. Its
    /// incidents' log is folded when long or read, never because it waited: what a test puts
    /// there stays until then.
    async fn open_temporary() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().expect("dir");
        let store = open_without_timed_folds(&dir.path().join("db")).await;
        (dir, store)
    }

    async fn open_without_timed_folds(path: &Path) -> SqliteStore {
        SqliteStore::open_folding_after(path, Duration::from_secs(24 * 3600))
            .await
            .expect("open")
    }

    /// A trigger of `key` on `target` whose payload never changes: a repeat is suppressed.
    fn same_trigger(target: &str, key: &str) -> NewEvent {
        NewEvent {
            target: target.to_owned(),
            payload_hash: Some("same".to_owned()),
            ..trigger(key, serde_json::json!({"event_action": "trigger"}))
        }
    }

    /// A trigger of the target "default" for the incident `key`, with `event` as its JSON.
    fn trigger(key: &str, event: serde_json::Value) -> NewEvent {
        NewEvent {
            target: "default".to_owned(),
            dedup_key: Some(key.to_owned()),
            action: Action::Trigger,
            severity: None,
            event: event.into(),
            alert: None,
            fingerprint: None,
            labels_key: false,
            payload_hash: None,
            condition: super::super::Condition::Always,
            source: None,
        }
    }

    /// The commit hook hears of each target with newly queued events once per commit, and
    /// of nothing when everything was suppressed.
    #[tokio::test]
    async fn the_commit_hook_hears_of_each_target_with_queued_events() {
        let (_dir, store) = open_temporary().await;
        let heard = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        store.on_commit(Arc::new({
            let heard = heard.clone();
            move |target: &str| heard.lock().expect("lock").push(target.to_owned())
        }));
        let on = same_trigger;
        let policy = SuppressionPolicy::default();
        let events = vec![on("b", "1"), on("a", "2"), on("b", "3")];
        let accepted = store
            .accept(events, &policy, Timestamp::now())
            .await
            .expect("accept");
        assert!(
            accepted
                .iter()
                .all(|a| matches!(a, Acceptance::Queued { .. }))
        );
        assert_eq!(*heard.lock().expect("lock"), ["a", "b"]);
        // The same trigger again is suppressed: nothing new for any lane.
        let again = store
            .accept(vec![on("a", "2")], &policy, Timestamp::now())
            .await
            .expect("accept");
        assert!(matches!(again.as_slice(), [Acceptance::Suppressed { .. }]));
        assert_eq!(heard.lock().expect("lock").len(), 2);
    }

    #[tokio::test]
    async fn an_accept_leaves_no_transaction_open_whatever_it_wrote() {
        let (_dir, store) = open_temporary().await;
        let policy = SuppressionPolicy::default();
        let on = same_trigger;
        // Two targets (two loads), then a repeat that writes nothing.
        for events in [vec![on("a", "1"), on("b", "2")], vec![on("a", "1")]] {
            store
                .accept(events, &policy, Timestamp::now())
                .await
                .expect("accept");
            // `BEGIN` fails inside a transaction: none is left open for the next user.
            let mut conn = store.pool.acquire().await.expect("writer");
            sqlx::query("BEGIN; ROLLBACK")
                .execute(&mut *conn)
                .await
                .expect("no transaction left open");
        }
        // What the first accept wrote is committed: a reader sees it, once folded.
        store.fold_first().await.expect("fold");
        let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM incidents")
            .fetch_one(&store.readers)
            .await
            .expect("count");
        assert_eq!(keys, 2);
    }

    /// The outbox holds an event's JSON and its alert's as LZ4 blocks, smaller than the text,
    /// and a lane reads them back whole.
    #[tokio::test]
    async fn events_are_stored_compressed_and_read_back_whole() {
        let (_dir, store) = open_temporary().await;
        let labels = serde_json::json!({"alertname": "DiskFull", "instance": "db-1:9100"});
        let annotations = serde_json::json!({"summary": "Disk full on db-1", "runbook_url": "https://r.example/disk"});
        let event = serde_json::json!({
            "event_action": "trigger",
            "payload": {"summary": "Disk full on db-1",
                        "custom_details": {"labels": labels, "annotations": annotations}},
        });
        let alert =
            serde_json::json!({"status": "firing", "labels": labels, "annotations": annotations});
        let new = NewEvent {
            alert: Some(alert.clone().into()),
            ..trigger("disk", event.clone())
        };
        store
            .accept(vec![new], &SuppressionPolicy::default(), Timestamp::now())
            .await
            .expect("accept");
        let (kinds, stored, text): (String, i64, i64) = sqlx::query_as(
            "SELECT typeof(event) || ',' || typeof(alert), length(event) + length(alert), ?
             FROM outbox",
        )
        .bind((event.to_string().len() + alert.to_string().len()) as i64)
        .fetch_one(&store.pool)
        .await
        .expect("row");
        assert_eq!(kinds, "blob,blob");
        assert!(
            stored * 3 < text * 2,
            "{stored} bytes stored for {text} of JSON"
        );
        let queued = store
            .next_eligible("default")
            .await
            .expect("next")
            .expect("queued");
        assert_eq!(queued.event, event);
        assert_eq!(queued.alert, Some(alert));
    }

    /// The ids `accept` answers are those of the rows it inserted, in order, also across the
    /// several statements of a large request (they are worked out, not returned by SQLite),
    /// and after earlier rows were deleted (AUTOINCREMENT: never reused).
    #[tokio::test]
    async fn accepted_ids_are_the_rows_ids_across_statements() {
        let (_dir, store) = open_temporary().await;
        let first = store
            .accept(
                vec![trigger("first", serde_json::json!({"n": 0}))],
                &SuppressionPolicy::default(),
                Timestamp::now(),
            )
            .await
            .expect("accept");
        let [Acceptance::Queued { id: first }] = first[..] else {
            panic!("{first:?}");
        };
        store
            .mark_delivered(first, Timestamp::now())
            .await
            .expect("delivered");
        let events: Vec<NewEvent> = (0..ROWS_PER_STATEMENT * 2 + 7)
            .map(|n| trigger(&format!("k{n}"), serde_json::json!({ "n": n })))
            .collect();
        let answers = store
            .accept(events, &SuppressionPolicy::default(), Timestamp::now())
            .await
            .expect("accept");
        let answered: Vec<i64> = answers
            .iter()
            .map(|answer| match answer {
                Acceptance::Queued { id } => *id,
                other => panic!("{other:?}"),
            })
            .collect();
        let stored: Vec<(i64, String)> =
            sqlx::query_as("SELECT id, dedup_key FROM outbox WHERE id > ? ORDER BY id")
                .bind(first)
                .fetch_all(&store.pool)
                .await
                .expect("rows");
        let expected: Vec<(i64, String)> = answered
            .iter()
            .enumerate()
            .map(|(n, id)| (*id, format!("k{n}")))
            .collect();
        assert_eq!(stored, expected);
    }

    /// A new database at `path` with the migrations before `version` only: a store as an
    /// older release left it.
    async fn migrated_before(path: &Path, version: i64) -> SqlitePool {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true);
        let pool = SqlitePool::connect_with(options).await.expect("pool");
        let before = sqlx::migrate::Migrator {
            migrations: MIGRATOR
                .migrations
                .iter()
                .filter(|m| m.version < version)
                .cloned()
                .collect(),
            ..sqlx::migrate::Migrator::DEFAULT
        };
        before.run(&pool).await.expect("the older migrations");
        pool
    }

    /// Migration 0009 on a store written before it: every row of a key shares its incident's
    /// chain, and an incident forgotten while events of its were queued or dead is stored
    /// again as its last such event left it, so the order of its events holds.
    #[tokio::test]
    async fn migration_0009_gives_queued_events_of_forgotten_incidents_an_incident() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("db");
        {
            let pool = migrated_before(&path, 9).await;
            // "kept": an incident with a queued trigger. "forgotten": its trigger (info) and
            // resolve (critical) queued, its incident expired. "gone": only a dead ack,
            // incident expired. "done": only a dropped event, incident expired.
            sqlx::query(
                "INSERT INTO incidents (target, dedup_key, status, updated_at)
                 VALUES ('default', 'kept', 'triggered', 1)",
            )
            .execute(&pool)
            .await
            .expect("incident");
            for (key, action, rank, status) in [
                ("kept", "trigger", 1, "pending"),
                ("forgotten", "trigger", 1, "pending"),
                ("forgotten", "resolve", 5, "pending"),
                ("gone", "acknowledge", 1, "dead"),
                ("done", "trigger", 1, "dropped"),
            ] {
                sqlx::query(
                    "INSERT INTO outbox (target, dedup_key, action, severity_rank, event,
                                         accepted_at, status)
                     VALUES ('default', ?, ?, ?, '{}', 7, ?)",
                )
                .bind(key)
                .bind(action)
                .bind(rank)
                .bind(status)
                .execute(&pool)
                .await
                .expect("event");
            }
            pool.close().await;
        }
        let store = SqliteStore::open(&path).await.expect("open and migrate");
        let status = |key: &'static str| {
            let store = store.clone();
            async move {
                store
                    .incident("default", key)
                    .await
                    .expect("incident")
                    .map(|state| (state.status, state.chain))
            }
        };
        use super::super::suppress::Status;
        assert_eq!(status("kept").await, Some((Status::Triggered, 0)));
        assert_eq!(status("forgotten").await, Some((Status::Resolved, 0)));
        assert_eq!(status("gone").await, Some((Status::Acknowledged, 0)));
        assert_eq!(status("done").await, None, "dropped events hold nothing");
        // The forgotten incident's critical resolve still waits for its trigger, also when a
        // new event of the key comes (a trigger again: the incident is resolved as stored).
        let next = trigger("forgotten", serde_json::json!({"n": 3}));
        let new = store
            .accept(vec![next], &SuppressionPolicy::default(), Timestamp::now())
            .await
            .expect("accept");
        assert!(matches!(new[..], [Acceptance::Queued { .. }]), "{new:?}");
        let mut sent = Vec::new();
        while let Some(event) = store.next_eligible("default").await.expect("next") {
            sent.push((event.dedup_key.clone().unwrap_or_default(), event.action));
            store
                .mark_delivered(event.id, Timestamp::now())
                .await
                .expect("delivered");
        }
        let expected = [
            ("kept", Action::Trigger),
            ("forgotten", Action::Trigger),
            ("forgotten", Action::Resolve),
            ("forgotten", Action::Trigger),
        ];
        assert_eq!(sent, expected.map(|(key, action)| (key.to_owned(), action)));
    }

    /// Migration 0012 on a store written before it: an incident stored then, keyed either way,
    /// stays in the fingerprint index; the lookups use the partial index and the primary key,
    /// not a scan of the table.
    #[tokio::test]
    async fn migration_0012_keeps_older_incidents_in_the_fingerprint_index() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("db");
        {
            let pool = migrated_before(&path, 12).await;
            sqlx::query(
                "INSERT INTO incidents (target, dedup_key, fingerprint, status, updated_at)
                 VALUES ('default', 'older', 'fp-old', 'triggered', 1)",
            )
            .execute(&pool)
            .await
            .expect("incident");
            pool.close().await;
        }
        let store = SqliteStore::open(&path).await.expect("open and migrate");
        assert_eq!(
            remembered_key(&store, "fp-old").await,
            HashMap::from([("fp-old".to_owned(), "older".to_owned())])
        );
        for (sql, index) in [
            (BY_FINGERPRINT, "incidents_fingerprint_remembered"),
            (BY_LABELS_KEY, "sqlite_autoindex_incidents_1"),
        ] {
            let plan: Vec<(i64, i64, i64, String)> =
                sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
                    .bind("default")
                    .bind("[\"fp-old\"]")
                    .bind("[\"fp-old\"]")
                    .fetch_all(&store.readers)
                    .await
                    .expect("plan");
            let steps: Vec<&str> = plan.iter().map(|(.., step)| step.as_str()).collect();
            assert!(
                steps.iter().any(|step| step.contains(index)),
                "{sql}: {steps:?}"
            );
            assert!(
                !steps.iter().any(|step| step.starts_with("SCAN incidents")),
                "{sql}: {steps:?}"
            );
        }
        // Whether the index holds anything is read from the index when the store opens, not
        // by a scan of every incident (a restart with a million must be quick).
        let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "EXPLAIN QUERY PLAN {ANY_REMEMBERED}"
        )))
        .fetch_all(&store.readers)
        .await
        .expect("plan");
        let steps: Vec<&str> = plan.iter().map(|(.., step)| step.as_str()).collect();
        assert!(
            steps
                .iter()
                .any(|step| step.contains("incidents_fingerprint_remembered")),
            "{steps:?}"
        );
    }

    #[tokio::test]
    async fn the_fingerprint_index_is_asked_once_it_may_hold_an_incident() {
        let (_dir, store) = open_temporary().await;
        let policy = SuppressionPolicy::default();
        let event = |key: &str, fingerprint: &str, labels_key: bool| NewEvent {
            fingerprint: Some(fingerprint.to_owned()),
            labels_key,
            ..trigger(key, serde_json::json!({"event_action": "trigger"}))
        };
        assert!(!store.remembered.any(), "a new store's index is empty");
        // Keyed by its labels: not in the index, and the index is still not asked.
        store
            .accept(
                vec![event("labels", "fp-1", true)],
                &policy,
                Timestamp::now(),
            )
            .await
            .expect("accept");
        assert!(!store.remembered.any());
        // Keyed otherwise (a group's key): in the index, and found there from now on.
        store
            .accept(
                vec![event("group", "fp-2", false)],
                &policy,
                Timestamp::now(),
            )
            .await
            .expect("accept");
        assert!(store.remembered.any());
        assert_eq!(
            remembered_key(&store, "fp-2").await,
            HashMap::from([("fp-2".to_owned(), "group".to_owned())])
        );
    }

    /// The dedup key remembered for one fingerprint on the target "default", as the lookup
    /// answers it.
    async fn remembered_key(store: &SqliteStore, fingerprint: &str) -> HashMap<String, String> {
        let lookup = [FingerprintLookup {
            fingerprint,
            labels_key: None,
        }];
        store
            .dedup_keys_for_fingerprints("default", &lookup)
            .await
            .expect("lookup")
    }

    /// Rows of a table, read on the writer's connection (as it is, not folded).
    async fn rows_of(store: &SqliteStore, table: &'static str) -> i64 {
        let sql = match table {
            "incident_log" => "SELECT count(*) FROM incident_log",
            "incidents" => "SELECT count(*) FROM incidents",
            other => panic!("no count of {other}"),
        };
        sqlx::query_scalar(sql)
            .fetch_one(&store.pool)
            .await
            .expect("count")
    }

    /// A trigger of `key` with Alertmanager's fingerprint `fp-{key}`, keyed by its labels (the
    /// default): its incident goes to the log. `hash` its payload's.
    fn labels_keyed(key: &str, hash: &str) -> NewEvent {
        NewEvent {
            fingerprint: Some(format!("fp-{key}")),
            labels_key: true,
            payload_hash: Some(hash.to_owned()),
            ..trigger(key, serde_json::json!({"event_action": "trigger"}))
        }
    }

    fn queued_id(acceptance: &Acceptance) -> i64 {
        match acceptance {
            Acceptance::Queued { id } => *id,
            other => panic!("not queued: {other:?}"),
        }
    }

    /// A send noted while its incident is only in the log survives the fold, and so does one
    /// noted before a later state of the incident was decided (from the log's state, which
    /// does not know of the send).
    #[tokio::test]
    async fn a_send_noted_before_the_fold_is_kept_by_it() {
        let (_dir, store) = open_temporary().await;
        let policy = SuppressionPolicy::default();
        let accepted = store
            .accept(vec![labels_keyed("k", "h1")], &policy, Timestamp::now())
            .await
            .expect("accept");
        let sent = Timestamp::from_millisecond(1_900_000_000_000).expect("time");
        store
            .mark_delivered(queued_id(&accepted[0]), sent)
            .await
            .expect("delivered");
        // A changed payload: queued, its state decided from the log's.
        let again = store
            .accept(vec![labels_keyed("k", "h2")], &policy, Timestamp::now())
            .await
            .expect("accept");
        queued_id(&again[0]);
        let state = store.incident("default", "k").await.expect("read");
        let state = state.expect("the incident");
        assert_eq!(state.last_sent_at, Some(sent));
        assert_eq!(state.last_payload_hash.as_deref(), Some("h2"));
        assert_eq!(
            rows_of(&store, "incident_log").await,
            0,
            "read after a fold"
        );
    }

    /// The open-incidents count is right while status changes wait in the log: a reader of it
    /// folds first, and the fold counts each change as the upsert did.
    #[tokio::test]
    async fn counts_are_right_across_the_log() {
        let (_dir, store) = open_temporary().await;
        let policy = SuppressionPolicy::default();
        let now = Timestamp::now();
        store
            .accept(
                vec![labels_keyed("a", "h"), labels_keyed("b", "h")],
                &policy,
                now,
            )
            .await
            .expect("accept");
        let resolve = NewEvent {
            action: Action::Resolve,
            payload_hash: None,
            ..labels_keyed("a", "h")
        };
        // A new incident created and resolved in the log, and one resolved after its trigger.
        let created_resolved = NewEvent {
            action: Action::Resolve,
            payload_hash: None,
            ..labels_keyed("c", "h")
        };
        store
            .accept(vec![resolve, labels_keyed("d", "h")], &policy, now)
            .await
            .expect("accept");
        store
            .accept(vec![created_resolved], &policy, now)
            .await
            .expect("accept");
        assert_eq!(store.open_incidents().await.expect("count"), 2, "b and d");
        let resolved: i64 =
            sqlx::query_scalar("SELECT n FROM incident_counts WHERE status = 'resolved'")
                .fetch_one(&store.pool)
                .await
                .expect("count");
        assert_eq!(resolved, 2, "a and c");
        assert_eq!(rows_of(&store, "incidents").await, 4);
    }

    /// An accept with a state the fingerprint index holds (a group's key) folds the log first,
    /// in its own transaction, and upserts into `incidents`; what it checks it wrote includes
    /// the fold's rows (the accept fails otherwise).
    #[tokio::test]
    async fn an_accept_for_the_fingerprint_index_folds_the_log_first() {
        let (_dir, store) = open_temporary().await;
        let policy = SuppressionPolicy::default();
        let now = Timestamp::now();
        // Two states of one incident and one of another in the log.
        for events in [
            vec![labels_keyed("a", "h1"), labels_keyed("b", "h1")],
            vec![labels_keyed("a", "h2")],
        ] {
            store.accept(events, &policy, now).await.expect("accept");
        }
        let group = NewEvent {
            fingerprint: Some("fp-g".to_owned()),
            labels_key: false,
            ..trigger("group", serde_json::json!({"event_action": "trigger"}))
        };
        store
            .accept(vec![group, labels_keyed("a", "h3")], &policy, now)
            .await
            .expect("accept");
        assert_eq!(rows_of(&store, "incident_log").await, 0);
        assert_eq!(rows_of(&store, "incidents").await, 3);
        let a = store.incident("default", "a").await.expect("read");
        assert_eq!(a.expect("a").last_payload_hash.as_deref(), Some("h3"));
        assert_eq!(store.open_incidents().await.expect("count"), 3);
    }

    /// Forgetting stale incidents folds the log in the same transaction: an incident whose
    /// stored state is stale but whose later state waits in the log is judged by that state
    /// and kept; one stale in both is forgotten; the counts stay right.
    #[tokio::test]
    async fn expiry_folds_the_log_first() {
        let (_dir, store) = open_temporary().await;
        let policy = SuppressionPolicy::default();
        let old = Timestamp::from_millisecond(1_700_000_000_000).expect("time");
        let cutoff = old + jiff::SignedDuration::from_hours(1);
        for key in ["kept", "stale"] {
            let accepted = store
                .accept(vec![labels_keyed(key, "h1")], &policy, old)
                .await
                .expect("accept");
            store
                .mark_delivered(queued_id(&accepted[0]), old)
                .await
                .expect("delivered");
        }
        store.fold_first().await.expect("fold");
        // A later state of one of them, in the log only; its event delivered.
        let accepted = store
            .accept(vec![labels_keyed("kept", "h2")], &policy, Timestamp::now())
            .await
            .expect("accept");
        store
            .mark_delivered(queued_id(&accepted[0]), Timestamp::now())
            .await
            .expect("delivered");
        assert_eq!(rows_of(&store, "incident_log").await, 1);
        let forgotten = store.expire_incidents(cutoff).await.expect("expire");
        assert_eq!(forgotten, 1);
        assert_eq!(rows_of(&store, "incident_log").await, 0);
        let kept = store.incident("default", "kept").await.expect("read");
        assert_eq!(kept.expect("kept").last_payload_hash.as_deref(), Some("h2"));
        assert!(
            store
                .incident("default", "stale")
                .await
                .expect("read")
                .is_none()
        );
        assert_eq!(store.open_incidents().await.expect("count"), 1);
    }

    /// What a crash left in the log (states accepted, never folded) is folded when the store
    /// opens, before anything reads `incidents`.
    #[tokio::test]
    async fn a_store_folds_what_the_log_holds_when_it_opens() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("db");
        let policy = SuppressionPolicy::default();
        {
            let store = open_without_timed_folds(&path).await;
            store
                .accept(vec![labels_keyed("k", "h")], &policy, Timestamp::now())
                .await
                .expect("accept");
            // A later state, as if an accept had logged it just before a `kill -9`.
            sqlx::query(
                "INSERT INTO incident_log (target, dedup_key, fingerprint, labels_key, status,
                                           last_payload_hash, updated_at, chain)
                 VALUES ('default', 'k', 'fp-k', 1, 'resolved', 'later', ?, 0)",
            )
            .bind(to_millis(Timestamp::now()))
            .execute(&store.pool)
            .await
            .expect("log");
        }
        let store = SqliteStore::open(&path).await.expect("reopen");
        assert_eq!(rows_of(&store, "incident_log").await, 0);
        let state: (String, String) =
            sqlx::query_as("SELECT status, last_payload_hash FROM incidents WHERE dedup_key = 'k'")
                .fetch_one(&store.pool)
                .await
                .expect("folded");
        assert_eq!(state, ("resolved".to_owned(), "later".to_owned()));
    }

    /// A reader that looks at `incidents` and then at the log's states holds off folds: no
    /// state moves from one to the other between its two looks.
    #[tokio::test]
    async fn a_fold_waits_for_the_readers_of_the_log() {
        let (_dir, store) = open_temporary().await;
        store
            .accept(
                vec![labels_keyed("k", "h")],
                &SuppressionPolicy::default(),
                Timestamp::now(),
            )
            .await
            .expect("accept");
        let reading = store.unfolded.reading().await;
        let fold = tokio::spawn({
            let store = store.clone();
            async move { store.fold_first().await }
        });
        let early = tokio::time::timeout(Duration::from_millis(200), async {
            while rows_of(&store, "incident_log").await > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(early.is_err(), "a fold went past a reader");
        drop(reading);
        fold.await.expect("task").expect("fold");
        assert_eq!(rows_of(&store, "incident_log").await, 0);
    }

    /// The fingerprint lookup finds an incident keyed by its labels whose state is only in the
    /// log, later than another key the index holds for the fingerprint.
    #[tokio::test]
    async fn the_fingerprint_lookup_sees_the_log() {
        let (_dir, store) = open_temporary().await;
        let policy = SuppressionPolicy::default();
        let earlier = Timestamp::now() - jiff::SignedDuration::from_secs(60);
        let group = NewEvent {
            fingerprint: Some("fp-k".to_owned()),
            labels_key: false,
            ..trigger("group", serde_json::json!({"event_action": "trigger"}))
        };
        store
            .accept(vec![group], &policy, earlier)
            .await
            .expect("accept");
        store
            .accept(vec![labels_keyed("k", "h")], &policy, Timestamp::now())
            .await
            .expect("accept");
        let known = store
            .dedup_keys_for_fingerprints(
                "default",
                &[FingerprintLookup {
                    fingerprint: "fp-k",
                    labels_key: Some("k"),
                }],
            )
            .await
            .expect("lookup");
        assert_eq!(known, HashMap::from([("fp-k".to_owned(), "k".to_owned())]));
    }

    /// A state in the log supersedes what `incidents` says of the incident: its key, kept in
    /// the fingerprint index for an older fingerprint, is no longer that fingerprint's once
    /// the incident is keyed by its labels with another.
    #[tokio::test]
    async fn the_log_supersedes_what_the_fingerprint_index_holds() {
        let (_dir, store) = open_temporary().await;
        let policy = SuppressionPolicy::default();
        let remembered = NewEvent {
            fingerprint: Some("fp-old".to_owned()),
            labels_key: false,
            ..trigger("k", serde_json::json!({"event_action": "trigger"}))
        };
        store
            .accept(vec![remembered], &policy, Timestamp::now())
            .await
            .expect("accept");
        assert_eq!(
            remembered_key(&store, "fp-old").await,
            HashMap::from([("fp-old".to_owned(), "k".to_owned())])
        );
        // Now keyed by its labels, with another fingerprint: in the log.
        let relabelled = NewEvent {
            fingerprint: Some("fp-new".to_owned()),
            ..labels_keyed("k", "h2")
        };
        store
            .accept(vec![relabelled], &policy, Timestamp::now())
            .await
            .expect("accept");
        assert_eq!(rows_of(&store, "incident_log").await, 1);
        assert_eq!(remembered_key(&store, "fp-old").await, HashMap::new());
        // The same once folded.
        store.fold_first().await.expect("fold");
        assert_eq!(remembered_key(&store, "fp-old").await, HashMap::new());
    }

    /// What an accept that folds first checks of the fold is what SQLite did (each row of the
    /// log moved once), not what the map of unfolded states expects: the map can be behind
    /// the log (a fold whose caller gave up before hearing of its commit, before folds ran to
    /// their end on a task of their own).
    #[tokio::test]
    async fn an_accept_checks_its_fold_against_the_log_not_the_map() {
        let (_dir, store) = open_temporary().await;
        let policy = SuppressionPolicy::default();
        store
            .accept(vec![labels_keyed("a", "h")], &policy, Timestamp::now())
            .await
            .expect("accept");
        // Folded behind the map's back: the map still holds "a".
        sqlx::query(incident_log::FOLD)
            .execute(&store.pool)
            .await
            .expect("fold");
        assert!(!store.unfolded.is_empty());
        let group = NewEvent {
            fingerprint: Some("fp-g".to_owned()),
            labels_key: false,
            ..trigger("group", serde_json::json!({"event_action": "trigger"}))
        };
        store
            .accept(vec![group], &policy, Timestamp::now())
            .await
            .expect("accept");
        assert!(store.unfolded.is_empty());
        assert_eq!(rows_of(&store, "incidents").await, 2);
    }

    async fn synchronous(store: &SqliteStore) -> i64 {
        sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&store.pool)
            .await
            .expect("pragma")
    }

    /// FULL is 2, NORMAL 1: the bookkeeping of a send relaxes the connection only while it
    /// runs, so every other commit (an accept above all) is fsync'd.
    #[tokio::test]
    async fn only_the_bookkeeping_of_sends_skips_the_fsync() {
        let (_dir, store) = open_temporary().await;
        assert_eq!(synchronous(&store).await, 2);
        let mut conn = store.relaxed_connection().await.expect("relaxed");
        let inside: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *conn)
            .await
            .expect("pragma");
        assert_eq!(inside, 1);
        drop(conn);
        assert_eq!(synchronous(&store).await, 2, "FULL again for the next user");
        // Relaxed in the same round trip as `BEGIN` (accepts, delivered events).
        let mut conn = relaxing(&store.pool, &store.relaxed)
            .await
            .expect("relaxing");
        let mut tx = conn.begin_with(RELAX_AND_BEGIN).await.expect("begin");
        let inside: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *tx)
            .await
            .expect("pragma");
        assert_eq!(inside, 1);
        tx.commit().await.expect("commit");
        drop(conn);
        assert_eq!(synchronous(&store).await, 2, "FULL again for the next user");
        let key =
            pagerduty_events::RoutingKey::new("0123456789abcdef0123456789abfake").expect("key"); // fake test key
        let budget = BudgetId::new(&key, &store.budget_secret().await.expect("secret"));
        let now = Timestamp::now();
        let decision = store
            .take_budget(None, &budget, 10, Duration::from_secs(60), now)
            .await
            .expect("budget");
        let BudgetDecision::Granted { slot } = decision else {
            panic!("granted: {decision:?}");
        };
        store.settle_budget(slot, now).await.expect("settle");
        assert_eq!(synchronous(&store).await, 2);
        // A relaxed user cancelled half-way leaves FULL behind it too.
        // (Polled once, then dropped: SQLite answers on its own thread, so it cannot be done.)
        use futures_util::FutureExt;
        let cancelled = store.settle_budget(slot, now).now_or_never();
        assert!(cancelled.is_none(), "cancelled before it could finish");
        assert_eq!(synchronous(&store).await, 2);
    }

    #[tokio::test]
    async fn the_page_paths_users_find_it_relaxed_and_any_other_user_finds_it_full() {
        let (_dir, store) = open_temporary().await;
        let conn = store.relaxed_connection().await.expect("relaxed");
        drop(conn);
        // The next relaxed user (a budget slot after an accept…) finds NORMAL still: nobody
        // spent a round trip setting FULL in between.
        let mut conn = relaxing(&store.pool, &store.relaxed)
            .await
            .expect("relaxing");
        let inside: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *conn)
            .await
            .expect("pragma");
        assert_eq!(inside, 1);
        drop(conn);
        // Any other user gets FULL, however it asks for the connection.
        assert_eq!(synchronous(&store).await, 2);
        drop(store.relaxed_connection().await.expect("relaxed"));
        let mut tx = store.pool.begin().await.expect("begin");
        let inside: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *tx)
            .await
            .expect("pragma");
        assert_eq!(inside, 2);
    }

    async fn pragma(store: &SqliteStore, name: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("PRAGMA {name}")))
            .fetch_one(&store.pool)
            .await
            .expect("pragma")
    }

    /// The writer's connection: statement journals in memory, a 16 MiB page cache, and its
    /// automatic checkpoint only as a backstop, the checkpointer doing the work.
    #[tokio::test]
    async fn the_connection_is_tuned_for_a_single_writer() {
        let (_dir, store) = open_temporary().await;
        assert_eq!(pragma(&store, "temp_store").await, 2, "memory");
        assert_eq!(pragma(&store, "cache_size").await, -16384);
        assert_eq!(
            pragma(&store, "wal_autocheckpoint").await,
            i64::from(checkpointer::WRITER_AUTOCHECKPOINT_PAGES)
        );
    }

    /// Commits reach the database file without any commit checkpointing: about 2 MiB of
    /// events stay far below the writer's own threshold (64 MiB), so only the checkpointer can
    /// have copied them out of the WAL.
    #[tokio::test]
    async fn the_checkpointer_copies_commits_into_the_database_file() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("db");
        let store = SqliteStore::open(&path).await.expect("open");
        // Random hex: 20 KB per event that compression cannot shrink (the outbox's JSON is
        // stored LZ4-compressed).
        let filler = || -> String {
            (0..1_250)
                .map(|_| format!("{:016x}", rand::random::<u64>()))
                .collect()
        };
        let events: Vec<NewEvent> = (0..100)
            .map(|i| {
                trigger(
                    &format!("key-{i}"),
                    serde_json::json!({"event_action": "trigger", "filler": filler()}),
                )
            })
            .collect();
        store
            .accept(events, &SuppressionPolicy::default(), Timestamp::now())
            .await
            .expect("accept");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let size = std::fs::metadata(&path).expect("database file").len();
            if size > 2_000_000 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the database file is still {size} bytes: nothing was checkpointed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The reads on the path of an alert are not queued behind the writer: with a write
    /// transaction open on the writer's connection (as during an accept's commit and fsync),
    /// a lane still gets its next event and an ingest its fingerprints, as last committed.
    #[tokio::test]
    async fn the_hot_reads_do_not_wait_for_the_writer() {
        let (_dir, store) = open_temporary().await;
        let committed = NewEvent {
            fingerprint: Some("fp-1".to_owned()),
            ..trigger("committed", serde_json::json!({"event_action": "trigger"}))
        };
        store
            .accept(
                vec![committed],
                &SuppressionPolicy::default(),
                Timestamp::now(),
            )
            .await
            .expect("accept");
        // The writer's one connection, inside a write transaction not yet committed.
        let mut writing = store.pool.begin().await.expect("begin");
        sqlx::query("UPDATE outbox SET attempts = attempts + 1")
            .execute(&mut *writing)
            .await
            .expect("write");
        let within = Duration::from_secs(5);
        let next = tokio::time::timeout(within, store.next_eligible("default"))
            .await
            .expect("next_eligible waited for the writer")
            .expect("next_eligible");
        let next = next.expect("the committed event");
        assert_eq!(next.dedup_key.as_deref(), Some("committed"));
        assert_eq!(next.attempts, 0, "the uncommitted write is not seen");
        let known = tokio::time::timeout(
            within,
            store.dedup_keys_for_fingerprints(
                "default",
                &["fp-1", "fp-2"].map(|fingerprint| FingerprintLookup {
                    fingerprint,
                    labels_key: None,
                }),
            ),
        )
        .await
        .expect("the fingerprint lookup waited for the writer")
        .expect("lookup");
        assert_eq!(
            known,
            HashMap::from([("fp-1".to_owned(), "committed".to_owned())])
        );
        writing.rollback().await.expect("rollback");
        let reader_cache: i64 = sqlx::query_scalar("PRAGMA cache_size")
            .fetch_one(&store.readers)
            .await
            .expect("pragma");
        assert_eq!(reader_cache, i64::from(READER_CACHE_KIB));
        // The readers cannot write, so they can never take the write lock from the writer.
        let refused = sqlx::query("DELETE FROM outbox")
            .execute(&store.readers)
            .await;
        assert!(refused.is_err(), "a reader wrote: {refused:?}");
    }
}
