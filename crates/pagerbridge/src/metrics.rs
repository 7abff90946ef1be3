//! Prometheus metrics: the seed's eight `pagerduty_*` metrics with their exact names, plus
//! `pagerbridge_*` metrics for the queue, lanes, incidents and suppression.
//!
//! Metrics are labelled by `target` where the seed says "routing_key": a key in a label would
//! leak it to anyone who can scrape. Queue gauges are read from storage at scrape time, so
//! they are true whichever replica or restart produced the rows.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use pagerduty_events::{Endpoint, Severity};

use crate::lease_keeper::Singleton;
use crate::store::{Action, Store, StoreError};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabel {
    pub target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub target: String,
    pub endpoint: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TriggerLabels {
    pub target: String,
    /// PagerDuty's severity of the trigger (critical, error, warning, info).
    pub severity: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub target: String,
    /// [`pagerduty_events::SendError::kind`]: invalid_event, rate_limited, server_error…
    pub error_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub target: String,
    /// The Events API path, `/v2/enqueue` or `/v2/change/enqueue`.
    pub endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub target: String,
    pub reason: String,
}

/// An action of the Alertmanager sync: `action` is `acknowledge` or `resolve`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub target: String,
    pub action: String,
}

/// An action of the Alertmanager sync on a muted alert: `cause` is `silenced` or `inhibited`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MutedLabels {
    pub target: String,
    pub cause: String,
    pub action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FallbackLabels {
    pub kind: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

/// Which singleton ([`crate::lease_keeper::Singleton`]): `housekeeping`, `silence`, `fallback`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SingletonLabel {
    pub singleton: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: String,
}

/// What the bridge was doing when storage failed
/// ([`crate::internal_events::StorageOperation`]).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabel {
    pub operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IngestLabels {
    /// The route as declared, e.g. `/api/v1/alertmanager/{target}`.
    pub endpoint: String,
    /// The HTTP status of the answer.
    pub status: String,
}

/// What a lane is doing, for `pagerbridge_lane_state`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum LaneState {
    healthy,
    rate_limited,
    backing_off,
    misconfigured,
}

impl LaneState {
    pub const ALL: [LaneState; 4] = [
        LaneState::healthy,
        LaneState::rate_limited,
        LaneState::backing_off,
        LaneState::misconfigured,
    ];
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LaneStateLabels {
    pub target: String,
    pub state: LaneState,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 5 ms to ~20 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 13))
}

fn lag_histogram() -> Histogram {
    // 10 ms to ~3 h: delivery lag includes outages.
    Histogram::new(exponential_buckets(0.01, 3.0, 14))
}

