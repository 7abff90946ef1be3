//! The Alertmanager sync queued an acknowledge or resolve for an incident, or could not read
//! an Alertmanager.

use pagerduty_events::BaseUrl;

use super::InternalEvent;
use crate::alertmanager_sync::Cause;
use crate::metrics::{ActionLabels, Metrics, MutedLabels};
use crate::store::Action;

/// An acknowledge or resolve was queued for an incident because of what Alertmanager says of
/// its alert: `pagerbridge_reconciled_total{target,action}` for a lost resolve,
/// `pagerbridge_alertmanager_muted_actions_total{target,cause,action}` for a silence or an
/// inhibition. Logged at INFO with the dedup key, so an operator can find the incident.
pub struct IncidentSynced<'a> {
    pub target: &'a str,
    pub dedup_key: &'a str,
    pub cause: Cause,
    pub action: Action,
}

impl InternalEvent for IncidentSynced<'_> {
    fn emit(self, metrics: &Metrics) {
        let action = self.action.as_str();
        match self.cause {
            Cause::Reconciled => {
                tracing::info!(
                    target_name = %self.target,
                    dedup_key = %self.dedup_key,
                    action,
                    "incident reconciled: no Alertmanager holds its alert any more (its resolve was lost)"
                );
                metrics
                    .reconciled
                    .get_or_create(&ActionLabels {
                        target: self.target.to_owned(),
                        action: action.to_owned(),
                    })
                    .inc();
            }
            Cause::Silenced | Cause::Inhibited => {
                let cause = self.cause.as_str();
                tracing::info!(
                    target_name = %self.target,
                    dedup_key = %self.dedup_key,
                    action,
                    cause,
                    "incident {action}d by policy: its alert is {cause} in Alertmanager"
                );
                metrics
                    .muted_actions
                    .get_or_create(&MutedLabels {
                        target: self.target.to_owned(),
                        cause: cause.to_owned(),
                        action: action.to_owned(),
                    })
                    .inc();
            }
        }
    }
}

/// One Alertmanager did not answer a poll in full. Counted with the poll
/// (`pagerbridge_silence_watcher_polls_total{result="error"}`); while it lasts, nothing is
/// reconciled.
pub struct AlertmanagerUnreadable<'a> {
    pub url: &'a BaseUrl,
    pub error: &'a anyhow::Error,
}

impl InternalEvent for AlertmanagerUnreadable<'_> {
    fn emit(self, _metrics: &Metrics) {
        tracing::warn!(
            alertmanager = %self.url,
            error = format!("{:#}", self.error),
            "Alertmanager sync: cannot read this Alertmanager; nothing is reconciled until it answers"
        );
    }
}
