//! Request bodies: an event plus its routing key, kept within PagerDuty's 512,000-byte limit.
//!
//! PagerDuty rejects bodies over 512 KB, and a rejected trigger is a lost page. So instead of
//! failing, [`RequestBody`] shrinks `custom_details` — the largest values first, each cut marked
//! — and only if that is not enough drops the details, then images and links, and cuts long
//! texts. The summary, severity, source and dedup key always survive.

use std::fmt;
use std::io;

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::event::{AlertEvent, ChangeEvent};
use crate::routing_key::{ROUTING_KEY_LEN, RoutingKey};
use crate::values::truncate_chars;

/// PagerDuty's documented body limit ("512 KB"; we take the stricter reading, as Alertmanager does).
pub const MAX_BODY_BYTES: usize = 512_000;

/// Values at most this long are not worth cutting; past this point whole details are removed.
const MIN_CUT_BYTES: usize = 64;
/// Longest text kept in any field by the last-resort step.
const LAST_RESORT_TEXT_CHARS: usize = 1024;
const REMOVED_NOTE: &str =
    "custom_details removed by pagerbridge: the event exceeded PagerDuty's 512000-byte body limit";

/// A serialized request body, ready to send. Its `Debug` hides the bytes, which hold the key.
#[derive(Clone)]
pub struct RequestBody {
    bytes: Vec<u8>,
    shrunk: bool,
}

impl RequestBody {
    /// The body for `POST /v2/enqueue`.
    pub fn alert(key: &RoutingKey, event: &AlertEvent) -> Self {
        Self::build(key.expose(), event)
    }

    /// The body for `POST /v2/change/enqueue`.
    pub fn change(key: &RoutingKey, event: &ChangeEvent) -> Self {
        Self::build(key.expose(), event)
    }

    fn build(key_text: &str, event: &impl Serialize) -> Self {
        // Nearly every event is far below the limit: serialized once, straight to bytes with
        // its key, it is sent as it is. Going through a `Value` first (needed only to shrink)
        // cost as much as a tenth of a send over a kept-alive loopback connection. A 32-character
        // key makes this limit the same as the one `fitted_value` keeps, so whichever way a
        // body is built, it is shrunk in the same cases.
        if let Ok(bytes) = serde_json::to_vec(&Keyed {
            routing_key: key_text,
            event,
        }) && bytes.len() <= MAX_BODY_BYTES
        {
            return Self {
                bytes,
                shrunk: false,
            };
        }
        let (value, shrunk) = fitted_value(key_text, event);
        // Serializing a `Value` cannot fail: all its map keys are strings.
        let bytes = serde_json::to_vec(&value).unwrap_or_default();
        Self { bytes, shrunk }
    }

    /// Whether the event had to be shrunk to fit (worth counting: details were lost).
    pub fn shrunk(&self) -> bool {
        self.shrunk
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

impl fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestBody")
            .field("len", &self.bytes.len())
            .field("shrunk", &self.shrunk)
            .finish_non_exhaustive()
    }
}

/// An event with its routing key beside its own fields, as PagerDuty takes it.
#[derive(Serialize)]
struct Keyed<'a, E> {
    routing_key: &'a str,
    #[serde(flatten)]
    event: &'a E,
}

/// The exact body that would be sent, with the routing key masked: for `render`, dry runs and
/// logs. Returns the body and whether it had to be shrunk.
pub fn masked_body(key: &RoutingKey, event: &impl Serialize) -> (Value, bool) {
    fitted_value(&key.masked(), event)
}

