//! What Secrets mean for the targets: each watch event (a Secret applied or deleted, or a
//! whole re-list) becomes adds, changes and removals in [`Targets`], without Kubernetes types,
//! so that it is tested apart from the API.
//!
//! A Secret names its target in its `config`, so the Secret → target map is kept here: a
//! deleted Secret removes the target it gave, and a Secret whose target name changed removes
//! the old one. A Secret that turns invalid keeps the target its previous version gave (as a
//! key file that turns unreadable keeps the previous key): a typo must not stop paging.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::secret::{self, Defaults, Parsed};
use crate::internal_events::{
    InternalEvent, SecretSkipped, SecretTargetApplied, SecretTargetRemoved, SkipReason,
};
use crate::metrics::Metrics;
use crate::targets::{Targets, TargetsError};

/// Applies Secrets to the targets.
pub struct Discovery {
    targets: Targets,
    metrics: Arc<Metrics>,
    defaults: Defaults,
    /// Secret (`namespace/name`) → the target it gives now.
    given: BTreeMap<String, String>,
    /// Secrets seen during a re-list, to remove the targets of those no longer there.
    relisting: Option<BTreeSet<String>>,
}

impl Discovery {
    pub fn new(targets: Targets, metrics: Arc<Metrics>, defaults: Defaults) -> Self {
        Self {
            targets,
            metrics,
            defaults,
            given: BTreeMap::new(),
            relisting: None,
        }
    }

    /// A Secret was created or changed (or listed): `config` is its `data.config`.
    pub fn apply(&mut self, secret: &str, config: Option<&[u8]>) {
        if let Some(seen) = &mut self.relisting {
            seen.insert(secret.to_owned());
        }
        let previous = self.given.get(secret).cloned();
        let target = match secret::parse(secret, config, &self.defaults) {
            Ok(Parsed::Target(target)) => target,
            Ok(Parsed::Disabled { .. }) => {
                self.withdraw(secret, "its Secret says enabled: false");
                return;
            }
            Err(error) => {
                self.skip(secret, SkipReason::Invalid, &error.to_string());
                return;
            }
        };
        let name = target.name.clone();
        if let Some(other) = self
            .given
            .iter()
            .find(|(s, t)| s.as_str() != secret && **t == name)
            .map(|(s, _)| s.clone())
        {
            let error = format!("target name {name:?} is already given by Secret {other}");
            self.skip(secret, SkipReason::NameClash, &error);
            return;
        }
        match self.targets.upsert(*target) {
            Ok(change) => {
                if let Some(old) = previous.filter(|old| *old != name) {
                    self.targets.remove(&old);
                    SecretTargetRemoved {
                        secret,
                        target: &old,
                        why: "its Secret now names another target",
                    }
                    .emit(&self.metrics);
                }
                self.given.insert(secret.to_owned(), name.clone());
                SecretTargetApplied {
                    secret,
                    target: &name,
                    change,
                }
                .emit(&self.metrics);
            }
            Err(error) => {
                let reason = match error {
                    TargetsError::ClashesWithFile(_) => SkipReason::NameClash,
                    TargetsError::InvalidKey | TargetsError::Format(_) => SkipReason::Invalid,
                };
                self.skip(secret, reason, &error.to_string());
            }
        }
    }

    /// A Secret was deleted (or no longer matches the selector).
    pub fn delete(&mut self, secret: &str) {
        self.withdraw(secret, "its Secret was deleted or no longer matches");
    }

    /// A re-list begins: every Secret there will be applied, then [`Discovery::relisted`].
    pub fn relisting(&mut self) {
        self.relisting = Some(BTreeSet::new());
    }

    /// The re-list is complete: Secrets not in it are gone (deleted while the watch was down,
    /// or while its resource version expired).
    pub fn relisted(&mut self) {
        let Some(seen) = self.relisting.take() else {
            return;
        };
        let gone: Vec<String> = self
            .given
            .keys()
            .filter(|secret| !seen.contains(*secret))
            .cloned()
            .collect();
        for secret in gone {
            self.delete(&secret);
        }
    }

    fn withdraw(&mut self, secret: &str, why: &'static str) {
        if let Some(target) = self.given.remove(secret) {
            self.targets.remove(&target);
            SecretTargetRemoved {
                secret,
                target: &target,
                why,
            }
            .emit(&self.metrics);
        }
    }

