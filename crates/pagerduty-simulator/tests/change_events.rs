//! Change events: their own 202 body, their validation, and PagerDuty's other error
//! envelope for too many links.

mod common;

use common::{CHANGE, Harness, KEY_A, change, invalid};
use serde_json::{Value, json};

fn links(count: usize) -> Value {
    (0..count)
        .map(|i| json!({"href": format!("https://example.com/{i}"), "text": "commit"}))
        .collect()
}

#[tokio::test]
async fn change_event_is_accepted_without_a_dedup_key_and_opens_no_alert() {
    let h = Harness::default().await;
    let mut event = change(KEY_A, "Deployed v1.2.3");
    event["payload"]["source"] = json!("ci");
    event["payload"]["timestamp"] = json!("2020-07-17T08:42:58.315+0000");
    event["payload"]["custom_details"] = json!({"build": 42});
    event["links"] = links(2);
    let answer = h.post(CHANGE, &event).await;
    assert_eq!(answer.status, 202);
    assert_eq!(
        answer.body,
        json!({"status": "success", "message": "Change event processed"})
    );
    assert!(h.server.sim.alerts().is_empty());
    let stats = h.server.sim.stats();
    assert_eq!((stats.change_events, stats.accepted), (1, 1));
}

#[tokio::test]
async fn change_events_are_not_deduplicated() {
    let h = Harness::default().await;
    for _ in 0..3 {
        let answer = h.post(CHANGE, &change(KEY_A, "Deployed")).await;
        assert_eq!(answer.status, 202);
    }
    assert_eq!(h.server.sim.stats().change_events, 3);
}

#[tokio::test]
async fn change_event_without_payload() {
    let h = Harness::default().await;
    let answer = h.post(CHANGE, &json!({"routing_key": KEY_A})).await;
    assert_eq!(answer.status, 400);
    assert_eq!(
        answer.body,
        invalid(&["'payload.summary' is missing or blank"])
    );
}

#[tokio::test]
async fn change_event_with_blank_summary() {
    let h = Harness::default().await;
    let answer = h.post(CHANGE, &change(KEY_A, " ")).await;
    assert_eq!(answer.status, 400);
    assert_eq!(
        answer.body,
        invalid(&["'payload.summary' is missing or blank"])
    );
}

#[tokio::test]
async fn change_event_summary_too_long() {
    let h = Harness::default().await;
    let answer = h.post(CHANGE, &change(KEY_A, &"x".repeat(1025))).await;
    assert_eq!(answer.status, 400);
    assert_eq!(
        answer.body,
        invalid(&["'summary' is too long (maiximum is 1024 characters)"])
    );
}

#[tokio::test]
async fn change_event_with_bad_routing_key() {
    let h = Harness::default().await;
    let answer = h.post(CHANGE, &change("R-short", "Deployed")).await;
    assert_eq!(answer.status, 400);
    assert_eq!(
        answer.body,
        invalid(&[
            "Length of 'routing_key' is incorrect (should be 32 characters)",
            "'routing_key' cannot contain non-alphanumeric characters.",
        ])
    );
}

#[tokio::test]
async fn change_event_custom_details_not_an_object() {
    let h = Harness::default().await;
    let mut event = change(KEY_A, "Deployed");
    event["payload"]["custom_details"] = json!([1, 2]);
    let answer = h.post(CHANGE, &event).await;
    assert_eq!(answer.status, 400);
    assert_eq!(
        answer.body,
        invalid(&["'payload.custom_details' is invalid (must be an object)"])
    );
}

#[tokio::test]
async fn change_event_with_more_than_50_links_uses_the_other_envelope() {
    let h = Harness::default().await;
    let mut event = change(KEY_A, "Deployed");
    event["links"] = links(51);
    let answer = h.post(CHANGE, &event).await;
    assert_eq!(answer.status, 400);
    assert_eq!(
        answer.body,
        json!({"error": ["links should have at most 50 item(s)"]})
    );
    assert_eq!(h.server.sim.stats().change_events, 0);
}

#[tokio::test]
async fn change_event_with_50_links_is_accepted() {
    let h = Harness::default().await;
    let mut event = change(KEY_A, "Deployed");
    event["links"] = links(50);
    assert_eq!(h.post(CHANGE, &event).await.status, 202);
}

#[tokio::test]
async fn change_event_images_are_accepted_and_ignored() {
    let h = Harness::default().await;
    let mut event = change(KEY_A, "Deployed");
    event["images"] = json!([{"src": "https://example.com/graph.png"}]);
    assert_eq!(h.post(CHANGE, &event).await.status, 202);
}
