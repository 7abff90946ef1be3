//! Targets: one PagerDuty service (routing key) each, with the labels that route alerts to it
//! and how its events are formatted and paced.
//!
//! [`TargetConfig`] is what the file says; [`Target`] is the checked, resolved form that
//! routing ([`route`]), formatting and the lanes use.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use anyhow::{Context, bail, ensure};
use pagerduty_events::{BaseUrl, RoutingKey, Severity};
use regex::Regex;
use serde::{Deserialize, Serialize};

use super::RateLimit;
use crate::alert::Labels;
use crate::format::{DedupMode, FieldTemplates, FormatOptions};

/// A target as written in the config file.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// Appears in URLs (`/api/v1/alertmanager/{target}`), metric labels and queued events.
    pub name: String,
    /// Exactly one of the three key sources must be set.
    #[serde(default)]
    pub routing_key_file: Option<PathBuf>,
    /// Name of an environment variable holding the key.
    #[serde(default)]
    pub routing_key_env: Option<String>,
    /// The key itself, in the file: discouraged (a warning is logged), but handy for demos.
    #[serde(default)]
    pub routing_key: Option<InlineKey>,
    /// Label name → exact value, or an anchored regex when the value starts with `~`.
    #[serde(default, rename = "match")]
    pub matchers: BTreeMap<String, String>,
    /// Extends or overrides the built-in severity table; keys are case-insensitive.
    #[serde(default)]
    pub severity_map: BTreeMap<String, Severity>,
    #[serde(default = "default_severity")]
    pub default_severity: Severity,
    /// Overrides `pagerduty.rate_limit` for this target's routing key.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// This target's PagerDuty base URL (e.g. the EU endpoint); default `pagerduty.url`.
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub dedup: DedupMode,
    #[serde(default)]
    pub fields: Fields,
    /// What the Alertmanager sync does to an incident whose alert is silenced.
    #[serde(default = "default_on_silence")]
    pub on_silence: SyncAction,
    /// What the Alertmanager sync does to an incident whose alert is inhibited.
    #[serde(default)]
    pub on_inhibit: SyncAction,
}

/// What the Alertmanager sync does to the incident of a silenced or inhibited alert, once per
/// change: an acknowledge goes to a triggered incident, a resolve to an open one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncAction {
    Acknowledge,
    Resolve,
    /// Leave the incident alone.
    #[default]
    None,
}

pub(crate) fn default_on_silence() -> SyncAction {
    SyncAction::Acknowledge
}

pub(crate) fn default_severity() -> Severity {
    FormatOptions::default().default_severity
}

/// The file's `fields:` block. It mirrors [`FieldTemplates`] only to refuse unknown keys (a
/// typo'd template would otherwise be silently ignored); the conversion lists every field,
/// so a field added there fails to compile here until it is added.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fields {
    #[serde(default)]
    pub summary: Option<String>,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub component: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub class: Option<String>,
}

impl From<Fields> for FieldTemplates {
    fn from(fields: Fields) -> Self {
        let Fields {
            summary,
            source,
            component,
            group,
            class,
        } = fields;
        FieldTemplates {
            summary,
            source,
            component,
            group,
            class,
        }
    }
}

/// A routing key written into the config file. Its `Debug` is masked; it deliberately has no
/// `Serialize` and no `Display`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct InlineKey(String);

impl InlineKey {
    /// Wraps a key that was read from somewhere other than the file (a Kubernetes Secret).
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    pub fn routing_key(&self) -> anyhow::Result<RoutingKey> {
        RoutingKey::new(&self.0).context("invalid inline routing_key")
    }
}

impl fmt::Debug for InlineKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only a valid key has a masked form; an invalid one shows nothing of itself.
        match RoutingKey::new(&self.0) {
            Ok(key) => write!(f, "InlineKey({})", key.masked()),
            Err(_) => f.write_str("InlineKey(<invalid>)"),
        }
    }
}

/// Where a target's routing key comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// A file holding the key, re-read when it changes.
    File(PathBuf),
    /// An environment variable, read once at startup.
    Env(String),
    /// The config file itself.
    Inline(InlineKey),
    /// A Kubernetes Secret (`namespace/name`), which holds the key beside the target.
    Secret { secret: String, key: InlineKey },
}

