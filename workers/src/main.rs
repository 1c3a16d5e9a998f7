//! `nimbus-worker`: reads its configuration from the environment (see `config`), runs the
//! provision pool, the outbox relay and lease recovery, and shuts down gracefully on SIGTERM or
//! Ctrl-C.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use nimbus_worker::config::Config;
use nimbus_worker::runtime::{self, RuntimeOptions};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let telemetry = nimbus_telemetry::logs::init_from_env("nimbus-worker");
    let config = Config::from_env()?;
    let shutdown = CancellationToken::new();
    tokio::spawn(signal(shutdown.clone()));
    let (env, queues, registry) = runtime::connect(&config, shutdown.clone()).await?;
    if let Some(address) = config.metrics_listen {
        let listener =
            nimbus_telemetry::bind(address).await.map_err(|e| anyhow::anyhow!("METRICS_LISTEN {address}: {e}"))?;
        let stop = shutdown.clone();
        tokio::spawn(nimbus_telemetry::serve(listener, std::sync::Arc::new(registry), async move {
            stop.cancelled().await
        }));
    }
    tracing::info!(worker = %env.worker_id, queues = ?config.queues, concurrency = config.concurrency, node_cap = config.node_cap, "worker started");
    let options = RuntimeOptions {
        concurrency: config.concurrency,
        queue_concurrency: config.queue_concurrency.clone(),
        queues: config.queues.clone(),
        events: config.events.then(|| runtime::EventsOptions {
            delivery: nimbus_worker::webhook_delivery::DeliveryConfig {
                allow: config.webhook_allow.clone(),
                concurrency: config.webhook_concurrency,
                ..Default::default()
            },
            ..Default::default()
        }),
        ..RuntimeOptions::default()
    };
    let ran = runtime::run(env, queues, options).await;
    tracing::info!("worker stopped");
    telemetry.shutdown().await;
    ran
}

/// Fires `shutdown` on SIGTERM or Ctrl-C.
async fn signal(shutdown: CancellationToken) {
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    tracing::info!("shutting down: running jobs stop at their next step");
    shutdown.cancel();
}
