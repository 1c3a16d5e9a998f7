//! `nimbus-testkit`: fixtures on the real services started by `infra/scripts/services.sh`
//! (`make test` starts them and exports the variables):
//!
//! * [`TestDb`]: a fresh PostgreSQL database per test, created from a template database that is
//!   migrated once per migration set (an advisory lock makes parallel test processes wait for the
//!   one that migrates), dropped when the test ends. [`TestDb::pool`] connects as the superuser
//!   (fixtures, and what no running process could do); [`TestDb::app_pool`] as the runtime role
//!   `nimbus_app`, as the API and the workers connect in production.
//! * [`TestRedis`]: the test Redis with a key prefix of its own, whose keys are deleted when the
//!   test ends.
//!
//! ```no_run
//! # async fn demo() {
//! let db = nimbus_testkit::TestDb::new().await;
//! let one: i32 = sqlx::query_scalar("select 1").fetch_one(db.pool()).await.unwrap();
//! # }
//! ```

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool};
use tokio::sync::OnceCell;

/// Superuser URL of the test cluster's maintenance database.
pub const DATABASE_URL_VAR: &str = "NIMBUS_TEST_DATABASE_URL";
/// The runtime role `nimbus_app` on the test cluster's maintenance database (the role is
/// cluster-wide; each test's pool swaps in its own database).
pub const APP_DATABASE_URL_VAR: &str = "NIMBUS_TEST_APP_DATABASE_URL";
/// URL of the test Redis.
pub const REDIS_URL_VAR: &str = "NIMBUS_TEST_REDIS_URL";

fn required_env(var: &str) -> String {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{var} is not set. Run the tests with `make test`, which starts PostgreSQL and Redis, \
             or start them yourself: `eval \"$(infra/scripts/services.sh start /tmp/nimbus-svc)\"`"
        ),
    }
}

/// The URL of database `name` on the same server as `admin_url`.
fn database_url(admin_url: &str, name: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (admin_url, None),
    };
    // postgres://user@host:port/dbname: replace the path after the authority.
    let after_scheme = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[after_scheme..].find('/') {
        Some(slash) => &base[..after_scheme + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// The template's name: a hash of the migrations' versions and checksums, so changing a
/// migration yields a new template instead of reusing a stale one.
fn template_name() -> String {
    // FNV-1a: stable across runs and processes, unlike `DefaultHasher`.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for m in nimbus_db::MIGRATOR.iter() {
        eat(&m.version.to_le_bytes());
        eat(&m.checksum);
    }
    format!("nimbus_template_{h:016x}")
}

static TEMPLATE: OnceCell<String> = OnceCell::const_new();

async fn ensure_template(admin_url: &str) -> String {
    TEMPLATE
        .get_or_init(|| async {
            let name = template_name();
            let mut admin = connect(admin_url).await;
            // Only one process migrates; the others wait here and then find the template.
            sqlx::query("select pg_advisory_lock(hashtext('nimbus-testkit-template'))")
                .execute(&mut admin)
                .await
                .expect("advisory lock for the template database");
            let exists: bool = sqlx::query_scalar("select exists (select 1 from pg_database where datname = $1)")
                .bind(&name)
                .fetch_one(&mut admin)
                .await
                .expect("look up the template database");
            if !exists {
                // Build under a temporary name and rename when complete, so a crash halfway
                // never leaves a half-migrated template behind under the real name.
                let building = format!("{name}_building");
                exec(&mut admin, format!("drop database if exists \"{building}\" with (force)")).await;
                exec(&mut admin, format!("create database \"{building}\"")).await;
                let mut conn = connect(&database_url(admin_url, &building)).await;
                nimbus_db::MIGRATOR
                    .run(&mut conn)
                    .await
                    .unwrap_or_else(|e| panic!("migrating the template database failed: {e}"));
                conn.close().await.ok();
                exec(&mut admin, format!("alter database \"{building}\" rename to \"{name}\"")).await;
                exec(&mut admin, format!("alter database \"{name}\" is_template true")).await;
            }
            sqlx::query("select pg_advisory_unlock(hashtext('nimbus-testkit-template'))")
                .execute(&mut admin)
                .await
                .expect("advisory unlock");
            admin.close().await.ok();
            name
        })
        .await
        .clone()
}

async fn connect(url: &str) -> PgConnection {
    let options: PgConnectOptions = url.parse().unwrap_or_else(|e| panic!("bad database URL {url:?}: {e}"));
    PgConnection::connect_with(&options).await.unwrap_or_else(|e| {
        panic!("cannot connect to {url}: {e} (are the test services running? `make test` starts them)")
    })
}

async fn exec(conn: &mut PgConnection, sql: String) {
    sqlx::query(AssertSqlSafe(sql.clone())).execute(conn).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// A migrated database of its own for one test, dropped (best effort) when dropped.
pub struct TestDb {
    name: String,
    url: String,
    admin_url: String,
    pool: PgPool,
    /// The runtime role's URL and pool, when `NIMBUS_TEST_APP_DATABASE_URL` is set.
    app: Option<(String, PgPool)>,
}

impl TestDb {
    /// Connections in the pool of [`TestDb::pool`]; enough for the concurrency tests.
    pub const POOL_SIZE: u32 = 24;

    /// Creates `test_<uuid>` from the migrated template and connects a pool to it.
    ///
    /// Panics with a message naming `make test` when `NIMBUS_TEST_DATABASE_URL` is unset.
    pub async fn new() -> TestDb {
        let admin_url = required_env(DATABASE_URL_VAR);
        let template = ensure_template(&admin_url).await;
        let name = format!("test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = connect(&admin_url).await;
        exec(&mut admin, format!("create database \"{name}\" template \"{template}\"")).await;
        admin.close().await.ok();
        let url = database_url(&admin_url, &name);
        let pool = PgPoolOptions::new()
            .max_connections(Self::POOL_SIZE)
            .acquire_timeout(Duration::from_secs(30))
            .connect(&url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
        // Lazy: tests that never use the runtime role open no connection for it.
        let app = std::env::var(APP_DATABASE_URL_VAR).ok().filter(|v| !v.is_empty()).map(|app_admin| {
            let app_url = database_url(&app_admin, &name);
            let app_pool = PgPoolOptions::new()
                .max_connections(Self::POOL_SIZE)
                .acquire_timeout(Duration::from_secs(30))
                .connect_lazy(&app_url)
                .unwrap_or_else(|e| panic!("bad database URL in {APP_DATABASE_URL_VAR}: {e}"));
            (app_url, app_pool)
        });
        TestDb { name, url, admin_url, pool, app }
    }

    /// A pool connected to this test's database as the superuser.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A pool connected to this test's database as the runtime role `nimbus_app`: rows only, no
    /// DDL. Give it to the code under test that runs as the API or a worker.
    ///
    /// Panics with a message naming services.sh when `NIMBUS_TEST_APP_DATABASE_URL` is unset.
    pub fn app_pool(&self) -> &PgPool {
        &self.app().1
    }

    /// The URL of this test's database as the runtime role (for processes of their own).
    pub fn app_url(&self) -> &str {
        &self.app().0
    }

    fn app(&self) -> &(String, PgPool) {
        self.app.as_ref().unwrap_or_else(|| {
            panic!(
                "{APP_DATABASE_URL_VAR} is not set: start the test services with `make test` or \
                 `eval \"$(infra/scripts/services.sh start /tmp/nimbus-svc)\"` (a services folder started \
                 before the runtime role existed needs `services.sh stop` and `start` again)"
            )
        })
    }

    /// The URL of this test's database as the superuser (for processes or pools of its own).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let sql = format!("drop database if exists \"{}\" with (force)", self.name);
        let admin_url = self.admin_url.clone();
        // Drop runs inside the test's runtime, which cannot be blocked on; a short-lived thread
        // with a runtime of its own does the async work. `with (force)` ends the pool's
        // connections, so the pool does not need closing first.
        let handle = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async move {
                let Ok(options) = admin_url.parse::<PgConnectOptions>() else { return };
                if let Ok(mut conn) = PgConnection::connect_with(&options).await {
                    let _ = sqlx::query(AssertSqlSafe(sql)).execute(&mut conn).await;
                    let _ = conn.close().await;
                }
            });
        });
        let _ = handle.join();
    }
}

