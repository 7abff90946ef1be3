//! Hostile input against every ingest endpoint of the real binary (DESIGN.md invariant 6, "Bad
//! input is answered, not obeyed").
//!
//! `hostile_input_is_answered_and_never_obeyed` sends a corpus to `/api/v1/alertmanager`,
//! `/api/v1/alertmanager/{target}`, `/api/v1/alerts` and `/api/v1/change-events`: a valid body
//! of each door truncated at many points, malformed JSON, a wrong type at every member the
//! parsers read, invalid UTF-8, 100,000-deep nesting, 10,000-label sets with one bad label,
//! bodies over `max_body_bytes` (announced, chunked and lied about), missing and wrong bearer
//! tokens, unknown and unreadable targets, wrong content types and methods, NUL in
//! fingerprints and dedup keys, absurd timestamps, and a client that stalls mid-body. Each must
//! get its own 4xx with a short JSON `{error, detail}` body, promptly; afterwards the bridge is
//! healthy and ready, its queue is empty, its logs hold no panic, and the simulated PagerDuty
//! has received nothing.
//!
//! `strange_but_valid_input_is_stored_safely` sends what is odd but valid (NUL in label values
//! and names, 10,000 labels, an annotation of 800 KB once escaped, Go's zero time in another offset) and checks
//! it is accepted, delivered within PagerDuty's schema and body limit, and nothing is left
//! behind.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{Bridge, Setup, delivered, sample, simulator, wait_until};
use pagerduty_simulator::Config as SimConfig;
use serde_json::{Value, json};

const TOKEN: &str = "hostile-test-ingest-token";
/// The bridge's body limit in these tests: room for the large-but-legal bodies below.
const MAX_BODY: usize = 1_000_000;
/// `ingest.request_timeout` in these tests.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// An error body names the problem in a few words; it never echoes a large input.
const MAX_ERROR_BODY: usize = 4096;

/// The four doors, with the kind of body each reads.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Door {
    Alertmanager,
    AlertmanagerTarget,
    Native,
    Change,
}

const DOORS: [Door; 4] = [
    Door::Alertmanager,
    Door::AlertmanagerTarget,
    Door::Native,
    Door::Change,
];

impl Door {
    fn path(self) -> &'static str {
        match self {
            Door::Alertmanager => "/api/v1/alertmanager",
            Door::AlertmanagerTarget => "/api/v1/alertmanager/default",
            Door::Native => "/api/v1/alerts",
            Door::Change => "/api/v1/change-events",
        }
    }

    /// A valid body of this door.
    fn valid(self) -> Value {
        match self {
            Door::Alertmanager | Door::AlertmanagerTarget => {
                serde_json::from_slice(&sample("alertmanager-webhook-firing.json"))
                    .expect("the sample is JSON")
            }
            Door::Native => json!({
                "target": "default",
                "alerts": [{
                    "status": "firing",
                    "labels": {"alertname": "CheckoutLatency", "service": "checkout", "severity": "warning"},
                    "annotations": {"summary": "p99 latency above 2 s", "runbook_url": "https://runbooks.example.com/latency"},
                    "startsAt": "2026-11-29T10:00:00Z",
                    "endsAt": "2026-11-29T11:00:00Z",
                    "generatorURL": "https://grafana.example.com/d/abc",
                    "fingerprint": "4f2a9c1d",
                    "dedup_key": "checkout-latency",
                    "classification": {"severity": "critical", "category": "capacity", "confidence": 0.92,
                                       "reasoning": "latency rises with queue depth",
                                       "recommendations": ["scale out checkout"]}
                }]
            }),
            Door::Change => json!({
                "target": "default",
                "summary": "Deploy #220 of checkout",
                "source": "ci",
                "timestamp": "2026-11-29T10:00:00Z",
                "custom_details": {"build": "220"},
                "links": [{"href": "https://ci.example.com/220", "text": "Build"}]
            }),
        }
    }

    /// Members whose content the door does not read: any type is fine there.
    fn free(self, pointer: &str) -> bool {
        match self {
            Door::Alertmanager | Door::AlertmanagerTarget => {
                ["/groupLabels", "/commonLabels", "/commonAnnotations"]
                    .iter()
                    .any(|free| pointer.starts_with(free))
            }
            Door::Native => false,
            Door::Change => pointer.starts_with("/custom_details/"),
        }
    }

    /// The valid body with `value` at `pointer` (which must exist).
    fn with(self, pointer: &str, value: Value) -> Vec<u8> {
        let mut body = self.valid();
        *body
            .pointer_mut(pointer)
            .unwrap_or_else(|| panic!("{pointer} in the {self:?} body")) = value;
        to_vec(&body)
    }

    /// A body with one alert (or, for change events, just the event) holding `alert_fields`.
    fn one_alert(self, alert_fields: Value) -> Value {
        let mut alert = json!({"status": "firing", "labels": {"alertname": "Hostile"}});
        if let (Some(alert), Value::Object(extra)) = (alert.as_object_mut(), alert_fields) {
            alert.extend(extra);
        }
        match self {
            Door::Change => unreachable!("change events have no alerts"),
            _ => json!({"alerts": [alert]}),
        }
    }
}

fn to_vec(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("serialize")
}

/// One hostile request and what must come of it.
struct Case {
    what: String,
    path: String,
    method: &'static str,
    content_type: Option<&'static str>,
    token: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    /// The acceptable `error` codes.
    codes: &'static [&'static str],
    /// Sent over a raw connection that reads while it writes: the server may answer a large
    /// body before reading it, and an HTTP client that is still writing may then report only
    /// the reset connection.
    raw: bool,
}

