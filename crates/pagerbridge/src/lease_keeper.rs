//! The lease keeper: work that must run on one replica at a time — each target's delivery lane,
//! and the [`Singleton`]s (housekeeping, the silence watcher, the fallback publisher) — runs on
//! this replica only while this replica holds the work's lease (see [`crate::store::Leases`]).
//!
//! `keep_leased` is the one loop for all of them. Holding the lease, the keeper renews it
//! every `lease_ttl / 3`, so one missed round (a slow database, a short pause) does not lose
//! it, and runs the work; losing it (another replica took over, or our lease ran out while the
//! database did not answer), it tells the work to stop and waits for it. A keeper that does not
//! hold the lease tries more often, every `min(lease_ttl / 3, 500 ms)`: when the holder dies or
//! stalls, its lease is taken over about half a second after it expired at most, not a third of
//! a `lease_ttl`. On shutdown the keeper stops the work and releases the lease, so that another
//! replica takes over at once rather than when the lease runs out.
//!
//! What the work is, and what taking or losing it means for logs and metrics, is the caller's:
//! [`crate::delivery::leases`] runs a lane fenced by the lease's epoch, `keep_singleton` runs a
//! singleton and reports it in `pagerbridge_singleton_owned`.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::internal_events::{InternalEvent, SingletonOwnership, StorageFailed, StorageOperation};
use crate::metrics::Metrics;
use crate::store::{Lease, LeaseName, Leases, ReplicaId};

/// Who this replica is and how long its leases last.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub replica: ReplicaId,
    pub ttl: Duration,
}

/// How a keeper tells its work to stop: `Some(deadline)` once it should, finishing what it has
/// in flight (and, for delivery, draining until `deadline`). A dropped sender means stop too.
pub type StopSignal = watch::Receiver<Option<Instant>>;

/// Resolves once `stop` says stop (or its keeper is gone). For singletons, which stop between
/// rounds rather than drain.
pub(crate) async fn stopped(stop: &mut StopSignal) {
    // A future of its own, so that the guard `wait_for` returns (not `Send`) is dropped here
    // rather than held in a caller's `select!` while its other branch awaits.
    let _ = stop.wait_for(Option::is_some).await;
}

/// A keeper without the lease tries to take it at least this often: the bound on how late it
/// notices that the holder's lease expired.
const WAITING_RETRY: Duration = Duration::from_millis(500);

/// How long a keeper waits before its next acquire-or-renew: a holder renews every third of the
/// ttl (one failed round must not lose the lease), a waiter tries every [`WAITING_RETRY`] (or
/// that third, if shorter).
fn next_try(holding: bool, ttl: Duration) -> Duration {
    let renew = ttl / 3;
    if holding {
        renew
    } else {
        renew.min(WAITING_RETRY)
    }
}

/// Work this replica is running, its stop signal, and the lease epoch it runs under.
struct Running {
    epoch: i64,
    stop: watch::Sender<Option<Instant>>,
    task: JoinHandle<()>,
}

impl Running {
    /// Asks the work to stop, giving it until `deadline` to finish, and waits for it.
    async fn stop(mut self, deadline: Instant, name: &LeaseName) {
        let _ = self.stop.send(Some(deadline));
        if let Err(error) = (&mut self.task).await {
            tracing::error!(lease = %name, %error, "work under a lease crashed");
        }
    }
}

