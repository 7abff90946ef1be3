//! Test support shared by the workspace's test suites (never a dependency of shipped code).

pub mod needs;
pub mod schema;
