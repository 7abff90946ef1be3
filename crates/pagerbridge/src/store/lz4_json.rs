//! The outbox's JSON as SQLite stores it: LZ4 blocks, the source alert compressed against its
//! event.
//!
//! Why: an Alertmanager trigger's event is about 1.6 KiB of JSON and its alert another 0.7 KiB
//! that repeats the event's details, so a row took a 4 KiB page of its own, and every accepted
//! alert wrote (and fsync'd) a page of WAL. Compressed, the event is about 1 KiB and the alert,
//! with the event as LZ4's dictionary, a few dozen bytes: three rows to a page. Compression
//! runs in the caller's task before the group commit, so the single writer only copies bytes.
//!
//! Rows written before (text) still read as they are: a column's value is JSON text or a
//! compressed block, and SQLite says which. PostgreSQL stores text (8 KiB pages; it compresses
//! large values itself).

use std::borrow::Cow;

use sqlx::{Decode, Postgres, Sqlite, Type, TypeInfo, ValueRef};

use super::{NewEvent, StoreError};

/// LZ4 cannot expand a byte of input into more than about 255 bytes of output (a match's
/// length grows by at most 255 per byte that encodes it): a block that claims more than this
/// many times its own size is damaged, and is refused rather than allocated for — a damaged
/// row must be an error, not an abort.
const MAX_RATIO: usize = 256;

/// An event's JSON and its alert's, compressed for the row.
#[derive(Debug)]
pub(super) struct Packed {
    pub(super) event: Vec<u8>,
    pub(super) alert: Option<Vec<u8>>,
}

impl Packed {
    /// Compresses `event`'s JSON, and its alert's against it.
    pub(super) fn of(event: &NewEvent) -> Self {
        let text = event.event.as_str().as_bytes();
        Self {
            event: lz4_flex::block::compress_prepend_size(text),
            alert: event.alert.as_ref().map(|alert| {
                lz4_flex::block::compress_prepend_size_with_dict(alert.as_str().as_bytes(), text)
            }),
        }
    }
}

/// A JSON column as read back: text, or a block [`Packed`] wrote.
#[derive(Debug)]
pub(super) enum StoredJson {
    Text(String),
    Lz4(Vec<u8>),
}

impl StoredJson {
    /// The event's JSON text.
    pub(super) fn event(&self) -> Result<Cow<'_, str>, StoreError> {
        match self {
            StoredJson::Text(text) => Ok(Cow::Borrowed(text)),
            StoredJson::Lz4(block) => unpack("event", block, None).map(Cow::Owned),
        }
    }

    /// The alert's JSON text, given its event's (the dictionary it was compressed against).
    pub(super) fn alert(&self, event: &str) -> Result<Cow<'_, str>, StoreError> {
        match self {
            StoredJson::Text(text) => Ok(Cow::Borrowed(text)),
            StoredJson::Lz4(block) => unpack("alert", block, Some(event)).map(Cow::Owned),
        }
    }
}

/// Decompresses a block (its size first, little-endian u32, then LZ4) into UTF-8 text.
fn unpack(what: &str, block: &[u8], dict: Option<&str>) -> Result<String, StoreError> {
    let corrupt =
        |why: &dyn std::fmt::Display| StoreError::Corrupt(format!("stored {what}: {why}"));
    let (size, data) = block
        .split_first_chunk::<4>()
        .ok_or_else(|| corrupt(&"a compressed block shorter than its size"))?;
    let size = u32::from_le_bytes(*size) as usize;
    if size > data.len().saturating_mul(MAX_RATIO).saturating_add(64) {
        return Err(corrupt(&format!("a compressed block claims {size} bytes")));
    }
    let bytes = match dict {
        None => lz4_flex::block::decompress(data, size),
        Some(dict) => lz4_flex::block::decompress_with_dict(data, size, dict.as_bytes()),
    }
    .map_err(|error| corrupt(&error))?;
    if bytes.len() != size {
        return Err(corrupt(&format!("{} bytes, not {size}", bytes.len())));
    }
    String::from_utf8(bytes).map_err(|error| corrupt(&error))
}

impl Type<Sqlite> for StoredJson {
    fn type_info() -> <Sqlite as sqlx::Database>::TypeInfo {
        <Vec<u8> as Type<Sqlite>>::type_info()
    }

    fn compatible(ty: &<Sqlite as sqlx::Database>::TypeInfo) -> bool {
        <Vec<u8> as Type<Sqlite>>::compatible(ty) || <String as Type<Sqlite>>::compatible(ty)
    }
}

