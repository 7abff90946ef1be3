//! One module per command of the `pagerbridge` binary.

pub mod send;
pub mod simulate;
