//! Test support shared by the workspace's test suites (never a dependency of shipped code):
//! what a test needs from the machine, a fresh PostgreSQL database per test, a private
//! PostgreSQL server a test can stop and start, a TCP proxy a test can cut, the project's
//! Alertmanager samples, our JSON Schema of PagerDuty's Events API v2 as validators, and the
//! optional cross-check against PagerDuty's own OpenAPI file, and a fake Kubernetes API server
//! serving Secrets (list and watch) to a real `kube` client.

pub mod kube_api;
pub mod needs;
pub mod pagerduty_openapi;
pub mod pg_server;
pub mod postgres;
pub mod samples;
pub mod schema;
pub mod tcp_proxy;