impl KeySource {
    /// Reads the key. Errors name the file or variable, never the key.
    pub fn load(&self) -> anyhow::Result<RoutingKey> {
        match self {
            KeySource::File(path) => crate::secrets::routing_key_from_file(path),
            KeySource::Env(variable) => crate::secrets::routing_key_from_env(variable),
            KeySource::Inline(key) | KeySource::Secret { key, .. } => key.routing_key(),
        }
    }
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::File(path) => write!(f, "file {}", path.display()),
            KeySource::Env(variable) => write!(f, "env ${variable}"),
            KeySource::Inline(_) => f.write_str("inline in the config file"),
            KeySource::Secret { secret, .. } => write!(f, "Kubernetes Secret {secret}"),
        }
    }
}

/// One label condition of a target.
#[derive(Clone, Debug)]
pub struct Matcher {
    pub label: String,
    pub value: MatchValue,
}

#[derive(Clone, Debug)]
pub enum MatchValue {
    Exact(String),
    /// `pattern` as written (without `~`); `regex` is it anchored at both ends.
    Regex {
        pattern: String,
        regex: Regex,
    },
}

impl Matcher {
    /// Parses `value`: `~pattern` is a regex matching the whole value, anything else exact.
    pub fn new(label: &str, value: &str) -> anyhow::Result<Self> {
        ensure!(!label.is_empty(), "label name must not be empty");
        let value = match value.strip_prefix('~') {
            Some(pattern) => {
                // Compiled alone first, so that an error points into what the user wrote
                // rather than into the anchored form.
                let invalid = || format!("invalid regex {pattern:?}");
                Regex::new(pattern).with_context(invalid)?;
                let regex = Regex::new(&format!("^(?:{pattern})$")).with_context(invalid)?;
                MatchValue::Regex {
                    pattern: pattern.to_owned(),
                    regex,
                }
            }
            None => MatchValue::Exact(value.to_owned()),
        };
        Ok(Self {
            label: label.to_owned(),
            value,
        })
    }

    /// A missing label counts as the empty string, as in Alertmanager's matchers.
    pub fn matches(&self, labels: &Labels) -> bool {
        let actual = labels.get(&self.label).map(String::as_str).unwrap_or("");
        match &self.value {
            MatchValue::Exact(expected) => actual == expected,
            MatchValue::Regex { regex, .. } => regex.is_match(actual),
        }
    }
}

impl fmt::Display for Matcher {
    /// Prometheus style: `team="db"`, `severity=~"critical|warning"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            MatchValue::Exact(value) => write!(f, "{}={value:?}", self.label),
            MatchValue::Regex { pattern, .. } => write!(f, "{}=~{pattern:?}", self.label),
        }
    }
}

/// A checked target, ready for routing, formatting and its lane.
#[derive(Clone, Debug)]
pub struct Target {
    pub name: String,
    pub key_source: KeySource,
    /// All must match for an alert to be routed here.
    pub matchers: Vec<Matcher>,
    pub format: FormatOptions,
    /// The target's own budget, or `pagerduty.rate_limit`.
    pub rate_limit: RateLimit,
    /// The target's own PagerDuty base URL; `None` sends to `pagerduty.url`.
    pub url: Option<BaseUrl>,
    /// The Alertmanager sync's policies for this target's incidents.
    pub on_silence: SyncAction,
    pub on_inhibit: SyncAction,
}

impl Target {
    pub fn matches(&self, labels: &Labels) -> bool {
        self.matchers.iter().all(|m| m.matches(labels))
    }
}

/// The target for an alert: the first whose matchers all match, else the first target (the
/// default route).
///
/// # Panics
/// If `targets` is empty; [`super::Config::targets`] never returns an empty list.
pub fn route<'a>(targets: &'a [Target], labels: &Labels) -> &'a Target {
    targets
        .iter()
        .find(|target| target.matches(labels))
        .or_else(|| targets.first())
        .expect("Config::targets returns at least one target")
}

