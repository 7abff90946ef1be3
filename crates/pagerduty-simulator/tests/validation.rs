//! PagerDuty's validation of alert events, body checks and unknown routes: each problem with
//! its exact answer, and none of the rejected events ingested.

mod common;

use common::{ENQUEUE, Harness, KEY_A, accepted, action, invalid, trigger};
use pagerduty_simulator::Config;
use serde_json::{Value, json};

/// Posts `event` and checks it is refused with exactly `errors` and changes no alert.
async fn assert_invalid(event: Value, errors: &[&str]) {
    let h = Harness::default().await;
    let answer = h.post(ENQUEUE, &event).await;
    assert_eq!(answer.status, 400, "{event}");
    assert_eq!(answer.body, invalid(errors), "{event}");
    assert!(h.server.sim.alerts().is_empty());
    assert_eq!(h.server.sim.stats().rejected_invalid, 1);
}

async fn assert_accepted(event: Value) {
    let h = Harness::default().await;
    let answer = h.post(ENQUEUE, &event).await;
    assert_eq!(answer.status, 202, "{event} -> {}", answer.body);
}

fn without(mut event: Value, pointer_parent: &str, field: &str) -> Value {
    let parent = if pointer_parent.is_empty() {
        &mut event
    } else {
        event.pointer_mut(pointer_parent).expect("parent exists")
    };
    parent.as_object_mut().expect("object").remove(field);
    event
}

fn with(mut event: Value, pointer: &str, value: Value) -> Value {
    *event.pointer_mut(pointer).expect("field exists") = value;
    event
}

fn valid() -> Value {
    trigger(KEY_A, "k", "Disk full")
}

const ROUTING_KEY_MISSING: &str = "'routing_key' is missing or blank";
const ROUTING_KEY_LENGTH: &str = "Length of 'routing_key' is incorrect (should be 32 characters)";
const ROUTING_KEY_CHARSET: &str = "'routing_key' cannot contain non-alphanumeric characters.";

#[tokio::test]
async fn routing_key_missing() {
    assert_invalid(without(valid(), "", "routing_key"), &[ROUTING_KEY_MISSING]).await;
}

#[tokio::test]
async fn routing_key_not_a_string() {
    assert_invalid(
        with(valid(), "/routing_key", json!(12345)),
        &[ROUTING_KEY_MISSING],
    )
    .await;
}

#[tokio::test]
async fn routing_key_empty() {
    assert_invalid(
        with(valid(), "/routing_key", json!("")),
        &[ROUTING_KEY_MISSING],
    )
    .await;
}

#[tokio::test]
async fn routing_key_wrong_length() {
    let short = &KEY_A[..31];
    assert_invalid(
        with(valid(), "/routing_key", json!(short)),
        &[ROUTING_KEY_LENGTH],
    )
    .await;
}

#[tokio::test]
async fn routing_key_non_alphanumeric() {
    let dashed = format!("{}-", &KEY_A[..31]);
    assert_invalid(
        with(valid(), "/routing_key", json!(dashed)),
        &[ROUTING_KEY_CHARSET],
    )
    .await;
}

#[tokio::test]
async fn routing_key_wrong_length_and_non_alphanumeric() {
    assert_invalid(
        with(valid(), "/routing_key", json!("not-a-key")),
        &[ROUTING_KEY_LENGTH, ROUTING_KEY_CHARSET],
    )
    .await;
}

#[tokio::test]
async fn summary_too_long() {
    let long = "x".repeat(1025);
    assert_invalid(
        with(valid(), "/payload/summary", json!(long)),
        &["'summary' is too long (maiximum is 1024 characters)"],
    )
    .await;
}

#[tokio::test]
async fn summary_of_1024_multibyte_characters_is_accepted() {
    assert_accepted(with(valid(), "/payload/summary", json!("€".repeat(1024)))).await;
}

#[tokio::test]
async fn payload_summary_missing() {
    assert_invalid(
        without(valid(), "/payload", "summary"),
        &["'payload.summary' is missing or blank"],
    )
    .await;
}

#[tokio::test]
async fn payload_source_missing() {
    assert_invalid(
        without(valid(), "/payload", "source"),
        &["'payload.source' is missing or blank"],
    )
    .await;
}

#[tokio::test]
async fn payload_severity_missing() {
    assert_invalid(
        without(valid(), "/payload", "severity"),
        &["'payload.severity' is missing or blank"],
    )
    .await;
}

#[tokio::test]
async fn trigger_without_payload_reports_each_required_field() {
    assert_invalid(
        without(valid(), "", "payload"),
        &[
            "'payload.summary' is missing or blank",
            "'payload.source' is missing or blank",
            "'payload.severity' is missing or blank",
        ],
    )
    .await;
}

