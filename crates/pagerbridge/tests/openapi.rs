//! `docs/openapi.yaml` against the server: its operations are exactly the routes the router is
//! built from ([`pagerbridge::http::routes`]), a real bridge answers every documented route and
//! no other path or method we try, and the document is structurally OpenAPI 3.1.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::{Setup, simulator};
use pagerduty_simulator::Config as SimConfig;
use serde_json::Value;

/// The operations a path item may hold (OpenAPI 3.1 "Path Item Object").
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn document() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.yaml");
    let text = std::fs::read_to_string(&path).expect("docs/openapi.yaml is readable");
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("docs/openapi.yaml is not YAML: {e}"))
}

/// Every (METHOD, path) the document describes.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let paths = doc["paths"].as_object().expect("paths is a mapping");
    let mut routes = BTreeSet::new();
    for (path, item) in paths {
        let item = item.as_object().expect("a path item is a mapping");
        for method in item.keys().filter(|k| METHODS.contains(&k.as_str())) {
            routes.insert((method.to_uppercase(), path.clone()));
        }
    }
    routes
}

/// What the router is built from.
fn in_code() -> BTreeSet<(String, String)> {
    pagerbridge::http::routes()
        .into_iter()
        .map(|r| (r.method.as_str().to_owned(), r.path.to_owned()))
        .collect()
}

fn differences(
    expected: &BTreeSet<(String, String)>,
    actual: &BTreeSet<(String, String)>,
) -> String {
    format!(
        "only in the first: {:?}; only in the second: {:?}",
        expected.difference(actual).collect::<Vec<_>>(),
        actual.difference(expected).collect::<Vec<_>>()
    )
}

#[test]
fn the_documented_routes_are_the_routes_of_the_router() {
    let documented = documented(&document());
    let code = in_code();
    assert!(!code.is_empty());
    assert_eq!(
        code,
        documented,
        "the router (first) and docs/openapi.yaml (second) differ: {}",
        differences(&code, &documented)
    );
}

/// Resolves a local `$ref` ("#/components/…").
fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    doc.pointer(reference.strip_prefix('#')?)
}

/// `value` itself, or what its `$ref` points to.
fn deref<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            resolve(doc, reference).unwrap_or_else(|| panic!("{reference} does not resolve"))
        }
        None => value,
    }
}

fn every_ref(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                match (key.as_str(), inner) {
                    ("$ref", Value::String(reference)) => found.push(reference.clone()),
                    _ => every_ref(inner, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| every_ref(i, found)),
        _ => {}
    }
}

