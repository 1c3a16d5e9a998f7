//! The anchor: BullMQ (npm `bullmq`) on the same Redis, run by `load-tests/bullmq/bench.mjs`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// The folder holding `package.json` and `bench.mjs`.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("bullmq")
}

/// Installs `bullmq` into `load-tests/bullmq/node_modules` when it is missing.
pub fn ensure_installed() -> anyhow::Result<()> {
    let dir = dir();
    if dir.join("node_modules/bullmq/package.json").exists() && dir.join("node_modules/ioredis/package.json").exists() {
        return Ok(());
    }
    eprintln!("installing bullmq into {} (npm install)", dir.display());
    let status = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&dir)
        .status()
        .context("npm not found: install Node.js 20")?;
    if !status.success() {
        bail!("npm install failed in {}", dir.display());
    }
    Ok(())
}

/// The installed BullMQ version.
pub fn version() -> String {
    std::fs::read_to_string(dir().join("node_modules/bullmq/package.json"))
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|v| v["version"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// One BullMQ round: jobs/s end to end (first add to last completion).
pub fn run(port: u16, jobs: usize, concurrency: usize) -> anyhow::Result<f64> {
    let out = Command::new("node")
        .arg("bench.mjs")
        .current_dir(dir())
        .env("REDIS_PORT", port.to_string())
        .env("JOBS", jobs.to_string())
        .env("CONCURRENCY", concurrency.to_string())
        .output()
        .context("node not found")?;
    if !out.status.success() {
        bail!("bullmq bench failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().rev().find(|l| l.starts_with('{')).context("no result line from bench.mjs")?;
    let v: serde_json::Value = serde_json::from_str(line)?;
    if v["completed"].as_u64() != Some(jobs as u64) {
        bail!("bullmq completed {} of {jobs} jobs", v["completed"]);
    }
    v["jobsPerSec"].as_f64().context("jobsPerSec missing")
}
