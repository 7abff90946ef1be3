//! Benchmarks of the hot paths of building and answering one event.
//!
//! `cargo bench -p pagerduty-events --bench events -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use pagerduty_events::{
    AlertEvent, CustomDetails, DedupKey, Image, Link, RequestBody, RoutingKey, Severity, Source,
    Summary, Trigger, classify,
};
use serde_json::json;

const KEY: &str = "0123456789abcdef0123456789ab3f9a";

fn details() -> CustomDetails {
    CustomDetails::from_iter([
        ("alertname".to_owned(), json!("DiskFull")),
        ("instance".to_owned(), json!("db-1.prod.example.com:9100")),
        ("job".to_owned(), json!("node")),
        ("mountpoint".to_owned(), json!("/var/lib/postgresql")),
        ("free_bytes".to_owned(), json!(1_048_576)),
        ("used_ratio".to_owned(), json!(0.993)),
        ("team".to_owned(), json!("storage")),
        (
            "runbook".to_owned(),
            json!("https://runbooks.example.com/disk-full"),
        ),
        (
            "description".to_owned(),
            json!("Filesystem /var/lib/postgresql on db-1 has less than 1% space left."),
        ),
        (
            "labels".to_owned(),
            json!({"region": "eu-west-1", "cluster": "pg-main", "replica": false}),
        ),
    ])
}

fn realistic_trigger(summary: &Summary, source: &Source, dedup_key: &DedupKey) -> AlertEvent {
    let mut trigger = Trigger::new(summary.clone(), source.clone(), Severity::Critical);
    trigger.dedup_key = Some(dedup_key.clone());
    trigger.payload.timestamp = Some(
        pagerduty_events::EventTime::new(jiff::Timestamp::from_second(1_700_000_000).expect("ts"))
            .expect("a time after the year 0"),
    );
    trigger.payload.component = Some("postgresql".to_owned());
    trigger.payload.group = Some("pg-main".to_owned());
    trigger.payload.class = Some("disk".to_owned());
    trigger.payload.custom_details = Some(details());
    trigger.links = vec![
        Link::new(
            "https://runbooks.example.com/disk-full",
            Some("Runbook".to_owned()),
        )
        .expect("link"),
        Link::new(
            "https://alertmanager.example.com/#/alerts?receiver=pagerduty",
            Some("Alertmanager".to_owned()),
        )
        .expect("link"),
    ];
    trigger.images = vec![
        Image::new(
            "https://grafana.example.com/render/d-solo/disk?panelId=2&width=600&height=300",
            Some("https://grafana.example.com/d/disk"),
            Some("Disk usage, last 6 h".to_owned()),
        )
        .expect("image"),
    ];
    trigger.client = Some("Alertmanager".to_owned());
    AlertEvent::Trigger(trigger)
}

fn build_and_serialize(c: &mut Criterion) {
    let key = RoutingKey::new(KEY).expect("key");
    let summary = Summary::new("Disk full on db-1.prod.example.com (/var/lib/postgresql 99.3%)")
        .expect("summary");
    let source = Source::new("db-1.prod.example.com").expect("source");
    let dedup_key = DedupKey::new("DiskFull/db-1.prod.example.com").expect("dedup key");
    let body = RequestBody::alert(&key, &realistic_trigger(&summary, &source, &dedup_key));
    assert!(!body.shrunk());
    c.bench_function("build_trigger_body", |b| {
        b.iter(|| {
            let event = realistic_trigger(
                black_box(&summary),
                black_box(&source),
                black_box(&dedup_key),
            );
            RequestBody::alert(&key, &event)
        })
    });
}

fn validate_values(c: &mut Criterion) {
    let raw_key = format!("{KEY}\n");
    c.bench_function("validate_values", |b| {
        b.iter(|| {
            let key = RoutingKey::new(black_box(&raw_key)).expect("key");
            let summary = Summary::new(black_box(
                "Disk full on db-1.prod.example.com (/var/lib/postgresql 99.3%)",
            ))
            .expect("summary");
            let source = Source::new(black_box("db-1.prod.example.com")).expect("source");
            let dedup_key =
                DedupKey::new(black_box("DiskFull/db-1.prod.example.com")).expect("dedup key");
            let severity: Severity = black_box("critical").parse().expect("severity");
            let link = Link::new(
                black_box("https://runbooks.example.com/disk-full"),
                Some("Runbook".to_owned()),
            )
            .expect("link");
            let image = Image::new(
                black_box("https://grafana.example.com/render/d-solo/disk?panelId=2"),
                Some(black_box("https://grafana.example.com/d/disk")),
                Some("Disk usage".to_owned()),
            )
            .expect("image");
            (key, summary, source, dedup_key, severity, link, image)
        })
    });
}

