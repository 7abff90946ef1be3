//! The routing key of every target, kept current while the service runs.
//!
//! Queued events name their target, never the key, and lanes ask the [`Keyring`] for the key
//! at send time; so when a key file changes (a rotation), the new key applies to what is
//! already queued, without a restart. [`Keyring::watch`] re-reads key files when they change;
//! a file that turns unreadable or invalid keeps the previous key, with a warning.
//!
//! Keys only ever leave this module as [`RoutingKey`]s, whose `Debug` and `Display` are masked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use anyhow::Context;
use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};
use pagerduty_events::RoutingKey;

use crate::config::{KeySource, Target};

/// The current routing key of each target. Cloning is cheap and clones share the keys.
#[derive(Clone, Debug)]
pub struct Keyring {
    slots: Arc<[Slot]>,
}

#[derive(Debug)]
struct Slot {
    target: String,
    source: KeySource,
    key: RwLock<RoutingKey>,
}

/// Keeps key files watched; dropping it stops watching.
pub struct KeyringWatcher {
    _watcher: notify::RecommendedWatcher,
}

impl std::fmt::Debug for KeyringWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyringWatcher")
    }
}

impl Keyring {
    /// Reads every target's key; fails naming the first target whose key is missing or
    /// invalid (and its file or variable, never the key).
    pub fn load(targets: &[Target]) -> anyhow::Result<Self> {
        let slots = targets
            .iter()
            .map(|target| {
                let key = target
                    .key_source
                    .load()
                    .with_context(|| format!("routing key of target {:?}", target.name))?;
                if let KeySource::Inline(_) = target.key_source {
                    tracing::warn!(
                        "target {} has its routing key inline in the config file; prefer \
                         routing_key_file or routing_key_env, which keep it out of the file",
                        target.name
                    );
                }
                Ok(Slot {
                    target: target.name.clone(),
                    source: target.key_source.clone(),
                    key: RwLock::new(key),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            slots: slots.into(),
        })
    }

    /// A keyring without keys (for routing and formatting alone).
    pub fn empty() -> Self {
        Self {
            slots: Vec::new().into(),
        }
    }

    /// The current key of `target`, if there is such a target.
    pub fn get(&self, target: &str) -> Option<RoutingKey> {
        self.slots
            .iter()
            .find(|slot| slot.target == target)
            .map(Slot::current)
    }

    /// `(target, masked key)` for every target, in config order.
    pub fn masked(&self) -> Vec<(String, String)> {
        self.slots
            .iter()
            .map(|slot| (slot.target.clone(), slot.current().masked()))
            .collect()
    }

    /// Re-reads every file-based key (environment and inline keys cannot change while the
    /// process runs). A key that fails to load is kept as it was; the failures are logged
    /// and returned.
    pub fn reload(&self) -> Vec<anyhow::Error> {
        self.slots
            .iter()
            .filter_map(|slot| slot.reload().err())
            .collect()
    }

    /// Watches the key files and re-reads one whenever its directory changes.
    ///
    /// Directories rather than files are watched because Kubernetes updates a mounted
    /// Secret by swapping a symlink in the directory, which a watch on the file would miss.
    pub fn watch(&self) -> anyhow::Result<KeyringWatcher> {
        // Directory → the slots whose key file is in it, with the file's absolute path.
        let mut dirs: Dirs = BTreeMap::new();
        for (index, slot) in self.slots.iter().enumerate() {
            if let KeySource::File(path) = &slot.source {
                let absolute = std::path::absolute(path).with_context(|| {
                    format!("could not resolve the directory of {}", path.display())
                })?;
                let dir = parent_dir(&absolute);
                dirs.entry(dir).or_default().push((index, absolute));
            }
        }
        let watched: Vec<PathBuf> = dirs.keys().cloned().collect();
        let keyring = self.clone();
        let mut watcher = notify::recommended_watcher(move |event| keyring.on_event(&dirs, event))
            .context("could not start watching routing key files")?;
        for dir in watched {
            watcher
                .watch(&dir, RecursiveMode::NonRecursive)
                .with_context(|| format!("could not watch {} for key rotation", dir.display()))?;
        }
        Ok(KeyringWatcher { _watcher: watcher })
    }

    fn on_event(&self, dirs: &Dirs, event: notify::Result<notify::Event>) {
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                tracing::warn!("watching routing key files: {error}");
                return;
            }
        };
        // Reading a key file opens it, which inotify reports too; only changes matter.
        if let EventKind::Access(kind) = event.kind
            && kind != AccessKind::Close(AccessMode::Write)
        {
            return;
        }
        for (dir, slots) in dirs {
            for (index, key_file) in slots {
                // An event without paths (e.g. a queue overflow) could be about anything.
                let touched = event.paths.is_empty()
                    || event
                        .paths
                        .iter()
                        .any(|path| may_change_key(path, dir, key_file));
                if touched {
                    // Failures are logged by `reload`; the previous key stays in use.
                    let _ = self.slots[*index].reload();
                }
            }
        }
    }
}

