//! PagerDuty's validation of alert and change events, done over the raw JSON so that any
//! body a client sends can be judged, not only bodies that fit our own types.
//!
//! Every problem found is reported, in field order. Five messages are PagerDuty's own, from
//! error bodies captured from the live API (the routing key's length and characters, the
//! summary length with its "maiximum" typo, missing `payload.source` and `payload.severity`);
//! the missing `routing_key` and `payload.summary` ones follow the same pattern, and the
//! others are ours in the same style, because PagerDuty's wording for them is not published.

use serde_json::{Map, Value};

const ROUTING_KEY_CHARS: usize = 32;
const MAX_SUMMARY_CHARS: usize = 1024;
const MAX_DEDUP_KEY_CHARS: usize = 255;
const MAX_CHANGE_LINKS: usize = 50;
const SEVERITIES: [&str; 4] = ["critical", "error", "warning", "info"];

const ROUTING_KEY_MISSING: &str = "'routing_key' is missing or blank";
const ROUTING_KEY_LENGTH: &str = "Length of 'routing_key' is incorrect (should be 32 characters)";
const ROUTING_KEY_CHARSET: &str = "'routing_key' cannot contain non-alphanumeric characters.";
const SUMMARY_TOO_LONG: &str = "'summary' is too long (maiximum is 1024 characters)";
const EVENT_ACTION_MISSING: &str = "'event_action' is missing or blank";
const EVENT_ACTION_INVALID: &str =
    "'event_action' is invalid (must be one of: trigger, acknowledge, resolve)";
const DEDUP_KEY_MISSING: &str = "'dedup_key' is missing or blank";
const DEDUP_KEY_TOO_LONG: &str = "'dedup_key' is too long (maximum is 255 characters)";
const SEVERITY_INVALID: &str =
    "'payload.severity' is invalid (must be one of: critical, error, warning, info)";
const TOO_MANY_LINKS: &str = "links should have at most 50 item(s)";

/// What an alert event asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    Trigger,
    Acknowledge,
    Resolve,
}

impl Action {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Trigger => "trigger",
            Self::Acknowledge => "acknowledge",
            Self::Resolve => "resolve",
        }
    }
}

/// A valid alert event, reduced to what the alert store needs. The payload fields are
/// empty for acknowledge and resolve, which carry none that matter.
#[derive(Debug)]
pub(crate) struct AlertEvent {
    pub(crate) routing_key: String,
    pub(crate) action: Action,
    pub(crate) dedup_key: Option<String>,
    pub(crate) summary: String,
    pub(crate) severity: String,
    pub(crate) source: String,
}

/// Why a change event was refused; the two arrive in different envelopes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ChangeError {
    /// The usual `invalid event` envelope.
    Invalid(Vec<String>),
    /// PagerDuty's `{"error": [...]}` envelope, seen for too many links.
    Rejected(Vec<String>),
}

/// How a field is present in an object. `null` and blank strings count as missing, as in
/// PagerDuty's "missing or blank".
enum Field<'a> {
    Missing,
    Text(&'a str),
    Other,
}

fn field<'a>(object: &'a Map<String, Value>, name: &str) -> Field<'a> {
    match object.get(name) {
        None | Some(Value::Null) => Field::Missing,
        Some(Value::String(text)) if text.trim().is_empty() => Field::Missing,
        Some(Value::String(text)) => Field::Text(text),
        Some(_) => Field::Other,
    }
}

fn invalid(path: &str, expected: &str) -> String {
    format!("'{path}' is invalid (must be {expected})")
}

/// Checks an alert event for `POST /v2/enqueue`.
pub(crate) fn alert_event(event: &Map<String, Value>) -> Result<AlertEvent, Vec<String>> {
    let mut errors = Vec::new();
    let routing_key = routing_key(event, &mut errors);

    let action = match field(event, "event_action") {
        Field::Missing => {
            errors.push(EVENT_ACTION_MISSING.to_owned());
            None
        }
        Field::Text("trigger") => Some(Action::Trigger),
        Field::Text("acknowledge") => Some(Action::Acknowledge),
        Field::Text("resolve") => Some(Action::Resolve),
        Field::Text(_) | Field::Other => {
            errors.push(EVENT_ACTION_INVALID.to_owned());
            None
        }
    };

    let dedup_key = match field(event, "dedup_key") {
        Field::Missing => {
            if matches!(action, Some(Action::Acknowledge | Action::Resolve)) {
                errors.push(DEDUP_KEY_MISSING.to_owned());
            }
            None
        }
        Field::Text(key) => {
            if key.chars().count() > MAX_DEDUP_KEY_CHARS {
                errors.push(DEDUP_KEY_TOO_LONG.to_owned());
            }
            Some(key.to_owned())
        }
        Field::Other => {
            errors.push(invalid("dedup_key", "a string"));
            None
        }
    };

    // Only a trigger needs a payload; one sent with acknowledge or resolve is still checked
    // for types, as PagerDuty parses the whole object.
    let payload_required = action == Some(Action::Trigger);
    let (summary, severity, source) = match event.get("payload") {
        None | Some(Value::Null) => alert_payload(&Map::new(), payload_required, &mut errors),
        Some(Value::Object(payload)) => alert_payload(payload, payload_required, &mut errors),
        Some(_) => {
            errors.push(invalid("payload", "an object"));
            Default::default()
        }
    };

    list_of_objects(event, "links", "href", &mut errors);
    list_of_objects(event, "images", "src", &mut errors);
    for name in ["client", "client_url"] {
        optional_string(event, name, name, &mut errors);
    }

    match (routing_key, action) {
        (Some(routing_key), Some(action)) if errors.is_empty() => Ok(AlertEvent {
            routing_key,
            action,
            dedup_key,
            summary,
            severity,
            source,
        }),
        _ => Err(errors),
    }
}

