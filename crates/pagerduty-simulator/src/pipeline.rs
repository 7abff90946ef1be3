//! The order in which one event request is handled once its body is read and its latency
//! served: injected faults, body checks, PagerDuty's per-key budget, validation, ingestion.

use std::time::Instant;

use serde_json::Value;

use crate::responses::{Outcome, Reply};
use crate::validate::{self, ChangeError};
use crate::{Config, Inner};

/// Which of PagerDuty's two event routes a request came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `POST /v2/enqueue`
    Alert,
    /// `POST /v2/change/enqueue`
    Change,
}

/// A request body as read from the wire.
#[derive(Debug)]
pub(crate) enum Received {
    Json(Value),
    Text(String),
    /// Over `max_body_bytes`; only its size (as far as it was read) is kept.
    TooLarge {
        bytes: usize,
    },
    Unreadable(String),
}

impl Received {
    pub(crate) fn parse(bytes: &[u8]) -> Self {
        match serde_json::from_slice(bytes) {
            Ok(value) => Self::Json(value),
            Err(_) => Self::Text(String::from_utf8_lossy(bytes).into_owned()),
        }
    }

    /// What the request log keeps of the body.
    pub(crate) fn into_log_value(self) -> Value {
        match self {
            Self::Json(value) => value,
            Self::Text(text) => Value::String(text),
            Self::TooLarge { bytes } => {
                Value::String(format!("<{bytes} bytes or more: over the limit, not kept>"))
            }
            Self::Unreadable(error) => Value::String(format!("<body could not be read: {error}>")),
        }
    }
}

/// Decides the answer to one event request and applies its effects; `seq` is the request's
/// place in the log, for the alert history.
pub(crate) fn handle(
    inner: &mut Inner,
    config: &Config,
    endpoint: Endpoint,
    body: &Received,
    seq: u64,
    now: Instant,
) -> Reply {
    if let Some(reply) = inner.faults.intercept(now) {
        return reply;
    }
    let event = match body {
        Received::TooLarge { .. } => return Reply::too_large(config.max_body_bytes),
        Received::Json(Value::Object(event)) => event,
        Received::Json(_) | Received::Text(_) | Received::Unreadable(_) => {
            return Reply::unrecognized();
        }
    };

    // The budget counts whatever key the body names, valid or not, before validation, and
    // alert and change events draw on the same budget.
    if let Some(key) = event.get("routing_key").and_then(Value::as_str)
        && !inner
            .budget
            .try_admit(key, config.rate_limit, config.rate_window, now)
    {
        return Reply::throttled(inner.faults.retry_after_seconds(), Outcome::Throttled);
    }

    match endpoint {
        Endpoint::Alert => match validate::alert_event(event) {
            Ok(event) => {
                let (dedup_key, applied) = inner.state.apply_alert(event, seq, &crate::now());
                Reply::accepted_alert(&dedup_key, applied)
            }
            Err(errors) => Reply::invalid_event(errors, Outcome::Invalid),
        },
        Endpoint::Change => match validate::change_event(event) {
            Ok(()) => Reply::accepted_change(),
            Err(ChangeError::Invalid(errors)) => Reply::invalid_event(errors, Outcome::Invalid),
            Err(ChangeError::Rejected(errors)) => Reply::invalid_change(errors),
        },
    }
}