fn truncate_summary(c: &mut Criterion) {
    let text =
        "ディスク容量が不足しています 😱🔥 磁盘空间不足 디스크 공간 부족 — disk full! ".repeat(92);
    assert!(
        (9_000..12_000).contains(&text.len()),
        "{} bytes",
        text.len()
    );
    assert!(Summary::was_truncated(&text));
    c.bench_function("truncate_summary_10kb_multibyte", |b| {
        b.iter(|| Summary::truncating(black_box(&text)).expect("summary"))
    });
}

fn parse_response(c: &mut Criterion) {
    let accepted: &[u8] =
        br#"{"status":"success","message":"Event processed","dedup_key":"DiskFull/db-1.prod.example.com"}"#;
    let invalid: &[u8] = br#"{"status":"invalid event","message":"Event object is invalid","errors":["'summary' is too long (maiximum is 1024 characters)","'payload.source' is missing or blank"]}"#;
    let limited: &[u8] = b"429 - Request Limit Exceeded";
    assert!(classify(202, None, accepted).is_ok());
    assert!(classify(400, None, invalid).is_err());
    assert_eq!(
        classify(429, Some("30"), limited)
            .expect_err("rate limited")
            .retry_after(),
        Some(std::time::Duration::from_secs(30))
    );

    let mut group = c.benchmark_group("classify");
    group.bench_function("202_accepted", |b| {
        b.iter(|| classify(black_box(202), None, black_box(accepted)))
    });
    group.bench_function("400_errors", |b| {
        b.iter(|| classify(black_box(400), None, black_box(invalid)))
    });
    group.bench_function("429_retry_after_seconds", |b| {
        b.iter(|| classify(black_box(429), black_box(Some("30")), black_box(limited)))
    });
    group.bench_function("429_retry_after_http_date", |b| {
        b.iter(|| {
            classify(
                black_box(429),
                black_box(Some("Wed, 21 Oct 2015 07:28:00 GMT")),
                black_box(limited),
            )
        })
    });
    group.finish();
}

fn shrink_oversized(c: &mut Criterion) {
    let key = RoutingKey::new(KEY).expect("key");
    let mut trigger = Trigger::new(
        Summary::new("Job failed with a very large log").expect("summary"),
        Source::new("batch-7.prod.example.com").expect("source"),
        Severity::Error,
    );
    trigger.dedup_key = Some(DedupKey::new("job-failed/batch-7").expect("dedup key"));
    // Multi-line logs, as real ones are: newlines take two bytes once escaped.
    let mut details = details();
    details.insert(
        "stderr".to_owned(),
        json!("ERROR worker 7 | ジョブ失敗 | \"retrying\" in 5 s\n".repeat(11_000)),
    );
    details.insert(
        "stdout".to_owned(),
        json!("INFO processed batch 42 of 1000 rows=1000 ok; ".repeat(5_000)),
    );
    trigger.payload.custom_details = Some(details);
    let event = AlertEvent::Trigger(trigger);
    let natural = serde_json::to_vec(&event).expect("serialize").len();
    assert!((750_000..850_000).contains(&natural), "{natural} bytes");
    let body = RequestBody::alert(&key, &event);
    assert!(body.shrunk() && body.len() <= pagerduty_events::MAX_BODY_BYTES);

    let mut group = c.benchmark_group("shrink");
    group.sample_size(20);
    group.bench_function("oversized_trigger_800kb", |b| {
        b.iter(|| RequestBody::alert(&key, black_box(&event)))
    });
    group.finish();
}

criterion_group!(
    benches,
    build_and_serialize,
    validate_values,
    truncate_summary,
    parse_response,
    shrink_oversized
);
criterion_main!(benches);
