//! The state every handler shares: the Postgres pool, the Redis dispatcher, the Proxmox
//! inventory, and the tunables of the request paths. Cheap to clone.

use std::sync::Arc;
use std::time::Duration;

use nimbus_db::PgPool;
use nimbus_proxmox::ProxmoxClient;

use crate::dispatch::Dispatcher;
use crate::inventory::Inventory;

/// Tunables with production defaults; tests shorten them.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How often an SSE stream looks for new job events.
    pub sse_poll: Duration,
    /// How long an in-flight `Idempotency-Key` is held before the same request may take it over.
    pub idempotency_lease: Duration,
    /// How long `/readyz` waits for each dependency.
    pub ready_timeout: Duration,
    /// How long the Proxmox inventory is reused.
    pub inventory_ttl: Duration,
    /// How long the push to Redis may take before the outbox relay is left to do it.
    pub push_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            sse_poll: Duration::from_millis(250),
            idempotency_lease: Duration::from_secs(30),
            ready_timeout: Duration::from_secs(2),
            inventory_ttl: Inventory::DEFAULT_TTL,
            push_timeout: Dispatcher::DEFAULT_TIMEOUT,
        }
    }
}

struct Inner {
    db: PgPool,
    dispatcher: Dispatcher,
    inventory: Inventory,
    settings: Settings,
}

/// Shared state of the router.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl AppState {
    /// State over a pool, the Redis at `redis_url` (keys under `redis_key_prefix`; nothing
    /// connects until used, so the API starts and answers while Redis is down) and a Proxmox
    /// client.
    pub fn new(
        db: PgPool,
        redis_url: &str,
        redis_key_prefix: &str,
        pve: ProxmoxClient,
        settings: Settings,
    ) -> redis::RedisResult<Self> {
        let dispatcher = Dispatcher::new(redis_url, redis_key_prefix, settings.push_timeout)?;
        let inventory = Inventory::new(pve, settings.inventory_ttl);
        Ok(AppState(Arc::new(Inner { db, dispatcher, inventory, settings })))
    }

    /// The Postgres pool.
    pub fn db(&self) -> &PgPool {
        &self.0.db
    }

    /// The Redis dispatcher.
    pub fn dispatcher(&self) -> &Dispatcher {
        &self.0.dispatcher
    }

    /// The Proxmox inventory.
    pub fn inventory(&self) -> &Inventory {
        &self.0.inventory
    }

    /// The tunables.
    pub fn settings(&self) -> &Settings {
        &self.0.settings
    }
}
