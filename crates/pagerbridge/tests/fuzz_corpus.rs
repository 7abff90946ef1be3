//! Replays the committed fuzz corpora on stable Rust: every file under `fuzz/corpus/<target>/`
//! (and `fuzz/artifacts/<target>/`, the crashes libFuzzer saved, when there are any) goes
//! through `pagerbridge::fuzzing::<target>`, the very function the cargo-fuzz target calls,
//! which panics when an invariant breaks (see that module). So a finding, once its input is
//! committed, stays a failing test until it is fixed, without nightly or libFuzzer.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

type Entry = fn(&[u8]);

const TARGETS: [(&str, Entry); 3] = [
    ("alertmanager", pagerbridge::fuzzing::alertmanager),
    ("native", pagerbridge::fuzzing::native),
    ("format", pagerbridge::fuzzing::format),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// The regular files directly in `dir` (libFuzzer's corpora are flat), sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    files
}

/// Runs `entry` on every file, collecting the failures instead of stopping at the first.
fn replay(target: &str, entry: Entry, files: &[PathBuf]) -> Vec<String> {
    files
        .iter()
        .filter_map(|path| {
            let data = std::fs::read(path).expect("a corpus file reads");
            catch_unwind(AssertUnwindSafe(|| entry(&data)))
                .err()
                .map(|panic| {
                    let message = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                        .unwrap_or_default();
                    format!("{target}: {}: {message}", path.display())
                })
        })
        .collect()
}

#[test]
fn every_corpus_and_artifact_file_keeps_the_invariants() {
    let mut failures = Vec::new();
    for (target, entry) in TARGETS {
        let corpus = files(&fuzz_dir().join("corpus").join(target));
        assert!(
            corpus.len() >= 5,
            "fuzz/corpus/{target} has {} files; the seeds are missing",
            corpus.len()
        );
        failures.extend(replay(target, entry, &corpus));
        let artifacts = files(&fuzz_dir().join("artifacts").join(target));
        failures.extend(replay(target, entry, &artifacts));
    }
    assert!(
        failures.is_empty(),
        "{} corpus file(s) break an invariant:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Each entry takes any bytes at all: the empty input, garbage, and the other targets' seeds.
#[test]
fn every_entry_takes_every_seed() {
    let mut all = Vec::new();
    for (target, _) in TARGETS {
        all.extend(files(&fuzz_dir().join("corpus").join(target)));
    }
    let garbage: [&[u8]; 4] = [b"", b"\xFF\xFE", b"[[[[", b" {\"alerts\": [1]}"];
    for (target, entry) in TARGETS {
        let failures = replay(target, entry, &all);
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        for data in garbage {
            entry(data);
        }
    }
}

/// The replay catches what the fuzzer would: a panicking entry is reported with its file.
#[test]
fn a_breaking_input_is_reported() {
    fn strict(data: &[u8]) {
        assert!(!data.starts_with(b"{"), "starts with a brace");
    }
    let seeds = files(&fuzz_dir().join("corpus").join("native"));
    let failures = replay("strict", strict, &seeds);
    assert!(!failures.is_empty());
    assert!(failures[0].contains("starts with a brace"), "{failures:?}");
}
