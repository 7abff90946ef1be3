//! The project's Alertmanager 0.25 samples: real webhook bodies (and the bodies Alertmanager's
//! own PagerDuty receiver sent), captured from a real Alertmanager 0.25 for this project.
//!
//! They live once, in `examples/alertmanager-0.25/` at the repository root, because the
//! README's quick start posts them too; tests, benches and examples reach them through here.

use std::path::PathBuf;

/// The folder holding the samples.
pub fn dir() -> PathBuf {
    // The testkit sits at `crates/testkit`; the samples two levels up, in the repository.
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/alertmanager-0.25")
}

/// The path of one sample, e.g. `path("alertmanager-webhook-firing.json")`.
pub fn path(name: &str) -> PathBuf {
    dir().join(name)
}

/// The bytes of one sample; panics (these are tests) naming the file when it cannot be read.
pub fn read(name: &str) -> Vec<u8> {
    let path = path(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("sample {} is missing: {e}", path.display()))
}

/// The three webhook bodies of one alert group's life: firing, partly resolved, resolved.
pub const WEBHOOKS: [&str; 3] = [
    "alertmanager-webhook-firing.json",
    "alertmanager-webhook-partially-resolved.json",
    "alertmanager-webhook-resolved.json",
];

/// The Events API v2 bodies Alertmanager 0.25's own PagerDuty receiver sent for that group.
pub const PAGERDUTY_BODIES: [&str; 2] = [
    "alertmanager-native-pd-trigger.json",
    "alertmanager-native-pd-resolve.json",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_is_in_the_repository_and_is_json() {
        let mut names: Vec<String> = std::fs::read_dir(dir())
            .expect("the samples folder exists")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        let mut expected: Vec<&str> = WEBHOOKS.iter().chain(&PAGERDUTY_BODIES).copied().collect();
        expected.sort();
        assert_eq!(
            names, expected,
            "the folder holds exactly the listed samples"
        );
        for name in expected {
            let value: serde_json::Value =
                serde_json::from_slice(&read(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(value.is_object(), "{name} is not a JSON object");
        }
    }
}
