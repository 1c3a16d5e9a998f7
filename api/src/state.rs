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
    /// How often an SSE stream reads the ledger when no wake-up came (workers publish one after
    /// each change, so this only bounds the delay when a wake-up is lost).
    pub sse_poll: Duration,
    /// How long an in-flight `Idempotency-Key` is held before the same request may take it over.
    pub idempotency_lease: Duration,
    /// How long `/readyz` waits for each dependency.
    pub ready_timeout: Duration,
    /// How long the Proxmox inventory is reused.
    pub inventory_ttl: Duration,
    /// How long the push to Redis may take before the outbox relay is left to do it.
    pub push_timeout: Duration,
    /// Requests per minute per caller, trusted proxies ([`crate::ratelimit`]).
    pub rate_limit: crate::ratelimit::RateLimitSettings,
    /// How long a response waits for its audit entry to be durable ([`crate::audit`]).
    pub audit_timeout: Duration,
    /// The built portal to serve (`NIMBUS_WEB_DIST`, [`crate::routes::web`]); `None`: no portal.
    pub web_dist: Option<std::path::PathBuf>,
    /// How long what an API key authenticated to is reused (changes invalidate it at once,
    /// [`crate::auth::key_cache`]); zero looks every request up.
    pub api_key_cache_ttl: Duration,
    /// The most live API keys a user may have (`API_KEYS_PER_USER`).
    pub api_keys_per_user: u32,
    /// How often an open event stream checks that its credential still holds (a revoked key, a
    /// deactivated user or an ended session closes it within this).
    pub stream_auth_check: Duration,
    /// Who issues invoices, as printed on them.
    pub invoice_issuer: crate::invoice_html::Issuer,
    /// Stripe, when `STRIPE_SECRET_KEY` and `STRIPE_WEBHOOK_SECRET` are set.
    pub stripe: Option<crate::payments::stripe::StripeConfig>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            sse_poll: Duration::from_secs(2),
            idempotency_lease: Duration::from_secs(30),
            ready_timeout: Duration::from_secs(2),
            inventory_ttl: Inventory::DEFAULT_TTL,
            push_timeout: Dispatcher::DEFAULT_TIMEOUT,
            rate_limit: crate::ratelimit::RateLimitSettings::default(),
            audit_timeout: Duration::from_secs(5),
            web_dist: None,
            api_key_cache_ttl: Duration::from_secs(10),
            api_keys_per_user: 50,
            stream_auth_check: Duration::from_secs(2),
            invoice_issuer: crate::invoice_html::Issuer::default(),
            stripe: None,
        }
    }
}

struct Inner {
    db: PgPool,
    dispatcher: Arc<Dispatcher>,
    acceptor: crate::accept::Acceptor,
    key_cache: crate::auth::key_cache::KeyCache,
    inventory: Inventory,
    settings: Settings,
    /// The OIDC sign-in, sessions and bearer JWTs; `None`: API keys only.
    identity: Option<crate::auth::oidc::Identity>,
    rate_limiter: crate::ratelimit::RateLimiter,
    audit: crate::audit::AuditLog,
    console_tickets: crate::console::ConsoleTickets,
    /// The payment providers set up (`crate::payments`).
    payment_providers: Vec<Arc<dyn crate::payments::PaymentProvider>>,
    /// Request metrics (`crate::metrics`).
    http_metrics: Arc<crate::metrics::HttpMetrics>,
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
        let dispatcher = Arc::new(Dispatcher::new(redis_url, redis_key_prefix, settings.push_timeout)?);
        let acceptor = crate::accept::Acceptor::new(db.clone(), dispatcher.clone());
        let key_cache = crate::auth::key_cache::KeyCache::new(db.clone(), settings.api_key_cache_ttl);
        let inventory = Inventory::new(pve, settings.inventory_ttl);
        let rate_limiter =
            crate::ratelimit::RateLimiter::new(redis_url, redis_key_prefix, settings.rate_limit.clone())?;
        let audit = crate::audit::AuditLog::new(db.clone(), settings.audit_timeout);
        let console_tickets = crate::console::ConsoleTickets::new(redis_url, redis_key_prefix)?;
        let payment_providers = crate::payments::from_settings(&settings);
        Ok(AppState(Arc::new(Inner {
            db,
            dispatcher,
            acceptor,
            key_cache,
            inventory,
            settings,
            identity: None,
            rate_limiter,
            audit,
            console_tickets,
            payment_providers,
            http_metrics: crate::metrics::HttpMetrics::unserved(),
        })))
    }

    /// The payment providers set up, the first taking customers' top-ups.
    pub fn payment_providers(&self) -> &[Arc<dyn crate::payments::PaymentProvider>] {
        &self.0.payment_providers
    }

    /// Console tickets (`routes::vm_console`).
    pub fn console_tickets(&self) -> &crate::console::ConsoleTickets {
        &self.0.console_tickets
    }

    /// The Postgres pool.
    pub fn db(&self) -> &PgPool {
        &self.0.db
    }

    /// The Redis dispatcher.
    pub fn dispatcher(&self) -> &Dispatcher {
        &self.0.dispatcher
    }

    /// The group-committing writer of instance creates.
    pub fn acceptor(&self) -> &crate::accept::Acceptor {
        &self.0.acceptor
    }

    /// What API keys authenticated to, kept briefly.
    pub fn key_cache(&self) -> &crate::auth::key_cache::KeyCache {
        &self.0.key_cache
    }

    /// The per-caller rate limiter.
    pub fn rate_limiter(&self) -> &crate::ratelimit::RateLimiter {
        &self.0.rate_limiter
    }

    /// The audit log's writer.
    pub fn audit(&self) -> &crate::audit::AuditLog {
        &self.0.audit
    }

    /// The Proxmox inventory.
    pub fn inventory(&self) -> &Inventory {
        &self.0.inventory
    }

    /// The tunables.
    pub fn settings(&self) -> &Settings {
        &self.0.settings
    }

    /// Enables OIDC (sign-in, sessions, bearer JWTs). Call before the state is cloned.
    ///
    /// # Panics
    /// When the state was already shared.
    pub fn with_identity(mut self, identity: crate::auth::oidc::Identity) -> Self {
        Arc::get_mut(&mut self.0).expect("with_identity is called before the state is shared").identity =
            Some(identity);
        self
    }

    /// Records requests into `metrics` (registered in the registry the metrics listener serves).
    pub fn with_http_metrics(mut self, metrics: Arc<crate::metrics::HttpMetrics>) -> Self {
        Arc::get_mut(&mut self.0).expect("with_http_metrics is called before the state is shared").http_metrics =
            metrics;
        self
    }

    /// Request metrics.
    pub fn http_metrics(&self) -> &crate::metrics::HttpMetrics {
        &self.0.http_metrics
    }

    /// The OIDC layer, when configured.
    pub fn identity(&self) -> Option<&crate::auth::oidc::Identity> {
        self.0.identity.as_ref()
    }
}
