//! The Alertmanager webhook (version 4), as sent by Alertmanager's `webhook_configs`.
//!
//! ```json
//! {"version": "4", "groupKey": "{}:{alertname=\"DiskFull\"}", "truncatedAlerts": 0,
//!  "status": "firing", "receiver": "pagerbridge", "externalURL": "http://alertmanager:9093",
//!  "groupLabels": {…}, "commonLabels": {…}, "commonAnnotations": {…},
//!  "alerts": [{"status": "firing", "labels": {"alertname": "DiskFull", …},
//!              "annotations": {…}, "startsAt": "…", "endsAt": "0001-01-01T00:00:00Z",
//!              "generatorURL": "…", "fingerprint": "d5cbd2dfa7790fae"}]}
//! ```
//!
//! Each alert's own `status` decides its event (a group's `status` is `firing` while any of
//! its alerts fires, so it says nothing about a resolved member). A missing `version` is taken
//! as 4; any other explicit version is refused. `endsAt` of Go's zero time means "not set".
//! Members we do not use (`groupLabels`, `commonLabels`, …) and unknown members are ignored.

use serde_json::{Map, Value};

use crate::alert::{Alert, AlertStatus, GroupContext};
use crate::ingest::{
    IngestError, IngestProblem, alert_object, common_alert, kind, non_empty, optional_string,
    parse_object, quote, read_alerts, take_alerts,
};

/// The webhook version this module reads.
pub const VERSION: &str = "4";

const STATUSES: [(&str, AlertStatus); 2] = [
    ("firing", AlertStatus::Firing),
    ("resolved", AlertStatus::Resolved),
];

/// A parsed webhook: its alerts, in the order sent, and what it says about their group.
#[derive(Clone, Debug, PartialEq)]
pub struct Webhook {
    pub alerts: Vec<Alert>,
    pub group: GroupContext,
    /// The group's status (`firing` or `resolved`), informational only.
    pub status: Option<String>,
    /// How many alerts Alertmanager left out because of the receiver's `max_alerts`.
    pub truncated_alerts: u64,
}

/// Parses an Alertmanager webhook body. Any invalid alert refuses the whole request.
pub fn parse(body: &[u8]) -> Result<Webhook, IngestError> {
    let mut request = parse_object(body)?;
    check_version(&request)?;
    let field = |name: &str| {
        optional_string(&request, name)
            .map(non_empty)
            .map_err(|detail| IngestError::new(IngestProblem::InvalidRequest, detail))
    };
    let group = GroupContext {
        group_key: field("groupKey")?,
        external_url: field("externalURL")?,
        receiver: field("receiver")?,
    };
    let status = field("status")?;
    let truncated_alerts = truncated_alerts(&request)?;
    let alerts = read_alerts(body, take_alerts(&mut request)?, |alert| {
        common_alert(&mut alert_object(alert)?, &STATUSES)
    })?;
    Ok(Webhook {
        alerts,
        group,
        status,
        truncated_alerts,
    })
}

fn check_version(request: &Map<String, Value>) -> Result<(), IngestError> {
    match request.get("version") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(version)) if version == VERSION => Ok(()),
        Some(Value::String(version)) => Err(IngestError::new(
            IngestProblem::UnsupportedVersion,
            format!(
                "webhook version {} is not supported; pagerbridge reads Alertmanager webhook version {VERSION}",
                quote(version)
            ),
        )),
        Some(other) => Err(IngestError::new(
            IngestProblem::InvalidRequest,
            format!("\"version\" must be a string, not {}", kind(other)),
        )),
    }
}

