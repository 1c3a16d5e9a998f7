//! Prometheus metrics (README, "Metrics").
//!
//! * [`serve`]: the metrics listener, apart from the public one (`METRICS_LISTEN`): `GET /metrics`
//!   in the OpenMetrics text format, and `GET /healthz`. It is meant for the cluster's
//!   Prometheus only; nothing of it goes through Kong.
//! * [`ProxmoxCalls`]: every request to Proxmox by method, path template and status, with its
//!   latency, as the Proxmox client's [`CallObserver`].
//!
//! Each process builds one [`Registry`] at start, registers what it measures, and serves it.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use nimbus_proxmox::{CallObserver, ObservedCall};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The content type of the OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Latency buckets in seconds, 5 ms to 60 s: API requests, Proxmox calls.
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0].into_iter()
}

/// Duration buckets in seconds, 50 ms to 1 h: jobs, waits.
pub fn duration_buckets() -> impl Iterator<Item = f64> {
    [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0].into_iter()
}

/// `registry` in the OpenMetrics text format.
pub fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing into a String cannot fail; a metric that failed to encode would be a bug here.
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, registry) {
        tracing::error!(error = %e, "metrics could not be encoded");
    }
    text
}

/// The metrics listener's routes: `/metrics` and `/healthz`.
pub fn router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move { ([(header::CONTENT_TYPE, CONTENT_TYPE)], encode(&registry)) }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .fallback(|| async { (axum::http::StatusCode::NOT_FOUND, "not found").into_response() })
}

/// Serves [`router`] on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let address = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(%address, "metrics listening");
    let served = axum::serve(listener, router(registry)).with_graceful_shutdown(shutdown);
    if let Err(e) = served.await {
        tracing::error!(error = %e, "the metrics listener stopped");
    }
}

/// Binds `address` for [`serve`].
pub async fn bind(address: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address).await
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    method: String,
    path: String,
    /// The HTTP status, or `none` when no answer came.
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLatencyLabels {
    method: String,
    path: String,
}

/// Proxmox calls: `nimbus_proxmox_requests_total{method,path,status}` and
/// `nimbus_proxmox_request_duration_seconds{method,path}`.
#[derive(Debug)]
pub struct ProxmoxCalls {
    requests: Family<CallLabels, Counter>,
    latency: Family<CallLatencyLabels, Histogram>,
}

impl ProxmoxCalls {
    /// Registers the metrics in `registry`; the result goes to the client's configuration.
    pub fn register(registry: &mut Registry) -> Arc<ProxmoxCalls> {
        let requests = Family::<CallLabels, Counter>::default();
        let latency =
            Family::<CallLatencyLabels, Histogram>::new_with_constructor(|| Histogram::new(latency_buckets()));
        registry.register(
            "nimbus_proxmox_requests",
            "Requests to the Proxmox API by method, path template and status (none: no answer)",
            requests.clone(),
        );
        registry.register(
            "nimbus_proxmox_request_duration_seconds",
            "Time from sending a Proxmox request to its answer's headers",
            latency.clone(),
        );
        Arc::new(ProxmoxCalls { requests, latency })
    }
}

impl CallObserver for ProxmoxCalls {
    fn observe(&self, call: &ObservedCall<'_>) {
        let status = call.status.map(|s| s.to_string()).unwrap_or_else(|| "none".to_owned());
        let (method, path) = (call.method.as_str().to_owned(), call.path.to_owned());
        self.requests.get_or_create(&CallLabels { method: method.clone(), path: path.clone(), status }).inc();
        self.latency.get_or_create(&CallLatencyLabels { method, path }).observe(call.elapsed.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use reqwest::Method;

    use super::*;

    #[test]
    fn proxmox_calls_are_counted_by_template_and_status() {
        let mut registry = Registry::default();
        let calls = ProxmoxCalls::register(&mut registry);
        let get = Method::GET;
        for status in [Some(200), Some(200), Some(500), None] {
            calls.observe(&ObservedCall {
                method: &get,
                path: "/nodes/{node}/qemu/{vmid}/status/current",
                status,
                elapsed: Duration::from_millis(30),
            });
        }
        let text = encode(&registry);
        let series = |status: &str| {
            format!(
                "nimbus_proxmox_requests_total{{method=\"GET\",path=\"/nodes/{{node}}/qemu/{{vmid}}/status/current\",status=\"{status}\"}}"
            )
        };
        assert!(text.contains(&format!("{} 2", series("200"))), "{text}");
        assert!(text.contains(&format!("{} 1", series("500"))), "{text}");
        assert!(text.contains(&format!("{} 1", series("none"))), "{text}");
        assert!(
            text.contains(
                "nimbus_proxmox_request_duration_seconds_count{method=\"GET\",path=\"/nodes/{node}/qemu/{vmid}/status/current\"} 4"
            ),
            "{text}"
        );
    }
}