impl Case {
    fn post(what: impl Into<String>, door: Door, body: Vec<u8>, status: u16) -> Self {
        let codes: &'static [&'static str] = match status {
            400 => &[
                "malformed_json",
                "invalid_request",
                "invalid_alert",
                "unsupported_version",
            ],
            401 => &["unauthorized"],
            404 => &["unknown_target", "not_found"],
            413 => &["body_too_large"],
            415 => &["unsupported_media_type"],
            _ => &[],
        };
        Self {
            what: what.into(),
            path: door.path().to_owned(),
            method: "POST",
            content_type: Some("application/json"),
            token: Some(TOKEN),
            body,
            status,
            codes,
            raw: false,
        }
    }

    fn raw(mut self) -> Self {
        self.raw = true;
        self
    }

    fn codes(mut self, codes: &'static [&'static str]) -> Self {
        self.codes = codes;
        self
    }
}

/// Sends a case; checks the status, the JSON error body and its size.
async fn check(http: &reqwest::Client, bridge: &Bridge, case: &Case) {
    if case.raw {
        let mut headers = format!("content-length: {}\r\n", case.body.len());
        if let Some(content_type) = case.content_type {
            headers.push_str(&format!("content-type: {content_type}\r\n"));
        }
        let mut request = raw_head(case.method, &case.path, headers.as_bytes());
        request.extend_from_slice(&case.body);
        let (status, content_type, body) = raw(bridge.addr, request, Duration::from_secs(20)).await;
        assert_error(
            &case.what,
            status,
            &content_type,
            &body,
            case.status,
            case.codes,
        );
        return;
    }
    let method = reqwest::Method::from_bytes(case.method.as_bytes()).expect("method");
    let mut request = http
        .request(method, bridge.url(&case.path))
        .body(case.body.clone());
    if let Some(content_type) = case.content_type {
        request = request.header("content-type", content_type);
    }
    if let Some(token) = case.token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}: no answer: {e}", case.what));
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let bytes = response.bytes().await.expect("body");
    assert_error(
        &case.what,
        status,
        &content_type,
        &bytes,
        case.status,
        case.codes,
    );
}

fn assert_error(
    what: &str,
    status: u16,
    content_type: &str,
    body: &[u8],
    expected: u16,
    codes: &[&str],
) {
    let text = String::from_utf8_lossy(&body[..body.len().min(500)]);
    assert_eq!(status, expected, "{what}: {text}");
    assert!(
        body.len() <= MAX_ERROR_BODY,
        "{what}: an error body of {} bytes: {text}…",
        body.len()
    );
    if expected == 405 && body.is_empty() {
        return; // HEAD: no body by definition
    }
    assert!(
        content_type.starts_with("application/json"),
        "{what}: content type {content_type:?}: {text}"
    );
    let json: Value =
        serde_json::from_slice(body).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"));
    let code = json["error"].as_str().unwrap_or_default();
    assert!(
        codes.is_empty() || codes.contains(&code),
        "{what}: error {code:?}, expected one of {codes:?}: {json}"
    );
    assert!(!code.is_empty(), "{what}: no error code: {json}");
    assert!(
        json["detail"]
            .as_str()
            .is_some_and(|d| !d.trim().is_empty()),
        "{what}: no detail: {json}"
    );
}

/// A raw HTTP/1.1 exchange over TCP, for what reqwest will not send: stalls, lies, bad bytes.
/// Writes `request`, then reads the answer (until it is complete or the server closes),
/// failing the test if none comes within `deadline`.
fn raw_exchange(addr: SocketAddr, request: Vec<u8>, deadline: Duration) -> (u16, String, Vec<u8>) {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).expect("connect");
    // Written from another thread: the server may answer (413, 401) before reading it all.
    let mut writer = stream.try_clone().expect("clone");
    let writing = std::thread::spawn(move || {
        let _ = writer.write_all(&request);
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 8192];
    let parsed = loop {
        if let Some(parsed) = parse_response(&answer) {
            break parsed;
        }
        let left = deadline.saturating_sub(started.elapsed());
        assert!(
            !left.is_zero(),
            "no answer within {deadline:?}; got {:?}",
            String::from_utf8_lossy(&answer)
        );
        stream.set_read_timeout(Some(left)).expect("timeout");
        match stream.read(&mut buf) {
            Ok(0) => panic!(
                "the server closed without a full answer: {:?}",
                String::from_utf8_lossy(&answer)
            ),
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) => panic!(
                "no answer within {deadline:?} ({e}); got {:?}",
                String::from_utf8_lossy(&answer)
            ),
        }
    };
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = writing.join();
    parsed
}

/// Status, content type and body of a complete HTTP/1.1 answer with a `content-length`.
fn parse_response(bytes: &[u8]) -> Option<(u16, String, Vec<u8>)> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&bytes[..end]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let mut length = 0;
    let mut content_type = String::new();
    for line in lines {
        let (name, value) = line.split_once(':')?;
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().ok()?,
            "content-type" => content_type = value.trim().to_owned(),
            _ => {}
        }
    }
    let body = bytes.get(end + 4..end + 4 + length)?;
    Some((status, content_type, body.to_vec()))
}

