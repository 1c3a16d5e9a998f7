//! PostgreSQL and Redis started by `infra/scripts/services.sh` in a folder of their own, stopped
//! (and the folder removed) on drop, also when the benchmark fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// Services started by `services.sh start DIR`.
pub struct Services {
    dir: PathBuf,
    /// The `nimbus` database as its owner (migrations, truncation between rounds).
    pub database_url: String,
    /// The same database as the runtime role `nimbus_app`, as the workers connect.
    pub app_database_url: String,
    pub redis_url: String,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/scripts/services.sh")
}

impl Services {
    /// `services.sh start DIR [--persist]`; reads the `export NAME=value` lines it prints.
    pub fn start(dir: PathBuf, persist: bool) -> anyhow::Result<Self> {
        let mut cmd = Command::new(script());
        cmd.arg("start").arg(&dir);
        if persist {
            cmd.arg("--persist");
        }
        let out = cmd.output().context("running services.sh")?;
        if !out.status.success() {
            bail!("services.sh start failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let mut services =
            Self { dir, database_url: String::new(), app_database_url: String::new(), redis_url: String::new() };
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Some((name, value)) = line.strip_prefix("export ").and_then(|l| l.split_once('=')) else {
                continue;
            };
            let value = value.trim_matches(|c| c == '"' || c == '\'').to_owned();
            match name {
                "NIMBUS_DATABASE_URL" => services.database_url = value,
                "NIMBUS_APP_DATABASE_URL" => services.app_database_url = value,
                "NIMBUS_REDIS_URL" => services.redis_url = value,
                _ => {}
            }
        }
        if services.database_url.is_empty() || services.app_database_url.is_empty() || services.redis_url.is_empty() {
            bail!("services.sh printed no NIMBUS_DATABASE_URL / NIMBUS_APP_DATABASE_URL / NIMBUS_REDIS_URL");
        }
        Ok(services)
    }

    /// The Redis port (BullMQ's runner takes a port on 127.0.0.1).
    pub fn redis_port(&self) -> anyhow::Result<u16> {
        let rest = self.redis_url.strip_prefix("redis://127.0.0.1:").context("redis not on 127.0.0.1")?;
        Ok(rest.split(['/', '?']).next().unwrap_or_default().parse()?)
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        let _ = Command::new(script()).arg("stop").arg(&self.dir).output();
    }
}
