//! Ingest: request bodies (`&[u8]`) become [`Alert`]s or change events, or a clear error.
//!
//! One module per door: [`alertmanager`] (Alertmanager webhook v4), [`native`] (our own
//! `POST /api/v1/alerts`) and [`change`] (`POST /api/v1/change-events`). Nothing here knows HTTP:
//! the HTTP layer maps an [`IngestError`] to a 400 with the JSON body `{error, detail}`.
//!
//! Bodies are parsed to a `serde_json::Value` first and then read field by field, rather than
//! derived with serde, so that every refusal can name the alert (by index and `alertname`) and
//! the field at fault. The alerts are taken apart as they are read: their labels, annotations
//! and texts move out of the parsed tree into the [`Alert`], not copied (a copy of each
//! string, and the tree's own dropped beside it, was a good part of parsing a webhook). A
//! request is all or nothing: one invalid alert refuses the whole request, so a sender never
//! has to guess which of its alerts were taken.
//!
//! [`Alert`]: crate::alert::Alert

pub mod alertmanager;
pub mod change;
pub mod native;

use jiff::Timestamp;
use serde_json::{Map, Value};
use thiserror::Error;

use crate::alert::{Alert, AlertStatus, Labels};

/// Longest piece of sender-supplied text quoted back in an error detail; error bodies must stay
/// small whatever was sent.
const MAX_QUOTED_CHARS: usize = 80;

/// Go's zero `time.Time`, which Alertmanager writes for "not set" (e.g. `endsAt` of a firing
/// alert).
const GO_ZERO_TIME_SECONDS: i64 = -62_135_596_800;

/// What kind of problem refused a request; its [`code`](IngestProblem::code) is the `error`
/// member of the JSON error body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IngestProblem {
    /// The body is not JSON at all.
    MalformedJson,
    /// The body is JSON but not the expected shape (outside any one alert).
    InvalidRequest,
    /// One alert of the request is invalid; the detail names it.
    InvalidAlert,
    /// An Alertmanager webhook of a version we do not speak.
    UnsupportedVersion,
}

impl IngestProblem {
    pub fn code(self) -> &'static str {
        match self {
            IngestProblem::MalformedJson => "malformed_json",
            IngestProblem::InvalidRequest => "invalid_request",
            IngestProblem::InvalidAlert => "invalid_alert",
            IngestProblem::UnsupportedVersion => "unsupported_version",
        }
    }
}

/// A refused request: a short code and a detail naming what is wrong and where, e.g.
/// `alerts[2] (alertname="DiskFull"): labels.instance must be a string, not a number`.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("{}: {detail}", problem.code())]
pub struct IngestError {
    pub problem: IngestProblem,
    pub detail: String,
}

impl IngestError {
    pub fn new(problem: IngestProblem, detail: impl Into<String>) -> Self {
        Self {
            problem,
            detail: detail.into(),
        }
    }

    /// The `error` member of the JSON error body.
    pub fn error(&self) -> &'static str {
        self.problem.code()
    }

    /// The `detail` member of the JSON error body.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    fn request(detail: impl Into<String>) -> Self {
        Self::new(IngestProblem::InvalidRequest, detail)
    }
}

/// Parses the body as a JSON object; anything else is refused with serde's own message (which
/// gives line and column).
pub(crate) fn parse_object(body: &[u8]) -> Result<Map<String, Value>, IngestError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        IngestError::new(
            IngestProblem::MalformedJson,
            format!("the request body is not valid JSON: {e}"),
        )
    })?;
    match value {
        Value::Object(map) => Ok(map),
        other => Err(IngestError::request(format!(
            "the request body must be a JSON object, not {}",
            kind(&other)
        ))),
    }
}

/// The request's `alerts` array (required; may be empty), taken out of the request.
pub(crate) fn take_alerts(request: &mut Map<String, Value>) -> Result<Vec<Value>, IngestError> {
    match request.remove("alerts") {
        Some(Value::Array(items)) => Ok(items),
        None | Some(Value::Null) => Err(IngestError::request("\"alerts\" is missing")),
        Some(other) => Err(IngestError::request(format!(
            "\"alerts\" must be an array, not {}",
            kind(&other)
        ))),
    }
}

/// The optional `target` member: a non-blank string naming a configured target.
pub(crate) fn target(request: &Map<String, Value>) -> Result<Option<String>, IngestError> {
    match optional_string(request, "target").map_err(IngestError::request)? {
        Some(name) if name.trim().is_empty() => {
            Err(IngestError::request("\"target\" must not be blank"))
        }
        other => Ok(other),
    }
}

