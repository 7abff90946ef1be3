//! PagerDuty's own OpenAPI file for Events API v2, as an optional cross-check of our schema.
//!
//! The file states no licence, so it is not in the repository: it is read from
//! `PAGERBRIDGE_PAGERDUTY_OPENAPI`, else from `../shared/pagerduty/events-v2/openapiv3.json`
//! beside the repository, when present. Tests that use it are `#[ignore]`d with a reason
//! starting "needs", have `pagerduty_openapi` in their names (CI selects them by that) and
//! panic, never pass, when the file is absent. They check one direction: every body our
//! schema accepts, PagerDuty's accepts too (ours is meant to be the stricter one).

use std::path::PathBuf;
use std::sync::OnceLock;

use jsonschema::Validator;
use serde_json::Value;

use crate::schema;

/// The environment variable naming PagerDuty's file.
pub const ENV: &str = "PAGERBRIDGE_PAGERDUTY_OPENAPI";

/// Where PagerDuty's file is, if it is anywhere we look.
pub fn path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(ENV).filter(|p| !p.is_empty()) {
        // Named explicitly: returned even when missing, so the test says which path failed.
        return Some(PathBuf::from(path));
    }
    // The workspace root is two levels above this crate; `shared/` sits beside the root.
    let beside = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/pagerduty/events-v2/openapiv3.json");
    beside.is_file().then_some(beside)
}

/// PagerDuty's whole OpenAPI document; panics with what to do when it cannot be read.
pub fn openapi() -> &'static Value {
    static OPENAPI: OnceLock<Value> = OnceLock::new();
    OPENAPI.get_or_init(|| {
        let path = path().unwrap_or_else(|| {
            panic!(
                "PagerDuty's OpenAPI file for Events API v2 is needed by this test: set {ENV} to \
                 its path (it is published at https://raw.githubusercontent.com/PagerDuty/api-schema/main/reference/events-v2/openapiv3.json) \
                 or put it at ../shared/pagerduty/events-v2/openapiv3.json beside the repository"
            )
        });
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read PagerDuty's OpenAPI file {}: {e}", path.display()));
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("PagerDuty's OpenAPI file {} is not JSON: {e}", path.display()))
    })
}

/// The request-body schema of one path (`/enqueue` or `/change/enqueue`), refs inlined.
pub fn request_schema(path: &str) -> Value {
    let openapi = openapi();
    let pointer = format!(
        "/paths/{}/post/requestBody/content/application~1json/schema",
        path.replace('/', "~1")
    );
    let schema = openapi
        .pointer(&pointer)
        .unwrap_or_else(|| panic!("no request schema for {path} in PagerDuty's file"))
        .clone();
    inline_refs(schema, openapi)
}

/// PagerDuty's documented request examples for `path`, by name.
pub fn request_examples(path: &str) -> Vec<(String, Value)> {
    let pointer = format!(
        "/paths/{}/post/requestBody/content/application~1json/examples",
        path.replace('/', "~1")
    );
    openapi()
        .pointer(&pointer)
        .and_then(Value::as_object)
        .unwrap_or_else(|| panic!("no examples at {pointer} in PagerDuty's file"))
        .iter()
        .map(|(name, example)| (name.clone(), example["value"].clone()))
        .collect()
}

fn inline_refs(value: Value, root: &Value) -> Value {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(reference)) = map.get("$ref") {
                let target = reference
                    .strip_prefix('#')
                    .and_then(|pointer| root.pointer(pointer))
                    .unwrap_or_else(|| panic!("unresolvable $ref {reference}"))
                    .clone();
                return inline_refs(target, root);
            }
            Value::Object(
                map.into_iter()
                    .map(|(k, v)| (k, inline_refs(v, root)))
                    .collect(),
            )
        }
        Value::Array(items) => {
            Value::Array(items.into_iter().map(|v| inline_refs(v, root)).collect())
        }
        other => other,
    }
}

/// PagerDuty's validator for `POST /v2/enqueue` bodies.
pub fn enqueue() -> &'static Validator {
    static VALIDATOR: OnceLock<Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| schema::compile(&request_schema("/enqueue")))
}

