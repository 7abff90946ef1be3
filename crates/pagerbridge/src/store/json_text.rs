//! JSON as the outbox stores it: text, serialized once from a typed value.
//!
//! An accepted event goes from its typed form (an `AlertEvent`, a `ChangeEvent`, the source
//! `Alert`) straight to the text a row holds. Going through a `serde_json::Value` on the way
//! built, then serialized and dropped, a tree of maps per event: at thousands of alerts a
//! second, more work than the rest of formatting.

use serde::Serialize;
use serde_json::Value;

/// JSON text: only built by serializing, so it always holds valid JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonText(String);

impl JsonText {
    /// Serializes `value`; fails only for a type whose `Serialize` can fail (a map with
    /// non-string keys).
    pub fn of<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        serde_json::to_string(value).map(Self)
    }

    /// `{}`: what stands in for an event that could not be serialized, so that it is
    /// dead-lettered visibly rather than lost.
    pub fn empty_object() -> Self {
        Self("{}".to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<Value> for JsonText {
    fn from(value: Value) -> Self {
        // A `Value`'s map keys are strings: serializing it cannot fail.
        Self(value.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    #[test]
    fn holds_what_serde_json_writes_and_parses_back() {
        let value = json!({"event_action": "trigger", "payload": {"summary": "x"}});
        let text = JsonText::of(&value).expect("serializes");
        assert_eq!(text.as_str(), value.to_string());
        let parsed: Value = serde_json::from_str(text.as_str()).expect("valid JSON");
        assert_eq!(parsed, value);
        assert_eq!(JsonText::from(value.clone()), text);
        assert_eq!(JsonText::empty_object().as_str(), "{}");
    }

    #[test]
    fn a_value_that_cannot_be_serialized_is_an_error() {
        let map: BTreeMap<(u8, u8), u8> = BTreeMap::from([((1, 2), 3)]);
        assert!(JsonText::of(&map).is_err());
    }
}
