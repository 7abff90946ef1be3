//! Configuration of `pagerbridge serve` (DESIGN.md "Interfaces" → Config): one YAML file,
//! `PAGERBRIDGE_*` environment overrides, and defaults for everything else.
//!
//! [`load`] reads and validates the layers; [`Config::targets`] resolves the targets into what
//! routing, formatting and the lanes use ([`Target`], [`route`]). Routing keys themselves are
//! read by [`crate::keyring`]; this module only says where each one comes from.
//!
//! A typo'd key is an error naming it (`deny_unknown_fields` everywhere), YAML errors carry
//! line and column, and nothing here can print a routing key: an inline key is an
//! [`InlineKey`] whose `Debug` is masked, and targets are never serialized.

mod storage;
mod target;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail, ensure};
use figment::Figment;
use figment::providers::{Env, Serialized};
use pagerduty_events::{BaseUrl, EndpointUrl};
use serde::{Deserialize, Serialize};

pub use storage::{Backend, SecretUrl, Storage, StorageConfig};
pub(crate) use target::default_on_silence;
pub(crate) use target::default_severity;
pub use target::{
    Fields, InlineKey, KeySource, MatchValue, Matcher, SyncAction, Target, TargetConfig, route,
};

/// Read when no `--config` is given and `$PAGERBRIDGE_CONFIG` is not set, if it exists.
pub const DEFAULT_FILE: &str = "pagerbridge.yaml";
/// Environment variable naming the config file.
pub const FILE_ENV: &str = "PAGERBRIDGE_CONFIG";
/// Prefix of environment overrides; `__` separates nesting levels.
pub const ENV_PREFIX: &str = "PAGERBRIDGE_";

/// The sections an environment variable may override. Only these are read, so that other
/// `PAGERBRIDGE_*` variables cannot break startup: `PAGERBRIDGE_LOG` and `PAGERBRIDGE_CONFIG`,
/// a routing key in `PAGERBRIDGE_KEY_…`, or the `PAGERBRIDGE_PORT`/`PAGERBRIDGE_SERVICE_HOST`
/// that Kubernetes injects into every pod when a Service is named `pagerbridge`. `targets`
/// is a list, which environment variables cannot address, so it is file-only.
const ENV_SECTIONS: [&str; 9] = [
    "listen",
    "storage",
    "pagerduty",
    "ingest",
    "delivery",
    "fallback",
    "admin",
    "alertmanager",
    "kubernetes",
];

/// The whole configuration, validated by [`load`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the HTTP server.
    pub listen: SocketAddr,
    pub storage: StorageConfig,
    pub pagerduty: PagerDutyConfig,
    pub ingest: IngestConfig,
    pub delivery: DeliveryConfig,
    pub fallback: FallbackConfig,
    pub admin: AdminConfig,
    pub alertmanager: AlertmanagerConfig,
    pub kubernetes: KubernetesConfig,
    /// Never serialized, so that an inline routing key cannot leave the process that way
    /// (serialization only exists for figment's layering, which cannot address lists anyway).
    #[serde(skip_serializing)]
    pub targets: Vec<TargetConfig>,
}

/// How PagerDuty is reached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PagerDutyConfig {
    /// Base URL without `/v2/…`; plain http only to loopback (the simulator).
    pub url: String,
    /// Budget per routing key, unless a target overrides it.
    pub rate_limit: RateLimit,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    pub user_agent: String,
}

/// A sliding-window budget: at most `requests` in any `window`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimit {
    pub requests: u32,
    #[serde(with = "humantime_serde")]
    pub window: Duration,
}

/// Limits and authentication of the ingest endpoints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    pub max_body_bytes: usize,
    /// A file with one token per line; when set, ingest requires `Authorization: Bearer …`.
    pub bearer_token_file: Option<PathBuf>,
    /// A request (body included) not answered within this long gets 408, so slow or stalled
    /// clients cannot hold connections and memory for ever.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
}

/// The admin API (`/api/v1/admin/…`: queue, lanes, dead letters, replay, drop). Off unless a
/// token file is set: it can replay and drop events, so it is never open by default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// A file with one token per line (blank lines and `#` comments ignored); the admin API
    /// then requires `Authorization: Bearer <token>`. Keep these apart from ingest tokens.
    pub bearer_token_file: Option<PathBuf>,
}

/// The fallback publisher: a generic webhook told about events PagerDuty refused (dead letters)
/// or has been failing for longer than `after`, so humans still hear of them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FallbackConfig {
    /// The webhook; none disables the fallback. https, or plain http to loopback only.
    pub url: Option<String>,
    /// How long an event must have been failing before the fallback hears of it.
    #[serde(with = "humantime_serde")]
    pub after: Duration,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// A file holding a bearer token sent as `Authorization: Bearer …`, if the webhook wants one.
    pub bearer_token_file: Option<PathBuf>,
}