#[tokio::test]
async fn payload_severity_invalid() {
    assert_invalid(
        with(valid(), "/payload/severity", json!("CRITICAL")),
        &["'payload.severity' is invalid (must be one of: critical, error, warning, info)"],
    )
    .await;
}

#[tokio::test]
async fn event_action_missing() {
    assert_invalid(
        without(valid(), "", "event_action"),
        &["'event_action' is missing or blank"],
    )
    .await;
}

#[tokio::test]
async fn event_action_invalid() {
    assert_invalid(
        with(valid(), "/event_action", json!("escalate")),
        &["'event_action' is invalid (must be one of: trigger, acknowledge, resolve)"],
    )
    .await;
}

#[tokio::test]
async fn acknowledge_without_dedup_key() {
    assert_invalid(
        without(action(KEY_A, "acknowledge", "k"), "", "dedup_key"),
        &["'dedup_key' is missing or blank"],
    )
    .await;
}

#[tokio::test]
async fn resolve_with_blank_dedup_key() {
    assert_invalid(
        action(KEY_A, "resolve", ""),
        &["'dedup_key' is missing or blank"],
    )
    .await;
}

#[tokio::test]
async fn dedup_key_too_long() {
    assert_invalid(
        with(valid(), "/dedup_key", json!("d".repeat(256))),
        &["'dedup_key' is too long (maximum is 255 characters)"],
    )
    .await;
}

#[tokio::test]
async fn dedup_key_of_255_characters_is_accepted() {
    assert_accepted(with(valid(), "/dedup_key", json!("d".repeat(255)))).await;
}

#[tokio::test]
async fn dedup_key_not_a_string() {
    assert_invalid(
        with(action(KEY_A, "resolve", "k"), "/dedup_key", json!(42)),
        &["'dedup_key' is invalid (must be a string)"],
    )
    .await;
}

#[tokio::test]
async fn payload_not_an_object() {
    assert_invalid(
        with(valid(), "/payload", json!("Disk full")),
        &["'payload' is invalid (must be an object)"],
    )
    .await;
}

#[tokio::test]
async fn custom_details_not_an_object() {
    let mut event = valid();
    event["payload"]["custom_details"] = json!("free text");
    assert_invalid(
        event,
        &["'payload.custom_details' is invalid (must be an object)"],
    )
    .await;
}

#[tokio::test]
async fn summary_and_source_not_strings() {
    let event = with(valid(), "/payload/summary", json!(["a"]));
    assert_invalid(
        with(event, "/payload/source", json!(7)),
        &[
            "'payload.summary' is invalid (must be a string)",
            "'payload.source' is invalid (must be a string)",
        ],
    )
    .await;
}

#[tokio::test]
async fn links_not_an_array() {
    let mut event = valid();
    event["links"] = json!({"href": "https://example.com"});
    assert_invalid(event, &["'links' is invalid (must be an array)"]).await;
}

#[tokio::test]
async fn link_without_string_href() {
    let mut event = valid();
    event["links"] = json!([{"href": "https://example.com"}, {"text": "no href"}, "bare"]);
    assert_invalid(
        event,
        &[
            "'links[1]' is invalid (must be an object with a string 'href')",
            "'links[2]' is invalid (must be an object with a string 'href')",
        ],
    )
    .await;
}

#[tokio::test]
async fn images_not_an_array() {
    let mut event = valid();
    event["images"] = json!("https://example.com/a.png");
    assert_invalid(event, &["'images' is invalid (must be an array)"]).await;
}

#[tokio::test]
async fn image_without_string_src() {
    let mut event = valid();
    event["images"] = json!([{"src": 3}]);
    assert_invalid(
        event,
        &["'images[0]' is invalid (must be an object with a string 'src')"],
    )
    .await;
}

#[tokio::test]
async fn every_problem_is_reported_at_once() {
    let event = json!({
        "routing_key": "bad key",
        "event_action": "trigger",
        "dedup_key": "d".repeat(300),
        "payload": {"summary": "s".repeat(2000), "severity": "fatal"},
    });
    assert_invalid(
        event,
        &[
            ROUTING_KEY_LENGTH,
            ROUTING_KEY_CHARSET,
            "'dedup_key' is too long (maximum is 255 characters)",
            "'summary' is too long (maiximum is 1024 characters)",
            "'payload.source' is missing or blank",
            "'payload.severity' is invalid (must be one of: critical, error, warning, info)",
        ],
    )
    .await;
}

#[tokio::test]
async fn http_image_and_odd_timestamp_are_accepted() {
    let mut event = valid();
    event["images"] = json!([{"src": "http://example.com/graph.png"}]);
    event["payload"]["timestamp"] = json!("last tuesday");
    assert_accepted(event).await;
}

