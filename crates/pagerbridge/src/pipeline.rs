//! The middle of the path of an alert: route each alert to its target, format it, commit the
//! whole request to the outbox in one transaction, then wake the lanes.
//!
//! [`Planner`] is the pure part (routing and formatting), shared by `serve` and `render`, so
//! `render` prints exactly what `serve` would queue. [`Pipeline`] adds storage.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use pagerduty_events::{ChangeEvent, DedupKey};
use serde::Serialize;

use crate::alert::{Alert, GroupContext};
use crate::config::{self, Target};
use crate::delivery::LaneWaker;
use crate::format::{DedupMode, FormatError, FormatNote, Formatted, Outbound, alert_dedup_key};
use crate::metrics::{Metrics, SourceLabel};
use crate::store::{
    Acceptance, Action, Condition, FingerprintLookup, IncidentSource, JsonText, NewEvent, Store,
    StoreError, SuppressionPolicy,
};
use crate::targets::{Snapshot, Targets};

/// Why a request could not be accepted.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("unknown target {0:?}")]
    UnknownTarget(String),
    #[error("no targets are configured")]
    NoTargets,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One alert, routed and formatted.
#[derive(Clone, Debug)]
pub struct Planned {
    pub target: String,
    pub alert: Option<Alert>,
    pub formatted: Formatted,
}

/// Routing and formatting, without storage, with the targets in force at each call.
pub struct Planner {
    targets: Targets,
}

impl Planner {
    /// A planner over a fixed list of targets (`render`, benchmarks).
    pub fn new(targets: Vec<Target>) -> Result<Self, FormatError> {
        Ok(Self::over(Targets::fixed(targets)?))
    }

    /// A planner over targets that may change while it runs.
    pub fn over(targets: Targets) -> Self {
        Self { targets }
    }

    /// The targets now.
    pub fn targets(&self) -> Arc<Snapshot> {
        self.targets.snapshot()
    }

    /// Routes and formats alerts. `explicit` (from the URL or request body) overrides label
    /// routing. Alerts that become nothing (a resolved change-event alert) are left out.
    ///
    /// Takes the alerts by value: each moves into its [`Planned`], where its outbox row is
    /// made from it, instead of being copied (labels, annotations and all) and the original
    /// dropped beside the copy.
    pub fn plan(
        &self,
        alerts: Vec<Alert>,
        group: &GroupContext,
        explicit: Option<&str>,
    ) -> Result<Vec<Planned>, PipelineError> {
        // One snapshot for the whole request: a target changing meanwhile applies to the
        // next request, never to half of this one.
        let targets = self.targets.snapshot();
        let explicit = explicit_target(&targets, explicit)?;
        Ok(alerts
            .into_iter()
            .filter_map(|alert| {
                let target =
                    explicit.unwrap_or_else(|| config::route(targets.targets(), &alert.labels));
                let formatter = targets.formatter(&target.name)?;
                let formatted = formatter.format(&alert, group)?;
                Some(Planned {
                    target: target.name.clone(),
                    alert: Some(alert),
                    formatted,
                })
            })
            .collect())
    }

    /// Plans a change event from the change-event API (default target unless named).
    pub fn plan_change(
        &self,
        event: ChangeEvent,
        notes: Vec<FormatNote>,
        explicit: Option<&str>,
    ) -> Result<Planned, PipelineError> {
        let targets = self.targets.snapshot();
        let target = match explicit_target(&targets, explicit)? {
            Some(target) => target,
            None => targets.targets().first().ok_or(PipelineError::NoTargets)?,
        };
        Ok(Planned {
            target: target.name.clone(),
            alert: None,
            formatted: Formatted {
                event: Outbound::Change(event),
                dedup_key: None,
                labels_key: false,
                severity: None,
                payload_hash: None,
                notes,
            },
        })
    }
}

/// The target named in the URL or request, or `None` to route by labels. Fails when there
/// are no targets at all, so that label routing always has a default.
fn explicit_target<'a>(
    targets: &'a Snapshot,
    name: Option<&str>,
) -> Result<Option<&'a Target>, PipelineError> {
    if targets.targets().is_empty() {
        return Err(PipelineError::NoTargets);
    }
    match name {
        None => Ok(None),
        Some(name) => targets
            .get(name)
            .map(Some)
            .ok_or_else(|| PipelineError::UnknownTarget(name.to_owned())),
    }
}

/// What became of a request, as answered to the sender.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Receipt {
    /// Alerts (or change events) in the request.
    pub received: usize,
    /// Events committed to the outbox.
    pub queued: usize,
    /// Events PagerDuty already has (unchanged re-triggers, repeated acknowledge/resolve).
    pub suppressed: usize,
}

