//! One module per command of the `pagerbridge` binary.

pub mod check_config;
pub mod render;
pub mod send;
pub mod serve;
mod signals;
pub mod simulate;
