//! The admin API (DESIGN.md "Interfaces"): what is queued per lane, the dead letters with their
//! reasons, and the two things an operator does about them — replay and drop.
//!
//! | endpoint | what |
//! | --- | --- |
//! | `GET /api/v1/admin/lanes` | per target: pending, dead, oldest pending age |
//! | `GET /api/v1/admin/queue?target=&limit=` | pending events, oldest first |
//! | `GET /api/v1/admin/dead-letters?target=&dedup_key=&action=&after_id=&limit=&include_dropped=` | dead letters, oldest first, with reasons |
//! | `POST /api/v1/admin/dead-letters/replay` | back to the queue: body a [`DeadLetterFilter`] |
//! | `POST /api/v1/admin/dead-letters/drop` | give up on them: the filter plus `"reason"` |
//!
//! The API has its own bearer tokens (`admin.bearer_token_file`), apart from ingest's, and is
//! **off without them**: every admin endpoint then answers 403 `admin_disabled`, so a bridge is
//! never open to replays by default. A filter that selects nothing explicitly is refused (400
//! `empty_filter`): replaying everything takes `{"all": true}`. Replay semantics — original
//! ids, superseded events left dead — are the store's ([`DeadLetters::replay`](crate::store::DeadLetters::replay)).
//!
//! Nothing here can show a routing key: events are stored without one, and the event bodies
//! listed are additionally stripped of any `routing_key` field.

use axum::Router;
use axum::body::Body;
use axum::extract::{RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use jiff::Timestamp;
use serde::Serialize;
use serde_json::{Value, json};

use super::{ApiError, AppState, json_body};
use crate::store::{Action, DeadLetter, DeadLetterFilter, QueuedEvent, StoreError};

/// Rows per listing unless `limit` says otherwise, and the most `limit` may ask for.
const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;
/// Ids one replay or drop request may name; larger sets go in several requests.
const MAX_IDS: usize = 10_000;
/// A drop reason is for people; it need not be an essay.
const MAX_REASON_CHARS: usize = 1000;

/// The admin routes, behind the admin token check.
pub(super) fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/api/v1/admin/lanes", get(lanes))
        .route("/api/v1/admin/queue", get(queue))
        .route("/api/v1/admin/dead-letters", get(dead_letters))
        .route("/api/v1/admin/dead-letters/replay", post(replay))
        .route("/api/v1/admin/dead-letters/drop", post(drop_dead))
        .route_layer(axum::middleware::from_fn_with_state(
            state,
            require_admin_token,
        ))
}

async fn require_admin_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(tokens) = &state.admin_tokens else {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "admin_disabled",
            "set admin.bearer_token_file to enable the admin API",
        )
        .into_response();
    };
    match super::auth::check_bearer(tokens, &request, "the admin API") {
        Ok(()) => next.run(request).await,
        Err(error) => error.into_response(),
    }
}

fn bad_request(error: &'static str, detail: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, error, detail)
}

fn storage_failed(error: StoreError) -> ApiError {
    tracing::error!(%error, "admin request: storage failed");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "storage_unavailable",
        "storage did not answer; nothing was changed, retry later",
    )
}