#[tokio::test]
async fn full_trigger_with_all_optional_fields_is_accepted() {
    let mut event = valid();
    event["payload"]["timestamp"] = json!("2015-07-17T08:42:58.315+0000");
    event["payload"]["component"] = json!("postgres");
    event["payload"]["group"] = json!("prod-datapipe");
    event["payload"]["class"] = json!("disk");
    event["payload"]["custom_details"] = json!({"free space": "1%"});
    event["links"] = json!([{"href": "https://example.com", "text": "runbook"}]);
    event["images"] =
        json!([{"src": "https://example.com/a.png", "href": "https://x", "alt": "a"}]);
    event["client"] = json!("Prometheus");
    event["client_url"] = json!("https://prometheus.example.com");
    assert_accepted(event).await;
}

fn unrecognized() -> Value {
    json!({
        "status": "Unrecognized object",
        "message": "Event object format is unrecognized",
        "errors": ["JSON parse error"],
    })
}

#[tokio::test]
async fn body_that_is_not_json_is_unrecognized() {
    let h = Harness::default().await;
    let answer = h
        .post_raw(ENQUEUE, "application/json", b"{\"routing_key\":".to_vec())
        .await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.body, unrecognized());
    assert_eq!(h.server.sim.events()[0].body, json!("{\"routing_key\":"));
}

#[tokio::test]
async fn json_that_is_not_an_object_is_unrecognized() {
    let h = Harness::default().await;
    let answer = h
        .post(ENQUEUE, &json!([trigger(KEY_A, "k", "in an array")]))
        .await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.body, unrecognized());
    assert!(h.server.sim.alerts().is_empty());
}

#[tokio::test]
async fn empty_body_is_unrecognized() {
    let h = Harness::default().await;
    let answer = h.post_raw(ENQUEUE, "application/json", Vec::new()).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.body, unrecognized());
}

/// A valid trigger padded through `custom_details` to exactly `size` bytes.
fn trigger_of_size(size: usize) -> Vec<u8> {
    let mut event = valid();
    event["payload"]["custom_details"] = json!({"pad": ""});
    let overhead = serde_json::to_vec(&event).expect("serializes").len();
    event["payload"]["custom_details"]["pad"] = json!("p".repeat(size - overhead));
    let bytes = serde_json::to_vec(&event).expect("serializes");
    assert_eq!(bytes.len(), size);
    bytes
}

fn too_large() -> Value {
    json!({
        "status": "Request Entity Too Large",
        "message": "Event object is too large",
        "errors": ["Event payload exceeds 512000 bytes"],
    })
}

#[tokio::test]
async fn body_at_the_size_limit_is_accepted() {
    let h = Harness::default().await;
    let answer = h
        .post_raw(ENQUEUE, "application/json", trigger_of_size(512_000))
        .await;
    assert_eq!(answer.status, 202);
    assert_eq!(answer.body, accepted("k"));
}

#[tokio::test]
async fn body_one_byte_over_the_limit_is_too_large() {
    let h = Harness::default().await;
    let answer = h
        .post_raw(ENQUEUE, "application/json", trigger_of_size(512_001))
        .await;
    assert_eq!(answer.status, 413);
    assert_eq!(answer.body, too_large());
    assert!(h.server.sim.alerts().is_empty());
    let logged = &h.server.sim.events()[0];
    assert_eq!(logged.status, 413);
    assert!(
        logged
            .body
            .as_str()
            .is_some_and(|note| note.contains("over the limit"))
    );
}

#[tokio::test]
async fn body_between_our_limit_and_axums_default_gets_our_413() {
    let h = Harness::default().await;
    let answer = h
        .post_raw(ENQUEUE, "application/json", trigger_of_size(1_500_000))
        .await;
    assert_eq!(answer.status, 413);
    assert_eq!(answer.body, too_large());
}

#[tokio::test]
async fn size_limit_follows_the_config() {
    let h = Harness::start(Config {
        max_body_bytes: 1000,
        ..Config::default()
    })
    .await;
    let answer = h
        .post_raw(ENQUEUE, "application/json", trigger_of_size(1001))
        .await;
    assert_eq!(answer.status, 413);
    assert_eq!(
        answer.body["errors"],
        json!(["Event payload exceeds 1000 bytes"])
    );
}

#[tokio::test]
async fn unknown_path_is_a_json_404() {
    let h = Harness::default().await;
    let answer = h
        .post(ENQUEUE.replace("enqueue", "events").as_str(), &valid())
        .await;
    assert_eq!(answer.status, 404);
    assert_eq!(
        answer.body,
        json!({"status": "Not Found", "message": "No route for POST /v2/events", "errors": []})
    );
    assert!(h.server.sim.alerts().is_empty());
    assert_eq!(h.server.sim.events()[0].status, 404);
}

#[tokio::test]
async fn wrong_method_is_a_json_404() {
    let h = Harness::default().await;
    let response = h.client.get(h.url(ENQUEUE)).send().await.expect("answered");
    assert_eq!(response.status().as_u16(), 404);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["message"], "No route for GET /v2/enqueue");
}
