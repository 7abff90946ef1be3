//! Targets discovered from Kubernetes Secrets: taken, removed, skipped, and the watch failing.
//!
//! Secrets are named `namespace/name`; their keys never appear here.

use super::InternalEvent;
use crate::metrics::{Metrics, ReasonLabel};
use crate::targets::Change;

/// A Secret's target was added or changed (a rotated key, new options).
pub struct SecretTargetApplied<'a> {
    pub secret: &'a str,
    pub target: &'a str,
    pub change: Change,
}

impl InternalEvent for SecretTargetApplied<'_> {
    fn emit(self, _metrics: &Metrics) {
        // `pagerbridge_targets` is counted from the targets at each scrape.
        match self.change {
            Change::Added => {
                tracing::info!(
                    secret = self.secret,
                    target_name = self.target,
                    "target added from Kubernetes Secret"
                )
            }
            Change::Updated => {
                tracing::info!(
                    secret = self.secret,
                    target_name = self.target,
                    "target updated from Kubernetes Secret"
                )
            }
            Change::Unchanged => {
                tracing::debug!(
                    secret = self.secret,
                    target_name = self.target,
                    "Kubernetes Secret unchanged"
                )
            }
        }
    }
}

/// A Secret's target is gone: the Secret was deleted, disabled or no longer matches. Its
/// queued events stay queued; its lane shows misconfigured until a target of that name
/// returns.
pub struct SecretTargetRemoved<'a> {
    pub secret: &'a str,
    pub target: &'a str,
    pub why: &'static str,
}

impl InternalEvent for SecretTargetRemoved<'_> {
    fn emit(self, _metrics: &Metrics) {
        tracing::warn!(
            secret = self.secret,
            target_name = self.target,
            why = self.why,
            "target removed; new alerts naming it get 404, its queued events wait"
        );
    }
}

/// Why a Secret was not taken: the `reason` label of
/// `pagerbridge_kubernetes_secrets_skipped_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// Its `config` is missing or wrong.
    Invalid,
    /// Its target name is a file target's, or another Secret's.
    NameClash,
}

impl SkipReason {
    pub const ALL: [SkipReason; 2] = [SkipReason::Invalid, SkipReason::NameClash];

    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Invalid => "invalid",
            SkipReason::NameClash => "name_clash",
        }
    }
}

/// A Secret was skipped. `kept` names the target its previous, valid version gave, which
/// stays in force.
pub struct SecretSkipped<'a> {
    pub secret: &'a str,
    pub reason: SkipReason,
    pub error: &'a str,
    pub kept: Option<&'a str>,
}

impl InternalEvent for SecretSkipped<'_> {
    fn emit(self, metrics: &Metrics) {
        match self.kept {
            Some(target) => tracing::warn!(
                secret = self.secret,
                reason = self.reason.as_str(),
                target_name = target,
                "Kubernetes Secret skipped, keeping its previous version of the target: {}",
                self.error
            ),
            None => tracing::warn!(
                secret = self.secret,
                reason = self.reason.as_str(),
                "Kubernetes Secret skipped: {}",
                self.error
            ),
        }
        metrics
            .secrets_skipped
            .get_or_create(&ReasonLabel {
                reason: self.reason.as_str().to_owned(),
            })
            .inc();
    }
}

/// The watch on Secrets failed (API server down, 410 Gone, a dropped connection…); it is
/// retried with backoff, and the targets stay as they were meanwhile.
pub struct SecretWatchFailed<'a> {
    pub error: &'a str,
}

impl InternalEvent for SecretWatchFailed<'_> {
    fn emit(self, metrics: &Metrics) {
        tracing::warn!(
            error = self.error,
            "watching Kubernetes Secrets failed; retrying, targets unchanged meanwhile"
        );
        metrics.secrets_watch_errors.inc();
    }
}
