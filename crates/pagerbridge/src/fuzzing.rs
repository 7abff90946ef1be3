//! Entry points for fuzzing, shared by the cargo-fuzz targets in `fuzz/fuzz_targets/` and by
//! the corpus replay test `tests/fuzz_corpus.rs`, so that CI (stable Rust, no libFuzzer) runs
//! every committed corpus file and crash artifact through exactly the code the fuzzer ran.
//!
//! Each function takes arbitrary bytes, never returns an error and **panics** when an
//! invariant breaks; a panic is what libFuzzer records as a finding. The invariants:
//!
//! - [`alertmanager`], [`native`]: the parser does not panic; a refusal has a known `error`
//!   code and a non-empty, one-line detail of bounded size (error bodies stay small whatever was
//!   sent); what is accepted has a non-empty `alertname`, a caller's `dedup_key` of 1–255
//!   characters without NUL, no NUL in the fingerprint (PostgreSQL's TEXT cannot hold one), and
//!   survives the JSON round trip the outbox makes. Accepted alerts are formatted as below.
//! - [`format`]: the body is parsed as a native request and every alert formatted with the
//!   default options and with templates and `dedup: group`; every event has a summary of
//!   1–1024 characters, a dedup key of 1–255 characters (alert events), https-only images,
//!   absolute http(s) links, and a wire body (with a masked key) of at most 512,000 bytes that
//!   still carries the summary and dedup key; formatting is deterministic. A body starting with
//!   a space is also *amplified*: every label and annotation value is repeated until the alert
//!   is far over PagerDuty's body limit, so the fuzzer drives the shrinking code too (fuzz
//!   inputs are a few KiB and would never get there by themselves).

use std::collections::BTreeMap;

use pagerduty_events::{
    AlertEvent, ChangeEvent, MAX_BODY_BYTES, RequestBody, RoutingKey, masked_body,
};
use serde_json::Value;

use crate::alert::{Alert, AlertStatus, GroupContext};
use crate::format::{DedupMode, FieldTemplates, FormatOptions, Formatted, Formatter, Outbound};
use crate::ingest::{self, IngestError};

/// Longest `detail` an ingest refusal may carry, in characters. Sender text is quoted at most
/// 80 characters at a time, but escaping can make each quoted character up to 10 long.
pub const MAX_DETAIL_CHARS: usize = 2048;

/// A distinctive routing key; only its masked form may appear in a masked body.
const KEY: &str = "FuzzRoutingKey000000000000000042"; // a fake test key

/// How large an amplified alert's values get, in bytes: well past PagerDuty's body limit.
const AMPLIFIED_BYTES: usize = 600_000;

const INGEST_ERRORS: [&str; 4] = [
    "malformed_json",
    "invalid_request",
    "invalid_alert",
    "unsupported_version",
];

/// The Alertmanager webhook parser, then the formatter on what it accepts (with the webhook's
/// group context, per-alert and per-group dedup keys).
pub fn alertmanager(data: &[u8]) {
    match ingest::alertmanager::parse(data) {
        Err(error) => check_refusal(&error),
        Ok(webhook) => {
            for alert in &webhook.alerts {
                check_accepted(alert);
                assert!(
                    matches!(alert.status, AlertStatus::Firing | AlertStatus::Resolved),
                    "Alertmanager has only firing and resolved: {:?}",
                    alert.status
                );
                for formatter in formatters() {
                    check_format(&formatter, alert, &webhook.group);
                }
            }
        }
    }
}

/// The native alerts parser, and the change-events parser on the same bytes (both read JSON
/// objects of senders' own making).
pub fn native(data: &[u8]) {
    match ingest::native::parse(data) {
        Err(error) => check_refusal(&error),
        Ok(request) => {
            if let Some(target) = &request.target {
                assert!(!target.trim().is_empty(), "a blank target was accepted");
            }
            for alert in &request.alerts {
                check_accepted(alert);
            }
        }
    }
    match ingest::change::parse(data) {
        Err(error) => check_refusal(&error),
        Ok(request) => {
            check_change(&request.event);
            if request.summary_truncated {
                let summary = request.event.payload.summary.as_str();
                assert!(
                    summary.ends_with('…') && summary.chars().count() == 1024,
                    "a truncated summary is cut to 1024 characters ending with …"
                );
            }
        }
    }
}

/// Native JSON in, every alert formatted, the wire invariants checked (see the module docs).
pub fn format(data: &[u8]) {
    let Ok(request) = ingest::native::parse(data) else {
        return;
    };
    let amplify = data.first() == Some(&b' ');
    let group = GroupContext {
        group_key: Some("{}:{alertname=\"Fuzz\"}".to_owned()),
        external_url: Some("https://alertmanager.example.com".to_owned()),
        receiver: Some("pagerbridge".to_owned()),
    };
    let formatters = formatters();
    for alert in &request.alerts {
        check_accepted(alert);
        for formatter in &formatters {
            check_format(formatter, alert, &GroupContext::default());
            check_format(formatter, alert, &group);
        }
        if amplify && let Some(big) = amplified(alert) {
            check_format(&formatters[0], &big, &GroupContext::default());
        }
    }
}

