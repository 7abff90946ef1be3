//! Fuzzes the formatter: native JSON in, every alert formatted, PagerDuty's limits checked
//! (summary ≤ 1024 characters, body ≤ 512,000 bytes, …). The invariants live in
//! `pagerbridge::fuzzing::format`, which the corpus replay test also runs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| pagerbridge::fuzzing::format(data));
