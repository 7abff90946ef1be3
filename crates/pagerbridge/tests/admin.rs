//! The admin API and `pagerbridge admin` end to end: the real binary, a real SQLite file and
//! the PagerDuty simulator, over loopback HTTP. Dead letters are made the way production makes
//! them — PagerDuty answering 400, or events outliving `max_event_age` during an outage — then
//! listed, replayed and dropped, and what PagerDuty sees afterwards is checked.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{
    Bridge, ROUTING_KEY, Setup, SpawnedSimulator, assert_lifecycles, delivered, native_alerts,
    simulator, wait_until_async,
};
use pagerduty_simulator::{AlertState, Config as SimConfig, Faults};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);
const TOKEN: &str = "admin-token-for-tests-0123456789";

/// A bridge configuration with the admin API on (token in a file of its own).
struct AdminSetup {
    setup: Setup,
    token_file: PathBuf,
    _tokens: tempfile::TempDir,
}

fn admin_setup(pagerduty_url: &str) -> AdminSetup {
    admin_setup_with(pagerduty_url, "")
}

/// [`admin_setup`], with `extra` (YAML) at the configuration's top level.
fn admin_setup_with(pagerduty_url: &str, extra: &str) -> AdminSetup {
    let tokens = tempfile::tempdir().expect("temp dir");
    let token_file = tokens.path().join("admin-tokens");
    std::fs::write(&token_file, format!("# admin tokens\n\n{TOKEN}\n")).expect("token file");
    let extra = format!(
        "admin:\n  bearer_token_file: \"{}\"\n{extra}",
        token_file.display()
    );
    AdminSetup {
        setup: Setup::new(pagerduty_url, (1000, "60s"), &extra, ""),
        token_file,
        _tokens: tokens,
    }
}

/// How most tests start: PagerDuty answers `statuses` first (then as usual), a bridge with the
/// admin API on it, and `n` firing alerts `name-0…` accepted.
async fn started_with(
    statuses: Vec<u16>,
    name: &str,
    n: usize,
    severity: &str,
) -> (SpawnedSimulator, AdminSetup, Bridge) {
    let sim = simulator(SimConfig::default()).await;
    sim.sim.set_faults(Faults {
        force_status: Some(statuses),
        ..Faults::default()
    });
    let admin_setup = admin_setup(&sim.base_url());
    let bridge = admin_setup.setup.start().await;
    let (code, _) = bridge
        .post(
            "/api/v1/alerts",
            &native_alerts(name, n, "firing", severity),
        )
        .await;
    assert_eq!(code, 202);
    (sim, admin_setup, bridge)
}

