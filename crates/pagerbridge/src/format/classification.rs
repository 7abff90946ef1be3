//! The AI classification of an alert: the native API's `classification` object, or else the
//! `ai_*` annotations an Alertmanager rule can carry.

use crate::alert::{Alert, Classification};

/// The alert's classification, if it has one. The native object wins whole; annotations are
/// read only without it, and give a classification only when at least one `ai_*` annotation
/// is set.
pub fn classification(alert: &Alert) -> Option<Classification> {
    if let Some(native) = &alert.classification {
        return Some(native.clone());
    }
    let annotation = |name: &str| {
        alert
            .annotations
            .get(name)
            .map(|text| text.trim())
            .filter(|text| !text.is_empty())
    };
    let from_annotations = Classification {
        severity: annotation("ai_severity").map(str::to_owned),
        category: annotation("ai_category").map(str::to_owned),
        // An unreadable or out-of-range confidence is left out rather than refusing the page.
        confidence: annotation("ai_confidence")
            .and_then(|text| text.parse::<f64>().ok())
            .filter(|confidence| (0.0..=1.0).contains(confidence)),
        reasoning: annotation("ai_reasoning").map(str::to_owned),
        recommendations: annotation("ai_recommendations")
            .map(split_recommendations)
            .unwrap_or_default(),
    };
    (from_annotations != Classification::default()).then_some(from_annotations)
}

/// One recommendation per line or per `;`, trimmed, empty ones dropped.
fn split_recommendations(text: &str) -> Vec<String> {
    text.split(['\n', ';'])
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{AlertStatus, Labels};

    fn alert(annotations: &[(&str, &str)]) -> Alert {
        Alert {
            status: AlertStatus::Firing,
            labels: Labels::from([("alertname".into(), "A".into())]),
            annotations: annotations
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            starts_at: None,
            ends_at: None,
            generator_url: None,
            fingerprint: None,
            dedup_key: None,
            classification: None,
        }
    }

    #[test]
    fn from_annotations() {
        let found = classification(&alert(&[
            ("ai_severity", "noise"),
            ("ai_category", " capacity "),
            ("ai_confidence", "0.8"),
            ("ai_reasoning", "seen before"),
            ("ai_recommendations", "scale out; check queue\n\n restart ;"),
        ]));
        assert_eq!(
            found,
            Some(Classification {
                severity: Some("noise".into()),
                category: Some("capacity".into()),
                confidence: Some(0.8),
                reasoning: Some("seen before".into()),
                recommendations: vec!["scale out".into(), "check queue".into(), "restart".into()],
            })
        );
    }

    #[test]
    fn bad_confidence_is_left_out() {
        for bad in ["high", "1.5", "NaN", "-0.1", "inf"] {
            let found = classification(&alert(&[("ai_category", "x"), ("ai_confidence", bad)]));
            assert_eq!(found.and_then(|c| c.confidence), None, "{bad}");
        }
    }

    #[test]
    fn none_without_ai_annotations() {
        assert_eq!(classification(&alert(&[("summary", "s")])), None);
        assert_eq!(classification(&alert(&[("ai_category", "  ")])), None);
    }

    #[test]
    fn native_object_wins() {
        let mut native = alert(&[("ai_category", "from annotation")]);
        native.classification = Some(Classification {
            category: Some("from api".into()),
            ..Classification::default()
        });
        assert_eq!(
            classification(&native).and_then(|c| c.category).as_deref(),
            Some("from api")
        );
    }
}
