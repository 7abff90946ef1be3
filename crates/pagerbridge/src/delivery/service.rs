//! The one thing a lane asks of PagerDuty: send this body, tell me what came of it.
//!
//! Behind a trait so the lane's outcome table can be tested against scripted answers, without
//! a network; [`pagerduty_events::Client`] is the real one.

use async_trait::async_trait;
use pagerduty_events::{Attempt, BaseUrl, Client, Endpoint, RequestBody, RoutingKey};

/// Sends one prepared request; never retries (retrying is the lane's decision).
#[async_trait]
pub trait PagerDutyService: Send + Sync + 'static {
    /// `base` is the target's own PagerDuty URL; `None` sends to the service's default
    /// (`pagerduty.url`).
    async fn send(
        &self,
        base: Option<&BaseUrl>,
        endpoint: Endpoint,
        key: &RoutingKey,
        body: RequestBody,
    ) -> Attempt;
}

#[async_trait]
impl PagerDutyService for Client {
    async fn send(
        &self,
        base: Option<&BaseUrl>,
        endpoint: Endpoint,
        key: &RoutingKey,
        body: RequestBody,
    ) -> Attempt {
        match base {
            // Shares this client's connection pool, so nothing is worth caching per URL.
            Some(base) => {
                self.with_base_url(base)
                    .send_body(endpoint, key, body)
                    .await
            }
            None => self.send_body(endpoint, key, body).await,
        }
    }
}