impl Drop for Running {
    /// The work never outlives its keeper: only the keeper would stop it and release its lease.
    /// A keeper dropped mid-run (its task aborted) takes its work with it, as a dying process
    /// would; the lease then expires. After [`Running::stop`] the task is done and this is a no-op.
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Keeps the lease `name` and runs the work while it is held, until `shutdown` gives a
/// deadline; then the work stops (by the deadline) and the lease is released.
///
/// `start(epoch, stop)` spawns the work under the lease as granted at `epoch`; the work must
/// end once `stop` holds a deadline. `owned(Some(epoch))` is called when this replica takes
/// the lease (or holds it at a new epoch), `owned(None)` when it no longer does. Storage
/// failures are counted in `metrics`.
pub(crate) async fn keep_leased(
    name: LeaseName,
    store: Arc<dyn Leases>,
    settings: LeaseSettings,
    metrics: &Metrics,
    mut shutdown: watch::Receiver<Option<Instant>>,
    mut start: impl FnMut(i64, StopSignal) -> JoinHandle<()>,
    mut owned: impl FnMut(Option<i64>),
) {
    let mut running: Option<Running> = None;
    // Our lease as last granted; it still counts while the store does not answer, until its
    // expiry.
    let mut held: Option<Lease> = None;
    let deadline = loop {
        if let Some(deadline) = *shutdown.borrow() {
            break deadline;
        }
        held = match store
            .acquire_or_renew(&name, &settings.replica, settings.ttl, Timestamp::now())
            .await
        {
            Ok(lease) => lease,
            Err(error) => {
                StorageFailed {
                    operation: StorageOperation::Leases,
                    what: &format!("cannot acquire or renew the lease {name}"),
                    target: None,
                    error: &error,
                }
                .emit(metrics);
                held.filter(|lease| lease.expires_at > Timestamp::now())
            }
        };
        running = match (running, held) {
            // Still ours at the same epoch, and the work is still going: leave it be.
            (Some(work), Some(lease)) if work.epoch == lease.epoch && !work.task.is_finished() => {
                Some(work)
            }
            (current, lease) => {
                if let Some(work) = current {
                    work.stop(Instant::now(), &name).await;
                    if lease.is_none() {
                        owned(None);
                    }
                }
                lease.map(|lease| {
                    owned(Some(lease.epoch));
                    let (stop, stop_rx) = watch::channel(None);
                    Running {
                        epoch: lease.epoch,
                        stop,
                        task: start(lease.epoch, stop_rx),
                    }
                })
            }
        };
        tokio::select! {
            () = tokio::time::sleep(next_try(running.is_some(), settings.ttl)) => {}
            // Shutdown began (or its sender is gone: stop too, at once).
            changed = shutdown.changed() => {
                if changed.is_err() {
                    break Instant::now();
                }
            }
        }
    };
    if let Some(work) = running {
        let epoch = work.epoch;
        work.stop(deadline, &name).await;
        owned(None);
        // Hand the work over now rather than after the lease runs out.
        if let Err(error) = store.release(&name, &settings.replica, epoch).await {
            StorageFailed {
                operation: StorageOperation::Leases,
                what: &format!("cannot release the lease {name}"),
                target: None,
                error: &error,
            }
            .emit(metrics);
        }
    }
}

/// Work that runs on one replica at a time, under a lease of its own name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Singleton {
    /// Dead-letters events past `max_event_age`, forgets incident state past `incident_ttl`.
    Housekeeping,
    /// Polls Alertmanager for silenced alerts (when `alertmanager.url` is set).
    Silence,
    /// Tells the fallback webhook about events PagerDuty will not get (when `fallback.url` is set).
    Fallback,
}

impl Singleton {
    pub const ALL: [Singleton; 3] = [
        Singleton::Housekeeping,
        Singleton::Silence,
        Singleton::Fallback,
    ];

    /// Its name: in its lease, and in the `singleton` label of `pagerbridge_singleton_owned`.
    pub fn as_str(self) -> &'static str {
        match self {
            Singleton::Housekeeping => "housekeeping",
            Singleton::Silence => "silence",
            Singleton::Fallback => "fallback",
        }
    }

    pub fn lease_name(self) -> LeaseName {
        LeaseName::singleton(self.as_str())
    }
}

