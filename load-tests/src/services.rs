//! Private PostgreSQL and Redis for a benchmark, from `infra/scripts/services.sh`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

/// Private Postgres and Redis in `dir`, stopped (and `dir` removed) on drop.
pub struct Services {
    /// The folder the services run in.
    pub dir: PathBuf,
    env: Vec<(String, String)>,
}

impl Services {
    fn script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/scripts/services.sh")
    }

    /// Starts them in `dir` (which must not exist); `durable`: fsync on and Redis append-only
    /// (`services.sh start --persist`).
    pub fn start(dir: &Path, durable: bool) -> anyhow::Result<Services> {
        anyhow::ensure!(!dir.exists(), "{} exists already; pick another --dir", dir.display());
        let mut cmd = Command::new(Self::script());
        cmd.arg("start").arg(dir);
        if durable {
            cmd.arg("--persist");
        }
        let out = cmd.output().context("running services.sh start")?;
        // From here on the folder is ours to stop and remove, whatever happens next.
        let mut services = Services { dir: dir.to_path_buf(), env: Vec::new() };
        anyhow::ensure!(out.status.success(), "services.sh start failed: {}", String::from_utf8_lossy(&out.stderr));
        services.env = String::from_utf8(out.stdout)?
            .lines()
            .filter_map(|l| l.strip_prefix("export ")?.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Ok(services)
    }

    /// A variable `services.sh` printed (`NIMBUS_DATABASE_URL`, `NIMBUS_REDIS_URL`, ...).
    pub fn var(&self, name: &str) -> anyhow::Result<String> {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .with_context(|| format!("services.sh printed no {name}"))
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        match Command::new(Self::script()).arg("stop").arg(&self.dir).output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!("services.sh stop failed: {}", String::from_utf8_lossy(&out.stderr)),
            Err(e) => eprintln!("services.sh stop: {e}"),
        }
    }
}
