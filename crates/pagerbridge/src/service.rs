//! `serve` wiring: configuration in, a running bridge out.
//!
//! Builds every part once — keys, storage, PagerDuty client, lanes, pipeline, HTTP, and the
//! keepers of the singletons (housekeeping, the silence watcher) — and runs until shutdown: the
//! HTTP server stops taking requests first, then the singletons stop (each finishing the round
//! under way) while lanes drain for `delivery.shutdown_drain`, and every lease is released.
//! Whatever is still queued stays in storage for the next start.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use pagerduty_events::Client;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

use crate::alertmanager_sync::AlertmanagerSync;
use crate::config::{Config, Storage};
use crate::delivery::fallback::FallbackSettings;
use crate::delivery::{Budget, Delivery, LaneSettings, LeaseSettings, Shared};
use crate::http::{self, AppState, Tokens};
use crate::keyring::Keyring;
use crate::kubernetes;
use crate::lease_keeper::{Singleton, Singletons};
use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, Planner};
use crate::store::postgres::PostgresStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{ReplicaId, Store, SuppressionPolicy};
use crate::targets::Targets;

/// Runs the bridge on `listener` until `shutdown` resolves.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let targets = config.targets()?;
    let keyring = Keyring::load(&targets)?;
    let _watcher = keyring
        .watch()
        .context("cannot watch routing key files for rotation")?;
    let storage = config.storage.resolve()?;
    let store = open_store(&storage).await?;
    let metrics = Arc::new(Metrics::new());
    let client = Client::builder()
        .base_url(config.pagerduty.url.as_str())
        .user_agent(config.pagerduty.user_agent.as_str())
        .timeout(config.pagerduty.timeout)
        .build()?;
    // Every lane's settings but the budget, which each lane reads from its target.
    let base_lane = LaneSettings {
        max_backoff: config.delivery.max_backoff,
        ..LaneSettings::default()
    };
    let lanes = targets
        .iter()
        .map(|target| {
            let settings = LaneSettings {
                budget: Budget {
                    requests: target.rate_limit.requests,
                    window: target.rate_limit.window,
                },
                ..base_lane.clone()
            };
            (target.name.clone(), settings)
        })
        .collect();
    let registry = Targets::new(targets, keyring)?;
    let budget_secret = store
        .budget_secret()
        .await
        .context("cannot read or create the budget secret")?;
    let leases = LeaseSettings {
        replica: replica_id(&storage),
        ttl: config.delivery.lease_ttl,
    };
    let mut delivery = Delivery::start(
        Shared {
            store: store.clone(),
            service: Arc::new(client),
            keys: Arc::new(registry.clone()),
            budget_secret: budget_secret.clone(),
            metrics: metrics.clone(),
            fallback_wake: Arc::new(Notify::new()),
        },
        leases.clone(),
        lanes,
        fallback_settings(&config)?,
    )?;
    delivery.follow(registry.clone(), base_lane);
    let waker = delivery.waker();
    // A lane may send an event as soon as it is committed, while its flush to disk is still
    // under way (the sender's 2xx waits for the flush; see `Outbox::on_commit`).
    store.on_commit(Arc::new({
        let waker = waker.clone();
        move |target: &str| waker.wake(target)
    }));
    let pipeline = Arc::new(Pipeline::new(
        Planner::over(registry.clone()),
        store.clone(),
        waker.clone(),
        metrics.clone(),
        SuppressionPolicy {
            retrigger_after: config.delivery.retrigger_after,
        },
    ));
    let ingest_tokens = config
        .ingest
        .bearer_token_file
        .as_deref()
        .map(Tokens::from_file)
        .transpose()?
        .map(Arc::new);
    let admin_tokens = config
        .admin
        .bearer_token_file
        .as_deref()
        .map(Tokens::from_file)
        .transpose()
        .context("admin.bearer_token_file")?
        .map(Arc::new);
    let alertmanager_sync = AlertmanagerSync::from_config(&config.alertmanager)?;
    let secrets = start_secret_watch(&config, &registry, &metrics).await?;
    let mut singletons = Singletons::new(store.clone(), leases, metrics.clone());
    let housekeeping = (store.clone(), metrics.clone(), config.delivery.clone());
    singletons.spawn(Singleton::Housekeeping, move |stop| {
        let (store, metrics, delivery) = housekeeping.clone();
        tokio::spawn(crate::housekeeping::run(store, metrics, delivery, stop))
    });
    if let Some(sync) = alertmanager_sync {
        let (pipeline, store, metrics) = (pipeline.clone(), store.clone(), metrics.clone());
        singletons.spawn(Singleton::Silence, move |stop| {
            tokio::spawn(
                sync.clone()
                    .run(pipeline.clone(), store.clone(), metrics.clone(), stop),
            )
        });
    }
    let state = AppState {
        pipeline,
        store: store.clone(),
        metrics: metrics.clone(),
        ingest_tokens,
        max_body_bytes: config.ingest.max_body_bytes,
        admin_tokens,
        waker,
        keys: Arc::new(registry.clone()),
        budget_secret,
    };
    let addr: SocketAddr = listener.local_addr()?;
    tracing::info!(%addr, %storage, "pagerbridge listening");
    let timeout = config.ingest.request_timeout;
    http::server::serve(listener, http::router(state, timeout), timeout, shutdown).await;
    tracing::info!(
        drain_ms = config.delivery.shutdown_drain.as_millis() as u64,
        "stopped taking requests; draining delivery"
    );
    // Together: a silence poll finishing must not eat into the lanes' drain.
    tokio::join!(
        singletons.shutdown(),
        delivery.shutdown(config.delivery.shutdown_drain),
        secrets.shutdown(),
    );
    tracing::info!("pagerbridge stopped");
    Ok(())
}

