//! Formatter tests across the rules: lifecycle, dedup modes, templates, size, snapshots of the
//! real Alertmanager samples, PagerDuty's schema, and a property test over arbitrary alerts.

use pagerbridge_testkit::pagerduty_openapi::CrossCheck;
use pagerbridge_testkit::schema;
use pagerduty_events::{RoutingKey, masked_body};
use proptest::prelude::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::*;
use crate::alert::Labels;
use crate::ingest;
use crate::ingest::test_support::{SAMPLES, sample};

const FAKE_KEY: &str = "0123456789abcdef0123456789abcdef";

fn map(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn alert(status: AlertStatus, labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> Alert {
    Alert {
        status,
        labels: map(labels),
        annotations: map(annotations),
        starts_at: "2024-05-01T10:00:00Z".parse().ok(),
        ends_at: None,
        generator_url: Some("http://prometheus.example:9090/graph?g0.expr=up".into()),
        fingerprint: Some("d5cbd2dfa7790fae".into()),
        dedup_key: None,
        classification: None,
    }
}

fn disk_full(status: AlertStatus) -> Alert {
    alert(
        status,
        &[
            ("alertname", "DiskFull"),
            ("instance", "db-1:9100"),
            ("severity", "critical"),
        ],
        &[("summary", "disk 95% full")],
    )
}

/// The per-alert dedup key of [`disk_full`], written out here rather than computed by
/// `alert_dedup_key`: SHA-256 of the Prometheus text of its label set.
fn disk_full_key() -> String {
    hex::encode(Sha256::digest(
        r#"{alertname="DiskFull",instance="db-1:9100",severity="critical"}"#,
    ))
}

fn formatter(options: FormatOptions) -> Formatter {
    Formatter::new(options).expect("valid options")
}

fn format(alert: &Alert) -> Formatted {
    formatter(FormatOptions::default())
        .format(alert, &GroupContext::default())
        .expect("an event")
}

fn trigger(formatted: &Formatted) -> &Trigger {
    match &formatted.event {
        Outbound::Alert(AlertEvent::Trigger(trigger)) => trigger,
        other => panic!("expected a trigger, got {other:?}"),
    }
}

/// The exact body that would be sent (key masked, then a well-formed fake key put back so that
/// the schema's key check passes), with the Events API v2 path it goes to.
fn wire_body(formatted: &Formatted) -> (&'static str, Value) {
    let key = RoutingKey::new(FAKE_KEY).expect("key");
    let (path, (mut body, _)) = match &formatted.event {
        Outbound::Alert(event) => ("/enqueue", masked_body(&key, event)),
        Outbound::Change(event) => ("/change/enqueue", masked_body(&key, event)),
    };
    body["routing_key"] = json!(FAKE_KEY);
    (path, body)
}

/// [`wire_body`], checked against our schema of PagerDuty's Events API v2.
fn valid_wire_body(formatted: &Formatted) -> Value {
    let (path, body) = wire_body(formatted);
    let problems = schema::violations(schema::for_path(path), &body);
    assert!(
        problems.is_empty(),
        "invalid {path} body {body}: {problems:?}"
    );
    body
}

#[test]
fn real_webhook_samples() {
    for name in SAMPLES {
        let webhook = ingest::alertmanager::parse(&sample(name)).expect("valid sample");
        let formatter = formatter(FormatOptions::default());
        let formatted: Vec<Formatted> = webhook
            .alerts
            .iter()
            .map(|alert| formatter.format(alert, &webhook.group).expect("an event"))
            .collect();
        for event in &formatted {
            valid_wire_body(event);
        }
        let snapshot = name.trim_end_matches(".json");
        insta::assert_json_snapshot!(snapshot, formatted);
    }
}

/// What the bridge renders from the real samples, in both dedup modes, is accepted by
/// PagerDuty's own OpenAPI file wherever our schema accepts it.
#[test]
#[ignore = "needs pagerduty_openapi"]
fn rendered_samples_pass_pagerduty_openapi() {
    let mut check = CrossCheck::new();
    for dedup in [DedupMode::Alert, DedupMode::Group] {
        let formatter = formatter(FormatOptions {
            dedup,
            ..FormatOptions::default()
        });
        for name in SAMPLES {
            let webhook = ingest::alertmanager::parse(&sample(name)).expect("valid sample");
            for alert in &webhook.alerts {
                let (path, body) =
                    wire_body(&formatter.format(alert, &webhook.group).expect("an event"));
                check.check(path, &body);
            }
        }
    }
    // The samples hold 3 + 3 + 2 alerts, each rendered in two modes.
    check.assert_agrees(16);
}

#[test]
fn native_alert_with_classification() {
    let request = ingest::native::parse(
        json!({
            "target": "payments",
            "alerts": [{
                "status": "firing",
                "labels": {"alertname": "CheckoutLatency", "service": "checkout",
                           "namespace": "shop", "severity": "warning"},
                "annotations": {"summary": "p99 latency above 2 s",
                                "runbook_url": "https://runbooks.example/checkout",
                                "grafana_snapshot_url": "https://grafana.example/render/abc.png"},
                "startsAt": "2024-05-01T10:00:00Z",
                "generatorURL": "https://grafana.example/alerting/grafana/abc/view",
                "classification": {
                    "severity": "page", "category": "capacity", "confidence": 0.92,
                    "reasoning": "latency rises with queue depth",
                    "recommendations": ["scale out checkout", "check the payment provider"]
                }
            }]
        })
        .to_string()
        .as_bytes(),
    )
    .expect("valid request");
    let formatted = format(&request.alerts[0]);
    valid_wire_body(&formatted);
    assert_eq!(
        trigger(&formatted).payload.summary.as_str(),
        "[CRITICAL] CheckoutLatency - AI: capacity"
    );
    insta::assert_json_snapshot!("native-classified", formatted);
}

#[test]
fn default_dedup_key_is_the_hash_of_the_prometheus_label_text() {
    let webhook = ingest::alertmanager::parse(&sample(SAMPLES[0])).expect("valid sample");
    let host_1 = &webhook.alerts[0];
    assert_eq!(host_1.labels["instance"], "host-1.harness.test:9100");
    let expected = hex::encode(Sha256::digest(
        r#"{alertname="HarnessGrouped",harness_run="sample",instance="host-1.harness.test:9100",job="harness",severity="critical"}"#,
    ));
    let formatted = format(host_1);
    assert_eq!(
        formatted.dedup_key.as_ref().map(DedupKey::as_str),
        Some(expected.as_str())
    );
    // The key stays with the alert through its lifecycle.
    let resolved = ingest::alertmanager::parse(&sample(SAMPLES[2])).expect("valid sample");
    assert_eq!(format(&resolved.alerts[0]).dedup_key, formatted.dedup_key);
}

#[test]
fn group_mode_reproduces_alertmanagers_key() {
    let webhook = ingest::alertmanager::parse(&sample(SAMPLES[0])).expect("valid sample");
    let formatter = formatter(FormatOptions {
        dedup: DedupMode::Group,
        ..FormatOptions::default()
    });
    for alert in &webhook.alerts {
        let formatted = formatter.format(alert, &webhook.group).expect("an event");
        assert_eq!(
            formatted.dedup_key.as_ref().map(DedupKey::as_str),
            // What Alertmanager 0.25's own PagerDuty receiver sent for this group.
            Some("9382d2526312daff39190cc77fe569a31c240c981bbe36cbdc9c77e8b11e5622")
        );
        assert!(formatted.notes.is_empty());
    }
}

#[test]
fn group_mode_without_group_key_falls_back_with_a_note() {
    let formatter = formatter(FormatOptions {
        dedup: DedupMode::Group,
        ..FormatOptions::default()
    });
    let alert = disk_full(AlertStatus::Firing);
    let formatted = formatter
        .format(&alert, &GroupContext::default())
        .expect("an event");
    assert_eq!(
        formatted.dedup_key.as_ref().map(DedupKey::as_str),
        Some(disk_full_key().as_str())
    );
    assert_eq!(formatted.notes, [FormatNote::NoGroupKey]);
}

#[test]
fn callers_dedup_key_wins() {
    let mut alert = disk_full(AlertStatus::Firing);
    alert.dedup_key = Some(DedupKey::new("checkout-latency").expect("key"));
    let group = GroupContext {
        group_key: Some("{}:{}".into()),
        ..GroupContext::default()
    };
    for dedup in [DedupMode::Alert, DedupMode::Group] {
        let formatted = formatter(FormatOptions {
            dedup,
            ..FormatOptions::default()
        })
        .format(&alert, &group)
        .expect("an event");
        assert_eq!(formatted.dedup_key, alert.dedup_key);
        assert_eq!(trigger(&formatted).dedup_key, alert.dedup_key);
    }
}

#[test]
fn lifecycle_mapping() {
    let key = DedupKey::new(disk_full_key()).expect("key");
    let firing = format(&disk_full(AlertStatus::Firing));
    assert_eq!(trigger(&firing).dedup_key.as_ref(), Some(&key));
    let cases = [
        (AlertStatus::Acknowledged, "acknowledge"),
        (AlertStatus::Silenced, "acknowledge"),
        (AlertStatus::Resolved, "resolve"),
    ];
    for (status, action) in cases {
        let formatted = format(&disk_full(status));
        assert_eq!(formatted.dedup_key.as_ref(), Some(&key));
        assert_eq!(formatted.severity, Some(Severity::Critical));
        assert_eq!(formatted.payload_hash, None);
        // Only the key: PagerDuty's wire format for acknowledge and resolve.
        assert_eq!(
            serde_json::to_value(&formatted.event).expect("serialize"),
            json!({"event_action": action, "dedup_key": key.as_str()})
        );
        valid_wire_body(&formatted);
    }
}

#[test]
fn change_event_alerts() {
    let mut deploy = alert(
        AlertStatus::Firing,
        &[
            ("alertname", "Deploy"),
            ("change_event", "true"),
            ("job", "ci"),
            ("severity", "info"),
        ],
        &[
            ("summary", "checkout v2.4.1 rolled out"),
            ("runbook_url", "https://runbooks.example/deploys"),
        ],
    );
    let group = GroupContext {
        external_url: Some("http://am.example:9093".into()),
        ..GroupContext::default()
    };
    let formatter = formatter(FormatOptions::default());
    let formatted = formatter.format(&deploy, &group).expect("a change event");
    assert_eq!(
        (formatted.dedup_key.clone(), formatted.severity),
        (None, None)
    );
    assert_eq!(formatted.payload_hash, None);
    valid_wire_body(&formatted);
    assert_eq!(
        serde_json::to_value(&formatted.event).expect("serialize"),
        json!({
            "payload": {
                "summary": "Deploy: checkout v2.4.1 rolled out",
                "source": "ci",
                "timestamp": "2024-05-01T10:00:00Z",
                "custom_details": {
                    "labels": {"alertname": "Deploy", "change_event": "true", "job": "ci", "severity": "info"},
                    "annotations": {"summary": "checkout v2.4.1 rolled out",
                                    "runbook_url": "https://runbooks.example/deploys"},
                    "fingerprint": "d5cbd2dfa7790fae",
                    "starts_at": "2024-05-01T10:00:00Z",
                    "generator_url": "http://prometheus.example:9090/graph?g0.expr=up"
                }
            },
            "links": [
                {"href": "http://prometheus.example:9090/graph?g0.expr=up", "text": "Source"},
                {"href": "https://runbooks.example/deploys", "text": "Runbook"}
            ]
        })
    );
    for status in [
        AlertStatus::Resolved,
        AlertStatus::Acknowledged,
        AlertStatus::Silenced,
    ] {
        deploy.status = status;
        assert_eq!(formatter.format(&deploy, &group), None, "{status:?}");
    }
    // Only the exact value "true" makes a change event.
    deploy.status = AlertStatus::Firing;
    deploy.labels.insert("change_event".into(), "yes".into());
    assert!(matches!(
        formatter.format(&deploy, &group).map(|f| f.event),
        Some(Outbound::Alert(AlertEvent::Trigger(_)))
    ));
}

#[test]
fn severity_sources_in_order() {
    let mut a = disk_full(AlertStatus::Firing);
    a.annotations.insert("ai_severity".into(), "noise".into());
    let formatted = format(&a);
    assert_eq!(formatted.severity, Some(Severity::Info));
    assert_eq!(trigger(&formatted).payload.severity, Severity::Info);
    assert_eq!(
        trigger(&formatted).payload.summary.as_str(),
        "[INFO] DiskFull: disk 95% full"
    );

    a.annotations.remove("ai_severity");
    a.labels.insert("severity".into(), "P1".into());
    let formatted = format(&a);
    assert_eq!(formatted.severity, Some(Severity::Error));
    assert_eq!(
        formatted.notes,
        [FormatNote::UnknownSeverity { value: "P1".into() }]
    );

    let mut options = FormatOptions {
        default_severity: Severity::Warning,
        ..FormatOptions::default()
    };
    options.severity_map.insert("p1".into(), Severity::Critical);
    let formatted = formatter(options.clone())
        .format(&a, &GroupContext::default())
        .expect("an event");
    assert_eq!(formatted.severity, Some(Severity::Critical));
    assert!(formatted.notes.is_empty());

    a.labels.remove("severity");
    let formatted = formatter(options)
        .format(&a, &GroupContext::default())
        .expect("an event");
    assert_eq!(formatted.severity, Some(Severity::Warning));
    assert!(
        formatted.notes.is_empty(),
        "no severity at all is not a problem"
    );
}

#[test]
fn urgency_and_status_in_details() {
    let cases = [
        ("critical", "high"),
        ("warning", "high"),
        ("error", "low"),
        ("info", "low"),
    ];
    for (severity, urgency) in cases {
        let mut a = disk_full(AlertStatus::Firing);
        a.labels.insert("severity".into(), severity.into());
        let details = trigger(&format(&a)).payload.custom_details.clone();
        let details = details.expect("details");
        assert_eq!(details["urgency"], urgency, "{severity}");
        assert_eq!(details["status"], "firing");
    }
}

#[test]
fn fields_default_from_labels() {
    let mut a = disk_full(AlertStatus::Firing);
    a.labels.insert("service".into(), "postgres".into());
    a.labels.insert("namespace".into(), "db".into());
    let formatted = format(&a);
    let payload = &trigger(&formatted).payload;
    assert_eq!(payload.source.as_str(), "db-1:9100");
    assert_eq!(payload.component.as_deref(), Some("postgres"));
    assert_eq!(payload.group.as_deref(), Some("db"));
    assert_eq!(payload.class.as_deref(), Some("DiskFull"));
    assert_eq!(payload.timestamp.map(|t| t.timestamp()), a.starts_at);
}

#[test]
fn long_summary_is_cut_with_a_note() {
    let mut a = disk_full(AlertStatus::Firing);
    a.annotations.insert("summary".into(), "日本".repeat(1000));
    let formatted = format(&a);
    let summary = trigger(&formatted).payload.summary.as_str();
    assert_eq!(summary.chars().count(), 1024);
    assert!(summary.starts_with("[CRITICAL] DiskFull: 日本") && summary.ends_with('…'));
    assert_eq!(formatted.notes, [FormatNote::SummaryTruncated]);
}

#[test]
fn templates_override_and_fall_back() {
    let formatter = formatter(FormatOptions {
        fields: FieldTemplates {
            summary: Some("{{ severity | upper }} {{ alertname }} on {{ labels.instance }}".into()),
            source: Some("{{ labels.team }}".into()),
            component: Some("{{ \"a\" + 1 }}".into()),
            group: Some("{{ labels.instance | upper }}".into()),
            class: Some("{{ status }}/{{ fingerprint }}".into()),
        },
        ..FormatOptions::default()
    })
    .format(&disk_full(AlertStatus::Firing), &GroupContext::default())
    .expect("an event");
    let payload = &trigger(&formatter).payload;
    assert_eq!(payload.summary.as_str(), "CRITICAL DiskFull on db-1:9100");
    // `labels.team` is missing: blank result, default source.
    assert_eq!(payload.source.as_str(), "db-1:9100");
    // The component template fails at render time: default (no service/job label → none).
    assert_eq!(payload.component, None);
    assert_eq!(payload.class.as_deref(), Some("firing/d5cbd2dfa7790fae"));
    assert_eq!(payload.group.as_deref(), Some("DB-1:9100"));
    assert!(
        matches!(formatter.notes.as_slice(), [FormatNote::TemplateFailed { field, .. }] if field == "component"),
        "{:?}",
        formatter.notes
    );
}

#[test]
fn a_template_that_does_not_compile_is_refused_up_front() {
    let error = Formatter::new(FormatOptions {
        fields: FieldTemplates {
            group: Some("{% if %}".into()),
            ..FieldTemplates::default()
        },
        ..FormatOptions::default()
    })
    .expect_err("syntax error");
    assert!(
        matches!(error, FormatError::Template { field: "group", .. }),
        "{error}"
    );
}

#[test]
fn payload_hash_is_stable_and_tracks_content() {
    let a = disk_full(AlertStatus::Firing);
    let first = format(&a).payload_hash.expect("trigger hash");
    assert_eq!(
        format(&a.clone()).payload_hash.as_deref(),
        Some(first.as_str())
    );
    assert_eq!(first.len(), 64);
    // SHA-256 of the event's JSON, hashed here with `sha2` itself, not with the formatter's
    // own helper.
    let expected = hex::encode(Sha256::digest(
        serde_json::to_vec(&format(&a).event).expect("serialize"),
    ));
    assert_eq!(first, expected);
    let mut changed = a;
    changed
        .annotations
        .insert("summary".into(), "disk 99% full".into());
    assert_ne!(format(&changed).payload_hash, Some(first));
}

#[test]
fn the_peers_of_an_alertmanager_ha_set_send_one_payload() {
    // The same alert from two peers differs only in the silence link (each peer's own
    // externalURL): the same payload, so not a change to send again.
    let alert = disk_full(AlertStatus::Firing);
    let formatter = Formatter::new(FormatOptions::default()).expect("formatter");
    let from = |external_url: &str| {
        let group = GroupContext {
            external_url: Some(external_url.to_owned()),
            ..GroupContext::default()
        };
        formatter.format(&alert, &group).expect("formatted")
    };
    let (one, two) = (from("http://am-0:9093"), from("http://am-1:9093"));
    assert_ne!(one.event, two.event, "each shows its own silence link");
    assert_eq!(one.payload_hash, two.payload_hash);
    assert!(one.payload_hash.is_some());
}

#[test]
fn non_https_image_is_dropped_with_a_note() {
    let mut a = disk_full(AlertStatus::Firing);
    a.annotations
        .insert("image_url".into(), "http://grafana.example/x.png".into());
    let formatted = format(&a);
    assert!(trigger(&formatted).images.is_empty());
    assert_eq!(
        formatted.notes,
        [FormatNote::ImageDropped {
            url: "http://grafana.example/x.png".into()
        }]
    );
}

#[test]
fn megabyte_annotation_still_fits_the_body_limit() {
    let mut a = disk_full(AlertStatus::Firing);
    a.annotations
        .insert("description".into(), "x".repeat(1_000_000));
    a.annotations
        .insert("summary".into(), "y".repeat(1_000_000));
    let formatted = format(&a);
    let body = valid_wire_body(&formatted);
    let len = serde_json::to_vec(&body).expect("serialize").len();
    assert!(len <= pagerduty_events::MAX_BODY_BYTES, "{len} bytes");
    assert_eq!(body["payload"]["severity"], "critical");
    let summary = body["payload"]["summary"].as_str().expect("summary");
    assert!(summary.starts_with("[CRITICAL] DiskFull: yyy"), "{summary}");
    assert_eq!(
        body["dedup_key"],
        formatted.dedup_key.map(String::from).expect("key")
    );
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,24}",
        "[\"\\\\\n a-zé日]{0,24}",
        Just(String::new()),
        "(https?://)?[a-z.]{1,10}(/[^ ]{0,10})?",
        "\\PC{1100,1200}",
    ]
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "instance",
            "job",
            "severity",
            "service",
            "namespace",
            "cluster",
            "change_event",
            "summary",
            "description",
            "runbook_url",
            "dashboard_url",
            "grafana_url",
            "image_url",
            "grafana_snapshot_url",
            "ai_severity",
            "ai_category",
            "ai_confidence",
            "ai_reasoning",
            "ai_recommendations",
        ])
        .prop_map(str::to_owned),
        "\\PC{1,12}",
    ]
}