impl Default for FallbackConfig {
    fn default() -> Self {
        Self {
            url: None,
            after: Duration::from_secs(120),
            timeout: Duration::from_secs(10),
            bearer_token_file: None,
        }
    }
}

/// The Alertmanager sync ([`crate::alertmanager_sync`]): polls every Alertmanager's API v2,
/// applies each target's `on_silence` / `on_inhibit` policy, and resolves incidents whose
/// alerts no Alertmanager holds any more (DESIGN.md "Alertmanager sync").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// Every Alertmanager of the set (one, or an HA set), base URLs without `/api/v2`; none
    /// turns the sync off. https, or plain http to loopback only.
    pub urls: Vec<String>,
    /// An alias for `urls` with one Alertmanager (and the only form an environment variable
    /// can set: `PAGERBRIDGE_ALERTMANAGER__URL`).
    pub url: Option<String>,
    /// How often each Alertmanager is asked.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// A file holding the bearer token sent to Alertmanager (e.g. behind an authenticating
    /// proxy); read at every poll, so a rotated token is used at once.
    pub bearer_token_file: Option<PathBuf>,
    pub reconcile: ReconcileConfig,
}

impl Default for AlertmanagerConfig {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            url: None,
            poll_interval: Duration::from_secs(30),
            bearer_token_file: None,
            reconcile: ReconcileConfig::default(),
        }
    }
}

/// Resolving incidents whose resolve was lost (Alertmanager restarted, or gave up on its
/// webhook): see [`crate::alertmanager_sync`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReconcileConfig {
    pub enabled: bool,
    /// How long an incident's alert must have been missing from every Alertmanager (counted
    /// from the incident's last event), and how long every Alertmanager must have been up,
    /// before the incident is resolved. Longer than Prometheus takes to re-send its alerts to
    /// a restarted Alertmanager (its evaluation interval, plus margin).
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            grace: Duration::from_secs(5 * 60),
        }
    }
}

/// Where pagerbridge looks in Kubernetes; nothing unless set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubernetesConfig {
    /// Targets discovered from Secrets ([`crate::kubernetes`]); off when absent.
    pub secrets: Option<SecretsDiscovery>,
}

/// Which Secrets are targets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecretsDiscovery {
    /// The namespace watched; none means the pod's own (from the in-cluster service account
    /// or the kubeconfig's context).
    pub namespace: Option<String>,
    /// Only Secrets with these labels are read (Kubernetes label selector syntax).
    pub label_selector: String,
}

impl Default for SecretsDiscovery {
    fn default() -> Self {
        Self {
            namespace: None,
            label_selector: "publishing-target=true,type=pagerduty".to_owned(),
        }
    }
}

/// Timings of delivery (DESIGN.md "Delivery").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryConfig {
    /// An unchanged re-trigger within this long of the last one sent is suppressed.
    #[serde(with = "humantime_serde")]
    pub retrigger_after: Duration,
    /// Undelivered events older than this go to dead letters.
    #[serde(with = "humantime_serde")]
    pub max_event_age: Duration,
    /// Incident state expires this long after its last event, once none of its events is
    /// queued or dead-lettered.
    #[serde(with = "humantime_serde")]
    pub incident_ttl: Duration,
    /// Cap of a lane's backoff after 5xx and 429.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// On SIGTERM, delivery goes on this long before the process exits.
    #[serde(with = "humantime_serde")]
    pub shutdown_drain: Duration,
    /// How long a replica's lease on a lane or singleton lasts without renewal; it is renewed
    /// every third of it, and another replica takes the work over once it has expired.
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
}

/// The shortest `delivery.lease_ttl`: a lease is renewed well within it, and a database
/// round trip under load must fit in that margin.
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(2);

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9095)),
            storage: StorageConfig::default(),
            pagerduty: PagerDutyConfig::default(),
            ingest: IngestConfig::default(),
            delivery: DeliveryConfig::default(),
            fallback: FallbackConfig::default(),
            admin: AdminConfig::default(),
            alertmanager: AlertmanagerConfig::default(),
            kubernetes: KubernetesConfig::default(),
            targets: Vec::new(),
        }
    }
}

impl Default for PagerDutyConfig {
    fn default() -> Self {
        Self {
            url: pagerduty_events::US_BASE_URL.to_owned(),
            rate_limit: RateLimit::default(),
            timeout: pagerduty_events::client::DEFAULT_TIMEOUT,
            user_agent: pagerduty_events::DEFAULT_USER_AGENT.to_owned(),
        }
    }
}

