//! The fallback publisher: when PagerDuty refuses an event (dead letter) or has been failing
//! for it longer than `fallback.after`, a generic webhook is told, so humans still hear about it.
//!
//! Its work list is the outbox itself (`Store::fallback_due`): a notice is due until the webhook
//! answered 2xx and the notice was marked, so notices are as durable as the events, survive
//! restarts, and are sent at least once. It runs as its own lane: one request at a time, with
//! exponential backoff and full jitter when the webhook fails, and its own metrics. It runs on
//! one replica at a time, the holder of the `fallback` lease ([`crate::lease_keeper`]), and
//! stops after the notice in flight when that lease is lost.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use jiff::Timestamp;
use pagerduty_events::{Backoff, EndpointUrl};
use serde_json::{Value, json};

use super::pacer::{Pacer, Wake};
use crate::internal_events::{
    FallbackNoticeFailed, FallbackNoticeSent, InternalEvent, StorageFailed, StorageOperation,
};
use crate::metrics::Metrics;
use crate::store::{Notice, NoticeKind, Store};

/// Notices read from storage per round.
const BATCH: u32 = 50;

/// How the fallback lane runs.
#[derive(Clone, Debug)]
pub struct FallbackSettings {
    /// The webhook; the type keeps the transport rule (https, or http to loopback).
    pub url: EndpointUrl,
    /// How long an event must have been failing before the webhook hears of it.
    pub after: Duration,
    pub timeout: Duration,
    pub bearer_token: Option<String>,
    /// How often to look for due notices when nothing wakes the lane.
    pub poll: Duration,
    /// First backoff cap after the webhook failed; doubles per consecutive failure.
    pub failure_backoff: Duration,
    pub max_backoff: Duration,
}

/// The publisher, ready to run (once per time this replica takes the `fallback` lease).
#[derive(Clone)]
pub(crate) struct FallbackLane {
    settings: FallbackSettings,
    http: reqwest::Client,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    /// Consecutive webhook failures.
    failures: Backoff,
}

impl FallbackLane {
    pub(crate) fn new(
        settings: FallbackSettings,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .tls_version_min(reqwest::tls::Version::TLS_1_2)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!(
                "pagerbridge/",
                env!("CARGO_PKG_VERSION"),
                " (fallback)"
            ))
            .build()
            .context("cannot set up the fallback HTTP client")?;
        let failures = Backoff::new(settings.failure_backoff, settings.max_backoff);
        Ok(Self {
            settings,
            http,
            store,
            metrics,
            failures,
        })
    }

    /// Publishes until `pacer` says stop: when draining, once nothing is due or the deadline
    /// has passed (the notice in flight is finished either way).
    pub(crate) async fn run(mut self, mut pacer: Pacer) {
        // Only the origin: a webhook URL often holds a token in its path or query.
        tracing::info!(origin = %self.settings.url.origin(), "fallback publisher started");
        loop {
            let draining = pacer.draining();
            let keep_going = match self.round(&pacer).await {
                Ok(0) if draining => false,
                Ok(0) => pacer
                    .sleep(self.settings.poll, Wake::OnWork)
                    .await
                    .goes_on(),
                Ok(_) => !pacer.out_of_time(),
                Err(pause) => pacer.sleep(pause, Wake::Never).await.goes_on(),
            };
            if !keep_going {
                break;
            }
        }
        tracing::info!("fallback publisher stopped");
    }

    /// Sends what is due, until `pacer` is out of time; returns how many were sent, or the
    /// pause after a failure.
    async fn round(&mut self, pacer: &Pacer) -> Result<usize, Duration> {
        let now = Timestamp::now();
        let failing_since = jiff::SignedDuration::try_from(self.settings.after)
            .ok()
            .and_then(|after| now.checked_sub(after).ok())
            .unwrap_or(Timestamp::MIN);
        let due = match self.store.fallback_due(failing_since, BATCH).await {
            Ok(due) => due,
            Err(error) => {
                StorageFailed {
                    operation: StorageOperation::Fallback,
                    what: "fallback: cannot read the outbox",
                    target: None,
                    error: &error,
                }
                .emit(&self.metrics);
                return Err(Duration::from_secs(1));
            }
        };
        let mut sent = 0;
        for notice in &due {
            if pacer.out_of_time() {
                break;
            }
            self.send(notice).await?;
            sent += 1;
        }
        Ok(sent)
    }

    async fn send(&mut self, notice: &Notice) -> Result<(), Duration> {
        let kind = kind_name(notice.kind);
        let mut request = self
            .http
            .post(self.settings.url.as_url().clone())
            .json(&body(notice));
        if let Some(token) = &self.settings.bearer_token {
            request = request.bearer_auth(token);
        }
        let outcome = match request.send().await {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(format!("HTTP {}", response.status().as_u16())),
            Err(error) => Err(if error.is_timeout() {
                "timeout".to_owned()
            } else {
                error.without_url().to_string()
            }),
        };
        match outcome {
            Ok(()) => {
                self.failures.reset();
                FallbackNoticeSent { notice, kind }.emit(&self.metrics);
                if let Err(error) = self
                    .store
                    .mark_notified(notice.event.id, notice.kind, Timestamp::now())
                    .await
                {
                    // The notice stays due and is sent again later: at least once.
                    StorageFailed {
                        operation: StorageOperation::Fallback,
                        what: "fallback: notified, but could not record it",
                        target: None,
                        error: &error,
                    }
                    .emit(&self.metrics);
                    return Err(Duration::from_secs(1));
                }
                Ok(())
            }
            Err(error) => {
                let pause = self.failures.next();
                FallbackNoticeFailed {
                    notice,
                    kind,
                    error: &error,
                    pause,
                }
                .emit(&self.metrics);
                Err(pause)
            }
        }
    }
}

fn kind_name(kind: NoticeKind) -> &'static str {
    match kind {
        NoticeKind::Failing => "failing",
        NoticeKind::DeadLettered => "dead_lettered",
    }
}

/// The webhook's JSON: what happened, the alert, and the PagerDuty event we meant to send.
fn body(notice: &Notice) -> Value {
    let event = &notice.event;
    let headline = match notice.kind {
        NoticeKind::Failing => {
            "PagerDuty has been failing for this target for longer than fallback.after; the \
             event stays queued and will be delivered when PagerDuty recovers"
        }
        NoticeKind::DeadLettered => "PagerDuty will not get this event: it was dead-lettered",
    };
    json!({
        "kind": kind_name(notice.kind),
        "message": headline,
        "reason": notice.reason,
        "target": event.target,
        "action": event.action.as_str(),
        "dedup_key": event.dedup_key,
        "event_id": event.id,
        "accepted_at": event.accepted_at.to_string(),
        "attempts": event.attempts,
        "pagerduty_event": event.event,
        "alert": event.alert,
    })
}