/// Keeps `singleton`'s lease and runs it while held, until `shutdown` (see [`keep_leased`]):
/// `start` spawns the singleton, which must end once its [`StopSignal`] holds a deadline.
pub(crate) async fn keep_singleton(
    singleton: Singleton,
    store: Arc<dyn Leases>,
    settings: LeaseSettings,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<Option<Instant>>,
    mut start: impl FnMut(StopSignal) -> JoinHandle<()>,
) {
    metrics.init_singleton(singleton);
    keep_leased(
        singleton.lease_name(),
        store,
        settings,
        &metrics,
        shutdown,
        |_epoch, stop| start(stop),
        |epoch| SingletonOwnership { singleton, epoch }.emit(&metrics),
    )
    .await;
}

/// Keepers of singletons started together and stopped together.
pub(crate) struct Singletons {
    // Declared before `stop`, so that a dropped `Singletons` aborts the keepers before they
    // could see the stop signal gone and release their leases (only `shutdown` hands over).
    tasks: JoinSet<()>,
    stop: watch::Sender<Option<Instant>>,
    store: Arc<dyn Leases>,
    settings: LeaseSettings,
    metrics: Arc<Metrics>,
}

impl Singletons {
    pub(crate) fn new(
        store: Arc<dyn Leases>,
        settings: LeaseSettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            tasks: JoinSet::new(),
            stop: watch::channel(None).0,
            store,
            settings,
            metrics,
        }
    }

    /// Starts the keeper of `singleton`, which runs `start` whenever this replica takes the lease.
    pub(crate) fn spawn(
        &mut self,
        singleton: Singleton,
        start: impl FnMut(StopSignal) -> JoinHandle<()> + Send + 'static,
    ) {
        self.tasks.spawn(keep_singleton(
            singleton,
            self.store.clone(),
            self.settings.clone(),
            self.metrics.clone(),
            self.stop.subscribe(),
            start,
        ));
    }

    /// Stops the singletons this replica runs (each finishes what it has in flight) and
    /// releases their leases.
    pub(crate) async fn shutdown(mut self) {
        // `send_replace`: stored even if no keeper listens (any more).
        self.stop.send_replace(Some(Instant::now()));
        while let Some(result) = self.tasks.join_next().await {
            if let Err(error) = result {
                tracing::error!(%error, "a singleton's lease keeper crashed");
            }
        }
    }
}

