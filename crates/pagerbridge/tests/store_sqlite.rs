//! The store conformance suite against a real SQLite file.

use pagerbridge::store::SendBudget;
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

#[tokio::test]
async fn the_budget_secret_is_shared_by_concurrent_opens_and_survives_a_restart() {
    let (one, dir) = fresh_store().await;
    let path = dir.path().join("nested/dir/pagerbridge.db");
    let two = SqliteStore::open(&path).await.expect("second open");
    // Neither has asked yet: both race to create the secret.
    let (a, b) = tokio::join!(one.budget_secret(), two.budget_secret());
    let secret = a.expect("secret");
    assert_eq!(b.expect("secret"), secret);
    drop((one, two));
    let reopened = SqliteStore::open(&path).await.expect("reopen");
    assert_eq!(reopened.budget_secret().await.expect("secret"), secret);
}
