//! Targets from Kubernetes Secrets, end to end: the real binary, its real `kube` client
//! (configured through `KUBECONFIG`, as an operator outside the cluster would), the fake API
//! server of the test kit, and the PagerDuty simulator.
//!
//! One scenario, in the order an operator lives it: Secrets there at start are targets once
//! the bridge listens, invalid ones are skipped with a warning; a Secret created later becomes
//! routable within seconds; a rotated key is used for the events queued before the rotation;
//! the watch survives 410 Gone, cut connections and an API server restart; a deleted Secret's
//! target answers 404 while its queued events stay listed and its lane shows misconfigured, and
//! delivers them once the Secret is back.

mod common;

use std::time::Duration;

use common::{Bridge, Setup, simulator, wait_until, wait_until_async};
use pagerbridge_testkit::kube_api::FakeKubeApi;
use pagerduty_simulator::{Config as SimConfig, Faults, SpawnedSimulator};
use serde_json::{Value, json};

const NAMESPACE: &str = "alerts";
const LABELS: &[(&str, &str)] = &[("publishing-target", "true"), ("type", "pagerduty")];
const WEB_KEY: &str = "K8sSecretWebKeyAAAA0000000000001"; // fake test key
const WEB_ROTATED: &str = "K8sSecretWebKeyBBBB0000000000002"; // fake test key
const DB_KEY: &str = "K8sSecretDbKeyCCCCC0000000000003"; // fake test key
const LATE_KEY: &str = "K8sSecretLateKeyDDD0000000000004"; // fake test key
const BROKEN_KEY: &str = "K8sSecretBrokenKeyE0000000000005"; // fake test key
const ALL_KEYS: [&str; 5] = [WEB_KEY, WEB_ROTATED, DB_KEY, LATE_KEY, BROKEN_KEY];
const TOKEN: &str = "k8s-admin-token";
const WAIT: Duration = Duration::from_secs(15);

fn target_config(name: &str, key: &str, team: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "name": name,
        "type": "pagerduty",
        "routing_key": key,
        "match": {"team": team},
    }))
    .expect("json")
}

fn put(api: &FakeKubeApi, secret: &str, config: &[u8]) {
    api.put_secret(NAMESPACE, secret, LABELS, &[("config", config)]);
}

/// A native request of `n` alerts named `prefix-i`, for `target` when given.
fn alerts(target: Option<&str>, prefix: &str, n: usize, team: &str) -> Vec<u8> {
    let alerts: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "status": "firing",
                "labels": {"alertname": format!("{prefix}-{i}"), "team": team},
                "annotations": {"summary": format!("{prefix} {i}")},
            })
        })
        .collect();
    let mut body = json!({ "alerts": alerts });
    if let Some(target) = target {
        body["target"] = json!(target);
    }
    serde_json::to_vec(&body).expect("json")
}

