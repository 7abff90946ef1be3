//! Field types that cannot hold a value PagerDuty would reject.
//!
//! Each type checks its invariant once, in its constructor (and in `Deserialize`, which goes
//! through the same constructor), so code holding one never has to check again. Limits come from
//! PagerDuty's documentation (<https://developer.pagerduty.com/docs/events-api-v2/trigger-events/>;
//! the test kit's `schema/pagerduty-events-v2.schema.json` writes them down); lengths are counted in Unicode
//! characters, as PagerDuty's messages say "characters".

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use url::Url;

use crate::error::EventError;

/// PagerDuty's limit on `payload.summary`.
pub const MAX_SUMMARY_CHARS: usize = 1024;
/// PagerDuty's limit on `dedup_key`.
pub const MAX_DEDUP_KEY_CHARS: usize = 255;
/// What marks text that was cut to fit a limit.
pub const ELLIPSIS: char = '…';

fn invalid(message: impl Into<String>) -> EventError {
    EventError::Invalid(vec![message.into()])
}

/// Cuts `text` to at most `max_chars` characters on a char boundary, ending with `…` when cut.
pub fn truncate_chars(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_owned();
    }
    let keep = max_chars.saturating_sub(1);
    let mut out: String = text.chars().take(keep).collect();
    out.push(ELLIPSIS);
    out
}

/// `payload.summary`: non-blank, at most 1024 characters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Summary(String);

impl Summary {
    /// Accepts the text only if it already fits; the error is PagerDuty's own (typo included).
    pub fn new(text: impl Into<String>) -> Result<Self, EventError> {
        let text = text.into();
        if text.trim().is_empty() {
            return Err(invalid("'payload.summary' is missing or blank"));
        }
        if text.chars().count() > MAX_SUMMARY_CHARS {
            return Err(invalid(
                "'summary' is too long (maiximum is 1024 characters)",
            ));
        }
        Ok(Self(text))
    }