/// A query string, checked against the parameters an endpoint knows: a typo is a 400, not a
/// silently wider listing.
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(raw: Option<String>, known: &[&str]) -> Result<Self, ApiError> {
        let pairs: Vec<(String, String)> =
            url::form_urlencoded::parse(raw.as_deref().unwrap_or_default().as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
        for (index, (name, _)) in pairs.iter().enumerate() {
            if !known.contains(&name.as_str()) {
                return Err(bad_request(
                    "unknown_parameter",
                    format!(
                        "unknown query parameter {name:?}; this endpoint takes {}",
                        known.join(", ")
                    ),
                ));
            }
            if pairs[..index].iter().any(|(earlier, _)| earlier == name) {
                return Err(bad_request(
                    "invalid_parameter",
                    format!("query parameter {name:?} is given twice"),
                ));
            }
        }
        Ok(Self(pairs))
    }

    /// A parameter's value; an empty value counts as absent (`?target=` is "any target").
    fn text(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    fn number<T: std::str::FromStr>(&self, name: &str, what: &str) -> Result<Option<T>, ApiError> {
        self.text(name)
            .map(|v| {
                v.parse().map_err(|_| {
                    bad_request(
                        "invalid_parameter",
                        format!("{name} must be {what}, not {v:?}"),
                    )
                })
            })
            .transpose()
    }

    fn limit(&self) -> Result<u32, ApiError> {
        let what = format!("a whole number from 1 to {MAX_LIMIT}");
        match self.number::<u32>("limit", &what)? {
            None => Ok(DEFAULT_LIMIT),
            Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            Some(n) => Err(bad_request(
                "invalid_parameter",
                format!("limit must be {what}, not {n}"),
            )),
        }
    }

    fn flag(&self, name: &str) -> Result<bool, ApiError> {
        match self.text(name) {
            None | Some("false") | Some("0") => Ok(false),
            Some("true") | Some("1") => Ok(true),
            Some(other) => Err(bad_request(
                "invalid_parameter",
                format!("{name} must be true or false, not {other:?}"),
            )),
        }
    }

    fn action(&self) -> Result<Option<Action>, ApiError> {
        self.text("action")
            .map(|v| {
                Action::parse(v).map_err(|_| {
                    bad_request(
                        "invalid_parameter",
                        format!(
                            "action must be trigger, acknowledge, resolve or change, not {v:?}"
                        ),
                    )
                })
            })
            .transpose()
    }
}

#[derive(Serialize)]
struct Lane {
    target: String,
    /// Whether the target is in the configuration (an old target can still have events).
    configured: bool,
    pending: u64,
    dead: u64,
    oldest_pending_accepted_at: Option<Timestamp>,
    oldest_pending_age_seconds: Option<f64>,
}

async fn lanes(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    Params::parse(raw, &[])?;
    let stats = state.store.lane_stats().await.map_err(storage_failed)?;
    let now = Timestamp::now();
    let configured: Vec<&str> = state
        .pipeline
        .planner()
        .targets()
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    let mut lanes: Vec<Lane> = configured
        .iter()
        .map(|name| Lane {
            target: (*name).to_owned(),
            configured: true,
            pending: 0,
            dead: 0,
            oldest_pending_accepted_at: None,
            oldest_pending_age_seconds: None,
        })
        .collect();
    for stat in stats {
        let lane = match lanes.iter_mut().find(|l| l.target == stat.target) {
            Some(lane) => lane,
            None => {
                lanes.push(Lane {
                    target: stat.target.clone(),
                    configured: false,
                    pending: 0,
                    dead: 0,
                    oldest_pending_accepted_at: None,
                    oldest_pending_age_seconds: None,
                });
                let last = lanes.len() - 1;
                &mut lanes[last]
            }
        };
        lane.pending = stat.pending;
        lane.dead = stat.dead;
        lane.oldest_pending_accepted_at = stat.oldest_pending_accepted_at;
        lane.oldest_pending_age_seconds = stat
            .oldest_pending_accepted_at
            .map(|at| now.duration_since(at).as_secs_f64().max(0.0));
    }
    Ok(axum::Json(json!({ "lanes": lanes })).into_response())
}

/// A pending event as listed: what it is and how delivery is going, not its body.
#[derive(Serialize)]
struct Pending<'a> {
    id: i64,
    target: &'a str,
    dedup_key: Option<&'a str>,
    action: Action,
    severity: Option<pagerduty_events::Severity>,
    summary: Option<&'a str>,
    accepted_at: Timestamp,
    attempts: u32,
    last_error: Option<&'a str>,
}

impl<'a> From<&'a QueuedEvent> for Pending<'a> {
    fn from(event: &'a QueuedEvent) -> Self {
        Self {
            id: event.id,
            target: &event.target,
            dedup_key: event.dedup_key.as_deref(),
            action: event.action,
            severity: event.severity,
            summary: summary(&event.event),
            accepted_at: event.accepted_at,
            attempts: event.attempts,
            last_error: event.last_error.as_deref(),
        }
    }
}

