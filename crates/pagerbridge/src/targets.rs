//! The targets in force, changeable while the service runs.
//!
//! Targets come from two sources: the config file (fixed at start, keys in the [`Keyring`])
//! and sources discovered at run time (Kubernetes Secrets, see [`crate::kubernetes`]), which
//! are added, changed and removed through [`Targets::upsert`] and [`Targets::remove`].
//! Everything that needs targets reads them here, and only here: routing and formatting take a
//! [`Snapshot`] per request, lanes ask for a target's key and budget at every send (so a new
//! key applies to events already queued), and delivery follows [`Targets::changes`] to start
//! the lane of a new target.
//!
//! Routing order: the file's targets first, in file order (the first is the default route),
//! then discovered targets by name. A removed target is simply absent: new alerts naming it
//! get 404, routing by labels no longer picks it, and its lane finds no key and shows
//! misconfigured while its queued events wait (they are never dropped).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use pagerduty_events::{BaseUrl, RoutingKey};
use tokio::sync::watch;

use crate::config::{RateLimit, Target};
use crate::format::{FormatError, Formatter};
use crate::keyring::Keyring;

/// Where a target comes from: the `source` label of `pagerbridge_targets`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    File,
    Secret,
}

impl Source {
    pub const ALL: [Source; 2] = [Source::File, Source::Secret];

    pub fn as_str(self) -> &'static str {
        match self {
            Source::File => "file",
            Source::Secret => "secret",
        }
    }
}

/// Why a discovered target was not taken.
#[derive(Debug, thiserror::Error)]
pub enum TargetsError {
    #[error("a target named {0:?} is in the config file; file targets take precedence")]
    ClashesWithFile(String),
    #[error("the routing key is invalid")]
    InvalidKey,
    #[error(transparent)]
    Format(#[from] FormatError),
}

/// What [`Targets::upsert`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Added,
    Updated,
    /// The same target with the same key was already there (e.g. a watch re-list).
    Unchanged,
}

/// The targets as they are at one moment: what one request is routed and formatted with.
pub struct Snapshot {
    targets: Vec<Target>,
    formatters: HashMap<String, Arc<Formatter>>,
    sources: HashMap<String, Source>,
}

impl Snapshot {
    /// In routing order: file targets first, the first being the default route.
    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    pub fn get(&self, name: &str) -> Option<&Target> {
        self.targets.iter().find(|t| t.name == name)
    }

    pub fn formatter(&self, name: &str) -> Option<&Formatter> {
        self.formatters.get(name).map(Arc::as_ref)
    }

    pub fn source(&self, name: &str) -> Option<Source> {
        self.sources.get(name).copied()
    }

    pub fn names(&self) -> Vec<String> {
        self.targets.iter().map(|t| t.name.clone()).collect()
    }

    /// How many targets each source gives.
    pub fn count(&self, source: Source) -> usize {
        self.sources.values().filter(|s| **s == source).count()
    }
}

/// A discovered target with its key and formatter, as kept between snapshots.
struct Discovered {
    target: Target,
    key: RoutingKey,
    formatter: Arc<Formatter>,
}

/// The registry of targets. Cloning is cheap and clones share everything.
#[derive(Clone)]
pub struct Targets {
    inner: Arc<Inner>,
}

struct Inner {
    file: Vec<(Target, Arc<Formatter>)>,
    keyring: Keyring,
    discovered: Mutex<BTreeMap<String, Discovered>>,
    current: RwLock<Arc<Snapshot>>,
    /// Bumped after every change that made a new snapshot.
    changes: watch::Sender<u64>,
}

impl fmt::Debug for Targets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names only: keys stay out of Debug output.
        f.debug_struct("Targets")
            .field("names", &self.snapshot().names())
            .finish()
    }
}

impl Targets {
    /// The file's targets, whose keys `keyring` holds (and keeps current).
    pub fn new(file: Vec<Target>, keyring: Keyring) -> Result<Self, FormatError> {
        let file = file
            .into_iter()
            .map(|target| {
                let formatter = Arc::new(Formatter::new(target.format.clone())?);
                Ok((target, formatter))
            })
            .collect::<Result<Vec<_>, FormatError>>()?;
        let (changes, _) = watch::channel(0);
        let targets = Self {
            inner: Arc::new(Inner {
                file,
                keyring,
                discovered: Mutex::new(BTreeMap::new()),
                current: RwLock::new(Arc::new(Snapshot {
                    targets: Vec::new(),
                    formatters: HashMap::new(),
                    sources: HashMap::new(),
                })),
                changes,
            }),
        };
        targets.publish(&targets.lock_discovered());
        Ok(targets)
    }

    /// Targets without keys, for routing and formatting alone (`render`).
    pub fn fixed(file: Vec<Target>) -> Result<Self, FormatError> {
        Self::new(file, Keyring::empty())
    }

