//! A worker process's moving parts, wired together: one pool per queue it consumes (apalis over
//! nimbus-queue; all queues unless `WORKER_QUEUES` names fewer), the outbox relay, the lease
//! recovery tick and the reconciler of live state, all stopped by one shutdown token. On shutdown the pool stops fetching, hands unstarted messages back to Redis, and
//! waits for running jobs, which stop at their next step boundary and go back to the ledger's
//! queue without spending their attempt.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use apalis::prelude::{WorkerBuilder, WorkerBuilderExt, WorkerError};
use nimbus_jobs::{Dispatch, Queues, queues};
use nimbus_proxmox::{ClientConfig, ProxmoxClient};
use nimbus_queue::StreamsBackend;
use tokio_util::sync::CancellationToken;

use crate::backup::Backup;
use crate::billing::{self, Billing};
use crate::config::Config;
use crate::delete::Delete;
use crate::env::{Env, Settings};
use crate::events::consumer::{Consumer, ConsumerConfig};
use crate::events::relay::{EventRelay, EventRelayConfig};
use crate::events::sinks::{self, NotificationSink, WebhookSink};
use crate::node_caps::NodeCaps;
use crate::notify::Notify;
use crate::power::Power;
use crate::provision_vm::Provision;
use crate::relay::{Relay, RelayConfig};
use crate::resize::Resize;
use crate::snapshot::Snapshot;
use crate::step_machine::handle;
use crate::webhook_delivery::{Deliverer, DeliveryConfig};
use crate::{reconciler, recovery, scheduler};

/// How the loops run.
#[derive(Clone, Debug)]
pub struct RuntimeOptions {
    /// Jobs of one queue run at once by this process.
    pub concurrency: usize,
    /// Per-queue exceptions to `concurrency`.
    pub queue_concurrency: std::collections::HashMap<String, u32>,
    /// The queues consumed.
    pub queues: Vec<&'static str>,
    /// Relay settings.
    pub relay: RelayConfig,
    /// Period of the lease recovery tick.
    pub recovery_every: Duration,
    /// Period of the reconciler (`None`: off).
    pub reconcile_every: Option<Duration>,
    /// Period of the scheduler (`None`: off).
    pub schedule_every: Option<Duration>,
    /// The time schedules fire by, and webhook retries.
    pub clock: Arc<dyn nimbus_jobs::Clock>,
    /// Domain events and what reads them (`None`: off in this process).
    pub events: Option<EventsOptions>,
    /// How often the queue gauges of the metrics are read from Redis.
    pub queue_sample_every: Duration,
}

/// How domain events reach webhooks, the feed and email.
#[derive(Clone, Debug, Default)]
pub struct EventsOptions {
    /// The events relay.
    pub relay: EventRelayConfig,
    /// The consumer groups.
    pub consumer: ConsumerConfig,
    /// Webhook deliveries.
    pub delivery: DeliveryConfig,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            concurrency: 8,
            queue_concurrency: Default::default(),
            queues: queues::ALL.to_vec(),
            relay: RelayConfig::default(),
            recovery_every: Duration::from_secs(2),
            reconcile_every: Some(Duration::from_secs(5)),
            schedule_every: Some(Duration::from_secs(1)),
            clock: Arc::new(nimbus_jobs::SystemClock),
            events: Some(EventsOptions::default()),
            queue_sample_every: Duration::from_secs(5),
        }
    }
}

