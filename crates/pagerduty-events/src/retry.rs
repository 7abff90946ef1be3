//! Retrying: a bounded number of attempts with [`Backoff`]'s delays, `Retry-After` honoured,
//! 400 never retried.
//!
//! The policy only decides *whether* and *how long* to wait; the client does the sending. A
//! durable queue (the bridge) uses [`RetryPolicy::next_delay`] to schedule a later attempt; a
//! one-shot caller (the `send` command) uses [`Client::send_with_retry`], which waits in place.

use std::time::Duration;

use crate::backoff::{Backoff, cap, full_jitter};
use crate::body::RequestBody;
use crate::client::{Client, Endpoint};
use crate::error::SendError;
use crate::response::Accepted;
use crate::routing_key::RoutingKey;

/// How many times to try and how long to wait between tries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (the requirements ask for 3).
    pub max_attempts: u32,
    /// The cap of the first backoff; each later cap doubles.
    pub base_delay: Duration,
    /// No backoff is longer than this. A `Retry-After` longer than this ends the retries,
    /// since retrying sooner than PagerDuty asked would only be refused again.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The pause after `failures` failed attempts: full jitter below
    /// [`RetryPolicy::backoff_cap`] (see [`Backoff`]).
    pub fn backoff(&self, failures: u32) -> Duration {
        full_jitter(self.backoff_cap(failures))
    }

    /// The upper bound of [`RetryPolicy::backoff`] after `failures` failed attempts.
    pub fn backoff_cap(&self, failures: u32) -> Duration {
        cap(self.base_delay, self.max_delay, failures)
    }

    /// A fresh [`Backoff`] with this policy's delays, for callers that count failures
    /// themselves.
    pub fn to_backoff(&self) -> Backoff {
        Backoff::new(self.base_delay, self.max_delay)
    }

    /// How long to wait after attempt number `attempt` (1-based) failed with `error`, or
    /// `None` to give up.
    pub fn next_delay(&self, attempt: u32, error: &SendError) -> Option<Duration> {
        if !error.is_retryable() || attempt >= self.max_attempts {
            return None;
        }
        match error.retry_after() {
            Some(asked) if asked > self.max_delay => None,
            Some(asked) => Some(asked),
            None => Some(self.backoff(attempt)),
        }
    }
}

/// The end of a retried send.
#[derive(Debug)]
pub struct Outcome {
    pub result: Result<Accepted, SendError>,
    /// Requests made, the first included.
    pub attempts: u32,
}

impl Client {
    /// Sends `body` until it is accepted, refused for good, or `policy` gives up.
    pub async fn send_with_retry(
        &self,
        endpoint: Endpoint,
        key: &RoutingKey,
        body: RequestBody,
        policy: &RetryPolicy,
    ) -> Outcome {
        let mut attempt = 1;
        loop {
            let result = self.send_body(endpoint, key, body.clone()).await.result;
            let error = match result {
                Ok(accepted) => {
                    return Outcome {
                        result: Ok(accepted),
                        attempts: attempt,
                    };
                }
                Err(error) => error,
            };
            let Some(delay) = policy.next_delay(attempt, &error) else {
                return Outcome {
                    result: Err(error),
                    attempts: attempt,
                };
            };
            tracing::warn!(
                attempt,
                max_attempts = policy.max_attempts,
                delay_ms = delay.as_millis() as u64,
                %error,
                "PagerDuty request failed; retrying"
            );
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        }
    }

    #[test]
    fn backoff_caps_double_and_stop_at_max() {
        let p = policy();
        assert_eq!(p.backoff_cap(1), Duration::from_millis(100));
        assert_eq!(p.backoff_cap(2), Duration::from_millis(200));
        assert_eq!(p.backoff_cap(4), Duration::from_millis(800));
        assert_eq!(p.backoff_cap(5), Duration::from_secs(1));
        assert_eq!(p.backoff_cap(1000), Duration::from_secs(1));
        for failures in 1..10 {
            assert!(p.backoff(failures) <= p.backoff_cap(failures));
        }
    }

    #[test]
    fn gives_up_on_permanent_errors_and_after_max_attempts() {
        let p = policy();
        let invalid = SendError::InvalidEvent {
            status: 400,
            message: String::new(),
            errors: vec![],
        };
        assert_eq!(p.next_delay(1, &invalid), None);
        let server = SendError::Server {
            status: 500,
            message: String::new(),
        };
        assert!(p.next_delay(1, &server).is_some());
        assert!(p.next_delay(2, &server).is_some());
        assert_eq!(p.next_delay(3, &server), None);
    }

    #[test]
    fn retry_after_is_honoured_exactly_or_ends_the_retries() {
        let p = policy();
        let asked = SendError::RateLimited {
            retry_after: Some(Duration::from_millis(700)),
        };
        assert_eq!(p.next_delay(1, &asked), Some(Duration::from_millis(700)));
        let too_long = SendError::RateLimited {
            retry_after: Some(Duration::from_secs(60)),
        };
        assert_eq!(p.next_delay(1, &too_long), None);
    }
}