/// Checks an alert payload and returns its summary, severity and source (empty if absent).
fn alert_payload(
    payload: &Map<String, Value>,
    required: bool,
    errors: &mut Vec<String>,
) -> (String, String, String) {
    let summary = summary(payload, required, errors);
    let source = required_string(payload, "source", required, errors);
    let severity = match field(payload, "severity") {
        Field::Missing => {
            if required {
                errors.push("'payload.severity' is missing or blank".to_owned());
            }
            String::new()
        }
        Field::Text(severity) if SEVERITIES.contains(&severity) => severity.to_owned(),
        Field::Text(_) | Field::Other => {
            errors.push(SEVERITY_INVALID.to_owned());
            String::new()
        }
    };
    for name in ["timestamp", "component", "group", "class"] {
        optional_string(payload, name, &format!("payload.{name}"), errors);
    }
    optional_object(payload, "custom_details", "payload.custom_details", errors);
    (summary, severity, source)
}

/// Checks a change event for `POST /v2/change/enqueue`.
pub(crate) fn change_event(event: &Map<String, Value>) -> Result<(), ChangeError> {
    // PagerDuty answers this one on its own, in its other envelope (go-pagerduty #478).
    if let Some(Value::Array(links)) = event.get("links")
        && links.len() > MAX_CHANGE_LINKS
    {
        return Err(ChangeError::Rejected(vec![TOO_MANY_LINKS.to_owned()]));
    }

    let mut errors = Vec::new();
    routing_key(event, &mut errors);
    match event.get("payload") {
        None | Some(Value::Null) => errors.push("'payload.summary' is missing or blank".to_owned()),
        Some(Value::Object(payload)) => {
            summary(payload, true, &mut errors);
            for name in ["source", "timestamp"] {
                optional_string(payload, name, &format!("payload.{name}"), &mut errors);
            }
            optional_object(
                payload,
                "custom_details",
                "payload.custom_details",
                &mut errors,
            );
        }
        Some(_) => errors.push(invalid("payload", "an object")),
    }
    list_of_objects(event, "links", "href", &mut errors);
    // `images` is accepted and ignored: the schema allows it, the docs say it is unsupported.

    if errors.is_empty() {
        Ok(())
    } else {
        Err(ChangeError::Invalid(errors))
    }
}

/// Checks the routing key and returns it if it is a non-blank string (even a malformed one,
/// so that the caller can still tell which key a bad event was for).
fn routing_key(event: &Map<String, Value>, errors: &mut Vec<String>) -> Option<String> {
    match field(event, "routing_key") {
        Field::Text(key) => {
            if key.chars().count() != ROUTING_KEY_CHARS {
                errors.push(ROUTING_KEY_LENGTH.to_owned());
            }
            if !key.chars().all(|c| c.is_ascii_alphanumeric()) {
                errors.push(ROUTING_KEY_CHARSET.to_owned());
            }
            Some(key.to_owned())
        }
        Field::Missing | Field::Other => {
            errors.push(ROUTING_KEY_MISSING.to_owned());
            None
        }
    }
}

fn summary(payload: &Map<String, Value>, required: bool, errors: &mut Vec<String>) -> String {
    let summary = required_string(payload, "summary", required, errors);
    // PagerDuty counts characters, and rejects rather than truncates.
    if summary.chars().count() > MAX_SUMMARY_CHARS {
        errors.push(SUMMARY_TOO_LONG.to_owned());
    }
    summary
}

/// A payload string field that must be present when `required`; returns it or "".
fn required_string(
    payload: &Map<String, Value>,
    name: &str,
    required: bool,
    errors: &mut Vec<String>,
) -> String {
    match field(payload, name) {
        Field::Text(text) => text.to_owned(),
        Field::Missing => {
            if required {
                errors.push(format!("'payload.{name}' is missing or blank"));
            }
            String::new()
        }
        Field::Other => {
            errors.push(invalid(&format!("payload.{name}"), "a string"));
            String::new()
        }
    }
}

