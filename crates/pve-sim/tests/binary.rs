//! The `pve-sim` binary: starts fast, prints the token and fingerprint it serves with, applies
//! fault flags, keeps token and certificate with `--state-file`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Started {
    child: Child,
    base: String,
    auth: String,
    fingerprint: String,
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(extra: &[&str]) -> (Started, Duration) {
    let t = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pve-sim"))
        .args(["--listen", "127.0.0.1:0", "--auth-failure-delay-ms", "0", "--time-scale", "0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("binary starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut base, mut auth) = (String::new(), String::new());
    let fingerprint;
    loop {
        let line = lines.next().expect("more output").unwrap();
        if let Some(rest) = line.strip_prefix("pve-sim: simulated Proxmox VE 8.4 cluster at ") {
            base = rest.to_string();
        } else if let Some(rest) = line.strip_prefix("API token: ") {
            auth = rest.to_string();
        } else if let Some(rest) = line.strip_prefix("certificate fingerprint (SHA-256): ") {
            fingerprint = rest.to_string();
            break;
        }
    }
    (Started { child, base, auth, fingerprint }, t.elapsed())
}

#[tokio::test]
async fn starts_quickly_and_serves_the_printed_token() {
    let (s, elapsed) = start(&[
        "--token",
        "root@pam!ci=s3cr3t",
        "--node-down",
        "pve3",
        "--error-rate",
        "^GET .*/cluster/nextid$=1:503",
    ]);
    assert!(elapsed < Duration::from_secs(1), "startup took {elapsed:?}");
    assert_eq!(s.auth, "PVEAPIToken=root@pam!ci=s3cr3t");
    assert_eq!(s.fingerprint.len(), 95);
    let http = common::client();
    let get = |path: &str| http.get(format!("{}{path}", s.base)).header("Authorization", &s.auth).send();
    assert_eq!(get("/version").await.unwrap().status().as_u16(), 200);
    assert_eq!(get("/nodes/pve3/status").await.unwrap().status().as_u16(), 595);
    assert_eq!(get("/cluster/nextid").await.unwrap().status().as_u16(), 503);
}

#[tokio::test]
async fn state_file_keeps_token_and_certificate() {
    let dir = std::env::temp_dir().join(format!("pve-sim-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("state.json");
    let state_arg = state.to_str().unwrap();
    let (first, _) = start(&["--state-file", state_arg]);
    let (auth, fp) = (first.auth.clone(), first.fingerprint.clone());
    drop(first);
    let (second, _) = start(&["--state-file", state_arg]);
    assert_eq!(second.auth, auth);
    assert_eq!(second.fingerprint, fp);
    drop(second);
    let _ = std::fs::remove_dir_all(&dir);
}
