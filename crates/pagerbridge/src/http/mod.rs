//! The HTTP surface: ingest endpoints, health, readiness, metrics and the admin API
//! ([`admin`]).
//!
//! Every error is JSON `{"error": code, "detail": text}` with a 4xx that names the problem
//! (bad input is answered, not obeyed), or 503 when storage fails so senders retry. A 2xx is
//! sent only after the whole request is committed to storage. Every answer of an ingest
//! endpoint is counted by route and status (`pagerbridge_ingest_requests_total`).

mod admin;
mod auth;
pub mod server;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Path, State};
use axum::handler::Handler;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use serde_json::json;

pub use auth::Tokens;

use crate::alert::GroupContext;
use crate::delivery::{LaneWaker, RoutingKeys};
use crate::format::FormatNote;
use crate::ingest::{self, IngestError};
use crate::internal_events::{IngestAnswered, InternalEvent, StorageFailed, StorageOperation};
use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, PipelineError, Receipt};
use crate::store::{BudgetSecret, IncidentSource, Store};

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub pipeline: Arc<Pipeline>,
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    /// Bearer tokens for ingest; `None` leaves ingest open.
    pub ingest_tokens: Option<Arc<Tokens>>,
    pub max_body_bytes: usize,
    /// Bearer tokens for the admin API; `None` disables it (403), never leaves it open.
    pub admin_tokens: Option<Arc<Tokens>>,
    /// Wakes a target's lane, e.g. after an admin replay.
    pub waker: LaneWaker,
    /// The targets' keys and budgets, as lanes see them: the admin API shows each key's budget
    /// use (by [`crate::store::BudgetId`], never the key).
    pub keys: Arc<dyn RoutingKeys>,
    pub budget_secret: BudgetSecret,
}

/// The ingest routes, as declared: the `endpoint` label of `pagerbridge_ingest_requests_total`.
pub const INGEST_ROUTES: [&str; 4] = [
    "/api/v1/alertmanager",
    "/api/v1/alertmanager/{target}",
    "/api/v1/alerts",
    "/api/v1/change-events",
];

/// One route the server answers: a method and a path, as the router declares it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Route {
    pub method: Method,
    pub path: &'static str,
}

/// A router that records each route it is given. [`router`] is made only of these, so the list
/// of what the server answers ([`routes`]) comes from the very code that builds it: a route
/// added here is listed, and `tests/openapi.rs` then fails until `docs/openapi.yaml` has it.
pub(crate) struct Routes {
    router: Router<AppState>,
    table: Vec<Route>,
}

impl Routes {
    pub(crate) fn new() -> Self {
        Self {
            router: Router::new(),
            table: Vec::new(),
        }
    }

    pub(crate) fn get<H, T>(self, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add(Method::GET, path, get(handler))
    }

    pub(crate) fn post<H, T>(self, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add(Method::POST, path, post(handler))
    }

    fn add(mut self, method: Method, path: &'static str, handler: MethodRouter<AppState>) -> Self {
        self.table.push(Route { method, path });
        self.router = self.router.route(path, handler);
        self
    }
}

/// The ingest endpoints, before their layers.
fn ingest_routes() -> Routes {
    let [
        alertmanager_route,
        alertmanager_target_route,
        alerts_route,
        change_route,
    ] = INGEST_ROUTES;
    Routes::new()
        .post(alertmanager_route, alertmanager)
        .post(alertmanager_target_route, alertmanager_for_target)
        .post(alerts_route, native_alerts)
        .post(change_route, change_events)
}

/// Health, readiness and metrics: open, as probes and scrapers expect.
fn probe_routes() -> Routes {
    Routes::new()
        .get("/healthz", healthz)
        .get("/readyz", readyz)
        .get("/metrics", metrics)
}

/// Every route [`router`] answers (besides `HEAD` wherever `GET` is, which axum adds as HTTP
/// asks), in the order they are declared.
pub fn routes() -> Vec<Route> {
    [ingest_routes(), probe_routes(), admin::routes()]
        .into_iter()
        .flat_map(|routes| routes.table)
        .collect()
}

/// The whole HTTP API. Routes are added only through [`Routes`] (see [`routes`]).
pub fn router(state: AppState, request_timeout: Duration) -> Router {
    let time_limit = axum::middleware::from_fn_with_state(request_timeout, time_limit);
    for route in INGEST_ROUTES {
        state.metrics.init_ingest(route);
    }
    // Ingest's layers, innermost first: the token check, the time limit, then the count, so
    // that every answer is counted, a 401 or the time limit's 408 included.
    let ingest = ingest_routes()
        .router
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_ingest_token,
        ))
        .route_layer(time_limit.clone())
        .route_layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            count_ingest,
        ));
    let admin = admin::routes()
        .router
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            admin::require_admin_token,
        ));
    Router::new()
        .merge(admin)
        .merge(probe_routes().router)
        .fallback(not_found)
        // `layer` wraps the routes added so far only: ingest, merged next, has its own.
        .layer(time_limit)
        .merge(ingest)
        // It applies to the routes added so far: all of them.
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// Counts an ingest answer by its route (never the raw path: a target name in it is the
/// sender's to choose) and status.
async fn count_ingest(
    State(metrics): State<Arc<Metrics>>,
    route: MatchedPath,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let response = next.run(request).await;
    IngestAnswered {
        endpoint: route.as_str(),
        status: response.status().as_u16(),
    }
    .emit(&metrics);
    response
}