    /// The targets now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.inner
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Changes to the set of targets or their settings, for those who follow them.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// Adds or replaces a discovered target. Its key is read from its key source now; a name
    /// that is a file target's is refused (the file wins).
    pub fn upsert(&self, target: Target) -> Result<Change, TargetsError> {
        if self.inner.file.iter().any(|(t, _)| t.name == target.name) {
            return Err(TargetsError::ClashesWithFile(target.name));
        }
        // The key source's own error may say why the key is invalid, but is dropped: callers
        // log this error, and the key must not be near a log line.
        let key = target
            .key_source
            .load()
            .map_err(|_| TargetsError::InvalidKey)?;
        let mut discovered = self.lock_discovered();
        if let Some(old) = discovered.get(&target.name)
            && old.key == key
            // Target has no `PartialEq` (compiled regexes); its Debug shows every setting and
            // only a masked key, which is compared apart just above.
            && format!("{:?}", old.target) == format!("{target:?}")
        {
            return Ok(Change::Unchanged);
        }
        let formatter = Arc::new(Formatter::new(target.format.clone())?);
        let name = target.name.clone();
        let previous = discovered.insert(
            name,
            Discovered {
                target,
                key,
                formatter,
            },
        );
        self.publish(&discovered);
        Ok(match previous {
            Some(_) => Change::Updated,
            None => Change::Added,
        })
    }

    /// Removes a discovered target; false if there was none by that name (file targets are
    /// never removed).
    pub fn remove(&self, name: &str) -> bool {
        let mut discovered = self.lock_discovered();
        let removed = discovered.remove(name).is_some();
        if removed {
            self.publish(&discovered);
        }
        removed
    }

    /// The names of the discovered targets.
    pub fn discovered(&self) -> Vec<String> {
        self.lock_discovered().keys().cloned().collect()
    }

    /// The current key of `target`, if it is a target now.
    pub fn key(&self, target: &str) -> Option<RoutingKey> {
        if self.inner.file.iter().any(|(t, _)| t.name == target) {
            return self.inner.keyring.get(target);
        }
        self.lock_discovered().get(target).map(|d| d.key.clone())
    }

    /// `target`'s own PagerDuty base URL, if it is a target now and has one.
    pub fn url(&self, target: &str) -> Option<BaseUrl> {
        self.snapshot().get(target).and_then(|t| t.url.clone())
    }

    /// The budget of `target`'s routing key, if it is a target now.
    pub fn rate_limit(&self, target: &str) -> Option<RateLimit> {
        self.snapshot().get(target).map(|t| t.rate_limit)
    }

