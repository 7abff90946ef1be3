//! Fuzzes the Alertmanager webhook parser, then formats whatever it accepts; the invariants
//! live in `pagerbridge::fuzzing::alertmanager`, which the corpus replay test also runs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| pagerbridge::fuzzing::alertmanager(data));