/// Answers 408 (as JSON, like every error) when a request, reading its body included, is not
/// done within `limit`: a client that stalls mid-body holds nothing for long.
async fn time_limit(
    State(limit): State<Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the request was not complete within {}; nothing was stored",
                humantime::format_duration(limit)
            ),
        )
        .into_response(),
    }
}

/// A JSON error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error: &'static str,
    detail: String,
}

impl ApiError {
    pub fn new(status: StatusCode, error: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            error,
            detail: detail.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.error, "detail": self.detail});
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<IngestError> for ApiError {
    fn from(error: IngestError) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, error.error(), error.detail())
    }
}

impl ApiError {
    /// The answer to a request the pipeline could not accept; a storage failure is counted.
    fn from_pipeline(error: PipelineError, metrics: &Metrics) -> Self {
        match error {
            PipelineError::UnknownTarget(name) => ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_target",
                format!(
                    "no target named {} is configured; nothing was stored",
                    ingest::quote(&name)
                ),
            ),
            PipelineError::NoTargets => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_targets",
                "no targets are configured",
            ),
            PipelineError::Store(error) => {
                StorageFailed {
                    operation: StorageOperation::Ingest,
                    what: "answering 503 so the sender retries",
                    target: None,
                    error: &error,
                }
                .emit(metrics);
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_unavailable",
                    "the event could not be stored; nothing was accepted, retry later",
                )
            }
        }
    }
}

/// Reads a JSON request body within the size limit.
async fn json_body(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "Content-Type must be application/json, not {}",
                ingest::quote(content_type)
            ),
        ));
    }
    // A body announced over the limit is refused before a byte of it is read.
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if announced.is_some_and(|length| length > state.max_body_bytes as u64) {
        return Err(body_too_large(state.max_body_bytes));
    }
    axum::body::to_bytes(body, state.max_body_bytes)
        .await
        .map_err(|error| {
            let too_large = std::error::Error::source(&error)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if too_large {
                body_too_large(state.max_body_bytes)
            } else {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "unreadable_body",
                    format!("the body could not be read: {error}"),
                )
            }
        })
}

fn body_too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("the body is over the limit of {limit} bytes"),
    )
}

fn accepted(receipt: Receipt) -> Response {
    (StatusCode::ACCEPTED, axum::Json(receipt)).into_response()
}

async fn alertmanager(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    ingest_alertmanager(state, None, headers, body).await
}

async fn alertmanager_for_target(
    State(state): State<AppState>,
    target: Result<Path<String>, axum::extract::rejection::PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // axum's own rejection (e.g. a name that is not UTF-8) would be plain text.
    let Path(target) = target.map_err(|rejection| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!(
                "the target in the path is not a valid name: {}",
                ingest::quote(&rejection.body_text())
            ),
        )
    })?;
    ingest_alertmanager(state, Some(target), headers, body).await
}

async fn ingest_alertmanager(
    state: AppState,
    target: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = json_body(&state, &headers, body).await?;
    let webhook = ingest::alertmanager::parse(&bytes)?;
    let receipt = state
        .pipeline
        .accept_alerts(
            IncidentSource::Alertmanager,
            webhook.alerts,
            &webhook.group,
            target.as_deref(),
        )
        .await
        .map_err(|error| ApiError::from_pipeline(error, &state.metrics))?;
    Ok(accepted(receipt))
}

async fn native_alerts(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = json_body(&state, &headers, body).await?;
    let request = ingest::native::parse(&bytes)?;
    let receipt = state
        .pipeline
        .accept_alerts(
            IncidentSource::Api,
            request.alerts,
            &GroupContext::default(),
            request.target.as_deref(),
        )
        .await
        .map_err(|error| ApiError::from_pipeline(error, &state.metrics))?;
    Ok(accepted(receipt))
}

async fn change_events(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = json_body(&state, &headers, body).await?;
    let request = ingest::change::parse(&bytes)?;
    let notes = if request.summary_truncated {
        vec![FormatNote::SummaryTruncated]
    } else {
        Vec::new()
    };
    let receipt = state
        .pipeline
        .accept_change(request.event, notes, request.target.as_deref())
        .await
        .map_err(|error| ApiError::from_pipeline(error, &state.metrics))?;
    Ok(accepted(receipt))
}

async fn healthz() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

async fn readyz(State(state): State<AppState>) -> Result<Response, ApiError> {
    state.store.ping().await.map_err(|error| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            error.to_string(),
        )
    })?;
    Ok(axum::Json(json!({"status": "ready"})).into_response())
}

async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let snapshot = state.pipeline.planner().targets();
    state.metrics.set_targets(&snapshot);
    let targets = snapshot.names();
    if let Err(error) = state
        .metrics
        .refresh_from_store(state.store.as_ref(), &targets, jiff::Timestamp::now())
        .await
    {
        StorageFailed {
            operation: StorageOperation::Metrics,
            what: "queue gauges not refreshed",
            target: None,
            error: &error,
        }
        .emit(&state.metrics);
    }
    let wants_openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("application/openmetrics-text"));
    if wants_openmetrics {
        (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            state.metrics.encode_openmetrics(),
        )
            .into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            state.metrics.encode_prometheus_text(),
        )
            .into_response()
    }
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method",
    )
}
