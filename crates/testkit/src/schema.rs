//! Our JSON Schema of PagerDuty's Events API v2 request bodies, as validators.
//!
//! The schema (`crates/testkit/schema/pagerduty-events-v2.schema.json`) is written for this
//! project from PagerDuty's documented contract and compiled into the test kit, so the tests
//! need nothing beside the repository. PagerDuty's own OpenAPI file is an optional
//! cross-check on top of it (see [`crate::pagerduty_openapi`]).

use std::sync::OnceLock;

use jsonschema::Validator;
use serde_json::{Value, json};

/// The schema document as written.
const SCHEMA_TEXT: &str = include_str!("../schema/pagerduty-events-v2.schema.json");

/// The whole schema document: `$defs` for both events, and a root accepting either.
pub fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(|| serde_json::from_str(SCHEMA_TEXT).expect("our schema is valid JSON"))
}

/// Builds a validator of `schema` that checks formats, with the non-standard `url` format
/// read as an absolute URL. Shared with the cross-check, whose schema uses the same format.
pub fn compile(schema: &Value) -> Validator {
    jsonschema::options()
        .should_validate_formats(true)
        // A format we do not check would make building fail, so none goes unchecked unnoticed.
        .should_ignore_unknown_formats(false)
        .with_format("url", |text: &str| url::Url::parse(text).is_ok())
        .build(schema)
        .expect("the schema compiles")
}

/// A validator of one of the document's `$defs` (`alert_event` or `change_event`).
fn definition(name: &str) -> Validator {
    let document = document();
    compile(&json!({
        "$schema": document["$schema"],
        "$defs": document["$defs"],
        "$ref": format!("#/$defs/{name}"),
    }))
}

/// Validator for `POST /v2/enqueue` bodies (alert events).
pub fn enqueue() -> &'static Validator {
    static VALIDATOR: OnceLock<Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| definition("alert_event"))
}

/// Validator for `POST /v2/change/enqueue` bodies (change events).
pub fn change_enqueue() -> &'static Validator {
    static VALIDATOR: OnceLock<Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| definition("change_event"))
}

