//! The Alertmanager sync's decisions, without I/O: given what every Alertmanager answered and
//! the open incidents that came from Alertmanager, which incidents to acknowledge or resolve,
//! and why. Each decision is taken against the incident's state as read; the store takes it
//! again inside the transaction that queues the event ([`crate::store::Condition`]), so a
//! resolve that commits meanwhile wins.

use std::collections::HashMap;
use std::time::Duration;

use jiff::Timestamp;

use super::api::View;
use crate::config::SyncAction;
use crate::store::IncidentState;
use crate::store::suppress::Status;

/// Why the sync acts on an incident.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cause {
    /// Its alert is silenced (the target's `on_silence`).
    Silenced,
    /// Its alert is inhibited (the target's `on_inhibit`).
    Inhibited,
    /// No Alertmanager holds its alert any more: its resolve was lost.
    Reconciled,
}

impl Cause {
    /// Also the `reason` in a resolve's `custom_details`.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Silenced => "silenced",
            Cause::Inhibited => "inhibited",
            Cause::Reconciled => "reconciled",
        }
    }
}

/// What to send for an incident.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    Acknowledge,
    Resolve,
}

/// One incident to act on.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub incident: IncidentState,
    pub act: Act,
    pub cause: Cause,
}

/// A target's policies; `None` for a target no longer configured (its silences and
/// inhibitions are left alone, its lost resolves still reconciled).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policies {
    pub on_silence: SyncAction,
    pub on_inhibit: SyncAction,
}

/// Why reconciliation is off for this poll, for the log; `None` when it may run.
pub fn reconcile_blocker(
    answers: &[Option<View>],
    grace: Option<Duration>,
    now: Timestamp,
) -> Option<&'static str> {
    let Some(grace) = grace else {
        return Some("reconciliation is disabled");
    };
    if answers.is_empty() {
        return Some("no Alertmanager is configured");
    }
    if answers.iter().any(Option::is_none) {
        return Some("not every Alertmanager answered in full");
    }
    let young = answers
        .iter()
        .flatten()
        .any(|view| !has_lasted(view.up_since, now, grace));
    young.then_some("an Alertmanager has been up for less than the grace period")
}

/// The decisions for one poll. `answers` has one entry per configured Alertmanager, `None`
/// where it did not answer in full; `incidents` are the open incidents from Alertmanager;
/// `grace` is `reconcile.grace`, `None` when reconciliation is disabled.
pub fn decide(
    answers: &[Option<View>],
    incidents: &[IncidentState],
    policies: impl Fn(&str) -> Option<Policies>,
    grace: Option<Duration>,
    now: Timestamp,
) -> Vec<Decision> {
    // What the Alertmanagers that answered say of each fingerprint. Peers of an HA set share
    // silences by gossip, so they agree but for a moment; any of them muting an alert is
    // enough.
    let mut held: HashMap<&str, (bool, bool)> = HashMap::new();
    for alert in answers.iter().flatten().flat_map(|view| &view.alerts) {
        let entry = held.entry(alert.fingerprint.as_str()).or_default();
        entry.0 |= alert.silenced;
        entry.1 |= alert.inhibited;
    }
    let reconcile = reconcile_blocker(answers, grace, now).is_none();
    incidents
        .iter()
        .filter_map(|incident| {
            let fingerprint = incident.fingerprint.as_deref()?;
            let (act, cause) = match held.get(fingerprint) {
                Some(&(silenced, inhibited)) => {
                    let policies = policies(&incident.target)?;
                    // A silence is an operator's explicit word; it wins over an inhibition.
                    let (policy, cause) = if silenced {
                        (policies.on_silence, Cause::Silenced)
                    } else if inhibited {
                        (policies.on_inhibit, Cause::Inhibited)
                    } else {
                        return None;
                    };
                    (act_for(policy, incident.status)?, cause)
                }
                None => {
                    let quiet = grace.is_some_and(|g| has_lasted(incident.updated_at, now, g));
                    if !(reconcile && quiet) {
                        return None;
                    }
                    (Act::Resolve, Cause::Reconciled)
                }
            };
            Some(Decision {
                incident: incident.clone(),
                act,
                cause,
            })
        })
        .collect()
}

