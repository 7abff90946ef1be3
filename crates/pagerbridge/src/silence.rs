//! The silence watcher (DESIGN.md "Lifecycle mapping"): an alert silenced in Alertmanager while
//! its incident is triggered is acknowledged, once.
//!
//! Alertmanager sends nothing to webhooks about silenced alerts, so the watcher asks it: every
//! `alertmanager.poll_interval` it GETs `/api/v2/alerts` filtered to silenced alerts only,
//! turns each into an [`Alert`] with [`AlertStatus::Silenced`], and hands them to
//! [`Pipeline::acknowledge_silenced`], which acknowledges only incidents still triggered —
//! decided by the store inside the transaction that queues the acknowledge, so a resolve that
//! commits meanwhile wins; the next poll finds them acknowledged, so nothing is sent twice. A failed poll (Alertmanager
//! down, unexpected JSON) is logged at WARN and counted in
//! `pagerbridge_silence_watcher_polls_total{result="error"}`; the watcher keeps polling. It runs
//! on one replica at a time, the holder of the `silence` lease ([`crate::lease_keeper`]).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use jiff::Timestamp;
use pagerduty_events::BaseUrl;
use serde::Deserialize;
use url::Url;

use crate::alert::{Alert, AlertStatus, Labels};
use crate::internal_events::{InternalEvent, StorageFailed, StorageOperation};
use crate::lease_keeper::{StopSignal, stopped};
use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, PipelineError};

/// The path and query that list silenced alerts only.
const QUERY: &str = "/api/v2/alerts?active=false&silenced=true&inhibited=false&unprocessed=false";

/// What the watcher needs to run.
#[derive(Clone, Debug)]
pub struct SilenceWatcher {
    /// Alertmanager's base URL; the type keeps the transport rule (https, or http to loopback).
    pub url: BaseUrl,
    pub poll_interval: Duration,
}

/// One alert of Alertmanager's `GET /api/v2/alerts` (the fields the bridge uses).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GettableAlert {
    labels: Labels,
    #[serde(default)]
    annotations: Labels,
    fingerprint: String,
    starts_at: Option<Timestamp>,
    #[serde(default)]
    generator_url: Option<String>,
    #[serde(default)]
    status: Option<GettableStatus>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GettableStatus {
    #[serde(default)]
    silenced_by: Vec<String>,
}

/// Parses an Alertmanager API v2 alert list into silenced [`Alert`]s. Alerts without an
/// `alertname`, or whose status says no silence holds them, are left out.
pub fn parse_alerts(body: &[u8]) -> anyhow::Result<Vec<Alert>> {
    let alerts: Vec<GettableAlert> =
        serde_json::from_slice(body).context("unexpected JSON from Alertmanager")?;
    Ok(alerts
        .into_iter()
        .filter(|a| a.labels.contains_key("alertname"))
        .filter(|a| a.status.as_ref().is_none_or(|s| !s.silenced_by.is_empty()))
        .map(|a| Alert {
            status: AlertStatus::Silenced,
            labels: a.labels,
            annotations: a.annotations,
            starts_at: a.starts_at,
            ends_at: None,
            generator_url: a.generator_url.filter(|u| !u.is_empty()),
            fingerprint: Some(a.fingerprint).filter(|f| !f.is_empty()),
            dedup_key: None,
            classification: None,
        })
        .collect())
}