async fn queue(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(raw, &["target", "limit"])?;
    let limit = params.limit()?;
    let events = state
        .store
        .pending(params.text("target"), limit)
        .await
        .map_err(storage_failed)?;
    let listed: Vec<Pending<'_>> = events.iter().map(Pending::from).collect();
    Ok(axum::Json(json!({ "events": listed })).into_response())
}

/// A dead letter as listed: the event (without any routing key), why it died, what became of it.
#[derive(Serialize)]
struct Listed<'a> {
    id: i64,
    target: &'a str,
    dedup_key: Option<&'a str>,
    action: Action,
    summary: Option<&'a str>,
    accepted_at: Timestamp,
    dead_at: Timestamp,
    reason: &'a str,
    attempts: u32,
    superseded_by: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dropped_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    drop_reason: Option<&'a str>,
    event: Value,
}

impl<'a> From<&'a DeadLetter> for Listed<'a> {
    fn from(dead: &'a DeadLetter) -> Self {
        let mut event = dead.event.clone();
        if let Some(object) = event.as_object_mut() {
            object.remove("routing_key");
        }
        Self {
            id: dead.id,
            target: &dead.target,
            dedup_key: dead.dedup_key.as_deref(),
            action: dead.action,
            summary: summary(&dead.event),
            accepted_at: dead.accepted_at,
            dead_at: dead.dead_at,
            reason: &dead.reason,
            attempts: dead.attempts,
            superseded_by: dead.superseded_by,
            dropped_at: dead.dropped_at,
            drop_reason: dead.drop_reason.as_deref(),
            event,
        }
    }
}

/// The summary of an alert event (`payload.summary`) or a change event (`summary`, or its
/// `payload.summary`).
fn summary(event: &Value) -> Option<&str> {
    event
        .pointer("/payload/summary")
        .or_else(|| event.get("summary"))
        .and_then(Value::as_str)
}

async fn dead_letters(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(
        raw,
        &[
            "target",
            "dedup_key",
            "action",
            "after_id",
            "limit",
            "include_dropped",
        ],
    )?;
    let filter = DeadLetterFilter {
        target: params.text("target").map(str::to_owned),
        dedup_key: params.text("dedup_key").map(str::to_owned),
        action: params.action()?,
        all: true,
        ..DeadLetterFilter::default()
    };
    let limit = params.limit()?;
    let after_id = params.number::<i64>("after_id", "an event id")?;
    let found = state
        .store
        .find_dead_letters(&filter, params.flag("include_dropped")?, after_id, limit)
        .await
        .map_err(storage_failed)?;
    // Where the next page starts, when this one is full.
    let next_after_id = (found.len() == limit as usize)
        .then(|| found.last().map(|d| d.id))
        .flatten();
    let listed: Vec<Listed<'_>> = found.iter().map(Listed::from).collect();
    Ok(
        axum::Json(json!({ "dead_letters": listed, "next_after_id": next_after_id }))
            .into_response(),
    )
}

/// Parses and checks a filter: unknown fields, an empty filter and an empty id list are refused.
fn checked_filter(body: Value) -> Result<DeadLetterFilter, ApiError> {
    let filter: DeadLetterFilter = serde_json::from_value(body)
        .map_err(|e| bad_request("invalid_filter", format!("the filter is not valid: {e}")))?;
    if filter.ids.as_ref().is_some_and(Vec::is_empty) {
        return Err(bad_request("empty_filter", "ids must not be an empty list"));
    }
    if filter.ids.as_ref().is_some_and(|ids| ids.len() > MAX_IDS) {
        return Err(bad_request(
            "too_many_ids",
            format!("at most {MAX_IDS} ids per request; send several requests"),
        ));
    }
    if filter.is_empty() {
        return Err(bad_request(
            "empty_filter",
            "say which dead letters: ids, target, dedup_key, action, dead_since/dead_before, \
             or {\"all\": true} for every one",
        ));
    }
    if let (Some(since), Some(before)) = (filter.dead_since, filter.dead_before)
        && since >= before
    {
        return Err(bad_request(
            "invalid_filter",
            "dead_since must be before dead_before",
        ));
    }
    Ok(filter)
}

