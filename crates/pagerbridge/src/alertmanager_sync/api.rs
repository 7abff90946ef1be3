//! What the Alertmanager sync asks each Alertmanager, through its API v2: every alert it holds
//! (`GET /api/v2/alerts`, active, silenced, inhibited and unprocessed alike) and since when it
//! has been up (`GET /api/v2/status`). Only the fields the sync uses are read.

use std::path::{Path, PathBuf};

use anyhow::Context;
use jiff::Timestamp;
use pagerduty_events::BaseUrl;
use serde::Deserialize;

/// Every alert, whatever its state (Alertmanager's defaults, written out so that a change of
/// them cannot make the list partial).
const ALERTS: &str = "/api/v2/alerts?active=true&silenced=true&inhibited=true&unprocessed=true";
const STATUS: &str = "/api/v2/status";

/// One Alertmanager's answer to a poll.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    pub alerts: Vec<HeldAlert>,
    /// When this Alertmanager started (its `uptime`): until it has been up for a while it may
    /// not hold every alert yet (Prometheus re-sends them at its next evaluations).
    pub up_since: Timestamp,
}

/// An alert an Alertmanager holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldAlert {
    pub fingerprint: String,
    /// Some silence mutes it.
    pub silenced: bool,
    /// Some inhibition rule mutes it.
    pub inhibited: bool,
}

#[derive(Deserialize)]
struct GettableAlert {
    fingerprint: String,
    #[serde(default)]
    status: Option<GettableStatus>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GettableStatus {
    #[serde(default)]
    silenced_by: Vec<String>,
    #[serde(default)]
    inhibited_by: Vec<String>,
}

#[derive(Deserialize)]
struct Status {
    uptime: Timestamp,
}

/// Parses `GET /api/v2/alerts`. An alert without a fingerprint cannot be matched to an
/// incident, so it is refused as a whole answer: a list the sync cannot read in full must not
/// count as one that lacks alerts.
pub fn parse_alerts(body: &[u8]) -> anyhow::Result<Vec<HeldAlert>> {
    let alerts: Vec<GettableAlert> =
        serde_json::from_slice(body).context("unexpected JSON from Alertmanager's alert list")?;
    alerts
        .into_iter()
        .map(|alert| {
            anyhow::ensure!(
                !alert.fingerprint.is_empty(),
                "Alertmanager listed an alert without a fingerprint"
            );
            let status = alert.status.unwrap_or(GettableStatus {
                silenced_by: Vec::new(),
                inhibited_by: Vec::new(),
            });
            Ok(HeldAlert {
                fingerprint: alert.fingerprint,
                silenced: !status.silenced_by.is_empty(),
                inhibited: !status.inhibited_by.is_empty(),
            })
        })
        .collect()
}

/// Parses `GET /api/v2/status` for its `uptime` (when Alertmanager started).
pub fn parse_status(body: &[u8]) -> anyhow::Result<Timestamp> {
    let status: Status =
        serde_json::from_slice(body).context("unexpected JSON from Alertmanager's status")?;
    Ok(status.uptime)
}

/// Asks Alertmanagers, with one HTTP client.
pub struct Client {
    http: reqwest::Client,
    bearer_token_file: Option<PathBuf>,
}

impl Client {
    pub fn new(http: reqwest::Client, bearer_token_file: Option<PathBuf>) -> Self {
        Self {
            http,
            bearer_token_file,
        }
    }

    /// Everything the sync needs of the Alertmanager at `base`.
    pub async fn view(&self, base: &BaseUrl) -> anyhow::Result<View> {
        // Read at every poll: a rotated token is used at once.
        let token = match &self.bearer_token_file {
            Some(path) => Some(read_token(path)?),
            None => None,
        };
        let status = self.get(base, STATUS, token.as_deref()).await?;
        let up_since = parse_status(&status)?;
        let alerts = self.get(base, ALERTS, token.as_deref()).await?;
        Ok(View {
            alerts: parse_alerts(&alerts)?,
            up_since,
        })
    }

