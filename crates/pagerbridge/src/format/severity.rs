//! Severity and urgency: whatever words senders use become one of PagerDuty's four severities.

use pagerduty_events::Severity;

use crate::format::{FormatNote, FormatOptions};

/// The built-in table, matched case-insensitively; a target's `severity_map` extends and
/// overrides it.
const TABLE: [(&str, Severity); 10] = [
    ("critical", Severity::Critical),
    ("warning", Severity::Warning),
    ("error", Severity::Error),
    ("info", Severity::Info),
    ("noise", Severity::Info),
    ("page", Severity::Critical),
    ("high", Severity::Error),
    ("major", Severity::Error),
    ("minor", Severity::Warning),
    ("low", Severity::Info),
];

/// Maps a sender's severity word, or `None` when neither the target's map nor the table knows it.
pub fn map_severity(value: &str, options: &FormatOptions) -> Option<Severity> {
    let key = value.trim().to_lowercase();
    options.severity_map.get(&key).copied().or_else(|| {
        TABLE
            .iter()
            .find(|(name, _)| *name == key)
            .map(|(_, severity)| *severity)
    })
}

/// The PagerDuty severity of the first present (non-blank) candidate, in order of preference
/// (classification, `severity` label). Only that first one counts: an unknown value gives the
/// target default and a note, rather than silently using a less preferred source.
pub fn choose<'a>(
    candidates: impl IntoIterator<Item = Option<&'a str>>,
    options: &FormatOptions,
) -> (Severity, Option<FormatNote>) {
    let first = candidates
        .into_iter()
        .flatten()
        .find(|value| !value.trim().is_empty());
    match first {
        None => (options.default_severity, None),
        Some(value) => match map_severity(value, options) {
            Some(severity) => (severity, None),
            None => (
                options.default_severity,
                Some(FormatNote::UnknownSeverity {
                    value: crate::format::clip(value),
                }),
            ),
        },
    }
}

/// PagerDuty urgency as DESIGN.md states it: critical and warning are high, error and info low.
pub fn urgency(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical | Severity::Warning => "high",
        Severity::Error | Severity::Info => "low",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_case_insensitive() {
        let options = FormatOptions::default();
        let cases = [
            ("critical", Severity::Critical),
            ("CRITICAL", Severity::Critical),
            (" Warning ", Severity::Warning),
            ("error", Severity::Error),
            ("info", Severity::Info),
            ("noise", Severity::Info),
            ("Page", Severity::Critical),
            ("high", Severity::Error),
            ("MAJOR", Severity::Error),
            ("minor", Severity::Warning),
            ("low", Severity::Info),
        ];
        for (word, expected) in cases {
            assert_eq!(map_severity(word, &options), Some(expected), "{word}");
        }
        assert_eq!(map_severity("sev1", &options), None);
    }

    #[test]
    fn target_map_extends_and_overrides() {
        let mut options = FormatOptions::default();
        options
            .severity_map
            .insert("sev1".into(), Severity::Critical);
        options.severity_map.insert("low".into(), Severity::Warning);
        assert_eq!(map_severity("SEV1", &options), Some(Severity::Critical));
        assert_eq!(map_severity("low", &options), Some(Severity::Warning));
        assert_eq!(map_severity("page", &options), Some(Severity::Critical));
    }

    #[test]
    fn first_present_candidate_wins() {
        let options = FormatOptions::default();
        assert_eq!(
            choose([Some("noise"), Some("critical")], &options),
            (Severity::Info, None)
        );
        assert_eq!(
            choose([None, Some(" "), Some("warning")], &options),
            (Severity::Warning, None)
        );
        assert_eq!(choose([None, None], &options), (Severity::Error, None));
    }

    #[test]
    fn unknown_gives_the_default_and_a_note() {
        let options = FormatOptions {
            default_severity: Severity::Warning,
            ..FormatOptions::default()
        };
        assert_eq!(
            choose([Some("bad"), Some("critical")], &options),
            (
                Severity::Warning,
                Some(FormatNote::UnknownSeverity {
                    value: "bad".into()
                })
            )
        );
    }

    #[test]
    fn urgency_follows_design() {
        assert_eq!(urgency(Severity::Critical), "high");
        assert_eq!(urgency(Severity::Warning), "high");
        assert_eq!(urgency(Severity::Error), "low");
        assert_eq!(urgency(Severity::Info), "low");
    }
}