    /// Cuts an over-long text to 1024 characters, the last being `…`, so a page is never lost
    /// to a summary that is too long. Fails only on blank text.
    pub fn truncating(text: &str) -> Result<Self, EventError> {
        if text.trim().is_empty() {
            return Err(invalid("'payload.summary' is missing or blank"));
        }
        Self::new(truncate_chars(text, MAX_SUMMARY_CHARS))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when [`Summary::truncating`] had to cut.
    pub fn was_truncated(original: &str) -> bool {
        original.chars().count() > MAX_SUMMARY_CHARS
    }
}

impl TryFrom<String> for Summary {
    type Error = EventError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<Summary> for String {
    fn from(value: Summary) -> Self {
        value.0
    }
}

/// `dedup_key`: non-empty, at most 255 characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DedupKey(String);

impl DedupKey {
    pub fn new(text: impl Into<String>) -> Result<Self, EventError> {
        let text = text.into();
        if text.is_empty() {
            return Err(invalid("'dedup_key' is missing or blank"));
        }
        if text.chars().count() > MAX_DEDUP_KEY_CHARS {
            return Err(invalid(
                "'dedup_key' is too long (maximum is 255 characters)",
            ));
        }
        Ok(Self(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for DedupKey {
    type Error = EventError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<DedupKey> for String {
    fn from(value: DedupKey) -> Self {
        value.0
    }
}

impl fmt::Display for DedupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `payload.source`: required and non-blank.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Source(String);

impl Source {
    pub fn new(text: impl Into<String>) -> Result<Self, EventError> {
        let text = text.into();
        if text.trim().is_empty() {
            return Err(invalid("'payload.source' is missing or blank"));
        }
        Ok(Self(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Source {
    type Error = EventError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<Source> for String {
    fn from(value: Source) -> Self {
        value.0
    }
}

/// `payload.timestamp`: an instant PagerDuty can read, RFC 3339 with a four-digit year.
///
/// jiff's [`jiff::Timestamp`] reaches back to the year -9999, which it writes in an extended
/// form (`-000001-12-31T23:59:59Z`) that is no RFC 3339 `date-time`, so PagerDuty would refuse
/// the event. This type holds only instants from 0000-01-01T00:00:00Z on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "jiff::Timestamp", into = "jiff::Timestamp")]
pub struct EventTime(jiff::Timestamp);

impl EventTime {
    /// 0000-01-01T00:00:00Z, the first instant RFC 3339 can write.
    const EARLIEST_SECOND: i64 = -62_167_219_200;

    pub fn new(at: jiff::Timestamp) -> Result<Self, EventError> {
        if at.as_second() < Self::EARLIEST_SECOND {
            return Err(invalid(format!(
                "'payload.timestamp' {at} is before the year 0000, which RFC 3339 cannot write"
            )));
        }
        Ok(Self(at))
    }

    pub fn timestamp(self) -> jiff::Timestamp {
        self.0
    }
}

impl TryFrom<jiff::Timestamp> for EventTime {
    type Error = EventError;
    fn try_from(value: jiff::Timestamp) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<EventTime> for jiff::Timestamp {
    fn from(value: EventTime) -> Self {
        value.0
    }
}

impl FromStr for EventTime {
    type Err = EventError;
    /// An RFC 3339 timestamp, as `--timestamp` takes it.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let at: jiff::Timestamp = text
            .parse()
            .map_err(|e| invalid(format!("'{text}' is not an RFC 3339 timestamp: {e}")))?;
        Self::new(at)
    }
}

impl fmt::Display for EventTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// `payload.severity`: the four values PagerDuty knows, written in lowercase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    // Declared least to most severe so that `Ord` ranks a critical page above an info one.
    Info,
    Warning,
    Error,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 4] = [
        Severity::Critical,
        Severity::Error,
        Severity::Warning,
        Severity::Info,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

impl FromStr for Severity {
    type Err = EventError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Severity::ALL
            .into_iter()
            .find(|severity| severity.as_str() == s)
            .ok_or_else(|| {
                invalid("'payload.severity' is invalid (must be one of: critical, error, warning, info)")
            })
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A link shown on the alert: `href` is any absolute URL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub href: Url,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

impl Link {
    pub fn new(href: &str, text: Option<String>) -> Result<Self, EventError> {
        let href = Url::parse(href)
            .map_err(|e| invalid(format!("'links[].href' is not a valid URL: {e}")))?;
        Ok(Self { href, text })
    }
}

/// An image shown on the alert. PagerDuty only displays images served over https, so `src`
/// must be an https URL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawImage", into = "RawImage")]
pub struct Image {
    src: Url,
    href: Option<Url>,
    alt: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct RawImage {
    src: Url,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    href: Option<Url>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    alt: Option<String>,
}

impl Image {
    pub fn new(src: &str, href: Option<&str>, alt: Option<String>) -> Result<Self, EventError> {
        let src = Url::parse(src)
            .map_err(|e| invalid(format!("'images[].src' is not a valid URL: {e}")))?;
        let href = href
            .map(Url::parse)
            .transpose()
            .map_err(|e| invalid(format!("'images[].href' is not a valid URL: {e}")))?;
        Self::try_from(RawImage { src, href, alt })
    }

    pub fn src(&self) -> &Url {
        &self.src
    }

    pub fn href(&self) -> Option<&Url> {
        self.href.as_ref()
    }

    pub fn alt(&self) -> Option<&str> {
        self.alt.as_deref()
    }
}

impl TryFrom<RawImage> for Image {
    type Error = EventError;
    fn try_from(raw: RawImage) -> Result<Self, Self::Error> {
        if raw.src.scheme() != "https" {
            return Err(invalid("'images[].src' must be served via HTTPS"));
        }
        Ok(Self {
            src: raw.src,
            href: raw.href,
            alt: raw.alt,
        })
    }
}

impl From<Image> for RawImage {
    fn from(image: Image) -> Self {
        RawImage {
            src: image.src,
            href: image.href,
            alt: image.alt,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_limits() {
        assert!(Summary::new("x".repeat(1024)).is_ok());
        let err = Summary::new("x".repeat(1025)).expect_err("too long");
        assert_eq!(
            err.to_string(),
            "'summary' is too long (maiximum is 1024 characters)"
        );
        assert!(Summary::new(" \n").is_err());
    }

    #[test]
    fn truncating_summary_cuts_multibyte_text_on_a_char_boundary() {
        let long = "日本語".repeat(500);
        let summary = Summary::truncating(&long).expect("non-blank");
        assert_eq!(summary.as_str().chars().count(), 1024);
        assert!(summary.as_str().ends_with('…'));
        assert!(Summary::was_truncated(&long));
        assert_eq!(Summary::truncating("short").expect("ok").as_str(), "short");
        assert!(
            Summary::truncating(&" ".repeat(1025)).is_err(),
            "long blank text is blank"
        );
    }

    #[test]
    fn dedup_key_limits() {
        assert!(DedupKey::new("k".repeat(255)).is_ok());
        assert_eq!(
            DedupKey::new("k".repeat(256))
                .expect_err("long")
                .to_string(),
            "'dedup_key' is too long (maximum is 255 characters)"
        );
        assert!(DedupKey::new("").is_err());
    }

    #[test]
    fn severity_round_trips_and_orders() {
        for severity in Severity::ALL {
            assert_eq!(severity.as_str().parse::<Severity>().ok(), Some(severity));
        }
        assert!("CRITICAL".parse::<Severity>().is_err());
        assert!(Severity::Critical > Severity::Error && Severity::Warning > Severity::Info);
    }

    #[test]
    fn image_src_must_be_https_also_when_deserialized() {
        assert!(Image::new("https://grafana.example/x.png", None, None).is_ok());
        assert!(Image::new("http://grafana.example/x.png", None, None).is_err());
        let from_json: Result<Image, _> = serde_json::from_str(r#"{"src":"http://a.example/x"}"#);
        assert!(from_json.is_err());
    }

    #[test]
    fn deserialize_goes_through_constructors() {
        assert!(serde_json::from_str::<Summary>(&format!("\"{}\"", "x".repeat(1025))).is_err());
        assert!(serde_json::from_str::<DedupKey>("\"\"").is_err());
        assert!(serde_json::from_str::<Severity>("\"page\"").is_err());
    }
}
