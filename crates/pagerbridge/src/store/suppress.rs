//! The incident-state rules every store applies inside its accept transaction: which events
//! PagerDuty does not need again, and what the incident's state becomes.
//!
//! Alertmanager re-sends every firing alert of a group whenever the group changes; forwarding
//! each would burn PagerDuty's budget on nothing. So a trigger identical to the last one queued
//! for that incident, less than `retrigger_after` ago, is suppressed, and so is an acknowledge
//! of an acknowledged incident or a resolve of a resolved one.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{Action, Condition, NewEvent};

/// How long an unchanged trigger is not sent again (Alertmanager's repeat_interval).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SuppressionPolicy {
    pub retrigger_after: Duration,
}

impl Default for SuppressionPolicy {
    fn default() -> Self {
        Self {
            retrigger_after: Duration::from_secs(4 * 3600),
        }
    }
}

/// Where an incident stands, as far as what we queued for PagerDuty.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Triggered,
    Acknowledged,
    Resolved,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Triggered => "triggered",
            Status::Acknowledged => "acknowledged",
            Status::Resolved => "resolved",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "triggered" => Some(Status::Triggered),
            "acknowledged" => Some(Status::Acknowledged),
            "resolved" => Some(Status::Resolved),
            _ => None,
        }
    }
}

/// Where an incident's trigger came from. Only incidents from Alertmanager's webhooks are
/// reconciled against Alertmanager (and acted on for its silences and inhibitions): a native
/// API caller owns its incidents' lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IncidentSource {
    /// `/api/v1/alertmanager` and `/api/v1/alertmanager/{target}`.
    Alertmanager,
    /// The native API, `/api/v1/alerts`.
    Api,
}

impl IncidentSource {
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentSource::Alertmanager => "alertmanager",
            IncidentSource::Api => "api",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "alertmanager" => Some(IncidentSource::Alertmanager),
            "api" => Some(IncidentSource::Api),
            _ => None,
        }
    }
}

/// The remembered state of one incident (target, dedup key).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IncidentState {
    pub target: String,
    pub dedup_key: String,
    pub fingerprint: Option<String>,
    /// The dedup key is the SHA-256 of the labels of the alert with `fingerprint`
    /// ([`NewEvent::labels_key`]); `false` when unsure. Storage's business only: not shown.
    #[serde(skip)]
    pub labels_key: bool,
    pub status: Status,
    pub last_payload_hash: Option<String>,
    pub last_trigger_at: Option<Timestamp>,
    /// When PagerDuty last accepted an event of this incident.
    pub last_sent_at: Option<Timestamp>,
    /// When the last event of this incident was queued.
    pub updated_at: Timestamp,
    /// Where its last trigger came from; `None` for incidents stored before sources were.
    pub source: Option<IncidentSource>,
    /// When its first event was queued; `None` for incidents stored before this was.
    pub first_event_at: Option<Timestamp>,
    /// Set when the incident is first stored and never changed; its outbox rows carry it, so
    /// that the index of an incident's events is keyed by it before the dedup key (a hash),
    /// and a new incident's events append to that index (migration 0009). Storage's business
    /// only: not shown.
    #[serde(skip)]
    pub chain: i64,
}

/// Every reason [`suppression`] gives, for metrics.
pub const REASONS: [&str; 5] = [
    "unchanged_retrigger",
    "already_acknowledged",
    "already_resolved",
    "not_triggered",
    "not_open",
];