    async fn get(
        &self,
        base: &BaseUrl,
        path: &str,
        token: Option<&str>,
    ) -> anyhow::Result<Vec<u8>> {
        let mut request = self.http.get(base.join(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("GET {path}: Alertmanager unreachable"))?;
        let status = response.status();
        anyhow::ensure!(
            status.is_success(),
            "GET {path}: Alertmanager answered {status}"
        );
        let body = response
            .bytes()
            .await
            .with_context(|| format!("GET {path}: reading Alertmanager's answer"))?;
        Ok(body.to_vec())
    }
}

/// The token in `path`, without surrounding whitespace; never shown in errors.
pub(crate) fn read_token(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "alertmanager.bearer_token_file {}: cannot be read",
            path.display()
        )
    })?;
    let token = text.trim();
    anyhow::ensure!(
        !token.is_empty(),
        "alertmanager.bearer_token_file {}: is empty",
        path.display()
    );
    Ok(token.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trimmed from Alertmanager 0.25's answers.
    const ALERTS_ANSWER: &str = r#"[
      {
        "annotations": {"summary": "DiskFull on db-1"},
        "endsAt": "2026-11-29T22:00:00.000Z",
        "fingerprint": "4b5c3fa4c2b7a1e0",
        "receivers": [{"name": "pagerbridge"}],
        "startsAt": "2026-11-29T21:00:00.000Z",
        "status": {"inhibitedBy": [], "silencedBy": ["8f0e5cbb-1b2c-4c5d-9e6f-0a1b2c3d4e5f"], "state": "suppressed"},
        "updatedAt": "2026-11-29T21:05:00.000Z",
        "labels": {"alertname": "DiskFull", "instance": "db-1"}
      },
      {
        "fingerprint": "0000000000000001",
        "status": {"inhibitedBy": ["0000000000000009"], "silencedBy": [], "state": "suppressed"},
        "labels": {"alertname": "Inhibited"}
      },
      {
        "fingerprint": "0000000000000002",
        "status": {"inhibitedBy": [], "silencedBy": [], "state": "active"},
        "labels": {"alertname": "Active"}
      }
    ]"#;

    const STATUS_ANSWER: &str = r#"{
      "cluster": {"peers": [], "status": "disabled"},
      "config": {"original": "global: {}"},
      "uptime": "2026-11-29T20:59:01.123Z",
      "versionInfo": {"version": "0.25.0"}
    }"#;

    #[test]
    fn every_alert_is_read_with_its_state() {
        let alerts = parse_alerts(ALERTS_ANSWER.as_bytes()).expect("parses");
        let states: Vec<(&str, bool, bool)> = alerts
            .iter()
            .map(|a| (a.fingerprint.as_str(), a.silenced, a.inhibited))
            .collect();
        assert_eq!(
            states,
            [
                ("4b5c3fa4c2b7a1e0", true, false),
                ("0000000000000001", false, true),
                ("0000000000000002", false, false),
            ]
        );
    }

    #[test]
    fn uptime_is_when_it_started() {
        assert_eq!(
            parse_status(STATUS_ANSWER.as_bytes()).expect("parses"),
            "2026-11-29T20:59:01.123Z"
                .parse::<Timestamp>()
                .expect("time")
        );
    }

    #[test]
    fn answers_that_cannot_be_read_in_full_are_errors() {
        assert!(parse_alerts(b"{\"error\": \"nope\"}").is_err());
        assert!(parse_alerts(b"not json").is_err());
        assert!(parse_alerts(br#"[{"fingerprint": ""}]"#).is_err());
        assert!(parse_alerts(br#"[{"labels": {}}]"#).is_err());
        assert!(parse_alerts(b"[]").expect("empty").is_empty());
        assert!(parse_status(b"{}").is_err());
        assert!(parse_status(br#"{"uptime": "yesterday"}"#).is_err());
    }

    #[test]
    fn the_token_file_is_trimmed_and_never_shown() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret-token\n").expect("write");
        assert_eq!(read_token(&path).expect("token"), "s3cret-token");
        std::fs::write(&path, " \n").expect("write");
        let message = format!("{:#}", read_token(&path).expect_err("empty"));
        assert!(message.contains("is empty"), "{message}");
        let missing = dir.path().join("missing");
        let message = format!("{:#}", read_token(&missing).expect_err("missing"));
        assert!(message.contains("cannot be read"), "{message}");
    }
}
