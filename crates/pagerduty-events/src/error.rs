//! Errors: what was wrong with an event, and what happened when sending one.
//!
//! [`SendError`] classifies every outcome other than a 202 so that callers can decide without
//! looking at status codes: [`SendError::is_retryable`] says whether sending the same event
//! again can help. No variant ever holds a routing key (texts from the server are redacted).

use std::time::Duration;

/// An event or field that PagerDuty would reject, with PagerDuty's own wording where known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("{}", .0.join("; "))]
    Invalid(Vec<String>),
}

impl EventError {
    pub fn messages(&self) -> &[String] {
        match self {
            EventError::Invalid(messages) => messages,
        }
    }
}

/// Why a request did not end in a 202.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// 400 (or 413): PagerDuty refused the event itself. Sending it again cannot help.
    #[error("PagerDuty rejected the event (HTTP {status}): {}", describe(.message, .errors))]
    InvalidEvent {
        status: u16,
        message: String,
        errors: Vec<String>,
    },
    /// 429: too many requests for this routing key; PagerDuty did not take the event.
    #[error("PagerDuty is rate limiting this routing key (HTTP 429){}", retry_after_text(*.retry_after))]
    RateLimited { retry_after: Option<Duration> },
    /// 5xx: PagerDuty failed; the event may be sent again.
    #[error("PagerDuty answered with a server error (HTTP {status}): {message}")]
    Server { status: u16, message: String },
    /// No answer within the client's timeout. PagerDuty may or may not have taken the event.
    #[error("PagerDuty did not answer within {:?}", .0)]
    Timeout(Duration),
    /// The connection failed (DNS, refused, reset, TLS).
    #[error("could not reach PagerDuty: {0}")]
    Network(String),
    /// Any other status (401, 403, 404, 3xx…): usually a wrong URL or a proxy in the way.
    #[error("unexpected answer from PagerDuty (HTTP {status}): {body}")]
    UnexpectedStatus { status: u16, body: String },
}

impl SendError {
    /// Whether sending the same event again can succeed: rate limits, server errors, timeouts
    /// and network failures can; a rejected event or an unexpected status cannot.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            SendError::RateLimited { .. }
                | SendError::Server { .. }
                | SendError::Timeout(_)
                | SendError::Network(_)
        )
    }

    /// The delay PagerDuty asked for, if it sent `Retry-After`.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SendError::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }

    /// The HTTP status, when there was an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            SendError::InvalidEvent { status, .. }
            | SendError::Server { status, .. }
            | SendError::UnexpectedStatus { status, .. } => Some(*status),
            SendError::RateLimited { .. } => Some(429),
            SendError::Timeout(_) | SendError::Network(_) => None,
        }
    }

    /// A short, stable name for metrics labels and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            SendError::InvalidEvent { .. } => "invalid_event",
            SendError::RateLimited { .. } => "rate_limited",
            SendError::Server { .. } => "server_error",
            SendError::Timeout(_) => "timeout",
            SendError::Network(_) => "network",
            SendError::UnexpectedStatus { .. } => "unexpected_status",
        }
    }
}

fn describe(message: &str, errors: &[String]) -> String {
    if errors.is_empty() {
        message.to_owned()
    } else {
        errors.join("; ")
    }
}

fn retry_after_text(retry_after: Option<Duration>) -> String {
    retry_after
        .map(|d| format!("; retry after {}s", d.as_secs()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_failures_are_retryable() {
        assert!(SendError::RateLimited { retry_after: None }.is_retryable());
        assert!(
            SendError::Server {
                status: 503,
                message: String::new()
            }
            .is_retryable()
        );
        assert!(SendError::Timeout(Duration::from_secs(1)).is_retryable());
        assert!(SendError::Network("reset".into()).is_retryable());
        let invalid = SendError::InvalidEvent {
            status: 400,
            message: "Event object is invalid".into(),
            errors: vec!["'payload.source' is missing or blank".into()],
        };
        assert!(!invalid.is_retryable());
        assert_eq!(
            invalid.to_string(),
            "PagerDuty rejected the event (HTTP 400): 'payload.source' is missing or blank"
        );
        assert!(
            !SendError::UnexpectedStatus {
                status: 404,
                body: String::new()
            }
            .is_retryable()
        );
    }
}
