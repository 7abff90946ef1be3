//! The native alerts API, `POST /api/v1/alerts`, for alert systems of our own (e.g. AI-classified
//! alerts).
//!
//! ```json
//! {
//!   "target": "payments",
//!   "alerts": [
//!     {
//!       "status": "firing",
//!       "labels": {"alertname": "CheckoutLatency", "service": "checkout", "severity": "warning"},
//!       "annotations": {"summary": "p99 latency above 2 s", "runbook_url": "https://…"},
//!       "startsAt": "2024-05-01T10:00:00Z",
//!       "endsAt": null,
//!       "generatorURL": "https://grafana.example/…",
//!       "fingerprint": "4f2a…",
//!       "dedup_key": "checkout-latency",
//!       "classification": {
//!         "severity": "critical",
//!         "category": "capacity",
//!         "confidence": 0.92,
//!         "reasoning": "latency rises with queue depth",
//!         "recommendations": ["scale out checkout", "check the payment provider"]
//!       }
//!     }
//!   ]
//! }
//! ```
//!
//! | member | required | meaning |
//! | --- | --- | --- |
//! | `target` | no | the configured target to send to; else the default route |
//! | `alerts` | yes | the alerts, possibly none |
//! | `alerts[].status` | yes | `firing` → trigger, `acknowledged` / `silenced` → acknowledge, `resolved` → resolve |
//! | `alerts[].labels` | yes | string → string, with a non-empty `alertname` |
//! | `alerts[].annotations` | no | string → string |
//! | `alerts[].startsAt`, `endsAt` | no | RFC 3339; `null`, `""` or Go's zero time mean unset |
//! | `alerts[].generatorURL`, `fingerprint` | no | strings |
//! | `alerts[].dedup_key` | no | the incident's key (1–255 characters); default: derived from the labels |
//! | `alerts[].classification` | no | `severity`, `category`, `reasoning` (strings), `confidence` (number in 0..=1), `recommendations` (array of strings), all optional |
//!
//! Unknown members are ignored. One invalid alert refuses the whole request with a 400 whose
//! detail names the alert (`alerts[2] (alertname="DiskFull"): …`).

use pagerduty_events::DedupKey;
use serde_json::{Map, Value};

use crate::alert::{Alert, AlertStatus, Classification};
use crate::ingest::{
    IngestError, alert_object, common_alert, identifier, kind, parse_object, read_alerts,
    take_alerts, target,
};

const STATUSES: [(&str, AlertStatus); 4] = [
    ("firing", AlertStatus::Firing),
    ("acknowledged", AlertStatus::Acknowledged),
    ("silenced", AlertStatus::Silenced),
    ("resolved", AlertStatus::Resolved),
];

/// A parsed native request.
#[derive(Clone, Debug, PartialEq)]
pub struct NativeRequest {
    pub target: Option<String>,
    pub alerts: Vec<Alert>,
}

/// Parses a native API body. Any invalid alert refuses the whole request.
pub fn parse(body: &[u8]) -> Result<NativeRequest, IngestError> {
    let mut request = parse_object(body)?;
    let target = target(&request)?;
    let alerts = read_alerts(body, take_alerts(&mut request)?, native_alert)?;
    Ok(NativeRequest { target, alerts })
}

fn native_alert(value: Value) -> Result<Alert, String> {
    let mut fields = alert_object(value)?;
    let mut alert = common_alert(&mut fields, &STATUSES)?;
    if let Some(key) = identifier(&mut fields, "dedup_key")? {
        alert.dedup_key =
            Some(DedupKey::new(key).map_err(|e| format!("\"dedup_key\" is invalid: {e}"))?);
    }
    alert.classification = match fields.get("classification") {
        None | Some(Value::Null) => None,
        Some(Value::Object(classification)) => Some(read_classification(classification)?),
        Some(other) => {
            return Err(format!(
                "\"classification\" must be an object, not {}",
                kind(other)
            ));
        }
    };
    Ok(alert)
}