fn truncated_alerts(request: &Map<String, Value>) -> Result<u64, IngestError> {
    match request.get("truncatedAlerts") {
        None | Some(Value::Null) => Ok(0),
        Some(value) => value.as_u64().ok_or_else(|| {
            IngestError::new(
                IngestProblem::InvalidRequest,
                "\"truncatedAlerts\" must be a non-negative integer",
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::test_support::{SAMPLES, sample};
    use proptest::prelude::*;
    use serde_json::json;

    fn body(value: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&value).expect("serialize")
    }

    fn webhook_with(alerts: serde_json::Value) -> Vec<u8> {
        body(json!({"version": "4", "status": "firing", "alerts": alerts}))
    }

    fn good_alert(name: &str) -> serde_json::Value {
        json!({"status": "firing", "labels": {"alertname": name, "instance": "db-1:9100"},
               "annotations": {"summary": "disk full"}, "startsAt": "2024-05-01T10:00:00Z",
               "endsAt": "0001-01-01T00:00:00Z", "fingerprint": "abc"})
    }

    fn refused(bytes: &[u8]) -> IngestError {
        parse(bytes).expect_err("should be refused")
    }

    #[test]
    fn firing_sample_parses() {
        let webhook = parse(&sample(SAMPLES[0])).expect("valid");
        assert_eq!(webhook.alerts.len(), 3);
        assert!(
            webhook
                .alerts
                .iter()
                .all(|a| a.status == AlertStatus::Firing)
        );
        assert!(webhook.alerts.iter().all(|a| a.ends_at.is_none()));
        let fingerprints: Vec<_> = webhook
            .alerts
            .iter()
            .map(|a| a.fingerprint.as_deref())
            .collect();
        assert_eq!(
            fingerprints,
            [
                Some("d5cbd2dfa7790fae"),
                Some("8ca37692edbcffd8"),
                Some("a4e152f360a31087")
            ]
        );
        let first = &webhook.alerts[0];
        assert_eq!(first.name(), "HarnessGrouped");
        assert_eq!(first.labels["instance"], "host-1.harness.test:9100");
        assert_eq!(
            first.starts_at.map(|t| t.to_string()).as_deref(),
            Some("2026-11-29T18:53:45.282Z")
        );
        assert!(
            first
                .generator_url
                .as_deref()
                .is_some_and(|u| u.starts_with("http://127.0.0.1:9090/graph"))
        );
        assert_eq!(
            webhook.group,
            GroupContext {
                group_key: Some("{}/{}:{alertname=\"HarnessGrouped\"}".to_owned()),
                external_url: Some("http://127.0.0.1:9093".to_owned()),
                receiver: Some("bridge-webhook".to_owned()),
            }
        );
        assert_eq!(webhook.status.as_deref(), Some("firing"));
        assert_eq!(webhook.truncated_alerts, 0);
    }

    #[test]
    fn partially_resolved_sample_keeps_each_alerts_own_status() {
        let webhook = parse(&sample(SAMPLES[1])).expect("valid");
        // The group says "firing"; the second alert is resolved all the same.
        assert_eq!(webhook.status.as_deref(), Some("firing"));
        let statuses: Vec<_> = webhook.alerts.iter().map(|a| a.status).collect();
        assert_eq!(
            statuses,
            [
                AlertStatus::Firing,
                AlertStatus::Resolved,
                AlertStatus::Firing
            ]
        );
        assert_eq!(
            webhook.alerts[1].ends_at.map(|t| t.to_string()).as_deref(),
            Some("2026-11-29T18:53:45.862Z")
        );
        assert!(webhook.alerts[0].ends_at.is_none());
    }

    #[test]
    fn resolved_sample_parses() {
        let webhook = parse(&sample(SAMPLES[2])).expect("valid");
        assert_eq!(webhook.alerts.len(), 2);
        assert!(
            webhook
                .alerts
                .iter()
                .all(|a| a.status == AlertStatus::Resolved && a.ends_at.is_some())
        );
        assert_eq!(
            webhook.alerts[1].fingerprint.as_deref(),
            Some("a4e152f360a31087")
        );
    }

    #[test]
    fn empty_alerts_is_accepted() {
        let webhook = parse(&webhook_with(json!([]))).expect("valid");
        assert!(webhook.alerts.is_empty());
    }

    #[test]
    fn missing_version_is_accepted_other_versions_are_not() {
        assert!(parse(&body(json!({"alerts": [good_alert("A")]}))).is_ok());
        let error = refused(&body(json!({"version": "5", "alerts": []})));
        assert_eq!(error.error(), "unsupported_version");
        assert!(error.detail.contains("\"5\""), "{}", error.detail);
        assert_eq!(
            refused(&body(json!({"version": 4, "alerts": []}))).error(),
            "invalid_request"
        );
    }

    #[test]
    fn malformed_json_reports_line_and_column() {
        let error = refused(b"{\n  \"alerts\": [\n    {\"status\": }\n]}");
        assert_eq!(error.error(), "malformed_json");
        assert!(error.detail.contains("line 3 column"), "{}", error.detail);
        assert_eq!(refused(b"").error(), "malformed_json");
    }

    #[test]
    fn missing_or_wrong_alerts_is_refused() {
        assert!(
            refused(&body(json!({"version": "4"})))
                .detail
                .contains("\"alerts\" is missing")
        );
        assert!(
            refused(&body(json!({"alerts": {}})))
                .detail
                .contains("must be an array")
        );
    }

    #[test]
    fn missing_alertname_refuses_the_whole_request_naming_the_index() {
        let mut nameless = good_alert("x");
        nameless["labels"] = json!({"instance": "db-2"});
        let error = refused(&webhook_with(json!([
            good_alert("A"),
            good_alert("B"),
            nameless
        ])));
        assert_eq!(error.error(), "invalid_alert");
        assert_eq!(error.detail, "alerts[2]: label set has no \"alertname\"");
        let mut empty_name = good_alert("x");
        empty_name["labels"]["alertname"] = json!("");
        assert!(
            refused(&webhook_with(json!([empty_name])))
                .detail
                .starts_with("alerts[0]:")
        );
    }

    #[test]
    fn wrong_types_name_the_alert_and_field() {
        let mut alert = good_alert("DiskFull");
        alert["labels"]["instance"] = json!(9100);
        let error = refused(&webhook_with(json!([good_alert("A"), alert])));
        assert_eq!(
            error.detail,
            "alerts[1] (alertname=\"DiskFull\"): labels.instance must be a string, not a number"
        );

        let mut alert = good_alert("DiskFull");
        alert["annotations"] = json!(["summary"]);
        assert_eq!(
            refused(&webhook_with(json!([alert]))).detail,
            "alerts[0] (alertname=\"DiskFull\"): \"annotations\" must be an object, not an array"
        );

        let mut alert = good_alert("DiskFull");
        alert["generatorURL"] = json!(true);
        assert!(
            refused(&webhook_with(json!([alert])))
                .detail
                .contains("\"generatorURL\" must be a string")
        );

        assert_eq!(
            refused(&webhook_with(json!(["alert"]))).detail,
            "alerts[0]: must be an object, not a string"
        );
        let error = refused(&body(json!({"groupKey": 1, "alerts": []})));
        assert_eq!(error.error(), "invalid_request");
    }

    #[test]
    fn bad_status_is_refused() {
        let mut alert = good_alert("DiskFull");
        alert["status"] = json!("pending");
        assert_eq!(
            refused(&webhook_with(json!([alert]))).detail,
            "alerts[0] (alertname=\"DiskFull\"): status \"pending\" is not one of firing, resolved"
        );
        let mut alert = good_alert("DiskFull");
        alert["status"] = json!("acknowledged");
        assert!(
            parse(&webhook_with(json!([alert]))).is_err(),
            "native-only status"
        );
        let mut alert = good_alert("DiskFull");
        alert.as_object_mut().map(|a| a.remove("status"));
        assert!(
            refused(&webhook_with(json!([alert])))
                .detail
                .contains("\"status\" is missing")
        );
    }

    #[test]
    fn bad_timestamp_names_the_field() {
        let mut alert = good_alert("DiskFull");
        alert["startsAt"] = json!("yesterday");
        let error = refused(&webhook_with(json!([alert])));
        assert!(
            error.detail.starts_with("alerts[0] (alertname=\"DiskFull\"): \"startsAt\" is not an RFC 3339 timestamp (\"yesterday\")"),
            "{}",
            error.detail
        );
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let mut alert = good_alert("A");
        alert["somethingNew"] = json!({"x": [1, 2]});
        let webhook = parse(&body(
            json!({"alerts": [alert], "future": true, "commonLabels": 3}),
        ))
        .expect("valid");
        assert_eq!(webhook.alerts.len(), 1);
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn never_panics_on_arbitrary_json(value in crate::ingest::test_support::json_value()) {
            let _ = parse(&body(value.clone()));
            let _ = parse(&webhook_with(serde_json::Value::Array(vec![value])));
        }
    }
}