/// An admin request; `token` None sends no Authorization header.
async fn admin(
    bridge: &Bridge,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let client = reqwest::Client::new();
    let url = bridge.url(path);
    let mut request = match method {
        "GET" => client.get(url),
        _ => client.post(url),
    };
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await.expect("admin request");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    assert!(!text.contains(ROUTING_KEY), "routing key in {path}: {text}");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn get(bridge: &Bridge, path: &str) -> Value {
    let (status, body) = admin(bridge, "GET", path, Some(TOKEN), None).await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

async fn post(bridge: &Bridge, path: &str, body: Value) -> Value {
    let (status, answer) = admin(bridge, "POST", path, Some(TOKEN), Some(body)).await;
    assert_eq!(status, 200, "{path}: {answer}");
    answer
}

async fn dead_letters(bridge: &Bridge) -> Vec<Value> {
    get(bridge, "/api/v1/admin/dead-letters").await["dead_letters"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn default_lane(bridge: &Bridge) -> Value {
    let lanes = get(bridge, "/api/v1/admin/lanes").await;
    lanes["lanes"]
        .as_array()
        .and_then(|lanes| lanes.iter().find(|l| l["target"] == "default").cloned())
        .unwrap_or_else(|| panic!("no default lane in {lanes}"))
}

async fn wait_for_dead_letters(bridge: &Bridge, n: usize) -> Vec<Value> {
    wait_until_async(&format!("{n} dead letters"), WAIT, || async {
        dead_letters(bridge).await.len() == n
    })
    .await;
    dead_letters(bridge).await
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_api_is_off_without_a_token_file() {
    let sim = simulator(SimConfig::default()).await;
    let setup = Setup::new(&sim.base_url(), (120, "60s"), "", "");
    let bridge = setup.start().await;
    let disabled = json!({
        "error": "admin_disabled",
        "detail": "set admin.bearer_token_file to enable the admin API"
    });
    for (method, path) in [
        ("GET", "/api/v1/admin/lanes"),
        ("GET", "/api/v1/admin/leases"),
        ("GET", "/api/v1/admin/queue"),
        ("GET", "/api/v1/admin/dead-letters"),
        ("GET", "/api/v1/admin/incidents"),
        ("POST", "/api/v1/admin/dead-letters/replay"),
        ("POST", "/api/v1/admin/dead-letters/drop"),
    ] {
        // A token does not open it either.
        let (status, body) = admin(
            &bridge,
            method,
            path,
            Some(TOKEN),
            Some(json!({"all": true})),
        )
        .await;
        assert_eq!((status, &body), (403, &disabled), "{method} {path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_api_takes_only_its_own_tokens_and_answers_bad_input_with_4xx() {
    let sim = simulator(SimConfig::default()).await;
    let admin_setup = admin_setup(&sim.base_url());
    let bridge = admin_setup.setup.start().await;
    let lanes = "/api/v1/admin/lanes";
    let (status, body) = admin(&bridge, "GET", lanes, None, None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, _) = admin(&bridge, "GET", lanes, Some("wrong-token"), None).await;
    assert_eq!(status, 401);
    let (status, _) = admin(&bridge, "GET", lanes, Some(&TOKEN[1..]), None).await;
    assert_eq!(status, 401);
    let replay = "/api/v1/admin/dead-letters/replay";
    let (status, _) = admin(&bridge, "POST", replay, None, Some(json!({"all": true}))).await;
    assert_eq!(status, 401);

    // The one replica takes the lane's lease as it starts, and reports the lane healthy; wait
    // until both show.
    wait_until_async("the lane's lease and state", WAIT, || async {
        let lane = &get(&bridge, lanes).await["lanes"][0];
        !lane["lease"].is_null() && !lane["state"].is_null()
    })
    .await;
    let mut body = get(&bridge, lanes).await;
    let lease = body["lanes"][0]
        .as_object_mut()
        .and_then(|lane| lane.remove("lease"))
        .expect("a lease field");
    assert!(
        lease["owner"].as_str().is_some_and(|o| !o.is_empty()),
        "{lease}"
    );
    assert_eq!(lease["epoch"], 1, "{lease}");
    let expires: jiff::Timestamp = lease["expires_at"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("expires_at in {lease}"));
    assert!(expires > jiff::Timestamp::now(), "{lease}");
    assert_eq!(
        body["lanes"],
        json!([{"target": "default", "configured": true, "pending": 0, "dead": 0,
                "oldest_pending_accepted_at": null, "oldest_pending_age_seconds": null,
                "state": "healthy",
                "budget": {"used": 0, "limit": 1000, "window_seconds": 60.0}}])
    );

    let drop = "/api/v1/admin/dead-letters/drop";
    for (method, path, body, status, error) in [
        ("POST", replay, json!({}), 400, "empty_filter"),
        ("POST", replay, json!({"all": false}), 400, "empty_filter"),
        ("POST", replay, json!({"ids": []}), 400, "empty_filter"),
        ("POST", replay, json!({"idz": [1]}), 400, "invalid_filter"),
        (
            "POST",
            replay,
            json!({"ids": [1, "two"]}),
            400,
            "invalid_filter",
        ),
        ("POST", replay, json!([1, 2]), 400, "invalid_filter"),
        ("POST", drop, json!({"all": true}), 400, "missing_reason"),
        (
            "POST",
            drop,
            json!({"all": true, "reason": "  "}),
            400,
            "missing_reason",
        ),
        ("POST", drop, json!({"reason": "why"}), 400, "empty_filter"),
        (
            "POST",
            drop,
            json!({"ids": [1], "reason": 7}),
            400,
            "invalid_filter",
        ),
        (
            "GET",
            "/api/v1/admin/leases?name=silence",
            Value::Null,
            400,
            "unknown_parameter",
        ),
        (
            "GET",
            "/api/v1/admin/queue?limit=0",
            Value::Null,
            400,
            "invalid_parameter",
        ),
        (
            "GET",
            "/api/v1/admin/queue?limit=x",
            Value::Null,
            400,
            "invalid_parameter",
        ),
        (
            "GET",
            "/api/v1/admin/queue?tagret=a",
            Value::Null,
            400,
            "unknown_parameter",
        ),
        (
            "GET",
            "/api/v1/admin/dead-letters?action=boom",
            Value::Null,
            400,
            "invalid_parameter",
        ),
        (
            "GET",
            "/api/v1/admin/dead-letters?after_id=x",
            Value::Null,
            400,
            "invalid_parameter",
        ),
        ("GET", "/api/v1/admin/nope", Value::Null, 404, "not_found"),
    ] {
        let body = (!body.is_null()).then_some(body);
        let (got, answer) = admin(&bridge, method, path, Some(TOKEN), body).await;
        assert_eq!(
            (got, answer["error"].as_str()),
            (status, Some(error)),
            "{path}: {answer}"
        );
        assert!(answer["detail"].is_string(), "{answer}");
    }
    // Not JSON, and not declared as JSON.
    let client = reqwest::Client::new();
    for (content_type, body, status) in [
        ("application/json", "{not json", 400),
        ("text/plain", "{\"all\": true}", 415),
    ] {
        let response = client
            .post(bridge.url(replay))
            .bearer_auth(TOKEN)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status().as_u16(), status, "{content_type}");
    }
    // The service is unaffected.
    assert_eq!(bridge.get_text("/healthz").await.0, 200);
}

/// The one replica takes every lease as it starts — its lane's and the three singletons' — and
/// the leases list, `pagerbridge admin leases` and `/metrics` all say so.
#[tokio::test(flavor = "multi_thread")]
async fn the_leases_show_the_replica_that_runs_each_lane_and_singleton() {
    let sim = simulator(SimConfig::default()).await;
    // Nothing listens on port 9: the silence watcher's polls fail (counted), and the fallback
    // webhook is never called, as nothing is dead.
    let admin_setup = admin_setup_with(
        &sim.base_url(),
        "fallback:\n  url: \"http://127.0.0.1:9/hook\"\n\
         alertmanager:\n  url: \"http://127.0.0.1:9\"\n",
    );
    let bridge = admin_setup.setup.start().await;
    let names = ["fallback", "housekeeping", "lane:default", "silence"];
    let listed = |body: &Value| -> Vec<String> {
        body["leases"]
            .as_array()
            .map(|leases| {
                leases
                    .iter()
                    .filter_map(|l| l["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    wait_until_async("every lease taken", WAIT, || async {
        listed(&get(&bridge, "/api/v1/admin/leases").await) == names
    })
    .await;
    let body = get(&bridge, "/api/v1/admin/leases").await;
    let now = jiff::Timestamp::now();
    for lease in body["leases"].as_array().expect("leases") {
        // SQLite: one process per file, whose replica id is fixed.
        assert_eq!(
            (&lease["owner"], &lease["epoch"]),
            (&json!("sqlite"), &json!(1)),
            "{lease}"
        );
        let expires: jiff::Timestamp = lease["expires_at"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("expires_at in {lease}"));
        assert!(expires > now, "held: {lease}");
    }

    let out = cli(&bridge, Some(&admin_setup.token_file), &["leases"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 5, "{table}");
    assert!(lines[0].starts_with("NAME"), "{table}");
    for (line, name) in lines[1..].iter().zip(names) {
        assert!(
            line.starts_with(name) && line.contains("sqlite") && !line.contains("expired"),
            "{table}"
        );
    }

    let (_, metrics) = bridge.get_text("/metrics").await;
    for singleton in ["housekeeping", "silence", "fallback"] {
        let line = format!("pagerbridge_singleton_owned{{singleton=\"{singleton}\"}} 1\n");
        assert!(metrics.contains(&line), "{line:?} not in {metrics}");
    }
}

/// PagerDuty answers 429 for a while: the lanes answer (from the lease, where the lane's owner
/// reports it) and `pagerbridge admin lanes` say so, with the requests counted in the key's
/// budget; once PagerDuty takes the event, the lane is healthy again.
#[tokio::test(flavor = "multi_thread")]
async fn a_rate_limited_lane_shows_its_state_and_budget_use_then_recovers() {
    // Far more 429s than the test needs: the lane retries every 500 ms (`max_backoff`).
    let (sim, admin_setup, bridge) = started_with(vec![429; 200], "Throttled", 1, "error").await;
    wait_until_async("the lane to be rate limited", WAIT, || async {
        default_lane(&bridge).await["state"] == "rate_limited"
    })
    .await;
    let lane = default_lane(&bridge).await;
    let budget = &lane["budget"];
    assert!(budget["used"].as_u64() > Some(0), "{lane}");
    assert_eq!(
        (&budget["limit"], &budget["window_seconds"]),
        (&json!(1000), &json!(60.0)),
        "{lane}"
    );
    assert_eq!(lane["pending"], 1, "{lane}");

    let out = cli(&bridge, Some(&admin_setup.token_file), &["lanes"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    let header = table.lines().next().unwrap_or_default();
    assert!(
        header.contains("STATE") && header.contains("BUDGET"),
        "{table}"
    );
    let row = table.lines().nth(1).unwrap_or_default();
    assert!(
        row.starts_with("default") && row.contains("rate_limited") && row.contains("/1000 per 1m"),
        "{table}"
    );

    // PagerDuty takes requests again.
    sim.sim.set_faults(Faults {
        force_status: Some(vec![]),
        ..Faults::default()
    });
    common::wait_until("the trigger", WAIT, || delivered(&sim).len() == 1).await;
    wait_until_async("the lane to be healthy again", WAIT, || async {
        let lane = default_lane(&bridge).await;
        lane["state"] == "healthy" && lane["pending"] == 0
    })
    .await;
    let lane = default_lane(&bridge).await;
    let requests = sim.sim.events().len() as u64;
    assert!(
        (2..=requests).contains(&lane["budget"]["used"].as_u64().unwrap_or(0)),
        "every request of the last minute is counted ({requests} made): {lane}"
    );
}

/// A lane woken by a commit asks for its budget slot beside reading its next event, and after
/// each send looks again the same way; when there is nothing left to send, it gives the slot
/// back. So once every event is delivered, the key's budget counts exactly the requests made:
/// a slot kept for nothing would count for the whole minute.
#[tokio::test(flavor = "multi_thread")]
async fn the_budget_counts_only_requests_made_after_a_lane_found_nothing_more() {
    let (sim, _admin_setup, bridge) = started_with(vec![], "Woken", 2, "error").await;
    for round in 1..=3 {
        common::wait_until("this round's triggers", WAIT, || {
            delivered(&sim).len() == 2 * round
        })
        .await;
        if round < 3 {
            // The lane is idle again; a new commit wakes it.
            let name = format!("Woken{round}");
            let (code, receipt) = bridge
                .post(
                    "/api/v1/alerts",
                    &native_alerts(&name, 2, "firing", "error"),
                )
                .await;
            assert_eq!(code, 202, "{receipt}");
        }
    }
    let requests = sim.sim.events().len() as u64;
    assert_eq!(requests, 6, "one request per trigger");
    wait_until_async(
        "the budget to count only the requests made",
        WAIT,
        || async {
            let lane = default_lane(&bridge).await;
            lane["pending"] == 0 && lane["budget"]["used"].as_u64() == Some(requests)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rejected_event_is_listed_with_its_reason_replayed_and_delivered() {
    let (sim, _admin_setup, bridge) = started_with(vec![400], "Rejected", 1, "critical").await;

    let dead = wait_for_dead_letters(&bridge, 1).await;
    let letter = &dead[0];
    assert!(
        letter["reason"]
            .as_str()
            .is_some_and(|r| r.contains("HTTP 400")),
        "{letter}"
    );
    assert_eq!(letter["action"], "trigger");
    assert_eq!(letter["target"], "default");
    assert_eq!(letter["superseded_by"], Value::Null);
    assert!(
        letter["summary"]
            .as_str()
            .is_some_and(|s| s.contains("Rejected-0")),
        "{letter}"
    );
    let id = letter["id"].as_i64().expect("id");
    let key = letter["dedup_key"].as_str().expect("dedup key").to_owned();
    let lane = default_lane(&bridge).await;
    assert_eq!(
        (lane["pending"].as_u64(), lane["dead"].as_u64()),
        (Some(0), Some(1))
    );
    assert!(sim.sim.events().iter().all(|e| e.status != 202));

    let report = post(
        &bridge,
        "/api/v1/admin/dead-letters/replay",
        json!({"ids": [id]}),
    )
    .await;
    assert_eq!(report["replayed"], 1, "{report}");
    assert_eq!(report["replayed_ids"], json!([id]));
    assert_eq!(report["superseded"], json!([]));
    // The lane is woken: delivered well before any idle poll or backoff would matter.
    common::wait_until("the replayed trigger", WAIT, || {
        delivered(&sim) == [(key.clone(), "trigger".to_owned())]
    })
    .await;
    wait_until_async("the lane to be empty", WAIT, || async {
        let lane = default_lane(&bridge).await;
        lane["pending"] == 0 && lane["dead"] == 0
    })
    .await;
    assert!(dead_letters(&bridge).await.is_empty());
    let queue = get(&bridge, "/api/v1/admin/queue").await;
    assert_eq!(queue["events"], json!([]));
    // Replaying it again finds nothing to do.
    let again = post(
        &bridge,
        "/api/v1/admin/dead-letters/replay",
        json!({"ids": [id]}),
    )
    .await;
    assert_eq!(again["replayed"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_queue_lists_pending_events_without_keys_and_drop_keeps_a_record() {
    // The first event is refused; then PagerDuty is down, so the next ones stay queued.
    let (sim, _admin_setup, bridge) = started_with(vec![400], "Dropme", 1, "error").await;
    let dead = wait_for_dead_letters(&bridge, 1).await;
    let id = dead[0]["id"].as_i64().expect("id");
    sim.sim.set_faults(Faults {
        outage_seconds: Some(600),
        ..Faults::default()
    });
    let (code, _) = bridge
        .post(
            "/api/v1/alerts",
            &native_alerts("Queued", 2, "firing", "warning"),
        )
        .await;
    assert_eq!(code, 202);
    wait_until_async("two failing pending events", WAIT, || async {
        let queue = get(&bridge, "/api/v1/admin/queue?target=default&limit=10").await;
        queue["events"].as_array().is_some_and(|events| {
            events.len() == 2 && events.iter().any(|e| e["attempts"].as_u64() > Some(0))
        })
    })
    .await;
    let queue = get(&bridge, "/api/v1/admin/queue?limit=1").await;
    let event = &queue["events"][0];
    assert_eq!(event["action"], "trigger");
    assert_eq!(event["severity"], "warning");
    assert_eq!(event["target"], "default");
    assert!(event["accepted_at"].is_string(), "{event}");
    for field in ["id", "dedup_key", "attempts", "last_error", "summary"] {
        assert!(event.get(field).is_some(), "{field} missing: {event}");
    }
    assert_eq!(queue["events"].as_array().map(Vec::len), Some(1), "limit");
    let lane = default_lane(&bridge).await;
    assert_eq!(
        (lane["pending"].as_u64(), lane["dead"].as_u64()),
        (Some(2), Some(1))
    );
    assert!(
        lane["oldest_pending_age_seconds"].as_f64().is_some(),
        "{lane}"
    );

    // Pending events are never dropped, even by id.
    let pending_id = event["id"].as_i64().expect("id");
    let answer = post(
        &bridge,
        "/api/v1/admin/dead-letters/drop",
        json!({"ids": [pending_id], "reason": "no"}),
    )
    .await;
    assert_eq!(answer["dropped"], 0);

    let answer = post(
        &bridge,
        "/api/v1/admin/dead-letters/drop",
        json!({"ids": [id], "reason": "payload fixed upstream; INC-7"}),
    )
    .await;
    assert_eq!(answer["dropped"], 1);
    assert!(dead_letters(&bridge).await.is_empty());
    let lane = default_lane(&bridge).await;
    assert_eq!(lane["dead"], 0);
    let record = get(&bridge, "/api/v1/admin/dead-letters?include_dropped=true").await;
    let record = &record["dead_letters"][0];
    assert_eq!(record["id"], id);
    assert_eq!(record["drop_reason"], "payload fixed upstream; INC-7");
    assert!(record["dropped_at"].is_string(), "{record}");
    // A dropped event is never replayed.
    let report = post(
        &bridge,
        "/api/v1/admin/dead-letters/replay",
        json!({"all": true}),
    )
    .await;
    assert_eq!(report["replayed"], 0);
}

/// Makes `delivery.max_event_age` tiny, so that events outliving an outage expire at the next
/// start of the bridge (maintenance runs at start, then every minute: a replayed event is
/// delivered long before it could expire again).
fn expire_quickly(setup: &Setup) {
    let yaml = std::fs::read_to_string(&setup.config).expect("config");
    let yaml = yaml.replacen("delivery:\n", "delivery:\n  max_event_age: \"1ms\"\n", 1);
    std::fs::write(&setup.config, yaml).expect("config");
}

#[tokio::test(flavor = "multi_thread")]
async fn replaying_everything_after_an_outage_keeps_per_incident_order() {
    let sim = simulator(SimConfig::default()).await;
    sim.sim.set_faults(Faults {
        outage_seconds: Some(600),
        ..Faults::default()
    });
    let admin_setup = admin_setup(&sim.base_url());
    expire_quickly(&admin_setup.setup);
    let mut bridge = admin_setup.setup.start().await;
    // Six incidents trigger; four of them resolve; all during the outage.
    let (code, _) = bridge
        .post(
            "/api/v1/alerts",
            &native_alerts("Outage", 6, "firing", "critical"),
        )
        .await;
    assert_eq!(code, 202);
    let resolves = native_alerts("Outage", 4, "resolved", "critical");
    let (code, receipt) = bridge.post("/api/v1/alerts", &resolves).await;
    assert_eq!((code, &receipt["queued"]), (202, &json!(4)), "{receipt}");
    bridge.terminate(Duration::from_secs(10)).await;

    // Older than max_event_age by now: maintenance at the next start dead-letters all ten.
    let bridge = admin_setup.setup.start().await;
    let dead = wait_for_dead_letters(&bridge, 10).await;
    assert!(
        dead.iter()
            .all(|d| d["reason"].as_str().is_some_and(|r| r.contains("expired"))),
        "{dead:?}"
    );
    assert!(delivered(&sim).is_empty());

    sim.sim.set_faults(Faults {
        outage_seconds: Some(0),
        ..Faults::default()
    });
    let report = post(
        &bridge,
        "/api/v1/admin/dead-letters/replay",
        json!({"all": true}),
    )
    .await;
    assert_eq!(report["replayed"], 10, "{report}");
    assert_eq!(report["superseded"], json!([]));
    common::wait_until("all ten delivered", WAIT, || delivered(&sim).len() == 10).await;

    let keys = |range: std::ops::Range<usize>| -> Vec<String> {
        range
            .map(|i| {
                dead.iter()
                    .find(|d| {
                        d["summary"]
                            .as_str()
                            .is_some_and(|s| s.contains(&format!("Outage-{i}:")))
                    })
                    .and_then(|d| d["dedup_key"].as_str())
                    .unwrap_or_else(|| panic!("incident {i} in {dead:?}"))
                    .to_owned()
            })
            .collect()
    };
    let delivered = delivered(&sim);
    assert_lifecycles(&delivered, &keys(0..4), &["trigger", "resolve"], false);
    assert_lifecycles(&delivered, &keys(4..6), &["trigger"], false);
    let alerts = sim.sim.alerts();
    let open = alerts
        .iter()
        .filter(|a| a.state == AlertState::Triggered)
        .count();
    assert_eq!(open, 2, "PagerDuty ends where the alerts are: {alerts:?}");
    wait_until_async("the lane to be empty", WAIT, || async {
        let lane = default_lane(&bridge).await;
        lane["pending"] == 0 && lane["dead"] == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trigger_whose_resolve_went_through_is_superseded_not_replayed() {
    let (sim, _admin_setup, bridge) = started_with(vec![400], "Flap", 1, "critical").await;
    let dead = wait_for_dead_letters(&bridge, 1).await;
    let trigger = dead[0]["id"].as_i64().expect("id");
    let (code, _) = bridge
        .post(
            "/api/v1/alerts",
            &native_alerts("Flap", 1, "resolved", "critical"),
        )
        .await;
    assert_eq!(code, 202);
    common::wait_until("the resolve", WAIT, || delivered(&sim).len() == 1).await;
    wait_until_async("the resolve to be recorded", WAIT, || async {
        default_lane(&bridge).await["pending"] == 0
    })
    .await;
    let report = post(
        &bridge,
        "/api/v1/admin/dead-letters/replay",
        json!({"all": true}),
    )
    .await;
    assert_eq!(report["replayed"], 0, "{report}");
    assert_eq!(report["superseded"][0]["id"], trigger);
    let dead = dead_letters(&bridge).await;
    assert_eq!(dead[0]["superseded_by"], report["superseded"][0]["by"]);
    // Nothing re-opened in PagerDuty.
    assert!(
        sim.sim
            .alerts()
            .iter()
            .all(|a| a.state != AlertState::Triggered)
    );
    assert_eq!(delivered(&sim).len(), 1);
}

/// Runs `pagerbridge admin …` against the bridge, off the async runtime.
async fn cli(bridge: &Bridge, token_file: Option<&PathBuf>, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pagerbridge"));
    command
        .arg("admin")
        .args(["--url", &bridge.url("")])
        .args(args)
        .env_remove("PAGERBRIDGE_URL")
        .env_remove("PAGERBRIDGE_ADMIN_TOKEN_FILE")
        .env_remove("PAGERBRIDGE_LOG")
        .stdin(Stdio::null());
    if let Some(file) = token_file {
        command.arg("--token-file").arg(file);
    }
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("pagerbridge admin runs");
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!shown.contains(ROUTING_KEY), "routing key printed: {shown}");
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_lists_and_replays_dead_letters() {
    let (sim, admin_setup, bridge) = started_with(vec![400, 400, 400], "Cli", 3, "error").await;
    let token = Some(&admin_setup.token_file);
    let dead = wait_for_dead_letters(&bridge, 3).await;

    let out = cli(&bridge, token, &["dead-letters"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(table.starts_with("ID "), "{table}");
    assert!(table.contains("HTTP 400"), "{table}");
    for letter in &dead {
        assert!(table.contains(&letter["id"].to_string()), "{table}");
    }
    assert_eq!(table.lines().count(), 4, "{table}");

    let out = cli(&bridge, token, &["dead-letters", "--json"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let listed: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(listed["dead_letters"].as_array().map(Vec::len), Some(3));

    let out = cli(&bridge, token, &["lanes"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let lanes = stdout(&out);
    assert!(
        lanes.contains("TARGET") && lanes.contains("default"),
        "{lanes}"
    );

    // Bulk work needs --yes when there is no terminal to confirm on: usage, exit 2.
    let out = cli(&bridge, token, &["replay", "--all"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--yes"), "{}", stderr(&out));
    // Exactly one selection.
    let out = cli(&bridge, token, &["replay", "--yes"]).await;
    assert_eq!(out.status.code(), Some(2));
    let out = cli(&bridge, token, &["replay", "--all", "--target", "default"]).await;
    assert_eq!(out.status.code(), Some(2));
    // No token, or plain http to somewhere else: refused.
    let out = cli(&bridge, None, &["lanes"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("401"), "{}", stderr(&out));
    let out = cli(
        &bridge,
        token,
        &["lanes", "--url", "http://example.com:9095"],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(dead_letters(&bridge).await.len() == 3, "nothing changed");

    // One by id, then the rest of the target.
    let first = dead[0]["id"].to_string();
    let out = cli(&bridge, token, &["replay", "--id", &first]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("replayed 1 of 1"), "{}", stdout(&out));
    let out = cli(&bridge, token, &["replay", "--target", "default", "--yes"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("replayed 2 of 2"), "{}", stdout(&out));
    common::wait_until("three triggers", WAIT, || delivered(&sim).len() == 3).await;

    wait_until_async("an empty queue", WAIT, || async {
        default_lane(&bridge).await["pending"] == 0
    })
    .await;
    let out = cli(&bridge, token, &["queue", "--target", "default"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).lines().count(),
        1,
        "just the header: {}",
        stdout(&out)
    );
    let out = cli(&bridge, token, &["replay", "--all", "--json"]).await;
    assert!(out.status.success(), "nothing to confirm: {}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["replayed"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_drops_with_a_reason() {
    let (_sim, admin_setup, bridge) = started_with(vec![400, 400], "Gone", 2, "info").await;
    let token = Some(&admin_setup.token_file);
    wait_for_dead_letters(&bridge, 2).await;
    let out = cli(&bridge, token, &["drop", "--all", "--yes"]).await;
    assert_eq!(out.status.code(), Some(2), "--reason is required");
    let out = cli(
        &bridge,
        token,
        &["drop", "--all", "--yes", "--reason", "test noise"],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("dropped 2 of 2"), "{}", stdout(&out));
    assert!(dead_letters(&bridge).await.is_empty());
    let out = cli(&bridge, token, &["dead-letters", "--include-dropped"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).matches("dropped: test noise").count(),
        2,
        "{}",
        stdout(&out)
    );
}

/// A native API request for `target`: one alert per (dedup key, status).
fn keyed_alerts(target: &str, alerts: &[(&str, &str)]) -> Vec<u8> {
    let alerts: Vec<Value> = alerts
        .iter()
        .map(|(key, status)| {
            json!({"status": status, "dedup_key": key, "fingerprint": format!("fp-{key}"),
                   "labels": {"alertname": key, "severity": "error"},
                   "annotations": {"summary": format!("{key} is {status}")}})
        })
        .collect();
    serde_json::to_vec(&json!({"target": target, "alerts": alerts})).expect("json")
}

/// (target, dedup key, state) of each listed incident.
fn incident_rows(answer: &Value) -> Vec<(String, String, String)> {
    answer["incidents"]
        .as_array()
        .map(|incidents| {
            incidents
                .iter()
                .map(|i| {
                    let text = |field: &str| i[field].as_str().unwrap_or_default().to_owned();
                    (text("target"), text("dedup_key"), text("state"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Incidents of two targets, from both sources and in every state, listed by filter and
/// paged to the end with the `next` cursor, through the API and `pagerbridge admin incidents`.
#[tokio::test(flavor = "multi_thread")]
async fn incidents_are_listed_by_target_state_and_key_and_paged_with_the_cursor() {
    let sim = simulator(SimConfig::default()).await;
    let admin_setup = admin_setup(&sim.base_url());
    admin_setup.setup.add_target_sharing_the_key("second");
    let token = Some(&admin_setup.token_file);
    let bridge = admin_setup.setup.start().await;
    // `default`, by the native API: d-1 triggered, d-2 acknowledged, d-3 resolved.
    let firing = [("d-1", "firing"), ("d-2", "firing"), ("d-3", "firing")];
    let later = [("d-2", "acknowledged"), ("d-3", "resolved")];
    for body in [
        keyed_alerts("default", &firing),
        keyed_alerts("default", &later),
    ] {
        let (code, receipt) = bridge.post("/api/v1/alerts", &body).await;
        assert_eq!(code, 202, "{receipt}");
    }
    // `second`, by Alertmanager: three firing, then one of them resolved.
    for sample in [
        "alertmanager-webhook-firing.json",
        "alertmanager-webhook-partially-resolved.json",
    ] {
        let (code, receipt) = bridge
            .post("/api/v1/alertmanager/second", &common::sample(sample))
            .await;
        assert_eq!(code, 202, "{receipt}");
    }
    // 5 events for `default`; 3 triggers and a resolve for `second` (the repeated firing alerts
    // are suppressed).
    common::wait_until("every event delivered", WAIT, || delivered(&sim).len() == 9).await;
    wait_until_async("every delivery recorded", WAIT, || async {
        let queue = get(&bridge, "/api/v1/admin/queue").await;
        queue["events"].as_array().is_some_and(Vec::is_empty)
    })
    .await;

    let incidents = "/api/v1/admin/incidents";
    let all = get(&bridge, incidents).await;
    assert_eq!(all["next"], Value::Null, "{all}");
    let rows = incident_rows(&all);
    let states: Vec<(&str, &str)> = rows
        .iter()
        .map(|(target, _, state)| (target.as_str(), state.as_str()))
        .collect();
    let mut second_states: Vec<&str> = states[3..].iter().map(|(_, state)| *state).collect();
    second_states.sort_unstable();
    assert_eq!(
        (&states[..3], second_states.as_slice()),
        (
            &[
                ("default", "triggered"),
                ("default", "acknowledged"),
                ("default", "resolved")
            ][..],
            &["resolved", "triggered", "triggered"][..]
        ),
        "{all}"
    );
    assert_eq!(
        rows[..3].iter().map(|r| r.1.as_str()).collect::<Vec<_>>(),
        ["d-1", "d-2", "d-3"]
    );
    assert!(
        rows[3].1 < rows[4].1 && rows[4].1 < rows[5].1,
        "key order: {all}"
    );
    let acked = &all["incidents"][1];
    assert_eq!(acked["source"], "api", "{acked}");
    assert_eq!(acked["fingerprint"], "fp-d-2", "{acked}");
    let at = |field: &str| -> jiff::Timestamp {
        acked[field]
            .as_str()
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("{field} in {acked}"))
    };
    assert!(at("first_event_at") <= at("last_event_at"), "{acked}");
    assert!(at("last_sent_at") >= at("first_event_at"), "{acked}");
    assert!(
        (3..6).all(|i| all["incidents"][i]["source"] == "alertmanager"),
        "{all}"
    );

    // Filters.
    let count = |answer: Value| incident_rows(&answer).len();
    for (query, expected) in [
        ("?state=open", 4),
        ("?state=triggered", 3),
        ("?state=acknowledged", 1),
        ("?state=resolved", 2),
        ("?target=second", 3),
        ("?target=second&state=resolved", 1),
        ("?target=default&dedup_key=d-2&state=open", 1),
        ("?dedup_key=d-9", 0),
        ("?target=nope", 0),
    ] {
        assert_eq!(
            count(get(&bridge, &format!("{incidents}{query}")).await),
            expected,
            "{query}"
        );
    }

    // Pages of two to the end: three full pages, then an empty one without `next`.
    let mut paged = Vec::new();
    let mut query = format!("{incidents}?limit=2");
    let mut pages = 0;
    loop {
        let page = get(&bridge, &query).await;
        paged.extend(incident_rows(&page));
        pages += 1;
        let Some(next) = page["next"].as_str() else {
            break;
        };
        assert!(pages < 10, "paging must end: {page}");
        let encoded: String = url::form_urlencoded::byte_serialize(next.as_bytes()).collect();
        query = format!("{incidents}?limit=2&after={encoded}");
    }
    assert_eq!((paged, pages), (rows.clone(), 4));

    for (query, error) in [
        ("?state=closed", "invalid_parameter"),
        ("?limit=0", "invalid_parameter"),
        ("?limit=1001", "invalid_parameter"),
        ("?after=no-colon", "invalid_parameter"),
        ("?target=a&target=b", "invalid_parameter"),
        ("?status=open", "unknown_parameter"),
    ] {
        let (status, answer) = admin(
            &bridge,
            "GET",
            &format!("{incidents}{query}"),
            Some(TOKEN),
            None,
        )
        .await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (400, Some(error)),
            "{query}: {answer}"
        );
    }

    let out = cli(&bridge, token, &["incidents", "--state", "open"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("TARGET") && lines[0].contains("DEDUP KEY"),
        "{table}"
    );
    assert_eq!(lines.len(), 5, "{table}");
    assert!(
        lines[1].starts_with("default") && lines[1].contains("d-1") && lines[1].contains("api"),
        "{table}"
    );
    assert!(stderr(&out).is_empty(), "no more pages: {}", stderr(&out));
    let out = cli(
        &bridge,
        token,
        &["incidents", "--target", "default", "--limit", "2"],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().count(), 3, "{}", stdout(&out));
    assert!(
        stderr(&out).contains("--after default:d-2"),
        "{}",
        stderr(&out)
    );
    let out = cli(
        &bridge,
        token,
        &["incidents", "--after", "default:d-2", "--json"],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let page: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(incident_rows(&page), rows[2..].to_vec());
    let out = cli(&bridge, token, &["incidents", "--state", "closed"]).await;
    assert_eq!(out.status.code(), Some(2), "usage: {}", stderr(&out));
}
