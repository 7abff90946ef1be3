//! The Alertmanager sync (DESIGN.md "Alertmanager sync"): holds the incidents that came from
//! Alertmanager's webhooks against what Alertmanager itself says, because Alertmanager tells
//! webhooks nothing of silences and inhibitions, and a resolve it failed to deliver (or lost
//! in a restart) is never sent again.
//!
//! Every `alertmanager.poll_interval` it asks each configured Alertmanager (one, or an HA set)
//! for every alert it holds and since when it has been up ([`api`]), reads the open incidents
//! that came from Alertmanager, and decides ([`decide`]):
//! - an incident whose alert is silenced gets its target's `on_silence` action (acknowledge by
//!   default), one whose alert is inhibited its `on_inhibit` action (none by default), once
//!   per change — the incident's own stored target decides, never a re-routing by labels, so
//!   alerts that came in through `/api/v1/alertmanager/{target}` are covered;
//! - an incident whose alert no Alertmanager holds is resolved once (with
//!   `custom_details.reason: "reconciled"`), but only after `reconcile.grace` since its last
//!   event, and only while every Alertmanager answered in full and has been up longer than
//!   `grace` (a restarted Alertmanager is empty until Prometheus re-sends its alerts).
//!
//! Native API incidents and change events are never touched. Each event is queued with a
//! condition the store checks inside the queuing transaction (acknowledge while triggered,
//! resolve while open), so a resolve that commits meanwhile wins. A failed poll is logged and
//! counted in `pagerbridge_silence_watcher_polls_total{result="error"}`; the sync keeps
//! polling. It runs on one replica at a time, the holder of the `silence` lease
//! ([`crate::lease_keeper`]).

pub mod api;
pub mod decide;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use jiff::Timestamp;
use pagerduty_events::{
    AlertEvent, BaseUrl, CustomDetails, DedupKey, Payload, Severity, Source, Summary,
};
use serde_json::json;

pub use decide::{Act, Cause, Decision, Policies};

use crate::config::AlertmanagerConfig;
use crate::internal_events::{
    AlertmanagerUnreadable, IncidentSynced, InternalEvent, StorageFailed, StorageOperation,
};
use crate::lease_keeper::{StopSignal, stopped};
use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, PipelineError};
use crate::store::{Acceptance, Action, Condition, IncidentSource, JsonText, NewEvent, Store};

/// What the sync needs to run.
#[derive(Clone, Debug)]
pub struct AlertmanagerSync {
    /// Every Alertmanager of the set; each type keeps the transport rule (https, or http to
    /// loopback).
    pub urls: Vec<BaseUrl>,
    pub poll_interval: Duration,
    pub bearer_token_file: Option<std::path::PathBuf>,
    /// `reconcile.grace`; `None` when reconciliation is off.
    pub grace: Option<Duration>,
}

impl AlertmanagerSync {
    /// The sync `alertmanager` configures, or `None` when no Alertmanager is.
    pub fn from_config(config: &AlertmanagerConfig) -> anyhow::Result<Option<Self>> {
        let urls = config.base_urls()?;
        if urls.is_empty() {
            return Ok(None);
        }
        // Read at every poll, but a token file missing at start is a mistake to report now.
        if let Some(path) = &config.bearer_token_file {
            api::read_token(path)?;
        }
        Ok(Some(Self {
            urls,
            poll_interval: config.poll_interval,
            bearer_token_file: config.bearer_token_file.clone(),
            grace: config.reconcile.enabled.then_some(config.reconcile.grace),
        }))
    }

