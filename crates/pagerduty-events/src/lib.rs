//! A typed client for PagerDuty's Events API v2.
//!
//! This crate knows PagerDuty and nothing else: no alerts, no queues. It gives
//!
//! - event types that cannot hold a value PagerDuty would reject ([`values`], [`event`]):
//!   a [`RoutingKey`] whose `Debug` and `Display` are masked, a [`Summary`] that is never over
//!   1024 characters, a [`Severity`] enum, https-only [`Image`]s;
//! - request bodies kept within the 512,000-byte limit by shrinking `custom_details`
//!   ([`body`]);
//! - the transport rule as types, [`EndpointUrl`] and [`BaseUrl`]: https anywhere, plain http
//!   only to loopback ([`transport`]);
//! - a [`Client`] (https with TLS ≥ 1.2, plain http only to loopback) whose every answer is
//!   either [`Accepted`] or a classified [`SendError`] ([`client`], [`response`], [`error`]);
//! - a [`Backoff`] (exponential, capped, full jitter) and a [`RetryPolicy`] built on it
//!   ([`backoff`], [`retry`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use pagerduty_events::*;
//! let client = Client::builder().build()?;
//! let key = RoutingKey::new("0123456789abcdef0123456789abcdef")?;
//! let mut trigger = Trigger::new(
//!     Summary::truncating("Disk full on db-1")?,
//!     Source::new("db-1")?,
//!     Severity::Critical,
//! );
//! trigger.dedup_key = Some(DedupKey::new("disk-full/db-1")?);
//! let body = RequestBody::alert(&key, &AlertEvent::Trigger(trigger));
//! let outcome = client
//!     .send_with_retry(Endpoint::Enqueue, &key, body, &RetryPolicy::default())
//!     .await;
//! println!("{:?} after {} attempt(s)", outcome.result, outcome.attempts);
//! # Ok(()) }
//! ```

pub mod backoff;
pub mod body;
pub mod client;
pub mod error;
pub mod event;
pub mod response;
pub mod retry;
pub mod routing_key;
pub mod transport;
pub mod values;

pub use backoff::{Backoff, Jitter};
pub use body::{MAX_BODY_BYTES, RequestBody, masked_body};
pub use client::{
    Attempt, Client, ClientBuilder, ClientError, DEFAULT_USER_AGENT, EU_BASE_URL, Endpoint,
    US_BASE_URL,
};
pub use error::{EventError, SendError};
pub use event::{AlertEvent, ChangeEvent, ChangePayload, CustomDetails, Payload, Trigger};
pub use response::{Accepted, classify};
pub use retry::{Outcome, RetryPolicy};
pub use routing_key::RoutingKey;
pub use transport::{BaseUrl, EndpointUrl, UrlError};
pub use values::{DedupKey, EventTime, Image, Link, Severity, Source, Summary};
