//! The one thing a lane asks of PagerDuty: send this body, tell me what came of it.
//!
//! Behind a trait so the lane's outcome table can be tested against scripted answers, without
//! a network; [`pagerduty_events::Client`] is the real one.

use async_trait::async_trait;
use pagerduty_events::{Attempt, Client, Endpoint, RequestBody, RoutingKey};

/// Sends one prepared request; never retries (retrying is the lane's decision).
#[async_trait]
pub trait PagerDutyService: Send + Sync + 'static {
    async fn send(&self, endpoint: Endpoint, key: &RoutingKey, body: RequestBody) -> Attempt;
}

#[async_trait]
impl PagerDutyService for Client {
    async fn send(&self, endpoint: Endpoint, key: &RoutingKey, body: RequestBody) -> Attempt {
        self.send_body(endpoint, key, body).await
    }
}
