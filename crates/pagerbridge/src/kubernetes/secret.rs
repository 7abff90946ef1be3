//! A Secret's `config` → a target: pure, no Kubernetes API.
//!
//! The Secret holds, under key `config`, JSON or YAML with `name`, `type: "pagerduty"`,
//! `routing_key`, optional `enabled` (false: the Secret is ignored) and `url`, and the
//! per-target options of the config file (`match`, `severity_map`, `default_severity`,
//! `rate_limit`, `dedup`, `fields`), checked by the same code as the file's targets.
//!
//! Errors name the field and never carry the key: parse errors can quote values (serde's
//! "invalid type: string …"), so the key's text is cut out of every message, and a document
//! that is not even JSON or YAML is reported without the parser's excerpt of it.

use std::collections::BTreeMap;

use pagerduty_events::Severity;
use serde::Deserialize;

use crate::config::{
    Fields, InlineKey, KeySource, RateLimit, SyncAction, Target, TargetConfig, default_on_silence,
    default_severity,
};
use crate::format::DedupMode;

/// The key of the Secret's data that holds the target.
pub const CONFIG_KEY: &str = "config";

/// What a Secret's `config` says, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretTarget {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    routing_key: InlineKey,
    #[serde(default = "enabled")]
    enabled: bool,
    #[serde(default)]
    url: Option<String>,
    #[serde(default, rename = "match")]
    matchers: BTreeMap<String, String>,
    #[serde(default)]
    severity_map: BTreeMap<String, Severity>,
    #[serde(default = "default_severity")]
    default_severity: Severity,
    #[serde(default)]
    rate_limit: Option<RateLimit>,
    #[serde(default)]
    dedup: DedupMode,
    #[serde(default)]
    fields: Fields,
    #[serde(default = "default_on_silence")]
    on_silence: SyncAction,
    #[serde(default)]
    on_inhibit: SyncAction,
    /// alert-history's publishing targets also carry a `format` (for PagerDuty targets,
    /// `pagerduty`) and `headers`: accepted, so that their Secrets work unchanged, and not
    /// used (the routing key is `routing_key`).
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    #[allow(dead_code)] // read by serde only: accepted and ignored
    headers: Option<serde_json::Value>,
}

fn enabled() -> bool {
    true
}

/// What a valid Secret comes to.
#[derive(Debug)]
pub enum Parsed {
    Target(Box<Target>),
    /// `enabled: false`: the Secret is there, but is no target.
    Disabled {
        name: String,
    },
}

/// Why a Secret is not a target. The message names what is wrong, never the key.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SecretError(String);

/// What parsing needs from the service's own configuration.
#[derive(Clone, Debug)]
pub struct Defaults {
    /// `pagerduty.rate_limit`, for targets without their own.
    pub rate_limit: RateLimit,
}

/// Parses the `config` of the Secret `secret` (`namespace/name`, for the key source).
pub fn parse(
    secret: &str,
    config: Option<&[u8]>,
    defaults: &Defaults,
) -> Result<Parsed, SecretError> {
    let config = config.ok_or_else(|| SecretError(format!("no `{CONFIG_KEY}` key in its data")))?;
    let text = std::str::from_utf8(config)
        .map_err(|_| SecretError(format!("`{CONFIG_KEY}` is not UTF-8 text")))?;
    let document = document(text)?;
    if document.get("filter_config").is_some() {
        // alert-history's filter; dropping it silently would page for what it filtered out.
        return Err(SecretError(
            "`filter_config` (alert-history's filter) is not supported: express it with `match`"
                .to_owned(),
        ));
    }
    let key_text = document
        .get("routing_key")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let redact = |message: String| {
        if key_text.is_empty() {
            message
        } else {
            message.replace(&key_text, "<routing key>")
        }
    };
    let written: SecretTarget = serde_json::from_value(document)
        .map_err(|error| SecretError(redact(format!("`{CONFIG_KEY}`: {error}"))))?;
    if written.kind != "pagerduty" {
        return Err(SecretError(format!(
            "type {:?} is not \"pagerduty\"",
            written.kind
        )));
    }
    if let Some(format) = written.format.as_deref().filter(|f| *f != "pagerduty") {
        return Err(SecretError(format!(
            "format {format:?} is not \"pagerduty\" (alert-history's field; leave it out)"
        )));
    }
    if !written.enabled {
        return Ok(Parsed::Disabled { name: written.name });
    }
    let key = written.routing_key;
    let file_form = TargetConfig {
        name: written.name,
        routing_key_file: None,
        routing_key_env: None,
        routing_key: Some(key.clone()),
        matchers: written.matchers,
        severity_map: written.severity_map,
        default_severity: written.default_severity,
        rate_limit: written.rate_limit,
        url: written.url.as_deref().map(base_url),
        dedup: written.dedup,
        fields: written.fields,
        on_silence: written.on_silence,
        on_inhibit: written.on_inhibit,
    };
    let mut target = file_form
        .resolve(defaults.rate_limit)
        .map_err(|error| SecretError(redact(format!("{error:#}"))))?;
    // Checked here too, so an invalid key is refused with the rest of the Secret.
    key.routing_key()
        .map_err(|error| SecretError(redact(format!("{error:#}"))))?;
    target.key_source = KeySource::Secret {
        secret: secret.to_owned(),
        key,
    };
    Ok(Parsed::Target(Box::new(target)))
}

