//! The change-events API, `POST /api/v1/change-events`, for deploys and config changes (CI/CD
//! pipelines, the `send` CLI).
//!
//! ```json
//! {
//!   "target": "payments",
//!   "summary": "Deployed checkout v2.4.1",
//!   "source": "github-actions",
//!   "timestamp": "2024-05-01T10:00:00Z",
//!   "custom_details": {"commit": "4f2a9c1", "author": "ana"},
//!   "links": [{"href": "https://ci.example/runs/812", "text": "CI run"}]
//! }
//! ```
//!
//! Only `summary` is required (non-blank; past 1024 characters it is cut, ending with `…`, rather
//! than refused). `timestamp` is RFC 3339, `custom_details` any JSON object, `links` at most 50
//! (PagerDuty's limit) of `{href, text?}` with absolute URLs. Unknown members are ignored.

use pagerduty_events::{ChangeEvent, Link, Summary};
use serde_json::{Map, Value};

use crate::ingest::{
    IngestError, kind, non_empty, optional_string, optional_timestamp, parse_object, quote, target,
};

/// PagerDuty's limit on links per change event.
pub const MAX_LINKS: usize = 50;

/// A parsed change-event request.
#[derive(Clone, Debug, PartialEq)]
pub struct ChangeRequest {
    pub target: Option<String>,
    pub event: ChangeEvent,
    /// The summary was over 1024 characters and was cut (worth counting).
    pub summary_truncated: bool,
}

/// Parses a change-event body.
pub fn parse(body: &[u8]) -> Result<ChangeRequest, IngestError> {
    let request = parse_object(body)?;
    let target = target(&request)?;
    read(&request)
        .map(|(event, summary_truncated)| ChangeRequest {
            target,
            event,
            summary_truncated,
        })
        .map_err(IngestError::request)
}

fn read(request: &Map<String, Value>) -> Result<(ChangeEvent, bool), String> {
    let text = optional_string(request, "summary")?.unwrap_or_default();
    let summary =
        Summary::truncating(&text).map_err(|_| "\"summary\" is missing or blank".to_owned())?;
    let mut event = ChangeEvent::new(summary);
    event.payload.source = non_empty(optional_string(request, "source")?);
    // Times before the year 1 are refused above, so every one is an `EventTime`.
    event.payload.timestamp = optional_timestamp(request, "timestamp")?
        .and_then(|at| pagerduty_events::EventTime::new(at).ok());
    event.payload.custom_details = match request.get("custom_details") {
        None | Some(Value::Null) => None,
        Some(Value::Object(details)) => Some(details.clone()),
        Some(other) => {
            return Err(format!(
                "\"custom_details\" must be an object, not {}",
                kind(other)
            ));
        }
    };
    event.links = links(request)?;
    Ok((event, Summary::was_truncated(&text)))
}

