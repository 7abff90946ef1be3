//! One module per command of the `pagerbridge` binary.

pub mod admin;
pub mod check_config;
pub mod render;
pub mod send;
pub mod serve;
mod signals;
pub mod simulate;

/// Writes a line to stdout. A closed pipe (`pagerbridge render … | head`) is not an error worth
/// a panic: the reader has what it wanted.
pub(crate) fn print_line(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
}
