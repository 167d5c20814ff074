//! Operating nsguard: the Kubernetes client, the HTTP server (probes, metrics), the metrics
//! themselves, and telemetry.

pub mod client;
pub mod http;
pub mod metrics;
pub mod telemetry;