impl Default for RateLimit {
    /// PagerDuty's documented budget: 120 requests per minute per routing key.
    fn default() -> Self {
        Self {
            requests: 120,
            window: Duration::from_secs(60),
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 5 * 1024 * 1024,
            bearer_token_file: None,
            request_timeout: Duration::from_secs(30),
        }
    }
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        const HOUR: u64 = 60 * 60;
        Self {
            retrigger_after: Duration::from_secs(4 * HOUR),
            max_event_age: Duration::from_secs(72 * HOUR),
            incident_ttl: Duration::from_secs(24 * HOUR),
            max_backoff: Duration::from_secs(5 * 60),
            shutdown_drain: Duration::from_secs(10),
            lease_ttl: Duration::from_secs(10),
        }
    }
}

// The URLs stay text in the file's shape (figment layers them as text, and an error can then
// name the setting); these parse them under the transport rule, for `validate` and for `serve`.
impl PagerDutyConfig {
    /// `pagerduty.url`, parsed.
    pub fn base_url(&self) -> anyhow::Result<BaseUrl> {
        BaseUrl::parse(&self.url).context("pagerduty.url")
    }
}

impl FallbackConfig {
    /// `fallback.url`, parsed; none when the fallback is off.
    pub fn webhook(&self) -> anyhow::Result<Option<EndpointUrl>> {
        self.url
            .as_deref()
            .map(EndpointUrl::parse)
            .transpose()
            .context("fallback.url")
    }
}

impl AlertmanagerConfig {
    /// `alertmanager.urls` (or `url`), parsed; empty when the sync is off.
    pub fn base_urls(&self) -> anyhow::Result<Vec<BaseUrl>> {
        ensure!(
            self.url.is_none() || self.urls.is_empty(),
            "alertmanager: set `urls` or `url` (an alias for one), not both"
        );
        let written: Vec<&str> = match &self.url {
            Some(url) => vec![url.as_str()],
            None => self.urls.iter().map(String::as_str).collect(),
        };
        let mut urls: Vec<BaseUrl> = Vec::with_capacity(written.len());
        for (i, text) in written.iter().enumerate() {
            let field = if self.url.is_some() {
                "alertmanager.url".to_owned()
            } else {
                format!("alertmanager.urls[{i}]")
            };
            let url = BaseUrl::parse(text).context(field.clone())?;
            ensure!(!urls.contains(&url), "{field}: {text:?} is listed twice");
            urls.push(url);
        }
        Ok(urls)
    }
}

impl std::fmt::Display for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let window = humantime::format_duration(self.window);
        write!(f, "{} requests per {window}", self.requests)
    }
}

impl RateLimit {
    fn validate(&self) -> anyhow::Result<()> {
        ensure!(self.requests >= 1, "requests must be at least 1");
        ensure!(!self.window.is_zero(), "window must be longer than 0s");
        Ok(())
    }
}

impl Config {
    /// The targets, resolved; fails when there are none, since `serve` needs at least one
    /// (the first is the default route).
    pub fn targets(&self) -> anyhow::Result<Vec<Target>> {
        let targets = self.resolve_targets()?;
        ensure!(
            !targets.is_empty(),
            "no targets configured: add at least one under `targets:` (the first is the default)"
        );
        Ok(targets)
    }

