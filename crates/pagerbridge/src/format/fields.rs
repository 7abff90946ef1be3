//! The text fields of an event (summary, source, component, group, class): their defaults from
//! DESIGN.md, and the per-target minijinja templates that override them.
//!
//! A template sees `labels`, `annotations`, `status`, `alertname`, `fingerprint`, `starts_at`,
//! `generator_url`, `classification` and `severity` (the PagerDuty severity already chosen).
//! Undefined names render empty, and an empty (or blank) result means "use the default", so a
//! template such as `{{ labels.team }}` falls back by itself when the label is missing.

use minijinja::Environment;
use pagerduty_events::Severity;
use serde_json::json;
use url::Url;

use crate::alert::{Alert, Classification};
use crate::format::{FieldTemplates, FormatError};

/// A field that a template can override.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Summary,
    Source,
    Component,
    Group,
    Class,
}

impl Field {
    pub const ALL: [Field; 5] = [
        Field::Summary,
        Field::Source,
        Field::Component,
        Field::Group,
        Field::Class,
    ];

    /// The field's name in config and notes; also its template's name.
    pub fn name(self) -> &'static str {
        match self {
            Field::Summary => "summary",
            Field::Source => "source",
            Field::Component => "component",
            Field::Group => "group",
            Field::Class => "class",
        }
    }

    fn template(self, fields: &FieldTemplates) -> Option<&String> {
        match self {
            Field::Summary => fields.summary.as_ref(),
            Field::Source => fields.source.as_ref(),
            Field::Component => fields.component.as_ref(),
            Field::Group => fields.group.as_ref(),
            Field::Class => fields.class.as_ref(),
        }
    }
}

/// A target's compiled templates.
#[derive(Debug, Clone)]
pub struct Templates {
    env: Environment<'static>,
}

impl Templates {
    /// Compiles every configured template; a syntax error names its field.
    pub fn compile(fields: &FieldTemplates) -> Result<Self, FormatError> {
        let mut env = Environment::new();
        for field in Field::ALL {
            if let Some(source) = field.template(fields) {
                env.add_template_owned(field.name(), source.clone())
                    .map_err(|e| FormatError::Template {
                        field: field.name(),
                        detail: format!("{e:#}"),
                    })?;
            }
        }
        Ok(Self { env })
    }

    pub fn is_empty(&self) -> bool {
        self.env.templates().next().is_none()
    }

    /// The trimmed rendering of `field`'s template: `Ok(None)` when there is no template or it
    /// rendered blank, `Err` with the message when it failed.
    pub fn render(
        &self,
        field: Field,
        context: &minijinja::Value,
    ) -> Result<Option<String>, String> {
        let Ok(template) = self.env.get_template(field.name()) else {
            return Ok(None);
        };
        let text = template.render(context).map_err(|e| e.to_string())?;
        let text = text.trim();
        Ok((!text.is_empty()).then(|| text.to_owned()))
    }
}

/// What a template sees.
pub fn context(
    alert: &Alert,
    classification: Option<&Classification>,
    severity: Severity,
) -> minijinja::Value {
    minijinja::Value::from_serialize(json!({
        "labels": alert.labels,
        "annotations": alert.annotations,
        "status": alert.status.as_str(),
        "alertname": alert.name(),
        "fingerprint": alert.fingerprint,
        "starts_at": alert.starts_at.map(|t| t.to_string()),
        "generator_url": alert.generator_url,
        "classification": classification,
        "severity": severity.as_str(),
    }))
}

/// `[SEVERITY] <alertname> - AI: <category>` with a classified category, else
/// `[SEVERITY] <alertname>: <summary or description>`, else `[SEVERITY] <alertname>`.
/// Without `severity` (change events) the `[SEVERITY] ` prefix is left out.
pub fn default_summary(
    alert: &Alert,
    classification: Option<&Classification>,
    severity: Option<Severity>,
) -> String {
    let prefix = severity
        .map(|s| format!("[{}] ", s.as_str().to_uppercase()))
        .unwrap_or_default();
    let name = alert.name();
    if let Some(category) = classification.and_then(|c| non_blank(c.category.as_deref())) {
        return format!("{prefix}{name} - AI: {category}");
    }
    let text = non_blank(alert.annotations.get("summary").map(String::as_str))
        .or_else(|| non_blank(alert.annotations.get("description").map(String::as_str)));
    match text {
        Some(text) => format!("{prefix}{name}: {text}"),
        None => format!("{prefix}{name}"),
    }
}

/// Label `instance`, else `job`, else the generator URL's host, else `pagerbridge`.
pub fn default_source(alert: &Alert) -> String {
    label(alert, "instance")
        .or_else(|| label(alert, "job"))
        .map(str::to_owned)
        .or_else(|| {
            let url = Url::parse(alert.generator_url.as_deref()?).ok()?;
            url.host_str().map(str::to_owned)
        })
        .unwrap_or_else(|| "pagerbridge".to_owned())
}

