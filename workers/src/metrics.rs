//! What a worker process measures (README, "Metrics"), served on its metrics listener
//! (`METRICS_LISTEN`, `nimbus_telemetry::serve`).
//!
//! * Jobs: `nimbus_jobs_total{kind,outcome}` (outcome `succeeded`, `failed` for good, `retried`,
//!   `waiting`, `released` at shutdown, `lease_lost`) and `nimbus_job_duration_seconds{kind,outcome}`,
//!   one observation per attempt, from the claim to the ledger's record of its end.
//! * Queues, sampled every few seconds from Redis (the same for every process: aggregate with
//!   `max`): `nimbus_queue_waiting{queue}` (the consumer group's lag), `nimbus_queue_in_flight`,
//!   `nimbus_queue_delayed` (retries and delayed jobs), `nimbus_queue_dead`, and
//!   `nimbus_queue_oldest_waiting_seconds`.
//! * `nimbus_node_cap_waits_total{node}` and `nimbus_node_cap_wait_seconds`: steps that waited
//!   for a node's concurrency cap, and for how long.
//! * `nimbus_scheduler_fires_total`: jobs started by schedules (this process's ticks).
//! * `nimbus_webhook_attempts_total{outcome}`: `delivered`, `failed`, `gone`.
//! * Proxmox calls: `nimbus_telemetry::ProxmoxCalls`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nimbus_jobs::Queues;
use nimbus_telemetry::Registry;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use tokio_util::sync::CancellationToken;

use crate::step_machine::Outcome;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    kind: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

/// A worker process's metrics.
#[derive(Debug)]
pub struct WorkerMetrics {
    jobs: Family<JobLabels, Counter>,
    job_duration: Family<JobLabels, Histogram>,
    waiting: Family<QueueLabels, Gauge>,
    in_flight: Family<QueueLabels, Gauge>,
    delayed: Family<QueueLabels, Gauge>,
    dead: Family<QueueLabels, Gauge>,
    oldest_waiting: Family<QueueLabels, Gauge>,
    node_cap_waits: Family<NodeLabels, Counter>,
    node_cap_wait: Histogram,
    scheduler_fires: Counter,
    webhook_attempts: Family<OutcomeLabels, Counter>,
}

impl WorkerMetrics {
    /// Registers the worker's metrics in `registry`.
    pub fn register(registry: &mut Registry) -> Arc<WorkerMetrics> {
        let m = WorkerMetrics {
            jobs: Family::default(),
            job_duration: Family::new_with_constructor(|| Histogram::new(nimbus_telemetry::duration_buckets())),
            waiting: Family::default(),
            in_flight: Family::default(),
            delayed: Family::default(),
            dead: Family::default(),
            oldest_waiting: Family::default(),
            node_cap_waits: Family::default(),
            node_cap_wait: Histogram::new(nimbus_telemetry::duration_buckets()),
            scheduler_fires: Counter::default(),
            webhook_attempts: Family::default(),
        };
        registry.register("nimbus_jobs", "Job attempts ended, by kind and outcome", m.jobs.clone());
        registry.register(
            "nimbus_job_duration_seconds",
            "Time of a job attempt from its claim to its recorded end, by kind and outcome",
            m.job_duration.clone(),
        );
        registry.register(
            "nimbus_queue_waiting",
            "Messages not yet delivered to a worker (the consumer group's lag)",
            m.waiting.clone(),
        );
        registry.register("nimbus_queue_in_flight", "Messages delivered and not yet acknowledged", m.in_flight.clone());
        registry.register("nimbus_queue_delayed", "Retries and delayed jobs waiting for their time", m.delayed.clone());
        registry.register("nimbus_queue_dead", "Messages in the queue's dead stream", m.dead.clone());
        registry.register(
            "nimbus_queue_oldest_waiting_seconds",
            "Age of the oldest message not yet delivered (0: none waits)",
            m.oldest_waiting.clone(),
        );
        registry.register(
            "nimbus_node_cap_waits",
            "Steps that waited for a node's concurrency cap, by node",
            m.node_cap_waits.clone(),
        );
        registry.register(
            "nimbus_node_cap_wait_seconds",
            "How long steps waited for a node's concurrency cap",
            m.node_cap_wait.clone(),
        );
        registry.register("nimbus_scheduler_fires", "Jobs started by schedules", m.scheduler_fires.clone());
        registry.register(
            "nimbus_webhook_attempts",
            "Webhook delivery attempts, by outcome (delivered, failed, gone)",
            m.webhook_attempts.clone(),
        );
        Arc::new(m)
    }

    /// Metrics that nobody serves (tests, benchmarks).
    pub fn unserved() -> Arc<WorkerMetrics> {
        Self::register(&mut Registry::default())
    }

    /// A job attempt of `kind` ended with `outcome` after `took`.
    pub fn job_ended(&self, kind: &str, outcome: &Outcome, took: Duration) {
        let outcome = match outcome {
            Outcome::NotClaimed => return,
            Outcome::Succeeded => "succeeded",
            Outcome::RetryScheduled(_) => "retried",
            Outcome::Failed(_) => "failed",
            Outcome::Released => "released",
            Outcome::Waiting(_) => "waiting",
            Outcome::LeaseLost => "lease_lost",
        };
        let labels = JobLabels { kind: kind.to_owned(), outcome: outcome.to_owned() };
        self.jobs.get_or_create(&labels).inc();
        self.job_duration.get_or_create(&labels).observe(took.as_secs_f64());
    }

    /// A step waited `waited` for a permit of `node`.
    pub fn node_cap_waited(&self, node: &str, waited: Duration) {
        self.node_cap_waits.get_or_create(&NodeLabels { node: node.to_owned() }).inc();
        self.node_cap_wait.observe(waited.as_secs_f64());
    }

    /// Schedules started `jobs` jobs.
    pub fn schedules_fired(&self, jobs: usize) {
        self.scheduler_fires.inc_by(jobs as u64);
    }

    /// A webhook attempt ended (`delivered`, `failed` or `gone`).
    pub fn webhook_attempt(&self, outcome: &str) {
        self.webhook_attempts.get_or_create(&OutcomeLabels { outcome: outcome.to_owned() }).inc();
    }

    /// Reads each of `names`' queue state from Redis into the queue gauges.
    pub async fn sample_queues(&self, queues: &Queues, names: &[&str]) {
        for name in names {
            let queue = match queues.queue(name).await {
                Ok(q) => q,
                Err(e) => {
                    tracing::debug!(queue = name, error = %e, "queue metrics not sampled");
                    continue;
                }
            };
            let (Ok(stats), Ok(horizon)) = (queue.stats().await, queue.horizon(1).await) else {
                tracing::debug!(queue = name, "queue metrics not sampled: Redis did not answer");
                continue;
            };
            let labels = QueueLabels { queue: (*name).to_owned() };
            let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
            let oldest = if stats.waiting > 0 { now_ms.saturating_sub(horizon.since_ms) / 1000 } else { 0 };
            self.waiting.get_or_create(&labels).set(stats.waiting as i64);
            self.in_flight.get_or_create(&labels).set(stats.inflight as i64);
            self.delayed.get_or_create(&labels).set(stats.delayed as i64);
            self.dead.get_or_create(&labels).set(stats.dead as i64);
            self.oldest_waiting.get_or_create(&labels).set(oldest as i64);
        }
    }

    /// Samples every queue each `every` until `shutdown`.
    pub async fn sample_queues_every(self: Arc<Self>, queues: Queues, every: Duration, shutdown: CancellationToken) {
        loop {
            self.sample_queues(&queues, nimbus_jobs::queues::ALL).await;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }
}
