//! Benchmarks of the hot path of an alert: parse, format, dedup key, plan, and the durable
//! outbox commit into a real SQLite file.
//!
//! `cargo bench -p pagerbridge --bench bridge -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use jiff::Timestamp;
use pagerbridge::alert::Labels;
use pagerbridge::config::{KeySource, RateLimit, Target};
use pagerbridge::format::{self, FormatOptions, Formatter};
use pagerbridge::ingest::alertmanager;
use pagerbridge::pipeline::{self, Planner};
use pagerbridge::store::sqlite::SqliteStore;
use pagerbridge::store::{Acceptance, NewEvent, Outbox, SuppressionPolicy};
use pagerbridge_testkit::samples::read as sample;
use serde_json::Value;

/// Alerts per webhook in the batch benchmarks.
const BATCH: usize = 100;

/// The real firing sample, its 3 alerts cloned to `n` with distinct labels (alertname,
/// instance) and fingerprints, so no two alerts share a dedup key.
fn webhook_body(n: usize) -> Vec<u8> {
    let mut webhook: Value =
        serde_json::from_slice(&sample("alertmanager-webhook-firing.json")).expect("sample JSON");
    let originals = webhook["alerts"].as_array().expect("alerts array").clone();
    let alerts: Vec<Value> = (0..n)
        .map(|i| {
            let mut alert = originals[i % originals.len()].clone();
            alert["labels"]["alertname"] = Value::from(format!("HarnessGrouped{i}"));
            alert["labels"]["instance"] = Value::from(format!("host-{i}.harness.test:9100"));
            alert["fingerprint"] = Value::from(format!("{i:016x}"));
            alert
        })
        .collect();
    webhook["alerts"] = Value::Array(alerts);
    serde_json::to_vec(&webhook).expect("serialize")
}

fn target() -> Target {
    Target {
        name: "default".to_owned(),
        key_source: KeySource::Env("PAGERBRIDGE_BENCH_KEY".to_owned()),
        matchers: Vec::new(),
        format: FormatOptions::default(),
        rate_limit: RateLimit::default(),
        url: None,
        on_silence: pagerbridge::config::SyncAction::Acknowledge,
        on_inhibit: pagerbridge::config::SyncAction::None,
    }
}

fn six_labels() -> Labels {
    [
        ("alertname", "KubePodCrashLooping"),
        ("cluster", "prod-eu-west-1"),
        ("container", "api-server"),
        ("instance", "10.42.17.203:8080"),
        ("namespace", "payments"),
        ("severity", "critical"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn pure(c: &mut Criterion) {
    let body = webhook_body(BATCH);
    let planner = Planner::new(vec![target()]).expect("planner");

    let mut group = c.benchmark_group("pure");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("parse_webhook_100", |b| {
        b.iter(|| alertmanager::parse(black_box(&body)).expect("valid"));
    });
    group.bench_function("parse_and_plan_webhook_100", |b| {
        b.iter(|| {
            let webhook = alertmanager::parse(black_box(&body)).expect("valid");
            planner
                .plan(webhook.alerts, &webhook.group, None)
                .expect("planned")
        });
    });
    group.finish();

    let webhook = alertmanager::parse(&sample("alertmanager-webhook-firing.json")).expect("valid");
    let formatter = Formatter::new(FormatOptions::default()).expect("formatter");
    let mut group = c.benchmark_group("pure");
    group.throughput(Throughput::Elements(1));
    group.bench_function("format_one_alert", |b| {
        b.iter(|| {
            formatter
                .format(black_box(&webhook.alerts[0]), black_box(&webhook.group))
                .expect("formatted")
        });
    });
    let labels = six_labels();
    group.bench_function("dedup_key_6_labels", |b| {
        b.iter(|| format::alert_dedup_key(black_box(&labels)));
    });
    group.finish();
}

fn sqlite(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let store = runtime
        .block_on(SqliteStore::open(&dir.path().join("bench.db")))
        .expect("store");
    let store = &store;

    // 100 realistic outbox rows, from planned alerts of the 100-alert webhook.
    let webhook = alertmanager::parse(&webhook_body(BATCH)).expect("valid");
    let planned = Planner::new(vec![target()])
        .expect("planner")
        .plan(webhook.alerts, &webhook.group, None)
        .expect("planned");
    let template: Vec<NewEvent> = planned.into_iter().map(pipeline::new_event).collect();
    let policy = SuppressionPolicy::default();
    let policy = &policy;

    // Each batch gets fresh dedup keys, so every event is queued (no incident to suppress
    // against) and each accept is one fsync'd transaction of 100 inserts + 100 upserts.
    let round = AtomicU64::new(0);
    let fresh_batch = || {
        let n = round.fetch_add(1, Ordering::Relaxed);
        template
            .iter()
            .enumerate()
            .map(|(i, event)| NewEvent {
                dedup_key: Some(format!("bench-{n}-{i}")),
                ..event.clone()
            })
            .collect::<Vec<_>>()
    };

    let mut group = c.benchmark_group("sqlite");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("accept_100_new", |b| {
        b.to_async(&runtime).iter_batched(
            fresh_batch,
            |events| async move {
                let results = store
                    .accept(events, policy, Timestamp::now())
                    .await
                    .expect("accept");
                debug_assert!(
                    results
                        .iter()
                        .all(|r| matches!(r, Acceptance::Queued { .. }))
                );
                results
            },
            BatchSize::SmallInput,
        );
    });

    // Alertmanager re-sends every firing alert of a group; the same 100 events again are
    // all suppressed: the transaction only reads, so nothing is written or fsync'd.
    let resent = template.clone();
    runtime
        .block_on(store.accept(resent.clone(), policy, Timestamp::now()))
        .expect("first accept");
    group.bench_function("accept_100_suppressed_resend", |b| {
        b.to_async(&runtime).iter_batched(
            || resent.clone(),
            |events| async move {
                let results = store
                    .accept(events, policy, Timestamp::now())
                    .await
                    .expect("accept");
                debug_assert!(
                    results
                        .iter()
                        .all(|r| matches!(r, Acceptance::Suppressed { .. }))
                );
                results
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

criterion_group!(benches, pure, sqlite);
criterion_main!(benches);