fn fitted_value(key_text: &str, event: &impl Serialize) -> (Value, bool) {
    let mut value = serde_json::to_value(event).unwrap_or_else(|_| json!({}));
    // Room for `"routing_key":"<32 chars>",` so the limit holds whatever the key text here.
    let room = MAX_BODY_BYTES - (r#""routing_key":"","#.len() + ROUTING_KEY_LEN);
    let shrunk = fit(&mut value, room);
    if let Value::Object(map) = &mut value {
        map.insert("routing_key".to_owned(), Value::String(key_text.to_owned()));
    }
    (value, shrunk)
}

/// Shrinks `event` (a serialized event without routing key) until it serializes to at most
/// `limit` bytes. Returns whether anything was changed.
pub(crate) fn fit(event: &mut Value, limit: usize) -> bool {
    if serialized_len(event) <= limit {
        return false;
    }
    shrink_custom_details(event, limit);
    if serialized_len(event) > limit
        && let Some(details) = custom_details_mut(event)
    {
        *details = Map::from_iter([("pagerbridge_truncated".to_owned(), json!(REMOVED_NOTE))]);
    }
    if serialized_len(event) > limit {
        last_resort(event);
    }
    true
}

fn custom_details_mut(event: &mut Value) -> Option<&mut Map<String, Value>> {
    event
        .pointer_mut("/payload/custom_details")
        .and_then(Value::as_object_mut)
}

/// Cuts the largest `custom_details` entries, one at a time, until the event fits or no
/// entry is large enough to be worth cutting. Every round makes the largest entry smaller, so
/// it ends; the round limit is a second guarantee.
fn shrink_custom_details(event: &mut Value, limit: usize) {
    let rounds = custom_details_mut(event).map_or(0, |d| 2 * d.len() + 2);
    for _ in 0..rounds {
        let size = serialized_len(event);
        let Some(details) = custom_details_mut(event) else {
            return;
        };
        if size <= limit {
            return;
        }
        let Some((name, entry_len)) = details
            .iter()
            .map(|(name, value)| (name.clone(), serialized_len(value)))
            .max_by_key(|(_, len)| *len)
        else {
            return;
        };
        if entry_len <= MIN_CUT_BYTES {
            return;
        }
        let excess = size - limit;
        let marker = format!("…[cut by pagerbridge: {entry_len} bytes originally]");
        // Room for the kept text as it will be written: quotes and the marker excluded.
        let room = entry_len.saturating_sub(excess + escaped_len(&marker) + 2);
        let replacement = match details.get(&name) {
            Some(Value::String(text)) if room >= MIN_CUT_BYTES => {
                format!("{}{marker}", prefix_within_escaped(text, room))
            }
            _ => format!("[removed by pagerbridge: {entry_len} bytes]"),
        };
        details.insert(name, Value::String(replacement));
    }
}

/// How many bytes `c` takes inside a JSON string as serde_json writes it.
fn escaped_char_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{08}' | '\u{0c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

fn escaped_len(text: &str) -> usize {
    text.chars().map(escaped_char_len).sum()
}

/// The longest prefix of `text` whose JSON-escaped form takes at most `max_bytes`; cut on a
/// char boundary. Measuring the escaped form is what guarantees the cut value fits: a text
/// full of newlines or quotes takes up to six times its length once escaped.
fn prefix_within_escaped(text: &str, max_bytes: usize) -> &str {
    let mut used = 0;
    for (index, c) in text.char_indices() {
        used += escaped_char_len(c);
        if used > max_bytes {
            return &text[..index];
        }
    }
    text
}

/// Only reached when the non-detail fields alone are enormous: keep what pages a human.
fn last_resort(event: &mut Value) {
    if let Value::Object(map) = event {
        map.remove("images");
        map.remove("links");
        map.remove("client_url");
        if let Some(Value::String(client)) = map.get_mut("client") {
            *client = truncate_chars(client, LAST_RESORT_TEXT_CHARS);
        }
        if let Some(Value::Object(payload)) = map.get_mut("payload") {
            for value in payload.values_mut() {
                if let Value::String(text) = value {
                    *text = truncate_chars(text, LAST_RESORT_TEXT_CHARS);
                }
            }
        }
    }
}

pub(crate) fn serialized_len(value: &Value) -> usize {
    struct Counter(usize);
    impl io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Writing to a counter cannot fail.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{CustomDetails, Trigger};
    use crate::values::{Severity, Source, Summary};

    const KEY: &str = "0123456789abcdef0123456789ab3f9a";

    fn trigger_with_details(details: CustomDetails) -> AlertEvent {
        let mut trigger = Trigger::new(
            Summary::new("big").expect("summary"),
            Source::new("host").expect("source"),
            Severity::Error,
        );
        trigger.payload.custom_details = Some(details);
        AlertEvent::Trigger(trigger)
    }

    fn body_json(body: RequestBody) -> Value {
        serde_json::from_slice(&body.into_bytes()).expect("valid JSON")
    }

    #[test]
    fn small_body_is_untouched_and_carries_the_key() {
        let key = RoutingKey::new(KEY).expect("key");
        let event = trigger_with_details(CustomDetails::from_iter([("a".into(), json!("b"))]));
        let body = RequestBody::alert(&key, &event);
        assert!(!body.shrunk());
        let value = body_json(body);
        assert_eq!(value["routing_key"], KEY);
        assert_eq!(value["payload"]["custom_details"]["a"], "b");
    }

    /// What the body was before the single-serialization path: the event as a `Value`, fitted,
    /// with its key.
    fn via_value(event: &impl Serialize) -> Value {
        fitted_value(KEY, event).0
    }

    #[test]
    fn serialized_once_the_body_is_the_same_json_as_through_a_value() {
        use crate::event::{ChangeEvent, Payload};
        use crate::values::{DedupKey, Link};
        let key = RoutingKey::new(KEY).expect("key");
        let mut trigger = Trigger::new(
            Summary::new("Disk full").expect("summary"),
            Source::new("db-1").expect("source"),
            Severity::Critical,
        );
        trigger.dedup_key = Some(DedupKey::new("disk/db-1").expect("dedup key"));
        trigger.payload.component = Some("postgresql".to_owned());
        trigger.payload.custom_details =
            Some(CustomDetails::from_iter([("free".into(), json!(1.5))]));
        trigger.links = vec![Link::new("https://example.com/r", None).expect("link")];
        let dedup_key = DedupKey::new("disk/db-1").expect("dedup key");
        let alerts = [
            AlertEvent::Trigger(trigger),
            AlertEvent::Acknowledge {
                dedup_key: dedup_key.clone(),
            },
            AlertEvent::Resolve {
                dedup_key: dedup_key.clone(),
                payload: None,
            },
            AlertEvent::Resolve {
                dedup_key,
                payload: Some(Payload::new(
                    Summary::new("reconciled").expect("summary"),
                    Source::new("db-1").expect("source"),
                    Severity::Info,
                )),
            },
        ];
        for event in &alerts {
            let body = RequestBody::alert(&key, event);
            assert!(!body.shrunk());
            assert_eq!(body_json(body), via_value(event), "{}", event.action());
        }
        let change = ChangeEvent::new(Summary::new("Deployed v2").expect("summary"));
        let body = RequestBody::change(&key, &change);
        assert_eq!(body_json(body), via_value(&change));
    }

    #[test]
    fn a_body_of_exactly_the_limit_is_sent_whole_and_one_byte_more_is_shrunk() {
        let key = RoutingKey::new(KEY).expect("key");
        let with = |n: usize| {
            trigger_with_details(CustomDetails::from_iter([(
                "log".into(),
                json!("x".repeat(n)),
            )]))
        };
        let overhead = RequestBody::alert(&key, &with(0)).len();
        let at_limit = with(MAX_BODY_BYTES - overhead);
        let body = RequestBody::alert(&key, &at_limit);
        assert_eq!(body.len(), MAX_BODY_BYTES);
        assert!(!body.shrunk());
        // The `Value` path agrees: nothing to cut at the limit…
        let mut value = serde_json::to_value(&at_limit).expect("value");
        let room = MAX_BODY_BYTES - (r#""routing_key":"","#.len() + ROUTING_KEY_LEN);
        assert!(!fit(&mut value, room));
        // …and one byte over, both shrink.
        let over = with(MAX_BODY_BYTES - overhead + 1);
        let body = RequestBody::alert(&key, &over);
        assert!(body.shrunk());
        assert!(body.len() <= MAX_BODY_BYTES);
        assert_eq!(body_json(body), via_value(&over));
    }

    #[test]
    fn oversized_string_detail_is_cut_and_marked() {
        let key = RoutingKey::new(KEY).expect("key");
        let details = CustomDetails::from_iter([
            ("log".into(), json!("é".repeat(400_000))),
            ("small".into(), json!("kept")),
        ]);
        let body = RequestBody::alert(&key, &trigger_with_details(details));
        assert!(body.shrunk());
        assert!(body.len() <= MAX_BODY_BYTES, "len {}", body.len());
        let value = body_json(body);
        let log = value["payload"]["custom_details"]["log"]
            .as_str()
            .expect("string");
        assert!(log.contains("cut by pagerbridge"));
        assert!(log.len() > 100_000, "kept as much as fits");
        assert_eq!(value["payload"]["custom_details"]["small"], "kept");
    }

    #[test]
    fn many_small_details_are_replaced_by_a_note() {
        let key = RoutingKey::new(KEY).expect("key");
        let details: CustomDetails = (0..60_000)
            .map(|i| (format!("k{i}"), json!("0123456789")))
            .collect();
        let body = RequestBody::alert(&key, &trigger_with_details(details));
        assert!(body.shrunk());
        assert!(body.len() <= MAX_BODY_BYTES);
        let value = body_json(body);
        assert_eq!(
            value["payload"]["custom_details"]["pagerbridge_truncated"],
            REMOVED_NOTE
        );
        assert_eq!(value["payload"]["summary"], "big");
    }

    #[test]
    fn text_that_json_escapes_is_cut_by_its_escaped_size() {
        // Newlines and quotes double in size when escaped; cutting by raw length never fit.
        let key = RoutingKey::new(KEY).expect("key");
        for unit in ["x\n", "\"q\"", "a\u{1}b"] {
            let details = CustomDetails::from_iter([("log".into(), json!(unit.repeat(300_000)))]);
            let body = RequestBody::alert(&key, &trigger_with_details(details));
            assert!(body.shrunk());
            assert!(body.len() <= MAX_BODY_BYTES, "{unit:?}: {}", body.len());
            let value = body_json(body);
            let log = value["payload"]["custom_details"]["log"]
                .as_str()
                .expect("string");
            assert!(log.contains("cut by pagerbridge"), "{unit:?}");
        }
    }

    #[test]
    fn escaped_lengths_match_serde_json() {
        for text in [
            "plain",
            "é日本",
            "a\nb\"c\\d",
            "\u{1}\u{1f}\u{8}\u{c}\t\r",
            "😀",
        ] {
            assert_eq!(
                escaped_len(text) + 2,
                serde_json::to_string(text).expect("json").len(),
                "{text:?}"
            );
        }
        assert_eq!(prefix_within_escaped("ab\ncd", 3), "ab");
        assert_eq!(prefix_within_escaped("ab\ncd", 4), "ab\n");
        assert_eq!(prefix_within_escaped("日本", 4), "日");
    }

    #[test]
    fn huge_fields_outside_details_fall_back_to_last_resort() {
        let key = RoutingKey::new(KEY).expect("key");
        let AlertEvent::Trigger(mut trigger) = trigger_with_details(CustomDetails::new()) else {
            unreachable!()
        };
        trigger.payload.component = Some("c".repeat(600_000));
        let body = RequestBody::alert(&key, &AlertEvent::Trigger(trigger));
        assert!(body.shrunk());
        assert!(body.len() <= MAX_BODY_BYTES);
    }

    #[test]
    fn masked_body_hides_the_key() {
        let key = RoutingKey::new(KEY).expect("key");
        let (value, _) = masked_body(&key, &trigger_with_details(CustomDetails::new()));
        assert_eq!(value["routing_key"], "…3f9a");
        assert!(!value.to_string().contains(KEY));
    }

    #[test]
    fn debug_does_not_print_the_body() {
        let key = RoutingKey::new(KEY).expect("key");
        let body = RequestBody::alert(&key, &trigger_with_details(CustomDetails::new()));
        assert!(!format!("{body:?}").contains(KEY));
    }
}
