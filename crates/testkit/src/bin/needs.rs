//! Tells `scripts/test` what this machine has for the tests marked `#[ignore = "needs …"]`.
//!
//! One line per need, tab-separated: `tag`, `ok` or `missing`, the nextest filter of the
//! tests that need it, and what was found or what is missing (with how to get it).

use pagerbridge_testkit::needs::Need;

fn main() {
    for need in Need::ALL {
        let (state, detail) = match need.probe() {
            Ok(found) => ("ok", found),
            Err(missing) => (
                "missing",
                format!("{}: {missing}; {}", need.description(), need.hint()),
            ),
        };
        println!("{}\t{state}\t{}\t{detail}", need.tag(), need.filter());
    }
}