/// The default formatter, and one with every field templated and `dedup: group`.
fn formatters() -> [Formatter; 2] {
    let templated = FormatOptions {
        dedup: DedupMode::Group,
        fields: FieldTemplates {
            summary: Some(
                "{{ severity | upper }} {{ alertname }} on {{ labels.instance }}: {{ annotations.summary }}"
                    .to_owned(),
            ),
            source: Some("{{ labels.team }}".to_owned()),
            component: Some("{{ labels.service | default(labels.job) }}".to_owned()),
            group: Some("{{ labels.namespace ~ '/' ~ labels.cluster }}".to_owned()),
            class: Some("{{ classification.category if classification else alertname }}".to_owned()),
        },
        ..FormatOptions::default()
    };
    [
        Formatter::new(FormatOptions::default()).expect("the default options are valid"),
        Formatter::new(templated).expect("the fuzzing templates compile"),
    ]
}

fn check_refusal(error: &IngestError) {
    assert!(
        INGEST_ERRORS.contains(&error.error()),
        "unknown error code {:?}",
        error.error()
    );
    let detail = error.detail();
    assert!(!detail.trim().is_empty(), "an empty detail for {error:?}");
    let chars = detail.chars().count();
    assert!(
        chars <= MAX_DETAIL_CHARS,
        "a detail of {chars} characters (at most {MAX_DETAIL_CHARS}): {:?}…",
        detail.chars().take(200).collect::<String>()
    );
    assert!(
        !detail.contains(['\n', '\r']),
        "the detail is not one line: {detail:?}"
    );
}

/// What ingest lets in is what the rest of the bridge may rely on.
fn check_accepted(alert: &Alert) {
    assert!(!alert.name().is_empty(), "an alert without alertname");
    if let Some(key) = &alert.dedup_key {
        let chars = key.as_str().chars().count();
        assert!((1..=255).contains(&chars), "a dedup_key of {chars} chars");
        assert!(!key.as_str().contains('\0'), "a dedup_key with NUL");
    }
    if let Some(fingerprint) = &alert.fingerprint {
        assert!(!fingerprint.is_empty(), "an empty fingerprint was kept");
        assert!(!fingerprint.contains('\0'), "a fingerprint with NUL");
    }
    if let Some(confidence) = alert.classification.as_ref().and_then(|c| c.confidence) {
        assert!((0.0..=1.0).contains(&confidence), "confidence {confidence}");
    }
    // The outbox keeps the alert as JSON; it must read back as it was (floats aside: serde_json
    // reads them back to the nearest value, which is all a confidence needs).
    let mut stored: Alert = serde_json::to_vec(alert)
        .ok()
        .and_then(|json| serde_json::from_slice(&json).ok())
        .expect("an accepted alert survives the JSON round trip");
    let mut original = alert.clone();
    for a in [&mut stored, &mut original] {
        if let Some(c) = a.classification.as_mut() {
            c.confidence = None;
        }
    }
    assert_eq!(stored, original, "the alert changed in the JSON round trip");
}

fn check_format(formatter: &Formatter, alert: &Alert, group: &GroupContext) {
    let formatted = formatter.format(alert, group);
    assert_eq!(
        formatted,
        formatter.format(alert, group),
        "formatting is not deterministic"
    );
    let Some(formatted) = formatted else {
        assert!(
            alert.is_change_event() && alert.status != AlertStatus::Firing,
            "only a change event that is not firing formats to nothing"
        );
        return;
    };
    let key = RoutingKey::new(KEY).expect("a valid routing key");
    match &formatted.event {
        Outbound::Alert(event) => check_alert_event(&formatted, event, alert, &key),
        Outbound::Change(event) => {
            assert!(alert.is_change_event(), "a change event from a plain alert");
            check_change(event);
            let summary = Some(event.payload.summary.as_str());
            check_body(&key, event, RequestBody::change(&key, event), summary);
        }
    }
}

