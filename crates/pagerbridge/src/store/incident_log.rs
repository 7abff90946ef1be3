//! SQLite's log of incident states not yet folded into `incidents` (migration 0013), and the
//! fold that moves them there.
//!
//! `incidents` is keyed by (target, dedup key), and a dedup key is a hash: upserting a new
//! incident dirtied a random page of that key and of the `updated_at` index, about a fifth of
//! an accept's work (docs/performance.md). An accept appends the states it decided to
//! `incident_log` instead, whose pages fill in order, and a fold moves a batch of them into
//! `incidents` later, in a transaction of its own, off the request's line: each page of the key
//! is written once for many incidents. Until then:
//!
//! - the writer decides against the states held here in memory ([`Unfolded`]), which are the
//!   log's latest (both change only on the writer's connection, after its commits), but for
//!   `last_sent_at`: a delivery notes it on the log only, and no rule reads it;
//! - the fingerprint lookup, on a reader's connection, merges them with what it read;
//! - every other reader of `incidents` folds first;
//! - a delivery notes its send on the log's states too, and both the fold and the accept keep
//!   the later of two `last_sent_at`s, so a state decided before the send cannot undo it;
//! - a store opened after a crash folds what is left before it serves anything.
//!
//! Only states that the fingerprint index (migration 0012) would not hold go to the log: keyed
//! by their labels, or without fingerprint. A batch with any other state folds first and
//! upserts directly, so that index never misses an incident.
//!
//! Counts stay right: an accept counts the incidents it creates itself (migration 0010), and
//! the fold applies the log in order, so the trigger on `incidents` counts each change of
//! status as it did when accepts upserted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, RwLock, RwLockReadGuard, RwLockWriteGuard, oneshot};

use super::{IncidentState, StoreError};

/// Rows of the log at which the writer asks for a fold. A fold of about this many takes a few
/// milliseconds of the writer; more would make the log's scans (a delivery notes its send
/// on the log's states, which are not indexed) and the memory held here larger for little
/// more gain.
pub(super) const FOLD_AT: usize = 1000;

/// A log that waited this long is folded even if it is short, so that a quiet store's
/// `incidents` is current and its log empty.
pub(super) const FOLD_AFTER: Duration = Duration::from_secs(1);

/// The assignments of an upsert into `incidents` (`excluded` the new state), for the accept's
/// direct upsert and the fold alike. The chain never changes. Of two `last_sent_at`s the later
/// is kept: deliveries set it apart from accepts, and a state decided before a send was noted
/// carries the earlier one (SQLite's `MAX` of a NULL is NULL, hence the `COALESCE`s).
macro_rules! upsert_incident {
    () => {
        " ON CONFLICT (target, dedup_key) DO UPDATE SET
            fingerprint = excluded.fingerprint, labels_key = excluded.labels_key,
            status = excluded.status,
            last_payload_hash = excluded.last_payload_hash,
            last_trigger_at = excluded.last_trigger_at,
            last_sent_at = MAX(COALESCE(incidents.last_sent_at, excluded.last_sent_at),
                               COALESCE(excluded.last_sent_at, incidents.last_sent_at)),
            updated_at = excluded.updated_at,
            source = excluded.source, first_event_at = excluded.first_event_at"
    };
}
pub(super) use upsert_incident;

/// The log's states applied to `incidents` in order, then the log emptied: statements for a
/// transaction. `WHERE true` tells SQLite's parser that `ON CONFLICT` is the upsert's.
macro_rules! fold {
    () => {
        concat!(
            "INSERT INTO incidents (",
            $crate::store::rows::incident_columns!(),
            ") SELECT ",
            $crate::store::rows::incident_columns!(),
            " FROM incident_log WHERE true ORDER BY seq",
            $crate::store::incident_log::upsert_incident!(),
            "; DELETE FROM incident_log;"
        )
    };
}
pub(super) use fold;

/// A fold in a transaction of its own, relaxed (its commit skips the fsync): the log and the
/// fold commit together, so a fold lost to a crash leaves the log to fold again.
pub(super) const FOLD: &str = concat!("PRAGMA synchronous = NORMAL; BEGIN; ", fold!(), " COMMIT");

/// Whether a state may go to the log: the fingerprint index would not hold it (the index's
/// condition is `fingerprint IS NOT NULL AND labels_key IS NOT 1`).
pub(super) fn loggable(state: &IncidentState) -> bool {
    state.fingerprint.is_none() || state.labels_key
}