fn optional_string(object: &Map<String, Value>, name: &str, path: &str, errors: &mut Vec<String>) {
    if let Some(value) = object.get(name)
        && !value.is_null()
        && !value.is_string()
    {
        errors.push(invalid(path, "a string"));
    }
}

fn optional_object(object: &Map<String, Value>, name: &str, path: &str, errors: &mut Vec<String>) {
    if let Some(value) = object.get(name)
        && !value.is_null()
        && !value.is_object()
    {
        errors.push(invalid(path, "an object"));
    }
}

/// `links` and `images`: arrays of objects that each carry a string `key` (`href`, `src`).
fn list_of_objects(event: &Map<String, Value>, name: &str, key: &str, errors: &mut Vec<String>) {
    match event.get(name) {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (index, item) in items.iter().enumerate() {
                let has_key = item
                    .as_object()
                    .and_then(|item| item.get(key))
                    .is_some_and(Value::is_string);
                if !has_key {
                    let expected = format!("an object with a string '{key}'");
                    errors.push(invalid(&format!("{name}[{index}]"), &expected));
                }
            }
        }
        Some(_) => errors.push(invalid(name, "an array")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    fn key() -> String {
        "k".repeat(ROUTING_KEY_CHARS)
    }

    fn alert_errors(value: Value) -> Vec<String> {
        match alert_event(&object(value)) {
            Ok(event) => panic!("accepted: {event:?}"),
            Err(errors) => errors,
        }
    }

    #[test]
    fn valid_trigger_yields_its_fields() {
        let event = alert_event(&object(json!({
            "routing_key": key(),
            "event_action": "trigger",
            "payload": {"summary": "disk full", "source": "db1", "severity": "error"},
        })));
        let event = event.expect("valid");
        assert_eq!(event.action, Action::Trigger);
        assert_eq!(event.dedup_key, None);
        assert_eq!(
            (
                event.summary.as_str(),
                event.severity.as_str(),
                event.source.as_str()
            ),
            ("disk full", "error", "db1")
        );
    }

    #[test]
    fn summary_length_counts_characters_not_bytes() {
        let trigger = |summary: String| {
            alert_event(&object(json!({
                "routing_key": key(),
                "event_action": "trigger",
                "payload": {"summary": summary, "source": "s", "severity": "info"},
            })))
        };
        // 1024 two-byte characters are 2048 bytes but still within the limit.
        assert!(trigger("é".repeat(1024)).is_ok());
        let errors = trigger("é".repeat(1025)).expect_err("too long");
        assert_eq!(errors, vec![SUMMARY_TOO_LONG.to_owned()]);
    }

    #[test]
    fn dedup_key_of_255_characters_is_accepted() {
        let event = alert_event(&object(json!({
            "routing_key": key(),
            "event_action": "resolve",
            "dedup_key": "ü".repeat(255),
        })));
        assert!(event.is_ok());
    }

    #[test]
    fn whitespace_only_counts_as_blank() {
        let errors = alert_errors(json!({
            "routing_key": "   ",
            "event_action": "trigger",
            "payload": {"summary": "\t", "source": "s", "severity": "info"},
        }));
        assert_eq!(
            errors,
            vec![ROUTING_KEY_MISSING, "'payload.summary' is missing or blank"]
        );
        let errors = alert_errors(json!({"routing_key": key(), "event_action": " "}));
        assert_eq!(errors, vec![EVENT_ACTION_MISSING]);
    }

    #[test]
    fn wrong_payload_type_is_reported_once() {
        let errors = alert_errors(json!({
            "routing_key": key(),
            "event_action": "trigger",
            "payload": "disk full",
        }));
        assert_eq!(errors, vec!["'payload' is invalid (must be an object)"]);
    }

    #[test]
    fn unknown_action_does_not_demand_a_dedup_key_or_payload() {
        let errors = alert_errors(json!({"routing_key": key(), "event_action": "page"}));
        assert_eq!(errors, vec![EVENT_ACTION_INVALID]);
    }

    #[test]
    fn change_event_with_exactly_fifty_links_is_accepted() {
        let links: Vec<Value> = (0..50)
            .map(|i| json!({"href": format!("https://x/{i}")}))
            .collect();
        let result = change_event(&object(json!({
            "routing_key": key(),
            "payload": {"summary": "deploy"},
            "links": links,
        })));
        assert_eq!(result, Ok(()));
    }

    #[test]
    fn change_event_ignores_images_of_any_shape() {
        let result = change_event(&object(json!({
            "routing_key": key(),
            "payload": {"summary": "deploy"},
            "images": "not even an array",
        })));
        assert_eq!(result, Ok(()));
    }
}
