//! The fsync of an accept's commit, made apart from the commit (SQLite).
//!
//! An accept commits with `synchronous = NORMAL`: SQLite writes the transaction's frames to the
//! WAL file and returns without an fsync. [`Wal::flush_for`] then fsyncs the WAL file on the
//! group commit's flush thread while its writer goes on with the next batch, and only then
//! are the batch's callers answered (their 2xx). What that changes is when the disk works, not
//! what is promised: a caller still hears of its events only once they are on disk; the
//! writer's CPU and the disk's flush overlap instead of taking turns.
//!
//! Why an fsync of the WAL file is enough: SQLite appends a commit's frames to the WAL, and
//! recovery keeps a prefix of committed transactions (frames carry cumulative checksums), so
//! once the file's data is on disk every commit written before the fsync began survives a
//! power loss. The file is opened for each flush, not once: SQLite deletes the WAL when its
//! last connection closes and creates a new one with the next, and an fsync of a file that
//! was deleted would flush nothing of the new one. When there is no WAL file, the last
//! connection's close checkpointed every commit into the database file (and synced it, which
//! a checkpoint does unless `synchronous = OFF`); that file is flushed instead, to be sure.
//! A commit that returned had already created the WAL and synced its header (with its
//! directory entry, the first time), which `NORMAL` still does.

use std::io;
use std::path::{Path, PathBuf};

use super::StoreError;
use super::accept_jobs::AcceptResult;

/// The WAL file beside a database file.
#[derive(Debug)]
pub(super) struct Wal {
    database: PathBuf,
    wal: PathBuf,
}

impl Wal {
    /// The WAL of the database at `database` (SQLite names it `<database>-wal`).
    pub(super) fn beside(database: &Path) -> Self {
        let mut wal = database.as_os_str().to_owned();
        wal.push("-wal");
        Self {
            database: database.to_owned(),
            wal: wal.into(),
        }
    }

    /// Makes the commits behind `results` durable, then gives back what to answer: the
    /// results, or, if the flush failed, an error for each job that had committed (what a
    /// failed commit answers is its own error already). A flush that fails leaves it unknown
    /// what reached the disk: the callers hear an error and retry, and the events already
    /// committed may be sent twice, which PagerDuty's dedup key absorbs.
    pub(super) fn flush_for(&self, results: Vec<AcceptResult>) -> Vec<AcceptResult> {
        // Only failed jobs: nothing of theirs was committed, so there is nothing to flush.
        if results.iter().all(Result::is_err) {
            return results;
        }
        let flushed = flush(&self.wal, &self.database);
        match flushed {
            Ok(()) => results,
            Err(error) => {
                tracing::error!(%error, "flushing the accepted events to disk failed; their senders get an error and retry");
                results
                    .into_iter()
                    .map(|result| {
                        result.and_then(|_| {
                            Err(StoreError::Database(sqlx::Error::Io(io::Error::new(
                                error.kind(),
                                format!("flushing the write-ahead log to disk: {error}"),
                            ))))
                        })
                    })
                    .collect()
            }
        }
    }
}

/// `fdatasync` of the WAL file, or of the database file when there is no WAL (see the module's
/// doc). `fdatasync` also writes the file's size when it grew, which reading it back needs.
fn flush(wal: &Path, database: &Path) -> io::Result<()> {
    match std::fs::File::open(wal) {
        Ok(file) => file.sync_data(),
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            std::fs::File::open(database)?.sync_data()
        }
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Acceptance;

    #[test]
    fn the_wal_is_named_as_sqlite_names_it() {
        let wal = Wal::beside(Path::new("/var/lib/pagerbridge/pagerbridge.db"));
        assert_eq!(
            wal.wal,
            Path::new("/var/lib/pagerbridge/pagerbridge.db-wal")
        );
    }

    #[test]
    fn a_flush_that_fails_answers_an_error_for_every_committed_job() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Neither file exists: the flush cannot open either.
        let wal = Wal::beside(&dir.path().join("missing.db"));
        let results = vec![
            Ok(vec![Acceptance::Queued { id: 1 }]),
            Err(StoreError::Corrupt("its own error".into())),
            Ok(Vec::new()),
        ];
        let answered = wal.flush_for(results);
        assert_eq!(answered.len(), 3);
        for (i, answer) in answered.iter().enumerate() {
            let error = answer
                .as_ref()
                .expect_err("no job may hear of success")
                .to_string();
            if i == 1 {
                assert_eq!(error, "stored data is corrupt: its own error");
            } else {
                assert!(error.contains("flushing the write-ahead log"), "{error}");
            }
        }
    }

    #[test]
    fn a_flush_of_a_wal_answers_the_results() {
        let dir = tempfile::tempdir().expect("tempdir");
        let database = dir.path().join("p.db");
        std::fs::write(&database, b"").expect("database");
        std::fs::write(dir.path().join("p.db-wal"), b"frames").expect("wal");
        let wal = Wal::beside(&database);
        let answered = wal.flush_for(vec![Ok(vec![Acceptance::Queued { id: 7 }])]);
        assert!(matches!(answered.as_slice(), [Ok(acceptances)] if acceptances.len() == 1));
        // No WAL: the database file is flushed instead, and the results stand.
        std::fs::remove_file(dir.path().join("p.db-wal")).expect("remove");
        let answered = wal.flush_for(vec![Ok(Vec::new())]);
        assert!(matches!(answered.as_slice(), [Ok(_)]));
    }
}