async fn json_value(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Value, ApiError> {
    let bytes = json_body(state, headers, body).await?;
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| bad_request("invalid_json", format!("the body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(bad_request(
            "invalid_filter",
            "the body must be a JSON object, e.g. {\"ids\": [42]}",
        ));
    }
    Ok(value)
}

async fn replay(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let filter = checked_filter(json_value(&state, &headers, body).await?)?;
    let report = state
        .store
        .replay(&filter, Timestamp::now())
        .await
        .map_err(storage_failed)?;
    for target in &report.targets {
        state.waker.wake(target);
    }
    tracing::info!(
        replayed = report.replayed.len(),
        superseded = report.superseded.len(),
        filter = %serde_json::to_string(&filter).unwrap_or_default(),
        "dead letters replayed by an operator"
    );
    Ok(axum::Json(json!({
        "replayed": report.replayed.len(),
        "replayed_ids": report.replayed,
        "superseded": report.superseded,
    }))
    .into_response())
}

async fn drop_dead(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let mut body = json_value(&state, &headers, body).await?;
    let reason = match body.as_object_mut().and_then(|o| o.remove("reason")) {
        Some(Value::String(reason)) if !reason.trim().is_empty() => reason.trim().to_owned(),
        Some(Value::String(_)) | None => {
            return Err(bad_request(
                "missing_reason",
                "say why: dropping needs a non-empty \"reason\", kept with the record",
            ));
        }
        Some(_) => return Err(bad_request("invalid_filter", "\"reason\" must be a string")),
    };
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(bad_request(
            "invalid_filter",
            format!("\"reason\" is over {MAX_REASON_CHARS} characters"),
        ));
    }
    let filter = checked_filter(body)?;
    let dropped = state
        .store
        .drop_dead(&filter, &reason, Timestamp::now())
        .await
        .map_err(storage_failed)?;
    tracing::warn!(
        dropped,
        reason = %reason,
        filter = %serde_json::to_string(&filter).unwrap_or_default(),
        "dead letters dropped by an operator"
    );
    Ok(axum::Json(json!({ "dropped": dropped })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_checked() {
        let refused = |body: Value| checked_filter(body).expect_err("refused").error;
        assert_eq!(refused(json!({})), "empty_filter");
        assert_eq!(refused(json!({"all": false})), "empty_filter");
        assert_eq!(refused(json!({"ids": []})), "empty_filter");
        assert_eq!(refused(json!({"target_name": "x"})), "invalid_filter");
        assert_eq!(refused(json!({"ids": "1"})), "invalid_filter");
        assert_eq!(refused(json!({"action": "explode"})), "invalid_filter");
        assert_eq!(
            refused(
                json!({"dead_since": "2026-01-02T00:00:00Z", "dead_before": "2026-01-01T00:00:00Z"})
            ),
            "invalid_filter"
        );
        let ok = checked_filter(json!({"target": "db", "action": "trigger"})).expect("valid");
        assert_eq!(ok.target.as_deref(), Some("db"));
        assert_eq!(ok.action, Some(Action::Trigger));
        assert!(checked_filter(json!({"all": true})).expect("valid").all);
    }

    #[test]
    fn query_parameters_are_checked() {
        let parse = |q: &str| Params::parse(Some(q.to_owned()), &["target", "limit"]);
        assert_eq!(
            parse("tagret=x").err().map(|e| e.error),
            Some("unknown_parameter")
        );
        assert_eq!(
            parse("limit=1&limit=2").err().map(|e| e.error),
            Some("invalid_parameter")
        );
        let params = parse("target=a%20b&limit=").expect("valid");
        assert_eq!(params.text("target"), Some("a b"));
        assert_eq!(params.limit().expect("default"), DEFAULT_LIMIT);
        for bad in ["limit=0", "limit=1001", "limit=-1", "limit=ten"] {
            assert!(parse(bad).expect("parses").limit().is_err(), "{bad}");
        }
    }
}
