//! Operating nsguard: the HTTP server (probes, metrics), the metrics themselves, and telemetry.

pub mod http;
pub mod metrics;
pub mod telemetry;
