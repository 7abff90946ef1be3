//! An ingest endpoint answered: counted by endpoint and HTTP status, so that 5xx answers (the
//! sender must retry, nothing was accepted) can be alerted on.

use super::InternalEvent;
use crate::metrics::{IngestLabels, Metrics};

/// An ingest request was answered with `status`, whatever the answer (a 408 of the request
/// time limit included).
pub struct IngestAnswered<'a> {
    /// The route, as declared: `/api/v1/alertmanager/{target}`, never the target in the URL
    /// (an unknown name would make a new series per request).
    pub endpoint: &'a str,
    pub status: u16,
}

impl InternalEvent for IngestAnswered<'_> {
    fn emit(self, metrics: &Metrics) {
        // Debug: a 5xx is logged as an error where it is decided, a 4xx is the sender's.
        tracing::debug!(
            endpoint = self.endpoint,
            status = self.status,
            "ingest request answered"
        );
        metrics
            .ingest_requests
            .get_or_create(&IngestLabels {
                endpoint: self.endpoint.to_owned(),
                status: self.status.to_string(),
            })
            .inc();
    }
}
