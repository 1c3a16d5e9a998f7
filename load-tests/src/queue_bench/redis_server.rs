//! A private `redis-server` on a free loopback port, without persistence, stopped on drop.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A running private Redis.
pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
}

impl RedisServer {
    /// Starts `redis-server` daemonised on a free port and waits until it answers.
    pub async fn start() -> anyhow::Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = std::env::temp_dir().join(format!("nimbus-queue-bench-{port}"));
        std::fs::create_dir_all(&dir)?;
        let status = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "yes", "--dir"])
            .arg(&dir)
            .args(["--logfile", "redis.log"])
            .status()
            .context("redis-server not found: apt-get install redis-server")?;
        if !status.success() {
            bail!("redis-server exited with {status}");
        }
        let server = Self { port, dir };
        let client = redis::Client::open(server.url())?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match client.get_multiplexed_async_connection().await {
                Ok(_) => return Ok(server),
                Err(e) if Instant::now() > deadline => bail!("redis-server on port {port} does not answer: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `redis-server --version`, for the report.
    pub fn version() -> String {
        Command::new("redis-server")
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = Command::new("redis-cli").args(["-p", &self.port.to_string(), "shutdown", "nosave"]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `FLUSHALL`, so every scenario starts from an empty Redis.
pub async fn flush(url: &str) -> anyhow::Result<()> {
    let mut conn = redis::Client::open(url)?.get_multiplexed_async_connection().await?;
    redis::cmd("FLUSHALL").query_async::<()>(&mut conn).await?;
    Ok(())
}

/// Redis `used_memory` in bytes.
pub async fn used_memory(url: &str) -> anyhow::Result<u64> {
    let mut conn = redis::Client::open(url)?.get_multiplexed_async_connection().await?;
    let info: String = redis::cmd("INFO").arg("memory").query_async(&mut conn).await?;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .context("INFO memory without used_memory")
}
