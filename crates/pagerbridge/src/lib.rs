//! pagerbridge: alerts in, PagerDuty incident lifecycles out, durably and in order.
//!
//! The path of an alert (DESIGN.md), one module per step:
//! [`ingest`] parses what senders post into [`alert::Alert`]s; [`format`] turns an alert into
//! the PagerDuty event to send; [`store`] keeps the durable outbox and incident state behind one
//! trait; [`delivery`] drives a lane per target within PagerDuty's budget, on the one replica
//! that holds the lane's lease ([`lease_keeper`], which does the same for the singletons);
//! [`http`] is the HTTP surface, whose admin API speaks [`admin_api`] (shared with the CLI);
//! [`config`] reads the YAML file; [`targets`] holds the targets in force, from the file and,
//! while running, from Kubernetes Secrets. The PagerDuty protocol itself lives in the
//! `pagerduty-events` crate, which knows nothing of alerts.

pub mod admin_api;
pub mod alert;
pub mod alertmanager_sync;
pub mod config;
pub mod delivery;
pub mod format;
/// Entry points for the fuzz targets and their corpus replay test; not an API, and not in the
/// shipped library: only the `fuzzing` feature (which `fuzz/` and this crate's tests enable)
/// builds it.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod housekeeping;
pub mod http;
pub mod ingest;
pub mod internal_events;
pub mod keyring;
pub mod kubernetes;
pub mod lease_keeper;
pub mod metrics;
pub mod pipeline;
pub mod secrets;
pub mod service;
pub mod store;
pub mod targets;
