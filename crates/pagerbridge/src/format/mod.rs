//! Formatting: an [`Alert`] becomes the exact PagerDuty event to send (DESIGN.md "Formatting
//! an alert" and "Lifecycle mapping").
//!
//! Pure functions of the alert, its webhook's group context and the target's options: no I/O,
//! no clock, so `render` shows exactly what `serve` would send.
//!
//! [`Formatter::format`] never fails: whatever can be repaired is repaired (a template that
//! fails falls back to the field's default, a long summary is cut, a non-https image dropped)
//! and reported as a [`FormatNote`]. One rule per file: [`dedup`], [`severity`],
//! [`classification`], [`fields`] (summary, source, component, group, class and templates),
//! [`details`] (custom_details) and [`links`] (links and images).

pub mod classification;
pub mod dedup;
pub mod details;
pub mod fields;
pub mod links;
pub mod severity;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use pagerduty_events::{AlertEvent, ChangeEvent, DedupKey, Severity, Source, Summary, Trigger};
use serde::Serialize;
use thiserror::Error;

use crate::alert::{Alert, AlertStatus, Classification, GroupContext};
use crate::format::fields::{Field, Templates};

pub use dedup::{alert_dedup_key, group_dedup_key};

/// How the dedup key of an alert is chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DedupMode {
    /// One PagerDuty alert per alert: SHA-256 of the canonical label set (the default).
    #[default]
    Alert,
    /// Alertmanager's own key: SHA-256 of the webhook's `groupKey` (for migrations).
    Group,
}

/// Per-field templates (minijinja) that override the defaults; `None` keeps the default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct FieldTemplates {
    pub summary: Option<String>,
    pub source: Option<String>,
    pub component: Option<String>,
    pub group: Option<String>,
    pub class: Option<String>,
}

/// A target's formatting options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormatOptions {
    pub dedup: DedupMode,
    /// Used when no severity is given or the given one is unknown.
    pub default_severity: Severity,
    /// Extra or overriding entries of the severity table, keys lowercase.
    pub severity_map: BTreeMap<String, Severity>,
    pub fields: FieldTemplates,
}

impl Default for FormatOptions {
    fn default() -> Self {
        Self {
            dedup: DedupMode::Alert,
            default_severity: Severity::Error,
            severity_map: BTreeMap::new(),
            fields: FieldTemplates::default(),
        }
    }
}

/// The event an alert becomes.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
#[allow(
    clippy::large_enum_variant,
    reason = "one per alert, moved a few times: boxing would only add noise"
)]
pub enum Outbound {
    Alert(AlertEvent),
    Change(ChangeEvent),
}

/// Something formatting had to repair or guess, worth counting and logging once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "note")]
pub enum FormatNote {
    SummaryTruncated,
    UnknownSeverity {
        value: String,
    },
    ImageDropped {
        url: String,
    },
    /// A link that is not an absolute http(s) URL was left out.
    LinkDropped {
        url: String,
    },
    /// A field template failed at render time; the field got its default.
    TemplateFailed {
        field: String,
        error: String,
    },
    /// `dedup: group` without a `groupKey` (native API, CLI): the per-alert key was used.
    NoGroupKey,
}

impl FormatNote {
    /// A stable name for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            FormatNote::SummaryTruncated => "summary_truncated",
            FormatNote::UnknownSeverity { .. } => "unknown_severity",
            FormatNote::ImageDropped { .. } => "image_dropped",
            FormatNote::LinkDropped { .. } => "link_dropped",
            FormatNote::TemplateFailed { .. } => "template_failed",
            FormatNote::NoGroupKey => "no_group_key",
        }
    }
}

/// A formatted alert.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Formatted {
    pub event: Outbound,
    /// The incident's key (alert events always have one; change events none).
    pub dedup_key: Option<DedupKey>,
    /// The key is the alert's default key, the SHA-256 of its labels ([`alert_dedup_key`]):
    /// what its fingerprint implies, so storage need not index the fingerprint to find it.
    #[serde(skip)]
    pub labels_key: bool,
    /// Trigger severity, for priority in the lane; acknowledge/resolve carry the severity
    /// the alert has now, change events none.
    pub severity: Option<Severity>,
    /// Hash of what a trigger would show, to suppress unchanged re-triggers.
    pub payload_hash: Option<String>,
    pub notes: Vec<FormatNote>,
}

/// A target's formatting options that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum FormatError {
    #[error("the {field} template does not compile: {detail}")]
    Template { field: &'static str, detail: String },
}

/// Longest sender text quoted in a [`FormatNote`]: notes are logged and counted, not archived.
const MAX_NOTE_CHARS: usize = 200;

