//! The store conformance suite against a real SQLite file.

use pagerbridge::store::sqlite::SqliteStore;

#[macro_use]
mod conformance;

async fn fresh_store() -> (SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("nested/dir/pagerbridge.db"))
        .await
        .expect("open store");
    (store, dir)
}

conformance_tests!(fresh_store());
