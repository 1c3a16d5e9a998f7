//! The steady load: creates sent at a fixed rate (open loop: a slow or refusing API does not slow
//! the sender down), each answered 202 (owed: its job must end and its effect exist exactly once)
//! or refused (5xx, connection error, timeout: the client knows it was not taken).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::rng::Rng;

const SSH_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBlx2uMl6O7otZxx5t83ZWNSS+gqAj3/2gOtI6dRPT+R chaos@host";

/// One kind of job the soak asks for: a request that answers 202 with a job handle. Another job
/// kind is one more entry in [`KINDS`] (and, if its effect is not a guest, a check in `audit`).
pub struct Kind {
    pub name: &'static str,
    /// Relative share of the requests.
    pub weight: u32,
    /// Whether a succeeded job leaves exactly one guest for its instance.
    pub creates_guest: bool,
    /// Method, path and body of one request; `name` is unique to it (a DNS label, usable as an
    /// instance name).
    pub request: fn(name: &str) -> (reqwest::Method, &'static str, Value),
}

pub const KINDS: &[Kind] = &[
    Kind {
        name: "provision-qemu",
        weight: 3,
        creates_guest: true,
        request: |name| {
            let body = json!({"name": name, "type": "qemu", "template": "debian-12-cloudinit",
                "cores": 1, "memory": 256, "disk": 4, "sshKeys": [SSH_KEY]});
            (reqwest::Method::POST, "/v1/vms", body)
        },
    },
    Kind {
        name: "provision-lxc",
        weight: 1,
        creates_guest: true,
        request: |name| {
            let body = json!({"name": name, "type": "lxc", "template": "debian-12-standard",
                "cores": 1, "memory": 256, "disk": 2, "sshKeys": [SSH_KEY]});
            (reqwest::Method::POST, "/v1/vms", body)
        },
    },
];

/// What became of one request.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// 202 with this job and instance.
    Accepted { job_id: String, instance_id: Option<String> },
    /// 5xx (the server said it did not take it).
    Refused5xx(u16),
    /// 429 (the soak lifts the rate limit, so these should not happen).
    RateLimited,
    /// No answer: connection refused or reset.
    Connection,
    /// No answer in time: it may or may not have been taken (not owed, but not forgotten:
    /// the audit checks every job in the database, owed or not).
    Timeout,
    /// Any other answer (a 4xx, a 2xx without a job): unexpected, reported.
    Unexpected(u16, String),
}

#[derive(Clone, Debug)]
pub struct Sent {
    pub seq: usize,
    pub kind: &'static str,
    pub name: String,
    pub outcome: Outcome,
}

/// Seconds since the epoch (the database's clock is the same machine's).
pub fn epoch_now() -> f64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// Running totals, for the progress lines printed while the soak runs.
#[derive(Default)]
pub struct Tally {
    pub sent: AtomicUsize,
    pub accepted: AtomicUsize,
    pub refused: AtomicUsize,
}

impl Tally {
    pub fn line(&self) -> String {
        let get = |a: &AtomicUsize| a.load(Ordering::Relaxed);
        format!("sent {}, accepted {}, refused {}", get(&self.sent), get(&self.accepted), get(&self.refused))
    }
}

/// Sends `rate` requests per second for `duration`; at most `max_in_flight` wait for answers at
/// once (beyond that a tick is skipped and counted, so a hung API cannot pile up requests).
#[allow(clippy::too_many_arguments)]
pub async fn run(
    base: &str,
    api_key: &str,
    rate: f64,
    duration: Duration,
    max_in_flight: usize,
    mut rng: Rng,
    prefix: &str,
    tally: Arc<Tally>,
) -> anyhow::Result<(Vec<Sent>, usize)> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(15)).pool_max_idle_per_host(64).build()?;
    let results = Arc::new(Mutex::new(Vec::new()));
    let in_flight = Arc::new(tokio::sync::Semaphore::new(max_in_flight));
    let total_weight: u32 = KINDS.iter().map(|k| k.weight).sum();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let end = Instant::now() + duration;
    let mut skipped = 0usize;
    let mut handles = Vec::new();
    let mut seq = 0usize;
    while Instant::now() < end {
        ticker.tick().await;
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            skipped += 1;
            continue;
        };
        let mut pick = (rng.next_u64() % u64::from(total_weight)) as u32;
        let kind = KINDS
            .iter()
            .find(|k| {
                if pick < k.weight {
                    true
                } else {
                    pick -= k.weight;
                    false
                }
            })
            .expect("weights add up");
        let name = format!("{prefix}-{seq}");
        let (method, path, body) = (kind.request)(&name);
        let req = http.request(method, format!("{base}{path}")).bearer_auth(api_key).json(&body);
        let results = results.clone();
        let tally = tally.clone();
        let this = seq;
        seq += 1;
        handles.push(tokio::spawn(async move {
            tally.sent.fetch_add(1, Ordering::Relaxed);
            let outcome = outcome_of(req.send().await).await;
            drop(permit);
            match outcome {
                Outcome::Accepted { .. } => tally.accepted.fetch_add(1, Ordering::Relaxed),
                _ => tally.refused.fetch_add(1, Ordering::Relaxed),
            };
            results.lock().await.push(Sent { seq: this, kind: kind.name, name, outcome });
        }));
    }
    for h in handles {
        h.await?;
    }
    let mut sent = std::mem::take(&mut *results.lock().await);
    sent.sort_by_key(|s| s.seq);
    Ok((sent, skipped))
}

async fn outcome_of(answer: reqwest::Result<reqwest::Response>) -> Outcome {
    let resp = match answer {
        Ok(r) => r,
        Err(e) if e.is_timeout() => return Outcome::Timeout,
        Err(_) => return Outcome::Connection,
    };
    let status = resp.status().as_u16();
    let body: Result<Value, _> = resp.json().await;
    match (status, body) {
        (202, Ok(v)) => {
            let job = &v["data"];
            match job["id"].as_str() {
                Some(id) => {
                    let instance = job["resources"].as_array().and_then(|rs| {
                        rs.iter().find(|r| r["type"] == "instance").and_then(|r| r["id"].as_str()).map(str::to_owned)
                    });
                    Outcome::Accepted { job_id: id.to_owned(), instance_id: instance }
                }
                None => Outcome::Unexpected(202, v.to_string()),
            }
        }
        // A 202 whose body never arrived: the job exists but the client cannot name it. The
        // audit still finds it in the database (it checks every job).
        (202, Err(e)) => Outcome::Unexpected(202, format!("body unreadable: {e}")),
        (429, _) => Outcome::RateLimited,
        (s, _) if s >= 500 => Outcome::Refused5xx(s),
        (s, Ok(v)) => Outcome::Unexpected(s, v["error"]["code"].as_str().unwrap_or("").to_owned()),
        (s, Err(_)) => Outcome::Unexpected(s, String::new()),
    }
}
