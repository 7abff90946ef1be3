//! SQLite's WAL checkpoints, moved off the writer — and the WAL's restart with them.
//!
//! In WAL mode every commit appends pages to the `-wal` file, and a checkpoint copies them
//! back into the database file (and fsyncs it). Left to SQLite, the checkpoint runs inside
//! whichever commit pushes the WAL past `wal_autocheckpoint` pages: with one connection
//! serving every accept, that commit (and every request waiting on it) pays for copying
//! megabytes — a fifth of the writer thread's time under a storm, measured with `perf`.
//!
//! Here a task with a connection of its own runs a `PASSIVE` checkpoint every
//! [`INTERVAL`]: it copies what it can without blocking the writer or any reader, on
//! another thread. The writer's own automatic checkpoint stays as a backstop, at a higher
//! threshold ([`WRITER_AUTOCHECKPOINT_PAGES`]), should this task fall behind or stop.
//!
//! Once a checkpoint has copied the whole WAL, the next write starts the WAL over from its
//! beginning, and SQLite fsyncs the new WAL header before that write's pages: an fsync more
//! for whoever writes first. Left alone, that is the next accept, on the path of a page (seen
//! with `strace`: two fsyncs for one alert). So right after such a checkpoint this task makes
//! that first write itself, through the writer's connection (a write from its own connection
//! would contend for SQLite's write lock, whose waits are sleeps): a one-row update of
//! `wal_restart`. It looks again only once another connection has committed something
//! (`PRAGMA data_version`), so an idle database is not rewritten ten times a second.

use std::future::Future;
use std::ops::DerefMut;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::oneshot;

use super::StoreError;

/// How often the checkpointer looks; an idle database costs a read of the WAL's header.
pub(super) const INTERVAL: Duration = Duration::from_millis(100);

/// `wal_autocheckpoint` of the writer's connection: 16,000 pages (64 MiB with 4 KiB pages),
/// reached only if the checkpointer falls well behind. It does under a storm: its passive
/// checkpoints copy the WAL while the writer appends to it, so the WAL is never wholly copied
/// and never starts over, and grows until the writer checkpoints it itself, inside a commit
/// (copying the last frames and syncing the database file), each time the WAL grew by that
/// much. At 16,000 pages rather than 4,000 the bridge ingested about 8 % more alerts/s at 1
/// connection over 150,000 alerts (docs/performance.md). The cost is the WAL's size on disk
/// during a storm.
pub(super) const WRITER_AUTOCHECKPOINT_PAGES: u32 = 16_000;

/// The write that starts the WAL over, to run on the writer's connection (which it relaxes).
pub(super) const RESTART_WAL: &str =
    "PRAGMA synchronous = NORMAL; UPDATE wal_restart SET n = n + 1 WHERE id = 1";

/// [`RESTART_WAL`] without the fsync of the new WAL header (`synchronous = OFF`), which would
/// hold the writer's connection, and the accept waiting for it, while the disk works: ten
/// times a second under a trickle of alerts, seen with `strace`. The header needs no fsync
/// of its own. Every frame it replaces was copied into the database file, and that file
/// synced, by the complete checkpoint before it; and the next accept's flush (an `fdatasync`
/// of the whole WAL file) writes it to disk with that accept's frames, before anyone is
/// answered. With `synchronous = OFF` the write's commit would also run SQLite's automatic
/// checkpoint without syncing, were the WAL past the writer's threshold: it is used only on a
/// WAL well under it.
pub(super) const RESTART_WAL_UNSYNCED: &str =
    "PRAGMA synchronous = OFF; UPDATE wal_restart SET n = n + 1 WHERE id = 1";

/// Stops the checkpointer when the last clone of its store is dropped.
#[derive(Debug)]
pub(super) struct Checkpointer {
    _stop: oneshot::Sender<()>,
}

