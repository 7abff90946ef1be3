//! The HTTP client: one attempt per call, every answer classified.
//!
//! HTTPS only, TLS 1.2 at least (rustls), except plain http to a loopback address so tests and
//! demos can use the simulator (the rule is [`crate::transport`]'s). Redirects are not followed: a redirect could carry the key to
//! another host or over plain http. Retrying is kept apart, in [`crate::retry`].

use std::time::{Duration, Instant};

use url::Url;

use crate::body::RequestBody;
use crate::error::SendError;
use crate::event::{AlertEvent, ChangeEvent};
use crate::response::{Accepted, classify};
use crate::routing_key::RoutingKey;
use crate::transport::{BaseUrl, UrlError};

/// PagerDuty's US endpoint, the default.
pub const US_BASE_URL: &str = "https://events.pagerduty.com";
/// PagerDuty's EU endpoint.
pub const EU_BASE_URL: &str = "https://events.eu.pagerduty.com";
/// The User-Agent the requirements ask for.
pub const DEFAULT_USER_AGENT: &str = "AlertHistory/1.0 (+github.com/ipiton/alert-history)";
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid PagerDuty URL: {0}")]
    BaseUrl(#[from] UrlError),
    #[error("could not set up the HTTP client: {0}")]
    Http(String),
}

/// Which Events API v2 endpoint a body goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v2/enqueue`: trigger, acknowledge, resolve.
    Enqueue,
    /// `POST /v2/change/enqueue`: change events.
    ChangeEnqueue,
}

impl Endpoint {
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Enqueue => "/v2/enqueue",
            Endpoint::ChangeEnqueue => "/v2/change/enqueue",
        }
    }
}

/// Settings for a [`Client`]; every field has a sane default.
#[derive(Clone, Debug)]
pub struct ClientBuilder {
    base_url: String,
    user_agent: String,
    timeout: Duration,
    connect_timeout: Duration,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        Self {
            base_url: US_BASE_URL.to_owned(),
            user_agent: DEFAULT_USER_AGENT.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }
}

impl ClientBuilder {
    /// Base URL without `/v2/…`, e.g. `https://events.eu.pagerduty.com`.
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into();
        self
    }

    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = user_agent.into();
        self
    }

    /// Whole-request timeout (connect, send, answer).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    pub fn build(self) -> Result<Client, ClientError> {
        let base = BaseUrl::parse(&self.base_url)?;
        let http = reqwest::Client::builder()
            .user_agent(self.user_agent)
            .timeout(self.timeout)
            .connect_timeout(self.connect_timeout)
            .tls_version_min(reqwest::tls::Version::TLS_1_2)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ClientError::Http(e.to_string()))?;
        Ok(Client {
            http,
            enqueue: base.join(Endpoint::Enqueue.path()),
            change_enqueue: base.join(Endpoint::ChangeEnqueue.path()),
            timeout: self.timeout,
        })
    }
}

/// A PagerDuty Events API v2 client. Cheap to clone; clones share one connection pool.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    enqueue: Url,
    change_enqueue: Url,
    timeout: Duration,
}

/// The outcome of one request and how long it took, for metrics.
#[derive(Debug)]
pub struct Attempt {
    pub result: Result<Accepted, SendError>,
    pub elapsed: Duration,
}

impl Client {
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// This client's settings and connection pool, sending under another base URL (e.g. the
    /// EU endpoint beside a US default). Cheap: the pool is shared, so connections to each
    /// host are reused whichever client made them.
    pub fn with_base_url(&self, base: &BaseUrl) -> Client {
        Client {
            http: self.http.clone(),
            enqueue: base.join(Endpoint::Enqueue.path()),
            change_enqueue: base.join(Endpoint::ChangeEnqueue.path()),
            timeout: self.timeout,
        }
    }

    /// The full URL of an endpoint.
    pub fn url(&self, endpoint: Endpoint) -> &Url {
        match endpoint {
            Endpoint::Enqueue => &self.enqueue,
            Endpoint::ChangeEnqueue => &self.change_enqueue,
        }
    }

    /// Sends one alert event, once.
    pub async fn send_alert(
        &self,
        key: &RoutingKey,
        event: &AlertEvent,
    ) -> Result<Accepted, SendError> {
        let body = RequestBody::alert(key, event);
        self.send_body(Endpoint::Enqueue, key, body).await.result
    }

    /// Sends one change event, once.
    pub async fn send_change(
        &self,
        key: &RoutingKey,
        event: &ChangeEvent,
    ) -> Result<Accepted, SendError> {
        let body = RequestBody::change(key, event);
        self.send_body(Endpoint::ChangeEnqueue, key, body)
            .await
            .result
    }

    /// Sends a prepared body once. `key` is the one inside the body; it is used to redact any
    /// echo of it from the answer.
    pub async fn send_body(
        &self,
        endpoint: Endpoint,
        key: &RoutingKey,
        body: RequestBody,
    ) -> Attempt {
        let started = Instant::now();
        let result = self
            .post(endpoint, body.into_bytes())
            .await
            .map_err(|e| redact(e, key));
        let elapsed = started.elapsed();
        match &result {
            Ok(accepted) => tracing::debug!(
                endpoint = endpoint.path(),
                dedup_key = accepted.dedup_key.as_deref().unwrap_or(""),
                elapsed_ms = elapsed.as_millis() as u64,
                "PagerDuty accepted the event"
            ),
            Err(error) => tracing::debug!(
                endpoint = endpoint.path(),
                %error,
                elapsed_ms = elapsed.as_millis() as u64,
                "PagerDuty request failed"
            ),
        }
        Attempt { result, elapsed }
    }

    async fn post(&self, endpoint: Endpoint, body: Vec<u8>) -> Result<Accepted, SendError> {
        let response = self
            .http
            .post(self.url(endpoint).clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| self.transport_error(&e))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(&e))?;
        classify(status, retry_after.as_deref(), &bytes)
    }

    fn transport_error(&self, error: &reqwest::Error) -> SendError {
        if error.is_timeout() {
            return SendError::Timeout(self.timeout);
        }
        // reqwest's own text is terse ("error sending request"); the cause chain says why.
        let mut text = error.to_string();
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        SendError::Network(text)
    }
}

fn redact(error: SendError, key: &RoutingKey) -> SendError {
    match error {
        SendError::InvalidEvent {
            status,
            message,
            errors,
        } => SendError::InvalidEvent {
            status,
            message: key.redact(&message),
            errors: errors.iter().map(|e| key.redact(e)).collect(),
        },
        SendError::Server { status, message } => SendError::Server {
            status,
            message: key.redact(&message),
        },
        SendError::UnexpectedStatus { status, body } => SendError::UnexpectedStatus {
            status,
            body: key.redact(&body),
        },
        SendError::Network(text) => SendError::Network(key.redact(&text)),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_base_url_sends_under_the_other_base() {
        let client = Client::builder().build().expect("default client");
        let eu = client.with_base_url(&BaseUrl::parse(EU_BASE_URL).expect("valid"));
        assert_eq!(
            eu.url(Endpoint::Enqueue).as_str(),
            "https://events.eu.pagerduty.com/v2/enqueue"
        );
        assert_eq!(
            eu.url(Endpoint::ChangeEnqueue).as_str(),
            "https://events.eu.pagerduty.com/v2/change/enqueue"
        );
        // The original is unchanged.
        assert_eq!(
            client.url(Endpoint::Enqueue).as_str(),
            "https://events.pagerduty.com/v2/enqueue"
        );
    }
}
