//! `custom_details`: everything a responder may want that has no field of its own.
//!
//! No size limit is applied here: `pagerduty_events::RequestBody` cuts the largest details when
//! the body is written, so what is stored and hashed is the whole alert.

use pagerduty_events::{CustomDetails, Severity};
use serde_json::{Value, json};

use crate::alert::{Alert, Classification};
use crate::format::severity::urgency;

/// A trigger's details: `labels`, `annotations`, `fingerprint`, `starts_at`, `ends_at`,
/// `generator_url`, `urgency`, `status` and `classification`; absent values are left out.
pub fn trigger_details(
    alert: &Alert,
    classification: Option<&Classification>,
    severity: Severity,
) -> CustomDetails {
    let mut details = common(alert);
    if let Some(ends_at) = alert.ends_at {
        details.insert("ends_at".into(), json!(ends_at.to_string()));
    }
    details.insert("urgency".into(), json!(urgency(severity)));
    details.insert("status".into(), json!(alert.status.as_str()));
    if let Some(classification) = classification {
        // Serializing plain strings and numbers cannot fail; a non-finite confidence becomes null.
        let value = serde_json::to_value(classification).unwrap_or(Value::Null);
        details.insert("classification".into(), value);
    }
    details
}

/// A change event's details: the alert's labels and annotations and where it came from.
pub fn change_details(alert: &Alert) -> CustomDetails {
    common(alert)
}

fn common(alert: &Alert) -> CustomDetails {
    let mut details = CustomDetails::new();
    details.insert("labels".into(), json!(alert.labels));
    details.insert("annotations".into(), json!(alert.annotations));
    if let Some(fingerprint) = &alert.fingerprint {
        details.insert("fingerprint".into(), json!(fingerprint));
    }
    if let Some(starts_at) = alert.starts_at {
        details.insert("starts_at".into(), json!(starts_at.to_string()));
    }
    if let Some(url) = &alert.generator_url {
        details.insert("generator_url".into(), json!(url));
    }
    details
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{AlertStatus, Labels};

    #[test]
    fn trigger_details_hold_everything_present() {
        let alert = Alert {
            status: AlertStatus::Firing,
            labels: Labels::from([("alertname".into(), "A".into())]),
            annotations: Labels::from([("summary".into(), "s".into())]),
            starts_at: "2024-05-01T10:00:00Z".parse().ok(),
            ends_at: None,
            generator_url: Some("http://prom/graph".into()),
            fingerprint: Some("f00".into()),
            dedup_key: None,
            classification: None,
        };
        let classification = Classification {
            category: Some("capacity".into()),
            confidence: Some(0.5),
            ..Classification::default()
        };
        let details = trigger_details(&alert, Some(&classification), Severity::Warning);
        assert_eq!(
            Value::Object(details),
            json!({
                "labels": {"alertname": "A"},
                "annotations": {"summary": "s"},
                "fingerprint": "f00",
                "starts_at": "2024-05-01T10:00:00Z",
                "generator_url": "http://prom/graph",
                "urgency": "high",
                "status": "firing",
                "classification": {"category": "capacity", "confidence": 0.5}
            })
        );
        let minimal = Alert {
            generator_url: None,
            fingerprint: None,
            starts_at: None,
            ..alert
        };
        assert_eq!(
            Value::Object(change_details(&minimal)),
            json!({"labels": {"alertname": "A"}, "annotations": {"summary": "s"}})
        );
    }
}
