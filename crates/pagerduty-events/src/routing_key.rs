//! The integration ("routing") key: the only credential of the Events API v2.
//!
//! A [`RoutingKey`] can only hold a well-formed key (32 ASCII letters and digits), and it never
//! shows itself: `Debug` and `Display` print a masked form such as `…3f9a`. It deliberately
//! implements neither `Serialize` nor `Deserialize`, so it cannot leak into storage or logs by
//! accident; the raw value is only ever written into a request body by this crate's client.

use std::fmt;
use std::str::FromStr;

use crate::error::EventError;

/// Length PagerDuty requires of an integration key.
pub const ROUTING_KEY_LEN: usize = 32;

/// A well-formed PagerDuty integration key whose text is never displayed.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RoutingKey(String);

impl RoutingKey {
    /// Parses a key, trimming surrounding whitespace (key files usually end with a newline).
    ///
    /// Errors use PagerDuty's own wording, so a local check reads like the remote one.
    pub fn new(raw: &str) -> Result<Self, EventError> {
        let key = raw.trim();
        if key.is_empty() {
            return Err(EventError::Invalid(vec![
                "'routing_key' is missing or blank".to_owned(),
            ]));
        }
        let mut problems = Vec::new();
        if key.chars().count() != ROUTING_KEY_LEN {
            problems
                .push("Length of 'routing_key' is incorrect (should be 32 characters)".to_owned());
        }
        if !key.chars().all(|c| c.is_ascii_alphanumeric()) {
            problems.push("'routing_key' cannot contain non-alphanumeric characters.".to_owned());
        }
        if problems.is_empty() {
            Ok(Self(key.to_owned()))
        } else {
            Err(EventError::Invalid(problems))
        }
    }

    /// The masked form, e.g. `…3f9a`: enough to tell keys apart, useless to an attacker.
    pub fn masked(&self) -> String {
        let tail = &self.0[self.0.len() - 4..];
        format!("…{tail}")
    }

    /// The raw key, for the request body only.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// Replaces every occurrence of the raw key in `text` with its masked form; used on
    /// anything that came back from the server before it reaches an error or a log.
    pub(crate) fn redact(&self, text: &str) -> String {
        text.replace(&self.0, &self.masked())
    }
}

impl FromStr for RoutingKey {
    type Err = EventError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Debug for RoutingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RoutingKey({})", self.masked())
    }
}

impl fmt::Display for RoutingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef0123456789ab3f9a";

    #[test]
    fn accepts_32_alphanumerics_and_trims_newline() {
        let key = RoutingKey::new(&format!("{KEY}\n")).expect("valid key");
        assert_eq!(key.expose(), KEY);
    }

    #[test]
    fn debug_and_display_are_masked() {
        let key = RoutingKey::new(KEY).expect("valid key");
        assert_eq!(format!("{key}"), "…3f9a");
        assert_eq!(format!("{key:?}"), "RoutingKey(…3f9a)");
        assert!(!format!("{key:?}{key}{key:#?}").contains(KEY));
    }

    #[test]
    fn rejects_wrong_length_and_characters_with_pagerduty_wording() {
        let err = RoutingKey::new("short-key!").expect_err("invalid");
        let EventError::Invalid(problems) = err;
        assert_eq!(
            problems,
            vec![
                "Length of 'routing_key' is incorrect (should be 32 characters)",
                "'routing_key' cannot contain non-alphanumeric characters.",
            ]
        );
        assert!(RoutingKey::new("   ").is_err());
        // 32 characters but multi-byte: counted as characters, refused as non-alphanumeric.
        assert!(RoutingKey::new(&"é".repeat(32)).is_err());
    }

    #[test]
    fn redacts_key_from_text() {
        let key = RoutingKey::new(KEY).expect("valid key");
        assert_eq!(key.redact(&format!("bad key {KEY}")), "bad key …3f9a");
    }
}