fn raw_head(method: &str, path: &str, extra_headers: &[u8]) -> Vec<u8> {
    let start =
        format!("{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {TOKEN}\r\n");
    [start.as_bytes(), extra_headers, b"\r\n"].concat()
}

/// Runs a raw exchange off the async runtime.
async fn raw(addr: SocketAddr, request: Vec<u8>, deadline: Duration) -> (u16, String, Vec<u8>) {
    tokio::task::spawn_blocking(move || raw_exchange(addr, request, deadline))
        .await
        .expect("raw exchange")
}

/// The corpus: every case that must be refused, for every door.
fn corpus() -> Vec<Case> {
    let mut cases = Vec::new();
    for door in DOORS {
        truncations(door, &mut cases);
        malformed(door, &mut cases);
        wrong_types(door, &mut cases);
        invalid_utf8(door, &mut cases);
        deep_nesting(door, &mut cases);
        huge_label_sets(door, &mut cases);
        over_the_limit(door, &mut cases);
        tokens(door, &mut cases);
        content_types(door, &mut cases);
        methods(door, &mut cases);
        nul_bytes(door, &mut cases);
        absurd_timestamps(door, &mut cases);
        unknown_targets(door, &mut cases);
    }
    cases
}

/// The valid body cut at many points: every cut of the first and last 40 bytes, and 150
/// spread over the rest. No prefix of a JSON object is JSON.
fn truncations(door: Door, cases: &mut Vec<Case>) {
    let body = to_vec(&door.valid());
    let len = body.len();
    let mut cuts: Vec<usize> = (0..40.min(len)).collect();
    cuts.extend((len.saturating_sub(40))..len);
    cuts.extend((0..150).map(|i| i * len / 150));
    cuts.sort_unstable();
    cuts.dedup();
    for cut in cuts {
        cases.push(
            Case::post(
                format!("{door:?} cut at {cut} of {len}"),
                door,
                body[..cut].to_vec(),
                400,
            )
            .codes(&["malformed_json"]),
        );
    }
    // The pretty-printed sample, cut inside its whitespace and strings, too.
    if matches!(door, Door::Alertmanager) {
        let pretty = sample("alertmanager-webhook-firing.json");
        let trimmed = pretty.trim_ascii_end();
        for cut in (0..trimmed.len()).step_by(97) {
            cases.push(
                Case::post(
                    format!("pretty sample cut at {cut}"),
                    door,
                    trimmed[..cut].to_vec(),
                    400,
                )
                .codes(&["malformed_json"]),
            );
        }
    }
}