/// Routing keys of the accepted triggers of the alerts named `prefix-…`.
fn keys_used(sim: &SpawnedSimulator, prefix: &str) -> Vec<String> {
    sim.sim
        .events()
        .iter()
        .filter(|e| e.status == 202 && e.path == "/v2/enqueue")
        .filter(|e| {
            e.body["payload"]["custom_details"]["labels"]["alertname"]
                .as_str()
                .is_some_and(|name| name.starts_with(&format!("{prefix}-")))
        })
        .map(|e| {
            e.body["routing_key"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

async fn admin_get(bridge: &Bridge, path: &str) -> Value {
    reqwest::Client::new()
        .get(bridge.url(path))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("admin request")
        .json()
        .await
        .expect("admin json")
}

async fn metric(bridge: &Bridge, series: &str) -> Option<f64> {
    let (_, text) = bridge.get_text("/metrics").await;
    text.lines().find_map(|line| {
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

fn outage(sim: &SpawnedSimulator, seconds: u64) {
    sim.sim.set_faults(Faults {
        outage_seconds: Some(seconds),
        ..Faults::default()
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_become_targets_rotate_survive_watch_failures_and_leave_their_queue() {
    let sim = simulator(SimConfig::default()).await;
    let mut api = FakeKubeApi::start().await;
    put(&api, "pd-web", &target_config("web", WEB_KEY, "web"));
    // Invalid (no routing_key), and one whose key is fine but whose type is not ours.
    put(
        &api,
        "pd-broken",
        br#"{"name": "broken", "type": "pagerduty"}"#,
    );
    put(
        &api,
        "slack",
        &serde_json::to_vec(&json!({"name": "slack", "type": "slack", "routing_key": BROKEN_KEY}))
            .expect("json"),
    );
    // Not selected: no labels.
    api.put_secret(
        NAMESPACE,
        "unlabelled",
        &[],
        &[("config", &target_config("unlabelled", DB_KEY, "x"))],
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = api.kubeconfig(dir.path(), NAMESPACE);
    let token_file = dir.path().join("admin-tokens");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token file");
    let extra = format!(
        "admin:\n  bearer_token_file: \"{}\"\nkubernetes:\n  secrets:\n    namespace: null\n",
        token_file.display()
    );
    // The file's default target matches nothing by itself, so label routing can pick a
    // Secret's target; it still takes every alert no other target matches.
    let setup = Setup::new(
        &sim.base_url(),
        (1000, "60s"),
        &extra,
        "    match: { team: \"ops\" }\n",
    );
    let kubeconfig = kubeconfig.to_string_lossy().into_owned();
    let bridge = setup.start_with_env(&[("KUBECONFIG", &kubeconfig)]).await;

    // A Secret there at start is a target as soon as the bridge listens, by name and by label.
    let (status, answer) = bridge
        .post("/api/v1/alerts", &alerts(Some("web"), "Start", 1, "any"))
        .await;
    assert_eq!(status, 202, "{answer}");
    let (status, _) = bridge
        .post("/api/v1/alerts", &alerts(None, "ByLabel", 1, "web"))
        .await;
    assert_eq!(status, 202);
    wait_until("the first sends", WAIT, || {
        keys_used(&sim, "Start").len() == 1 && keys_used(&sim, "ByLabel").len() == 1
    })
    .await;
    assert_eq!(keys_used(&sim, "Start"), [WEB_KEY]);
    assert_eq!(keys_used(&sim, "ByLabel"), [WEB_KEY]);
    for name in ["broken", "slack", "unlabelled"] {
        let (status, _) = bridge
            .post("/api/v1/alerts", &alerts(Some(name), "Nope", 1, "x"))
            .await;
        assert_eq!(status, 404, "{name} is no target");
    }
    let logs = bridge.logs();
    for secret in ["alerts/pd-broken", "alerts/slack"] {
        assert!(
            logs.iter().any(|l| l.contains("WARN")
                && l.contains("Kubernetes Secret skipped")
                && l.contains(secret)),
            "a warning names {secret}"
        );
    }
    assert_eq!(
        metric(
            &bridge,
            "pagerbridge_kubernetes_secrets_skipped_total{reason=\"invalid\"}"
        )
        .await,
        Some(2.0)
    );
    assert_eq!(
        metric(&bridge, "pagerbridge_targets{source=\"file\"}").await,
        Some(1.0)
    );
    assert_eq!(
        metric(&bridge, "pagerbridge_targets{source=\"secret\"}").await,
        Some(1.0)
    );

    // A Secret created now is routable within seconds, and its lane delivers.
    put(&api, "pd-db", &target_config("db", DB_KEY, "db"));
    wait_until_async("db to become a target", WAIT, || async {
        bridge
            .post("/api/v1/alerts", &alerts(Some("db"), "DbProbe", 1, "db"))
            .await
            .0
            == 202
    })
    .await;
    wait_until("db's first send", WAIT, || {
        !keys_used(&sim, "DbProbe").is_empty()
    })
    .await;
    assert!(keys_used(&sim, "DbProbe").iter().all(|k| k == DB_KEY));

    // Rotation: events queued under the old key go out with the new one.
    outage(&sim, 3600);
    let (status, _) = bridge
        .post("/api/v1/alerts", &alerts(Some("web"), "Queued", 3, "web"))
        .await;
    assert_eq!(status, 202);
    wait_until_async("web's events to be attempted", WAIT, || async {
        let queue = admin_get(&bridge, "/api/v1/admin/queue?target=web").await;
        queue["events"].as_array().is_some_and(|events| {
            events.len() == 3 && events.iter().any(|e| e["attempts"].as_u64() > Some(0))
        })
    })
    .await;
    put(&api, "pd-web", &target_config("web", WEB_ROTATED, "web"));
    // The bridge has the new key once a probe to a new Secret made after it routes: the watch
    // delivers in order.
    put(
        &api,
        "pd-marker",
        &target_config("marker", LATE_KEY, "marker"),
    );
    wait_until_async("the rotation to be seen", WAIT, || async {
        bridge
            .post(
                "/api/v1/alerts",
                &alerts(Some("marker"), "Marker", 1, "marker"),
            )
            .await
            .0
            == 202
    })
    .await;
    // A send that took the old key just before the rotation still meets the outage: end it
    // only once the lane has tried the new key.
    wait_until("a send with the new key", WAIT, || {
        sim.sim
            .events()
            .iter()
            .any(|e| e.body["routing_key"] == WEB_ROTATED)
    })
    .await;
    outage(&sim, 0);
    wait_until("the queued events to be delivered", WAIT, || {
        keys_used(&sim, "Queued").len() == 3
    })
    .await;
    assert_eq!(keys_used(&sim, "Queued"), [WEB_ROTATED; 3]);

    // The watch recovers, one failure at a time. 410 Gone: it lists again, then watches.
    let count =
        |api: &FakeKubeApi, what: &str| api.requests().iter().filter(|r| *r == what).count();
    api.bookmark();
    assert_eq!((count(&api, "list"), count(&api, "watch")), (1, 1));
    api.expire();
    wait_until("a list and a watch after 410 Gone", WAIT, || {
        count(&api, "list") == 2 && count(&api, "watch") == 2
    })
    .await;
    // A cut connection: it watches again from where it was, without listing.
    api.drop_watches();
    wait_until("a watch after the cut", WAIT, || count(&api, "watch") == 3).await;
    assert_eq!(count(&api, "list"), 2);
    wait_until_async("the 410 to be counted", WAIT, || async {
        metric(&bridge, "pagerbridge_kubernetes_watch_errors_total")
            .await
            .is_some_and(|n| n >= 1.0)
    })
    .await;
    // The API server goes away: targets stay; when it is back, changes flow again.
    api.stop();
    let (status, _) = bridge
        .post(
            "/api/v1/alerts",
            &alerts(Some("web"), "WhileDown", 1, "web"),
        )
        .await;
    assert_eq!(status, 202, "targets stay while the API server is down");
    // The watcher retries with backoff while the server is down, and counts each failure:
    // waited for here, since a retry that came only after the restart would not fail.
    wait_until_async(
        "a failure while the API server is down to be counted too",
        WAIT,
        || async {
            metric(&bridge, "pagerbridge_kubernetes_watch_errors_total")
                .await
                .is_some_and(|n| n >= 2.0)
        },
    )
    .await;
    api.restart().await;
    put(&api, "pd-late", &target_config("late", LATE_KEY, "late"));
    wait_until_async(
        "late to become a target after the restart",
        WAIT,
        || async {
            bridge
                .post("/api/v1/alerts", &alerts(Some("late"), "Late", 1, "late"))
                .await
                .0
                == 202
        },
    )
    .await;

    // Deletion: new alerts naming db get 404, its queued events stay, its lane shows
    // misconfigured; label routing no longer picks it.
    outage(&sim, 3600);
    let (status, _) = bridge
        .post("/api/v1/alerts", &alerts(Some("db"), "DbQueued", 2, "db"))
        .await;
    assert_eq!(status, 202);
    assert!(api.delete_secret(NAMESPACE, "pd-db"));
    wait_until_async("db to be gone", WAIT, || async {
        bridge
            .post("/api/v1/alerts", &alerts(Some("db"), "DbGone", 1, "db"))
            .await
            .0
            == 404
    })
    .await;
    // Still during the outage: a send that took the key just before the deletion gets a 503,
    // and the lane's next step finds no key.
    wait_until_async("db's lane to show misconfigured", WAIT, || async {
        metric(
            &bridge,
            "pagerbridge_lane_state{target=\"db\",state=\"misconfigured\"}",
        )
        .await
            == Some(1.0)
    })
    .await;
    let queue = admin_get(&bridge, "/api/v1/admin/queue?target=db").await;
    // Both queued events stay (with any probe the bridge took before it saw the deletion).
    let queued = queue["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            e["summary"]
                .as_str()
                .is_some_and(|s| s.contains("DbQueued-"))
        })
        .count();
    let sent: Vec<String> = sim
        .sim
        .events()
        .iter()
        .filter(|e| e.body.to_string().contains("DbQueued-"))
        .map(|e| format!("{} {}", e.status, e.body["payload"]["class"]))
        .collect();
    assert_eq!(
        queued, 2,
        "db's queued events stay: {queue}; sent: {sent:?}"
    );
    let pending = queue["events"].as_array().map_or(0, Vec::len);
    let lanes = admin_get(&bridge, "/api/v1/admin/lanes").await;
    let db = lanes["lanes"]
        .as_array()
        .and_then(|lanes| lanes.iter().find(|l| l["target"] == "db"))
        .cloned()
        .expect("db's lane is listed");
    assert_eq!(db["configured"], false, "{db}");
    assert_eq!(db["pending"], pending, "{db}");
    outage(&sim, 0);
    // By label, db's alerts now take the default route.
    let (status, _) = bridge
        .post("/api/v1/alerts", &alerts(None, "DbByLabel", 1, "db"))
        .await;
    assert_eq!(status, 202);
    wait_until("the default route's send", WAIT, || {
        keys_used(&sim, "DbByLabel").len() == 1
    })
    .await;
    assert_eq!(keys_used(&sim, "DbByLabel"), [common::ROUTING_KEY]);
    assert!(
        keys_used(&sim, "DbQueued").is_empty(),
        "never sent without a key"
    );

    // Re-created, the target's parked lane wakes and delivers what waited, with the new key,
    // long before its 60 s misconfigured pause would have ended.
    put(&api, "pd-db", &target_config("db", LATE_KEY, "db"));
    wait_until("db's queued events to be delivered", WAIT, || {
        keys_used(&sim, "DbQueued").len() == 2
    })
    .await;
    assert_eq!(keys_used(&sim, "DbQueued"), [LATE_KEY; 2]);

    // A Secret's own `url`, in alert-history's full-endpoint form, to a second simulator
    // playing PagerDuty's EU endpoint: events queued while `pagerduty.url` is down follow the
    // changed Secret there.
    let eu = simulator(SimConfig::default()).await;
    outage(&sim, 3600);
    let (status, _) = bridge
        .post(
            "/api/v1/alerts",
            &alerts(Some("late"), "LateMoved", 2, "late"),
        )
        .await;
    assert_eq!(status, 202);
    let mut moved: Value =
        serde_json::from_slice(&target_config("late", LATE_KEY, "late")).expect("json");
    moved["url"] = json!(format!("{}/v2/enqueue", eu.base_url()));
    put(&api, "pd-late", &serde_json::to_vec(&moved).expect("json"));
    wait_until("late's queued events at the EU endpoint", WAIT, || {
        keys_used(&eu, "LateMoved").len() == 2
    })
    .await;
    assert_eq!(keys_used(&eu, "LateMoved"), [LATE_KEY; 2]);
    assert!(
        keys_used(&sim, "LateMoved").is_empty(),
        "the US one was down"
    );
    outage(&sim, 0);

    // No key of any Secret in the logs.
    for line in bridge.logs() {
        for key in ALL_KEYS {
            assert!(!line.contains(key), "a Secret's key leaked: {line}");
        }
    }
}