impl TargetConfig {
    /// Checks this target and resolves it; `rate_limit` is the global budget.
    pub(crate) fn resolve(&self, rate_limit: RateLimit) -> anyhow::Result<Target> {
        check_name(&self.name)?;
        let key_source = self.key_source()?;
        let matchers = self
            .matchers
            .iter()
            .map(|(label, value)| {
                Matcher::new(label, value).with_context(|| format!("match.{label}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let rate_limit = self.rate_limit.unwrap_or(rate_limit);
        rate_limit.validate().context("rate_limit")?;
        // The same rule as `pagerduty.url`: https, or plain http to loopback only.
        let url = self
            .url
            .as_deref()
            .map(BaseUrl::parse)
            .transpose()
            .context("url")?;
        let severity_map = self
            .severity_map
            .iter()
            .map(|(name, severity)| (name.to_lowercase(), *severity))
            .collect();
        Ok(Target {
            name: self.name.clone(),
            key_source,
            matchers,
            format: FormatOptions {
                dedup: self.dedup,
                default_severity: self.default_severity,
                severity_map,
                fields: self.fields.clone().into(),
            },
            rate_limit,
            url,
            on_silence: self.on_silence,
            on_inhibit: self.on_inhibit,
        })
    }

    fn key_source(&self) -> anyhow::Result<KeySource> {
        let mut sources = Vec::new();
        if let Some(path) = &self.routing_key_file {
            ensure!(
                !path.as_os_str().is_empty(),
                "routing_key_file must not be empty"
            );
            sources.push(("routing_key_file", KeySource::File(path.clone())));
        }
        if let Some(variable) = &self.routing_key_env {
            ensure!(!variable.is_empty(), "routing_key_env must not be empty");
            sources.push(("routing_key_env", KeySource::Env(variable.clone())));
        }
        if let Some(key) = &self.routing_key {
            sources.push(("routing_key", KeySource::Inline(key.clone())));
        }
        match sources.len() {
            1 => Ok(sources.remove(0).1),
            0 => bail!(
                "set exactly one of routing_key_file, routing_key_env or routing_key; none is set"
            ),
            _ => {
                let names: Vec<&str> = sources.iter().map(|(name, _)| *name).collect();
                bail!(
                    "set exactly one of routing_key_file, routing_key_env or routing_key, not {}",
                    names.join(" and ")
                )
            }
        }
    }
}

/// Target names appear in URL paths and metric labels, so they are kept to a safe alphabet.
fn check_name(name: &str) -> anyhow::Result<()> {
    ensure!(!name.is_empty(), "name must not be empty");
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    ensure!(
        name.chars().all(allowed),
        "name {name:?} may only contain letters, digits, '_', '.' and '-'"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn target(name: &str, matchers: &[(&str, &str)]) -> Target {
        Target {
            name: name.to_owned(),
            key_source: KeySource::Env("K".to_owned()),
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

    #[test]
    fn exact_and_anchored_regex_matchers() {
        let exact = Matcher::new("team", "db").expect("valid");
        assert!(exact.matches(&labels(&[("team", "db")])));
        assert!(!exact.matches(&labels(&[("team", "dba")])));
        assert!(!exact.matches(&labels(&[])));

        let regex = Matcher::new("severity", "~critical|warning").expect("valid");
        assert!(regex.matches(&labels(&[("severity", "critical")])));
        assert!(regex.matches(&labels(&[("severity", "warning")])));
        // Anchored: a substring is not enough.
        assert!(!regex.matches(&labels(&[("severity", "not-critical")])));
        assert!(!regex.matches(&labels(&[("severity", "warnings")])));

        // A missing label is the empty string.
        assert!(
            Matcher::new("env", "~|dev")
                .expect("valid")
                .matches(&labels(&[]))
        );
        assert!(Matcher::new("team", "~(").is_err());

        assert_eq!(exact.to_string(), r#"team="db""#);
        assert_eq!(regex.to_string(), r#"severity=~"critical|warning""#);
    }

    #[test]
    fn route_takes_first_full_match_else_first_target() {
        let targets = vec![
            target("default", &[("team", "nobody")]),
            target("db", &[("team", "db"), ("severity", "~critical|warning")]),
            target("db-all", &[("team", "db")]),
        ];
        let name = |pairs: &[(&str, &str)]| route(&targets, &labels(pairs)).name.clone();
        assert_eq!(name(&[("team", "db"), ("severity", "critical")]), "db");
        assert_eq!(name(&[("team", "db"), ("severity", "info")]), "db-all");
        assert_eq!(name(&[("team", "web")]), "default");
        assert_eq!(name(&[]), "default");
    }

    #[test]
    fn invalid_inline_key_debug_shows_nothing_of_it() {
        let key = InlineKey("not-a-key-but-secret".to_owned());
        assert_eq!(format!("{key:?}"), "InlineKey(<invalid>)");
        let message = format!("{:#}", key.routing_key().expect_err("invalid"));
        assert!(!message.contains("secret"), "{message}");
        assert!(
            message.contains("Length of 'routing_key' is incorrect"),
            "{message}"
        );
    }
}