/// Every schema violation of `body`, as text; empty when valid.
pub fn violations(validator: &Validator, body: &Value) -> Vec<String> {
    validator
        .iter_errors(body)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

#[track_caller]
pub fn assert_valid_enqueue(body: &Value) {
    let problems = violations(enqueue(), body);
    assert!(
        problems.is_empty(),
        "invalid /v2/enqueue body {body}: {problems:?}"
    );
}

#[track_caller]
pub fn assert_valid_change(body: &Value) {
    let problems = violations(change_enqueue(), body);
    assert!(
        problems.is_empty(),
        "invalid /v2/change/enqueue body {body}: {problems:?}"
    );
}

/// Bodies written after PagerDuty's documented examples (our own text), one per shape:
/// a full trigger, an acknowledge, a resolve and two change events. Each is `(path, body)`.
pub fn documented_examples() -> Vec<(&'static str, Value)> {
    vec![
        (
            "/enqueue",
            json!({
                "routing_key": "a1b2c3d4e5f60718293a4b5c6d7e8f90",
                "event_action": "trigger",
                "dedup_key": "web-7/nginx",
                "payload": {
                    "summary": "nginx on web-7.example.com answers 502 to 40% of requests",
                    "timestamp": "2024-03-05T14:07:12.250+00:00",
                    "severity": "error",
                    "source": "web-7.example.com",
                    "component": "nginx",
                    "group": "frontend",
                    "class": "http-errors",
                    "custom_details": {"error rate": "40%", "upstream": "app-3", "p99 ms": 812.5}
                },
                "client": "Example Monitoring",
                "client_url": "https://monitoring.example.com",
                "links": [{"href": "https://runbooks.example.com/nginx-502", "text": "Runbook"}],
                "images": [{
                    "src": "https://charts.example.com/web-7/errors.png",
                    "href": "https://dashboards.example.com/web-7",
                    "alt": "502s on web-7 over the last hour"
                }]
            }),
        ),
        (
            "/enqueue",
            json!({"routing_key": "a1b2c3d4e5f60718293a4b5c6d7e8f90",
                   "event_action": "acknowledge", "dedup_key": "web-7/nginx"}),
        ),
        (
            "/enqueue",
            json!({"routing_key": "a1b2c3d4e5f60718293a4b5c6d7e8f90",
                   "event_action": "resolve", "dedup_key": "web-7/nginx"}),
        ),
        (
            "/change/enqueue",
            json!({
                "routing_key": "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
                "payload": {
                    "summary": "Deployed checkout 2.14.0",
                    "timestamp": "2024-03-05T13:58:00Z",
                    "source": "ci.example.com",
                    "custom_details": {"build": "1187", "duration": "312s"}
                },
                "links": [{"href": "https://ci.example.com/builds/1187", "text": "Build 1187"}]
            }),
        ),
        (
            "/change/enqueue",
            json!({"routing_key": "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
                   "payload": {"summary": "Merged: raise the snapshot timeout"}}),
        ),
    ]
}

/// The validator for a body sent to `path` (`/enqueue` or `/change/enqueue`).
pub fn for_path(path: &str) -> &'static Validator {
    match path {
        "/enqueue" => enqueue(),
        "/change/enqueue" => change_enqueue(),
        other => panic!("no Events API v2 path {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::samples;

    fn alert(payload_and_more: Value) -> Value {
        let mut body = json!({
            "routing_key": "a1b2c3d4e5f60718293a4b5c6d7e8f90",
            "event_action": "trigger",
            "payload": {"summary": "s", "source": "h", "severity": "critical"}
        });
        for (name, value) in payload_and_more.as_object().expect("object") {
            body[name] = value.clone();
        }
        body
    }

    #[test]
    fn the_root_accepts_either_event_and_the_definitions_split_them() {
        let root = compile(document());
        for (path, body) in documented_examples() {
            assert!(root.is_valid(&body), "root rejected {body}");
            assert!(for_path(path).is_valid(&body), "{path} rejected {body}");
            let other = if path == "/enqueue" {
                change_enqueue()
            } else {
                enqueue()
            };
            assert!(!other.is_valid(&body), "the other event accepted {body}");
        }
    }

    #[test]
    fn bodies_alertmanagers_own_receiver_sent_are_accepted() {
        // Another client's real bodies: our schema is not stricter than what PagerDuty took.
        for name in samples::PAGERDUTY_BODIES {
            let body: Value = serde_json::from_slice(&samples::read(name)).expect("JSON");
            let problems = violations(enqueue(), &body);
            assert!(problems.is_empty(), "{name}: {problems:?}");
        }
    }

    /// The schema is not vacuous: each body breaks one documented rule and is rejected for it.
    #[test]
    fn bodies_breaking_one_documented_rule_are_rejected() {
        let long = |n: usize| "x".repeat(n);
        assert!(
            enqueue().is_valid(&alert(json!({}))),
            "the base body is valid"
        );
        let cases = [
            (
                "no routing key",
                json!({"event_action": "trigger",
                "payload": {"summary": "s", "source": "h", "severity": "critical"}}),
            ),
            ("short routing key", alert(json!({"routing_key": "k"}))),
            (
                "routing key with a dash",
                alert(json!({"routing_key": "a1b2c3d4-5f60718293a4b5c6d7e8f90"})),
            ),
            (
                "no event_action",
                json!({"routing_key": "a1b2c3d4e5f60718293a4b5c6d7e8f90",
                "payload": {"summary": "s", "source": "h", "severity": "critical"}}),
            ),
            (
                "unknown event_action",
                alert(json!({"event_action": "escalate"})),
            ),
            (
                "trigger without payload",
                json!({"routing_key": "a1b2c3d4e5f60718293a4b5c6d7e8f90",
                "event_action": "trigger"}),
            ),
            (
                "acknowledge without dedup_key",
                json!({"routing_key": "a1b2c3d4e5f60718293a4b5c6d7e8f90",
                "event_action": "acknowledge"}),
            ),
            (
                "resolve without dedup_key",
                json!({"routing_key": "a1b2c3d4e5f60718293a4b5c6d7e8f90",
                "event_action": "resolve"}),
            ),
            (
                "dedup_key of 256 characters",
                alert(json!({"dedup_key": long(256)})),
            ),
            ("empty dedup_key", alert(json!({"dedup_key": ""}))),
            (
                "missing summary",
                alert(json!({"payload": {"source": "h", "severity": "info"}})),
            ),
            (
                "summary of 1025 characters",
                alert(
                    json!({"payload": {"summary": long(1025), "source": "h", "severity": "info"}}),
                ),
            ),
            (
                "blank summary",
                alert(
                    json!({"payload": {"summary": " \u{3000}\n", "source": "h", "severity": "info"}}),
                ),
            ),
            (
                "missing source",
                alert(json!({"payload": {"summary": "s", "severity": "info"}})),
            ),
            (
                "blank source",
                alert(json!({"payload": {"summary": "s", "source": "\t", "severity": "info"}})),
            ),
            (
                "missing severity",
                alert(json!({"payload": {"summary": "s", "source": "h"}})),
            ),
            (
                "unknown severity",
                alert(json!({"payload": {"summary": "s", "source": "h", "severity": "page"}})),
            ),
            (
                "uppercase severity",
                alert(json!({"payload": {"summary": "s", "source": "h", "severity": "CRITICAL"}})),
            ),
            (
                "timestamp not RFC 3339",
                alert(
                    json!({"payload": {"summary": "s", "source": "h", "severity": "info", "timestamp": "yesterday"}}),
                ),
            ),
            (
                "custom_details not an object",
                alert(
                    json!({"payload": {"summary": "s", "source": "h", "severity": "info", "custom_details": "x"}}),
                ),
            ),
            (
                "unknown payload field",
                alert(
                    json!({"payload": {"summary": "s", "source": "h", "severity": "info", "priority": "P1"}}),
                ),
            ),
            (
                "unknown top-level field",
                alert(json!({"severity": "critical"})),
            ),
            (
                "link without href",
                alert(json!({"links": [{"text": "x"}]})),
            ),
            (
                "relative link",
                alert(json!({"links": [{"href": "/runbook"}]})),
            ),
            (
                "image over http",
                alert(json!({"images": [{"src": "http://charts.example.com/a.png"}]})),
            ),
            (
                "image without src",
                alert(json!({"images": [{"alt": "x"}]})),
            ),
            (
                "client_url not a URL",
                alert(json!({"client_url": "monitoring.example.com"})),
            ),
            ("client not a string", alert(json!({"client": 7}))),
        ];
        for (rule, body) in cases {
            assert!(!enqueue().is_valid(&body), "{rule}: accepted {body}");
        }

        let change = |body: Value| {
            let mut base = json!({"routing_key": "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
                                  "payload": {"summary": "deploy"}});
            for (name, value) in body.as_object().expect("object") {
                base[name] = value.clone();
            }
            base
        };
        assert!(change_enqueue().is_valid(&change(json!({}))));
        let cases = [
            (
                "no payload",
                json!({"routing_key": "0f1e2d3c4b5a69788796a5b4c3d2e1f0"}),
            ),
            ("no routing key", json!({"payload": {"summary": "deploy"}})),
            ("no summary", change(json!({"payload": {"source": "ci"}}))),
            (
                "summary of 1025 characters",
                change(json!({"payload": {"summary": long(1025)}})),
            ),
            (
                "severity on a change",
                change(json!({"payload": {"summary": "s", "severity": "info"}})),
            ),
            (
                "event_action on a change",
                change(json!({"event_action": "trigger"})),
            ),
            ("dedup_key on a change", change(json!({"dedup_key": "k"}))),
            (
                "link without href",
                change(json!({"links": [{"text": "x"}]})),
            ),
        ];
        for (rule, body) in cases {
            assert!(!change_enqueue().is_valid(&body), "{rule}: accepted {body}");
        }
    }

    #[test]
    fn limits_are_counted_in_characters_and_are_inclusive() {
        // 1024 four-byte characters: within the limit although 4096 bytes long.
        let summary = "😀".repeat(1024);
        let dedup_key = "日".repeat(255);
        assert!(enqueue().is_valid(&alert(json!({
            "dedup_key": dedup_key,
            "payload": {"summary": summary, "source": "h", "severity": "warning"}
        }))));
    }
}
