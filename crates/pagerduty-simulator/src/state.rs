//! What the simulator has seen and done: the request log, the alerts that events opened and
//! changed, and the counters over both.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::responses::{Outcome, Reply};
use crate::validate::{Action, AlertEvent};

/// One request to an event route (or to an unknown route), as received and answered.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ReceivedRequest {
    /// Position in the log, from 1; alert history entries refer to it.
    pub seq: u64,
    pub method: String,
    pub path: String,
    /// RFC 3339 time of arrival.
    pub received_at: String,
    pub user_agent: Option<String>,
    pub content_type: Option<String>,
    /// The body as JSON if it parsed; otherwise a JSON string holding the text (lossy
    /// UTF-8), or a `<…>` note for a body that was over the limit or could not be read.
    pub body: Value,
    pub status: u16,
    /// The JSON body of the answer.
    pub response: Value,
}

/// Lifecycle of an alert, as PagerDuty shows it.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Triggered,
    Acknowledged,
    Resolved,
}

/// An alert, keyed by routing key and dedup key while it is open.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Alert {
    /// From 1, in order of creation.
    pub id: u64,
    pub routing_key: String,
    pub dedup_key: String,
    pub state: AlertState,
    /// From the latest trigger.
    pub summary: String,
    /// From the latest trigger.
    pub severity: String,
    /// From the latest trigger.
    pub source: String,
    pub created_at: String,
    pub updated_at: String,
    /// Every event applied to the alert, oldest first.
    pub history: Vec<AlertHistoryEntry>,
}

/// One event applied to an alert.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct AlertHistoryEntry {
    /// `seq` of the request in the log.
    pub seq: u64,
    /// `trigger`, `acknowledge` or `resolve`.
    pub action: String,
    pub at: String,
}

/// Counters over the request log.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests logged (every route but `/_simulator/*`).
    pub requests: u64,
    /// Path → status (as a string) → count.
    pub by_path: BTreeMap<String, BTreeMap<String, u64>>,
    /// 202s: alert events (applied or dropped) and change events.
    pub accepted: u64,
    /// Of `accepted`: acknowledge or resolve events that found no open alert.
    pub dropped: u64,
    /// 400s and 413s from the simulator's own checks (not forced ones).
    pub rejected_invalid: u64,
    /// 429s from the per-key budget.
    pub budget_violations: u64,
    /// Answers from injected faults: outage 503s, forced statuses, fail-rate 500s.
    pub forced_or_failed: u64,
    /// Of `accepted`: change events.
    pub change_events: u64,
}

/// The log, the alerts and the counters.
#[derive(Debug, Default)]
pub(crate) struct State {
    events: Vec<ReceivedRequest>,
    alerts: Vec<Alert>,
    /// (routing key, dedup key) → index in `alerts` of the open alert.
    open: HashMap<(String, String), usize>,
    stats: Stats,
    last_seq: u64,
}

/// The request fields logged alongside the answer.
#[derive(Debug)]
pub(crate) struct RequestMeta {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) received_at: String,
    pub(crate) user_agent: Option<String>,
    pub(crate) content_type: Option<String>,
}

impl State {
    /// The `seq` the next logged request gets; handlers take it before applying the event
    /// so alert history can point at the request.
    pub(crate) fn next_seq(&mut self) -> u64 {
        self.last_seq += 1;
        self.last_seq
    }

    pub(crate) fn record(&mut self, seq: u64, meta: RequestMeta, body: Value, reply: &Reply) {
        let stats = &mut self.stats;
        stats.requests += 1;
        *stats
            .by_path
            .entry(meta.path.clone())
            .or_default()
            .entry(reply.status.as_u16().to_string())
            .or_default() += 1;
        match reply.outcome {
            Outcome::Accepted => stats.accepted += 1,
            Outcome::Dropped => {
                stats.accepted += 1;
                stats.dropped += 1;
            }
            Outcome::ChangeAccepted => {
                stats.accepted += 1;
                stats.change_events += 1;
            }
            Outcome::Invalid => stats.rejected_invalid += 1,
            Outcome::Throttled => stats.budget_violations += 1,
            Outcome::Fault => stats.forced_or_failed += 1,
            Outcome::NotFound => {}
        }
        self.events.push(ReceivedRequest {
            seq,
            method: meta.method,
            path: meta.path,
            received_at: meta.received_at,
            user_agent: meta.user_agent,
            content_type: meta.content_type,
            body,
            status: reply.status.as_u16(),
            response: reply.body.clone(),
        });
    }

    /// Applies a valid alert event with PagerDuty's dedup rules and returns the dedup key
    /// and whether any alert changed (acknowledge or resolve without an open alert is
    /// dropped).
    pub(crate) fn apply_alert(&mut self, event: AlertEvent, seq: u64, at: &str) -> (String, bool) {
        // PagerDuty generates a UUID, so a trigger without a key always opens a new alert.
        let dedup_key = event
            .dedup_key
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        let key = (event.routing_key, dedup_key);
        let entry = AlertHistoryEntry {
            seq,
            action: event.action.as_str().to_owned(),
            at: at.to_owned(),
        };
        let Some(&index) = self.open.get(&key) else {
            if event.action != Action::Trigger {
                return (key.1, false);
            }
            let alert = Alert {
                id: self.alerts.len() as u64 + 1,
                routing_key: key.0.clone(),
                dedup_key: key.1.clone(),
                state: AlertState::Triggered,
                summary: event.summary,
                severity: event.severity,
                source: event.source,
                created_at: at.to_owned(),
                updated_at: at.to_owned(),
                history: vec![entry],
            };
            self.open.insert(key.clone(), self.alerts.len());
            self.alerts.push(alert);
            return (key.1, true);
        };

        let alert = &mut self.alerts[index];
        match event.action {
            // A repeated trigger refreshes the alert but does not undo an acknowledgement.
            Action::Trigger => {
                alert.summary = event.summary;
                alert.severity = event.severity;
                alert.source = event.source;
            }
            Action::Acknowledge => alert.state = AlertState::Acknowledged,
            Action::Resolve => alert.state = AlertState::Resolved,
        }
        alert.updated_at = at.to_owned();
        alert.history.push(entry);
        if event.action == Action::Resolve {
            self.open.remove(&key);
        }
        (key.1, true)
    }

    pub(crate) fn events(&self) -> Vec<ReceivedRequest> {
        self.events.clone()
    }

    pub(crate) fn alerts(&self) -> Vec<Alert> {
        self.alerts.clone()
    }

    pub(crate) fn stats(&self) -> Stats {
        self.stats.clone()
    }
}
