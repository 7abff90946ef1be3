//! The events PagerDuty accepts: alert events (trigger, acknowledge, resolve) and change events.
//!
//! Events carry no routing key. The key is a credential and is added only when a request body
//! is written (see [`crate::body`]), so an event can be stored, queued or printed safely, and a
//! rotated key applies to events already queued.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use url::Url;

use crate::values::{DedupKey, EventTime, Image, Link, Severity, Source, Summary};

/// Free-form `custom_details`: PagerDuty requires a JSON object.
pub type CustomDetails = Map<String, Value>;

/// An alert event for `POST /v2/enqueue`. Serializes to PagerDuty's wire form (without the
/// routing key): `{"event_action": "trigger", "dedup_key": …, "payload": {…}, …}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event_action", rename_all = "lowercase")]
#[allow(
    clippy::large_enum_variant,
    reason = "events are built once and moved rarely; boxing would only complicate construction"
)]
pub enum AlertEvent {
    Trigger(Trigger),
    Acknowledge {
        dedup_key: DedupKey,
    },
    /// A resolve needs only its key. PagerDuty also takes a payload with it, shown in the
    /// alert's log: for saying why it was resolved (e.g. by reconciliation).
    Resolve {
        dedup_key: DedupKey,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        payload: Option<Payload>,
    },
}

impl AlertEvent {
    /// The dedup key, when the event has one (a trigger may leave it to PagerDuty).
    pub fn dedup_key(&self) -> Option<&DedupKey> {
        match self {
            AlertEvent::Trigger(trigger) => trigger.dedup_key.as_ref(),
            AlertEvent::Acknowledge { dedup_key } | AlertEvent::Resolve { dedup_key, .. } => {
                Some(dedup_key)
            }
        }
    }

    /// `trigger`, `acknowledge` or `resolve`.
    pub fn action(&self) -> &'static str {
        match self {
            AlertEvent::Trigger(_) => "trigger",
            AlertEvent::Acknowledge { .. } => "acknowledge",
            AlertEvent::Resolve { .. } => "resolve",
        }
    }
}

/// A trigger: opens an alert, or adds to the open one with the same dedup key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trigger {
    /// Without one PagerDuty generates a fresh key, so every retry would open a new alert:
    /// set it whenever the event may be retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup_key: Option<DedupKey>,
    pub payload: Payload,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<Link>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<Image>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_url: Option<Url>,
}

impl Trigger {
    /// A trigger with only the required fields; set the others directly.
    pub fn new(summary: Summary, source: Source, severity: Severity) -> Self {
        Self {
            dedup_key: None,
            payload: Payload::new(summary, source, severity),
            links: Vec::new(),
            images: Vec::new(),
            client: None,
            client_url: None,
        }
    }
}

/// A trigger's `payload`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Payload {
    pub summary: Summary,
    pub source: Source,
    pub severity: Severity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<EventTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_details: Option<CustomDetails>,
}

impl Payload {
    pub fn new(summary: Summary, source: Source, severity: Severity) -> Self {
        Self {
            summary,
            source,
            severity,
            timestamp: None,
            component: None,
            group: None,
            class: None,
            custom_details: None,
        }
    }
}

/// A change event for `POST /v2/change/enqueue`: a deploy or config change shown beside
/// incidents; it opens nothing and pages nobody.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChangeEvent {
    pub payload: ChangePayload,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<Link>,
}

impl ChangeEvent {
    pub fn new(summary: Summary) -> Self {
        Self {
            payload: ChangePayload {
                summary,
                source: None,
                timestamp: None,
                custom_details: None,
            },
            links: Vec::new(),
        }
    }
}

/// A change event's `payload`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChangePayload {
    pub summary: Summary,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<EventTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_details: Option<CustomDetails>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn trigger() -> Trigger {
        let mut trigger = Trigger::new(
            Summary::new("Disk full").expect("summary"),
            Source::new("db-1").expect("source"),
            Severity::Critical,
        );
        trigger.dedup_key = Some(DedupKey::new("abc").expect("key"));
        trigger
    }

    #[test]
    fn trigger_serializes_to_wire_form() {
        let value = serde_json::to_value(AlertEvent::Trigger(trigger())).expect("serialize");
        assert_eq!(
            value,
            json!({
                "event_action": "trigger",
                "dedup_key": "abc",
                "payload": {"summary": "Disk full", "source": "db-1", "severity": "critical"}
            })
        );
    }

    #[test]
    fn acknowledge_and_resolve_carry_only_the_key() {
        let key = DedupKey::new("abc").expect("key");
        let ack = serde_json::to_value(AlertEvent::Acknowledge {
            dedup_key: key.clone(),
        })
        .expect("serialize");
        assert_eq!(
            ack,
            json!({"event_action": "acknowledge", "dedup_key": "abc"})
        );
        let resolve = AlertEvent::Resolve {
            dedup_key: key,
            payload: None,
        };
        assert_eq!(resolve.action(), "resolve");
        assert_eq!(resolve.dedup_key().map(DedupKey::as_str), Some("abc"));
    }

    #[test]
    fn events_round_trip_through_json() {
        let event = AlertEvent::Trigger(trigger());
        let text = serde_json::to_string(&event).expect("serialize");
        let back: AlertEvent = serde_json::from_str(&text).expect("deserialize");
        assert_eq!(back, event);
    }

    #[test]
    fn deserializing_an_invalid_event_fails() {
        let bad = json!({"event_action": "trigger", "payload": {"summary": "", "source": "x", "severity": "critical"}});
        assert!(serde_json::from_value::<AlertEvent>(bad).is_err());
        let no_key = json!({"event_action": "resolve"});
        assert!(serde_json::from_value::<AlertEvent>(no_key).is_err());
    }
}
