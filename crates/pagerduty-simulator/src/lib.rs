//! A faithful stand-in for PagerDuty's Events API v2, for tests, demos and load tests, and
//! for `pagerbridge simulate`.
//!
//! It answers like PagerDuty, as documented
//! (<https://developer.pagerduty.com/docs/events-api-v2/overview/>) and as seen in error bodies
//! captured from the live API (noted below), and it can tell a test what PagerDuty would have
//! seen: every request and its answer, the alerts the events opened and changed, and counters.
//! Faults can be injected to exercise a client's retries.
//!
//! # Routes
//!
//! | Route | Answer |
//! |---|---|
//! | `POST /v2/enqueue` | alert events (trigger, acknowledge, resolve) |
//! | `POST /v2/change/enqueue` | change events |
//! | `GET /_simulator/events` | `[ReceivedRequest]`, oldest first |
//! | `GET /_simulator/alerts` | `[Alert]`, by id |
//! | `GET /_simulator/stats` | `Stats` |
//! | `GET /_simulator/faults` | `Faults` in force |
//! | `POST /_simulator/faults` | merges a `Faults` object; 200 with the faults in force, 400 for bad values or unknown fields |
//! | `POST /_simulator/reset` | clears log, alerts, stats, budgets; faults back to the `Config` |
//! | anything else | 404 `{"status":"Not Found","message":"No route for …","errors":[]}` |
//!
//! Every request but those to `/_simulator/*` is logged, whatever its answer.
//!
//! # How an event request is handled
//!
//! 1. latency (a sleep, outside any lock);
//! 2. an outage in force: 503 `{"status":"Service Unavailable","message":"Simulated outage","errors":[]}`;
//! 3. the forced-status queue, one entry per request: 429 in the throttle body below (with
//!    `Retry-After` if `retry_after_seconds` is set), 400 as an invalid event
//!    (`errors: ["Simulated invalid event"]`), others in the schema's `Error` shape with the
//!    message `Simulated failure`; a forced 202 means "no fault" and skips step 4;
//! 4. the fail-rate draw: 500 `{"status":"Internal Server Error","message":"Simulated failure","errors":[]}`;
//! 5. body over `max_body_bytes`: 413 `{"status":"Request Entity Too Large","message":"Event object is too large","errors":["Event payload exceeds 512000 bytes"]}`
//!    (PagerDuty documents 512 KB but not the status; 413 is our choice);
//! 6. body not a JSON object: 400 `{"status":"Unrecognized object","message":"Event object format is unrecognized","errors":["JSON parse error"]}`;
//! 7. the per-key budget: a body whose `routing_key` is a string (valid or not) is refused
//!    if that key already had `rate_limit` requests admitted within the last `rate_window`:
//!    429 `{"status":"throttle event","message":"Requests for this service are arriving too quickly.  Please retry later.","errors":["Too many events; retry later"]}`,
//!    not ingested and not counted in the window. Alert and change events share one budget;
//! 8. validation: 400 `{"status":"invalid event","message":"Event object is invalid","errors":[…]}`
//!    listing every problem, or for more than 50 links on a change event PagerDuty's other
//!    envelope `{"error":["links should have at most 50 item(s)"]}`;
//! 9. 202: `{"status":"success","message":"Event processed","dedup_key":"…"}` for alert
//!    events, `{"status":"success","message":"Change event processed"}` for change events.
//!
//! # Alerts
//!
//! Alerts are keyed by (routing key, dedup key). A trigger opens an alert unless one with
//! that key is open (triggered or acknowledged), in which case it updates its summary,
//! severity and source; an acknowledged alert stays acknowledged. Acknowledge and resolve
//! act on the open alert with the same routing key and dedup key, and are otherwise answered
//! 202 and dropped. A trigger after a resolve opens a new alert with a new id. A trigger
//! without a dedup key gets a generated UUID (32 hex digits). Change events open no alerts.
//!
//! # Validation messages
//!
//! Marked (PD) are PagerDuty's own wording, from error bodies captured from the live API
//! (typo included); the others follow its style, as PagerDuty does not publish them:
//!
//! - `'routing_key' is missing or blank`
//! - `Length of 'routing_key' is incorrect (should be 32 characters)` (PD)
//! - `'routing_key' cannot contain non-alphanumeric characters.` (PD)
//! - `'summary' is too long (maiximum is 1024 characters)` (characters, not bytes) (PD)
//! - `'payload.summary' is missing or blank`, `'payload.source' is missing or blank` (PD),
//!   `'payload.severity' is missing or blank` (PD)
//! - `'payload.severity' is invalid (must be one of: critical, error, warning, info)`
//! - `'event_action' is missing or blank`
//! - `'event_action' is invalid (must be one of: trigger, acknowledge, resolve)`
//! - `'dedup_key' is missing or blank` (acknowledge and resolve)
//! - `'dedup_key' is too long (maximum is 255 characters)`
//! - `'<field>' is invalid (must be a string)`, `… (must be an object)`, `… (must be an array)`,
//!   `'links[i]' is invalid (must be an object with a string 'href')`,
//!   `'images[i]' is invalid (must be an object with a string 'src')`
//!
//! `null` and whitespace-only strings count as missing. Image URLs and timestamps are not
//! checked beyond being strings, as PagerDuty's behaviour there is unconfirmed.
//!
//! # Locking
//!
//! All state sits behind one `std::sync::Mutex`, held only for synchronous work.

