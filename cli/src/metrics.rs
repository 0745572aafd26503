//! `twinhub gateway --metrics ADDR`: the producer's metrics ([`twinhub::metrics`]) served as
//! Prometheus text on `GET /metrics`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use prometheus_client::registry::Registry;
use twinhub::metrics::ProducerMetrics;
use twinhub::{Producer, SdkConfig};

/// What prometheus-client's text encoder writes.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Starts serving `producer`'s metrics on `addr` (`HOST:PORT`; port 0 picks a free one) in
/// the background, and returns the address bound.
pub async fn serve(
    addr: &str,
    producer: &Producer,
    config: &SdkConfig,
) -> Result<SocketAddr, String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("--metrics {addr}: {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("--metrics {addr}: {e}"))?;
    let mut registry = Registry::default();
    ProducerMetrics::new(producer.clone(), config).register(&mut registry);
    let registry = Arc::new(registry);
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || scrape(registry.clone())),
    );
    tokio::spawn(async move {
        // Only an accept loop that cannot go on ends here; the gateway keeps forwarding.
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "the metrics endpoint stopped");
        }
    });
    Ok(local)
}

async fn scrape(registry: Arc<Registry>) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &registry) {
        Ok(()) => ([(CONTENT_TYPE, OPENMETRICS)], body).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding the metrics failed",
        )
            .into_response(),
    }
}
