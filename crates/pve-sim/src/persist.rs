//! The state file: the cluster and the TLS certificate as JSON, loaded at start and written
//! (atomically, debounced) whenever the state changed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::model::Cluster;
use crate::sim::Sim;
use crate::tls::CertBundle;

/// Version of the file layout.
const VERSION: u32 = 1;

/// What the state file holds.
#[derive(Serialize, Deserialize)]
pub struct StateFile {
    pub version: u32,
    pub cert: Option<CertBundle>,
    pub cluster: Cluster,
}

#[derive(Serialize)]
struct StateFileRef<'a> {
    version: u32,
    cert: Option<&'a CertBundle>,
    cluster: &'a Cluster,
}

/// Loads a state file; `Ok(None)` when it does not exist.
pub fn load(path: &Path) -> anyhow::Result<Option<StateFile>> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let file: StateFile = serde_json::from_slice(&data).with_context(|| format!("parsing {}", path.display()))?;
    anyhow::ensure!(file.version == VERSION, "unsupported state file version {}", file.version);
    Ok(Some(file))
}

/// Writes the current state (temp file + rename, so a crash never leaves half a file).
pub fn save(sim: &Sim, path: &Path) -> anyhow::Result<()> {
    let data = {
        let st = sim.read();
        serde_json::to_vec(&StateFileRef { version: VERSION, cert: sim.cert.as_ref(), cluster: &st })?
    };
    let tmp = tmp_path(path);
    std::fs::write(&tmp, &data).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Saves whenever the generation moved, at most every `interval`, until `stop` fires; then
/// saves a last time.
pub async fn writer(sim: Arc<Sim>, path: PathBuf, interval: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut saved = 0u64;
    loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep(interval) => false,
            _ = stop.changed() => true,
        };
        let generation = sim.generation();
        if generation != saved {
            let (s, p) = (sim.clone(), path.clone());
            match tokio::task::spawn_blocking(move || save(&s, &p)).await {
                Ok(Ok(())) => saved = generation,
                Ok(Err(e)) => tracing::warn!(error = %e, "saving the state file failed"),
                Err(e) => tracing::warn!(error = %e, "state writer panicked"),
            }
        }
        if stopping {
            break;
        }
    }
}