fn malformed(door: Door, cases: &mut Vec<Case>) {
    let valid = String::from_utf8(to_vec(&door.valid())).expect("utf-8");
    let malformed: Vec<(&str, Vec<u8>)> = vec![
        ("empty body", b"".to_vec()),
        ("whitespace only", b" \n\t ".to_vec()),
        ("lone brace", b"{".to_vec()),
        ("lone closing brace", b"}".to_vec()),
        ("unclosed array", br#"{"alerts": ["#.to_vec()),
        ("mismatched brackets", br#"{"alerts": [}"#.to_vec()),
        ("trailing comma", br#"{"alerts": [],}"#.to_vec()),
        ("single quotes", b"{'alerts': []}".to_vec()),
        ("bare word", b"alerts".to_vec()),
        ("NaN", br#"{"alerts": [], "x": NaN}"#.to_vec()),
        ("comment", b"{/* c */\"alerts\": []}".to_vec()),
        ("trailing garbage", format!("{valid} x").into_bytes()),
        ("two documents", format!("{valid}{valid}").into_bytes()),
        (
            "byte order mark",
            [b"\xEF\xBB\xBF".as_slice(), valid.as_bytes()].concat(),
        ),
        (
            "unescaped control character",
            b"{\"summary\": \"a\x01b\"}".to_vec(),
        ),
        ("raw NUL between tokens", b"{\"alerts\":\x00[]}".to_vec()),
        (
            "raw NUL inside a string",
            b"{\"summary\": \"a\x00b\", \"alerts\": []}".to_vec(),
        ),
        (
            "lone surrogate escape",
            br#"{"summary": "\ud800", "alerts": []}"#.to_vec(),
        ),
        ("bad escape", br#"{"summary": "\q", "alerts": []}"#.to_vec()),
        (
            "number overflow",
            br#"{"alerts": [], "truncatedAlerts": 1e999999}"#.to_vec(),
        ),
        (
            "huge integer",
            format!("{{\"alerts\": [], \"x\": {}}}", "9".repeat(50_000)).into_bytes(),
        ),
    ];
    for (what, body) in malformed {
        cases.push(
            Case::post(format!("{door:?}: {what}"), door, body, 400).codes(&["malformed_json"]),
        );
    }
    // JSON, but not an object.
    for body in [
        "null",
        "true",
        "42",
        "\"alerts\"",
        "[]",
        "[{\"alerts\": []}]",
    ] {
        cases.push(
            Case::post(
                format!("{door:?}: top level {body}"),
                door,
                body.into(),
                400,
            )
            .codes(&["invalid_request"]),
        );
    }
}

/// Every member the door reads, set to each value of a type it does not take.
fn wrong_types(door: Door, cases: &mut Vec<Case>) {
    fn walk(value: &Value, pointer: String, out: &mut Vec<(String, Value)>) {
        out.push((pointer.clone(), value.clone()));
        match value {
            Value::Object(map) => {
                for (name, child) in map {
                    let escaped = name.replace('~', "~0").replace('/', "~1");
                    walk(child, format!("{pointer}/{escaped}"), out);
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    walk(child, format!("{pointer}/{i}"), out);
                }
            }
            _ => {}
        }
    }
    let mut members = Vec::new();
    walk(&door.valid(), String::new(), &mut members);
    let mut count = 0;
    for (pointer, value) in members {
        if pointer.is_empty() || door.free(&pointer) {
            continue; // the whole body is covered by `malformed`
        }
        let wrong: Vec<Value> = match value {
            Value::String(_) => vec![json!(1), json!(true), json!([]), json!({}), json!(-0.5)],
            Value::Object(_) => vec![json!("x"), json!(1), json!(false), json!([])],
            Value::Array(_) => vec![json!("x"), json!(1), json!(false), json!({})],
            Value::Number(_) => vec![json!("1"), json!(true), json!([]), json!({})],
            Value::Bool(_) | Value::Null => continue,
        };
        // Inside an alert, the alert is named; elsewhere the request is.
        let in_alert = pointer
            .strip_prefix("/alerts/")
            .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()));
        let code: &'static [&'static str] = if in_alert {
            &["invalid_alert"]
        } else {
            &["invalid_request"]
        };
        for wrong in wrong {
            count += 1;
            cases.push(
                Case::post(
                    format!("{door:?}: {pointer} = {wrong}"),
                    door,
                    door.with(&pointer, wrong),
                    400,
                )
                .codes(code),
            );
        }
    }
    assert!(count > 30, "{door:?}: only {count} wrong types");
    // Values of the right type that are still wrong.
    let wrong_values: Vec<(&str, Value)> = match door {
        Door::Alertmanager | Door::AlertmanagerTarget => vec![
            ("/version", json!("3")),
            ("/truncatedAlerts", json!(-1)),
            ("/truncatedAlerts", json!(1.5)),
            ("/alerts/1/status", json!("acknowledged")),
            ("/alerts/1/labels/alertname", json!("")),
            (
                "/alerts/2/labels",
                json!({"": "empty name", "alertname": "A"}),
            ),
            ("/alerts/0/startsAt", json!("yesterday")),
        ],
        Door::Native => vec![
            ("/target", json!("  ")),
            ("/alerts/0/status", json!("pending")),
            ("/alerts/0/labels", json!({"service": "no alertname"})),
            ("/alerts/0/dedup_key", json!("")),
            ("/alerts/0/dedup_key", json!("k".repeat(256))),
            ("/alerts/0/classification/confidence", json!(1.5)),
            ("/alerts/0/classification/confidence", json!(-0.1)),
            ("/alerts/0/classification/confidence", json!(1e308)),
        ],
        Door::Change => vec![
            ("/target", json!("")),
            ("/summary", json!(" \n\t ")),
            ("/summary", json!(" ".repeat(5000))),
            ("/links/0/href", json!("/relative")),
            ("/links/0/href", json!("not a url")),
            (
                "/links",
                json!(vec![json!({"href": "https://x.example/"}); 51]),
            ),
        ],
    };
    for (pointer, value) in wrong_values {
        cases.push(Case::post(
            format!("{door:?}: {pointer} = {}", clip(&value.to_string())),
            door,
            door.with(pointer, value),
            400,
        ));
    }
}

fn clip(text: &str) -> String {
    text.chars().take(60).collect()
}

fn invalid_utf8(door: Door, cases: &mut Vec<Case>) {
    let valid = to_vec(&door.valid());
    let needle: &[u8] = match door {
        Door::Change => b"checkout",
        Door::Native => b"checkout",
        _ => b"harness",
    };
    let at = valid
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the needle is in the body");
    for (what, bad) in [
        ("0xFF byte", b"\xFF".as_slice()),
        ("lone continuation byte", b"\x80"),
        ("overlong slash", b"\xC0\xAF"),
        ("encoded surrogate", b"\xED\xA0\x80"),
        ("truncated sequence", b"\xE2\x82"),
        ("beyond U+10FFFF", b"\xF4\x90\x80\x80"),
    ] {
        let mut body = valid.clone();
        body.splice(at..at + 1, bad.iter().copied());
        cases.push(
            Case::post(format!("{door:?}: {what} in a string"), door, body, 400)
                .codes(&["malformed_json"]),
        );
    }
    // In a member name.
    let body = [b"{\"a\xFFb\": 1, ".as_slice(), &valid[1..]].concat();
    cases.push(
        Case::post(
            format!("{door:?}: invalid UTF-8 in a name"),
            door,
            body,
            400,
        )
        .codes(&["malformed_json"]),
    );
}

/// 100,000 nested arrays or objects: serde_json's recursion limit answers, the stack holds.
fn deep_nesting(door: Door, cases: &mut Vec<Case>) {
    const DEPTH: usize = 100_000;
    let arrays = format!("{}{}", "[".repeat(DEPTH), "]".repeat(DEPTH));
    let objects = format!("{}1{}", "{\"a\":".repeat(DEPTH), "}".repeat(DEPTH));
    let inside = match door {
        Door::Change => format!("{{\"summary\": \"s\", \"custom_details\": {{\"x\": {arrays}}}}}"),
        _ => format!("{{\"alerts\": [{{\"status\": \"firing\", \"labels\": {arrays}}}]}}"),
    };
    for (what, body) in [
        ("100,000 nested arrays", arrays.clone()),
        ("100,000 nested objects", objects),
        ("100,000 nested arrays inside the request", inside),
        ("100,000 unclosed arrays", "[".repeat(DEPTH)),
    ] {
        assert!(body.len() < MAX_BODY, "{what} is within the limit");
        cases.push(
            Case::post(format!("{door:?}: {what}"), door, body.into_bytes(), 400)
                .codes(&["malformed_json"]),
        );
    }
    // 127 levels is within serde_json's limit; still not an object.
    let shallow = format!("{}{}", "[".repeat(127), "]".repeat(127));
    cases.push(
        Case::post(
            format!("{door:?}: 127 nested arrays"),
            door,
            shallow.into(),
            400,
        )
        .codes(&["invalid_request"]),
    );
}

/// 10,000 labels (within the limit) with one bad label; 10,000 alerts with one bad alert.
fn huge_label_sets(door: Door, cases: &mut Vec<Case>) {
    if door == Door::Change {
        let links: Vec<Value> = (0..10_000)
            .map(|i| json!({"href": format!("https://x.example/{i}")}))
            .collect();
        let body = json!({"summary": "s", "links": links});
        cases.push(Case::post("Change: 10,000 links", door, to_vec(&body), 400));
        return;
    }
    let mut labels: serde_json::Map<String, Value> = (0..10_000)
        .map(|i| (format!("label_{i:05}"), json!(format!("value {i}"))))
        .collect();
    labels.insert("alertname".into(), json!("Huge"));
    let mut bad = labels.clone();
    bad.insert("label_09999".into(), json!(9999));
    let body = to_vec(&door.one_alert(json!({"labels": bad})));
    assert!(body.len() < MAX_BODY);
    cases.push(
        Case::post(
            format!("{door:?}: 10,000 labels, the last a number"),
            door,
            body,
            400,
        )
        .codes(&["invalid_alert"]),
    );
    let mut nameless = labels.clone();
    nameless.remove("alertname");
    cases.push(
        Case::post(
            format!("{door:?}: 10,000 labels, no alertname"),
            door,
            to_vec(&door.one_alert(json!({"labels": nameless}))),
            400,
        )
        .codes(&["invalid_alert"]),
    );
    // A 10,000-alert request whose last alert is invalid: all or nothing.
    let mut alerts: Vec<Value> = (0..10_000)
        .map(|i| json!({"status": "firing", "labels": {"alertname": format!("A{i}")}}))
        .collect();
    alerts.push(json!({"status": "firing", "labels": {"alertname": 1}}));
    cases.push(
        Case::post(
            format!("{door:?}: 10,000 good alerts and a bad one"),
            door,
            to_vec(&json!({ "alerts": alerts })),
            400,
        )
        .codes(&["invalid_alert"]),
    );
}

fn over_the_limit(door: Door, cases: &mut Vec<Case>) {
    let mut body = door.valid();
    let pad = "x".repeat(MAX_BODY);
    body["padding"] = json!(pad);
    cases.push(
        Case::post(
            format!("{door:?}: a valid body just over the limit"),
            door,
            to_vec(&body),
            413,
        )
        .raw(),
    );
    cases.push(
        Case::post(
            format!("{door:?}: 5 MB of garbage"),
            door,
            vec![b'{'; 5 * MAX_BODY],
            413,
        )
        .raw(),
    );
    // Exactly at the limit, it is read (and refused for what it is).
    let mut exact = format!("{{\"alerts\": [], \"padding\": \"{}", "x".repeat(MAX_BODY));
    exact.truncate(MAX_BODY);
    cases.push(
        Case::post(
            format!("{door:?}: exactly the limit"),
            door,
            exact.into_bytes(),
            400,
        )
        .codes(&["malformed_json"]),
    );
}

fn tokens(door: Door, cases: &mut Vec<Case>) {
    let body = to_vec(&door.valid());
    for (what, token) in [
        ("no token", None),
        ("a wrong token", Some("not-the-token")),
        ("a prefix of the token", Some(&TOKEN[..TOKEN.len() - 1])),
        (
            "the token and more",
            Some("hostile-test-ingest-token-and-more"),
        ),
        ("an empty token", Some("")),
    ] {
        let mut case = Case::post(format!("{door:?}: {what}"), door, body.clone(), 401);
        case.token = token;
        cases.push(case);
    }
    // Authentication comes before anything else: a bad body or target says nothing.
    let mut case = Case::post(
        format!("{door:?}: no token, bad JSON"),
        door,
        b"{".to_vec(),
        401,
    );
    case.token = None;
    cases.push(case);
    if door == Door::AlertmanagerTarget {
        let mut case = Case::post("no token, unknown target", door, body.clone(), 401);
        case.path = "/api/v1/alertmanager/nope".into();
        case.token = None;
        cases.push(case);
    }
}

fn content_types(door: Door, cases: &mut Vec<Case>) {
    let body = to_vec(&door.valid());
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("application/jsonp"),
        Some("application/json-seq"),
        Some("application/problem+json"),
        Some("json"),
        Some(""),
    ] {
        let mut case = Case::post(
            format!("{door:?}: content type {content_type:?}"),
            door,
            body.clone(),
            415,
        );
        case.content_type = content_type;
        cases.push(case);
    }
}

fn methods(door: Door, cases: &mut Vec<Case>) {
    for method in ["GET", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"] {
        let mut case = Case::post(
            format!("{door:?}: {method}"),
            door,
            to_vec(&door.valid()),
            405,
        )
        .codes(&["method_not_allowed"]);
        case.method = method;
        if method == "GET" || method == "HEAD" {
            case.body = Vec::new();
        }
        cases.push(case);
    }
}

/// NUL where the bridge keys things by the text: refused (PostgreSQL TEXT cannot hold it).
fn nul_bytes(door: Door, cases: &mut Vec<Case>) {
    if door == Door::Change {
        return; // change events have no key of their own; NUL elsewhere is stored escaped
    }
    let mut fields = vec![("fingerprint", json!("d5cb\u{0}2dfa"))];
    if door == Door::Native {
        fields.push(("dedup_key", json!("checkout\u{0}latency")));
        fields.push(("dedup_key", json!("\u{0}")));
    }
    for (field, value) in fields {
        cases.push(
            Case::post(
                format!("{door:?}: NUL in {field}"),
                door,
                to_vec(&door.one_alert(json!({ field: value }))),
                400,
            )
            .codes(&["invalid_alert"]),
        );
    }
}

fn absurd_timestamps(door: Door, cases: &mut Vec<Case>) {
    let absurd = [
        "0000-01-01T00:00:00Z",
        "0000-12-31T23:59:59Z",
        "-0001-01-01T00:00:00Z",
        "-000001-01-01T00:00:00Z",
        "-009999-01-01T00:00:00Z",
        "99999-01-01T00:00:00Z",
        "+099999-01-01T00:00:00Z",
        "2026-13-45T99:99:99Z",
        "2026-02-30T10:00:00Z",
        "2026-11-29T10:00:00",
        "1714557600",
        "2026-11-29T10:00:00.0000000000000000000000000000001Z",
    ];
    let numbers = [json!(1_714_557_600), json!(-1), json!(1e300)];
    let fields: &[&str] = match door {
        Door::Change => &["timestamp"],
        _ => &["startsAt", "endsAt"],
    };
    for field in fields {
        let values = absurd.iter().map(|t| json!(t)).chain(numbers.clone());
        for value in values {
            let body = match door {
                Door::Change => json!({"summary": "deploy", *field: value}),
                _ => door.one_alert(json!({ *field: value })),
            };
            cases.push(Case::post(
                format!("{door:?}: {field} = {value}"),
                door,
                to_vec(&body),
                400,
            ));
        }
    }
    // A long timestamp is refused with a short detail.
    let long = format!("2026-11-29T10:00:00.{}Z", "1".repeat(100_000));
    let body = match door {
        Door::Change => json!({"summary": "deploy", "timestamp": long}),
        _ => door.one_alert(json!({ "startsAt": long })),
    };
    cases.push(Case::post(
        format!("{door:?}: a 100 KB timestamp"),
        door,
        to_vec(&body),
        400,
    ));
}

fn unknown_targets(door: Door, cases: &mut Vec<Case>) {
    match door {
        Door::AlertmanagerTarget => {
            let body = to_vec(&door.valid());
            for (what, path) in [
                ("an unknown target", "/api/v1/alertmanager/nope".to_owned()),
                (
                    "a target differing in case",
                    "/api/v1/alertmanager/Default".to_owned(),
                ),
                (
                    "an 8 KB target name",
                    format!("/api/v1/alertmanager/{}", "t".repeat(8192)),
                ),
                (
                    "a percent-encoded NUL",
                    "/api/v1/alertmanager/default%00".to_owned(),
                ),
                (
                    "an encoded slash",
                    "/api/v1/alertmanager/..%2Fdefault".to_owned(),
                ),
            ] {
                let mut case = Case::post(format!("path: {what}"), door, body.clone(), 404);
                case.path = path;
                cases.push(case.codes(&["unknown_target"]));
            }
            for (what, path, status) in [
                ("no target", "/api/v1/alertmanager/", 404),
                ("a sub-path", "/api/v1/alertmanager/default/x", 404),
                ("invalid UTF-8", "/api/v1/alertmanager/%FF%FE", 400),
            ] {
                let mut case = Case::post(format!("path: {what}"), door, body.clone(), status);
                case.path = path.to_owned();
                cases.push(case);
            }
        }
        Door::Native | Door::Change => {
            for target in ["nope".to_owned(), "Default".to_owned(), "t".repeat(100_000)] {
                let mut body = door.valid();
                body["target"] = json!(target);
                cases.push(
                    Case::post(
                        format!("{door:?}: target {:?}", clip(&target)),
                        door,
                        to_vec(&body),
                        404,
                    )
                    .codes(&["unknown_target"]),
                );
            }
        }
        Door::Alertmanager => {}
    }
}

/// What the bridge's state must be after refusing everything: alive, ready, empty.
async fn assert_untouched(bridge: &Bridge, sim: &pagerduty_simulator::SpawnedSimulator) {
    assert_eq!(bridge.get_text("/healthz").await.0, 200);
    assert_eq!(bridge.get_text("/readyz").await.0, 200);
    let (status, metrics) = bridge.get_text("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("pagerbridge_queue_depth{target=\"default\"} 0"),
        "the queue is not empty:\n{metrics}"
    );
    assert!(
        sim.sim.events().is_empty(),
        "PagerDuty received {:?}",
        sim.sim.events()
    );
    let logs = bridge.logs();
    assert!(
        !logs.iter().any(|l| l.contains("panicked")),
        "a panic in the logs"
    );
}

fn hostile_setup(sim_url: &str) -> (Setup, tempfile::NamedTempFile) {
    let tokens = tempfile::NamedTempFile::new().expect("token file");
    std::fs::write(tokens.path(), format!("{TOKEN}\n")).expect("write");
    let extra = format!(
        "ingest:\n  max_body_bytes: {MAX_BODY}\n  request_timeout: \"{}ms\"\n  bearer_token_file: \"{}\"",
        REQUEST_TIMEOUT.as_millis(),
        tokens.path().display()
    );
    (Setup::new(sim_url, (120, "60s"), &extra, ""), tokens)
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_input_is_answered_and_never_obeyed() {
    let sim = simulator(SimConfig::default()).await;
    let (setup, _tokens) = hostile_setup(&sim.base_url());
    let bridge = setup.start().await;
    let http = reqwest::Client::new();

    let cases = corpus();
    assert!(cases.len() > 1000, "{} cases", cases.len());
    eprintln!("{} hostile requests", cases.len());
    for case in &cases {
        check(&http, &bridge, case).await;
    }

    raw_cases(&bridge).await;
    slow_clients(&bridge).await;

    assert_untouched(&bridge, &sim).await;
    // Nothing was stuck either: the lane had nothing to do for a while.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(sim.sim.events().is_empty());

    // And good input still works.
    let (status, body) = {
        let response = http
            .post(bridge.url("/api/v1/alertmanager"))
            .header("content-type", "application/json")
            .bearer_auth(TOKEN)
            .body(sample("alertmanager-webhook-firing.json"))
            .send()
            .await
            .expect("request");
        (
            response.status().as_u16(),
            response.text().await.unwrap_or_default(),
        )
    };
    assert_eq!(status, 202, "{body}");
    wait_until("3 triggers", Duration::from_secs(20), || {
        delivered(&sim).len() == 3
    })
    .await;
}

/// What reqwest will not send: bytes that are not a header value, lies about the length,
/// chunked bodies over the limit.
async fn raw_cases(bridge: &Bridge) {
    let addr = bridge.addr;
    let deadline = Duration::from_secs(10);

    // A token of bytes that are not text.
    let request = b"POST /api/v1/alerts HTTP/1.1\r\nhost: x\r\nauthorization: Bearer \xFF\xFE\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}".to_vec();
    let (status, ct, body) = raw(addr, request, deadline).await;
    assert_error(
        "a token of invalid bytes",
        status,
        &ct,
        &body,
        401,
        &["unauthorized"],
    );

    // A content type of bytes that are not text.
    let head = raw_head(
        "POST",
        "/api/v1/alerts",
        b"content-type: application/\xFFjson\r\ncontent-length: 2\r\n",
    );
    let (status, ct, body) = raw(addr, [head.as_slice(), b"{}"].concat(), deadline).await;
    assert_error(
        "a content type of invalid bytes",
        status,
        &ct,
        &body,
        415,
        &["unsupported_media_type"],
    );

    for door in DOORS {
        // A body announced far over the limit is refused at once, without waiting for it.
        let head = raw_head(
            "POST",
            door.path(),
            b"content-type: application/json\r\ncontent-length: 1000000000000\r\n",
        );
        let started = Instant::now();
        let (status, ct, body) = raw(
            addr,
            [head.as_slice(), b"{\"alerts\": ["].concat(),
            deadline,
        )
        .await;
        assert_error(
            &format!("{door:?}: content-length 10^12"),
            status,
            &ct,
            &body,
            413,
            &["body_too_large"],
        );
        assert!(
            started.elapsed() < REQUEST_TIMEOUT,
            "{door:?}: a 413 for an announced size took {:?}",
            started.elapsed()
        );

        // A chunked body over the limit.
        let mut request = raw_head(
            "POST",
            door.path(),
            b"content-type: application/json\r\ntransfer-encoding: chunked\r\n",
        );
        let chunk = vec![b' '; 64 * 1024];
        for _ in 0..(MAX_BODY / chunk.len() + 2) {
            request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            request.extend_from_slice(&chunk);
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"0\r\n\r\n");
        let (status, ct, body) = raw(addr, request, deadline).await;
        assert_error(
            &format!("{door:?}: chunked over the limit"),
            status,
            &ct,
            &body,
            413,
            &["body_too_large"],
        );

        // A chunked malformed body within the limit.
        let head = raw_head(
            "POST",
            door.path(),
            b"content-type: application/json\r\ntransfer-encoding: chunked\r\n",
        );
        let request = [head.as_slice(), b"3\r\n{\"a\r\n0\r\n\r\n"].concat();
        let (status, ct, body) = raw(addr, request, deadline).await;
        assert_error(
            &format!("{door:?}: chunked malformed"),
            status,
            &ct,
            &body,
            400,
            &["malformed_json"],
        );
    }
}

/// A client that sends its headers and part of its body, then stalls, gets a JSON 408 after
/// `ingest.request_timeout`; stalled clients do not hold up the others.
async fn slow_clients(bridge: &Bridge) {
    let addr = bridge.addr;
    let stalled_request = |door: Door| {
        let body = to_vec(&door.valid());
        let head = raw_head(
            "POST",
            door.path(),
            b"content-type: application/json\r\ncontent-length: 1000\r\n",
        );
        [head.as_slice(), &body[..body.len().min(100)]].concat()
    };
    let deadline = REQUEST_TIMEOUT + Duration::from_secs(10);
    for door in DOORS {
        let started = Instant::now();
        let (status, ct, answer) = raw(addr, stalled_request(door), deadline).await;
        let took = started.elapsed();
        assert_error(
            &format!("{door:?}: stalled mid-body"),
            status,
            &ct,
            &answer,
            408,
            &["request_timeout"],
        );
        assert!(
            took >= REQUEST_TIMEOUT - Duration::from_millis(100),
            "{door:?}: 408 after only {took:?}"
        );
    }
    let stalled: Vec<_> = (0..8)
        .map(|i| tokio::spawn(raw(addr, stalled_request(DOORS[i % 4]), deadline)))
        .collect();
    let started = Instant::now();
    assert_eq!(bridge.get_text("/healthz").await.0, 200);
    assert!(
        started.elapsed() < REQUEST_TIMEOUT,
        "/healthz waited for stalled clients: {:?}",
        started.elapsed()
    );
    for handle in stalled {
        let (status, _, _) = handle.await.expect("stalled client");
        assert_eq!(status, 408);
    }
    // A client that never finishes its headers is cut off too (hyper's header read timeout),
    // instead of holding its connection forever.
    let started = Instant::now();
    let closed = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream
            .write_all(b"POST /api/v1/alerts HTTP/1.1\r\nhost: x\r\n")
            .expect("write");
        stream
            .set_read_timeout(Some(REQUEST_TIMEOUT + Duration::from_secs(10)))
            .expect("timeout");
        let mut buf = [0u8; 1024];
        // Ok(0) is the server closing; Ok(n) an answer; Err a read timeout (still held).
        loop {
            match stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(_) => return false,
            }
        }
    })
    .await
    .expect("header staller");
    assert!(closed, "a connection stalled in its headers was held open");
    assert!(
        started.elapsed() >= REQUEST_TIMEOUT - Duration::from_millis(100),
        "cut off before the timeout: {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn strange_but_valid_input_is_stored_safely() {
    let sim = simulator(SimConfig::default()).await;
    let (setup, _tokens) = hostile_setup(&sim.base_url());
    let bridge = setup.start().await;
    let http = reqwest::Client::new();
    let post = |path: &'static str, body: Value| {
        let request = http
            .post(bridge.url(path))
            .header("content-type", "application/json")
            .bearer_auth(TOKEN)
            .body(to_vec(&body));
        async move {
            let response = request.send().await.expect("request");
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };

    // NUL and other control characters in label values and names, annotations, URLs.
    let (status, answer) = post(
        "/api/v1/alerts",
        json!({"alerts": [{
            "status": "firing",
            "labels": {"alertname": "Nul\u{0}Name", "instance": "db\u{0}1", "x\u{0}y": "\u{0}\u{1}\u{1f}\u{7f}"},
            "annotations": {"summary": "a\u{0}b", "runbook_url": "https://r.example/\u{0}"},
            "generatorURL": "https://g.example/\u{0}x",
            "startsAt": "0001-01-01T00:00:00-05:00"
        }]}),
    )
    .await;
    assert_eq!(status, 202, "{answer}");

    // 10,000 labels and a 900 KB annotation: accepted, then shrunk to PagerDuty's limit.
    let mut labels: serde_json::Map<String, Value> = (0..10_000)
        .map(|i| (format!("label_{i:05}"), json!(format!("value {i}"))))
        .collect();
    labels.insert("alertname".into(), json!("HugeLabelSet"));
    let (status, answer) = post(
        "/api/v1/alertmanager",
        json!({"alerts": [{"status": "firing", "labels": labels}]}),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    let (status, answer) = post(
        "/api/v1/alerts",
        json!({"alerts": [{"status": "firing", "labels": {"alertname": "HugeAnnotation"},
                           "annotations": {"description": "\"\n".repeat(200_000)}}]}),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    let (status, answer) = post(
        "/api/v1/change-events",
        json!({"summary": "deploy \u{0} é 😀 \u{202e}", "custom_details": {"n\u{0}": [[[[1]]]]}}),
    )
    .await;
    assert_eq!(status, 202, "{answer}");

    wait_until("4 deliveries", Duration::from_secs(30), || {
        sim.sim.events().len() >= 4
    })
    .await;
    let events = sim.sim.events();
    for event in &events {
        assert_eq!(event.status, 202, "{:?}", event.body);
        let size = serde_json::to_vec(&event.body).expect("json").len();
        assert!(size <= 512_000, "a body of {size} bytes");
        if event.path == "/v2/enqueue" {
            pagerbridge_testkit::schema::assert_valid_enqueue(&event.body);
        } else {
            pagerbridge_testkit::schema::assert_valid_change(&event.body);
        }
    }
    let nul = events
        .iter()
        .find(|e| e.body["payload"]["custom_details"]["labels"]["instance"] == "db\u{0}1")
        .expect("the NUL label value arrived intact");
    assert_eq!(
        nul.body["payload"]["custom_details"]["labels"]["x\u{0}y"],
        "\u{0}\u{1}\u{1f}\u{7f}"
    );
    assert!(
        nul.body["payload"].get("timestamp").is_none(),
        "Go's zero time in another offset is unset: {}",
        nul.body["payload"]
    );
    let (_, metrics) = bridge.get_text("/metrics").await;
    assert!(
        metrics.contains("pagerbridge_queue_depth{target=\"default\"} 0"),
        "{metrics}"
    );
    assert_eq!(bridge.get_text("/readyz").await.0, 200);
}