/// The test Redis seen through a key prefix of its own; every key under the prefix is deleted
/// when dropped.
pub struct TestRedis {
    url: String,
    prefix: String,
    client: redis::Client,
}

impl TestRedis {
    /// Checks that the test Redis answers and picks a fresh prefix `test:<uuid>:`.
    ///
    /// Panics with a message naming `make test` when `NIMBUS_TEST_REDIS_URL` is unset.
    pub async fn new() -> TestRedis {
        let url = required_env(REDIS_URL_VAR);
        let client = redis::Client::open(url.as_str()).unwrap_or_else(|e| panic!("bad Redis URL {url:?}: {e}"));
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| panic!("cannot connect to Redis at {url}: {e} (`make test` starts it)"));
        let pong: String = redis::cmd("PING").query_async(&mut conn).await.expect("Redis PING");
        assert_eq!(pong, "PONG");
        TestRedis { url, prefix: format!("test:{}:", uuid::Uuid::new_v4().simple()), client }
    }

    /// The Redis URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// This test's key prefix (ends with `:`); give it to the code under test as its namespace.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `name` under this test's prefix.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// A client for the test Redis.
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// A new multiplexed async connection.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        self.client
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| panic!("cannot connect to Redis at {}: {e}", self.url))
    }

    /// The keys currently under this test's prefix, sorted.
    pub async fn keys(&self) -> Vec<String> {
        let mut conn = self.connection().await;
        let mut keys = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}*", self.prefix))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .expect("SCAN");
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        keys.sort();
        keys
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        // The synchronous client: no runtime is needed to clean up.
        let Ok(mut conn) = self.client.get_connection() else { return };
        let pattern = format!("{}*", self.prefix);
        let mut cursor: u64 = 0;
        loop {
            let scanned: redis::RedisResult<(u64, Vec<String>)> =
                redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(1000).query(&mut conn);
            let Ok((next, batch)) = scanned else { return };
            if !batch.is_empty() {
                let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&batch).query(&mut conn);
            }
            if next == 0 {
                return;
            }
            cursor = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_replaces_only_the_database() {
        assert_eq!(
            database_url("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(
            database_url("postgres://u:p@h:1/postgres?sslmode=disable", "t2"),
            "postgres://u:p@h:1/t2?sslmode=disable"
        );
        assert_eq!(database_url("postgres://h:1", "t3"), "postgres://h:1/t3");
    }
}
