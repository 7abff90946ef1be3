//! Which send budget a request counts against: one per routing key, named without the key.
//!
//! PagerDuty limits requests per routing key, so two targets sharing a key share one budget.
//! Storage must never hold the key, nor a plain hash of it (anyone holding the table could
//! hash a guessed key and compare). A [`BudgetId`] is therefore HMAC-SHA256 of the key under a
//! [`BudgetSecret`]: 32 random bytes generated once, on first start, and kept in the same
//! database (`budget_secret`), so every replica derives the same id from the same key.
//!
//! The trade-off, stated plainly: the secret lives next to the budget rows. It protects the
//! key against someone holding the budget table alone (a partial dump, a leaked backup of
//! that table), not against someone with the whole database, who has the secret too and can
//! test guesses. Routing keys are 32 random alphanumerics, so guessing stays hopeless either
//! way; the HMAC is there so the stored id is never a shortcut.

use std::fmt;

use pagerduty_events::RoutingKey;

/// The server-side secret budget ids are derived with. Its `Debug` shows nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct BudgetSecret([u8; 32]);

impl BudgetSecret {
    /// Fresh random bytes, for the one time a database has no secret yet.
    pub fn generate() -> Self {
        Self(rand::random())
    }

    /// The secret as stored; `None` if the stored value is not 32 bytes.
    pub fn from_stored(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    /// The bytes to store.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for BudgetSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BudgetSecret(…)")
    }
}

/// The identity of one routing key's send budget: the hex of HMAC-SHA256(secret, key).
/// It can only be made from a key and the secret, and reveals nothing of the key, so it may
/// be stored, logged and debugged freely.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BudgetId(String);

impl BudgetId {
    pub fn new(key: &RoutingKey, secret: &BudgetSecret) -> Self {
        Self(hex::encode(key.hmac_sha256(&secret.0)))
    }

    /// The id as stored (64 hex digits).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BudgetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef0123456789ab3f9a";

    fn key(raw: &str) -> RoutingKey {
        RoutingKey::new(raw).expect("valid key")
    }

    #[test]
    fn same_key_and_secret_give_the_same_id() {
        let secret = BudgetSecret([7; 32]);
        assert_eq!(
            BudgetId::new(&key(KEY), &secret),
            BudgetId::new(&key(KEY), &secret.clone())
        );
    }

    #[test]
    fn another_secret_or_key_gives_another_id() {
        let id = BudgetId::new(&key(KEY), &BudgetSecret([7; 32]));
        assert_ne!(id, BudgetId::new(&key(KEY), &BudgetSecret([8; 32])));
        let other = "0123456789abcdef0123456789ab3f9b";
        assert_ne!(id, BudgetId::new(&key(other), &BudgetSecret([7; 32])));
    }

    #[test]
    fn the_id_is_hex_and_holds_nothing_of_the_key() {
        let id = BudgetId::new(&key(KEY), &BudgetSecret([7; 32]));
        assert_eq!(id.as_str().len(), 64);
        assert!(id.as_str().chars().all(|c| c.is_ascii_hexdigit()));
        for shown in [id.to_string(), format!("{id:?}")] {
            assert!(!shown.contains(KEY));
            assert!(
                !shown.contains(&KEY[KEY.len() - 8..]),
                "not even the key's tail"
            );
        }
    }

    #[test]
    fn secrets_are_random_and_stored_exactly() {
        let secret = BudgetSecret::generate();
        assert_ne!(secret, BudgetSecret::generate());
        assert_eq!(BudgetSecret::from_stored(secret.as_bytes()), Some(secret));
        assert_eq!(BudgetSecret::from_stored(&[1; 31]), None);
        assert_eq!(format!("{:?}", BudgetSecret([7; 32])), "BudgetSecret(…)");
    }
}