/// Watched directory → (slot index, absolute key file path) of the keys in it.
type Dirs = BTreeMap<PathBuf, Vec<(usize, PathBuf)>>;

/// Whether a change at `path` may have changed the key in `key_file` (in `dir`): the file
/// itself (rewritten, or renamed into place), the directory, or one of the `..`-prefixed
/// entries through which Kubernetes swaps a mounted Secret (`..data`, `..2024_…`). Anything
/// else in the directory, such as a database kept beside the key with its journal written
/// thousands of times a second, is no reason to read the key again.
fn may_change_key(path: &Path, dir: &Path, key_file: &Path) -> bool {
    if path == dir || path == key_file {
        return true;
    }
    path.parent() == Some(dir)
        && path
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| name.starts_with(".."))
}

impl Slot {
    fn current(&self) -> RoutingKey {
        // A writer cannot panic while holding the lock, but a poisoned key is still a key.
        self.key
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Re-reads a file-based key, keeping the previous one if the file is now unreadable or
    /// invalid (a half-written file, a botched rotation); other sources are left alone.
    fn reload(&self) -> anyhow::Result<()> {
        let KeySource::File(path) = &self.source else {
            return Ok(());
        };
        match crate::secrets::routing_key_from_file(path) {
            Ok(new) => {
                let mut key = self.key.write().unwrap_or_else(PoisonError::into_inner);
                if *key != new {
                    tracing::info!(
                        file = %path.display(),
                        "routing key for target {} rotated ({} → {})",
                        self.target,
                        key.masked(),
                        new.masked()
                    );
                    *key = new;
                }
                Ok(())
            }
            Err(error) => {
                let error = error.context(format!("routing key of target {:?}", self.target));
                tracing::warn!(
                    file = %path.display(),
                    "keeping the previous routing key of target {}: {error:#}",
                    self.target
                );
                Err(error)
            }
        }
    }
}

/// The directory holding the absolute `path`, symlinks left as they are (the directory to
/// watch is the one holding the link, not the one it points into).
fn parent_dir(absolute: &Path) -> PathBuf {
    absolute
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| absolute.to_path_buf())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::config::RateLimit;
    use crate::format::FormatOptions;

    const OLD: &str = "0123456789abcdef0123456789abold1"; // fake test key
    const NEW: &str = "0123456789abcdef0123456789abnew2"; // fake test key

    fn target(name: &str, key_source: KeySource) -> Target {
        Target {
            name: name.to_owned(),
            key_source,
            matchers: Vec::new(),
            format: FormatOptions::default(),
            rate_limit: RateLimit::default(),
            url: None,
            on_silence: crate::config::SyncAction::Acknowledge,
            on_inhibit: crate::config::SyncAction::None,
        }
    }

    fn key(raw: &str) -> RoutingKey {
        RoutingKey::new(raw).expect("valid test key")
    }

