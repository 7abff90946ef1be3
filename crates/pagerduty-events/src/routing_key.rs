//! The integration ("routing") key: the only credential of the Events API v2.
//!
//! A [`RoutingKey`] can only hold a well-formed key (32 ASCII letters and digits), and it never
//! shows itself: `Debug` and `Display` print a masked form such as `…3f9a`. It deliberately
//! implements neither `Serialize` nor `Deserialize`, so it cannot leak into storage or logs by
//! accident; the raw value is only ever written into a request body by this crate's client.

use std::fmt;
use std::str::FromStr;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

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

    /// HMAC-SHA256 of the key under `secret`: an identity of the key that reveals nothing of
    /// it, and that nobody without the secret can test a guessed key against (a plain hash
    /// could be). The raw key never leaves this crate; this is the only thing derived from it.
    pub fn hmac_sha256(&self, secret: &[u8; 32]) -> [u8; 32] {
        // HMAC takes a key of any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
            .expect("HMAC-SHA256 takes a 32-byte key");
        mac.update(self.0.as_bytes());
        mac.finalize().into_bytes().into()
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

    #[test]
    fn hmac_matches_an_independent_implementation() {
        // Expected values from Python's `hmac.new(secret, key, hashlib.sha256)`.
        // The alphabet, not a real integration key: a fake test key.
        let key = RoutingKey::new("abcdefghijklmnopqrstuvwxyz012345").expect("valid key");
        let hex = |bytes: [u8; 32]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(
            hex(key.hmac_sha256(&[0x0b; 32])),
            "fe8b240d1d380f9ee1ea30728fb63f578db751e742433d86b15b74050c10ea09"
        );
        assert_eq!(
            hex(key.hmac_sha256(&[0x0c; 32])),
            "3cdfd02a7fdb7c41cdb5636cb640030a3ce926944bd0fc3f649dfbdbb7cbbf0f"
        );
    }
}