/// The watch on Kubernetes Secrets, when `kubernetes.secrets` is set.
struct RunningSecretWatch {
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RunningSecretWatch {
    async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task
            && let Err(error) = task.await
        {
            tracing::error!(%error, "the Kubernetes Secrets watch crashed");
        }
    }
}

/// Starts watching Secrets for targets and waits (at most [`kubernetes::FIRST_SYNC_WAIT`])
/// for the first list, so that the bridge does not answer 404 for a Secret's target only
/// because it has just started.
async fn start_secret_watch(
    config: &Config,
    targets: &Targets,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<RunningSecretWatch> {
    let (stop, stop_rx) = watch::channel(false);
    let Some(settings) = &config.kubernetes.secrets else {
        return Ok(RunningSecretWatch { stop, task: None });
    };
    let secret_watch = kubernetes::SecretWatch::new(settings).await?;
    let discovery = kubernetes::Discovery::new(
        targets.clone(),
        metrics.clone(),
        kubernetes::secret::Defaults {
            rate_limit: config.pagerduty.rate_limit,
        },
    );
    let (synced_tx, mut synced) = watch::channel(false);
    let namespace = secret_watch.namespace().to_owned();
    let task = tokio::spawn(secret_watch.run(discovery, metrics.clone(), synced_tx, stop_rx));
    let first_sync = tokio::time::timeout(kubernetes::FIRST_SYNC_WAIT, synced.wait_for(|s| *s));
    if !matches!(first_sync.await, Ok(Ok(_))) {
        tracing::warn!(
            %namespace,
            "Kubernetes Secrets not listed yet; serving with the file's targets, Secret targets \
             follow once the list succeeds"
        );
    }
    Ok(RunningSecretWatch {
        stop,
        task: Some(task),
    })
}

/// Opens (and migrates) the selected store. PostgreSQL replicas starting together are safe:
/// the migrator serialises them with an advisory lock.
async fn open_store(storage: &Storage) -> anyhow::Result<Arc<dyn Store>> {
    tracing::info!(%storage, "opening storage");
    let opened: Result<Arc<dyn Store>, _> = match storage {
        Storage::Sqlite { path } => SqliteStore::open(path).await.map(|s| Arc::new(s) as _),
        Storage::Postgres { url } => PostgresStore::connect(url.expose())
            .await
            .map(|s| Arc::new(s) as _),
    };
    // `storage` shows the URL masked, and the store's errors do not repeat it.
    opened.with_context(|| format!("cannot open storage {storage}"))
}

/// This process's name in leases. On PostgreSQL a new random id per process: a restarted
/// replica takes its old lanes over like any other (new epoch), so its former self's fences
/// are dead. SQLite has one process per file, so a fixed id: after a `kill -9` the restarted
/// process renews its predecessor's leases at once instead of waiting for them to expire.
fn replica_id(storage: &Storage) -> ReplicaId {
    match storage {
        Storage::Sqlite { .. } => ReplicaId::new("sqlite").unwrap_or_else(ReplicaId::generate),
        Storage::Postgres { .. } => ReplicaId::generate(),
    }
}

/// The fallback publisher's settings, when `fallback.url` is set.
fn fallback_settings(config: &Config) -> anyhow::Result<Option<FallbackSettings>> {
    let Some(url) = config.fallback.webhook()? else {
        return Ok(None);
    };
    let bearer_token = config
        .fallback
        .bearer_token_file
        .as_deref()
        .map(|path| {
            std::fs::read_to_string(path)
                .map(|text| text.trim().to_owned())
                .with_context(|| {
                    format!("cannot read fallback.bearer_token_file {}", path.display())
                })
        })
        .transpose()?;
    Ok(Some(FallbackSettings {
        url,
        after: config.fallback.after,
        timeout: config.fallback.timeout,
        bearer_token,
        poll: Duration::from_secs(1),
        failure_backoff: Duration::from_secs(1),
        max_backoff: config.delivery.max_backoff,
    }))
}
