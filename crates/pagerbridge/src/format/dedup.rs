//! Dedup keys: which PagerDuty alert an event belongs to (DESIGN.md "Lifecycle mapping").
//!
//! The default key is the SHA-256 of the alert's label set in Prometheus' text form, so it is
//! the same on every replica, after every restart and whatever Alertmanager version sent the
//! alert. `dedup: group` reproduces Alertmanager's own PagerDuty key, the SHA-256 of the
//! webhook's `groupKey`, so teams migrating from Alertmanager's PagerDuty receiver keep their
//! open incidents.

use pagerduty_events::DedupKey;
use sha2::{Digest, Sha256};

use crate::alert::Labels;

/// The per-alert key: lowercase hex SHA-256 of [`prometheus_text`] of the labels.
pub fn alert_dedup_key(labels: &Labels) -> DedupKey {
    hex_key(&prometheus_text(labels))
}

/// Alertmanager's key for a group: lowercase hex SHA-256 of the `groupKey` string.
pub fn group_dedup_key(group_key: &str) -> DedupKey {
    hex_key(group_key)
}

/// Lowercase hex SHA-256 of `data`. Two per alert (its key and its payload's hash): written
/// into a fixed buffer, not collected character by character as `hex::encode` does.
pub fn sha256_hex(data: impl AsRef<[u8]>) -> String {
    let mut text = [0u8; 64];
    // Cannot fail: a digest of 32 bytes fills exactly 64 hex digits, all ASCII.
    let _ = hex::encode_to_slice(Sha256::digest(data.as_ref()), &mut text);
    String::from_utf8_lossy(&text).into_owned()
}

/// A label set as Prometheus writes it: `{alertname="DiskFull",instance="db-1:9100"}`, sorted
/// by name (a `Labels` map already is), no spaces, values escaped as Prometheus escapes them.
pub fn prometheus_text(labels: &Labels) -> String {
    let mut text = String::from("{");
    for (i, (name, value)) in labels.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push_str(name);
        text.push_str("=\"");
        for c in value.chars() {
            match c {
                '\\' => text.push_str("\\\\"),
                '"' => text.push_str("\\\""),
                '\n' => text.push_str("\\n"),
                c => text.push(c),
            }
        }
        text.push('"');
    }
    text.push('}');
    text
}

fn hex_key(data: &str) -> DedupKey {
    // Cannot fail: whatever the input, the digest is 64 hex characters, within 1..=255.
    DedupKey::new(sha256_hex(data)).expect("a SHA-256 hex digest is a valid dedup key")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn prometheus_text_is_sorted_and_escaped() {
        let set = labels(&[
            ("instance", "db-1:9100"),
            ("alertname", "DiskFull"),
            ("note", "a \"b\" \\ c\nd"),
        ]);
        assert_eq!(
            prometheus_text(&set),
            r#"{alertname="DiskFull",instance="db-1:9100",note="a \"b\" \\ c\nd"}"#
        );
        assert_eq!(prometheus_text(&Labels::new()), "{}");
    }

    #[test]
    fn alert_key_is_sha256_of_the_text() {
        let set = labels(&[("alertname", "DiskFull"), ("instance", "db-1:9100")]);
        let expected = hex::encode(Sha256::digest(
            br#"{alertname="DiskFull",instance="db-1:9100"}"#,
        ));
        assert_eq!(alert_dedup_key(&set).as_str(), expected);
        assert_eq!(expected.len(), 64);
    }

    #[test]
    fn group_key_matches_alertmanager() {
        // The dedup_key Alertmanager 0.25's own PagerDuty receiver sent for this group
        // (examples/alertmanager-0.25/alertmanager-native-pd-trigger.json).
        assert_eq!(
            group_dedup_key(r#"{}/{}:{alertname="HarnessGrouped"}"#).as_str(),
            "9382d2526312daff39190cc77fe569a31c240c981bbe36cbdc9c77e8b11e5622"
        );
    }
}
