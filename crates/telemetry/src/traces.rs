//! OpenTelemetry traces, exported by OTLP over HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set
//! (off otherwise: no exporter, no layer, nothing recorded).
//!
//! Every `tracing` span becomes an OpenTelemetry span: the API's `request`, the worker's `job`,
//! each Proxmox call. A request's trace continues into the jobs it makes through the ledger: the
//! API stores the request's W3C `traceparent` with the job ([`current_traceparent`]) and the worker
//! makes it the parent of the job's span ([`continue_trace`]), so one `POST /v1/vms` is one trace
//! from the API to the Proxmox calls of its provision.
//!
//! Settings are the standard ones: `OTEL_EXPORTER_OTLP_ENDPOINT` (the collector's base URL;
//! spans go to `<it>/v1/traces`), `OTEL_EXPORTER_OTLP_PROTOCOL` (`http/protobuf`, the default, or
//! `http/json`), `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_SERVICE_NAME` (default the process's name).

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
pub use opentelemetry_otlp::Protocol;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing_opentelemetry::{OpenTelemetryLayer, OpenTelemetrySpanExt};

/// The layer turning `tracing` spans of subscriber `S` into exported ones.
pub type TraceLayer<S> = OpenTelemetryLayer<S, SdkTracer>;

/// The exporting tracer provider; flushes what is buffered when shut down.
#[derive(Debug)]
pub struct Exporting(SdkTracerProvider);

impl Exporting {
    /// Sends the spans still buffered and stops the exporter (waiting for the export task, which
    /// runs on the runtime: not from a runtime's own thread).
    pub async fn shutdown(self) {
        let provider = self.0;
        let flushed = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if let Ok(Err(e)) = flushed {
            eprintln!("traces not flushed at exit: {e}");
        }
    }
}

/// The layer that turns `tracing` spans into exported ones, and its provider; `None` when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is unset.
pub fn layer<S>(service: &str) -> Result<Option<(TraceLayer<S>, Exporting)>, String>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    let Some(endpoint) = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok().filter(|e| !e.trim().is_empty()) else {
        return Ok(None);
    };
    let protocol = match std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL").as_deref() {
        Err(_) | Ok("") | Ok("http/protobuf") => Protocol::HttpBinary,
        Ok("http/json") => Protocol::HttpJson,
        Ok(other) => {
            return Err(format!("OTEL_EXPORTER_OTLP_PROTOCOL: {other:?} is neither http/protobuf nor http/json"));
        }
    };
    let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| service.to_owned());
    layer_to(&endpoint, protocol, &service).map(Some)
}

/// The layer exporting to the collector at `endpoint` (its base URL) as `service`.
pub fn layer_to<S>(endpoint: &str, protocol: Protocol, service: &str) -> Result<(TraceLayer<S>, Exporting), String>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(protocol)
        .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
        .build()
        .map_err(|e| format!("OTEL_EXPORTER_OTLP_ENDPOINT: {e}"))?;
    // Exported in batches from a task of the process's tokio runtime (its HTTP client needs one).
    let batches = BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio).build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(batches)
        .with_resource(Resource::builder().with_service_name(service.to_owned()).build())
        .build();
    let tracer = provider.tracer("nimbus");
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    Ok((tracing_opentelemetry::layer().with_tracer(tracer), Exporting(provider)))
}

/// The W3C `traceparent` of the current span, when traces are exported.
pub fn current_traceparent() -> Option<String> {
    let context = tracing::Span::current().context();
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` a child of the trace `traceparent` names (a job continuing its request's trace).
/// Call before `span` has children.
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent else { return };
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let parent = TraceContextPropagator::new().extract(&carrier);
    if let Err(e) = span.set_parent(parent) {
        tracing::debug!(error = %e, "the job's span could not continue its request's trace");
    }
}