/// The document as a JSON value: JSON when it reads as JSON, YAML otherwise (YAML is
/// mostly a superset, but JSON's errors are the clearer for a JSON document).
fn document(text: &str) -> Result<serde_json::Value, SecretError> {
    let value = if text.trim_start().starts_with('{') {
        // serde_json's messages hold a position, never an excerpt of the text.
        serde_json::from_str(text)
            .map_err(|error| SecretError(format!("`{CONFIG_KEY}` is not valid JSON: {error}")))?
    } else {
        // The YAML parser's messages can quote the line, which may hold the key.
        serde_saphyr::from_str(text)
            .map_err(|_| SecretError(format!("`{CONFIG_KEY}` is neither JSON nor valid YAML")))?
    };
    match value {
        serde_json::Value::Object(_) => Ok(value),
        _ => Err(SecretError(format!(
            "`{CONFIG_KEY}` must be a mapping with name, type and routing_key"
        ))),
    }
}

/// A Secret's `url` as a base URL: alert-history's Secrets name the full endpoint
/// (`https://events.pagerduty.com/v2/enqueue`), ours the base, so a trailing `/v2/enqueue` is
/// cut off. Whether the rest is a valid URL is checked with the file's targets.
fn base_url(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    url.strip_suffix("/v2/enqueue").unwrap_or(url).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MatchValue;

    const KEY: &str = "0123456789abcdef0123456789abcdef"; // fake test key

    fn defaults() -> Defaults {
        Defaults {
            rate_limit: RateLimit::default(),
        }
    }

    fn parsed(config: &str) -> Result<Parsed, SecretError> {
        parse("alerts/pd-db", Some(config.as_bytes()), &defaults())
    }

    fn target(config: &str) -> Target {
        match parsed(config).expect("valid") {
            Parsed::Target(target) => *target,
            Parsed::Disabled { name } => panic!("{name} is disabled"),
        }
    }

    fn refused(config: &str) -> String {
        let message = parsed(config).expect_err("invalid").to_string();
        assert!(!message.contains(KEY), "the key leaked: {message}");
        message
    }

    #[test]
    fn json_with_every_option() {
        let target = target(&format!(
            r#"{{"name": "db", "type": "pagerduty", "routing_key": "{KEY}",
                "url": "https://events.pagerduty.com/v2/enqueue",
                "match": {{"team": "db", "severity": "~critical|warning"}},
                "severity_map": {{"P1": "critical"}}, "default_severity": "error",
                "rate_limit": {{"requests": 10, "window": "1m"}}, "dedup": "group",
                "fields": {{"summary": "{{{{ labels.alertname }}}}"}},
                "on_silence": "resolve", "on_inhibit": "acknowledge"}}"#
        ));
        assert_eq!(target.name, "db");
        assert_eq!(target.on_silence, crate::config::SyncAction::Resolve);
        assert_eq!(target.on_inhibit, crate::config::SyncAction::Acknowledge);
        assert_eq!(target.key_source.load().expect("key").masked(), "…cdef");
        assert_eq!(
            target.key_source.to_string(),
            "Kubernetes Secret alerts/pd-db"
        );
        assert_eq!(target.matchers.len(), 2);
        assert!(
            target
                .matchers
                .iter()
                .any(|m| matches!(&m.value, MatchValue::Regex { pattern, .. } if pattern == "critical|warning"))
        );
        assert_eq!(
            target.format.severity_map.get("p1"),
            Some(&Severity::Critical)
        );
        assert_eq!(target.format.default_severity, Severity::Error);
        assert_eq!(target.rate_limit.requests, 10);
        // alert-history's full endpoint is taken as its base.
        assert_eq!(
            target.url.as_ref().map(|u| u.as_str()),
            Some("https://events.pagerduty.com/")
        );
        assert!(!format!("{target:?}").contains(KEY));
    }

    /// alert-history's publishing-target Secrets carry `format` and `headers` too: they work
    /// unchanged. Its `filter_config` is refused (ignoring it would page for what it filters),
    /// and so is a `format` that is not PagerDuty's.
    #[test]
    fn alert_history_secrets_work_unchanged_but_a_filter_is_not_dropped() {
        let target = target(&format!(
            r#"{{"name": "ah", "type": "pagerduty", "routing_key": "{KEY}", "enabled": true,
                "url": "https://events.pagerduty.com/v2/enqueue", "format": "pagerduty",
                "headers": {{"X-Team": "sre"}}}}"#
        ));
        assert_eq!(target.name, "ah");
        let filtered = refused(&format!(
            r#"{{"name": "ah", "type": "pagerduty", "routing_key": "{KEY}",
                "filter_config": {{"severity": ["critical"]}}}}"#
        ));
        assert!(filtered.contains("filter_config"), "{filtered}");
        let slack = refused(&format!(
            r#"{{"name": "ah", "type": "pagerduty", "routing_key": "{KEY}", "format": "slack"}}"#
        ));
        assert!(slack.contains("\"slack\""), "{slack}");
        assert!(!slack.contains(KEY) && !filtered.contains(KEY));
    }

    #[test]
    fn a_url_of_its_own_is_the_targets() {
        for url in [
            "https://events.eu.pagerduty.com",
            "https://events.eu.pagerduty.com/",
            "https://events.eu.pagerduty.com/v2/enqueue/",
        ] {
            let target = target(&format!(
                "name: eu\ntype: pagerduty\nrouting_key: {KEY}\nurl: {url}\n"
            ));
            assert_eq!(
                target.url.as_ref().map(|u| u.as_str()),
                Some("https://events.eu.pagerduty.com/"),
                "{url}"
            );
        }
    }

    #[test]
    fn yaml_with_defaults() {
        let target = target(&format!(
            "name: web\ntype: pagerduty\nrouting_key: {KEY}\nenabled: true\n"
        ));
        assert_eq!(target.name, "web");
        assert!(target.matchers.is_empty());
        assert_eq!(target.rate_limit, RateLimit::default());
        assert_eq!(target.url, None, "pagerduty.url");
    }

    #[test]
    fn disabled_is_no_target() {
        let parsed = parsed(&format!(
            "name: web\ntype: pagerduty\nrouting_key: {KEY}\nenabled: false\n"
        ))
        .expect("valid");
        assert!(matches!(parsed, Parsed::Disabled { name } if name == "web"));
    }

    #[test]
    fn invalid_secrets_are_refused_naming_the_problem_never_the_key() {
        let cases = [
            // (config, what the message says)
            (
                format!("name: web\ntype: slack\nrouting_key: {KEY}\n"),
                "\"slack\"",
            ),
            ("name: web\ntype: pagerduty\n".to_owned(), "routing_key"),
            (
                format!("name: web\ntype: pagerduty\nrouting_key: {KEY}\ncolour: red\n"),
                "unknown field `colour`",
            ),
            (
                format!("name: 'we b'\ntype: pagerduty\nrouting_key: {KEY}\n"),
                "may only contain",
            ),
            (
                format!("name: web\ntype: pagerduty\nrouting_key: {KEY}\nmatch: {{team: '~('}}\n"),
                "match.team",
            ),
            (
                format!(
                    "name: web\ntype: pagerduty\nrouting_key: {KEY}\nrate_limit: {{requests: 0}}\n"
                ),
                "rate_limit",
            ),
            (
                format!(
                    "name: web\ntype: pagerduty\nrouting_key: {KEY}\nurl: http://events.eu.pagerduty.com\n"
                ),
                "url: plain http is only allowed to a loopback address",
            ),
            (
                format!("name: web\ntype: pagerduty\nrouting_key: {KEY}\nurl: not a url\n"),
                "url: not a URL",
            ),
            // The key where a boolean belongs: serde would quote it.
            (
                format!("name: web\ntype: pagerduty\nrouting_key: {KEY}\nenabled: {KEY}\n"),
                "invalid type",
            ),
            (
                format!("{{\"name\": \"web\", \"routing_key\": \"{KEY}\",}}"),
                "not valid JSON",
            ),
            (
                format!("name: [web\nrouting_key: {KEY}\n"),
                "neither JSON nor valid YAML",
            ),
            ("just a string".to_owned(), "must be a mapping"),
            (
                "name: web\ntype: pagerduty\nrouting_key: short-secret-key\n".to_owned(),
                "routing_key",
            ),
        ];
        for (config, expected) in cases {
            let message = refused(&config);
            assert!(message.contains(expected), "{config:?} → {message}");
            assert!(!message.contains("short-secret-key"), "{message}");
        }
        let message = parse("alerts/x", None, &defaults())
            .expect_err("no config")
            .to_string();
        assert!(message.contains("no `config` key"), "{message}");
    }
}
