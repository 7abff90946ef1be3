//! The admin API (DESIGN.md "Interfaces"): what is queued per lane, the incidents as PagerDuty
//! last heard of them, the dead letters with their reasons, and the two things an operator does
//! about them — replay and drop.
//!
//! | endpoint | what |
//! | --- | --- |
//! | `GET /api/v1/admin/lanes` | per target: pending, dead, oldest pending age, the lane's lease, state and budget use |
//! | `GET /api/v1/admin/leases` | every lease (lanes and singletons): owner, epoch, expiry |
//! | `GET /api/v1/admin/queue?target=&limit=` | pending events, oldest first |
//! | `GET /api/v1/admin/dead-letters?target=&dedup_key=&action=&after_id=&limit=&include_dropped=` | dead letters, oldest first, with reasons |
//! | `GET /api/v1/admin/incidents?target=&state=&dedup_key=&limit=&after=` | incidents by target and dedup key, paged by `next` |
//! | `POST /api/v1/admin/dead-letters/replay` | back to the queue: body a [`DeadLetterFilter`] |
//! | `POST /api/v1/admin/dead-letters/drop` | give up on them: the filter plus `"reason"` |
//!
//! The paths, queries and bodies are [`crate::admin_api`]'s, shared with `pagerbridge admin`;
//! this module serves them.
//!
//! The API has its own bearer tokens (`admin.bearer_token_file`), apart from ingest's, and is
//! **off without them**: every admin endpoint then answers 403 `admin_disabled`, so a bridge is
//! never open to replays by default. A filter that selects nothing explicitly is refused (400
//! `empty_filter`): replaying everything takes `{"all": true}`. Replay semantics — original
//! ids, superseded events left dead — are the store's ([`DeadLetters::replay`](crate::store::DeadLetters::replay)).
//!
//! Nothing here can show a routing key: events are stored without one, the event bodies
//! listed are additionally stripped of any `routing_key` field, and a lane's budget is looked
//! up by its [`BudgetId`].
//!
//! A lane's state comes from its lease, where its owner reports it: the replica answering may
//! not be the one driving the lane. An expired lease's state is not shown (`null`): nobody
//! drives the lane, so nobody knows.

use axum::body::Body;
use axum::extract::{RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde::Serialize;
use serde_json::Value;

use super::{ApiError, AppState, Routes, json_body};
use crate::admin_api::{
    self, DeadLetterQuery, DeadLettersResponse, DropRequest, DropResponse, IncidentCursor,
    IncidentQuery, IncidentsResponse, Lane, LaneBudget, LaneLease, LanesResponse, LeasesResponse,
    ListedDeadLetter, ListedIncident, ListedLease, PendingEvent, QueueQuery, QueueResponse,
    Refused, ReplayRequest, ReplayResponse, Superseded,
};
use crate::internal_events::{InternalEvent, StorageFailed, StorageOperation};
use crate::store::{BudgetId, DeadLetter, IncidentState, LeaseName, QueuedEvent, StoreError};

/// The admin routes; [`super::router`] puts them behind [`require_admin_token`].
pub(super) fn routes() -> Routes {
    Routes::new()
        .get(admin_api::LANES, lanes)
        .get(admin_api::LEASES, leases)
        .get(admin_api::QUEUE, queue)
        .get(admin_api::DEAD_LETTERS, dead_letters)
        .get(admin_api::INCIDENTS, incidents)
        .post(admin_api::REPLAY, replay)
        .post(admin_api::DROP, drop_dead)
}

pub(super) async fn require_admin_token(
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

impl From<Refused> for ApiError {
    fn from(refused: Refused) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, refused.error, refused.detail)
    }
}