/// Planner + storage: what the HTTP handlers call.
pub struct Pipeline {
    planner: Planner,
    store: Arc<dyn Store>,
    waker: LaneWaker,
    metrics: Arc<Metrics>,
    policy: SuppressionPolicy,
    /// Unknown severity values already logged, so each is logged once, not per alert.
    logged_severities: Mutex<HashSet<String>>,
}

impl Pipeline {
    pub fn new(
        planner: Planner,
        store: Arc<dyn Store>,
        waker: LaneWaker,
        metrics: Arc<Metrics>,
        policy: SuppressionPolicy,
    ) -> Self {
        Self {
            planner,
            store,
            waker,
            metrics,
            policy,
            logged_severities: Mutex::new(HashSet::new()),
        }
    }

    pub fn planner(&self) -> &Planner {
        &self.planner
    }

    /// Accepts alerts: returns only once every resulting event is committed.
    pub async fn accept_alerts(
        &self,
        source: IncidentSource,
        mut alerts: Vec<Alert>,
        group: &GroupContext,
        explicit_target: Option<&str>,
    ) -> Result<Receipt, PipelineError> {
        // The metric's label predates incident sources: the native API is "native".
        let label = match source {
            IncidentSource::Alertmanager => "alertmanager",
            IncidentSource::Api => "native",
        };
        self.metrics
            .alerts_received
            .get_or_create(&SourceLabel {
                source: label.to_owned(),
            })
            .inc_by(alerts.len() as u64);
        self.remember_dedup_keys(&mut alerts, explicit_target)
            .await?;
        let received = alerts.len();
        let planned = self.planner.plan(alerts, group, explicit_target)?;
        let mut receipt = self
            .commit(planned, Condition::Always, Some(source))
            .await?;
        receipt.received = received;
        Ok(receipt)
    }

    /// Accepts one change event from the change-event API.
    pub async fn accept_change(
        &self,
        event: ChangeEvent,
        notes: Vec<FormatNote>,
        explicit_target: Option<&str>,
    ) -> Result<Receipt, PipelineError> {
        self.metrics
            .alerts_received
            .get_or_create(&SourceLabel {
                source: "change".to_owned(),
            })
            .inc();
        let planned = self.planner.plan_change(event, notes, explicit_target)?;
        let mut receipt = self.commit(vec![planned], Condition::Always, None).await?;
        receipt.received = 1;
        Ok(receipt)
    }