mod budget;
mod config;
mod faults;
mod http;
mod pipeline;
mod responses;
mod state;
mod validate;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use config::Config;
pub use faults::Faults;
pub use state::{Alert, AlertHistoryEntry, AlertState, ReceivedRequest, Stats};

use budget::Budget;
use faults::FaultState;
use state::State;

/// A simulated PagerDuty Events API. Clones share the same state.
#[derive(Clone)]
pub struct Simulator {
    shared: Arc<Shared>,
}

struct Shared {
    config: Config,
    inner: Mutex<Inner>,
}

/// Everything a request may change, kept together so one request's effects are atomic.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) faults: FaultState,
    pub(crate) budget: Budget,
    pub(crate) state: State,
}

impl Inner {
    fn new(config: &Config) -> Self {
        Self {
            faults: FaultState::from_config(config),
            budget: Budget::default(),
            state: State::default(),
        }
    }
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl Simulator {
    pub fn new(config: Config) -> Self {
        let inner = Mutex::new(Inner::new(&config));
        Self {
            shared: Arc::new(Shared { config, inner }),
        }
    }

    /// All routes, ready to serve.
    pub fn router(&self) -> axum::Router {
        http::router(self.clone())
    }

    /// The request log, oldest first (`GET /_simulator/events`).
    pub fn events(&self) -> Vec<ReceivedRequest> {
        self.lock().state.events()
    }

    /// All alerts, open and resolved, by id (`GET /_simulator/alerts`).
    pub fn alerts(&self) -> Vec<Alert> {
        self.lock().state.alerts()
    }

    /// Counters (`GET /_simulator/stats`).
    pub fn stats(&self) -> Stats {
        self.lock().state.stats()
    }

    /// The faults in force (`GET /_simulator/faults`).
    pub fn faults(&self) -> Faults {
        self.lock().faults.snapshot(Instant::now())
    }

    /// Merges the given fields into the faults in force (`POST /_simulator/faults`).
    /// A `fail_rate` outside 0.0..=1.0 is clamped and forced statuses outside 200..=599
    /// are dropped; the HTTP route refuses them instead.
    pub fn set_faults(&self, faults: Faults) {
        self.lock().faults.merge(&faults, Instant::now());
    }

    /// Clears the log, alerts, stats and budgets, and puts the faults back to the `Config`'s
    /// (`POST /_simulator/reset`).
    pub fn reset(&self) {
        *self.lock() = Inner::new(&self.shared.config);
    }

    pub(crate) fn config(&self) -> &Config {
        &self.shared.config
    }

    /// A panic elsewhere cannot leave the state half-changed in a way that matters to a
    /// simulator, so a poisoned lock is used as is.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.shared
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Serves `sim` on `listener` until `shutdown` resolves.
pub async fn serve(
    sim: Simulator,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, sim.router())
        .with_graceful_shutdown(shutdown)
        .await
}

/// A simulator serving on loopback in a background task, for tests. Dropping it stops the
/// server.
#[derive(Debug)]
pub struct SpawnedSimulator {
    pub addr: SocketAddr,
    pub sim: Simulator,
    task: JoinHandle<std::io::Result<()>>,
}

impl SpawnedSimulator {
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for SpawnedSimulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `127.0.0.1:0` and serves a new simulator there in a background task.
pub async fn spawn_on_loopback(config: Config) -> std::io::Result<SpawnedSimulator> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    let sim = Simulator::new(config);
    let task = tokio::spawn(serve(sim.clone(), listener, std::future::pending()));
    Ok(SpawnedSimulator { addr, sim, task })
}

/// The current time as RFC 3339, as every timestamp the simulator reports.
pub(crate) fn now() -> String {
    jiff::Timestamp::now().to_string()
}