/// Why an event is not queued, or `None` to queue it.
pub fn suppression(
    current: Option<&IncidentState>,
    event: &NewEvent,
    policy: &SuppressionPolicy,
    now: Timestamp,
) -> Option<&'static str> {
    if event.condition == Condition::WhileTriggered
        && current.is_none_or(|state| state.status != Status::Triggered)
    {
        return Some("not_triggered");
    }
    if event.condition == Condition::WhileOpen
        && current.is_none_or(|state| state.status == Status::Resolved)
    {
        return Some("not_open");
    }
    let current = current?;
    match event.action {
        Action::Trigger => {
            let open = matches!(current.status, Status::Triggered | Status::Acknowledged);
            let unchanged =
                event.payload_hash.is_some() && event.payload_hash == current.last_payload_hash;
            let recent = current.last_trigger_at.is_some_and(|at| {
                now.duration_since(at)
                    < jiff::SignedDuration::try_from(policy.retrigger_after)
                        .unwrap_or(jiff::SignedDuration::MAX)
            });
            (open && unchanged && recent).then_some("unchanged_retrigger")
        }
        Action::Acknowledge => {
            (current.status == Status::Acknowledged).then_some("already_acknowledged")
        }
        Action::Resolve => (current.status == Status::Resolved).then_some("already_resolved"),
        Action::Change => None,
    }
}

/// The incident's state after `event` was queued.
pub fn next_state(
    current: Option<&IncidentState>,
    target: &str,
    dedup_key: &str,
    event: &NewEvent,
    now: Timestamp,
) -> IncidentState {
    let mut next = current.cloned().unwrap_or(IncidentState {
        target: target.to_owned(),
        dedup_key: dedup_key.to_owned(),
        fingerprint: None,
        labels_key: false,
        status: Status::Triggered,
        last_payload_hash: None,
        last_trigger_at: None,
        last_sent_at: None,
        updated_at: now,
        source: None,
        first_event_at: Some(now),
        chain: now.as_millisecond(),
    });
    if event.fingerprint.is_some() {
        next.fingerprint.clone_from(&event.fingerprint);
        next.labels_key = event.labels_key;
    }
    match event.action {
        Action::Trigger => {
            // A trigger on an acknowledged incident leaves it acknowledged, as PagerDuty does.
            if next.status == Status::Resolved || current.is_none() {
                next.status = Status::Triggered;
            }
            next.last_payload_hash.clone_from(&event.payload_hash);
            next.last_trigger_at = Some(now);
            if event.source.is_some() {
                next.source = event.source;
            }
        }
        Action::Acknowledge => next.status = Status::Acknowledged,
        Action::Resolve => next.status = Status::Resolved,
        Action::Change => {}
    }
    next.updated_at = now;
    next
}

/// Events decided in memory, in order, against their incidents' states as loaded at the start
/// of the transaction, for stores that write a whole request (or several) in a few statements.
/// Later events of an incident see the state the earlier ones left, so this is the same as
/// deciding and saving one event after another.
pub struct Decider {
    states: HashMap<(String, String), IncidentState>,
    /// The incidents changed, in the order first changed.
    changed: Vec<(String, String)>,
    /// The same, to look up (a batch may change many incidents), each with whether it is
    /// new: not stored before, so that `into_changed` gives it as a row to insert.
    created: HashMap<(String, String), bool>,
}

impl Decider {
    /// `loaded` holds the stored state of the incidents the events name, keyed by (target,
    /// dedup key); incidents not in it are new.
    pub fn new(loaded: HashMap<(String, String), IncidentState>) -> Self {
        Self {
            states: loaded,
            changed: Vec::new(),
            created: HashMap::new(),
        }
    }

