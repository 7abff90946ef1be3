//! The answers the simulator gives, in the envelopes PagerDuty uses, each tagged with the
//! kind of outcome it counts as in the statistics.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Which statistics counter an answer feeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// 202 for an alert event that changed an alert.
    Accepted,
    /// 202 for an acknowledge or resolve that found no open alert, so PagerDuty drops it.
    Dropped,
    /// 202 for a change event.
    ChangeAccepted,
    /// Rejected by the simulator's own checks (400 or 413).
    Invalid,
    /// 429 from the per-key budget.
    Throttled,
    /// Answered by an injected fault (outage, forced status, fail rate).
    Fault,
    /// No such route.
    NotFound,
}

/// One answer: status, JSON body and the optional `Retry-After` header.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) body: Value,
    pub(crate) retry_after: Option<u64>,
    pub(crate) outcome: Outcome,
}

impl Reply {
    fn new(status: StatusCode, body: Value, outcome: Outcome) -> Self {
        Self {
            status,
            body,
            retry_after: None,
            outcome,
        }
    }

    /// PagerDuty's `Error` shape from its OpenAPI schema.
    fn error_shape(status: StatusCode, message: &str, errors: &[&str], outcome: Outcome) -> Self {
        let name = status.canonical_reason().unwrap_or("Error");
        let body = json!({ "status": name, "message": message, "errors": errors });
        Self::new(status, body, outcome)
    }

    pub(crate) fn accepted_alert(dedup_key: &str, applied: bool) -> Self {
        let body = json!({
            "status": "success",
            "message": "Event processed",
            "dedup_key": dedup_key,
        });
        let outcome = if applied {
            Outcome::Accepted
        } else {
            Outcome::Dropped
        };
        Self::new(StatusCode::ACCEPTED, body, outcome)
    }

    /// PagerDuty's own Go client fixture shows no `dedup_key` here, unlike the schema.
    pub(crate) fn accepted_change() -> Self {
        let body = json!({ "status": "success", "message": "Change event processed" });
        Self::new(StatusCode::ACCEPTED, body, Outcome::ChangeAccepted)
    }

    pub(crate) fn invalid_event(errors: Vec<String>, outcome: Outcome) -> Self {
        let body = json!({
            "status": "invalid event",
            "message": "Event object is invalid",
            "errors": errors,
        });
        Self::new(StatusCode::BAD_REQUEST, body, outcome)
    }

    /// The change-event service answers some problems in a different envelope
    /// (go-pagerduty issue #478).
    pub(crate) fn invalid_change(errors: Vec<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            json!({ "error": errors }),
            Outcome::Invalid,
        )
    }

    /// The schema attaches this example to 5XX, but by meaning it describes a body that is
    /// not a JSON object, which a client must not retry, so it is answered as a 400.
    pub(crate) fn unrecognized() -> Self {
        let body = json!({
            "status": "Unrecognized object",
            "message": "Event object format is unrecognized",
            "errors": ["JSON parse error"],
        });
        Self::new(StatusCode::BAD_REQUEST, body, Outcome::Invalid)
    }

    /// PagerDuty documents a 512 KB limit but not the status of an oversize body; 413 is
    /// our choice, and so is the wording.
    pub(crate) fn too_large(max_body_bytes: usize) -> Self {
        let body = json!({
            "status": "Request Entity Too Large",
            "message": "Event object is too large",
            "errors": [format!("Event payload exceeds {max_body_bytes} bytes")],
        });
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, body, Outcome::Invalid)
    }

    /// PagerDuty documents no 429 body and no `Retry-After`; the wording is the one older
    /// PagerDuty docs show, and the header is only sent when a test asks for it.
    pub(crate) fn throttled(retry_after: Option<u64>, outcome: Outcome) -> Self {
        let body = json!({
            "status": "throttle event",
            "message": "Requests for this service are arriving too quickly.  Please retry later.",
            "errors": ["Too many events; retry later"],
        });
        Self {
            retry_after,
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, body, outcome)
        }
    }

    pub(crate) fn outage() -> Self {
        Self::error_shape(
            StatusCode::SERVICE_UNAVAILABLE,
            "Simulated outage",
            &[],
            Outcome::Fault,
        )
    }

    pub(crate) fn simulated_failure() -> Self {
        Self::error_shape(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Simulated failure",
            &[],
            Outcome::Fault,
        )
    }

    /// A status forced by a test, in the envelope PagerDuty would use for it.
    pub(crate) fn forced(status: StatusCode, retry_after: Option<u64>) -> Self {
        match status {
            StatusCode::BAD_REQUEST => {
                Self::invalid_event(vec!["Simulated invalid event".to_owned()], Outcome::Fault)
            }
            StatusCode::TOO_MANY_REQUESTS => Self::throttled(retry_after, Outcome::Fault),
            _ => Self::error_shape(status, "Simulated failure", &[], Outcome::Fault),
        }
    }

    pub(crate) fn not_found(method: &str, path: &str) -> Self {
        let message = format!("No route for {method} {path}");
        Self::error_shape(StatusCode::NOT_FOUND, &message, &[], Outcome::NotFound)
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