    /// A resolve must reach the incident its trigger opened, even if the key derivation has
    /// changed since (a `dedup` option switched, a caller-chosen key): use the key remembered
    /// for the alert's fingerprint. A miss keeps the derived key.
    async fn remember_dedup_keys(
        &self,
        alerts: &mut [Alert],
        explicit_target_name: Option<&str>,
    ) -> Result<(), PipelineError> {
        let targets = self.planner.targets();
        if targets.targets().is_empty() {
            return Ok(());
        }
        let explicit = explicit_target(&targets, explicit_target_name)?;
        // Which alerts need a look, by target: one query per target for the whole request.
        let mut wanted: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, alert) in alerts.iter().enumerate() {
            if let (None, Some(_)) = (&alert.dedup_key, &alert.fingerprint) {
                let target =
                    explicit.unwrap_or_else(|| config::route(targets.targets(), &alert.labels));
                wanted.entry(target.name.as_str()).or_default().push(i);
            }
        }
        for (target, indexes) in wanted {
            // An incident keyed by its alert's labels' key is not in the fingerprint index
            // (`NewEvent::labels_key`). Under `dedup: alert` (the default) that key is what
            // the alert gets anyway, so it matters only against another key the index holds
            // for the fingerprint, which is rare: asked for only then, its hash computed only
            // then.
            let derives_labels_keys = targets
                .formatter(target)
                .is_some_and(|formatter| formatter.options().dedup == DedupMode::Alert);
            // The alerts to ask for with their labels' keys: under `dedup: alert`, those the
            // index answered for; otherwise all. (The stores answer none without a query.)
            let (mut known, with_labels_keys) = if derives_labels_keys {
                let known = self
                    .remembered_keys(target, alerts, &indexes, false)
                    .await?;
                let answered: Vec<usize> = indexes
                    .iter()
                    .copied()
                    .filter(|&i| {
                        alerts[i]
                            .fingerprint
                            .as_ref()
                            .is_some_and(|fingerprint| known.contains_key(fingerprint))
                    })
                    .collect();
                (known, answered)
            } else {
                (HashMap::new(), indexes.clone())
            };
            known.extend(
                self.remembered_keys(target, alerts, &with_labels_keys, true)
                    .await?,
            );
            for i in indexes {
                let alert = &mut alerts[i];
                if let Some(key) = alert
                    .fingerprint
                    .as_deref()
                    .and_then(|fingerprint| known.get(fingerprint))
                    .and_then(|known| pagerduty_events::DedupKey::new(known.clone()).ok())
                {
                    alert.dedup_key = Some(key);
                }
            }
        }
        Ok(())
    }

    /// The dedup keys last used for the fingerprints of `alerts[indexes]` on `target`, among
    /// the keys the fingerprint index holds and, `with_labels_keys`, the alerts' labels' keys.
    async fn remembered_keys(
        &self,
        target: &str,
        alerts: &[Alert],
        indexes: &[usize],
        with_labels_keys: bool,
    ) -> Result<HashMap<String, String>, PipelineError> {
        let labels_keys: Vec<Option<DedupKey>> = indexes
            .iter()
            .map(|&i| with_labels_keys.then(|| alert_dedup_key(&alerts[i].labels)))
            .collect();
        let lookups: Vec<FingerprintLookup<'_>> = indexes
            .iter()
            .zip(&labels_keys)
            .filter_map(|(&i, labels_key)| {
                Some(FingerprintLookup {
                    fingerprint: alerts[i].fingerprint.as_deref()?,
                    labels_key: labels_key.as_ref().map(DedupKey::as_str),
                })
            })
            .collect();
        Ok(self
            .store
            .dedup_keys_for_fingerprints(target, &lookups)
            .await?)
    }

    /// Accepts the planned events in one transaction, each queued only if `condition` holds;
    /// the triggers among them record `source` on their incidents.
    async fn commit(
        &self,
        planned: Vec<Planned>,
        condition: Condition,
        source: Option<IncidentSource>,
    ) -> Result<Receipt, PipelineError> {
        let events: Vec<NewEvent> = planned
            .into_iter()
            .map(|plan| {
                self.count_notes(&plan.target, &plan.formatted.notes);
                NewEvent {
                    condition,
                    source,
                    ..new_event(plan)
                }
            })
            .collect();
        let results = self.queue(events).await?;
        let mut receipt = Receipt::default();
        for result in results {
            match result {
                Acceptance::Queued { .. } => receipt.queued += 1,
                Acceptance::Suppressed { .. } => receipt.suppressed += 1,
            }
        }
        Ok(receipt)
    }

    /// Commits events built elsewhere (the Alertmanager sync's acknowledges and resolves) in
    /// one transaction, counts them and wakes their lanes: one [`Acceptance`] per event.
    pub async fn queue(&self, events: Vec<NewEvent>) -> Result<Vec<Acceptance>, PipelineError> {
        // What the bookkeeping below needs, kept so the events (JSON and all) move into storage.
        let kinds: Vec<(String, Action, Option<String>)> = events
            .iter()
            .map(|e| (e.target.clone(), e.action, e.dedup_key.clone()))
            .collect();
        let results = self
            .store
            .accept(events, &self.policy, Timestamp::now())
            .await?;
        let mut woken = HashSet::new();
        for ((target, action, dedup_key), result) in kinds.iter().zip(&results) {
            match result {
                Acceptance::Queued { .. } => {
                    Metrics::count(&self.metrics.events_queued, target, action.as_str());
                    if woken.insert(target.as_str()) {
                        self.waker.wake(target);
                    }
                }
                Acceptance::Suppressed { reason } => {
                    Metrics::count(&self.metrics.suppressed, target, reason);
                    tracing::debug!(
                        target_name = %target,
                        action = action.as_str(),
                        dedup_key = dedup_key.as_deref().unwrap_or(""),
                        reason,
                        "event suppressed"
                    );
                }
            }
        }
        Ok(results)
    }

    fn count_notes(&self, target: &str, notes: &[FormatNote]) {
        for note in notes {
            Metrics::count(&self.metrics.repaired, target, note.kind());
            if let FormatNote::UnknownSeverity { value } = note {
                let first_time = self
                    .logged_severities
                    .lock()
                    .map(|mut seen| seen.insert(value.clone()))
                    .unwrap_or(false);
                if first_time {
                    tracing::warn!(target_name = %target, severity = %value, "unknown severity; using the target's default (logged once per value)");
                }
            }
        }
    }
}