impl SilenceWatcher {
    /// Polls at once, then every `poll_interval`, until `stop` says so (a poll under way
    /// finishes first).
    pub async fn run(self, pipeline: Arc<Pipeline>, metrics: Arc<Metrics>, mut stop: StopSignal) {
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
                " (silence watcher)"
            ))
            .build()
        {
            Ok(http) => http,
            Err(error) => {
                tracing::error!(%error, "silence watcher cannot build its HTTP client; not running");
                return;
            }
        };
        let mut tick = tokio::time::interval(self.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                // A stop, or the keeper gone.
                () = stopped(&mut stop) => break,
                _ = tick.tick() => {}
            }
            match self.poll(&http, &pipeline, &metrics).await {
                Ok((found, queued)) => {
                    metrics.silence_poll("ok");
                    if queued > 0 {
                        tracing::info!(
                            silenced = found,
                            acknowledged = queued,
                            "silenced alerts acknowledged"
                        );
                    }
                }
                Err(error) => {
                    metrics.silence_poll("error");
                    tracing::warn!(error = format!("{error:#}"), "silence watcher poll failed");
                }
            }
        }
    }

    /// One poll: (silenced alerts found, acknowledges queued).
    async fn poll(
        &self,
        http: &reqwest::Client,
        pipeline: &Pipeline,
        metrics: &Metrics,
    ) -> anyhow::Result<(usize, usize)> {
        let url = endpoint(&self.url);
        let response = http
            .get(url)
            .send()
            .await
            .context("Alertmanager unreachable")?;
        let status = response.status();
        anyhow::ensure!(status.is_success(), "Alertmanager answered {status}");
        let body = response
            .bytes()
            .await
            .context("reading Alertmanager's answer")?;
        let alerts = parse_alerts(&body)?;
        let found = alerts.len();
        let receipt = pipeline
            .acknowledge_silenced(alerts)
            .await
            .inspect_err(|error| {
                if let PipelineError::Store(error) = error {
                    StorageFailed {
                        operation: StorageOperation::Silence,
                        what: "silence watcher: cannot queue acknowledges",
                        target: None,
                        error,
                    }
                    .emit(metrics);
                }
            })?;
        Ok((found, receipt.queued))
    }
}

/// `{base}/api/v2/alerts?…`, whether or not the base ends in `/`.
fn endpoint(base: &BaseUrl) -> Url {
    base.join(QUERY)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trimmed from Alertmanager 0.25's answer to the watcher's query.
    const ANSWER: &str = r#"[
      {
        "annotations": {"summary": "DiskFull on db-1"},
        "endsAt": "2026-11-29T22:00:00.000Z",
        "fingerprint": "4b5c3fa4c2b7a1e0",
        "receivers": [{"name": "pagerbridge"}],
        "startsAt": "2026-11-29T21:00:00.000Z",
        "status": {"inhibitedBy": [], "silencedBy": ["8f0e5cbb-1b2c-4c5d-9e6f-0a1b2c3d4e5f"], "state": "suppressed"},
        "updatedAt": "2026-11-29T21:05:00.000Z",
        "generatorURL": "http://127.0.0.1:9090/graph",
        "labels": {"alertname": "DiskFull", "instance": "db-1", "severity": "critical"}
      },
      {
        "annotations": {},
        "fingerprint": "0000000000000001",
        "startsAt": "2026-11-29T21:00:00.000Z",
        "status": {"inhibitedBy": [], "silencedBy": [], "state": "active"},
        "labels": {"alertname": "NotSilenced"}
      },
      {
        "fingerprint": "0000000000000002",
        "startsAt": "2026-11-29T21:00:00.000Z",
        "labels": {"instance": "no-alertname"}
      }
    ]"#;

    #[test]
    fn parses_silenced_alerts() {
        let alerts = parse_alerts(ANSWER.as_bytes()).expect("parses");
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        let alert = &alerts[0];
        assert_eq!(alert.status, AlertStatus::Silenced);
        assert_eq!(alert.name(), "DiskFull");
        assert_eq!(alert.labels["instance"], "db-1");
        assert_eq!(alert.annotations["summary"], "DiskFull on db-1");
        assert_eq!(alert.fingerprint.as_deref(), Some("4b5c3fa4c2b7a1e0"));
        assert_eq!(
            alert.starts_at,
            Some("2026-11-29T21:00:00Z".parse().expect("timestamp"))
        );
        assert_eq!(alert.ends_at, None);
        assert_eq!(alert.dedup_key, None);
    }

    #[test]
    fn bad_answers_are_errors() {
        assert!(parse_alerts(b"{\"error\": \"nope\"}").is_err());
        assert!(parse_alerts(b"not json").is_err());
        assert!(parse_alerts(b"[]").expect("empty").is_empty());
    }

    #[test]
    fn endpoint_joins_with_or_without_a_slash() {
        for base in ["http://127.0.0.1:9093", "http://127.0.0.1:9093/"] {
            let url = endpoint(&BaseUrl::parse(base).expect("url"));
            assert_eq!(url.as_str(), format!("http://127.0.0.1:9093{QUERY}"));
        }
        let url = endpoint(&BaseUrl::parse("https://am.example.com/am").expect("url"));
        assert_eq!(url.as_str(), format!("https://am.example.com/am{QUERY}"));
    }
}