/// Connects everything [`Config`] names; `shutdown` becomes the env's shutdown signal.
/// Also returns the registry of the process's metrics, for its metrics listener.
pub async fn connect(
    config: &Config,
    shutdown: CancellationToken,
) -> anyhow::Result<(Arc<Env>, Queues, nimbus_telemetry::Registry)> {
    let db = nimbus_db::connect(&config.database_url, config.database_max_connections)
        .await
        .context("connecting to PostgreSQL")?;
    if nimbus_db::schema_check(&db).await.context("reading the schema's state")?.privileged {
        tracing::warn!(
            "DATABASE_URL connects as a superuser or the tables' owner, which may alter the tables and switch \
             the audit log's triggers off; connect as {} (README, \"Database roles\")",
            nimbus_db::APP_ROLE
        );
    }
    let queues = Queues::new(&config.redis_url, config.redis_key_prefix.clone()).context("REDIS_URL")?;
    let mut registry = nimbus_telemetry::Registry::default();
    let mut pve_config = ClientConfig::new(&config.pve_url, config.pve_token.clone(), config.pve_tls.clone())
        .allow_http(config.pve_allow_http)
        .observer(nimbus_telemetry::ProxmoxCalls::register(&mut registry));
    // Every worker process shares one budget of Proxmox requests per second (`PVE_RATE_LIMIT`).
    if config.pve_rate_limit > 0 {
        let cap = crate::pve_rate::ClusterRateCap::connect(
            queues.client(),
            &config.redis_key_prefix,
            config.pve_rate_limit,
            config.pve_rate_burst,
        )?;
        pve_config = pve_config.request_gate(cap);
    }
    let pve = ProxmoxClient::new(pve_config).context("configuring the Proxmox client")?;
    let settings = Settings { ip_timeout: config.ip_timeout, lease: config.lease, ..Settings::default() };
    // Permits outlive a crashed holder by at most the job lease.
    let caps = NodeCaps::with_overrides(
        queues.client(),
        &config.redis_key_prefix,
        config.node_cap,
        config.node_caps.clone(),
        settings.lease,
    )
    .await
    .context("connecting to Redis")?;
    let events = nimbus_jobs::JobEventPublisher::new(queues.client().clone(), &config.redis_key_prefix);
    let ledger = Env::ledger_writer(&db, &config.worker_name, settings.lease);
    let backup_lanes = Env::backup_lanes(queues.client(), &config.redis_key_prefix, settings.lease)
        .await
        .context("connecting to Redis")?;
    let worker_id = config.worker_name.clone();
    let mail = config.mail.as_ref().map(crate::notify::Mailer::new).transpose().context("email settings")?;
    let metrics = crate::metrics::WorkerMetrics::register(&mut registry);
    let env = Env { db, pve, caps, backup_lanes, settings, worker_id, shutdown, events, ledger, mail, metrics };
    Ok((Arc::new(env), queues, registry))
}

/// Runs a pool per queue, the relay, lease recovery, the reconciler and the scheduler until `env.shutdown` fires and every
/// running job has stopped.
pub async fn run(env: Arc<Env>, queues: Queues, options: RuntimeOptions) -> anyhow::Result<()> {
    let shutdown = env.shutdown.clone();
    let relay = tokio::spawn(Relay::new(env.db.clone(), queues.clone(), options.relay.clone()).run(shutdown.clone()));
    let recovery = tokio::spawn(recovery::run(env.db.clone(), options.recovery_every, shutdown.clone()));
    let sampler = tokio::spawn(env.metrics.clone().sample_queues_every(
        queues.clone(),
        options.queue_sample_every,
        shutdown.clone(),
    ));
    let reconciler =
        options.reconcile_every.map(|every| tokio::spawn(reconciler::run((*env).clone(), every, shutdown.clone())));
    if options.schedule_every.is_some()
        && let Err(e) = billing::ensure_schedules(&env.db, options.clock.now()).await
    {
        // The next start tries again; meanwhile nothing is metered, and catch-up covers it.
        tracing::warn!(error = %e, "the billing schedules could not be created");
    }
    let scheduler = options.schedule_every.map(|every| {
        tokio::spawn(scheduler::run(
            env.db.clone(),
            queues.clone(),
            options.clock.clone(),
            every,
            shutdown.clone(),
            env.metrics.clone(),
        ))
    });
    let event_tasks = match &options.events {
        Some(events) => start_events(&env, &queues, events, options.clock.clone()).await,
        None => Vec::new(),
    };
    let pools: Vec<_> = options
        .queues
        .iter()
        .map(|&name| {
            let concurrency =
                options.queue_concurrency.get(name).map(|n| *n as usize).unwrap_or(options.concurrency).max(1);
            tokio::spawn(pool(env.clone(), queues.clone(), name, concurrency))
        })
        .collect();
    let mut failed = None;
    for (name, joined) in options.queues.iter().zip(pools) {
        match joined.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed = Some(anyhow::anyhow!("{name} pool: {e}")),
            Err(e) => failed = Some(anyhow::anyhow!("{name} pool panicked: {e}")),
        }
    }
    let _ = relay.await;
    let _ = recovery.await;
    let _ = sampler.await;
    for task in [reconciler, scheduler].into_iter().flatten().chain(event_tasks) {
        let _ = task.await;
    }
    failed.map_or(Ok(()), Err)
}