/// The states of the log, by (target, dedup key), each an incident's latest; shared by the
/// store's clones. Changed only by the holder of the writer's connection, right after its
/// commit and before it gives the connection back, so that the next writer sees exactly the
/// log.
#[derive(Debug, Default)]
pub(super) struct Unfolded {
    states: Mutex<HashMap<(String, String), IncidentState>>,
    /// Held shared by a reader that reads `incidents` and then looks here, and exclusively by
    /// a fold from before its commit until it has emptied this: no state moves from here to
    /// there between the reader's two looks.
    gate: RwLock<()>,
    /// Rows of the log (an incident's several states counted each): a fold is due at
    /// [`FOLD_AT`].
    rows: AtomicUsize,
    /// Wakes the folder ([`Folder`]) when the log is long.
    long: Notify,
}

impl Unfolded {
    fn states(&self) -> MutexGuard<'_, HashMap<(String, String), IncidentState>> {
        // A panic while holding it left a map that is still whole (each change is one insert
        // or a clear).
        self.states.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.states().is_empty()
    }

    /// Replaces the states in `loaded` (read from `incidents`) by the later ones held here,
    /// and adds those of `keys` found only here.
    pub(super) fn overlay<'a>(
        &self,
        loaded: &mut HashMap<(String, String), IncidentState>,
        keys: impl Iterator<Item = (&'a str, &'a str)>,
    ) {
        let states = self.states();
        if states.is_empty() {
            return;
        }
        for (target, dedup_key) in keys {
            let id = (target.to_owned(), dedup_key.to_owned());
            if let Some(state) = states.get(&id) {
                loaded.insert(id, state.clone());
            }
        }
    }

    /// The writer committed `changed` to the log; wakes the folder once the log is long.
    pub(super) fn logged(&self, changed: &[IncidentState]) {
        let mut states = self.states();
        let rows = self.rows.fetch_add(changed.len(), Ordering::SeqCst) + changed.len();
        for state in changed {
            states.insert(
                (state.target.clone(), state.dedup_key.clone()),
                state.clone(),
            );
        }
        if rows >= FOLD_AT {
            self.long.notify_one();
        }
    }

    /// Log rows: the states the log holds, an incident's several counted each.
    pub(super) fn rows(&self) -> usize {
        self.rows.load(Ordering::SeqCst)
    }

    /// Held by a fold from before its commit until [`Unfolded::folded`].
    pub(super) async fn folding(&self) -> RwLockWriteGuard<'_, ()> {
        self.gate.write().await
    }

    /// The writer committed a fold (holding [`Unfolded::folding`]): the log is empty.
    pub(super) fn folded(&self, _folding: RwLockWriteGuard<'_, ()>) {
        self.states().clear();
        self.rows.store(0, Ordering::SeqCst);
    }

    /// Held by a reader of `incidents` until it has merged what is held here
    /// ([`Unfolded::merge_lookup`]).
    pub(super) async fn reading(&self) -> RwLockReadGuard<'_, ()> {
        self.gate.read().await
    }

    /// The fingerprint lookup's `candidates` read from `incidents` (holding
    /// [`Unfolded::reading`] since before the read), as (fingerprint, dedup key, `updated_at`),
    /// with what is held here: those of incidents with a later state here dropped, and the
    /// states here of `labels_keys` on `target` keyed by their labels with one of
    /// `fingerprints` added, last (they are the latest). No state here is in the fingerprint
    /// index ([`loggable`]), so none other is a candidate.
    pub(super) fn merge_lookup(
        &self,
        _reading: &RwLockReadGuard<'_, ()>,
        target: &str,
        candidates: &mut Vec<(String, String, i64)>,
        labels_keys: &[&str],
        fingerprints: &[&str],
    ) {
        let states = self.states();
        if states.is_empty() {
            return;
        }
        candidates.retain(|(_, key, _)| !states.contains_key(&(target.to_owned(), key.clone())));
        candidates.extend(
            labels_keys
                .iter()
                .filter_map(|key| states.get(&(target.to_owned(), (*key).to_owned())))
                .filter(|state| state.labels_key)
                .filter_map(|state| {
                    let fingerprint = state.fingerprint.as_deref()?;
                    fingerprints.contains(&fingerprint).then(|| {
                        (
                            fingerprint.to_owned(),
                            state.dedup_key.clone(),
                            state.updated_at.as_millisecond(),
                        )
                    })
                }),
        );
    }
}

#[derive(Debug)]
/// The task that folds the log when it is long or has waited [`FOLD_AFTER`], until dropped.
pub(super) struct Folder {
    _stop: oneshot::Sender<()>,
}