/// PagerDuty's validator for `POST /v2/change/enqueue` bodies.
pub fn change_enqueue() -> &'static Validator {
    static VALIDATOR: OnceLock<Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| schema::compile(&request_schema("/change/enqueue")))
}

/// Compares our schema with PagerDuty's over a corpus of bodies: every body ours accepts must
/// be accepted by PagerDuty's. Bodies ours rejects are counted, not compared.
#[derive(Debug, Default)]
pub struct CrossCheck {
    compared: usize,
    rejected_by_ours: usize,
    disagreements: Vec<String>,
}

impl CrossCheck {
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks one body sent to `path` (`/enqueue` or `/change/enqueue`).
    pub fn check(&mut self, path: &str, body: &Value) {
        let theirs = match path {
            "/enqueue" => enqueue(),
            _ => change_enqueue(),
        };
        self.compare(schema::for_path(path), theirs, path, body);
    }

    fn compare(&mut self, ours: &Validator, theirs: &Validator, path: &str, body: &Value) {
        if !ours.is_valid(body) {
            self.rejected_by_ours += 1;
            return;
        }
        self.compared += 1;
        let problems = schema::violations(theirs, body);
        if !problems.is_empty() {
            let mut text = body.to_string();
            if text.len() > 400 {
                let mut end = 400;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                text.truncate(end);
                text.push('…');
            }
            self.disagreements
                .push(format!("{path} {text}: {problems:?}"));
        }
    }

    /// How many bodies both schemas judged.
    pub fn compared(&self) -> usize {
        self.compared
    }

    /// Fails unless at least `minimum` bodies were compared and PagerDuty's schema accepted
    /// every one; prints the count either way (run with `--nocapture` to see it).
    #[track_caller]
    pub fn assert_agrees(&self, minimum: usize) {
        eprintln!(
            "cross-check with PagerDuty's OpenAPI file: {} bodies compared, {} rejected by our schema first",
            self.compared, self.rejected_by_ours
        );
        assert!(
            self.disagreements.is_empty(),
            "{} bodies accepted by our schema are rejected by PagerDuty's: {:#?}",
            self.disagreements.len(),
            self.disagreements
        );
        assert!(
            self.compared >= minimum,
            "only {} bodies compared, expected at least {minimum}",
            self.compared
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    #[ignore = "needs pagerduty_openapi"]
    fn our_examples_and_pagerdutys_agree_with_pagerduty_openapi() {
        let mut check = CrossCheck::new();
        for (path, body) in schema::documented_examples() {
            check.check(path, &body);
        }
        // PagerDuty's own examples, their `+0000` offsets written as RFC 3339 asks, pass ours:
        // our schema is stricter, not different.
        for path in ["/enqueue", "/change/enqueue"] {
            for (name, mut body) in request_examples(path) {
                if let Some(Value::String(ts)) = body.pointer_mut("/payload/timestamp") {
                    *ts = ts.replace("+0000", "+00:00");
                }
                let problems = schema::violations(schema::for_path(path), &body);
                assert!(
                    problems.is_empty(),
                    "PagerDuty's example {name}: {problems:?}"
                );
                check.check(path, &body);
            }
        }
        check.assert_agrees(8);
    }

    #[test]
    fn a_cross_check_reports_bodies_theirs_refuses_and_too_few_comparisons() {
        // Stand-ins for the two schemas: ours takes objects, "theirs" only those with `ok`.
        let ours = schema::compile(&json!({"type": "object"}));
        let theirs = schema::compile(&json!({"required": ["ok"]}));
        let mut check = CrossCheck::new();
        check.compare(
            &ours,
            &theirs,
            "/enqueue",
            &json!("not compared: ours refuses it"),
        );
        check.compare(&ours, &theirs, "/enqueue", &json!({"ok": true}));
        assert_eq!(check.compared(), 1);
        check.assert_agrees(1);
        let too_few = std::panic::catch_unwind(|| check.assert_agrees(2));
        assert!(too_few.is_err(), "one comparison passed a minimum of two");

        check.compare(&ours, &theirs, "/enqueue", &json!({"missing": "ok"}));
        assert_eq!(check.compared(), 2);
        let disagreement = std::panic::catch_unwind(|| check.assert_agrees(1));
        assert!(
            disagreement.is_err(),
            "a body theirs refuses went unreported"
        );
    }
}
