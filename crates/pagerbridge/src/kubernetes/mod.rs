//! Targets discovered from Kubernetes Secrets (`kubernetes.secrets` in the config).
//!
//! A watch (not polling) on the Secrets of one namespace that match a label selector, with
//! `kube`'s runtime watcher: it lists, then watches from the list's resource version, and
//! re-lists by itself when the watch's resource version expires (410 Gone); any other error
//! (the API server restarting, a dropped connection) is retried with backoff. Each event goes
//! to [`Discovery`], which adds, changes and removes targets in [`crate::targets::Targets`].
//!
//! [`secret`] parses a Secret's `config`; [`discovery`] maps Secrets to targets. Every
//! replica runs its own watch: each routes alerts, so each needs the targets.
//!
//! The client is configured as `kube` infers it: `KUBECONFIG` (or `~/.kube/config`) when
//! there is one, else the pod's service account (in-cluster).

pub mod discovery;
pub mod secret;

use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, ResourceExt};
use tokio::sync::watch;

pub use discovery::Discovery;

use crate::config::SecretsDiscovery;
use crate::internal_events::{InternalEvent, SecretWatchFailed};
use crate::metrics::Metrics;

/// A started watch on Secrets.
pub struct SecretWatch {
    api: Api<Secret>,
    namespace: String,
    label_selector: String,
}

impl SecretWatch {
    /// Builds the client and the API of the namespace. Fails when there is no Kubernetes
    /// configuration at all; the API server itself is only reached by [`SecretWatch::run`].
    pub async fn new(settings: &SecretsDiscovery) -> anyhow::Result<Self> {
        let config = kube::Config::infer().await.context(
            "kubernetes.secrets is set, but no Kubernetes configuration was found \
             (neither KUBECONFIG nor ~/.kube/config nor an in-cluster service account)",
        )?;
        let namespace = settings
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = kube::Client::try_from(config).context("cannot build a Kubernetes client")?;
        Ok(Self {
            api: Api::namespaced(client, &namespace),
            namespace,
            label_selector: settings.label_selector.clone(),
        })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Watches until `stop` turns true, applying every event to `discovery`. `synced` turns
    /// true after the first complete list, so that the service can wait for it before taking
    /// alerts that Secret targets should route.
    pub async fn run(
        self,
        mut discovery: Discovery,
        metrics: std::sync::Arc<Metrics>,
        synced: watch::Sender<bool>,
        mut stop: watch::Receiver<bool>,
    ) {
        tracing::info!(
            namespace = %self.namespace,
            label_selector = %self.label_selector,
            "watching Kubernetes Secrets for targets"
        );
        let config = watcher::Config::default()
            .labels(&self.label_selector)
            // Detect a silently dead connection within a minute rather than five.
            .timeout(55);
        let mut events = watcher::watcher(self.api, config).default_backoff().boxed();
        loop {
            let event = tokio::select! {
                event = events.next() => event,
                _ = stop.wait_for(|stop| *stop) => break,
            };
            match event {
                Some(Ok(event)) => apply(&mut discovery, event, &synced),
                Some(Err(error)) => SecretWatchFailed {
                    error: &error.to_string(),
                }
                .emit(&metrics),
                // The watcher's stream does not end; if it ever does, wait to be stopped.
                None => {
                    let _ = stop.wait_for(|stop| *stop).await;
                    break;
                }
            }
        }
        tracing::info!("stopped watching Kubernetes Secrets");
    }
}

fn apply(discovery: &mut Discovery, event: Event<Secret>, synced: &watch::Sender<bool>) {
    match event {
        Event::Init => discovery.relisting(),
        Event::InitApply(secret) | Event::Apply(secret) => {
            discovery.apply(&id(&secret), config_of(&secret));
        }
        Event::Delete(secret) => discovery.delete(&id(&secret)),
        Event::InitDone => {
            discovery.relisted();
            synced.send_replace(true);
        }
    }
}

/// `namespace/name`: how logs and metrics name a Secret.
fn id(secret: &Secret) -> String {
    format!(
        "{}/{}",
        secret.namespace().unwrap_or_default(),
        secret.name_any()
    )
}

fn config_of(secret: &Secret) -> Option<&[u8]> {
    secret
        .data
        .as_ref()
        .and_then(|data| data.get(secret::CONFIG_KEY))
        .map(|bytes| bytes.0.as_slice())
}

/// How long `serve` waits for the first list of Secrets before taking requests.
pub const FIRST_SYNC_WAIT: Duration = Duration::from_secs(10);
