//! PagerDuty's own OpenAPI schema for Events API v2 request bodies, as JSON-schema validators.
//!
//! The schema is read from `shared/pagerduty/events-v2/openapiv3.json`, beside the repository
//! root, at test time: we test against PagerDuty's file, not a copy we could drift from. Its
//! `#/components/schemas/…` references are inlined, and its non-standard `format: "url"` is
//! checked as an absolute URL.

use std::path::PathBuf;
use std::sync::OnceLock;

use jsonschema::Validator;
use serde_json::Value;

/// Where PagerDuty's schema lives, relative to this crate.
pub fn openapi_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/pagerduty/events-v2/openapiv3.json")
}

/// PagerDuty's whole OpenAPI document.
pub fn openapi() -> &'static Value {
    static OPENAPI: OnceLock<Value> = OnceLock::new();
    OPENAPI.get_or_init(|| {
        let path = openapi_path();
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "PagerDuty's schema is missing at {} ({e}); the shared/ folder must sit beside the repository",
                path.display()
            )
        });
        serde_json::from_str(&text).expect("PagerDuty's schema is valid JSON")
    })
}

/// The request-body schema of one path (`/enqueue` or `/change/enqueue`), refs inlined.
pub fn request_schema(path: &str) -> Value {
    let openapi = openapi();
    let pointer = format!(
        "/paths/{}/post/requestBody/content/application~1json/schema",
        path.replace('/', "~1")
    );
    let schema = openapi
        .pointer(&pointer)
        .unwrap_or_else(|| panic!("no request schema for {path}"))
        .clone();
    inline_refs(schema, openapi)
}

fn inline_refs(value: Value, root: &Value) -> Value {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(reference)) = map.get("$ref") {
                let target = reference
                    .strip_prefix('#')
                    .and_then(|pointer| root.pointer(pointer))
                    .unwrap_or_else(|| panic!("unresolvable $ref {reference}"))
                    .clone();
                return inline_refs(target, root);
            }
            Value::Object(
                map.into_iter()
                    .map(|(k, v)| (k, inline_refs(v, root)))
                    .collect(),
            )
        }
        Value::Array(items) => {
            Value::Array(items.into_iter().map(|v| inline_refs(v, root)).collect())
        }
        other => other,
    }
}

fn build(path: &str) -> Validator {
    jsonschema::options()
        .should_validate_formats(true)
        // A format we do not check would make building fail, so none goes unchecked unnoticed.
        .should_ignore_unknown_formats(false)
        .with_format("url", |text: &str| url::Url::parse(text).is_ok())
        .build(&request_schema(path))
        .expect("PagerDuty's schema compiles")
}

/// Validator for `POST /v2/enqueue` bodies.
pub fn enqueue() -> &'static Validator {
    static VALIDATOR: OnceLock<Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| build("/enqueue"))
}

/// Validator for `POST /v2/change/enqueue` bodies.
pub fn change_enqueue() -> &'static Validator {
    static VALIDATOR: OnceLock<Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| build("/change/enqueue"))
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_validators_accept_pagerduty_examples_and_reject_broken_bodies() {
        assert_valid_enqueue(&json!({
            "routing_key": "e93facc04764012d7bfb002500d5d1a6",
            "event_action": "trigger",
            "payload": {"summary": "s", "source": "h", "severity": "critical",
                        "timestamp": "2015-07-17T08:42:58.315+00:00"},
            "links": [{"href": "https://example.com", "text": "x"}]
        }));
        let broken = [
            json!({"event_action": "trigger", "payload": {"summary": "s", "source": "h", "severity": "critical"}}),
            json!({"routing_key": "k", "event_action": "trigger", "payload": {"summary": "s", "source": "h", "severity": "page"}}),
            json!({"routing_key": "k", "event_action": "explode"}),
            json!({"routing_key": "k", "event_action": "trigger", "payload": {"summary": "s", "source": "h", "severity": "info", "timestamp": "yesterday"}}),
            json!({"routing_key": "k", "event_action": "trigger", "links": [{"href": "not a url"}]}),
        ];
        for body in broken {
            assert!(!violations(enqueue(), &body).is_empty(), "accepted {body}");
        }
        assert_valid_change(&json!({"routing_key": "k", "payload": {"summary": "deploy"}}));
        assert!(
            !violations(
                change_enqueue(),
                &json!({"routing_key": "k", "payload": {}})
            )
            .is_empty()
        );
    }
}