fn read_classification(fields: &Map<String, Value>) -> Result<Classification, String> {
    // Blank texts count as absent: a blank category would make an empty "AI:" summary.
    let text = |name: &str| match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone()).filter(|t| !t.trim().is_empty())),
        Some(other) => Err(format!(
            "classification.{name} must be a string, not {}",
            kind(other)
        )),
    };
    let confidence = match fields.get("confidence") {
        None | Some(Value::Null) => None,
        Some(Value::Number(number)) => match number.as_f64() {
            Some(confidence) if (0.0..=1.0).contains(&confidence) => Some(confidence),
            _ => {
                return Err(format!(
                    "classification.confidence {number} is not between 0 and 1"
                ));
            }
        },
        Some(other) => {
            return Err(format!(
                "classification.confidence must be a number, not {}",
                kind(other)
            ));
        }
    };
    let recommendations = match fields.get("recommendations") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(text) => Ok(text.clone()),
                other => Err(format!(
                    "classification.recommendations[{i}] must be a string, not {}",
                    kind(other)
                )),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(other) => {
            return Err(format!(
                "classification.recommendations must be an array, not {}",
                kind(other)
            ));
        }
    };
    Ok(Classification {
        severity: text("severity")?,
        category: text("category")?,
        confidence,
        reasoning: text("reasoning")?,
        recommendations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn body(value: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&value).expect("serialize")
    }

    fn alert(status: &str) -> serde_json::Value {
        json!({"status": status, "labels": {"alertname": "CheckoutLatency", "service": "checkout"}})
    }

    fn refused(value: serde_json::Value) -> IngestError {
        parse(&body(value)).expect_err("should be refused")
    }

    #[test]
    fn native_alert_with_classification() {
        let request = parse(&body(json!({
            "target": "payments",
            "alerts": [{
                "status": "firing",
                "labels": {"alertname": "CheckoutLatency", "service": "checkout"},
                "annotations": {"summary": "p99 above 2 s"},
                "startsAt": "2024-05-01T10:00:00Z",
                "dedup_key": "checkout-latency",
                "classification": {
                    "severity": "critical", "category": "capacity", "confidence": 0.92,
                    "reasoning": "latency rises with queue depth",
                    "recommendations": ["scale out", "check provider"]
                }
            }]
        })))
        .expect("valid");
        assert_eq!(request.target.as_deref(), Some("payments"));
        let alert = &request.alerts[0];
        assert_eq!(alert.status, AlertStatus::Firing);
        assert_eq!(
            alert.dedup_key.as_ref().map(DedupKey::as_str),
            Some("checkout-latency")
        );
        assert_eq!(
            alert.classification,
            Some(Classification {
                severity: Some("critical".into()),
                category: Some("capacity".into()),
                confidence: Some(0.92),
                reasoning: Some("latency rises with queue depth".into()),
                recommendations: vec!["scale out".into(), "check provider".into()],
            })
        );
    }

    #[test]
    fn all_four_statuses_are_accepted() {
        let request = parse(&body(json!({"alerts": [
            alert("firing"), alert("acknowledged"), alert("silenced"), alert("resolved")
        ]})))
        .expect("valid");
        let statuses: Vec<_> = request.alerts.iter().map(|a| a.status).collect();
        assert_eq!(
            statuses,
            [
                AlertStatus::Firing,
                AlertStatus::Acknowledged,
                AlertStatus::Silenced,
                AlertStatus::Resolved
            ]
        );
        assert_eq!(request.target, None);
    }

    #[test]
    fn bad_status_lists_the_native_statuses() {
        assert_eq!(
            refused(json!({"alerts": [alert("pending")]})).detail,
            "alerts[0] (alertname=\"CheckoutLatency\"): status \"pending\" is not one of firing, acknowledged, silenced, resolved"
        );
    }

    #[test]
    fn dedup_key_limits_are_enforced() {
        let mut long = alert("firing");
        long["dedup_key"] = json!("k".repeat(256));
        let error = refused(json!({"alerts": [alert("firing"), long]}));
        assert_eq!(error.error(), "invalid_alert");
        assert!(
            error
                .detail
                .starts_with("alerts[1] (alertname=\"CheckoutLatency\"): \"dedup_key\" is invalid"),
            "{}",
            error.detail
        );
        assert!(error.detail.contains("255"), "{}", error.detail);
        let mut empty = alert("firing");
        empty["dedup_key"] = json!("");
        assert!(parse(&body(json!({"alerts": [empty]}))).is_err());
    }

    #[test]
    fn classification_errors_name_the_member() {
        let cases = [
            (
                json!({"confidence": 1.5}),
                "classification.confidence 1.5 is not between 0 and 1",
            ),
            (
                json!({"confidence": "high"}),
                "classification.confidence must be a number, not a string",
            ),
            (
                json!({"recommendations": "restart"}),
                "classification.recommendations must be an array, not a string",
            ),
            (
                json!({"recommendations": ["a", 2]}),
                "classification.recommendations[1] must be a string, not a number",
            ),
            (
                json!({"category": 3}),
                "classification.category must be a string, not a number",
            ),
            (
                json!("critical"),
                "\"classification\" must be an object, not a string",
            ),
        ];
        for (classification, expected) in cases {
            let mut a = alert("firing");
            a["classification"] = classification;
            let detail = refused(json!({"alerts": [a]})).detail;
            assert_eq!(
                detail,
                format!("alerts[0] (alertname=\"CheckoutLatency\"): {expected}")
            );
        }
    }

    #[test]
    fn blank_target_and_missing_alertname_are_refused() {
        assert_eq!(
            refused(json!({"target": " ", "alerts": []})).error(),
            "invalid_request"
        );
        assert_eq!(
            refused(json!({"target": 7, "alerts": []})).error(),
            "invalid_request"
        );
        let nameless = json!({"status": "firing", "labels": {"service": "x"}});
        assert_eq!(
            refused(json!({"alerts": [nameless]})).detail,
            "alerts[0]: label set has no \"alertname\""
        );
    }

    #[test]
    fn empty_alerts_is_accepted() {
        assert!(
            parse(&body(json!({"alerts": []})))
                .expect("valid")
                .alerts
                .is_empty()
        );
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn never_panics_on_arbitrary_json(value in crate::ingest::test_support::json_value()) {
            let _ = parse(&body(value.clone()));
            let _ = parse(&body(json!({"alerts": [value]})));
        }
    }
}