/// Where a problem is, for error details: `alerts[2] (alertname="DiskFull")`. Read from the
/// body again: the alert at fault has been taken apart while it was read. Only a refused
/// request pays for it.
pub(crate) fn alert_position(body: &[u8], index: usize) -> String {
    let request: Option<Value> = serde_json::from_slice(body).ok();
    let name = request
        .as_ref()
        .and_then(|request| request.get("alerts"))
        .and_then(|alerts| alerts.get(index))
        .and_then(|alert| alert.get("labels"))
        .and_then(|labels| labels.get("alertname"))
        .and_then(Value::as_str)
        .filter(|name| !name.is_empty());
    match name {
        Some(name) => format!("alerts[{index}] (alertname={})", quote(name)),
        None => format!("alerts[{index}]"),
    }
}

/// Each alert of `alerts` read by `read`, or the first refusal, prefixed with where it is.
pub(crate) fn read_alerts(
    body: &[u8],
    alerts: Vec<Value>,
    read: impl Fn(Value) -> Result<Alert, String>,
) -> Result<Vec<Alert>, IngestError> {
    alerts
        .into_iter()
        .enumerate()
        .map(|(index, alert)| {
            read(alert).map_err(|detail| {
                IngestError::new(
                    IngestProblem::InvalidAlert,
                    format!("{}: {detail}", alert_position(body, index)),
                )
            })
        })
        .collect()
}

/// The fields the Alertmanager webhook and the native API share, read from one alert object:
/// the members it keeps (labels, annotations, `generatorURL`, `fingerprint`) are moved out of
/// `fields`, the rest left for the door's own. `statuses` are the accepted `status` values of
/// the door. Errors are relative to the alert (the caller prefixes its position).
pub(crate) fn common_alert(
    fields: &mut Map<String, Value>,
    statuses: &[(&str, AlertStatus)],
) -> Result<Alert, String> {
    let labels = match fields.remove("labels") {
        None | Some(Value::Null) => return Err("\"labels\" is missing".to_owned()),
        Some(value) => string_map(value, "labels")?,
    };
    if labels.get("alertname").is_none_or(|name| name.is_empty()) {
        return Err("label set has no \"alertname\"".to_owned());
    }
    let annotations = match fields.remove("annotations") {
        None | Some(Value::Null) => Labels::new(),
        Some(value) => string_map(value, "annotations")?,
    };
    let status = match fields.get("status") {
        None | Some(Value::Null) => return Err("\"status\" is missing".to_owned()),
        Some(Value::String(text)) => statuses
            .iter()
            .find(|(name, _)| name == text)
            .map(|(_, status)| *status)
            .ok_or_else(|| {
                let names: Vec<&str> = statuses.iter().map(|(name, _)| *name).collect();
                format!("status {} is not one of {}", quote(text), names.join(", "))
            })?,
        Some(other) => return Err(format!("\"status\" must be a string, not {}", kind(other))),
    };
    Ok(Alert {
        status,
        labels,
        annotations,
        starts_at: optional_timestamp(fields, "startsAt")?,
        ends_at: optional_timestamp(fields, "endsAt")?,
        generator_url: non_empty(take_string(fields, "generatorURL")?),
        fingerprint: non_empty(identifier(fields, "fingerprint")?),
        dedup_key: None,
        classification: None,
    })
}

/// An alert's members, or why it has none.
pub(crate) fn alert_object(alert: Value) -> Result<Map<String, Value>, String> {
    match alert {
        Value::Object(fields) => Ok(fields),
        other => Err(format!("must be an object, not {}", kind(&other))),
    }
}

/// A JSON object whose values are all strings (a label set or annotations). Names must be
/// non-empty; we do not insist on Prometheus' name syntax, since other senders use other names.
pub(crate) fn string_map(value: Value, field: &str) -> Result<Labels, String> {
    let entries = match value {
        Value::Object(entries) => entries,
        other => {
            return Err(format!(
                "\"{field}\" must be an object, not {}",
                kind(&other)
            ));
        }
    };
    let mut map = Labels::new();
    for (name, value) in entries {
        if name.is_empty() {
            return Err(format!("\"{field}\" has an empty name"));
        }
        match value {
            Value::String(text) => {
                map.insert(name, text);
            }
            other => {
                return Err(format!(
                    "{field}.{} must be a string, not {}",
                    quote_name(&name),
                    kind(&other)
                ));
            }
        }
    }
    Ok(map)
}