    /// Checks what the types alone cannot. Targets are checked too, but an empty list is
    /// allowed here: commands that only need storage run without targets.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.pagerduty.base_url()?;
        self.pagerduty
            .rate_limit
            .validate()
            .context("pagerduty.rate_limit")?;
        ensure!(
            !self.pagerduty.timeout.is_zero(),
            "pagerduty.timeout must be longer than 0s"
        );
        ensure!(
            !self.pagerduty.user_agent.trim().is_empty(),
            "pagerduty.user_agent must not be empty"
        );
        self.storage.resolve()?;
        ensure!(
            self.ingest.max_body_bytes >= 1,
            "ingest.max_body_bytes must be at least 1"
        );
        ensure!(
            !self.ingest.request_timeout.is_zero(),
            "ingest.request_timeout must be longer than 0s"
        );
        let delivery = &self.delivery;
        for (key, value) in [
            ("max_event_age", delivery.max_event_age),
            ("incident_ttl", delivery.incident_ttl),
            ("max_backoff", delivery.max_backoff),
        ] {
            ensure!(!value.is_zero(), "delivery.{key} must be longer than 0s");
        }
        ensure!(
            delivery.lease_ttl >= MIN_LEASE_TTL,
            "delivery.lease_ttl must be at least {}",
            humantime::format_duration(MIN_LEASE_TTL)
        );
        if self.fallback.webhook()?.is_some() {
            ensure!(
                !self.fallback.timeout.is_zero(),
                "fallback.timeout must be longer than 0s"
            );
        }
        if !self.alertmanager.base_urls()?.is_empty() {
            ensure!(
                !self.alertmanager.poll_interval.is_zero(),
                "alertmanager.poll_interval must be longer than 0s"
            );
            let reconcile = &self.alertmanager.reconcile;
            ensure!(
                !reconcile.enabled || reconcile.grace >= self.alertmanager.poll_interval,
                "alertmanager.reconcile.grace ({}) must be at least alertmanager.poll_interval \
                 ({}): an alert missing from one poll only may just be on its way back",
                humantime::format_duration(reconcile.grace),
                humantime::format_duration(self.alertmanager.poll_interval)
            );
        }
        if let Some(secrets) = &self.kubernetes.secrets {
            // An empty selector would take every Secret of the namespace for a target.
            ensure!(
                !secrets.label_selector.trim().is_empty(),
                "kubernetes.secrets.label_selector must not be empty"
            );
            ensure!(
                secrets.namespace.as_ref().is_none_or(|ns| !ns.is_empty()),
                "kubernetes.secrets.namespace must not be empty (leave it out for the pod's own)"
            );
        }
        self.resolve_targets().map(drop)
    }

    fn resolve_targets(&self) -> anyhow::Result<Vec<Target>> {
        let mut resolved: Vec<Target> = Vec::with_capacity(self.targets.len());
        for (index, config) in self.targets.iter().enumerate() {
            let target = config
                .resolve(self.pagerduty.rate_limit)
                .with_context(|| format!("targets[{index}] ({:?})", config.name))?;
            if let Some(earlier) = resolved.iter().position(|t| t.name == target.name) {
                bail!(
                    "targets[{index}]: name {:?} is already used by targets[{earlier}]; target names must be unique",
                    target.name
                );
            }
            resolved.push(target);
        }
        Ok(resolved)
    }
}

/// Which config file [`load`] reads: `explicit` if given; else `$PAGERBRIDGE_CONFIG` if set;
/// else `./pagerbridge.yaml` if it exists; else none (defaults only).
pub fn config_file(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = explicit {
        return Some(path.to_owned());
    }
    if let Some(path) = std::env::var_os(FILE_ENV).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let default = PathBuf::from(DEFAULT_FILE);
    default.exists().then_some(default)
}

/// Names of the `PAGERBRIDGE_*` variables that override the file (names only: values are
/// never shown, since one might hold something secret by mistake).
pub fn env_overrides() -> Vec<String> {
    let mut names: Vec<String> = env_provider()
        .iter()
        .map(|(key, _)| env_var_name(key.as_str().split('.')))
        .collect();
    names.sort();
    names
}

/// Loads the configuration as `serve` does: defaults ← the YAML file ([`config_file`]) ←
/// `PAGERBRIDGE_*` environment variables (`__` nests: `PAGERBRIDGE_PAGERDUTY__URL`), then
/// validates it.
pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
    let file = config_file(path);
    let from_file = match &file {
        Some(path) => read_file(path)?,
        None => Config::default(),
    };
    let config = apply_env(from_file)?;
    config.validate().with_context(|| {
        format!(
            "invalid configuration ({})",
            describe_sources(file.as_deref())
        )
    })?;
    Ok(config)
}

/// Parses a config file; a file that is empty or only comments gives the defaults.
fn read_file(path: &Path) -> anyhow::Result<Config> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("could not read config file {}", path.display()))?;
    parse_yaml(&text).with_context(|| format!("config file {}", path.display()))
}

fn parse_yaml(text: &str) -> anyhow::Result<Config> {
    // The plain message, with "at line L, column C", but without the snippet of source lines
    // serde-saphyr would add: a neighbouring line could hold an inline routing key.
    let parsed: Option<Config> =
        serde_saphyr::from_str(text).map_err(|e| anyhow!("{}", e.without_snippet()))?;
    Ok(parsed.unwrap_or_default())
}

/// Layers the environment over `config`. Targets bypass figment (which cannot address lists
/// from the environment) so that inline keys are never serialized.
fn apply_env(config: Config) -> anyhow::Result<Config> {
    layer(config, env_provider())
}

/// `config` with `overrides` merged over it (targets untouched).
fn layer(mut config: Config, overrides: impl figment::Provider) -> anyhow::Result<Config> {
    let targets = std::mem::take(&mut config.targets);
    let mut merged: Config = Figment::from(Serialized::defaults(&config))
        .merge(overrides)
        .extract()
        .map_err(|error| anyhow!(describe_env_error(&error)))?;
    merged.targets = targets;
    Ok(merged)
}

