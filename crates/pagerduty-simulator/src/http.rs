//! The HTTP face of the simulator: PagerDuty's two event routes, the `/_simulator/*`
//! inspection and control routes, and a JSON 404 for everything else.

use std::future::poll_fn;
use std::pin::Pin;
use std::time::Instant;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::Simulator;
use crate::faults::Faults;
use crate::pipeline::{self, Endpoint, Received};
use crate::responses::Reply;
use crate::state::RequestMeta;

/// Bodies over the limit are still read (and thrown away) up to this many bytes, or four
/// times the limit if that is more, so the client finishes sending and sees our 413 rather
/// than a reset connection.
const DRAIN_AT_LEAST: usize = 2 * 1024 * 1024;

pub(crate) fn router(sim: Simulator) -> Router {
    Router::new()
        .route("/v2/enqueue", post(enqueue_alert))
        .route("/v2/change/enqueue", post(enqueue_change))
        .route("/_simulator/events", get(events))
        .route("/_simulator/alerts", get(alerts))
        .route("/_simulator/stats", get(stats))
        .route("/_simulator/faults", get(faults).post(set_faults))
        .route("/_simulator/reset", post(reset))
        .fallback(not_found)
        .method_not_allowed_fallback(not_found)
        .with_state(sim)
}

async fn enqueue_alert(State(sim): State<Simulator>, request: Request) -> Response {
    handle_event(sim, Endpoint::Alert, request).await
}

async fn enqueue_change(State(sim): State<Simulator>, request: Request) -> Response {
    handle_event(sim, Endpoint::Change, request).await
}

async fn handle_event(sim: Simulator, endpoint: Endpoint, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let meta = request_meta(&parts);
    let body = read_body(body, sim.config().max_body_bytes).await;

    let latency = sim.lock().faults.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }

    let (method, path) = (meta.method.clone(), meta.path.clone());
    let reply = {
        let mut inner = sim.lock();
        let seq = inner.state.next_seq();
        let reply = pipeline::handle(
            &mut inner,
            sim.config(),
            endpoint,
            &body,
            seq,
            Instant::now(),
        );
        inner.state.record(seq, meta, body.into_log_value(), &reply);
        reply
    };
    // The routing key is a secret: never log it, nor the body that carries it.
    tracing::debug!(%method, %path, status = reply.status.as_u16(), "simulator answered");
    reply.into_response()
}

/// Any other path or method. Logged like an event request, unless it is a mistyped
/// `/_simulator/` route, which would only clutter the log a test asserts on.
async fn not_found(State(sim): State<Simulator>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let meta = request_meta(&parts);
    let reply = Reply::not_found(&meta.method, &meta.path);
    let path = redacted(&meta.path);
    tracing::debug!(method = %meta.method, %path, status = 404, "simulator answered");
    if !meta.path.starts_with("/_simulator") {
        let body = read_body(body, sim.config().max_body_bytes).await;
        let mut inner = sim.lock();
        let seq = inner.state.next_seq();
        inner.state.record(seq, meta, body.into_log_value(), &reply);
    }
    reply.into_response()
}

async fn events(State(sim): State<Simulator>) -> Response {
    Json(sim.events()).into_response()
}

async fn alerts(State(sim): State<Simulator>) -> Response {
    Json(sim.alerts()).into_response()
}

async fn stats(State(sim): State<Simulator>) -> Response {
    Json(sim.stats()).into_response()
}

async fn faults(State(sim): State<Simulator>) -> Response {
    Json(sim.faults()).into_response()
}

/// Unlike [`Simulator::set_faults`], refuses values it cannot use, so a typo in a script
/// shows up as a 400 instead of silently doing something else.
async fn set_faults(State(sim): State<Simulator>, body: Bytes) -> Response {
    let change: Faults = match serde_json::from_slice(&body) {
        Ok(change) => change,
        Err(error) => return invalid_faults(vec![error.to_string()]),
    };
    let problems = change.problems();
    if !problems.is_empty() {
        return invalid_faults(problems);
    }
    sim.set_faults(change);
    Json(sim.faults()).into_response()
}

fn invalid_faults(errors: Vec<String>) -> Response {
    let body = json!({
        "status": "invalid faults",
        "message": "Faults object is invalid",
        "errors": errors,
    });
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

async fn reset(State(sim): State<Simulator>) -> Response {
    sim.reset();
    Json(json!({ "status": "reset" })).into_response()
}

/// Some PagerDuty URLs carry an integration key (`/integration/<key>/enqueue`); a client
/// sending one here must not have its key end up in our logs.
fn redacted(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            let key_like =
                segment.len() == 32 && segment.chars().all(|c| c.is_ascii_alphanumeric());
            if key_like { "<redacted>" } else { segment }
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn request_meta(parts: &Parts) -> RequestMeta {
    let text = |name: HeaderName| {
        parts
            .headers
            .get(name)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
    };
    RequestMeta {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        received_at: crate::now(),
        user_agent: text(header::USER_AGENT),
        content_type: text(header::CONTENT_TYPE),
    }
}

/// Reads the body ourselves rather than through axum's extractors, whose own limit would
/// answer some oversize bodies first, in a shape PagerDuty never uses.
async fn read_body(mut body: Body, max_body_bytes: usize) -> Received {
    let drain_limit = max_body_bytes.saturating_mul(4).max(DRAIN_AT_LEAST);
    let mut kept = Vec::new();
    let mut seen = 0_usize;
    while let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let data = match frame {
            Ok(frame) => match frame.into_data() {
                Ok(data) => data,
                // Trailers carry no body bytes.
                Err(_) => continue,
            },
            Err(error) => return Received::Unreadable(error.to_string()),
        };
        seen = seen.saturating_add(data.len());
        if seen <= max_body_bytes {
            kept.extend_from_slice(&data);
        } else if !kept.is_empty() {
            kept = Vec::new();
        }
        if seen > drain_limit {
            break;
        }
    }
    if seen > max_body_bytes {
        Received::TooLarge { bytes: seen }
    } else {
        Received::parse(&kept)
    }
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn key_like_path_segments_are_redacted() {
        let key = "a1".repeat(16);
        assert_eq!(
            redacted(&format!("/integration/{key}/enqueue")),
            "/integration/<redacted>/enqueue"
        );
        assert_eq!(redacted("/v2/events"), "/v2/events");
    }
}