    /// Per event, `None` to queue it or the reason it is suppressed.
    pub fn decide(
        &mut self,
        events: &[NewEvent],
        policy: &SuppressionPolicy,
        now: Timestamp,
    ) -> Vec<Option<&'static str>> {
        events
            .iter()
            .map(|event| {
                let key = event.dedup_key.as_ref()?;
                let id = (event.target.clone(), key.clone());
                let current = self.states.get(&id);
                if let Some(reason) = suppression(current, event, policy, now) {
                    return Some(reason);
                }
                let next = next_state(current, &event.target, key, event, now);
                // On its first change, an incident is new if it was not loaded.
                let new = self.states.insert(id.clone(), next).is_none();
                if let Entry::Vacant(first) = self.created.entry(id) {
                    self.changed.push(first.key().clone());
                    first.insert(new);
                }
                None
            })
            .collect()
    }

    /// The chain of the incident (target, dedup key) as decided so far: the stored one, or a
    /// new incident's.
    pub fn chain(&self, target: &str, dedup_key: &str) -> Option<i64> {
        self.states
            .get(&(target.to_owned(), dedup_key.to_owned()))
            .map(|state| state.chain)
    }

    /// How many incidents not stored before are created, per status they are created in: for
    /// a store that counts inserts itself.
    pub fn created_by_status(&self) -> BTreeMap<&'static str, i64> {
        let mut counts = BTreeMap::new();
        for (id, _) in self.created.iter().filter(|(_, new)| **new) {
            if let Some(state) = self.states.get(id) {
                *counts.entry(state.status.as_str()).or_insert(0) += 1;
            }
        }
        counts
    }

    /// The final state of every incident an event changed, once each.
    pub fn into_changed(mut self) -> Vec<IncidentState> {
        self.changed
            .iter()
            .filter_map(|id| self.states.remove(id))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(action: Action, hash: Option<&str>) -> NewEvent {
        NewEvent {
            target: "t".into(),
            dedup_key: Some("k".into()),
            action,
            severity: None,
            event: json!({}).into(),
            alert: None,
            fingerprint: Some("fp".into()),
            labels_key: false,
            payload_hash: hash.map(str::to_owned),
            condition: Condition::Always,
            source: None,
        }
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).expect("valid")
    }

    fn state_after(events: &[NewEvent], now: Timestamp) -> Option<IncidentState> {
        let mut state = None;
        for e in events {
            state = Some(next_state(state.as_ref(), "t", "k", e, now));
        }
        state
    }

    #[test]
    fn unchanged_trigger_is_suppressed_only_within_the_window() {
        let policy = SuppressionPolicy {
            retrigger_after: Duration::from_secs(60),
        };
        let state = state_after(&[event(Action::Trigger, Some("h1"))], at(0));
        let again = event(Action::Trigger, Some("h1"));
        assert_eq!(
            suppression(state.as_ref(), &again, &policy, at(59)),
            Some("unchanged_retrigger")
        );
        assert_eq!(suppression(state.as_ref(), &again, &policy, at(60)), None);
        let changed = event(Action::Trigger, Some("h2"));
        assert_eq!(suppression(state.as_ref(), &changed, &policy, at(1)), None);
    }

    #[test]
    fn trigger_after_resolve_is_sent_and_reopens() {
        let policy = SuppressionPolicy::default();
        let state = state_after(
            &[
                event(Action::Trigger, Some("h")),
                event(Action::Resolve, None),
            ],
            at(0),
        );
        let again = event(Action::Trigger, Some("h"));
        assert_eq!(suppression(state.as_ref(), &again, &policy, at(1)), None);
        let reopened = next_state(state.as_ref(), "t", "k", &again, at(1));
        assert_eq!(reopened.status, Status::Triggered);
    }

    #[test]
    fn repeated_acknowledge_and_resolve_are_suppressed() {
        let policy = SuppressionPolicy::default();
        let acked = state_after(
            &[
                event(Action::Trigger, Some("h")),
                event(Action::Acknowledge, None),
            ],
            at(0),
        );
        assert_eq!(
            suppression(
                acked.as_ref(),
                &event(Action::Acknowledge, None),
                &policy,
                at(1)
            ),
            Some("already_acknowledged")
        );
        let resolved = state_after(&[event(Action::Resolve, None)], at(0));
        assert_eq!(
            suppression(
                resolved.as_ref(),
                &event(Action::Resolve, None),
                &policy,
                at(1)
            ),
            Some("already_resolved")
        );
        // Unknown incidents are never suppressed: a cold cache must not lose a resolve.
        assert_eq!(
            suppression(None, &event(Action::Resolve, None), &policy, at(1)),
            None
        );
    }

    #[test]
    fn trigger_keeps_an_acknowledged_incident_acknowledged() {
        let state = state_after(
            &[
                event(Action::Trigger, Some("h")),
                event(Action::Acknowledge, None),
                event(Action::Trigger, Some("h2")),
            ],
            at(0),
        )
        .expect("state");
        assert_eq!(state.status, Status::Acknowledged);
        assert_eq!(state.last_payload_hash.as_deref(), Some("h2"));
    }
}
