//! `serve` wiring: configuration in, a running bridge out.
//!
//! Builds every part once — keys, storage, PagerDuty client, lanes, pipeline, HTTP — and runs
//! until shutdown: the HTTP server stops taking requests first, then lanes drain for
//! `delivery.shutdown_drain`. Whatever is still queued stays in storage for the next start.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use jiff::Timestamp;
use pagerduty_events::{Client, RoutingKey};
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::config::{Config, DeliveryConfig, Storage};
use crate::delivery::fallback::FallbackSettings;
use crate::delivery::{Budget, Delivery, LaneSettings, LeaseSettings, RoutingKeys, Shared};
use crate::http::{self, AppState, Tokens};
use crate::internal_events::{EventsExpired, InternalEvent};
use crate::keyring::Keyring;
use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, Planner};
use crate::silence::SilenceWatcher;
use crate::store::postgres::PostgresStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{ReplicaId, Store, SuppressionPolicy};

/// How often old events are dead-lettered and stale incident state forgotten.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(60);

impl RoutingKeys for Keyring {
    fn get(&self, target: &str) -> Option<RoutingKey> {
        Keyring::get(self, target)
    }
}

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
    let lanes = targets
        .iter()
        .map(|target| {
            let settings = LaneSettings {
                budget: Budget {
                    requests: target.rate_limit.requests,
                    window: target.rate_limit.window,
                },
                max_backoff: config.delivery.max_backoff,
                ..LaneSettings::default()
            };
            (target.name.clone(), settings)
        })
        .collect();
    let budget_secret = store
        .budget_secret()
        .await
        .context("cannot read or create the budget secret")?;
    let delivery = Delivery::start(
        Shared {
            store: store.clone(),
            service: Arc::new(client),
            keys: Arc::new(keyring),
            budget_secret,
            metrics: metrics.clone(),
            fallback_wake: Arc::new(Notify::new()),
        },
        LeaseSettings {
            replica: replica_id(&storage),
            ttl: config.delivery.lease_ttl,
        },
        lanes,
        fallback_settings(&config)?,
    )?;
    let waker = delivery.waker();
    let pipeline = Arc::new(Pipeline::new(
        Planner::new(targets)?,
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
    let silence_watcher = silence_watcher(&config)?
        .map(|watcher| tokio::spawn(watcher.run(pipeline.clone(), metrics.clone())));
    let state = AppState {
        pipeline,
        store: store.clone(),
        metrics: metrics.clone(),
        ingest_tokens,
        max_body_bytes: config.ingest.max_body_bytes,
        admin_tokens,
        waker,
    };
    let maintenance = tokio::spawn(maintain(store, metrics.clone(), config.clone()));
    let addr: SocketAddr = listener.local_addr()?;
    tracing::info!(%addr, %storage, "pagerbridge listening");
    let timeout = config.ingest.request_timeout;
    http::server::serve(listener, http::router(state, timeout), timeout, shutdown).await;
    tracing::info!(
        drain_ms = config.delivery.shutdown_drain.as_millis() as u64,
        "stopped taking requests; draining delivery"
    );
    maintenance.abort();
    if let Some(task) = silence_watcher {
        task.abort();
    }
    delivery.shutdown(config.delivery.shutdown_drain).await;
    tracing::info!("pagerbridge stopped");
    Ok(())
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

/// The silence watcher, when `alertmanager.url` is set.
fn silence_watcher(config: &Config) -> anyhow::Result<Option<SilenceWatcher>> {
    let Some(url) = config.alertmanager.base_url()? else {
        return Ok(None);
    };
    Ok(Some(SilenceWatcher {
        url,
        poll_interval: config.alertmanager.poll_interval,
    }))
}

/// Runs [`housekeeping`] every [`MAINTENANCE_EVERY`].
async fn maintain(store: Arc<dyn Store>, metrics: Arc<Metrics>, config: Config) {
    let mut tick = tokio::time::interval(MAINTENANCE_EVERY);
    loop {
        tick.tick().await;
        housekeeping(store.as_ref(), &metrics, &config.delivery, Timestamp::now()).await;
    }
}

/// Dead-letters events past `max_event_age` (counted by target, reason `expired`) and forgets
/// incident state past `incident_ttl`.
async fn housekeeping(
    store: &dyn Store,
    metrics: &Metrics,
    delivery: &DeliveryConfig,
    now: Timestamp,
) {
    let before = |d: Duration| {
        jiff::SignedDuration::try_from(d)
            .ok()
            .and_then(|d| now.checked_sub(d).ok())
            .unwrap_or(Timestamp::MIN)
    };
    match store
        .expire_events(before(delivery.max_event_age), now)
        .await
    {
        Ok(expired) => {
            for (target, count) in &expired.per_target {
                EventsExpired {
                    target,
                    count: *count,
                }
                .emit(metrics);
            }
        }
        Err(error) => tracing::warn!(%error, "expiring old events failed"),
    }
    if let Err(error) = store.expire_incidents(before(delivery.incident_ttl)).await {
        tracing::warn!(%error, "expiring incident state failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Action, Condition, NewEvent, Outbox};

    fn trigger(target: &str, key: &str) -> NewEvent {
        NewEvent {
            target: target.to_owned(),
            dedup_key: Some(key.to_owned()),
            action: Action::Trigger,
            severity: Some(pagerduty_events::Severity::Error),
            event: serde_json::json!({}),
            alert: None,
            fingerprint: None,
            payload_hash: None,
            condition: Condition::Always,
        }
    }

    fn expired_count(metrics: &Metrics, target: &str) -> u64 {
        metrics
            .dead_lettered
            .get_or_create(&crate::metrics::ReasonLabels {
                target: target.to_owned(),
                reason: "expired".to_owned(),
            })
            .get()
    }

    #[tokio::test]
    async fn housekeeping_counts_expired_events_by_target() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("bridge.db"))
            .await
            .expect("open");
        let accepted = Timestamp::from_second(1_800_000_000).expect("time");
        let events = vec![trigger("a", "1"), trigger("a", "2"), trigger("b", "3")];
        store
            .accept(events, &SuppressionPolicy::default(), accepted)
            .await
            .expect("accept");
        let metrics = Metrics::new();
        metrics.init_target("a");
        metrics.init_target("b");
        let delivery = DeliveryConfig::default();

        // Younger than max_event_age: nothing moves.
        housekeeping(&store, &metrics, &delivery, accepted).await;
        assert_eq!(expired_count(&metrics, "a"), 0);

        let later = accepted
            .checked_add(jiff::SignedDuration::try_from(delivery.max_event_age).expect("age"))
            .and_then(|t| t.checked_add(jiff::SignedDuration::from_secs(1)))
            .expect("time");
        housekeeping(&store, &metrics, &delivery, later).await;
        assert_eq!(expired_count(&metrics, "a"), 2);
        assert_eq!(expired_count(&metrics, "b"), 1);
        // Already dead: a second round counts nothing more.
        housekeeping(&store, &metrics, &delivery, later).await;
        assert_eq!(expired_count(&metrics, "a"), 2);
    }
}
