//! A fresh PostgreSQL database per test, on the machine's server.
//!
//! Each [`TestDatabase`] is `pb_test_<unix seconds>_<random>`, created on the server at
//! `PAGERBRIDGE_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`, see
//! [`needs::postgres_url`]) and dropped when the guard is dropped. Databases a killed run left
//! behind are dropped by the next run once they are an hour old; the timestamp in the name
//! says how old they are. Without a server, [`TestDatabase::create`] panics, so a test that
//! needs one fails instead of passing untested.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection};

use crate::needs;

const PREFIX: &str = "pb_test_";
/// Older test databases are leftovers of killed runs: no test runs that long.
const STALE_AFTER: Duration = Duration::from_secs(3600);

/// The URL without its password, for messages.
pub fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                // Cannot fail: a URL with a password has a host.
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => "(unparsable URL)".to_owned(),
    }
}

/// An administrative connection to the server.
async fn admin_connection(url: &str) -> Result<PgConnection, String> {
    let error =
        match tokio::time::timeout(Duration::from_secs(10), PgConnection::connect(url)).await {
            Ok(Ok(conn)) => return Ok(conn),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer within 10s".to_owned(),
        };
    Err(format!(
        "PostgreSQL not reachable at {}: {error}",
        redacted(url)
    ))
}

/// A name no other test, run or process picks: the creation time, for stale cleanup, then
/// process-seeded randomness, the process id and a counter.
fn unique_database_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(since_epoch.as_nanos());
    hasher.write_u32(std::process::id());
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    format!("{PREFIX}{}_{:016x}", since_epoch.as_secs(), hasher.finish())
}

/// Names are interpolated into DDL (identifiers cannot be bound), so only ours are accepted.
fn is_test_database_name(name: &str) -> bool {
    name.strip_prefix(PREFIX).is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase() || b == b'_')
    })
}

async fn drop_database(conn: &mut PgConnection, name: &str) -> Result<(), String> {
    if !is_test_database_name(name) {
        return Err(format!("refusing to drop {name:?}: not a test database"));
    }
    // FORCE: the test's pool may still hold connections to it.
    sqlx::raw_sql(AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
    )))
    .execute(conn)
    .await
    .map(drop)
    .map_err(|e| e.to_string())
}

/// Drops test databases older than [`STALE_AFTER`], once per process: what killed runs, whose
/// guards never ran, left behind. Best effort.
async fn drop_stale_databases(conn: &mut PgConnection) {
    static DONE: AtomicBool = AtomicBool::new(false);
    if DONE.swap(true, Ordering::Relaxed) {
        return;
    }
    let names: Vec<String> = match sqlx::query_scalar(
        "SELECT datname FROM pg_database WHERE datname LIKE 'pb\\_test\\_%'",
    )
    .fetch_all(&mut *conn)
    .await
    {
        Ok(names) => names,
        Err(e) => {
            eprintln!("warning: listing old test databases: {e}");
            return;
        }
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    for name in names {
        let created = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|secs| secs.parse::<u64>().ok());
        if created.is_some_and(|at| now.saturating_sub(at) > STALE_AFTER.as_secs())
            && let Err(e) = drop_database(conn, &name).await
        {
            eprintln!("warning: dropping old test database {name}: {e}");
        }
    }
}

/// A test's database; dropping the guard drops the database.
pub struct TestDatabase {
    server_url: String,
    name: String,
    /// Where the stores connect.
    pub url: String,
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop cannot await, and the test's runtime may be the one running this: a thread of
        // its own with a runtime of its own does the (short) cleanup.
        let server_url = self.server_url.clone();
        let name = self.name.clone();
        let cleanup = std::thread::spawn(move || -> Result<(), String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let mut conn = PgConnection::connect(&server_url)
                    .await
                    .map_err(|e| e.to_string())?;
                drop_database(&mut conn, &name).await?;
                conn.close().await.map_err(|e| e.to_string())
            })
        });
        match cleanup.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: dropping test database {}: {e}", self.name),
            Err(_) => eprintln!("warning: dropping test database {} panicked", self.name),
        }
    }
}

impl TestDatabase {
    /// Creates an empty database (not migrated: the store under test does that) and returns
    /// the guard that drops it. Panics when the server cannot be reached, so that a test that
    /// needs one fails.
    pub async fn create() -> TestDatabase {
        Self::create_on(&needs::postgres_url())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Creates an empty database on the server at `server_url` (any database of it: the new
    /// one replaces the path). For callers that are not tests, such as the load example,
    /// which report the error instead of panicking.
    pub async fn create_on(server_url: &str) -> Result<TestDatabase, String> {
        let mut admin = admin_connection(server_url).await?;
        drop_stale_databases(&mut admin).await;
        let name = unique_database_name();
        let mut url = url::Url::parse(server_url)
            .map_err(|e| format!("not a URL ({e}): {}", redacted(server_url)))?;
        url.set_path(&format!("/{name}"));
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut admin)
            .await
            .map_err(|e| format!("creating test database {name}: {e}"))?;
        let _ = admin.close().await;
        Ok(TestDatabase {
            server_url: server_url.to_owned(),
            name,
            url: url.to_string(),
        })
    }

    /// The database's name, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }
}