impl<'r> Decode<'r, Sqlite> for StoredJson {
    fn decode(
        value: <Sqlite as sqlx::Database>::ValueRef<'r>,
    ) -> Result<Self, sqlx::error::BoxDynError> {
        // The value's own type, not the column's declared one (TEXT for both kinds).
        if value.type_info().name() == "BLOB" {
            <Vec<u8> as Decode<Sqlite>>::decode(value).map(StoredJson::Lz4)
        } else {
            <String as Decode<Sqlite>>::decode(value).map(StoredJson::Text)
        }
    }
}

impl Type<Postgres> for StoredJson {
    fn type_info() -> <Postgres as sqlx::Database>::TypeInfo {
        <String as Type<Postgres>>::type_info()
    }

    fn compatible(ty: &<Postgres as sqlx::Database>::TypeInfo) -> bool {
        <String as Type<Postgres>>::compatible(ty)
    }
}

impl<'r> Decode<'r, Postgres> for StoredJson {
    fn decode(
        value: <Postgres as sqlx::Database>::ValueRef<'r>,
    ) -> Result<Self, sqlx::error::BoxDynError> {
        <String as Decode<Postgres>>::decode(value).map(StoredJson::Text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Action, Condition, JsonText};

    fn new_event(event: serde_json::Value, alert: Option<serde_json::Value>) -> NewEvent {
        NewEvent {
            target: "default".to_owned(),
            dedup_key: Some("k".to_owned()),
            action: Action::Trigger,
            severity: None,
            event: JsonText::from(event),
            alert: alert.map(JsonText::from),
            fingerprint: None,
            labels_key: false,
            payload_hash: None,
            condition: Condition::Always,
            source: None,
        }
    }

    #[test]
    fn an_event_and_its_alert_come_back_as_they_were_and_smaller() {
        let details = serde_json::json!({
            "labels": {"alertname": "DiskFull", "instance": "db-1:9100", "severity": "critical"},
            "annotations": {"summary": "Disk full on db-1", "runbook_url": "https://runbooks.example/disk"},
            "starts_at": "2026-11-29T18:53:45.282Z",
        });
        let event =
            serde_json::json!({"event_action": "trigger", "payload": {"custom_details": details}});
        let mut alert = details.clone();
        alert["status"] = "firing".into();
        let new = new_event(event, Some(alert));
        let packed = Packed::of(&new);
        let event = StoredJson::Lz4(packed.event);
        let text = event.event().expect("event");
        assert_eq!(text, new.event.as_str());
        let alert = StoredJson::Lz4(packed.alert.expect("alert"));
        let alert_text = alert.alert(&text).expect("alert");
        assert_eq!(
            Some(alert_text.as_ref()),
            new.alert.as_ref().map(JsonText::as_str)
        );
        let StoredJson::Lz4(block) = &alert else {
            unreachable!()
        };
        assert!(
            block.len() * 4 < alert_text.len(),
            "the alert repeats its event: {} of {} bytes",
            block.len(),
            alert_text.len()
        );
    }

    #[test]
    fn text_reads_as_it_is() {
        let stored = StoredJson::Text("{\"a\":1}".to_owned());
        assert_eq!(stored.event().expect("event"), "{\"a\":1}");
        assert_eq!(stored.alert("{}").expect("alert"), "{\"a\":1}");
    }

    #[test]
    fn a_damaged_block_is_an_error_not_a_panic_or_a_huge_allocation() {
        // Highly compressible text compresses near LZ4's bound, and still reads back.
        let zeros = new_event(serde_json::json!({"z": "0".repeat(1 << 20)}), None);
        let packed = Packed::of(&zeros);
        assert_eq!(
            StoredJson::Lz4(packed.event).event().expect("event"),
            zeros.event.as_str()
        );
        let packed = Packed::of(&new_event(
            serde_json::json!({"summary": "x".repeat(300)}),
            None,
        ));
        let mut cut = packed.event.clone();
        cut.truncate(cut.len() / 2);
        let mut flipped = packed.event.clone();
        for byte in flipped.iter_mut().skip(4) {
            *byte ^= 0x5a;
        }
        let mut huge = packed.event.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        for block in [vec![], vec![1, 0], cut, flipped, huge] {
            let stored = StoredJson::Lz4(block.clone());
            let result = stored.event();
            assert!(
                matches!(result, Err(StoreError::Corrupt(_))),
                "{block:?}: {result:?}"
            );
        }
    }

    #[test]
    fn an_alert_needs_its_own_event_as_dictionary() {
        let new = new_event(
            serde_json::json!({"summary": "the same words, the same words, the same words"}),
            Some(serde_json::json!({"summary": "the same words, the same words, the same words"})),
        );
        let alert = StoredJson::Lz4(Packed::of(&new).alert.expect("alert"));
        let wrong = alert.alert("{\"something\":\"else entirely, of another length\"}");
        assert!(
            !matches!(wrong, Ok(ref text) if text == new.alert.as_ref().map(JsonText::as_str).unwrap_or_default())
        );
    }
}
