//! Test support shared by the workspace's test suites (never a dependency of shipped code):
//! the project's Alertmanager samples, and PagerDuty's schema as validators.

pub mod samples;
pub mod schema;