/// Text cut for a note.
pub(crate) fn clip(text: &str) -> String {
    pagerduty_events::values::truncate_chars(text, MAX_NOTE_CHARS)
}

/// Turns alerts into PagerDuty events for one target.
#[derive(Clone, Debug)]
pub struct Formatter {
    options: FormatOptions,
    templates: Templates,
}

impl Formatter {
    /// Checks the options once, so formatting itself cannot fail.
    pub fn new(options: FormatOptions) -> Result<Self, FormatError> {
        let templates = Templates::compile(&options.fields)?;
        Ok(Self { options, templates })
    }

    pub fn options(&self) -> &FormatOptions {
        &self.options
    }

    /// The event `alert` becomes (DESIGN.md "Lifecycle mapping"):
    ///
    /// - `firing` → trigger; `acknowledged` / `silenced` → acknowledge; `resolved` → resolve.
    ///   Acknowledge and resolve carry only the dedup key, as PagerDuty's wire format has it.
    /// - an alert labelled `change_event="true"` → a change event when firing, and `None`
    ///   otherwise: a deploy has happened once it fires, and its resolve or silence means nothing
    ///   to PagerDuty. `None` is returned in no other case.
    pub fn format(&self, alert: &Alert, group: &GroupContext) -> Option<Formatted> {
        let mut notes = Vec::new();
        let classification = classification::classification(alert);
        let (severity, note) = severity::choose(
            [
                classification.as_ref().and_then(|c| c.severity.as_deref()),
                alert.labels.get("severity").map(String::as_str),
            ],
            &self.options,
        );
        notes.extend(note);

        if alert.is_change_event() {
            if alert.status != AlertStatus::Firing {
                return None;
            }
            let event = self.change_event(alert, classification.as_ref(), severity, &mut notes);
            return Some(Formatted {
                event: Outbound::Change(event),
                dedup_key: None,
                labels_key: false,
                severity: None,
                payload_hash: None,
                notes,
            });
        }

        let (dedup_key, labels_key) = self.dedup_key(alert, group, &mut notes);
        let (event, payload_hash) = match alert.status {
            AlertStatus::Firing => {
                let mut trigger =
                    self.trigger(alert, group, classification.as_ref(), severity, &mut notes);
                trigger.dedup_key = Some(dedup_key.clone());
                let mut event = AlertEvent::Trigger(trigger);
                let hash = payload_hash(&mut event);
                (event, Some(hash))
            }
            AlertStatus::Acknowledged | AlertStatus::Silenced => (
                AlertEvent::Acknowledge {
                    dedup_key: dedup_key.clone(),
                },
                None,
            ),
            AlertStatus::Resolved => (
                AlertEvent::Resolve {
                    dedup_key: dedup_key.clone(),
                    payload: None,
                },
                None,
            ),
        };
        Some(Formatted {
            event: Outbound::Alert(event),
            dedup_key: Some(dedup_key),
            labels_key,
            severity: Some(severity),
            payload_hash,
            notes,
        })
    }

    /// The caller's key wins; else per alert or, with `dedup: group`, per webhook group. And
    /// whether the key is the alert's labels' key ([`Formatted::labels_key`]).
    fn dedup_key(
        &self,
        alert: &Alert,
        group: &GroupContext,
        notes: &mut Vec<FormatNote>,
    ) -> (DedupKey, bool) {
        if let Some(key) = &alert.dedup_key {
            // A caller's or a remembered key may be the labels' key all the same; only alerts
            // with a fingerprint need to know (a hash more for those alone).
            let labels_key = alert.fingerprint.is_some() && *key == alert_dedup_key(&alert.labels);
            return (key.clone(), labels_key);
        }
        match (self.options.dedup, group.group_key.as_deref()) {
            (DedupMode::Alert, _) => (alert_dedup_key(&alert.labels), true),
            (DedupMode::Group, Some(group_key)) if !group_key.is_empty() => {
                (group_dedup_key(group_key), false)
            }
            (DedupMode::Group, _) => {
                notes.push(FormatNote::NoGroupKey);
                (alert_dedup_key(&alert.labels), true)
            }
        }
    }

    fn trigger(
        &self,
        alert: &Alert,
        group: &GroupContext,
        classification: Option<&Classification>,
        severity: Severity,
        notes: &mut Vec<FormatNote>,
    ) -> Trigger {
        let texts = self.texts(alert, classification, severity, Some(severity), notes);
        let mut trigger = Trigger::new(texts.summary, texts.source, severity);
        let payload = &mut trigger.payload;
        payload.timestamp = event_time(alert);
        payload.component = texts.component;
        payload.group = texts.group;
        payload.class = texts.class;
        payload.custom_details = Some(details::trigger_details(alert, classification, severity));
        trigger.links = links::links(alert, group.external_url.as_deref(), notes);
        trigger.images = links::images(alert, notes);
        trigger
    }