/// The outbox row for a planned event: its strings move into the row, not copied.
pub fn new_event(plan: Planned) -> NewEvent {
    let Planned {
        target,
        alert,
        formatted,
    } = plan;
    let (action, event) = match &formatted.event {
        Outbound::Alert(event) => {
            let action = match event {
                pagerduty_events::AlertEvent::Trigger(_) => Action::Trigger,
                pagerduty_events::AlertEvent::Acknowledge { .. } => Action::Acknowledge,
                pagerduty_events::AlertEvent::Resolve { .. } => Action::Resolve,
            };
            (action, JsonText::of(event))
        }
        Outbound::Change(event) => (Action::Change, JsonText::of(event)),
    };
    NewEvent {
        target,
        dedup_key: formatted.dedup_key.map(String::from),
        action,
        severity: formatted.severity,
        // Our own types always serialize; an empty object would be dead-lettered visibly.
        event: event.unwrap_or_else(|_| JsonText::empty_object()),
        alert: alert.as_ref().and_then(|a| JsonText::of(a).ok()),
        fingerprint: alert.and_then(|a| a.fingerprint),
        labels_key: formatted.labels_key,
        payload_hash: formatted.payload_hash,
        condition: Condition::Always,
        source: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{AlertStatus, Labels};
    use crate::config::{InlineKey, KeySource, RateLimit, SyncAction};
    use crate::format::{FormatOptions, group_dedup_key};
    use crate::store::sqlite::SqliteStore;

    const KEY: &str = "0123456789abcdef0123456789abpipe"; // fake test key

    fn pipeline(store: &Arc<dyn Store>, dedup: DedupMode) -> Pipeline {
        let target = Target {
            name: "default".to_owned(),
            key_source: KeySource::Inline(InlineKey::new(KEY)),
            matchers: Vec::new(),
            format: FormatOptions {
                dedup,
                ..FormatOptions::default()
            },
            rate_limit: RateLimit::default(),
            url: None,
            on_silence: SyncAction::Acknowledge,
            on_inhibit: SyncAction::None,
        };
        Pipeline::new(
            Planner::new(vec![target]).expect("planner"),
            store.clone(),
            LaneWaker::default(),
            Arc::new(Metrics::new()),
            SuppressionPolicy::default(),
        )
    }

    fn alert(name: &str, status: AlertStatus) -> Alert {
        Alert {
            status,
            labels: [("alertname".to_owned(), name.to_owned())].into(),
            annotations: Labels::new(),
            starts_at: None,
            ends_at: None,
            generator_url: None,
            fingerprint: Some(format!("fp-{name}")),
            dedup_key: None,
            classification: None,
        }
    }

    fn group(key: &str) -> GroupContext {
        GroupContext {
            group_key: Some(key.to_owned()),
            ..GroupContext::default()
        }
    }

    /// What one webhook of one alert queued: (action, dedup key).
    async fn send(pipeline: &Pipeline, alert: Alert, group: &GroupContext) -> (String, String) {
        let store = pipeline.store.clone();
        let before = store.pending(None, 1000).await.expect("pending").len();
        let receipt = pipeline
            .accept_alerts(IncidentSource::Alertmanager, vec![alert], group, None)
            .await
            .expect("accept");
        assert_eq!(receipt.queued, 1, "{receipt:?}");
        let pending = store.pending(None, 1000).await.expect("pending");
        assert_eq!(pending.len(), before + 1);
        let last = pending.iter().max_by_key(|e| e.id).expect("queued");
        (
            last.action.as_str().to_owned(),
            last.dedup_key.clone().expect("key"),
        )
    }

    /// A resolve reaches the incident its trigger opened after the target's `dedup` switched,
    /// both ways: from the default (an incident keyed by its labels, which the fingerprint
    /// index leaves out) to `group`, and from `group` (an incident the index holds) back.
    #[tokio::test]
    async fn a_resolve_follows_its_trigger_across_a_switch_of_dedup() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&dir.path().join("pagerbridge.db"))
                .await
                .expect("open"),
        );
        let (by_alert, by_group) = (
            pipeline(&store, DedupMode::Alert),
            pipeline(&store, DedupMode::Group),
        );

        let labels_key = alert_dedup_key(&alert("A", AlertStatus::Firing).labels).to_string();
        let trigger = send(&by_alert, alert("A", AlertStatus::Firing), &group("g1")).await;
        assert_eq!(trigger, ("trigger".to_owned(), labels_key.clone()));
        let resolve = send(&by_group, alert("A", AlertStatus::Resolved), &group("g1")).await;
        assert_eq!(resolve, ("resolve".to_owned(), labels_key));

        let group_key = group_dedup_key("g2").to_string();
        let trigger = send(&by_group, alert("B", AlertStatus::Firing), &group("g2")).await;
        assert_eq!(trigger, ("trigger".to_owned(), group_key.clone()));
        let resolve = send(&by_alert, alert("B", AlertStatus::Resolved), &group("g2")).await;
        assert_eq!(resolve, ("resolve".to_owned(), group_key));
    }
}
