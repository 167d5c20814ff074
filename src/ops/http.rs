//! The admin HTTP server: `/livez`, `/readyz` and `/metrics` (OpenMetrics).
//!
//! Liveness and readiness are kept apart: the process is live while it serves, and ready once its
//! caches have synced, whether or not this replica leads.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::ops::metrics::Metrics;

/// Whether this replica can do its job now (the controller's readiness).
pub type Readiness = Arc<dyn Fn() -> bool + Send + Sync>;

/// What the server reads: readiness and the metrics.
#[derive(Clone)]
pub struct Admin {
    pub ready: Readiness,
    pub metrics: Arc<Metrics>,
}

async fn livez() -> &'static str {
    "ok\n"
}

async fn readyz(State(admin): State<Admin>) -> impl IntoResponse {
    let ready = (admin.ready)();
    admin.metrics.ready.set(i64::from(ready));
    if ready {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: caches not synced, a watch failing, or the lease unreachable\n")
    }
}

async fn metrics(State(admin): State<Admin>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], admin.metrics.encode())
}

/// The router, separate from [`serve`] so it can be tested without a socket.
pub fn router(admin: Admin) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/healthz", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(admin)
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    address: SocketAddr,
    admin: Admin,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    tracing::info!(%address, "serving /livez, /readyz and /metrics");
    axum::serve(listener, router(admin)).with_graceful_shutdown(shutdown).await
}