impl Checkpointer {
    /// Opens a connection of its own with `options` and checkpoints every [`INTERVAL`] until
    /// dropped; `writer` acquires the writer's connection, for the first write after a
    /// complete checkpoint ([`RESTART_WAL`]). A failure to connect or to checkpoint is logged,
    /// not fatal: the writer's own automatic checkpoint still bounds the WAL.
    pub(super) fn spawn<A, Fut, W>(options: SqliteConnectOptions, writer: A) -> Self
    where
        A: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<W, StoreError>> + Send,
        W: DerefMut<Target = SqliteConnection> + Send,
    {
        let (stop, mut stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let mut conn = match options.connect().await {
                Ok(conn) => conn,
                Err(error) => {
                    tracing::warn!(
                        "storage checkpointer could not open its connection: {error}; the \
                         writer checkpoints alone"
                    );
                    return;
                }
            };
            let mut ticks = tokio::time::interval(INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut wal = Wal::default();
            let mut failing = false;
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = ticks.tick() => {}
                }
                match wal.checkpoint(&mut conn, &writer).await {
                    Ok(_) => failing = false,
                    // Logged once per run of failures, not every tenth of a second.
                    Err(error) if !failing => {
                        failing = true;
                        tracing::warn!("storage checkpoint failed: {error}");
                    }
                    Err(_) => {}
                }
            }
            let _ = conn.close().await;
        });
        Self { _stop: stop }
    }
}

/// What one look of the checkpointer did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Checkpoint {
    /// Nobody committed anything since the last complete checkpoint.
    Idle,
    /// Some of the WAL is still to copy (a reader holds an older snapshot, or a commit came
    /// in meanwhile); the next look tries again.
    Partial,
    /// The whole WAL was copied, and the WAL started over.
    Restarted,
}

/// The checkpointer's memory between looks.
#[derive(Debug, Default)]
pub(super) struct Wal {
    /// `PRAGMA data_version` after the last complete checkpoint: it changes when another
    /// connection commits.
    checkpointed_at: Option<i64>,
}

impl Wal {
    /// One look: a `PASSIVE` checkpoint on `conn` if anyone committed since the last complete
    /// one and, when it copied everything, the WAL's restart through the writer's connection
    /// (`writer` acquires it).
    pub(super) async fn checkpoint<A, Fut, W>(
        &mut self,
        conn: &mut SqliteConnection,
        writer: &A,
    ) -> Result<Checkpoint, StoreError>
    where
        A: Fn() -> Fut,
        Fut: Future<Output = Result<W, StoreError>>,
        W: DerefMut<Target = SqliteConnection>,
    {
        let version = data_version(conn).await?;
        if self.checkpointed_at == Some(version) {
            return Ok(Checkpoint::Idle);
        }
        // busy (1 when it could not start), frames in the WAL, frames copied.
        let (busy, frames, copied): (i64, i64, i64) =
            sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
                .fetch_one(&mut *conn)
                .await?;
        if busy != 0 || copied != frames {
            return Ok(Checkpoint::Partial);
        }
        if frames == 0 {
            self.checkpointed_at = Some(version);
            return Ok(Checkpoint::Idle);
        }
        // The writer's connection is held from here until the version is read again, so that
        // nothing commits unseen in between.
        let mut writer = writer().await?;
        if data_version(conn).await? != version {
            // A commit came in since the checkpoint, and started the WAL over itself if it
            // had to; the next look checkpoints it.
            return Ok(Checkpoint::Partial);
        }
        let restart = if frames < i64::from(WRITER_AUTOCHECKPOINT_PAGES / 2) {
            RESTART_WAL_UNSYNCED
        } else {
            RESTART_WAL
        };
        sqlx::query(restart).execute(&mut *writer).await?;
        // The restart, committed by another connection, is not news.
        self.checkpointed_at = Some(data_version(conn).await?);
        Ok(Checkpoint::Restarted)
    }
}

