//! `docs/configuration.md` against the code: the annotated YAML block under "The file" holds
//! every key the configuration structs accept and no other, and its values are the defaults.
//!
//! The keys come from the code itself: the global sections by serialising `Config::default()`,
//! the target's (whose type has no `Serialize`, so that an inline key cannot leak) from the
//! field list serde's derive gives in its "unknown field" error.

use std::collections::BTreeSet;
use std::path::Path;

use pagerbridge::config::{Config, Fields, RateLimit, SecretsDiscovery, TargetConfig};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

/// Where a target's keys sit under the top level.
const TARGETS: &str = "targets[]";

/// The first ```yaml block after the "## The file" heading.
fn documented_block() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md");
    let text = std::fs::read_to_string(&path).expect("docs/configuration.md is readable");
    let section = text
        .split_once("\n## The file\n")
        .expect("a \"## The file\" section")
        .1;
    let block = section
        .split_once("```yaml\n")
        .expect("a ```yaml block in \"The file\"")
        .1;
    block
        .split_once("\n```")
        .expect("the block is closed")
        .0
        .to_owned()
}

fn documented() -> Value {
    serde_saphyr::from_str(&documented_block())
        .unwrap_or_else(|e| panic!("the block in docs/configuration.md is not YAML: {e}"))
}

/// The fields a struct accepts, as serde's derive lists them when it refuses an unknown one.
fn accepted_fields<T: DeserializeOwned>() -> Vec<String> {
    let error = serde_json::from_value::<T>(json!({"\u{1}unknown": null}))
        .err()
        .expect("an unknown field is refused")
        .to_string();
    let expected = error
        .split_once("expected ")
        .unwrap_or_else(|| panic!("not an unknown-field error: {error}"))
        .1;
    let fields: Vec<String> = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    assert!(!fields.is_empty(), "no field list in: {error}");
    fields
}

/// Every key path under `value` ("storage.backend"), sections included; list items are walked
/// as `name[]`. Below a path in `leaves`, a mapping is a value (`match`, `severity_map`).
fn key_paths(value: &Value, prefix: &str, leaves: &BTreeSet<String>, out: &mut BTreeSet<String>) {
    let children: &Map<String, Value> = match value {
        Value::Object(map) => map,
        Value::Array(items) => {
            let path = format!("{prefix}[]");
            for item in items {
                key_paths(item, &path, leaves, out);
            }
            return;
        }
        _ => return,
    };
    for (key, child) in children {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        out.insert(path.clone());
        if !leaves.contains(&path) {
            key_paths(child, &path, leaves, out);
        }
    }
}

/// The defaults with every optional section switched on, so that its keys show.
fn everything_on() -> Config {
    let mut config = Config::default();
    config.kubernetes.secrets = Some(SecretsDiscovery::default());
    config
}

/// Every key the code accepts, and the paths whose value may be a free-form mapping.
fn in_code() -> (BTreeSet<String>, BTreeSet<String>) {
    let mut keys = BTreeSet::new();
    let global = serde_json::to_value(everything_on()).expect("the config serializes");
    key_paths(&global, "", &BTreeSet::new(), &mut keys);

    keys.insert("targets".to_owned());
    let mut leaves = BTreeSet::new();
    let rate_limit: Vec<String> = serde_json::to_value(RateLimit::default())
        .expect("serializes")
        .as_object()
        .expect("a mapping")
        .keys()
        .cloned()
        .collect();
    for field in accepted_fields::<TargetConfig>() {
        let path = format!("{TARGETS}.{field}");
        // The target's nested structs; any other mapping-typed key is free-form.
        let nested = match field.as_str() {
            "rate_limit" => rate_limit.clone(),
            "fields" => accepted_fields::<Fields>(),
            "match" | "severity_map" => {
                leaves.insert(path.clone());
                Vec::new()
            }
            _ => Vec::new(),
        };
        for inner in nested {
            keys.insert(format!("{path}.{inner}"));
        }
        keys.insert(path);
    }
    (keys, leaves)
}

#[test]
fn every_key_the_code_accepts_is_documented_and_no_other() {
    let (code, leaves) = in_code();
    // The field lists really come from the code.
    for key in [
        "listen",
        "storage.url_file",
        "kubernetes.secrets.label_selector",
        "targets[].routing_key_env",
        "targets[].fields.class",
        "targets[].rate_limit.window",
    ] {
        assert!(code.contains(key), "{key} is not in {code:?}");
    }
    let mut documented_keys = BTreeSet::new();
    key_paths(&documented(), "", &leaves, &mut documented_keys);
    assert_eq!(
        code,
        documented_keys,
        "keys only in the code: {:?}; only in docs/configuration.md: {:?}",
        code.difference(&documented_keys).collect::<Vec<_>>(),
        documented_keys.difference(&code).collect::<Vec<_>>()
    );
}

#[test]
fn the_documented_values_are_the_defaults() {
    let mut block = documented();
    let targets = block
        .as_object_mut()
        .expect("a mapping")
        .remove("targets")
        .expect("targets are documented");
    let config: Config = serde_json::from_value(block).expect("the documented block is a config");
    // `kubernetes.secrets` is documented switched on, with its own defaults.
    assert_eq!(config, everything_on());

    // The target shown is a valid one once it picks one of its three key sources.
    let mut target = targets[0].clone();
    let target = target.as_object_mut().expect("a target is a mapping");
    target.remove("routing_key_env");
    target.remove("routing_key");
    let target: TargetConfig =
        serde_json::from_value(Value::Object(target.clone())).expect("the target parses");
    assert_eq!(target.name, "default");
}
