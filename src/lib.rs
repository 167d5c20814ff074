//! nsguard keeps every selected Kubernetes namespace hardened to a declared baseline.
//!
//! - [`core`]: pure — profiles, selection, desired state, drift, the decision of what to write and
//!   announce, status aggregation. No client, no clock, no I/O; most unit tests live here.
//! - [`controller`]: the edges — watches and caches, scheduling, server-side apply, events, status
//!   writer, leadership. It executes what [`core`] decides.
//! - [`cli`]: `nsguard plan`, `validate` and `status`, over the same core.
//! - [`ops`]: the Kubernetes client, HTTP probes and metrics, telemetry.
//!
//! See ARCHITECTURE.md for the data flow from a watch event to a write.

pub mod cli;
pub mod controller;
pub mod core;
pub mod ops;