fn links(request: &Map<String, Value>) -> Result<Vec<Link>, String> {
    let items = match request.get("links") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(other) => return Err(format!("\"links\" must be an array, not {}", kind(other))),
    };
    if items.len() > MAX_LINKS {
        return Err(format!(
            "\"links\" has {} entries; PagerDuty accepts at most {MAX_LINKS}",
            items.len()
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let Value::Object(fields) = item else {
                return Err(format!("links[{i}] must be an object, not {}", kind(item)));
            };
            let in_link = |e: String| format!("links[{i}]: {e}");
            let href = optional_string(fields, "href")
                .map_err(in_link)?
                .ok_or_else(|| format!("links[{i}]: \"href\" is missing"))?;
            let text = optional_string(fields, "text").map_err(in_link)?;
            Link::new(&href, text).map_err(|e| {
                format!(
                    "links[{i}]: \"href\" {} is not an absolute URL ({e})",
                    quote(&href)
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn body(value: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&value).expect("serialize")
    }

    fn refused(value: serde_json::Value) -> IngestError {
        parse(&body(value)).expect_err("should be refused")
    }

    #[test]
    fn full_change_event() {
        let request = parse(&body(json!({
            "target": "payments",
            "summary": "Deployed checkout v2.4.1",
            "source": "github-actions",
            "timestamp": "2024-05-01T10:00:00Z",
            "custom_details": {"commit": "4f2a9c1"},
            "links": [{"href": "https://ci.example/runs/812", "text": "CI run"}, {"href": "https://x.example/"}]
        })))
        .expect("valid");
        assert_eq!(request.target.as_deref(), Some("payments"));
        assert!(!request.summary_truncated);
        assert_eq!(
            serde_json::to_value(&request.event).expect("serialize"),
            json!({
                "payload": {
                    "summary": "Deployed checkout v2.4.1",
                    "source": "github-actions",
                    "timestamp": "2024-05-01T10:00:00Z",
                    "custom_details": {"commit": "4f2a9c1"}
                },
                "links": [{"href": "https://ci.example/runs/812", "text": "CI run"}, {"href": "https://x.example/"}]
            })
        );
    }

    #[test]
    fn only_summary_is_required() {
        let request = parse(br#"{"summary": "deploy"}"#).expect("valid");
        assert_eq!(
            request.event,
            ChangeEvent::new(Summary::new("deploy").expect("summary"))
        );
        assert_eq!(request.target, None);
    }

    #[test]
    fn long_summary_is_truncated_not_refused() {
        let request = parse(&body(json!({"summary": "é".repeat(2000)}))).expect("valid");
        assert!(request.summary_truncated);
        let summary = request.event.payload.summary.as_str();
        assert_eq!(summary.chars().count(), 1024);
        assert!(summary.ends_with('…'));
    }

    #[test]
    fn errors() {
        let cases = [
            (json!({}), "\"summary\" is missing or blank"),
            (json!({"summary": "  "}), "\"summary\" is missing or blank"),
            (
                json!({"summary": 5}),
                "\"summary\" must be a string, not a number",
            ),
            (
                json!({"summary": "s", "timestamp": "now"}),
                "\"timestamp\" is not an RFC 3339 timestamp (\"now\")",
            ),
            (
                json!({"summary": "s", "custom_details": "x"}),
                "\"custom_details\" must be an object, not a string",
            ),
            (
                json!({"summary": "s", "links": {}}),
                "\"links\" must be an array, not an object",
            ),
            (
                json!({"summary": "s", "links": ["https://x"]}),
                "links[0] must be an object, not a string",
            ),
            (
                json!({"summary": "s", "links": [{"text": "t"}]}),
                "links[0]: \"href\" is missing",
            ),
            (
                json!({"summary": "s", "links": [{"href": "/relative"}]}),
                "links[0]: \"href\" \"/relative\" is not an absolute URL",
            ),
            (
                json!({"summary": "s", "links": [{"href": "https://x", "text": 1}]}),
                "links[0]: \"text\" must be a string, not a number",
            ),
            (
                json!({"summary": "s", "target": ""}),
                "\"target\" must not be blank",
            ),
        ];
        for (request, expected) in cases {
            let error = refused(request.clone());
            assert_eq!(error.error(), "invalid_request", "{request}");
            assert!(
                error.detail.starts_with(expected),
                "{request}: {}",
                error.detail
            );
        }
        assert_eq!(refused(json!(["summary"])).error(), "invalid_request");
        assert_eq!(
            parse(b"{summary").expect_err("bad json").error(),
            "malformed_json"
        );
    }

    #[test]
    fn at_most_fifty_links() {
        let link = json!({"href": "https://x.example/"});
        assert!(
            parse(&body(
                json!({"summary": "s", "links": vec![link.clone(); 50]})
            ))
            .is_ok()
        );
        let error = refused(json!({"summary": "s", "links": vec![link; 51]}));
        assert!(error.detail.contains("at most 50"), "{}", error.detail);
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn never_panics_on_arbitrary_json(value in crate::ingest::test_support::json_value()) {
            let _ = parse(&body(value.clone()));
            let _ = parse(&body(json!({"summary": "s", "links": [value.clone()], "custom_details": value})));
        }
    }
}