/// Every metric pagerbridge exports.
pub struct Metrics {
    registry: Registry,
    // The seed's eight.
    pub events_triggered: Family<TriggerLabels, Counter>,
    pub events_acknowledged: Family<TargetLabel, Counter>,
    pub events_resolved: Family<TargetLabel, Counter>,
    pub change_events: Family<TargetLabel, Counter>,
    pub api_requests: Family<RequestLabels, Counter>,
    pub api_errors: Family<ErrorLabels, Counter>,
    pub api_duration: HistogramFamily<EndpointLabels>,
    pub rate_limit_hits: Family<TargetLabel, Counter>,
    // pagerbridge's own.
    pub alerts_received: Family<SourceLabel, Counter>,
    pub events_queued: Family<ReasonLabels, Counter>,
    pub suppressed: Family<ReasonLabels, Counter>,
    pub dead_lettered: Family<ReasonLabels, Counter>,
    pub repaired: Family<ReasonLabels, Counter>,
    pub delivery_lag: HistogramFamily<TargetLabel>,
    pub queue_depth: Family<TargetLabel, Gauge>,
    pub oldest_pending_age: Family<TargetLabel, Gauge<f64, AtomicU64>>,
    pub dead_letters: Family<TargetLabel, Gauge>,
    pub open_incidents: Gauge,
    pub lane_state: Family<LaneStateLabels, Gauge>,
    pub lane_owned: Family<TargetLabel, Gauge>,
    pub singleton_owned: Family<SingletonLabel, Gauge>,
    pub fallback_sends: Family<FallbackLabels, Counter>,
    pub silence_polls: Family<ResultLabel, Counter>,
    /// Incidents resolved because no Alertmanager holds their alert any more.
    pub reconciled: Family<ActionLabels, Counter>,
    /// Incidents acknowledged or resolved because their alert is silenced or inhibited.
    pub muted_actions: Family<MutedLabels, Counter>,
    pub storage_errors: Family<OperationLabel, Counter>,
    pub ingest_requests: Family<IngestLabels, Counter>,
    pub budget_requests: Family<TargetLabel, Gauge>,
    pub budget_window: Family<TargetLabel, Gauge<f64, AtomicU64>>,
    /// Targets in force, by source (`file`, `secret`).
    pub targets: Family<SourceLabel, Gauge>,
    /// Kubernetes Secrets skipped, by reason (`invalid`, `name_clash`).
    pub secrets_skipped: Family<ReasonLabel, Counter>,
    /// Failures of the watch on Kubernetes Secrets (each is retried).
    pub secrets_watch_errors: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let m = Self {
            events_triggered: Family::default(),
            events_acknowledged: Family::default(),
            events_resolved: Family::default(),
            change_events: Family::default(),
            api_requests: Family::default(),
            api_errors: Family::default(),
            api_duration: Family::new_with_constructor(latency_histogram),
            rate_limit_hits: Family::default(),
            alerts_received: Family::default(),
            events_queued: Family::default(),
            suppressed: Family::default(),
            dead_lettered: Family::default(),
            repaired: Family::default(),
            delivery_lag: Family::new_with_constructor(lag_histogram),
            queue_depth: Family::default(),
            oldest_pending_age: Family::default(),
            dead_letters: Family::default(),
            open_incidents: Gauge::default(),
            lane_state: Family::default(),
            lane_owned: Family::default(),
            singleton_owned: Family::default(),
            fallback_sends: Family::default(),
            silence_polls: Family::default(),
            reconciled: Family::default(),
            muted_actions: Family::default(),
            storage_errors: Family::default(),
            ingest_requests: Family::default(),
            budget_requests: Family::default(),
            budget_window: Family::default(),
            targets: Family::default(),
            secrets_skipped: Family::default(),
            secrets_watch_errors: Counter::default(),
            registry: Registry::default(),
        };
        // prometheus-client appends `_total` to counters and `_seconds` is part of the name.
        registry.register(
            "pagerduty_events_triggered",
            "Trigger events PagerDuty accepted",
            m.events_triggered.clone(),
        );
        registry.register(
            "pagerduty_events_acknowledged",
            "Acknowledge events PagerDuty accepted",
            m.events_acknowledged.clone(),
        );
        registry.register(
            "pagerduty_events_resolved",
            "Resolve events PagerDuty accepted",
            m.events_resolved.clone(),
        );
        registry.register(
            "pagerduty_change_events",
            "Change events PagerDuty accepted",
            m.change_events.clone(),
        );
        registry.register(
            "pagerduty_api_requests",
            "Requests made to the PagerDuty Events API, by endpoint and HTTP status (or error kind)",
            m.api_requests.clone(),
        );
        registry.register(
            "pagerduty_api_errors",
            "PagerDuty requests that did not end in a 202, by error type",
            m.api_errors.clone(),
        );
        registry.register(
            "pagerduty_api_duration_seconds",
            "Duration of PagerDuty Events API requests, by endpoint",
            m.api_duration.clone(),
        );
        registry.register(
            "pagerduty_rate_limit_hits",
            "429 answers from PagerDuty",
            m.rate_limit_hits.clone(),
        );
        registry.register(
            "pagerbridge_alerts_received",
            "Alerts received, by source (alertmanager, native, change)",
            m.alerts_received.clone(),
        );
        registry.register(
            "pagerbridge_events_queued",
            "Events committed to the outbox, by target and action",
            m.events_queued.clone(),
        );
        registry.register(
            "pagerbridge_suppressed_events",
            "Events not queued because PagerDuty already has that state, by reason",
            m.suppressed.clone(),
        );
        registry.register(
            "pagerbridge_dead_lettered_events",
            "Events moved to dead letters, by reason",
            m.dead_lettered.clone(),
        );
        registry.register(
            "pagerbridge_repaired_fields",
            "Fields repaired before sending (truncated summary, unknown severity, dropped image, shrunk body)",
            m.repaired.clone(),
        );
        registry.register(
            "pagerbridge_delivery_lag_seconds",
            "Time from acceptance to PagerDuty's 202",
            m.delivery_lag.clone(),
        );
        registry.register(
            "pagerbridge_queue_depth",
            "Events waiting for delivery",
            m.queue_depth.clone(),
        );
        registry.register(
            "pagerbridge_oldest_pending_age_seconds",
            "Age of the oldest event waiting for delivery",
            m.oldest_pending_age.clone(),
        );
        registry.register(
            "pagerbridge_dead_letters",
            "Events in dead letters",
            m.dead_letters.clone(),
        );
        registry.register(
            "pagerbridge_open_incidents",
            "Incidents triggered or acknowledged",
            m.open_incidents.clone(),
        );
        registry.register(
            "pagerbridge_lane_state",
            "1 for the state each lane is in",
            m.lane_state.clone(),
        );
        registry.register(
            "pagerbridge_lane_owned",
            "1 for each lane this replica drives (holds the lease of), 0 for the others",
            m.lane_owned.clone(),
        );
        registry.register(
            "pagerbridge_singleton_owned",
            "1 for each singleton (housekeeping, silence, fallback) this replica runs (holds the \
             lease of), 0 for the others",
            m.singleton_owned.clone(),
        );
        registry.register(
            "pagerbridge_fallback_sends",
            "Notices to the fallback webhook, by kind (failing, dead_lettered) and result",
            m.fallback_sends.clone(),
        );
        registry.register(
            "pagerbridge_silence_watcher_polls",
            "Polls of the Alertmanager sync, by result (ok: every Alertmanager answered; error)",
            m.silence_polls.clone(),
        );
        registry.register(
            "pagerbridge_reconciled",
            "Incidents resolved because no Alertmanager holds their alert any more (a lost \
             resolve), by target and action (resolve)",
            m.reconciled.clone(),
        );
        registry.register(
            "pagerbridge_alertmanager_muted_actions",
            "Incidents acknowledged or resolved by the target's on_silence / on_inhibit policy, \
             by target, cause (silenced, inhibited) and action",
            m.muted_actions.clone(),
        );
        registry.register(
            "pagerbridge_storage_errors",
            "Failed storage operations, by what the bridge was doing (ingest, delivery, leases, \
             housekeeping, fallback, silence, admin, metrics)",
            m.storage_errors.clone(),
        );
        registry.register(
            "pagerbridge_ingest_requests",
            "Answers of the ingest endpoints, by endpoint (the route) and HTTP status",
            m.ingest_requests.clone(),
        );
        registry.register(
            "pagerbridge_budget_requests",
            "Requests each lane may make per budget window (its rate_limit.requests)",
            m.budget_requests.clone(),
        );
        registry.register(
            "pagerbridge_budget_window_seconds",
            "Each lane's budget window (its rate_limit.window)",
            m.budget_window.clone(),
        );
        // Series known from the start exist at zero: an alert on `increase()` sees the first
        // error, and a dashboard shows 0 rather than "no data".
        for operation in crate::internal_events::StorageOperation::ALL {
            let _ = m.storage_errors.get_or_create(&OperationLabel {
                operation: operation.as_str().to_owned(),
            });
        }
        for source in ["alertmanager", "native", "change"] {
            let _ = m.alerts_received.get_or_create(&SourceLabel {
                source: source.to_owned(),
            });
        }
        registry.register(
            "pagerbridge_targets",
            "Targets in force, by source (file: the config file, secret: Kubernetes Secrets)",
            m.targets.clone(),
        );
        registry.register(
            "pagerbridge_kubernetes_secrets_skipped",
            "Kubernetes Secrets not taken as targets, by reason (invalid, name_clash)",
            m.secrets_skipped.clone(),
        );
        registry.register(
            "pagerbridge_kubernetes_watch_errors",
            "Failures of the watch on Kubernetes Secrets; each is retried with backoff",
            m.secrets_watch_errors.clone(),
        );
        Self { registry, ..m }
    }

    /// Creates a target's series at zero, so dashboards and alerts see them before the first
    /// event (an absent series reads as "no data", not as 0).
    pub fn init_target(&self, target: &str) {
        let label = TargetLabel {
            target: target.to_owned(),
        };
        for severity in pagerduty_events::Severity::ALL {
            let _ = self.events_triggered.get_or_create(&TriggerLabels {
                target: target.to_owned(),
                severity: severity.as_str().to_owned(),
            });
        }
        for family in [
            &self.events_acknowledged,
            &self.events_resolved,
            &self.change_events,
            &self.rate_limit_hits,
        ] {
            let _ = family.get_or_create(&label);
        }
        for endpoint in [Endpoint::Enqueue, Endpoint::ChangeEnqueue] {
            let _ = self.api_duration.get_or_create(&EndpointLabels {
                target: target.to_owned(),
                endpoint: endpoint.path().to_owned(),
            });
        }
        let _ = self.delivery_lag.get_or_create(&label);
        let _ = self.lane_owned.get_or_create(&label);
        let _ = self.api_requests.get_or_create(&RequestLabels {
            target: target.to_owned(),
            endpoint: "/v2/enqueue".to_owned(),
            status: "202".to_owned(),
        });
        let _ = self.api_errors.get_or_create(&ErrorLabels {
            target: target.to_owned(),
            error_type: "server_error".to_owned(),
        });
        for reason in crate::store::suppress::REASONS {
            Self::count_zero(&self.suppressed, target, reason);
        }
        for action in Action::ALL {
            Self::count_zero(&self.events_queued, target, action.as_str());
        }
        for reason in crate::internal_events::DeadLetterReason::ALL {
            Self::count_zero(&self.dead_lettered, target, reason.as_str());
        }
        let _ = self.reconciled.get_or_create(&ActionLabels {
            target: target.to_owned(),
            action: "resolve".to_owned(),
        });
        for cause in ["silenced", "inhibited"] {
            for action in ["acknowledge", "resolve"] {
                let _ = self.muted_actions.get_or_create(&MutedLabels {
                    target: target.to_owned(),
                    cause: cause.to_owned(),
                    action: action.to_owned(),
                });
            }
        }
        self.set_lane_state(target, LaneState::healthy);
    }

    /// Creates a singleton's `pagerbridge_singleton_owned` series at 0, for the replicas that
    /// keep its lease (a singleton that is not configured has no series).
    pub fn init_singleton(&self, singleton: Singleton) {
        let _ = self.singleton_owned.get_or_create(&SingletonLabel {
            singleton: singleton.as_str().to_owned(),
        });
    }

    /// Exports the send budget a target's lane keeps to.
    pub fn set_budget(&self, target: &str, requests: u32, window: std::time::Duration) {
        let label = TargetLabel {
            target: target.to_owned(),
        };
        self.budget_requests
            .get_or_create(&label)
            .set(i64::from(requests));
        self.budget_window
            .get_or_create(&label)
            .set(window.as_secs_f64());
    }

    /// Creates the fallback publisher's series at zero, when it is configured.
    pub fn init_fallback(&self) {
        for kind in ["failing", "dead_lettered"] {
            for result in ["sent", "failed"] {
                let _ = self.fallback_sends.get_or_create(&FallbackLabels {
                    kind: kind.to_owned(),
                    result: result.to_owned(),
                });
            }
        }
    }

    /// Creates an ingest endpoint's 202 and 503 series at zero, so the first 503 is seen by
    /// `increase()`.
    pub fn init_ingest(&self, endpoint: &str) {
        for status in ["202", "503"] {
            let _ = self.ingest_requests.get_or_create(&IngestLabels {
                endpoint: endpoint.to_owned(),
                status: status.to_owned(),
            });
        }
    }

    fn count_zero(family: &Family<ReasonLabels, Counter>, target: &str, reason: &str) {
        let _ = family.get_or_create(&ReasonLabels {
            target: target.to_owned(),
            reason: reason.to_owned(),
        });
    }

    /// Counts an accepted (202) event of `action`; triggers by their severity too.
    pub fn delivered(&self, target: &str, action: Action, severity: Option<Severity>) {
        let label = TargetLabel {
            target: target.to_owned(),
        };
        let family = match action {
            Action::Trigger => {
                self.events_triggered
                    .get_or_create(&TriggerLabels {
                        target: target.to_owned(),
                        // A stored trigger always has one; "none" would show a corrupt row.
                        severity: severity.map_or("none", Severity::as_str).to_owned(),
                    })
                    .inc();
                return;
            }
            Action::Acknowledge => &self.events_acknowledged,
            Action::Resolve => &self.events_resolved,
            Action::Change => &self.change_events,
        };
        family.get_or_create(&label).inc();
    }

    /// Sets the lane's state gauge: 1 for `state`, 0 for the others.
    pub fn set_lane_state(&self, target: &str, state: LaneState) {
        for each in LaneState::ALL {
            self.lane_state
                .get_or_create(&LaneStateLabels {
                    target: target.to_owned(),
                    state: each,
                })
                .set(i64::from(each == state));
        }
    }

    /// Counts one notice to the fallback webhook.
    pub fn fallback_send(&self, kind: &str, result: &str) {
        self.fallback_sends
            .get_or_create(&FallbackLabels {
                kind: kind.to_owned(),
                result: result.to_owned(),
            })
            .inc();
    }

    /// Sets `pagerbridge_targets` from the targets in force.
    pub fn set_targets(&self, targets: &crate::targets::Snapshot) {
        for source in crate::targets::Source::ALL {
            self.targets
                .get_or_create(&SourceLabel {
                    source: source.as_str().to_owned(),
                })
                .set(targets.count(source) as i64);
        }
    }

    /// Counts one poll of the silence watcher (`ok` or `error`).
    pub fn silence_poll(&self, result: &str) {
        self.silence_polls
            .get_or_create(&ResultLabel {
                result: result.to_owned(),
            })
            .inc();
    }

    /// Counts one `(target, reason)` event in a labelled counter family.
    pub fn count(family: &Family<ReasonLabels, Counter>, target: &str, reason: &str) {
        family
            .get_or_create(&ReasonLabels {
                target: target.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Reads the queue gauges from storage, so they are right at every scrape.
    pub async fn refresh_from_store(
        &self,
        store: &dyn Store,
        targets: &[String],
        now: jiff::Timestamp,
    ) -> Result<(), StoreError> {
        let stats = store.lane_stats().await?;
        for target in targets {
            let lane = stats.iter().find(|s| &s.target == target);
            let label = TargetLabel {
                target: target.clone(),
            };
            let pending = lane.map_or(0, |s| s.pending);
            let dead = lane.map_or(0, |s| s.dead);
            let age = lane
                .and_then(|s| s.oldest_pending_accepted_at)
                .map_or(0.0, |at| now.duration_since(at).as_secs_f64().max(0.0));
            self.queue_depth
                .get_or_create(&label)
                .set(i64::try_from(pending).unwrap_or(i64::MAX));
            self.dead_letters
                .get_or_create(&label)
                .set(i64::try_from(dead).unwrap_or(i64::MAX));
            self.oldest_pending_age.get_or_create(&label).set(age);
        }
        let open = store.open_incidents().await?;
        self.open_incidents
            .set(i64::try_from(open).unwrap_or(i64::MAX));
        Ok(())
    }

    /// The OpenMetrics text exposition.
    pub fn encode_openmetrics(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The classic Prometheus text format (0.0.4), for scrapers and tools (promtool, curl)
    /// that do not ask for OpenMetrics.
    pub fn encode_prometheus_text(&self) -> String {
        openmetrics_to_prometheus_text(&self.encode_openmetrics())
    }
}

/// OpenMetrics names a counter family without `_total` in `# HELP`/`# TYPE` and ends with
/// `# EOF`; the Prometheus text format names it as its samples are named.
fn openmetrics_to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_names_counter_families_like_their_samples() {
        let metrics = Metrics::new();
        metrics.init_target("default");
        metrics.delivered("default", Action::Trigger, Some(Severity::Critical));
        let text = metrics.encode_prometheus_text();
        assert!(text.contains("# TYPE pagerduty_events_triggered_total counter\n"));
        assert!(text.contains("# HELP pagerduty_events_triggered_total Trigger events"));
        assert!(text.contains(
            "pagerduty_events_triggered_total{target=\"default\",severity=\"critical\"} 1\n"
        ));
        assert!(text.contains("# TYPE pagerduty_api_duration_seconds histogram\n"));
        assert!(!text.contains("# EOF"));
        assert!(metrics.encode_openmetrics().ends_with("# EOF\n"));
    }

    /// What dashboards and alert rules read before anything happened is there, at zero or at
    /// its configured value.
    #[test]
    fn series_known_in_advance_are_exported_before_the_first_event() {
        let metrics = Metrics::new();
        metrics.init_target("db");
        metrics.set_budget("db", 120, std::time::Duration::from_secs(60));
        metrics.init_fallback();
        metrics.init_ingest("/api/v1/alerts");
        let text = metrics.encode_prometheus_text();
        for line in [
            "pagerbridge_budget_requests{target=\"db\"} 120\n",
            "pagerbridge_budget_window_seconds{target=\"db\"} 60.0\n",
            "pagerbridge_events_queued_total{target=\"db\",reason=\"change\"} 0\n",
            "pagerbridge_alerts_received_total{source=\"alertmanager\"} 0\n",
            "pagerbridge_fallback_sends_total{kind=\"failing\",result=\"failed\"} 0\n",
            "pagerbridge_fallback_sends_total{kind=\"dead_lettered\",result=\"sent\"} 0\n",
            "pagerbridge_ingest_requests_total{endpoint=\"/api/v1/alerts\",status=\"503\"} 0\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
    }
}
