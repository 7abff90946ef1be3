//! Reading PagerDuty's answers: a 202 becomes [`Accepted`], anything else a [`SendError`].
//!
//! Kept free of HTTP types so it can be tested and benchmarked on plain bytes. PagerDuty uses
//! two error envelopes — `{"errors": [...]}` for alert events and `{"error": [...]}` seen on
//! change events — and sometimes none at all (429 may come with an empty body); all are read.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::SendError;

/// Longest excerpt of an unexpected body kept in an error.
const BODY_EXCERPT_CHARS: usize = 300;

/// PagerDuty's 202 answer. A change event's answer has no `dedup_key`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup_key: Option<String>,
}

/// Classifies one answer. `retry_after` is the raw `Retry-After` header, if any.
pub fn classify(
    status: u16,
    retry_after: Option<&str>,
    body: &[u8],
) -> Result<Accepted, SendError> {
    match status {
        // A 2xx means PagerDuty has the event; an unreadable body must not turn that into a
        // failure, or the event would be sent twice.
        200..=299 => Ok(serde_json::from_slice(body).unwrap_or_else(|_| Accepted {
            status: "success".to_owned(),
            ..Accepted::default()
        })),
        400 | 413 => {
            let (message, errors) = error_fields(body);
            Err(SendError::InvalidEvent {
                status,
                message,
                errors,
            })
        }
        429 => Err(SendError::RateLimited {
            retry_after: retry_after.and_then(parse_retry_after),
        }),
        500..=599 => {
            let (message, errors) = error_fields(body);
            let message = if errors.is_empty() {
                message
            } else {
                format!("{message} ({})", errors.join("; "))
            };
            Err(SendError::Server { status, message })
        }
        _ => Err(SendError::UnexpectedStatus {
            status,
            body: excerpt(body),
        }),
    }
}

/// `message` and `errors` from either of PagerDuty's error envelopes.
fn error_fields(body: &[u8]) -> (String, Vec<String>) {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
        return (excerpt(body), Vec::new());
    };
    let message = map
        .get("message")
        .and_then(Value::as_str)
        .or_else(|| map.get("status").and_then(Value::as_str))
        .unwrap_or_default()
        .to_owned();
    let errors = ["errors", "error"]
        .iter()
        .find_map(|field| map.get(*field))
        .map(strings_of)
        .unwrap_or_default();
    (message, errors)
}

fn strings_of(value: &Value) -> Vec<String> {
    match value {
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            })
            .collect(),
        Value::String(text) => vec![text.clone()],
        Value::Null => Vec::new(),
        other => vec![other.to_string()],
    }
}

fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    crate::values::truncate_chars(text.trim(), BODY_EXCERPT_CHARS)
}

/// `Retry-After` as seconds or as an HTTP date; a date in the past means "now".
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
    let wait = when.duration_since(jiff::Timestamp::now());
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_with_and_without_dedup_key() {
        let alert = classify(
            202,
            None,
            br#"{"status":"success","message":"Event processed","dedup_key":"k1"}"#,
        )
        .expect("accepted");
        assert_eq!(alert.dedup_key.as_deref(), Some("k1"));
        let change = classify(
            202,
            None,
            br#"{"message":"Change event processed","status":"success"}"#,
        )
        .expect("accepted");
        assert_eq!(change.dedup_key, None);
        assert_eq!(change.message, "Change event processed");
        assert_eq!(
            classify(202, None, b"not json").expect("accepted").status,
            "success"
        );
    }

    #[test]
    fn both_invalid_event_envelopes() {
        let alert = classify(
            400,
            None,
            br#"{"status":"invalid event","message":"Event object is invalid","errors":["'payload.source' is missing or blank"]}"#,
        );
        assert_eq!(
            alert,
            Err(SendError::InvalidEvent {
                status: 400,
                message: "Event object is invalid".into(),
                errors: vec!["'payload.source' is missing or blank".into()],
            })
        );
        let change = classify(
            400,
            None,
            br#"{"error":["links should have at most 50 item(s)"]}"#,
        );
        let Err(SendError::InvalidEvent { errors, .. }) = change else {
            panic!("{change:?}")
        };
        assert_eq!(errors, vec!["links should have at most 50 item(s)"]);
    }

    #[test]
    fn rate_limit_reads_retry_after_in_both_forms() {
        assert_eq!(
            classify(429, Some("7"), b""),
            Err(SendError::RateLimited {
                retry_after: Some(Duration::from_secs(7))
            })
        );
        assert_eq!(
            classify(429, None, b"429 - Request Limit Exceeded"),
            Err(SendError::RateLimited { retry_after: None })
        );
        let past = parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT");
        assert_eq!(past, Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn server_and_unexpected_statuses() {
        let server = classify(
            503,
            None,
            br#"{"status":"Unrecognized object","message":"Event object format is unrecognized","errors":["JSON parse error"]}"#,
        );
        assert_eq!(
            server,
            Err(SendError::Server {
                status: 503,
                message: "Event object format is unrecognized (JSON parse error)".into()
            })
        );
        let gateway = classify(502, None, b"<html>bad gateway</html>");
        assert!(matches!(
            gateway,
            Err(SendError::Server { status: 502, .. })
        ));
        let not_found = classify(404, None, b"nope");
        assert_eq!(
            not_found,
            Err(SendError::UnexpectedStatus {
                status: 404,
                body: "nope".into()
            })
        );
    }
}