/// Replicas' keepers on one real store, in real time: leases expire by the wall clock, so a
/// paused tokio clock cannot stand in for it. Every wait is on a condition. The work is a fake
/// that records where and when it runs; what each singleton really does is tested with it.
#[cfg(test)]
pub(crate) mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;
    use crate::metrics::SingletonLabel;
    use crate::store::sqlite::SqliteStore;
    use crate::store::{LeaseInfo, Store};

    const TTL: Duration = Duration::from_millis(1500);

    /// Where each singleton's (fake) work runs right now, across the replicas of a test, and
    /// every start; a start while another replica's work still runs is an overlap.
    #[derive(Default)]
    struct Runs {
        now: Mutex<HashMap<Singleton, Vec<String>>>,
        started: Mutex<Vec<(Singleton, String, Timestamp)>>,
        overlaps: Mutex<Vec<String>>,
    }

    impl Runs {
        fn enter(self: &Arc<Self>, singleton: Singleton, replica: &str) -> Presence {
            let mut now = self.now.lock().expect("lock");
            let here = now.entry(singleton).or_default();
            if !here.is_empty() {
                self.overlaps.lock().expect("lock").push(format!(
                    "{} on {replica} while on {here:?}",
                    singleton.as_str()
                ));
            }
            here.push(replica.to_owned());
            self.started.lock().expect("lock").push((
                singleton,
                replica.to_owned(),
                Timestamp::now(),
            ));
            Presence {
                runs: self.clone(),
                singleton,
                replica: replica.to_owned(),
            }
        }

        fn running(&self, singleton: Singleton) -> Vec<String> {
            self.now
                .lock()
                .expect("lock")
                .get(&singleton)
                .cloned()
                .unwrap_or_default()
        }

        fn overlaps(&self) -> Vec<String> {
            self.overlaps.lock().expect("lock").clone()
        }

        fn first_start(&self, singleton: Singleton, replica: &str) -> Option<Timestamp> {
            self.started
                .lock()
                .expect("lock")
                .iter()
                .find(|(s, r, _)| *s == singleton && r == replica)
                .map(|(_, _, at)| *at)
        }
    }

    /// A fake singleton's presence in [`Runs`], for as long as its task lives (stopped or
    /// aborted alike).
    struct Presence {
        runs: Arc<Runs>,
        singleton: Singleton,
        replica: String,
    }

    impl Drop for Presence {
        fn drop(&mut self) {
            if let Ok(mut now) = self.runs.now.lock()
                && let Some(here) = now.get_mut(&self.singleton)
            {
                here.retain(|r| r != &self.replica);
            }
        }
    }

    /// Fake work: registers in `runs`, and runs until told to stop. Like a lane, it does not
    /// stop just because its stop signal's sender is gone: a crashed keeper must take it down.
    fn fake_work(
        runs: &Arc<Runs>,
        singleton: Singleton,
        replica: &str,
    ) -> impl FnMut(StopSignal) -> JoinHandle<()> + Send + 'static {
        let runs = runs.clone();
        let replica = replica.to_owned();
        move |mut stop| {
            let presence = runs.enter(singleton, &replica);
            tokio::spawn(async move {
                let _presence = presence;
                if stop.wait_for(Option::is_some).await.is_err() {
                    std::future::pending::<()>().await;
                }
            })
        }
    }

    /// A replica running keepers of all three singletons.
    struct Replica {
        id: String,
        metrics: Arc<Metrics>,
        singletons: Singletons,
    }

    impl Replica {
        fn start(store: &Arc<dyn Store>, id: &str, ttl: Duration, runs: &Arc<Runs>) -> Self {
            let metrics = Arc::new(Metrics::new());
            let settings = LeaseSettings {
                replica: ReplicaId::new(id).expect("id"),
                ttl,
            };
            let mut singletons = Singletons::new(store.clone(), settings, metrics.clone());
            for singleton in Singleton::ALL {
                singletons.spawn(singleton, fake_work(runs, singleton, id));
            }
            Self {
                id: id.to_owned(),
                metrics,
                singletons,
            }
        }

        /// Whether `pagerbridge_singleton_owned` says this replica runs `singleton`.
        fn runs(&self, singleton: Singleton) -> bool {
            let label = SingletonLabel {
                singleton: singleton.as_str().to_owned(),
            };
            self.metrics.singleton_owned.get_or_create(&label).get() == 1
        }

        fn runs_all(&self) -> bool {
            Singleton::ALL.iter().all(|s| self.runs(*s))
        }

        fn runs_none(&self) -> bool {
            Singleton::ALL.iter().all(|s| !self.runs(*s))
        }

        async fn shut_down(self) {
            self.singletons.shutdown().await;
        }

        /// Dies without a word: the keepers (and with them the work) are aborted, nothing is
        /// released.
        fn crash(mut self) {
            self.singletons.tasks.abort_all();
        }
    }

    /// Waits (10 s at most) for a condition; the lane keeper's tests use it too.
    pub(crate) async fn wait_for(what: &str, condition: impl Fn() -> bool) {
        tokio::time::timeout(Duration::from_secs(10), async {
            while !condition() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
    }

    async fn lease(store: &Arc<dyn Store>, singleton: Singleton) -> LeaseInfo {
        let name = singleton.lease_name();
        store
            .leases()
            .await
            .expect("leases")
            .into_iter()
            .find(|lease| lease.name == name)
            .unwrap_or_else(|| panic!("no lease {name}"))
    }

    async fn sqlite_store(dir: &tempfile::TempDir) -> Arc<dyn Store> {
        Arc::new(
            SqliteStore::open(&dir.path().join("leases.db"))
                .await
                .expect("store"),
        )
    }

    #[test]
    fn a_waiting_keeper_tries_more_often_than_the_holder_renews() {
        let ttl = Duration::from_secs(10);
        assert_eq!(next_try(true, ttl), ttl / 3);
        assert_eq!(next_try(false, ttl), Duration::from_millis(500));
        let short = Duration::from_millis(1200);
        assert_eq!(next_try(false, short), Duration::from_millis(400));
        assert_eq!(next_try(true, short), Duration::from_millis(400));
    }

    /// Two replicas: each singleton runs on exactly one; when that one stops, the other takes
    /// every singleton over at once (released, not expired), and the work never runs twice.
    async fn two_replicas_run_each_singleton_once(store: Arc<dyn Store>) {
        // Longer than the other tests' leases: the takeover is checked to come before `a`'s
        // leases would expire, and `a`'s shutdown plus `b`'s next try (every 500 ms) must fit
        // in what is left of them (at least two thirds of a lease) on a loaded CI machine too;
        // with 1.5 s leases they once did not under coverage instrumentation.
        const TTL: Duration = Duration::from_secs(4);
        let runs = Arc::new(Runs::default());
        let a = Replica::start(&store, "a", TTL, &runs);
        wait_for("a to run every singleton", || a.runs_all()).await;
        let b = Replica::start(&store, "b", TTL, &runs);
        // For more than a whole lease `b` tries too, and renewals keep every singleton on `a`.
        let watch_until = Instant::now() + TTL * 3 / 2;
        while Instant::now() < watch_until {
            assert!(a.runs_all() && b.runs_none(), "every singleton on a alone");
            for singleton in Singleton::ALL {
                assert_eq!(runs.running(singleton), ["a"], "{singleton:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut a_expiry = HashMap::new();
        for singleton in Singleton::ALL {
            let held = lease(&store, singleton).await;
            assert_eq!((held.owner.as_str(), held.epoch), ("a", 1));
            a_expiry.insert(singleton, held.expires_at);
        }

        // `a` stops: it releases its leases, so `b` need not wait for them to expire.
        a.shut_down().await;
        wait_for("b to run every singleton", || b.runs_all()).await;
        for singleton in Singleton::ALL {
            assert_eq!(runs.running(singleton), ["b"], "{singleton:?}");
            let held = lease(&store, singleton).await;
            assert_eq!(held.owner.as_str(), "b");
            assert!(held.epoch > 1, "a takeover moves the epoch on");
            let taken_at = runs.first_start(singleton, "b").expect("b started it");
            assert!(
                taken_at < a_expiry[&singleton],
                "{singleton:?} taken over at {taken_at}, before a's lease would have expired ({})",
                a_expiry[&singleton]
            );
        }
        b.shut_down().await;
        for singleton in Singleton::ALL {
            assert!(runs.running(singleton).is_empty(), "{singleton:?} stopped");
            assert!(lease(&store, singleton).await.expires_at <= Timestamp::now());
        }
        assert_eq!(runs.overlaps(), Vec::<String>::new());
    }

    #[tokio::test]
    async fn each_singleton_runs_on_one_replica_and_moves_when_it_stops() {
        let dir = tempfile::tempdir().expect("temp dir");
        two_replicas_run_each_singleton_once(sqlite_store(&dir).await).await;
    }

    #[tokio::test]
    #[ignore = "needs postgres"]
    async fn each_singleton_runs_on_one_replica_and_moves_when_it_stops_postgres() {
        let database = pagerbridge_testkit::postgres::TestDatabase::create().await;
        let store = crate::store::postgres::PostgresStore::connect(&database.url)
            .await
            .unwrap_or_else(|e| panic!("connecting to test database {}: {e}", database.name()));
        two_replicas_run_each_singleton_once(Arc::new(store)).await;
    }

    #[tokio::test]
    async fn a_lost_lease_stops_the_singleton_until_it_is_taken_again() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = sqlite_store(&dir).await;
        let runs = Arc::new(Runs::default());
        let a = Replica::start(&store, "a", TTL, &runs);
        wait_for("a to run every singleton", || a.runs_all()).await;

        // As if `a` had stalled past its lease: another replica takes housekeeping at a time
        // by which a's lease has surely expired, for longer than this test.
        let name = Singleton::Housekeeping.lease_name();
        let later = Timestamp::now()
            .checked_add(jiff::SignedDuration::try_from(TTL * 2).expect("ttl"))
            .expect("time");
        let thief = ReplicaId::new("thief").expect("id");
        let stolen = store
            .acquire_or_renew(&name, &thief, Duration::from_secs(600), later)
            .await
            .expect("acquire")
            .expect("an expired lease can be taken");
        wait_for("a to stop housekeeping", || {
            !a.runs(Singleton::Housekeeping) && runs.running(Singleton::Housekeeping).is_empty()
        })
        .await;
        assert!(
            a.runs(Singleton::Silence) && a.runs(Singleton::Fallback),
            "the other singletons are unaffected"
        );
        assert_eq!(runs.running(Singleton::Silence), [a.id.as_str()]);

        // Once the thief lets go, `a` takes it again, at a newer epoch.
        store
            .release(&name, &thief, stolen.epoch)
            .await
            .expect("release");
        wait_for("a to run housekeeping again", || {
            a.runs(Singleton::Housekeeping)
        })
        .await;
        assert_eq!(runs.running(Singleton::Housekeeping), ["a"]);
        let held = lease(&store, Singleton::Housekeeping).await;
        assert_eq!(held.owner.as_str(), "a");
        assert!(
            held.epoch > stolen.epoch,
            "{} > {}",
            held.epoch,
            stolen.epoch
        );
        a.shut_down().await;
        assert_eq!(runs.overlaps(), Vec::<String>::new());
    }

    /// The takeover bound of the issue: when a replica dies, another takes its work over
    /// within `lease_ttl` plus a second of the dead one's last renewal, i.e. within a second
    /// of its lease's recorded expiry. The waiter retries every 500 ms, so it is well within.
    #[tokio::test]
    async fn a_crashed_holder_is_taken_over_within_a_second_of_its_lease_expiry() {
        const TTL: Duration = Duration::from_secs(2);
        let dir = tempfile::tempdir().expect("temp dir");
        let store = sqlite_store(&dir).await;
        let runs = Arc::new(Runs::default());
        let a = Replica::start(&store, "a", TTL, &runs);
        wait_for("a to run every singleton", || a.runs_all()).await;
        let b = Replica::start(&store, "b", TTL, &runs);
        a.crash();

        // a's last renewal may still land after the crash; its lease's last expiry is the
        // latest one seen while it is still a's.
        let mut a_expiry: HashMap<Singleton, Timestamp> = HashMap::new();
        tokio::time::timeout(Duration::from_secs(10), async {
            while !b.runs_all() {
                for held in store.leases().await.expect("leases") {
                    if held.owner.as_str() == "a"
                        && let Some(singleton) = Singleton::ALL
                            .into_iter()
                            .find(|s| s.lease_name() == held.name)
                    {
                        let seen = a_expiry.entry(singleton).or_insert(held.expires_at);
                        *seen = (*seen).max(held.expires_at);
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("b takes every singleton over");
        for singleton in Singleton::ALL {
            let expired = *a_expiry.get(&singleton).expect("a's lease was seen");
            let taken = runs.first_start(singleton, "b").expect("b started it");
            let late = taken.duration_since(expired);
            assert!(
                late >= jiff::SignedDuration::ZERO,
                "{singleton:?} taken at {taken}, before a's lease expired at {expired}"
            );
            assert!(
                late <= jiff::SignedDuration::from_secs(1),
                "{singleton:?} taken {late:#} after a's lease expired"
            );
        }
        b.shut_down().await;
        assert_eq!(runs.overlaps(), Vec::<String>::new());
    }
}