/// An answer as JSON. It goes through `Value` so that keys come out sorted, as they always
/// have, whatever the order of the fields in [`crate::admin_api`].
fn answer(body: &impl Serialize) -> Response {
    match serde_json::to_value(body) {
        Ok(value) => axum::Json(value).into_response(),
        Err(error) => {
            tracing::error!(%error, "admin answer could not be serialized");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Counts and logs a storage failure, and answers 503.
fn storage_failed(state: &AppState) -> impl FnOnce(StoreError) -> ApiError + '_ {
    |error| {
        StorageFailed {
            operation: StorageOperation::Admin,
            what: "admin request",
            target: None,
            error: &error,
        }
        .emit(&state.metrics);
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            "storage did not answer; nothing was changed, retry later",
        )
    }
}

/// A lane with nothing queued and nothing dead, until the store says otherwise.
fn idle_lane(target: &str, configured: bool) -> Lane {
    Lane {
        target: target.to_owned(),
        configured,
        pending: 0,
        dead: 0,
        oldest_pending_accepted_at: None,
        oldest_pending_age_seconds: None,
        lease: None,
        state: None,
        budget: None,
    }
}

async fn lanes(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    admin_api::parse_lanes_query(raw.as_deref())?;
    let stats = state
        .store
        .lane_stats()
        .await
        .map_err(storage_failed(&state))?;
    let now = Timestamp::now();
    let targets = state.pipeline.planner().targets();
    let configured: Vec<&str> = targets.targets().iter().map(|t| t.name.as_str()).collect();
    let mut lanes: Vec<Lane> = configured
        .iter()
        .map(|name| idle_lane(name, true))
        .collect();
    for stat in stats {
        let lane = match lanes.iter_mut().find(|l| l.target == stat.target) {
            Some(lane) => lane,
            None => {
                lanes.push(idle_lane(&stat.target, false));
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
    let leases = state.store.leases().await.map_err(storage_failed(&state))?;
    for lane in &mut lanes {
        let name = LeaseName::lane(&lane.target);
        let lease = leases.iter().find(|l| l.name == name);
        lane.lease = lease.map(|l| LaneLease {
            owner: l.owner.to_string(),
            epoch: l.epoch,
            expires_at: l.expires_at,
        });
        lane.state = lease
            .filter(|l| l.expires_at > now)
            .and_then(|l| l.lane_state);
        lane.budget = budget_use(&state, &lane.target, now).await?;
    }
    Ok(answer(&LanesResponse { lanes }))
}

/// The use of `target`'s routing key's budget, counted with the target's limit and window as
/// its lane counts them; `None` for a target without a key (gone, or its key unreadable).
async fn budget_use(
    state: &AppState,
    target: &str,
    now: Timestamp,
) -> Result<Option<LaneBudget>, ApiError> {
    let (Some(key), Some(budget)) = (state.keys.get(target), state.keys.budget(target)) else {
        return Ok(None);
    };
    let used = state
        .store
        .budget_used(
            &BudgetId::new(&key, &state.budget_secret),
            budget.window,
            now,
        )
        .await
        .map_err(storage_failed(state))?;
    Ok(Some(LaneBudget {
        used,
        limit: budget.requests,
        window_seconds: budget.window.as_secs_f64(),
    }))
}

async fn leases(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    admin_api::parse_leases_query(raw.as_deref())?;
    let leases = state.store.leases().await.map_err(storage_failed(&state))?;
    Ok(answer(&LeasesResponse {
        leases: leases
            .into_iter()
            .map(|l| ListedLease {
                name: l.name.to_string(),
                owner: l.owner.to_string(),
                epoch: l.epoch,
                expires_at: l.expires_at,
            })
            .collect(),
    }))
}

fn pending(event: &QueuedEvent) -> PendingEvent {
    PendingEvent {
        id: event.id,
        target: event.target.clone(),
        dedup_key: event.dedup_key.clone(),
        action: event.action,
        severity: event.severity,
        summary: summary(&event.event),
        accepted_at: event.accepted_at,
        attempts: event.attempts,
        last_error: event.last_error.clone(),
    }
}

async fn queue(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let query = QueueQuery::parse(raw.as_deref())?;
    let events = state
        .store
        .pending(query.target.as_deref(), query.limit)
        .await
        .map_err(storage_failed(&state))?;
    Ok(answer(&QueueResponse {
        events: events.iter().map(pending).collect(),
    }))
}

/// Where the next page starts (`cursor` of the last row), when this one is full; `None` at
/// the end.
fn next_page<T, C>(page: &[T], limit: u32, cursor: impl Fn(&T) -> C) -> Option<C> {
    if page.len() == limit as usize {
        page.last().map(cursor)
    } else {
        None
    }
}

/// A dead letter as listed, its event stripped of any `routing_key` field.
fn listed(dead: &DeadLetter) -> ListedDeadLetter {
    let mut event = dead.event.clone();
    if let Some(object) = event.as_object_mut() {
        object.remove("routing_key");
    }
    ListedDeadLetter {
        id: dead.id,
        target: dead.target.clone(),
        dedup_key: dead.dedup_key.clone(),
        action: dead.action,
        summary: summary(&dead.event),
        accepted_at: dead.accepted_at,
        dead_at: dead.dead_at,
        reason: dead.reason.to_string(),
        attempts: dead.attempts,
        superseded_by: dead.superseded_by,
        dropped_at: dead.dropped_at,
        drop_reason: dead.drop_reason.clone(),
        event,
    }
}

/// The summary of an alert event (`payload.summary`) or a change event (`summary`, or its
/// `payload.summary`).
fn summary(event: &Value) -> Option<String> {
    event
        .pointer("/payload/summary")
        .or_else(|| event.get("summary"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

async fn dead_letters(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let query = DeadLetterQuery::parse(raw.as_deref())?;
    let found = state
        .store
        .find_dead_letters(
            &query.filter(),
            query.include_dropped,
            query.after_id,
            query.limit,
        )
        .await
        .map_err(storage_failed(&state))?;
    let next_after_id = next_page(&found, query.limit, |d| d.id);
    Ok(answer(&DeadLettersResponse {
        dead_letters: found.iter().map(listed).collect(),
        next_after_id,
    }))
}

fn listed_incident(incident: IncidentState) -> ListedIncident {
    ListedIncident {
        dedup_key: incident.dedup_key,
        target: incident.target,
        state: incident.status,
        fingerprint: incident.fingerprint,
        source: incident.source,
        first_event_at: incident.first_event_at,
        last_event_at: incident.updated_at,
        last_sent_at: incident.last_sent_at,
    }
}

async fn incidents(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let query = IncidentQuery::parse(raw.as_deref())?;
    let found = state
        .store
        .list_incidents(&query.filter())
        .await
        .map_err(storage_failed(&state))?;
    let next = next_page(&found, query.limit, |i| IncidentCursor {
        target: i.target.clone(),
        dedup_key: i.dedup_key.clone(),
    });
    Ok(answer(&IncidentsResponse {
        incidents: found.into_iter().map(listed_incident).collect(),
        next,
    }))
}

async fn replay(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let ReplayRequest { filter } =
        ReplayRequest::from_json(&json_body(&state, &headers, body).await?)?;
    let report = state
        .store
        .replay(&filter, Timestamp::now())
        .await
        .map_err(storage_failed(&state))?;
    for target in &report.targets {
        state.waker.wake(target);
    }
    tracing::info!(
        replayed = report.replayed.len(),
        superseded = report.superseded.len(),
        filter = %serde_json::to_string(&filter).unwrap_or_default(),
        "dead letters replayed by an operator"
    );
    let superseded = report
        .superseded
        .iter()
        .map(|s| Superseded { id: s.id, by: s.by })
        .collect();
    Ok(answer(&ReplayResponse::new(report.replayed, superseded)))
}

async fn drop_dead(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let DropRequest { filter, reason } =
        DropRequest::from_json(&json_body(&state, &headers, body).await?)?;
    let dropped = state
        .store
        .drop_dead(&filter, &reason, Timestamp::now())
        .await
        .map_err(storage_failed(&state))?;
    tracing::warn!(
        dropped,
        reason = %reason,
        filter = %serde_json::to_string(&filter).unwrap_or_default(),
        "dead letters dropped by an operator"
    );
    Ok(answer(&DropResponse { dropped }))
}