fn arbitrary_alert() -> impl Strategy<Value = (Alert, GroupContext)> {
    let labels = (
        prop::collection::btree_map(name(), text(), 0..8),
        "\\PC{1,30}",
    )
        .prop_map(|(mut labels, alertname)| {
            labels.insert("alertname".into(), alertname);
            labels
        });
    let status = prop::sample::select(vec![
        AlertStatus::Firing,
        AlertStatus::Acknowledged,
        AlertStatus::Silenced,
        AlertStatus::Resolved,
    ]);
    let timestamp = prop::option::of(
        (0i64..253_402_300_799).prop_map(|s| jiff::Timestamp::from_second(s).ok()),
    )
    .prop_map(Option::flatten);
    (
        status,
        labels,
        prop::collection::btree_map(name(), text(), 0..8),
        timestamp,
        prop::option::of(text()),
        prop::option::of(text()),
        prop::option::of(text()),
    )
        .prop_map(
            |(status, labels, annotations, starts_at, generator_url, group_key, external_url)| {
                let alert = Alert {
                    status,
                    labels,
                    annotations,
                    starts_at,
                    ends_at: None,
                    generator_url,
                    fingerprint: None,
                    dedup_key: None,
                    classification: None,
                };
                let group = GroupContext {
                    group_key,
                    external_url,
                    receiver: None,
                };
                (alert, group)
            },
        )
}

proptest! {
    #[test]
    fn any_alert_formats_to_a_valid_event(
        (alert, group) in arbitrary_alert(),
        group_mode in any::<bool>(),
    ) {
        let formatter = formatter(FormatOptions {
            dedup: if group_mode { DedupMode::Group } else { DedupMode::Alert },
            ..FormatOptions::default()
        });
        let Some(formatted) = formatter.format(&alert, &group) else {
            prop_assert!(alert.is_change_event() && alert.status != AlertStatus::Firing);
            return Ok(());
        };
        valid_wire_body(&formatted);
        match &formatted.event {
            Outbound::Alert(event) => {
                let key = formatted.dedup_key.as_ref().map(DedupKey::as_str).unwrap_or("");
                prop_assert_eq!(key.len(), 64);
                prop_assert!(key.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')));
                prop_assert_eq!(event.dedup_key(), formatted.dedup_key.as_ref());
                if let AlertEvent::Trigger(trigger) = event {
                    prop_assert!(trigger.payload.summary.as_str().chars().count() <= 1024);
                }
            }
            Outbound::Change(event) => {
                prop_assert!(event.payload.summary.as_str().chars().count() <= 1024);
            }
        }
    }
}
