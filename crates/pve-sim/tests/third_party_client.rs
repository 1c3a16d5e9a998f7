//! A third-party client works against the simulator: `proxmoxer_flow.py` drives a
//! provisioning flow with PyPI's proxmoxer (token auth, TLS without verification). The Python
//! interpreter comes from `NIMBUS_PYTHON` (the Makefile points it at the venv that
//! `infra/scripts/install-deps.sh` creates), else `python3` when it can import proxmoxer.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

fn interpreter() -> PathBuf {
    if let Some(p) = std::env::var_os("NIMBUS_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let fallback = std::process::Command::new("python3").args(["-c", "import proxmoxer, requests"]).status();
    match fallback {
        Ok(s) if s.success() => PathBuf::from("python3"),
        _ => panic!(
            "no Python with proxmoxer: set NIMBUS_PYTHON to an interpreter that can `import proxmoxer` \
             (run `make deps` or infra/scripts/install-deps.sh, which creates .venv with proxmoxer 2.3.0)"
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxmoxer_provisioning_flow() {
    let python = interpreter();
    let sim = pve_sim::start(pve_sim::SimConfig::for_tests(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let (id, secret) = sim.token().rsplit_once('=').unwrap();
    let (user, token_name) = id.split_once('!').unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/proxmoxer_flow.py");
    let child = tokio::process::Command::new(&python)
        .arg(&script)
        .env("PVE_HOST", sim.addr().ip().to_string())
        .env("PVE_PORT", sim.addr().port().to_string())
        .env("PVE_USER", user)
        .env("PVE_TOKEN_NAME", token_name)
        .env("PVE_TOKEN_VALUE", secret)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("the proxmoxer flow finishes within 120 s")
        .expect("proxmoxer flow output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "proxmoxer flow failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status);
    assert!(stdout.contains("proxmoxer flow: OK"), "{stdout}");
    // The VM is gone and its backup stays.
    let st = sim.sim().read();
    assert!(!st.guests.contains_key(&4242));
    assert!(st.nodes["pve1"].storages["local"].volumes.keys().any(|v| v.starts_with("local:backup/vzdump-qemu-4242-")));
}