fn env_provider() -> Env {
    // The filter sees keys before figment lowercases them.
    Env::prefixed(ENV_PREFIX).split("__").filter(|key| {
        let section = key.as_str().split('.').next().unwrap_or_default();
        ENV_SECTIONS.iter().any(|s| s.eq_ignore_ascii_case(section))
    })
}

/// figment says `for key "default.PAGERDUTY.URL"`; operators set `PAGERBRIDGE_PAGERDUTY__URL`.
fn describe_env_error(error: &figment::Error) -> String {
    let var = env_var_name(error.path.iter().map(String::as_str));
    format!("environment variable {var}: {}", error.kind)
}

fn env_var_name<'a>(path: impl Iterator<Item = &'a str>) -> String {
    let path: Vec<String> = path.map(str::to_ascii_uppercase).collect();
    format!("{ENV_PREFIX}{}", path.join("__"))
}

fn describe_sources(file: Option<&Path>) -> String {
    let file = match file {
        Some(path) => format!("file {}", path.display()),
        None => "defaults, no config file".to_owned(),
    };
    let overrides = env_overrides();
    if overrides.is_empty() {
        file
    } else {
        format!("{file}, overridden by {}", overrides.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef0123456789ab3f9a";

    fn parse(yaml: &str) -> anyhow::Result<Config> {
        let config = parse_yaml(yaml)?;
        config.validate()?;
        Ok(config)
    }

    fn error(yaml: &str) -> String {
        format!("{:#}", parse(yaml).expect_err("should be invalid"))
    }

    const FULL: &str = r#"
listen: "0.0.0.0:9095"
storage:
  path: "/var/lib/pagerbridge/db"
pagerduty:
  url: "https://events.eu.pagerduty.com"
  rate_limit: { requests: 960, window: "60s" }
  timeout: "5s"
  user_agent: "pagerbridge-test"
ingest:
  max_body_bytes: 1000
  bearer_token_file: /run/secrets/ingest-tokens
  request_timeout: "5s"
delivery:
  retrigger_after: "1h"
  max_event_age: "48h"
  incident_ttl: "12h"
  max_backoff: "2m"
  shutdown_drain: "500ms"
kubernetes:
  secrets:
    namespace: alerts
    label_selector: "publishing-target=true"
targets:
  - name: db
    routing_key_file: /run/secrets/pd-db
    match: { team: "db", severity: "~critical|warning" }
    severity_map: { P1: critical, sev2: error }
    default_severity: warning
    rate_limit: { requests: 60 }
    url: "https://events.pagerduty.com"
    dedup: group
    fields: { source: "{{ labels.instance }}" }
  - name: default
    routing_key_env: PD_DEFAULT_KEY
"#;

    #[test]
    fn defaults_match_the_documented_values() {
        let config = parse("").expect("empty file is the defaults");
        assert_eq!(config, Config::default());
        assert_eq!(config.listen.to_string(), "127.0.0.1:9095");
        assert_eq!(config.pagerduty.url, "https://events.pagerduty.com");
        assert_eq!(
            config.pagerduty.rate_limit.to_string(),
            "120 requests per 1m"
        );
        assert_eq!(config.ingest.max_body_bytes, 5_242_880);
        assert_eq!(config.ingest.request_timeout, Duration::from_secs(30));
        assert_eq!(
            config.delivery.retrigger_after,
            Duration::from_secs(4 * 3600)
        );
        assert_eq!(parse("# only a comment\n").expect("comments only"), config);
    }

    #[test]
    fn admin_api_is_off_by_default_and_strictly_parsed() {
        assert_eq!(parse("").expect("defaults").admin.bearer_token_file, None);
        let config = parse("admin:\n  bearer_token_file: /run/secrets/admin\n").expect("valid");
        assert_eq!(
            config.admin.bearer_token_file.as_deref(),
            Some(Path::new("/run/secrets/admin"))
        );
        let message = error("admin:\n  token_file: /x\n");
        assert!(message.contains("unknown field `token_file`"), "{message}");
    }

    #[test]
    fn alertmanager_sync_takes_urls_or_one_url() {
        let config = parse("").expect("defaults");
        assert!(config.alertmanager.base_urls().expect("none").is_empty());
        assert!(config.alertmanager.reconcile.enabled);
        assert_eq!(
            config.alertmanager.reconcile.grace,
            Duration::from_secs(300)
        );
        let config = parse(
            "alertmanager:\n  urls: ['http://127.0.0.1:9093', 'https://am-1.example.com:9093']\n",
        )
        .expect("valid");
        let urls = config.alertmanager.base_urls().expect("urls");
        assert_eq!(urls.len(), 2);
        let config = parse("alertmanager: { url: 'http://127.0.0.1:9093' }\n").expect("valid");
        assert_eq!(config.alertmanager.base_urls().expect("url").len(), 1);
        let message = error(
            "alertmanager: { url: 'http://127.0.0.1:9093', urls: ['http://127.0.0.1:9094'] }\n",
        );
        assert!(message.contains("not both"), "{message}");
        let message =
            error("alertmanager: { urls: ['http://127.0.0.1:9093', 'http://127.0.0.1:9093/'] }\n");
        assert!(message.contains("listed twice"), "{message}");
        let message =
            error("alertmanager: { urls: ['http://127.0.0.1:9093', 'http://am.example.com'] }\n");
        assert!(message.contains("alertmanager.urls[1]"), "{message}");
        let message = error(
            "alertmanager: { url: 'http://127.0.0.1:9093', poll_interval: 1m, reconcile: { grace: 30s } }\n",
        );
        assert!(message.contains("reconcile.grace"), "{message}");
        parse(
            "alertmanager: { url: 'http://127.0.0.1:9093', poll_interval: 1m, reconcile: { enabled: false, grace: 30s } }\n",
        )
        .expect("no grace needed when reconciling is off");
    }

    #[test]
    fn silence_watcher_is_off_by_default_and_checked() {
        let config = parse("").expect("defaults");
        assert_eq!(config.alertmanager.url, None);
        assert_eq!(config.alertmanager.poll_interval, Duration::from_secs(30));
        let config = parse("alertmanager: { url: 'http://127.0.0.1:9093', poll_interval: 5s }\n")
            .expect("valid");
        assert_eq!(config.alertmanager.poll_interval, Duration::from_secs(5));
        let message = error("alertmanager: { url: 'http://am.example.com' }\n");
        assert!(message.contains("alertmanager.url"), "{message}");
        let message = error("alertmanager: { url: 'https://am.example.com/?x=1' }\n");
        assert!(message.contains("alertmanager.url"), "{message}");
        assert!(message.contains("no query or fragment"), "{message}");
        let message = error("alertmanager: { interval: 5s }\n");
        assert!(message.contains("unknown field `interval`"), "{message}");
    }

    #[test]
    fn secrets_discovery_is_off_by_default_and_checked() {
        let config = parse("").expect("defaults");
        assert_eq!(config.kubernetes.secrets, None);
        let config = parse("kubernetes:\n  secrets:\n    namespace: null\n").expect("valid");
        assert_eq!(
            config.kubernetes.secrets,
            Some(SecretsDiscovery {
                namespace: None,
                label_selector: "publishing-target=true,type=pagerduty".to_owned(),
            })
        );
        let config =
            parse("kubernetes: { secrets: { namespace: alerts, label_selector: 'a=b' } }\n")
                .expect("valid");
        let secrets = config.kubernetes.secrets.expect("on");
        assert_eq!(secrets.namespace.as_deref(), Some("alerts"));
        assert_eq!(secrets.label_selector, "a=b");
        let message = error("kubernetes: { secrets: { label_selector: '' } }\n");
        assert!(
            message.contains("label_selector must not be empty"),
            "{message}"
        );
        let message = error("kubernetes: { secrets: { selector: 'a=b' } }\n");
        assert!(message.contains("unknown field `selector`"), "{message}");
    }

    #[test]
    fn fallback_webhook_follows_the_transport_rule() {
        let config = parse("fallback: { url: 'https://hooks.example.com/x?token=1' }\n")
            .expect("https, query allowed");
        assert_eq!(
            config
                .fallback
                .webhook()
                .expect("valid")
                .map(|u| u.to_string()),
            Some("https://hooks.example.com/x?token=1".to_owned())
        );
        for (url, expected) in [
            ("http://hooks.example.com/x", "loopback"),
            ("https://user:pw@hooks.example.com/x", "credentials"),
            ("ftp://127.0.0.1/x", "scheme"),
        ] {
            let message = error(&format!("fallback: {{ url: '{url}' }}\n"));
            assert!(message.contains("fallback.url"), "{url}: {message}");
            assert!(message.contains(expected), "{url}: {message}");
            assert!(!message.contains("pw@"), "{url}: {message}");
        }
    }

    #[test]
    fn full_file_parses_and_resolves() {
        let config = parse(FULL).expect("valid");
        assert_eq!(config.pagerduty.rate_limit.requests, 960);
        assert_eq!(config.delivery.shutdown_drain, Duration::from_millis(500));
        assert_eq!(
            config.ingest.bearer_token_file.as_deref(),
            Some(Path::new("/run/secrets/ingest-tokens"))
        );
        assert_eq!(config.ingest.request_timeout, Duration::from_secs(5));

        let targets = config.targets().expect("targets");
        let db = &targets[0];
        assert_eq!(db.key_source, KeySource::File("/run/secrets/pd-db".into()));
        assert_eq!(db.format.dedup, crate::format::DedupMode::Group);
        assert_eq!(
            db.format.default_severity,
            pagerduty_events::Severity::Warning
        );
        // Keys are lowercased, as the formatter looks them up.
        assert_eq!(
            db.format.severity_map.get("p1"),
            Some(&pagerduty_events::Severity::Critical)
        );
        assert_eq!(
            db.format.fields.source.as_deref(),
            Some("{{ labels.instance }}")
        );
        // A partial override keeps the default window.
        assert_eq!(db.rate_limit.requests, 60);
        assert_eq!(db.rate_limit.window, Duration::from_secs(60));
        // Its own endpoint, beside the EU `pagerduty.url`.
        assert_eq!(
            db.url.as_ref().map(|u| u.as_str()),
            Some("https://events.pagerduty.com/")
        );

        let default = &targets[1];
        assert_eq!(default.key_source, KeySource::Env("PD_DEFAULT_KEY".into()));
        assert_eq!(default.rate_limit, config.pagerduty.rate_limit);
        assert_eq!(default.url, None, "sends to pagerduty.url");
        assert_eq!(
            default.format.default_severity,
            pagerduty_events::Severity::Error
        );
    }

    #[test]
    fn unknown_fields_are_named_with_their_location() {
        let message = error("pagerduty:\n  urll: https://x\n");
        assert!(message.contains("unknown field `urll`"), "{message}");
        assert!(message.contains("line 2, column 3"), "{message}");

        let message = error("targets:\n  - name: a\n    routing_key_env: K\n    feilds: {}\n");
        assert!(message.contains("unknown field `feilds`"), "{message}");

        // `fields` is checked strictly too.
        let message =
            error("targets:\n  - name: a\n    routing_key_env: K\n    fields: { summry: x }\n");
        assert!(message.contains("unknown field `summry`"), "{message}");
    }

    #[test]
    fn syntax_errors_have_line_and_column() {
        let message = error("listen: 127.0.0.1:9095\nstorage:\n  path: a\n    b: c\n");
        assert!(message.contains("line 4, column 6"), "{message}");
        let message = error("storage:\n  path: 'unterminated\n");
        assert!(
            message.contains("unclosed quote at line 2, column 9"),
            "{message}"
        );
    }

    #[test]
    fn bad_values_are_refused() {
        for (yaml, expected) in [
            ("listen: localhost\n", "invalid socket address"),
            (
                "pagerduty: { url: 'http://events.example.com' }\n",
                "pagerduty.url",
            ),
            (
                "pagerduty: { url: 'http://events.example.com' }\n",
                "loopback",
            ),
            (
                "pagerduty: { rate_limit: { requests: 0 } }\n",
                "requests must be at least 1",
            ),
            (
                "pagerduty: { rate_limit: { window: 0s } }\n",
                "window must be longer than 0s",
            ),
            ("pagerduty: { timeout: 10 parsecs }\n", "line 1"),
            (
                "delivery: { max_event_age: 0s }\n",
                "delivery.max_event_age",
            ),
            ("ingest: { max_body_bytes: -1 }\n", "line 1"),
        ] {
            let message = error(yaml);
            assert!(message.contains(expected), "{yaml}: {message}");
        }
        assert!(parse("pagerduty: { url: 'http://127.0.0.1:8787' }\n").is_ok());
    }

    #[test]
    fn target_rules() {
        let target = |body: &str| format!("targets:\n  - {body}\n");
        for (yaml, expected) in [
            (target("{ name: '', routing_key_env: K }"), "name must not be empty"),
            (target("{ name: 'a b', routing_key_env: K }"), "may only contain"),
            (target("{ name: 'a/b', routing_key_env: K }"), "may only contain"),
            (target("{ name: a }"), "none is set"),
            (
                target("{ name: a, routing_key_env: K, routing_key_file: /k }"),
                "routing_key_file and routing_key_env",
            ),
            (target("{ name: a, routing_key_env: '' }"), "routing_key_env must not be empty"),
            (
                target("{ name: a, routing_key_env: K, default_severity: high }"),
                "unknown variant `high`",
            ),
            (
                target("{ name: a, routing_key_env: K, severity_map: { p1: urgent } }"),
                "unknown variant `urgent`",
            ),
            (target("{ name: a, routing_key_env: K, dedup: rule }"), "unknown variant `rule`"),
            (target("{ name: a, routing_key_env: K, match: { team: '~(db' } }"), "match.team"),
            (
                target("{ name: a, routing_key_env: K, rate_limit: { requests: 0 } }"),
                "rate_limit",
            ),
            (
                target("{ name: a, routing_key_env: K, url: 'http://events.example.com' }"),
                "targets[0] (\"a\"): url: plain http is only allowed to a loopback address",
            ),
            (
                target("{ name: a, routing_key_env: K, url: 'https://x.example.com/?q=1' }"),
                "url: a base URL takes no query or fragment",
            ),
            (
                target("{ name: a, routing_key_env: K, url: 'https://u:p@x.example.com' }"),
                "url: a URL must not hold credentials",
            ),
            (
                "targets:\n  - { name: a, routing_key_env: K }\n  - { name: a, routing_key_env: L }\n"
                    .to_owned(),
                "name \"a\" is already used by targets[0]",
            ),
        ] {
            let message = error(&yaml);
            assert!(message.contains(expected), "{yaml}: {message}");
        }
    }

    #[test]
    fn storage_backend_is_selected_in_the_file() {
        let config =
            parse("storage:\n  backend: postgres\n  url: 'postgres://pb:s3cret-pw@db:5432/pb'\n")
                .expect("valid");
        let storage = config.storage.resolve().expect("resolves");
        assert_eq!(
            storage.to_string(),
            "postgres://pb:***@db:5432/pb (PostgreSQL)"
        );
        assert!(!format!("{config:?}").contains("s3cret-pw"));
        let message = error("storage:\n  backend: postgres\n  url: 'mysql://pb:s3cret-pw@db/pb'\n");
        assert!(message.contains("postgres://"), "{message}");
        assert!(message.contains("line 3"), "{message}");
        assert!(!message.contains("s3cret-pw"), "{message}");
        let message = error("storage:\n  backend: mongodb\n");
        assert!(message.contains("unknown variant `mongodb`"), "{message}");
    }

    #[test]
    fn lease_ttl_is_checked() {
        assert_eq!(
            parse("").expect("defaults").delivery.lease_ttl,
            Duration::from_secs(10)
        );
        assert_eq!(
            parse("delivery: { lease_ttl: 3s }\n")
                .expect("valid")
                .delivery
                .lease_ttl,
            Duration::from_secs(3)
        );
        for short in ["0s", "500ms"] {
            let message = error(&format!("delivery: {{ lease_ttl: {short} }}\n"));
            assert!(
                message.contains("delivery.lease_ttl must be at least 2s"),
                "{message}"
            );
        }
    }

    #[test]
    fn no_targets_is_valid_config_but_not_servable() {
        let config = parse("listen: 127.0.0.1:1\n").expect("valid");
        let message = format!("{:#}", config.targets().expect_err("no targets"));
        assert!(message.contains("no targets configured"), "{message}");
    }

    #[test]
    fn inline_keys_never_show() {
        let yaml = format!("targets:\n  - {{ name: a, routing_key: {KEY} }}\n");
        let config = parse(&yaml).expect("valid");
        let targets = config.targets().expect("targets");
        let shown = format!(
            "{config:?} {config:#?} {targets:?} {} {}",
            targets[0].key_source,
            serde_json::to_string(&config).expect("serializes"),
        );
        assert!(!shown.contains(KEY), "{shown}");
        assert!(shown.contains("…3f9a"), "{shown}");

        // An error elsewhere in the same file does not quote the key's line.
        let yaml = format!("targets:\n  - name: a\n    routing_key: {KEY}\n    oops: 1\n");
        assert!(!error(&yaml).contains(KEY));
    }

    #[test]
    fn env_var_names_are_spelled_as_operators_write_them() {
        let path = ["pagerduty", "rate_limit", "requests"];
        assert_eq!(
            env_var_name(path.into_iter()),
            "PAGERBRIDGE_PAGERDUTY__RATE_LIMIT__REQUESTS"
        );
    }

    #[test]
    fn an_override_alone_turns_secrets_discovery_on_with_its_defaults() {
        // As `PAGERBRIDGE_KUBERNETES__SECRETS__NAMESPACE=alerts` would, on a file without the
        // section: the selector keeps its default.
        let config = parse("").expect("defaults");
        let overrides = Serialized::defaults(serde_json::json!({
            "kubernetes": {"secrets": {"namespace": "alerts"}}
        }));
        let merged = layer(config, overrides).expect("merges");
        assert_eq!(
            merged.kubernetes.secrets,
            Some(SecretsDiscovery {
                namespace: Some("alerts".to_owned()),
                ..SecretsDiscovery::default()
            })
        );
    }

    #[test]
    fn env_layer_round_trips_every_field() {
        // With nothing to override, the figment layer must give back what it was given, whatever
        // the environment of the test run holds (an empty provider, not the process's variables).
        let config = parse(FULL).expect("valid");
        let nothing = Serialized::defaults(serde_json::Map::new());
        assert_eq!(layer(config.clone(), nothing).expect("round trip"), config);
    }
}
