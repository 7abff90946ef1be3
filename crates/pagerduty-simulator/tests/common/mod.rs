//! Helpers shared by the integration tests: a simulator on loopback, a client for it, and
//! builders for the events the tests send.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use pagerduty_simulator::{Config, SpawnedSimulator, spawn_on_loopback};
use reqwest::header::HeaderMap;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// Well-formed routing keys (32 ASCII letters and digits); fake.
pub const KEY_A: &str = "testkeyA000000000000000000000001";
pub const KEY_B: &str = "testkeyB000000000000000000000002";

pub const ENQUEUE: &str = "/v2/enqueue";
pub const CHANGE: &str = "/v2/change/enqueue";

/// A status, JSON body and headers received from the simulator.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub headers: HeaderMap,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

pub struct Harness {
    pub server: SpawnedSimulator,
    pub client: reqwest::Client,
}

impl Harness {
    pub async fn start(config: Config) -> Self {
        assert_eq!(KEY_A.len(), 32);
        assert_eq!(KEY_B.len(), 32);
        let server = spawn_on_loopback(config).await.expect("simulator starts");
        let client = reqwest::Client::builder()
            .user_agent("simulator-tests/1.0")
            .build()
            .expect("client builds");
        Self { server, client }
    }

    pub async fn default() -> Self {
        Self::start(Config::default()).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.base_url())
    }

    pub async fn post(&self, path: &str, body: &Value) -> Answer {
        let request = self.client.post(self.url(path)).json(body);
        answer(request).await
    }

    pub async fn post_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> Answer {
        let request = self
            .client
            .post(self.url(path))
            .header("content-type", content_type)
            .body(body);
        answer(request).await
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> T {
        let response = self.client.get(self.url(path)).send().await.expect("GET");
        assert_eq!(response.status().as_u16(), 200, "GET {path}");
        response.json().await.expect("JSON")
    }
}

async fn answer(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.expect("request is answered");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json().await.expect("the answer is JSON");
    Answer {
        status,
        body,
        headers,
    }
}

pub fn trigger(routing_key: &str, dedup_key: &str, summary: &str) -> Value {
    json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key,
        "payload": {"summary": summary, "source": "db1.example.com", "severity": "critical"},
    })
}

pub fn action(routing_key: &str, action: &str, dedup_key: &str) -> Value {
    json!({"routing_key": routing_key, "event_action": action, "dedup_key": dedup_key})
}

pub fn change(routing_key: &str, summary: &str) -> Value {
    json!({"routing_key": routing_key, "payload": {"summary": summary}})
}

pub fn accepted(dedup_key: &str) -> Value {
    json!({"status": "success", "message": "Event processed", "dedup_key": dedup_key})
}

pub fn invalid(errors: &[&str]) -> Value {
    json!({"status": "invalid event", "message": "Event object is invalid", "errors": errors})
}

pub fn throttled() -> Value {
    json!({
        "status": "throttle event",
        "message": "Requests for this service are arriving too quickly.  Please retry later.",
        "errors": ["Too many events; retry later"],
    })
}