/// An optional string member; `null` counts as absent.
pub(crate) fn optional_string(
    fields: &Map<String, Value>,
    field: &str,
) -> Result<Option<String>, String> {
    Ok(optional_str(fields, field)?.map(str::to_owned))
}

/// [`optional_string`], borrowed.
fn optional_str<'a>(
    fields: &'a Map<String, Value>,
    field: &str,
) -> Result<Option<&'a str>, String> {
    match fields.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(other) => Err(not_a_string(field, other)),
    }
}

/// [`optional_string`], moved out of `fields`.
pub(crate) fn take_string(
    fields: &mut Map<String, Value>,
    field: &str,
) -> Result<Option<String>, String> {
    match fields.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(other) => Err(not_a_string(field, &other)),
    }
}

fn not_a_string(field: &str, value: &Value) -> String {
    format!("\"{field}\" must be a string, not {}", kind(value))
}

/// An optional string that the bridge keeps as a key of its own (a fingerprint, a caller's
/// dedup key): stored in indexed text columns, so it must hold no NUL, which PostgreSQL's TEXT
/// cannot store (it would fail the insert, and the sender would retry a 503 for ever).
pub(crate) fn identifier(
    fields: &mut Map<String, Value>,
    field: &str,
) -> Result<Option<String>, String> {
    let text = take_string(fields, field)?;
    if let Some(text) = &text
        && text.contains('\0')
    {
        return Err(format!(
            "\"{field}\" must not contain NUL characters ({})",
            quote(text)
        ));
    }
    Ok(text)
}

/// An optional RFC 3339 timestamp. Absent, `null`, `""` and Go's zero time (Alertmanager's
/// "unset") all mean `None`; a time before the year 1 is refused as nonsense.
pub(crate) fn optional_timestamp(
    fields: &Map<String, Value>,
    field: &str,
) -> Result<Option<Timestamp>, String> {
    let Some(text) = optional_str(fields, field)? else {
        return Ok(None);
    };
    if text.is_empty() {
        return Ok(None);
    }
    let timestamp: Timestamp = text.parse().map_err(|e: jiff::Error| {
        // jiff's message quotes the whole input: cut it like any sender text.
        let reason: String = e.to_string().chars().take(2 * MAX_QUOTED_CHARS).collect();
        format!(
            "\"{field}\" is not an RFC 3339 timestamp ({}): {reason}",
            quote(text)
        )
    })?;
    // Go's zero time, in whatever offset it was written: Alertmanager's "unset".
    if text.starts_with("0001-01-01T00:00:00") || timestamp.as_second() == GO_ZERO_TIME_SECONDS {
        return Ok(None);
    }
    if timestamp.as_second() < GO_ZERO_TIME_SECONDS {
        return Err(format!("\"{field}\" {} is before the year 1", quote(text)));
    }
    Ok(Some(timestamp))
}

pub(crate) fn non_empty(text: Option<String>) -> Option<String> {
    text.filter(|text| !text.is_empty())
}

/// JSON's name for a value's type, for "must be a string, not a number" messages.
pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Sender text quoted in a detail: escaped and cut, so an error body stays short and one line.
pub(crate) fn quote(text: &str) -> String {
    if text.chars().count() <= MAX_QUOTED_CHARS {
        return format!("{text:?}");
    }
    let cut: String = text.chars().take(MAX_QUOTED_CHARS).collect();
    format!("{cut:?}…")
}

/// A member name in a path: bare when it is a plain identifier, else quoted.
fn quote_name(name: &str) -> String {
    let plain = name.len() <= MAX_QUOTED_CHARS
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain { name.to_owned() } else { quote(name) }
}

#[cfg(test)]
pub(crate) mod test_support {
    use proptest::prelude::*;
    use serde_json::Value;

    /// A real Alertmanager 0.25 body, from the project's samples (`examples/alertmanager-0.25/`).
    pub use pagerbridge_testkit::samples::read as sample;

    /// The three webhook samples of one group's life: firing, partially resolved, resolved.
    pub const SAMPLES: [&str; 3] = pagerbridge_testkit::samples::WEBHOOKS;