    fn change_event(
        &self,
        alert: &Alert,
        classification: Option<&Classification>,
        severity: Severity,
        notes: &mut Vec<FormatNote>,
    ) -> ChangeEvent {
        let texts = self.texts(alert, classification, severity, None, notes);
        let mut event = ChangeEvent::new(texts.summary);
        event.payload.source = Some(texts.source.into());
        event.payload.timestamp = event_time(alert);
        event.payload.custom_details = Some(details::change_details(alert));
        // No silence link: silencing a change event means nothing.
        event.links = links::links(alert, None, notes);
        event
    }

    /// The text fields, each from its template if it has one and it renders, else its default.
    /// `prefix` is the severity of the `[SEVERITY]` summary prefix (none for change events).
    fn texts(
        &self,
        alert: &Alert,
        classification: Option<&Classification>,
        severity: Severity,
        prefix: Option<Severity>,
        notes: &mut Vec<FormatNote>,
    ) -> Texts {
        let context =
            (!self.templates.is_empty()).then(|| fields::context(alert, classification, severity));
        let mut text = |field: Field, default: Option<String>| -> Option<String> {
            let Some(context) = &context else {
                return default;
            };
            match self.templates.render(field, context) {
                Ok(Some(text)) => Some(text),
                Ok(None) => default,
                Err(error) => {
                    notes.push(FormatNote::TemplateFailed {
                        field: field.name().to_owned(),
                        error: clip(&error),
                    });
                    default
                }
            }
        };
        let summary_text = text(
            Field::Summary,
            Some(fields::default_summary(alert, classification, prefix)),
        )
        .unwrap_or_default();
        let source_text =
            text(Field::Source, Some(fields::default_source(alert))).unwrap_or_default();
        let component = text(
            Field::Component,
            fields::default_optional(alert, Field::Component),
        );
        let group = text(Field::Group, fields::default_optional(alert, Field::Group));
        let class = text(Field::Class, fields::default_optional(alert, Field::Class));

        if Summary::was_truncated(&summary_text) {
            notes.push(FormatNote::SummaryTruncated);
        }
        Texts {
            summary: Summary::truncating(&summary_text).unwrap_or_else(|_| fallback_summary()),
            source: Source::new(source_text).unwrap_or_else(|_| fallback_source()),
            component,
            group,
            class,
        }
    }
}

/// The text fields of an event.
struct Texts {
    summary: Summary,
    source: Source,
    component: Option<String>,
    group: Option<String>,
    class: Option<String>,
}

/// Lowercase hex SHA-256 of the event's JSON. Struct fields serialize in declaration order and
/// maps in key order, so equal events hash equal on every replica. The silence link is left
/// out: each peer of an Alertmanager HA set sends the same alert with its own, and the same
/// alert from two peers must not count as a change (it would be triggered again).
///
/// The silence links are set aside while the event is serialized, then put back where they
/// were, rather than hashing a copy of the trigger or of its links: a copy per alert costs
/// more than the hash. The JSON is written into one buffer and hashed at once: written
/// straight into the hash, it went in as many small updates as it has tokens.
fn payload_hash(event: &mut AlertEvent) -> String {
    let is_silence =
        |link: &pagerduty_events::Link| link.text.as_deref() == Some(links::SILENCE_LINK_TEXT);
    // (position, link), last first.
    let mut set_aside = Vec::new();
    if let AlertEvent::Trigger(trigger) = event {
        for index in (0..trigger.links.len()).rev() {
            if is_silence(&trigger.links[index]) {
                set_aside.push((index, trigger.links.remove(index)));
            }
        }
    }
    // Serializing an event cannot fail: all its map keys are strings.
    let mut json = Vec::with_capacity(2048);
    let _ = serde_json::to_writer(&mut json, &*event);
    if let AlertEvent::Trigger(trigger) = event {
        for (index, link) in set_aside.into_iter().rev() {
            trigger.links.insert(index, link);
        }
    }
    dedup::sha256_hex(&json)
}

/// Only reached for an alert without `alertname` and without summary text, which ingest
/// never produces.
fn fallback_summary() -> Summary {
    Summary::new("pagerbridge alert").expect("a non-blank constant is a valid summary")
}

fn fallback_source() -> Source {
    Source::new("pagerbridge").expect("a non-blank constant is a valid source")
}

/// The alert's start as PagerDuty's `timestamp`. Ingest refuses times before the year 1, so
/// no start is ever left out here.
fn event_time(alert: &Alert) -> Option<pagerduty_events::EventTime> {
    alert
        .starts_at
        .and_then(|at| pagerduty_events::EventTime::new(at).ok())
}