    /// Polls `keyring` until `name`'s key is `expected`, for at most 5 s.
    fn wait_for_key(keyring: &Keyring, name: &str, expected: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if keyring.get(name) == Some(key(expected)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    struct KeyFile {
        _dir: tempfile::TempDir,
        path: PathBuf,
    }

    fn key_file(content: &str) -> KeyFile {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("pd-key");
        std::fs::write(&path, content).expect("write key");
        KeyFile { _dir: dir, path }
    }

    #[test]
    fn only_the_key_file_its_directory_and_kubernetes_entries_may_change_a_key() {
        let dir = Path::new("/etc/pagerbridge");
        let key_file = Path::new("/etc/pagerbridge/pd-key");
        for path in [
            "/etc/pagerbridge/pd-key",
            "/etc/pagerbridge",
            "/etc/pagerbridge/..data",
            "/etc/pagerbridge/..data_tmp",
            "/etc/pagerbridge/..2026_12_01_04_00_00.123",
        ] {
            assert!(may_change_key(Path::new(path), dir, key_file), "{path}");
        }
        for path in [
            "/etc/pagerbridge/pagerbridge.db",
            "/etc/pagerbridge/pagerbridge.db-wal",
            "/etc/pagerbridge/pd-key.swp",
            "/etc/pagerbridge/other-key",
            "/etc/pagerbridge/sub/..data",
            "/etc/..data",
        ] {
            assert!(!may_change_key(Path::new(path), dir, key_file), "{path}");
        }
    }

    #[test]
    fn loads_gets_and_masks() {
        let file = key_file(&format!("{OLD}\n"));
        let keyring = Keyring::load(&[
            target("file", KeySource::File(file.path.clone())),
            target("other", KeySource::File(file.path.clone())),
        ])
        .expect("loads");
        assert_eq!(keyring.get("file"), Some(key(OLD)));
        assert_eq!(keyring.get("nope"), None);
        assert_eq!(
            keyring.masked(),
            vec![
                ("file".to_owned(), "…old1".to_owned()),
                ("other".to_owned(), "…old1".to_owned())
            ]
        );
        assert!(!format!("{keyring:?}").contains(OLD));
    }

    #[test]
    fn load_fails_naming_the_target_and_file() {
        let missing = PathBuf::from("/nonexistent/pagerbridge/pd-key");
        let error =
            Keyring::load(&[target("db", KeySource::File(missing))]).expect_err("missing file");
        let message = format!("{error:#}");
        assert!(message.contains("target \"db\""), "{message}");
        assert!(
            message.contains("/nonexistent/pagerbridge/pd-key"),
            "{message}"
        );

        let file = key_file("0123456789abcdef-not-a-key-at-all");
        let error = Keyring::load(&[target("web", KeySource::File(file.path.clone()))])
            .expect_err("invalid key");
        let message = format!("{error:#}");
        assert!(message.contains("target \"web\""), "{message}");
        assert!(message.contains("non-alphanumeric"), "{message}");
        assert!(!message.contains("not-a-key"), "{message}");
    }

    #[test]
    fn reload_keeps_the_old_key_when_the_new_content_is_invalid() {
        let file = key_file(OLD);
        let keyring =
            Keyring::load(&[target("db", KeySource::File(file.path.clone()))]).expect("loads");

        std::fs::write(&file.path, "half-written").expect("write");
        let errors = keyring.reload();
        assert_eq!(errors.len(), 1);
        let message = format!("{:#}", errors[0]);
        assert!(message.contains("target \"db\""), "{message}");
        assert_eq!(keyring.get("db"), Some(key(OLD)));

        std::fs::write(&file.path, NEW).expect("write");
        assert!(keyring.reload().is_empty());
        assert_eq!(keyring.get("db"), Some(key(NEW)));
    }

    #[test]
    fn watcher_picks_up_a_rewritten_file() {
        let file = key_file(OLD);
        let keyring =
            Keyring::load(&[target("db", KeySource::File(file.path.clone()))]).expect("loads");
        let _watcher = keyring.watch().expect("watches");

        std::fs::write(&file.path, format!("{NEW}\n")).expect("rotate");
        assert!(wait_for_key(&keyring, "db", NEW), "rotation not seen");
    }

    /// Kubernetes' way: the key file is a symlink through `..data`, which is swapped by a
    /// rename to point at a new directory.
    #[cfg(unix)]
    #[test]
    fn watcher_follows_a_kubernetes_style_symlink_swap() {
        use std::os::unix::fs::symlink;

        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        let version = |name: &str, key: &str| {
            std::fs::create_dir(root.join(name)).expect("version dir");
            std::fs::write(root.join(name).join("pd-key"), key).expect("key");
        };
        version("..v1", OLD);
        symlink("..v1", root.join("..data")).expect("..data");
        symlink("..data/pd-key", root.join("pd-key")).expect("pd-key");

        let keyring =
            Keyring::load(&[target("db", KeySource::File(root.join("pd-key")))]).expect("loads");
        let _watcher = keyring.watch().expect("watches");

        version("..v2", NEW);
        symlink("..v2", root.join("..data_tmp")).expect("..data_tmp");
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).expect("swap");
        assert!(wait_for_key(&keyring, "db", NEW), "rotation not seen");
    }
}
