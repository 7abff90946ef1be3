//! The bridge's own view of an alert, whatever door it came in by.
//!
//! Ingest turns Alertmanager webhooks and native API requests into [`Alert`]s; formatting turns
//! an [`Alert`] into a PagerDuty event. Nothing here knows HTTP or PagerDuty's wire format.

use std::collections::BTreeMap;

use jiff::Timestamp;
use pagerduty_events::DedupKey;
use serde::{Deserialize, Serialize};

/// Label or annotation names to values, sorted by name (the order the dedup key needs).
pub type Labels = BTreeMap<String, String>;

/// What the sender says about the alert now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Firing,
    /// Native API only: someone is on it (→ PagerDuty acknowledge).
    Acknowledged,
    /// Silenced in Alertmanager (→ PagerDuty acknowledge).
    Silenced,
    Resolved,
}

impl AlertStatus {
    /// The status as senders write it (`firing`, `acknowledged`, `silenced`, `resolved`).
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Acknowledged => "acknowledged",
            AlertStatus::Silenced => "silenced",
            AlertStatus::Resolved => "resolved",
        }
    }
}

/// An AI classification attached by the sender: from the native API's `classification`
/// object or from `ai_*` annotations.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Classification {
    /// The classifier's severity (e.g. `critical`, `noise`); first choice for PagerDuty's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recommendations: Vec<String>,
}

/// One alert. `labels` always holds `alertname` (ingest refuses alerts without it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub status: AlertStatus,
    pub labels: Labels,
    #[serde(default)]
    pub annotations: Labels,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator_url: Option<String>,
    /// Alertmanager's fingerprint of the label set, when the sender gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// A dedup key chosen by a native API caller; otherwise one is derived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup_key: Option<DedupKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classification: Option<Classification>,
}

impl Alert {
    /// The `alertname` label (present by construction).
    pub fn name(&self) -> &str {
        self.labels
            .get("alertname")
            .map(String::as_str)
            .unwrap_or("")
    }

    /// Alerts labelled `change_event="true"` become change events, not incidents.
    pub fn is_change_event(&self) -> bool {
        self.labels.get("change_event").map(String::as_str) == Some("true")
    }
}

/// What the whole Alertmanager webhook says about its group; formatting needs it for the
/// silence link and for `dedup: group`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupContext {
    /// Alertmanager's `groupKey`; its SHA-256 is Alertmanager's own dedup key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_key: Option<String>,
    /// Alertmanager's `externalURL`, for silence links.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiver: Option<String>,
}
