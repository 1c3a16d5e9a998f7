//! What the API and the workers tell their operators besides their answers: Prometheus metrics
//! ([`metrics`]), logs ([`logs`]) and traces ([`traces`]).

pub mod logs;
pub mod metrics;
pub mod traces;

pub use metrics::{CONTENT_TYPE, ProxmoxCalls, bind, duration_buckets, encode, latency_buckets, router, serve};
pub use prometheus_client;
pub use prometheus_client::registry::Registry;