/// Runs queue `name`'s pool (its handler by the queue's job kinds) until shutdown.
async fn pool(env: Arc<Env>, queues: Queues, name: &'static str, concurrency: usize) -> Result<(), WorkerError> {
    let shutdown = env.shutdown.clone();
    let queue = loop {
        match queues.queue(name).await {
            Ok(q) => break q,
            Err(e) => {
                tracing::warn!(queue = name, error = %e, "Redis unavailable; the pool waits for it");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    let builder = WorkerBuilder::new(format!("{}-{name}", env.worker_id))
        // A worker takes only what it can start: the rest of a backlog stays for the others.
        .backend(StreamsBackend::<Dispatch>::new(queue).fetch_count(concurrency))
        .concurrency(concurrency)
        .data(env.clone());
    let stop = async move {
        shutdown.cancelled().await;
        Ok::<(), std::io::Error>(())
    };
    // Provision and rebuild share one step machine; each other queue has its own.
    match name {
        queues::PROVISION | queues::REBUILD => builder.build(handle::<Provision>).run_until(stop).await,
        queues::POWER => builder.build(handle::<Power>).run_until(stop).await,
        queues::RESIZE => builder.build(handle::<Resize>).run_until(stop).await,
        queues::DELETE => builder.build(handle::<Delete>).run_until(stop).await,
        queues::SNAPSHOT => builder.build(handle::<Snapshot>).run_until(stop).await,
        queues::BACKUP => builder.build(handle::<Backup>).run_until(stop).await,
        queues::BILLING => builder.build(handle::<Billing>).run_until(stop).await,
        queues::NOTIFY => builder.build(handle::<Notify>).run_until(stop).await,
        other => {
            tracing::error!(queue = other, "no handler for this queue");
            Ok(())
        }
    }
}

/// Starts the events relay, the two consumer groups and the webhook deliverer; without Redis
/// (or a bad setting) logs why and starts none: jobs still run, and the events wait in Postgres.
async fn start_events(
    env: &Arc<Env>,
    queues: &Queues,
    options: &EventsOptions,
    clock: Arc<dyn nimbus_jobs::Clock>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let shutdown = env.shutdown.clone();
    let prefix = queues.key_prefix().to_owned();
    let redis = match queues.client().get_connection_manager().await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "Redis unavailable: domain events are not relayed by this process");
            return Vec::new();
        }
    };
    let deliverer =
        match Deliverer::new(env.db.clone(), redis.clone(), &prefix, clock.clone(), options.delivery.clone()) {
            Ok(d) => Arc::new(d.with_metrics(env.metrics.clone())),
            Err(e) => {
                tracing::error!(error = %e, "webhook deliveries cannot start");
                return Vec::new();
            }
        };
    let (fresh_tx, fresh_rx) = tokio::sync::mpsc::channel(crate::webhook_delivery::FRESH_BATCHES);
    let stream = crate::events::stream_key(&prefix);
    let relay = EventRelay::new(env.db.clone(), redis, &prefix, options.relay.clone());
    let webhooks = Consumer::new(
        queues.client().clone(),
        stream.clone(),
        sinks::WEBHOOKS,
        env.worker_id.clone(),
        WebhookSink::new(env.db.clone(), clock, deliverer.lease(), fresh_tx),
        crate::webhook_delivery::consumer_config(&deliverer, options.consumer.clone()),
    );
    let notifications = Consumer::new(
        queues.client().clone(),
        stream,
        sinks::NOTIFICATIONS,
        env.worker_id.clone(),
        NotificationSink::new(env.db.clone(), env.events.clone(), env.mail.is_some()),
        options.consumer.clone(),
    );
    vec![
        tokio::spawn(relay.run(shutdown.clone())),
        tokio::spawn(webhooks.run(shutdown.clone())),
        tokio::spawn(notifications.run(shutdown.clone())),
        tokio::spawn(deliverer.run(fresh_rx, shutdown)),
    ]
}