fn check_alert_event(formatted: &Formatted, event: &AlertEvent, alert: &Alert, key: &RoutingKey) {
    assert!(
        !alert.is_change_event(),
        "an alert event from a change event"
    );
    let dedup_key = formatted
        .dedup_key
        .as_ref()
        .expect("an alert event has a dedup key");
    let chars = dedup_key.as_str().chars().count();
    assert!((1..=255).contains(&chars), "a dedup key of {chars} chars");
    if let Some(own) = &alert.dedup_key {
        assert_eq!(own, dedup_key, "the caller's dedup_key was not used");
    }
    let expected_action = match alert.status {
        AlertStatus::Firing => "trigger",
        AlertStatus::Acknowledged | AlertStatus::Silenced => "acknowledge",
        AlertStatus::Resolved => "resolve",
    };
    let summary = match event {
        AlertEvent::Trigger(trigger) => {
            assert_eq!(trigger.dedup_key.as_ref(), Some(dedup_key));
            assert!(formatted.payload_hash.is_some(), "a trigger without hash");
            check_summary(trigger.payload.summary.as_str());
            assert!(
                !trigger.payload.source.as_str().trim().is_empty(),
                "a blank source"
            );
            for image in &trigger.images {
                assert_eq!(image.src().scheme(), "https", "image {}", image.src());
            }
            for link in &trigger.links {
                assert!(
                    matches!(link.href.scheme(), "http" | "https"),
                    "link {}",
                    link.href
                );
            }
            Some(trigger.payload.summary.as_str())
        }
        AlertEvent::Acknowledge { dedup_key: sent }
        | AlertEvent::Resolve {
            dedup_key: sent, ..
        } => {
            assert_eq!(sent, dedup_key);
            None
        }
    };
    let body = check_body(key, event, RequestBody::alert(key, event), summary);
    assert_eq!(body["event_action"], expected_action, "{alert:?}");
    assert_eq!(
        body["dedup_key"].as_str(),
        Some(dedup_key.as_str()),
        "the dedup key did not survive shrinking"
    );
}

fn check_change(event: &ChangeEvent) {
    check_summary(event.payload.summary.as_str());
    assert!(
        event.links.len() <= ingest::change::MAX_LINKS,
        "{} links",
        event.links.len()
    );
}

fn check_summary(summary: &str) {
    let chars = summary.chars().count();
    assert!(
        (1..=1024).contains(&chars),
        "a summary of {chars} characters"
    );
    assert!(!summary.trim().is_empty(), "a blank summary");
}

/// The wire body and the masked body are within PagerDuty's limit and keep the summary.
fn check_body(
    key: &RoutingKey,
    event: &impl serde::Serialize,
    wire: RequestBody,
    summary: Option<&str>,
) -> Value {
    assert!(
        wire.len() <= MAX_BODY_BYTES,
        "a wire body of {} bytes",
        wire.len()
    );
    let (masked, _shrunk) = masked_body(key, event);
    let text = serde_json::to_string(&masked).expect("a JSON value serializes");
    assert!(
        text.len() <= MAX_BODY_BYTES,
        "a masked body of {} bytes",
        text.len()
    );
    assert!(!text.contains(KEY), "the routing key in a masked body");
    assert_eq!(masked["routing_key"], key.masked().as_str());
    // Acknowledge and resolve have no payload; every other event keeps its summary as it was.
    if let Some(summary) = summary {
        let body_summary = masked["payload"]["summary"].as_str();
        assert_eq!(body_summary, Some(summary), "the summary did not survive");
    }
    masked
}

/// The alert with every label and annotation value repeated until they add up to more than
/// [`AMPLIFIED_BYTES`] (`change_event` aside); `None` when it has no text to repeat.
fn amplified(alert: &Alert) -> Option<Alert> {
    let total: usize = alert
        .labels
        .values()
        .chain(alert.annotations.values())
        .map(String::len)
        .sum();
    if total == 0 {
        return None;
    }
    let times = AMPLIFIED_BYTES / total + 1;
    // `change_event="true"` stays as it is, so that change events are amplified too.
    let grow = |map: &BTreeMap<String, String>| {
        map.iter()
            .map(|(name, value)| match name.as_str() {
                "change_event" => (name.clone(), value.clone()),
                _ => (name.clone(), value.repeat(times)),
            })
            .collect()
    };
    let mut big = alert.clone();
    big.labels = grow(&alert.labels);
    big.annotations = grow(&alert.annotations);
    Some(big)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_real_samples_pass() {
        for name in crate::ingest::test_support::SAMPLES {
            let sample = crate::ingest::test_support::sample(name);
            alertmanager(&sample);
            native(&sample);
            format(&sample);
        }
    }

    #[test]
    fn an_amplified_alert_is_shrunk_to_fit() {
        let body =
            br#" {"alerts": [{"status": "firing", "labels": {"alertname": "Big", "job": "j"},
            "annotations": {"summary": "s", "description": "d\n\"q\""}}]}"#;
        format(body);
        let request = ingest::native::parse(body).expect("valid");
        let big = amplified(&request.alerts[0]).expect("has text");
        let size: usize = big
            .labels
            .values()
            .chain(big.annotations.values())
            .map(String::len)
            .sum();
        assert!(size > MAX_BODY_BYTES, "{size}");
    }

    #[test]
    #[should_panic(expected = "a detail of")]
    fn an_oversized_detail_is_a_finding() {
        check_refusal(&IngestError::new(
            ingest::IngestProblem::InvalidRequest,
            "x".repeat(MAX_DETAIL_CHARS + 1),
        ));
    }

    #[test]
    #[should_panic(expected = "a fingerprint with NUL")]
    fn a_nul_fingerprint_is_a_finding() {
        let mut alert = ingest::native::parse(
            br#"{"alerts": [{"status": "firing", "labels": {"alertname": "A"}}]}"#,
        )
        .expect("valid")
        .alerts
        .remove(0);
        alert.fingerprint = Some("a\0b".to_owned());
        check_accepted(&alert);
    }
}