/// The event a policy asks for an incident in `status`, if it would change anything: the
/// sync acts once per change, and the steady state (an incident acknowledged long ago,
/// polled again and again) sends nothing.
fn act_for(policy: SyncAction, status: Status) -> Option<Act> {
    match (policy, status) {
        (SyncAction::Acknowledge, Status::Triggered) => Some(Act::Acknowledge),
        (SyncAction::Resolve, Status::Triggered | Status::Acknowledged) => Some(Act::Resolve),
        _ => None,
    }
}

/// Whether `since` is at least `span` before `now`.
fn has_lasted(since: Timestamp, now: Timestamp, span: Duration) -> bool {
    jiff::SignedDuration::try_from(span).is_ok_and(|span| now.duration_since(since) >= span)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alertmanager_sync::api::HeldAlert;
    use crate::store::IncidentSource;

    const GRACE: Duration = Duration::from_secs(300);

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).expect("time")
    }

    fn incident(key: &str, target: &str, status: Status, last_event: i64) -> IncidentState {
        IncidentState {
            target: target.to_owned(),
            dedup_key: key.to_owned(),
            fingerprint: Some(format!("fp-{key}")),
            labels_key: false,
            status,
            last_payload_hash: None,
            last_trigger_at: Some(at(last_event)),
            last_sent_at: None,
            updated_at: at(last_event),
            source: Some(IncidentSource::Alertmanager),
            first_event_at: Some(at(last_event)),
            chain: 0,
        }
    }

    fn alert(key: &str, silenced: bool, inhibited: bool) -> HeldAlert {
        HeldAlert {
            fingerprint: format!("fp-{key}"),
            silenced,
            inhibited,
        }
    }

    fn view(alerts: Vec<HeldAlert>, up_since: i64) -> Option<View> {
        Some(View {
            alerts,
            up_since: at(up_since),
        })
    }

    fn policies(
        on_silence: SyncAction,
        on_inhibit: SyncAction,
    ) -> impl Fn(&str) -> Option<Policies> {
        move |target| {
            (target != "gone").then_some(Policies {
                on_silence,
                on_inhibit,
            })
        }
    }

    fn acts(decisions: &[Decision]) -> Vec<(&str, Act, Cause)> {
        decisions
            .iter()
            .map(|d| (d.incident.dedup_key.as_str(), d.act, d.cause))
            .collect()
    }

    #[test]
    fn silences_and_inhibitions_follow_each_policy_once_per_change() {
        let incidents = [
            incident("silenced", "t", Status::Triggered, 0),
            incident("silenced-acked", "t", Status::Acknowledged, 0),
            incident("inhibited", "t", Status::Triggered, 0),
            incident("both", "t", Status::Triggered, 0),
            incident("firing", "t", Status::Triggered, 0),
        ];
        let answers = [view(
            vec![
                alert("silenced", true, false),
                alert("silenced-acked", true, false),
                alert("inhibited", false, true),
                alert("both", true, true),
                alert("firing", false, false),
            ],
            -1000,
        )];
        let now = at(10);
        use SyncAction::{Acknowledge, None as Leave, Resolve};
        let decided = decide(
            &answers,
            &incidents,
            policies(Acknowledge, Leave),
            Some(GRACE),
            now,
        );
        assert_eq!(
            acts(&decided),
            [
                ("silenced", Act::Acknowledge, Cause::Silenced),
                ("both", Act::Acknowledge, Cause::Silenced),
            ],
            "an acknowledged incident is not acknowledged again"
        );
        let decided = decide(
            &answers,
            &incidents,
            policies(Resolve, Acknowledge),
            Some(GRACE),
            now,
        );
        assert_eq!(
            acts(&decided),
            [
                ("silenced", Act::Resolve, Cause::Silenced),
                ("silenced-acked", Act::Resolve, Cause::Silenced),
                ("inhibited", Act::Acknowledge, Cause::Inhibited),
                ("both", Act::Resolve, Cause::Silenced),
            ]
        );
        let decided = decide(
            &answers,
            &incidents,
            policies(Leave, Resolve),
            Some(GRACE),
            now,
        );
        assert_eq!(
            acts(&decided),
            [("inhibited", Act::Resolve, Cause::Inhibited)]
        );
        let decided = decide(
            &answers,
            &incidents,
            policies(Leave, Leave),
            Some(GRACE),
            now,
        );
        assert_eq!(acts(&decided), []);
    }

    #[test]
    fn a_target_no_longer_configured_keeps_its_silenced_incidents_as_they_are() {
        let incidents = [incident("k", "gone", Status::Triggered, 0)];
        let answers = [view(vec![alert("k", true, false)], -1000)];
        let decided = decide(
            &answers,
            &incidents,
            policies(SyncAction::Resolve, SyncAction::Resolve),
            Some(GRACE),
            at(10),
        );
        assert_eq!(acts(&decided), []);
    }

    #[test]
    fn a_lost_resolve_is_reconciled_after_grace_since_the_last_event() {
        let incidents = [
            incident("old", "t", Status::Triggered, 0),
            incident("old-acked", "gone", Status::Acknowledged, 0),
            incident("recent", "t", Status::Triggered, 100),
            incident("held", "t", Status::Triggered, 0),
        ];
        let answers = [view(vec![alert("held", false, false)], -1000)];
        let decided = decide(
            &answers,
            &incidents,
            policies(SyncAction::Acknowledge, SyncAction::None),
            Some(GRACE),
            at(300),
        );
        assert_eq!(
            acts(&decided),
            [
                ("old", Act::Resolve, Cause::Reconciled),
                ("old-acked", Act::Resolve, Cause::Reconciled),
            ]
        );
        // Exactly at the end of the grace counts; a moment before does not.
        let just_before = decide(
            &answers,
            &incidents[..1],
            policies(SyncAction::Acknowledge, SyncAction::None),
            Some(GRACE),
            at(299),
        );
        assert_eq!(acts(&just_before), []);
    }

    #[test]
    fn nothing_is_reconciled_unless_every_alertmanager_answered_and_has_been_up_long_enough() {
        let incidents = [incident("k", "t", Status::Triggered, 0)];
        let policies = policies(SyncAction::Acknowledge, SyncAction::None);
        let now = at(1000);
        let old = || view(Vec::new(), 0);
        type Case = (
            &'static str,
            Vec<Option<View>>,
            Option<Duration>,
            Option<&'static str>,
        );
        let cases: [Case; 5] = [
            ("both answered", vec![old(), old()], Some(GRACE), None),
            (
                "one down",
                vec![old(), None],
                Some(GRACE),
                Some("not every Alertmanager answered in full"),
            ),
            (
                "one restarted within grace",
                vec![old(), view(Vec::new(), 800)],
                Some(GRACE),
                Some("an Alertmanager has been up for less than the grace period"),
            ),
            (
                "disabled",
                vec![old()],
                None,
                Some("reconciliation is disabled"),
            ),
            (
                "none configured",
                vec![],
                Some(GRACE),
                Some("no Alertmanager is configured"),
            ),
        ];
        for (case, answers, grace, blocker) in cases {
            assert_eq!(reconcile_blocker(&answers, grace, now), blocker, "{case}");
            let decided = decide(&answers, &incidents, &policies, grace, now);
            assert_eq!(decided.len(), usize::from(blocker.is_none()), "{case}");
        }
    }

    #[test]
    fn an_ha_set_is_read_as_one_and_a_silence_on_any_peer_counts() {
        let incidents = [
            incident("on-a", "t", Status::Triggered, 0),
            incident("on-b", "t", Status::Triggered, 0),
        ];
        let answers = [
            view(
                vec![alert("on-a", false, false), alert("on-b", true, false)],
                0,
            ),
            view(vec![alert("on-b", false, false)], 0),
        ];
        let decided = decide(
            &answers,
            &incidents,
            policies(SyncAction::Acknowledge, SyncAction::None),
            Some(GRACE),
            at(1000),
        );
        assert_eq!(
            acts(&decided),
            [("on-b", Act::Acknowledge, Cause::Silenced)]
        );
    }

    #[test]
    fn incidents_without_a_fingerprint_are_never_touched() {
        let mut unknown = incident("k", "t", Status::Triggered, 0);
        unknown.fingerprint = None;
        let decided = decide(
            &[view(Vec::new(), 0)],
            &[unknown],
            policies(SyncAction::Acknowledge, SyncAction::None),
            Some(GRACE),
            at(1000),
        );
        assert_eq!(acts(&decided), []);
    }
}