impl Folder {
    /// `fold_now` folds on the writer's connection when the log reaches [`FOLD_AT`] rows, or
    /// `fold_after` ([`FOLD_AFTER`]) after the last fold or wake-up. A failure is logged and
    /// tried again at the next turn; readers fold first anyway.
    pub(super) fn spawn<F, Fut>(unfolded: Arc<Unfolded>, fold_after: Duration, fold_now: F) -> Self
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), StoreError>> + Send,
    {
        let (stop, mut stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            loop {
                let long = tokio::select! {
                    _ = &mut stopped => break,
                    () = unfolded.long.notified() => true,
                    () = tokio::time::sleep(fold_after) => false,
                };
                // A wake-up stored while the last fold ran finds a short log: it waits its
                // turn rather than fold a few states in a transaction more.
                if unfolded.is_empty() || (long && unfolded.rows() < FOLD_AT) {
                    continue;
                }
                if let Err(error) = fold_now().await {
                    tracing::warn!(%error, "folding the incidents' log failed; trying again");
                }
            }
        });
        Self { _stop: stop }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::suppress::Status;
    use jiff::Timestamp;
    use tokio::sync::mpsc;
    use tokio::time::Instant;

    fn state(key: &str) -> IncidentState {
        IncidentState {
            target: "t".to_owned(),
            dedup_key: key.to_owned(),
            fingerprint: Some(format!("fp-{key}")),
            labels_key: true,
            status: Status::Triggered,
            last_payload_hash: None,
            last_trigger_at: None,
            last_sent_at: None,
            updated_at: Timestamp::UNIX_EPOCH,
            source: None,
            first_event_at: None,
            chain: 0,
        }
    }

    /// A folder over `unfolded` whose folds empty it and say when they ran.
    fn folder(unfolded: &Arc<Unfolded>) -> (Folder, mpsc::UnboundedReceiver<Instant>) {
        let (ran, folds) = mpsc::unbounded_channel();
        let folder = Folder::spawn(unfolded.clone(), FOLD_AFTER, {
            let unfolded = unfolded.clone();
            move || {
                let (unfolded, ran) = (unfolded.clone(), ran.clone());
                async move {
                    unfolded.folded(unfolded.folding().await);
                    let _ = ran.send(Instant::now());
                    Ok(())
                }
            }
        });
        (folder, folds)
    }

    /// A log of [`FOLD_AT`] rows is folded at once (the clock, paused, has not moved), one
    /// that stays short once it has waited [`FOLD_AFTER`].
    #[tokio::test(start_paused = true)]
    async fn a_long_log_is_folded_at_once_and_a_short_one_after_a_while() {
        let unfolded = Arc::new(Unfolded::default());
        let (_folder, mut folds) = folder(&unfolded);
        let start = Instant::now();
        let long: Vec<IncidentState> = (0..FOLD_AT).map(|i| state(&format!("k{i}"))).collect();
        unfolded.logged(&long);
        assert_eq!(folds.recv().await, Some(start));
        assert!(unfolded.is_empty());
        assert_eq!(unfolded.rows(), 0);
        let short = Instant::now();
        unfolded.logged(&[state("k")]);
        let folded = folds.recv().await.expect("folded");
        assert!(folded - short >= FOLD_AFTER, "{:?}", folded - short);
        assert!(unfolded.is_empty());
    }

    /// Rows count, not incidents: one incident changed [`FOLD_AT`] times makes a long log.
    #[tokio::test(start_paused = true)]
    async fn an_incident_changed_often_makes_a_long_log() {
        let unfolded = Arc::new(Unfolded::default());
        let (_folder, mut folds) = folder(&unfolded);
        let start = Instant::now();
        for _ in 0..FOLD_AT {
            unfolded.logged(&[state("k")]);
        }
        assert_eq!(folds.recv().await, Some(start));
    }

    /// The lookup's merge: a candidate from `incidents` whose incident has a state in the log
    /// is dropped; the log's states keyed by their labels, of the asked fingerprints, added.
    #[tokio::test]
    async fn the_lookup_merge_prefers_the_log() {
        let unfolded = Unfolded::default();
        let moved = IncidentState {
            fingerprint: Some("fp-new".to_owned()),
            ..state("moved")
        };
        unfolded.logged(&[moved, state("a"), state("b")]);
        let mut candidates = vec![
            ("fp-old".to_owned(), "moved".to_owned(), 1),
            ("fp-x".to_owned(), "other".to_owned(), 2),
        ];
        let reading = unfolded.reading().await;
        unfolded.merge_lookup(
            &reading,
            "t",
            &mut candidates,
            &["a", "b", "absent"],
            &["fp-old", "fp-x", "fp-a"],
        );
        assert_eq!(
            candidates,
            vec![
                ("fp-x".to_owned(), "other".to_owned(), 2),
                ("fp-a".to_owned(), "a".to_owned(), 0),
            ]
        );
    }
}