    /// Arbitrary JSON, biased towards the member names and values our parsers look for, so
    /// that generated bodies reach deep into them.
    pub fn json_value() -> impl Strategy<Value = Value> {
        let key = prop_oneof![
            prop::sample::select(KEYS.as_slice()).prop_map(str::to_owned),
            "\\PC{0,6}",
        ];
        let text = prop_oneof![
            prop::sample::select(TEXTS.as_slice()).prop_map(str::to_owned),
            "\\PC{0,12}",
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            text.prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 64, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(key.clone(), inner, 0..6)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    const KEYS: [&str; 22] = [
        "version",
        "alerts",
        "status",
        "labels",
        "annotations",
        "alertname",
        "startsAt",
        "endsAt",
        "generatorURL",
        "fingerprint",
        "groupKey",
        "externalURL",
        "target",
        "dedup_key",
        "classification",
        "confidence",
        "recommendations",
        "summary",
        "timestamp",
        "custom_details",
        "links",
        "href",
    ];

    const TEXTS: [&str; 9] = [
        "4",
        "firing",
        "resolved",
        "acknowledged",
        "silenced",
        "0001-01-01T00:00:00Z",
        "2024-05-01T10:00:00Z",
        "https://example.com/x",
        "DiskFull",
    ];
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn error_exposes_code_and_detail() {
        let error = IngestError::new(IngestProblem::InvalidAlert, "alerts[0]: bad");
        assert_eq!(error.error(), "invalid_alert");
        assert_eq!(error.detail(), "alerts[0]: bad");
        assert_eq!(error.to_string(), "invalid_alert: alerts[0]: bad");
    }

    #[test]
    fn non_object_bodies_are_refused() {
        let error = parse_object(b"[1, 2]").expect_err("array");
        assert_eq!(error.problem, IngestProblem::InvalidRequest);
        assert!(error.detail.contains("not an array"), "{}", error.detail);
    }

    #[test]
    fn zero_and_empty_timestamps_are_unset() {
        let fields = json!({"a": "0001-01-01T00:00:00Z", "b": "", "c": null, "d": "2024-05-01T10:00:00+02:00"});
        let Value::Object(fields) = fields else {
            unreachable!()
        };
        assert_eq!(optional_timestamp(&fields, "a"), Ok(None));
        assert_eq!(optional_timestamp(&fields, "b"), Ok(None));
        assert_eq!(optional_timestamp(&fields, "c"), Ok(None));
        assert_eq!(optional_timestamp(&fields, "missing"), Ok(None));
        let d = optional_timestamp(&fields, "d")
            .expect("valid")
            .expect("set");
        assert_eq!(d.to_string(), "2024-05-01T08:00:00Z");
    }

    #[test]
    fn times_before_the_year_1_are_refused_go_zero_in_any_offset_is_unset() {
        let fields = json!({
            "year0": "0000-06-01T00:00:00Z",
            "negative": "-000001-01-01T00:00:00Z",
            "year99999": "+099999-01-01T00:00:00Z",
            "go_zero_east": "0001-01-01T00:00:00+05:00",
            "go_zero_west": "0001-01-01T00:00:00-05:00",
            "long": format!("2024-05-01T10:00:00{}Z", "9".repeat(5000)),
        });
        let Value::Object(fields) = fields else {
            unreachable!()
        };
        for field in ["year0", "negative", "year99999", "long"] {
            let error = optional_timestamp(&fields, field).expect_err(field);
            assert!(error.starts_with(&format!("\"{field}\"")), "{error}");
            assert!(
                error.len() < 500,
                "{field}: a detail of {} bytes",
                error.len()
            );
        }
        assert_eq!(optional_timestamp(&fields, "go_zero_east"), Ok(None));
        assert_eq!(optional_timestamp(&fields, "go_zero_west"), Ok(None));
    }

    #[test]
    fn nul_in_identifiers_is_refused() {
        let fields = json!({"fingerprint": "ab\0cd", "ok": "abcd"});
        let Value::Object(mut fields) = fields else {
            unreachable!()
        };
        let error = identifier(&mut fields, "fingerprint").expect_err("NUL");
        assert!(error.contains("NUL"), "{error}");
        assert_eq!(identifier(&mut fields, "ok"), Ok(Some("abcd".to_owned())));
        assert_eq!(identifier(&mut fields, "missing"), Ok(None));
    }

    #[test]
    fn long_quoted_text_is_cut() {
        let quoted = quote(&"x".repeat(1000));
        assert!(quoted.chars().count() < 100, "{quoted}");
        assert!(quoted.ends_with('…'));
        assert_eq!(quote("a\"b\nc"), r#""a\"b\nc""#);
    }
}