#[test]
fn the_document_is_structurally_openapi_3_1() {
    let doc = document();
    let version = doc["openapi"].as_str().expect("openapi is a string");
    assert!(version.starts_with("3.1."), "openapi: {version}");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    let schemes = doc["components"]["securitySchemes"]
        .as_object()
        .expect("security schemes");
    for name in ["ingestToken", "adminToken"] {
        assert_eq!(schemes[name]["type"], "http", "{name}");
        assert_eq!(schemes[name]["scheme"], "bearer", "{name}");
    }

    let mut refs = Vec::new();
    every_ref(&doc, &mut refs);
    assert!(!refs.is_empty());
    for reference in &refs {
        assert!(
            resolve(&doc, reference).is_some(),
            "{reference} does not resolve"
        );
    }

    let paths = doc["paths"].as_object().expect("paths is a mapping");
    assert!(!paths.is_empty());
    let mut operation_ids = BTreeSet::new();
    for (path, item) in paths {
        assert!(path.starts_with('/'), "{path}");
        for (method, operation) in item
            .as_object()
            .expect("path item")
            .iter()
            .filter(|(k, _)| METHODS.contains(&k.as_str()))
        {
            let at = format!("{method} {path}");
            let id = operation["operationId"].as_str().expect("operationId");
            assert!(operation_ids.insert(id.to_owned()), "{at}: {id} twice");
            // Every template parameter is declared as a required path parameter.
            for name in path
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            {
                let declared = operation["parameters"].as_array().is_some_and(|ps| {
                    ps.iter()
                        .map(|p| deref(&doc, p))
                        .any(|p| p["name"] == name && p["in"] == "path" && p["required"] == true)
                });
                assert!(declared, "{at}: path parameter {name} is not declared");
            }
            // Security requirements name declared schemes (`{}`: optional).
            let security = operation["security"].as_array().expect("security");
            for requirement in security {
                for scheme in requirement.as_object().expect("requirement").keys() {
                    assert!(schemes.contains_key(scheme), "{at}: {scheme}");
                }
            }
            let responses = operation["responses"]
                .as_object()
                .unwrap_or_else(|| panic!("{at} has no responses"));
            assert!(!responses.is_empty(), "{at} has no responses");
            assert!(responses.keys().any(|s| s.starts_with('2')), "{at}: no 2xx");
            for (status, response) in responses {
                assert!(
                    status.len() == 3 && status.chars().all(|c| c.is_ascii_digit()),
                    "{at}: status {status}"
                );
                let response = deref(&doc, response);
                assert!(response["description"].is_string(), "{at} {status}");
                if status.starts_with('4') || status.starts_with('5') {
                    assert_eq!(
                        response["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/Error",
                        "{at} {status}: errors are the Error body"
                    );
                }
                if status == "503" {
                    assert!(
                        response["headers"]["Retry-After"].is_object(),
                        "{at}: 503 without Retry-After"
                    );
                }
                if status == "401" {
                    assert!(response["headers"]["WWW-Authenticate"].is_object(), "{at}");
                }
            }
            // The tokens, where the router puts them.
            let names: BTreeSet<&str> = security
                .iter()
                .flat_map(|r| r.as_object().expect("requirement").keys())
                .map(String::as_str)
                .collect();
            if path.starts_with("/api/v1/admin/") {
                assert_eq!(security.len(), 1, "{at}: the admin token is required");
                assert_eq!(names, BTreeSet::from(["adminToken"]), "{at}");
                assert!(responses.contains_key("403"), "{at}: admin_disabled");
            } else if path.starts_with("/api/v1/") {
                assert_eq!(names, BTreeSet::from(["ingestToken"]), "{at}");
                assert!(responses.contains_key("401"), "{at}");
            } else {
                assert!(security.is_empty(), "{at}: probes are open");
            }
        }
    }
    let error = &doc["components"]["schemas"]["Error"];
    assert_eq!(
        error["required"],
        serde_json::json!(["error", "detail"]),
        "the error body is {{error, detail}}"
    );
}

/// Paths a careless change might answer; none of them is a route.
const UNDOCUMENTED: [&str; 18] = [
    "/",
    "/api",
    "/api/v1",
    "/api/v1/admin",
    "/api/v1/admin/targets",
    "/api/v1/admin/dead-letters/1",
    "/api/v1/admin/dead-letters/replay/all",
    "/api/v1/admin/queue/default",
    "/api/v1/alertmanager/default/extra",
    "/api/v1/alerts/default",
    "/api/v1/change-events/default",
    "/api/v2/alerts",
    "/v2/enqueue",
    "/health",
    "/ready",
    "/livez",
    "/metrics/default",
    "/debug/pprof",
];

/// Probes a real bridge with every method on every documented path (template parameters
/// filled in), each with a trailing slash too, and on [`UNDOCUMENTED`] paths: what it answers —
/// anything but its 404 `not_found` and 405 `method_not_allowed` — must be what is documented.
#[tokio::test]
async fn a_running_bridge_answers_exactly_the_documented_routes() {
    let documented = documented(&document());
    let sim = simulator(SimConfig::default()).await;
    let bridge = Setup::new(&sim.base_url(), (120, "60s"), "", "")
        .start()
        .await;
    let http = reqwest::Client::new();

    let mut paths: Vec<(String, String)> = Vec::new();
    for template in documented.iter().map(|(_, p)| p).collect::<BTreeSet<_>>() {
        let concrete = template.replace("{target}", "default");
        assert!(!concrete.contains('{'), "fill in {template}");
        paths.push((template.clone(), concrete.clone()));
        paths.push((format!("{template}/"), format!("{concrete}/")));
    }
    paths.extend(UNDOCUMENTED.iter().map(|p| (p.to_string(), p.to_string())));

    let mut answered = BTreeSet::new();
    let mut routed_paths = BTreeSet::new();
    // HEAD is left out: axum answers it wherever GET is, as HTTP asks (the document says so).
    for (template, concrete) in &paths {
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"] {
            let response = http
                .request(method.parse().expect("a method"), bridge.url(concrete))
                .send()
                .await
                .expect("the bridge answers");
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            match (status, body["error"].as_str()) {
                (404, Some("not_found")) => {}
                (405, Some("method_not_allowed")) => {
                    routed_paths.insert(template.clone());
                }
                _ => {
                    routed_paths.insert(template.clone());
                    answered.insert((method.to_owned(), template.clone()));
                }
            }
        }
    }
    assert_eq!(
        documented,
        answered,
        "docs/openapi.yaml (first) and what the bridge answers (second) differ: {}",
        differences(&documented, &answered)
    );
    // The method check above means something only if the paths themselves are told apart.
    let documented_paths: BTreeSet<String> = documented.iter().map(|(_, p)| p.clone()).collect();
    assert_eq!(routed_paths, documented_paths);
}
