//! Fuzzes the native alerts parser and the change-events parser; the invariants live in
//! `pagerbridge::fuzzing::native`, which the corpus replay test also runs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| pagerbridge::fuzzing::native(data));
