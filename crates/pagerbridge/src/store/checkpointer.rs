//! SQLite's WAL checkpoints, moved off the writer.
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

use std::time::Duration;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};
use tokio::sync::oneshot;

/// How often the checkpointer looks; an idle database costs a read of the WAL's header.
pub(super) const INTERVAL: Duration = Duration::from_millis(100);

/// `wal_autocheckpoint` of the writer's connection: 4,000 pages (16 MiB with 4 KiB pages),
/// reached only if the checkpointer falls well behind.
pub(super) const WRITER_AUTOCHECKPOINT_PAGES: u32 = 4_000;

/// Stops the checkpointer when the last clone of its store is dropped.
#[derive(Debug)]
pub(super) struct Checkpointer {
    _stop: oneshot::Sender<()>,
}

impl Checkpointer {
    /// Opens a connection of its own with `options` and checkpoints every [`INTERVAL`] until
    /// dropped. A failure to connect or to checkpoint is logged, not fatal: the writer's own
    /// automatic checkpoint still bounds the WAL.
    pub(super) fn spawn(options: SqliteConnectOptions) -> Self {
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
            let mut failing = false;
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = ticks.tick() => {}
                }
                match sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                    .execute(&mut conn)
                    .await
                {
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