    fn skip(&self, secret: &str, reason: SkipReason, error: &str) {
        SecretSkipped {
            secret,
            reason,
            error,
            kept: self.given.get(secret).map(String::as_str),
        }
        .emit(&self.metrics);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{InlineKey, KeySource, RateLimit, Target};
    use crate::delivery::RoutingKeys;
    use crate::format::FormatOptions;
    use crate::keyring::Keyring;
    use crate::metrics::ReasonLabel;

    const KEY: &str = "0123456789abcdef0123456789abkey1"; // fake test key
    const ROTATED: &str = "0123456789abcdef0123456789abkey2"; // fake test key

    fn discovery() -> (Discovery, Targets, Arc<Metrics>) {
        let file = vec![Target {
            name: "default".to_owned(),
            key_source: KeySource::Inline(InlineKey::new(KEY)),
            matchers: Vec::new(),
            format: FormatOptions::default(),
            rate_limit: RateLimit::default(),
            url: None,
            on_silence: crate::config::SyncAction::Acknowledge,
            on_inhibit: crate::config::SyncAction::None,
        }];
        let keyring = Keyring::load(&file).expect("keys");
        let targets = Targets::new(file, keyring).expect("targets");
        let metrics = Arc::new(Metrics::new());
        let defaults = Defaults {
            rate_limit: RateLimit::default(),
        };
        (
            Discovery::new(targets.clone(), metrics.clone(), defaults),
            targets,
            metrics,
        )
    }

    fn config(name: &str, key: &str) -> Vec<u8> {
        format!("name: {name}\ntype: pagerduty\nrouting_key: {key}\n").into_bytes()
    }

    fn skipped(metrics: &Metrics, reason: SkipReason) -> u64 {
        metrics
            .secrets_skipped
            .get_or_create(&ReasonLabel {
                reason: reason.as_str().to_owned(),
            })
            .get()
    }

    fn names(targets: &Targets) -> Vec<String> {
        targets.snapshot().names()
    }

    #[test]
    fn apply_rotate_rename_and_delete() {
        let (mut discovery, targets, _) = discovery();
        discovery.apply("ns/a", Some(&config("web", KEY)));
        assert_eq!(names(&targets), ["default", "web"]);
        discovery.apply("ns/a", Some(&config("web", ROTATED)));
        assert_eq!(targets.get("web").map(|k| k.masked()), Some("…key2".into()));
        // The Secret now names another target: the old one goes.
        discovery.apply("ns/a", Some(&config("frontend", ROTATED)));
        assert_eq!(names(&targets), ["default", "frontend"]);
        discovery.delete("ns/a");
        assert_eq!(names(&targets), ["default"]);
        discovery.delete("ns/a");
    }

    #[test]
    fn invalid_keeps_the_previous_version_and_clashes_are_skipped() {
        let (mut discovery, targets, metrics) = discovery();
        discovery.apply("ns/a", Some(&config("web", KEY)));
        discovery.apply("ns/a", Some(b"name: web\ntype: pagerduty\n"));
        assert_eq!(names(&targets), ["default", "web"], "previous version kept");
        assert_eq!(skipped(&metrics, SkipReason::Invalid), 1);

        discovery.apply("ns/b", Some(&config("web", ROTATED)));
        assert_eq!(targets.get("web").map(|k| k.masked()), Some("…key1".into()));
        discovery.apply("ns/c", Some(&config("default", ROTATED)));
        assert_eq!(
            targets.get("default").map(|k| k.masked()),
            Some("…key1".into())
        );
        assert_eq!(skipped(&metrics, SkipReason::NameClash), 2);

        // Disabled: the target goes.
        discovery.apply(
            "ns/a",
            Some(
                format!("name: web\ntype: pagerduty\nrouting_key: {KEY}\nenabled: false\n")
                    .as_bytes(),
            ),
        );
        assert_eq!(names(&targets), ["default"]);
        // Now the clashing Secret can give it, once it is applied again.
        discovery.apply("ns/b", Some(&config("web", ROTATED)));
        assert_eq!(names(&targets), ["default", "web"]);
    }

    #[test]
    fn a_relist_removes_the_secrets_missed_while_away() {
        let (mut discovery, targets, _) = discovery();
        discovery.apply("ns/a", Some(&config("a", KEY)));
        discovery.apply("ns/b", Some(&config("b", KEY)));
        discovery.relisting();
        discovery.apply("ns/b", Some(&config("b", KEY)));
        discovery.apply("ns/c", Some(&config("c", KEY)));
        assert_eq!(
            names(&targets),
            ["default", "a", "b", "c"],
            "not before the end"
        );
        discovery.relisted();
        assert_eq!(names(&targets), ["default", "b", "c"]);
    }
}