    /// Polls at once, then every `poll_interval`, until `stop` says so (a poll under way
    /// finishes first).
    pub async fn run(
        self,
        pipeline: Arc<Pipeline>,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        mut stop: StopSignal,
    ) {
        for result in ["ok", "error"] {
            let _ = metrics
                .silence_polls
                .get_or_create(&crate::metrics::ResultLabel {
                    result: result.to_owned(),
                });
        }
        let http = match reqwest::Client::builder()
            .timeout(
                self.poll_interval
                    .clamp(Duration::from_secs(1), Duration::from_secs(10)),
            )
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!(
                "pagerbridge/",
                env!("CARGO_PKG_VERSION"),
                " (alertmanager sync)"
            ))
            .build()
        {
            Ok(http) => http,
            Err(error) => {
                tracing::error!(%error, "Alertmanager sync cannot build its HTTP client; not running");
                return;
            }
        };
        let client = api::Client::new(http, self.bearer_token_file.clone());
        let mut tick = tokio::time::interval(self.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                // A stop, or the keeper gone.
                () = stopped(&mut stop) => break,
                _ = tick.tick() => {}
            }
            match self
                .poll(&client, &pipeline, store.as_ref(), &metrics)
                .await
            {
                Ok(complete) => metrics.silence_poll(if complete { "ok" } else { "error" }),
                Err(error) => {
                    metrics.silence_poll("error");
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "Alertmanager sync poll failed"
                    );
                }
            }
        }
    }

    /// One poll; `Ok(true)` when every Alertmanager answered in full.
    async fn poll(
        &self,
        client: &api::Client,
        pipeline: &Pipeline,
        store: &dyn Store,
        metrics: &Metrics,
    ) -> anyhow::Result<bool> {
        let mut answers = Vec::with_capacity(self.urls.len());
        for url in &self.urls {
            match client.view(url).await {
                Ok(view) => answers.push(Some(view)),
                Err(error) => {
                    AlertmanagerUnreadable { url, error: &error }.emit(metrics);
                    answers.push(None);
                }
            }
        }
        let complete = answers.iter().all(Option::is_some);
        anyhow::ensure!(
            answers.iter().any(Option::is_some),
            "no Alertmanager answered"
        );
        let incidents = store
            .open_incidents_from(IncidentSource::Alertmanager)
            .await
            .inspect_err(|error| {
                StorageFailed {
                    operation: StorageOperation::Silence,
                    what: "Alertmanager sync: cannot read open incidents",
                    target: None,
                    error,
                }
                .emit(metrics);
            })
            .context("reading open incidents")?;
        let now = Timestamp::now();
        if let Some(blocker) = decide::reconcile_blocker(&answers, self.grace, now) {
            tracing::debug!(
                why = blocker,
                "Alertmanager sync: not reconciling this poll"
            );
        }
        let targets = pipeline.planner().targets();
        let decisions = decide::decide(
            &answers,
            &incidents,
            |name| {
                targets.get(name).map(|target| Policies {
                    on_silence: target.on_silence,
                    on_inhibit: target.on_inhibit,
                })
            },
            self.grace,
            now,
        );
        if decisions.is_empty() {
            return Ok(complete);
        }
        // Each decision with its event, so that the answers below pair with the right one.
        let (decisions, events): (Vec<&Decision>, Vec<NewEvent>) = decisions
            .iter()
            .filter_map(|decision| Some((decision, new_event(decision)?)))
            .unzip();
        let results = pipeline.queue(events).await.inspect_err(|error| {
            if let PipelineError::Store(error) = error {
                StorageFailed {
                    operation: StorageOperation::Silence,
                    what: "Alertmanager sync: cannot queue events",
                    target: None,
                    error,
                }
                .emit(metrics);
            }
        })?;
        for (decision, result) in decisions.iter().zip(results) {
            if let Acceptance::Queued { .. } = result {
                IncidentSynced {
                    target: &decision.incident.target,
                    dedup_key: &decision.incident.dedup_key,
                    cause: decision.cause,
                    action: action(decision.act),
                }
                .emit(metrics);
            }
        }
        Ok(complete)
    }
}

fn action(act: Act) -> Action {
    match act {
        Act::Acknowledge => Action::Acknowledge,
        Act::Resolve => Action::Resolve,
    }
}

/// The outbox row for a decision. A resolve says why in its payload, which PagerDuty shows in
/// the alert's log. `None` only for a stored dedup key that is no longer a valid one, which
/// the store never holds.
fn new_event(decision: &Decision) -> Option<NewEvent> {
    let incident = &decision.incident;
    let dedup_key = DedupKey::new(incident.dedup_key.clone()).ok()?;
    let (event, condition) = match decision.act {
        Act::Acknowledge => (
            AlertEvent::Acknowledge { dedup_key },
            Condition::WhileTriggered,
        ),
        Act::Resolve => (
            AlertEvent::Resolve {
                dedup_key,
                payload: Some(resolve_payload(decision)),
            },
            Condition::WhileOpen,
        ),
    };
    Some(NewEvent {
        target: incident.target.clone(),
        dedup_key: Some(incident.dedup_key.clone()),
        action: action(decision.act),
        severity: None,
        event: JsonText::of(&event).ok()?,
        alert: None,
        fingerprint: incident.fingerprint.clone(),
        labels_key: incident.labels_key,
        payload_hash: None,
        condition,
        source: None,
    })
}

fn resolve_payload(decision: &Decision) -> Payload {
    let why = match decision.cause {
        Cause::Reconciled => "no Alertmanager holds its alert any more (its resolve was lost)",
        Cause::Silenced => "its alert is silenced in Alertmanager",
        Cause::Inhibited => "its alert is inhibited in Alertmanager",
    };
    let mut payload = Payload::new(
        Summary::truncating(&format!("Resolved by pagerbridge: {why}"))
            .expect("a fixed, non-blank summary"),
        Source::new("pagerbridge").expect("a fixed, non-blank source"),
        Severity::Info,
    );
    payload.custom_details = Some(CustomDetails::from_iter([
        ("reason".to_owned(), json!(decision.cause.as_str())),
        (
            "fingerprint".to_owned(),
            json!(decision.incident.fingerprint),
        ),
    ]));
    payload
}