    fn lock_discovered(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Discovered>> {
        // Writers cannot panic halfway through a change: a poisoned map is still whole.
        self.inner
            .discovered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Builds the snapshot from the file targets and `discovered` (locked by the caller, so
    /// that snapshots are published in the order of the changes) and tells the followers.
    fn publish(&self, discovered: &BTreeMap<String, Discovered>) {
        let file = self.inner.file.iter().map(|(t, f)| (t, f, Source::File));
        let found = discovered
            .values()
            .map(|d| (&d.target, &d.formatter, Source::Secret));
        let mut snapshot = Snapshot {
            targets: Vec::new(),
            formatters: HashMap::new(),
            sources: HashMap::new(),
        };
        for (target, formatter, source) in file.chain(found) {
            snapshot.targets.push(target.clone());
            snapshot
                .formatters
                .insert(target.name.clone(), formatter.clone());
            snapshot.sources.insert(target.name.clone(), source);
        }
        *self
            .inner
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(snapshot);
        self.inner.changes.send_modify(|version| *version += 1);
    }
}

impl crate::delivery::RoutingKeys for Targets {
    fn get(&self, target: &str) -> Option<RoutingKey> {
        self.key(target)
    }

    fn budget(&self, target: &str) -> Option<crate::delivery::Budget> {
        self.rate_limit(target)
            .map(|limit| crate::delivery::Budget {
                requests: limit.requests,
                window: limit.window,
            })
    }

    fn url(&self, target: &str) -> Option<BaseUrl> {
        Targets::url(self, target)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::alert::Labels;
    use crate::config::{InlineKey, KeySource, Matcher, route};
    use crate::delivery::RoutingKeys;
    use crate::format::FormatOptions;

    const FILE_KEY: &str = "0123456789abcdef0123456789abfile"; // fake test key
    const OLD: &str = "0123456789abcdef0123456789abold1"; // fake test key
    const NEW: &str = "0123456789abcdef0123456789abnew2"; // fake test key

    fn target(name: &str, key: &str, matchers: &[(&str, &str)]) -> Target {
        Target {
            name: name.to_owned(),
            key_source: KeySource::Secret {
                secret: format!("ns/{name}"),
                key: InlineKey::new(key),
            },
            matchers: matchers
                .iter()
                .map(|(l, v)| Matcher::new(l, v).expect("valid matcher"))
                .collect(),
            format: FormatOptions::default(),
            rate_limit: RateLimit::default(),
            url: None,
            on_silence: crate::config::SyncAction::Acknowledge,
            on_inhibit: crate::config::SyncAction::None,
        }
    }

    fn registry() -> Targets {
        let file = vec![
            Target {
                key_source: KeySource::Inline(InlineKey::new(FILE_KEY)),
                // A matcher nothing has: the default is picked as the fallback, not by matching.
                ..target("default", FILE_KEY, &[("team", "nobody")])
            },
            Target {
                key_source: KeySource::Inline(InlineKey::new(FILE_KEY)),
                ..target("db", FILE_KEY, &[("team", "db")])
            },
        ];
        let keyring = Keyring::load(&file).expect("keys");
        Targets::new(file, keyring).expect("targets")
    }

    fn routed(targets: &Targets, team: &str) -> String {
        let labels: Labels = BTreeMap::from([("team".to_owned(), team.to_owned())]);
        route(targets.snapshot().targets(), &labels).name.clone()
    }

    fn key(raw: &str) -> RoutingKey {
        RoutingKey::new(raw).expect("valid test key")
    }

    #[test]
    fn added_target_is_routable_after_the_file_targets() {
        let targets = registry();
        let mut changes = targets.changes();
        assert_eq!(routed(&targets, "web"), "default");
        assert_eq!(
            targets
                .upsert(target("web", OLD, &[("team", "web")]))
                .expect("added"),
            Change::Added
        );
        assert!(changes.has_changed().expect("open"));
        changes.mark_unchanged();
        assert_eq!(routed(&targets, "web"), "web");
        // File targets come first: a discovered target matching everything does not take the
        // file's matches, nor the default route.
        targets.upsert(target("all", OLD, &[])).expect("added");
        assert_eq!(routed(&targets, "db"), "db");
        assert_eq!(routed(&targets, "other"), "all");
        assert_eq!(
            targets.snapshot().names(),
            vec!["default", "db", "all", "web"]
        );
        assert_eq!(targets.snapshot().count(Source::File), 2);
        assert_eq!(targets.snapshot().count(Source::Secret), 2);
        assert_eq!(targets.snapshot().source("web"), Some(Source::Secret));
        assert_eq!(targets.get("web"), Some(key(OLD)));
        assert_eq!(targets.get("default"), Some(key(FILE_KEY)));
        assert!(targets.snapshot().formatter("web").is_some());
    }

    #[test]
    fn a_changed_key_and_options_apply_and_a_repeat_is_unchanged() {
        let targets = registry();
        targets
            .upsert(target("web", OLD, &[("team", "web")]))
            .expect("added");
        let changes = targets.changes();
        assert_eq!(
            targets
                .upsert(target("web", OLD, &[("team", "web")]))
                .expect("same"),
            Change::Unchanged
        );
        assert!(!changes.has_changed().expect("open"), "no change, no news");

        assert_eq!(
            targets
                .upsert(target("web", NEW, &[("team", "web")]))
                .expect("rotated"),
            Change::Updated
        );
        assert_eq!(targets.get("web"), Some(key(NEW)));
        assert!(changes.has_changed().expect("open"));

        let mut slower = target("web", NEW, &[("team", "frontend")]);
        slower.rate_limit.requests = 7;
        assert_eq!(targets.upsert(slower).expect("changed"), Change::Updated);
        assert_eq!(routed(&targets, "web"), "default");
        assert_eq!(routed(&targets, "frontend"), "web");
        assert_eq!(targets.budget("web").map(|b| b.requests), Some(7));

        assert_eq!(targets.url("web"), None);
        let mut eu = target("web", NEW, &[("team", "frontend")]);
        eu.rate_limit.requests = 7;
        eu.url = Some(BaseUrl::parse("https://events.eu.pagerduty.com").expect("valid"));
        assert_eq!(targets.upsert(eu.clone()).expect("moved"), Change::Updated);
        assert_eq!(targets.url("web"), eu.url);
        assert_eq!(targets.url("default"), None);
    }

    #[test]
    fn a_removed_target_is_gone_but_file_targets_stay() {
        let targets = registry();
        targets
            .upsert(target("web", OLD, &[("team", "web")]))
            .expect("added");
        assert!(targets.remove("web"));
        assert!(!targets.remove("web"));
        assert!(!targets.remove("default"), "file targets are not removable");
        assert_eq!(routed(&targets, "web"), "default");
        assert!(targets.snapshot().get("web").is_none());
        assert_eq!(targets.get("web"), None, "its lane finds no key");
        assert_eq!(targets.budget("web"), None);
        assert_eq!(targets.get("default"), Some(key(FILE_KEY)));
    }

    #[test]
    fn clashing_names_and_invalid_keys_are_refused_without_the_key() {
        let targets = registry();
        let error = targets.upsert(target("db", OLD, &[])).expect_err("clashes");
        assert!(matches!(error, TargetsError::ClashesWithFile(_)));
        assert_eq!(targets.get("db"), Some(key(FILE_KEY)), "the file wins");

        let error = targets
            .upsert(target("web", "not-a-key-but-a-secret", &[]))
            .expect_err("invalid");
        assert!(!error.to_string().contains("secret"), "{error}");
        assert!(targets.snapshot().get("web").is_none());
        assert!(!format!("{targets:?}").contains(FILE_KEY));
    }
}
