//! The API's request metrics (README, "Metrics"), served on the metrics listener
//! (`METRICS_LISTEN`, `nimbus_telemetry::serve`), never on the public one.
//!
//! * `nimbus_http_requests_total{route,method,status}`: `route` is the route's template
//!   (`/v1/vms/{id}`), so ids make no series; a path that matched no route is `unmatched`.
//! * `nimbus_http_request_duration_seconds{route,method}`: until the answer's headers (a stream's
//!   body is not counted: see the next).
//! * `nimbus_http_requests_in_flight`, `nimbus_sse_streams_open{stream}`.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use nimbus_telemetry::Registry;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use crate::state::AppState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabels {
    stream: String,
}

/// What the API measures of its requests.
#[derive(Debug)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteLabels, Histogram>,
    in_flight: Gauge,
    streams: Family<StreamLabels, Gauge>,
}

impl HttpMetrics {
    /// Registers the request metrics in `registry`.
    pub fn register(registry: &mut Registry) -> Arc<HttpMetrics> {
        let metrics = HttpMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| Histogram::new(nimbus_telemetry::latency_buckets())),
            in_flight: Gauge::default(),
            streams: Family::default(),
        };
        registry.register(
            "nimbus_http_requests",
            "Requests answered, by route template, method and status",
            metrics.requests.clone(),
        );
        registry.register(
            "nimbus_http_request_duration_seconds",
            "Time to answer a request's headers, by route template and method",
            metrics.duration.clone(),
        );
        registry.register("nimbus_http_requests_in_flight", "Requests being handled", metrics.in_flight.clone());
        registry.register(
            "nimbus_sse_streams_open",
            "Server-Sent Event streams open, by stream (jobs, instances, notifications)",
            metrics.streams.clone(),
        );
        Arc::new(metrics)
    }

    /// Metrics that nobody serves (a state built without a registry).
    pub fn unserved() -> Arc<HttpMetrics> {
        Self::register(&mut Registry::default())
    }

    /// Counts a stream of `stream` open until the guard is dropped (with the stream's body).
    pub fn stream_opened(&self, stream: &str) -> StreamGuard {
        let gauge = self.streams.get_or_create(&StreamLabels { stream: stream.to_owned() }).clone();
        gauge.inc();
        StreamGuard(gauge)
    }
}

/// An open stream, counted until dropped.
#[derive(Debug)]
pub struct StreamGuard(Gauge);

impl StreamGuard {
    /// `stream`, counted as open for as long as it lives.
    pub fn around<S: futures::Stream>(self, stream: S) -> impl futures::Stream<Item = S::Item> {
        use futures::StreamExt;
        stream.map(move |item| {
            let _open = &self;
            item
        })
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A request in flight, counted until dropped (also when the client goes away mid-request).
struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The middleware: counts and times every request by its route's template.
pub async fn layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let metrics = state.http_metrics();
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    metrics.in_flight.inc();
    let in_flight = InFlight(metrics.in_flight.clone());
    let started = Instant::now();
    let response = next.run(request).await;
    drop(in_flight);
    let route = route.unwrap_or_else(|| "unmatched".to_owned());
    let status = response.status().as_u16().to_string();
    metrics.requests.get_or_create(&RequestLabels { route: route.clone(), method: method.clone(), status }).inc();
    metrics.duration.get_or_create(&RouteLabels { route, method }).observe(started.elapsed().as_secs_f64());
    response
}