/// `PRAGMA data_version`: it changes when another connection has committed.
async fn data_version(conn: &mut SqliteConnection) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar("PRAGMA data_version")
        .fetch_one(conn)
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::SqlitePool;
    use sqlx::sqlite::{SqliteJournalMode, SqlitePoolOptions};

    /// The WAL's header: its salts change when, and only when, the WAL starts over.
    fn salts(wal: &std::path::Path) -> Vec<u8> {
        std::fs::read(wal).expect("the WAL")[16..24].to_vec()
    }

    /// A WAL database `db` in `dir` with the restart's table and a table `t` to write to, and
    /// a pool of one connection to write with.
    async fn database(dir: &tempfile::TempDir) -> (SqliteConnectOptions, SqlitePool) {
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .expect("writer");
        sqlx::query(
            "CREATE TABLE wal_restart (id INTEGER PRIMARY KEY, n INTEGER NOT NULL);
             INSERT INTO wal_restart (id, n) VALUES (1, 0);
             CREATE TABLE t (x BLOB)",
        )
        .execute(&writer)
        .await
        .expect("schema");
        (options, writer)
    }

    async fn write(pool: &SqlitePool) {
        sqlx::query("INSERT INTO t (x) VALUES (randomblob(100))")
            .execute(pool)
            .await
            .expect("insert");
    }

    #[tokio::test]
    async fn a_complete_checkpoint_starts_the_wal_over_so_that_the_next_write_does_not() {
        let dir = tempfile::tempdir().expect("dir");
        let wal_path = dir.path().join("db-wal");
        let (options, writer) = database(&dir).await;
        let acquire = || {
            let writer = writer.clone();
            async move { Ok(writer.acquire().await?) }
        };
        let mut conn = options.connect().await.expect("checkpointer");
        let mut wal = Wal::default();

        assert_eq!(
            wal.checkpoint(&mut conn, &acquire).await.expect("look"),
            Checkpoint::Restarted
        );
        let started_over = salts(&wal_path);
        assert_eq!(
            wal.checkpoint(&mut conn, &acquire).await.expect("look"),
            Checkpoint::Idle,
            "nothing was committed since"
        );
        assert_eq!(salts(&wal_path), started_over, "an idle WAL is left alone");

        // The next write appends to the WAL already started over: it pays no restart.
        write(&writer).await;
        assert_eq!(salts(&wal_path), started_over);

        // A reader on an older snapshot keeps the last write in the WAL: no restart yet.
        let mut reader = options.connect().await.expect("reader");
        sqlx::query("BEGIN")
            .execute(&mut reader)
            .await
            .expect("begin");
        sqlx::query("SELECT COUNT(*) FROM t")
            .execute(&mut reader)
            .await
            .expect("read");
        write(&writer).await;
        assert_eq!(
            wal.checkpoint(&mut conn, &acquire).await.expect("look"),
            Checkpoint::Partial
        );
        assert_eq!(salts(&wal_path), started_over);
        sqlx::query("COMMIT")
            .execute(&mut reader)
            .await
            .expect("end");

        // A commit that came in while the checkpointer waited for the writer's connection
        // (here: made just before it is handed over) started the WAL over itself; the
        // checkpointer makes no write of its own and looks again.
        let acquire_after_a_commit = || {
            let writer = writer.clone();
            async move {
                write(&writer).await;
                Ok(writer.acquire().await?)
            }
        };
        assert_eq!(
            wal.checkpoint(&mut conn, &acquire_after_a_commit)
                .await
                .expect("look"),
            Checkpoint::Partial
        );
        let after_that_commit = salts(&wal_path);

        assert_eq!(
            wal.checkpoint(&mut conn, &acquire).await.expect("look"),
            Checkpoint::Restarted
        );
        assert_ne!(salts(&wal_path), after_that_commit, "the WAL started over");
        let count: i64 = sqlx::query_scalar("SELECT n FROM wal_restart")
            .fetch_one(&writer)
            .await
            .expect("count");
        assert_eq!(count, 2, "one restart per complete checkpoint");
    }

    /// The restart skips the new header's fsync (`synchronous = OFF` on the writer's connection,
    /// which the store sets back when it is released) unless the WAL was large enough for the
    /// write's commit to checkpoint, which must sync.
    #[tokio::test]
    async fn the_restart_skips_its_fsync_only_on_a_wal_under_the_writers_threshold() {
        let dir = tempfile::tempdir().expect("dir");
        let (options, writer) = database(&dir).await;
        let acquire = || {
            let writer = writer.clone();
            async move { Ok(writer.acquire().await?) }
        };
        let synchronous = || async {
            sqlx::query_scalar::<_, i64>("PRAGMA synchronous")
                .fetch_one(&writer)
                .await
                .expect("pragma")
        };
        let mut conn = options.connect().await.expect("checkpointer");
        let mut wal = Wal::default();

        write(&writer).await;
        assert_eq!(
            wal.checkpoint(&mut conn, &acquire).await.expect("look"),
            Checkpoint::Restarted
        );
        assert_eq!(
            synchronous().await,
            0,
            "a small WAL: restarted without an fsync"
        );

        // More frames than half the writer's threshold, in one commit.
        let pages = WRITER_AUTOCHECKPOINT_PAGES / 2 + 100;
        sqlx::query(
            "WITH RECURSIVE s (i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < ?)
             INSERT INTO t (x) SELECT randomblob(3000) FROM s",
        )
        .bind(i64::from(pages))
        .execute(&writer)
        .await
        .expect("a large commit");
        assert_eq!(
            wal.checkpoint(&mut conn, &acquire).await.expect("look"),
            Checkpoint::Restarted
        );
        assert_eq!(
            synchronous().await,
            1,
            "a large WAL: restarted with its fsync"
        );
    }
}