/// The default of `component`, `group` or `class`; `None` leaves the field out.
pub fn default_optional(alert: &Alert, field: Field) -> Option<String> {
    let names: &[&str] = match field {
        Field::Component => &["service", "job"],
        Field::Group => &["namespace", "cluster"],
        Field::Class => &["alertname"],
        Field::Summary | Field::Source => &[],
    };
    names
        .iter()
        .find_map(|name| label(alert, name))
        .map(str::to_owned)
}

/// A label's value, if set and not blank.
fn label<'a>(alert: &'a Alert, name: &str) -> Option<&'a str> {
    non_blank(alert.labels.get(name).map(String::as_str))
}

fn non_blank(text: Option<&str>) -> Option<&str> {
    text.filter(|text| !text.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{AlertStatus, Labels};

    fn alert(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> Alert {
        let map = |pairs: &[(&str, &str)]| -> Labels {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        Alert {
            status: AlertStatus::Firing,
            labels: map(labels),
            annotations: map(annotations),
            starts_at: None,
            ends_at: None,
            generator_url: None,
            fingerprint: None,
            dedup_key: None,
            classification: None,
        }
    }

    #[test]
    fn summary_rules() {
        let a = alert(
            &[("alertname", "DiskFull")],
            &[("summary", "disk 95%"), ("description", "long")],
        );
        assert_eq!(
            default_summary(&a, None, Some(Severity::Critical)),
            "[CRITICAL] DiskFull: disk 95%"
        );
        let a = alert(
            &[("alertname", "DiskFull")],
            &[("summary", " "), ("description", "long")],
        );
        assert_eq!(
            default_summary(&a, None, Some(Severity::Info)),
            "[INFO] DiskFull: long"
        );
        let a = alert(&[("alertname", "DiskFull")], &[]);
        assert_eq!(
            default_summary(&a, None, Some(Severity::Warning)),
            "[WARNING] DiskFull"
        );
        assert_eq!(default_summary(&a, None, None), "DiskFull");
        let classified = Classification {
            category: Some("capacity".into()),
            ..Classification::default()
        };
        assert_eq!(
            default_summary(&a, Some(&classified), Some(Severity::Error)),
            "[ERROR] DiskFull - AI: capacity"
        );
        // A classification without a category does not change the summary.
        assert_eq!(
            default_summary(&a, Some(&Classification::default()), Some(Severity::Error)),
            "[ERROR] DiskFull"
        );
    }

    #[test]
    fn source_rules() {
        let mut a = alert(
            &[
                ("alertname", "A"),
                ("instance", "db-1:9100"),
                ("job", "node"),
            ],
            &[],
        );
        assert_eq!(default_source(&a), "db-1:9100");
        a.labels.remove("instance");
        assert_eq!(default_source(&a), "node");
        a.labels.remove("job");
        a.generator_url = Some("http://prometheus.example:9090/graph?g0.expr=up".into());
        assert_eq!(default_source(&a), "prometheus.example");
        a.generator_url = Some("not a url".into());
        assert_eq!(default_source(&a), "pagerbridge");
    }

    #[test]
    fn optional_field_rules() {
        let a = alert(
            &[("alertname", "A"), ("job", "node"), ("cluster", "eu-1")],
            &[],
        );
        assert_eq!(
            default_optional(&a, Field::Component).as_deref(),
            Some("node")
        );
        assert_eq!(default_optional(&a, Field::Group).as_deref(), Some("eu-1"));
        assert_eq!(default_optional(&a, Field::Class).as_deref(), Some("A"));
        let a = alert(
            &[
                ("alertname", "A"),
                ("job", "node"),
                ("service", "api"),
                ("namespace", "prod"),
                ("cluster", "eu-1"),
            ],
            &[],
        );
        assert_eq!(
            default_optional(&a, Field::Component).as_deref(),
            Some("api")
        );
        assert_eq!(default_optional(&a, Field::Group).as_deref(), Some("prod"));
        assert_eq!(default_optional(&alert(&[], &[]), Field::Component), None);
    }

    #[test]
    fn templates_render_trimmed_and_blank_means_default() {
        let templates = Templates::compile(&FieldTemplates {
            source: Some("  {{ labels.team }}-{{ alertname }} ".into()),
            group: Some("{{ labels.missing }}".into()),
            ..FieldTemplates::default()
        })
        .expect("compiles");
        let a = alert(&[("alertname", "A"), ("team", "db")], &[]);
        let context = context(&a, None, Severity::Error);
        assert_eq!(
            templates.render(Field::Source, &context),
            Ok(Some("db-A".into()))
        );
        assert_eq!(templates.render(Field::Group, &context), Ok(None));
        assert_eq!(templates.render(Field::Class, &context), Ok(None));
        assert!(!templates.is_empty());
        assert!(
            Templates::compile(&FieldTemplates::default())
                .expect("ok")
                .is_empty()
        );
    }

    #[test]
    fn bad_template_names_its_field() {
        let error = Templates::compile(&FieldTemplates {
            component: Some("{{ labels.job ".into()),
            ..FieldTemplates::default()
        })
        .expect_err("syntax error");
        assert!(
            error
                .to_string()
                .starts_with("the component template does not compile"),
            "{error}"
        );
    }
}
