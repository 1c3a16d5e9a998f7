//! `nimbus-api serve` runs the API; `nimbus-api migrate` applies the migrations as the tables'
//! owner; `nimbus-api bootstrap` creates the first tenant, admin and API key. Configuration comes
//! from the environment (see the table in `config.rs`).

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use nimbus_api::bootstrap::{self, Bootstrap};
use nimbus_api::{AppState, Config, Settings};
use nimbus_db::PgPool;
use nimbus_domain::PlanLimits;
use nimbus_proxmox::{ClientConfig, ProxmoxClient};

#[derive(Parser)]
#[command(name = "nimbus-api", version, about = "Nimbus HTTP API")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API on $LISTEN (migrating first when $DATABASE_MIGRATION_URL is set).
    Serve,
    /// Apply the pending migrations as the tables' owner ($DATABASE_MIGRATION_URL) and exit.
    Migrate,
    /// Create the first tenant, its admin and an API key (printed once).
    Bootstrap {
        /// Tenant name.
        #[arg(long, default_value = "Default")]
        tenant: String,
        /// The admin's email.
        #[arg(long)]
        email: String,
        /// Plan name (created if missing).
        #[arg(long, default_value = "default")]
        plan: String,
        /// Instances the plan allows.
        #[arg(long, default_value_t = 10)]
        max_instances: i32,
        /// vCPUs the plan allows.
        #[arg(long, default_value_t = 32)]
        max_vcpus: i32,
        /// Memory the plan allows, MiB.
        #[arg(long, default_value_t = 65_536)]
        max_memory_mib: i64,
        /// Disk the plan allows, GiB.
        #[arg(long, default_value_t = 1_000)]
        max_disk_gib: i64,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let telemetry = nimbus_telemetry::logs::init_from_env("nimbus-api");
    let result = match Cli::parse().command {
        Command::Serve => serve().await,
        Command::Migrate => run_migrate().await,
        Command::Bootstrap { tenant, email, plan, max_instances, max_vcpus, max_memory_mib, max_disk_gib } => {
            let limits = PlanLimits { max_instances, max_vcpus, max_memory_mib, max_disk_gib };
            run_bootstrap(Bootstrap { tenant, email, plan, limits }).await
        }
    };
    telemetry.shutdown().await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nimbus-api: {e}");
            ExitCode::FAILURE
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn serve() -> Result<(), BoxError> {
    let config = Config::from_env()?;
    let db =
        open_database(&config.database_url, config.database_migration_url.as_deref(), config.database_max_connections)
            .await?;
    let mut registry = nimbus_telemetry::Registry::default();
    let pve = ProxmoxClient::new(
        ClientConfig::new(&config.pve_url, config.pve_token.clone(), config.pve_tls.clone())
            .allow_http(config.pve_allow_http)
            .observer(nimbus_telemetry::ProxmoxCalls::register(&mut registry)),
    )?;
    let settings = Settings {
        rate_limit: nimbus_api::ratelimit::RateLimitSettings {
            per_minute: config.rate_limit_per_minute,
            auth_failures_per_minute: config.auth_failures_per_minute,
            trusted_proxies: config.trusted_proxies.clone(),
            ..Default::default()
        },
        web_dist: config.web_dist.clone(),
        invoice_issuer: config.invoice_issuer.clone(),
        stripe: config.stripe.clone(),
        api_keys_per_user: config.api_keys_per_user,
        ..Settings::default()
    };
    let mut state = AppState::new(db.clone(), &config.redis_url, &config.redis_key_prefix, pve, settings)?
        .with_http_metrics(nimbus_api::metrics::HttpMetrics::register(&mut registry));
    if let Some(oidc) = config.oidc.clone() {
        tracing::info!(oidc.issuer = %oidc.issuer, "OIDC sign-in and bearer JWTs enabled");
        let identity = nimbus_api::auth::oidc::Identity::new(oidc, db, &config.redis_url, &config.redis_key_prefix)?;
        state = state.with_identity(identity);
    }
    match nimbus_api::serve::raise_open_file_limit(config.connections.nofile_limit) {
        Ok(limit) => tracing::info!(open_files = limit, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }
    if let Some(address) = config.metrics_listen {
        let listener = nimbus_telemetry::bind(address).await.map_err(|e| format!("METRICS_LISTEN {address}: {e}"))?;
        tokio::spawn(nimbus_telemetry::serve(listener, std::sync::Arc::new(registry), std::future::pending()));
    }
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    tracing::info!(listen = %listener.local_addr()?, limits = ?config.connections, "nimbus-api serving");
    // The peer's address is the client's for rate limits and the audit log (unless it is a
    // trusted proxy, see `TRUSTED_PROXIES`).
    nimbus_api::serve::serve(listener, nimbus_api::router(state), config.connections, shutdown_signal()).await?;
    Ok(())
}

async fn run_bootstrap(b: Bootstrap) -> Result<(), BoxError> {
    let url = env_var("DATABASE_URL").ok_or("DATABASE_URL: is required")?;
    let db = open_database(&url, env_var("DATABASE_MIGRATION_URL").as_deref(), 2).await?;
    let done = bootstrap::run(&db, &b).await?;
    println!("tenant:  {}", done.tenant);
    println!("admin:   {} ({})", done.admin, b.email);
    println!("API key: {}", done.token);
    println!("Store the key now: it is not shown again.");
    Ok(())
}

async fn run_migrate() -> Result<(), BoxError> {
    let url = env_var("DATABASE_MIGRATION_URL").ok_or("DATABASE_MIGRATION_URL: is required (the tables' owner)")?;
    nimbus_db::migrate_with(&url).await?;
    println!("schema up to date ({} migrations)", nimbus_db::MIGRATOR.iter().count());
    Ok(())
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Applies pending migrations with the owner's URL when one is given, then connects to `url`
/// (the runtime role) and refuses a schema older than the code: without the owner's URL this
/// process cannot migrate, and running against missing tables would fail request by request.
async fn open_database(url: &str, migration_url: Option<&str>, max_connections: u32) -> Result<PgPool, BoxError> {
    if let Some(owner) = migration_url {
        nimbus_db::migrate_with(owner).await.map_err(|e| format!("DATABASE_MIGRATION_URL: migrating: {e}"))?;
    }
    let db = nimbus_db::connect(url, max_connections).await?;
    let check = nimbus_db::schema_check(&db).await?;
    if !check.pending.is_empty() {
        return Err(format!(
            "the database lacks the migrations {:?}: run `nimbus-api migrate` with DATABASE_MIGRATION_URL \
             (the tables' owner), or set DATABASE_MIGRATION_URL for this command",
            check.pending
        )
        .into());
    }
    if check.privileged {
        tracing::warn!(
            "DATABASE_URL connects as a superuser or the tables' owner, which may alter the tables and switch \
             the audit log's triggers off; connect as {} (README, \"Database roles\")",
            nimbus_db::APP_ROLE
        );
    }
    Ok(db)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}
