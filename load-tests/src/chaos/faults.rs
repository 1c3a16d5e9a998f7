//! The fault driver: at seeded random times it breaks one part of the stack for a while and
//! repairs it. Faults of different parts may overlap (a worker dies while Proxmox stalls); two
//! faults of one part never do (the services share one lock: a PostgreSQL restart and a Redis
//! restart would both run `services.sh start`, and each would end the other's outage early).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use super::load::epoch_now;
use super::rng::Rng;
use nimbus_load_tests::stack::{Stack, Stop};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    WorkerKill,
    RedisRestart,
    RedisKill,
    RedisWipe,
    PostgresRestart,
    PostgresCrash,
    PveErrors,
    PveLatency,
    PveNodeDown,
    PveTaskFail,
}

impl FaultKind {
    pub const ALL: &[FaultKind] = &[
        FaultKind::WorkerKill,
        FaultKind::RedisRestart,
        FaultKind::RedisKill,
        FaultKind::RedisWipe,
        FaultKind::PostgresRestart,
        FaultKind::PostgresCrash,
        FaultKind::PveErrors,
        FaultKind::PveLatency,
        FaultKind::PveNodeDown,
        FaultKind::PveTaskFail,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::WorkerKill => "worker-kill",
            FaultKind::RedisRestart => "redis-restart",
            FaultKind::RedisKill => "redis-kill",
            FaultKind::RedisWipe => "redis-wipe",
            FaultKind::PostgresRestart => "postgres-restart",
            FaultKind::PostgresCrash => "postgres-crash",
            FaultKind::PveErrors => "pve-errors",
            FaultKind::PveLatency => "pve-latency",
            FaultKind::PveNodeDown => "pve-node-down",
            FaultKind::PveTaskFail => "pve-task-fail",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            FaultKind::WorkerKill => "SIGKILL of a worker, a new one started after a while",
            FaultKind::RedisRestart => "Redis shut down and started again with its data",
            FaultKind::RedisKill => "Redis SIGKILLed and started again from its append-only file",
            FaultKind::RedisWipe => "Redis stopped, its data files deleted, started empty",
            FaultKind::PostgresRestart => "PostgreSQL stopped (fast) and started again",
            FaultKind::PostgresCrash => "PostgreSQL stopped immediately (crash recovery at start)",
            FaultKind::PveErrors => "Proxmox answers 500 or 595 to a share of matching calls",
            FaultKind::PveLatency => "Proxmox answers matching calls seconds late",
            FaultKind::PveNodeDown => "a Proxmox node unreachable (595)",
            FaultKind::PveTaskFail => "the next Proxmox task of a type ends in TASK ERROR",
        }
    }

    pub fn parse(s: &str) -> Option<FaultKind> {
        FaultKind::ALL.iter().copied().find(|k| k.name() == s)
    }

    fn part(self) -> Part {
        match self {
            FaultKind::WorkerKill => Part::Worker,
            FaultKind::RedisRestart
            | FaultKind::RedisKill
            | FaultKind::RedisWipe
            | FaultKind::PostgresRestart
            | FaultKind::PostgresCrash => Part::Services,
            _ => Part::Proxmox,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Worker,
    Services,
    Proxmox,
}

/// One fault as injected: while `[start, end]` (seconds since the epoch) the part was broken.
#[derive(Clone, Debug)]
pub struct FaultRecord {
    pub kind: FaultKind,
    pub detail: String,
    pub start: f64,
    pub end: f64,
}

pub struct Driver {
    pub stack: Arc<Stack>,
    pub kinds: Vec<FaultKind>,
    pub rng: Rng,
    /// Mean time between two fault starts.
    pub every: Duration,
    /// No fault before this (the stack warms up) ...
    pub start_after: Duration,
    /// ... and every fault is repaired by this.
    pub stop_at: Instant,
}

/// Longest a single fault lasts (so none is still on at `stop_at`).
const MAX_FAULT: Duration = Duration::from_secs(15);

impl Driver {
    /// Runs until `stop_at`; returns what was injected. An error means a repair failed (a service
    /// that does not come back): the soak cannot go on.
    pub async fn run(mut self) -> anyhow::Result<Vec<FaultRecord>> {
        let records = Arc::new(Mutex::new(Vec::new()));
        let services = Arc::new(Mutex::new(()));
        let proxmox = Arc::new(Mutex::new(()));
        let slots: Vec<Arc<Mutex<()>>> = (0..self.stack.worker_slots()).map(|_| Arc::new(Mutex::new(()))).collect();
        let mut bag: Vec<FaultKind> = Vec::new();
        let mut tasks = tokio::task::JoinSet::new();
        tokio::time::sleep(self.start_after).await;
        loop {
            let gap = self.every.mul_f64(self.rng.range_f64(0.5, 1.5));
            if Instant::now() + gap + MAX_FAULT >= self.stop_at {
                break;
            }
            tokio::time::sleep(gap).await;
            // Every kind comes up once per round, in a seeded order, so short runs see them all.
            if bag.is_empty() {
                bag = self.kinds.clone();
                self.rng.shuffle(&mut bag);
            }
            // The next kind whose part is not still broken by an earlier fault; the others keep
            // their turn. When every part is busy, this gap passes without a new fault.
            let mut chosen = None;
            for i in (0..bag.len()).rev() {
                let kind = bag[i];
                let mut rng = self.rng.fork(kind as u64);
                let (guard, slot) = match kind.part() {
                    Part::Services => (services.clone().try_lock_owned(), 0),
                    Part::Proxmox => (proxmox.clone().try_lock_owned(), 0),
                    Part::Worker => {
                        let slot = rng.below(slots.len());
                        (slots[slot].clone().try_lock_owned(), slot)
                    }
                };
                if let Ok(guard) = guard {
                    bag.remove(i);
                    chosen = Some((kind, rng, guard, slot));
                    break;
                }
            }
            let Some((kind, mut rng, guard, slot)) = chosen else { continue };
            let stack = self.stack.clone();
            let records = records.clone();
            tasks.spawn(async move {
                let record = inject(&stack, kind, slot, &mut rng).await;
                drop(guard);
                let record = record?;
                println!(
                    "  fault  {:>6.1}s  {:<16} {:>5.1}s  {}",
                    record.start - START.get().copied().unwrap_or(record.start),
                    kind.name(),
                    record.end - record.start,
                    record.detail
                );
                records.lock().await.push(record);
                anyhow::Ok(())
            });
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        let mut records = std::mem::take(&mut *records.lock().await);
        records.sort_by(|a, b| a.start.total_cmp(&b.start));
        Ok(records)
    }
}

/// When the soak started (seconds since the epoch), for printing fault times relative to it.
pub static START: std::sync::OnceLock<f64> = std::sync::OnceLock::new();

async fn inject(stack: &Stack, kind: FaultKind, slot: usize, rng: &mut Rng) -> anyhow::Result<FaultRecord> {
    let start = epoch_now();
    let pause = |lo: f64, hi: f64, rng: &mut Rng| Duration::from_secs_f64(rng.range_f64(lo, hi));
    let detail = match kind {
        FaultKind::WorkerKill => {
            let killed = stack.kill_worker(slot).await?.unwrap_or_else(|| "no worker".into());
            let down = pause(0.5, 5.0, rng);
            tokio::time::sleep(down).await;
            let started = stack.start_worker(slot).await?;
            format!("{killed} SIGKILLed; {started} started {:.1} s later", down.as_secs_f64())
        }
        FaultKind::RedisRestart | FaultKind::RedisKill | FaultKind::RedisWipe => {
            let how = match kind {
                FaultKind::RedisRestart => Stop::Graceful,
                FaultKind::RedisKill => Stop::Crash,
                _ => Stop::Wipe,
            };
            stack.redis_stop(how).await?;
            let down = pause(0.5, 4.0, rng);
            tokio::time::sleep(down).await;
            stack.services_up().await?;
            format!("down {:.1} s", down.as_secs_f64())
        }
        FaultKind::PostgresRestart | FaultKind::PostgresCrash => {
            let how = if kind == FaultKind::PostgresRestart { Stop::Graceful } else { Stop::Crash };
            stack.postgres_stop(how).await?;
            let down = pause(1.0, 5.0, rng);
            tokio::time::sleep(down).await;
            stack.services_up().await?;
            format!("down {:.1} s", down.as_secs_f64())
        }
        FaultKind::PveErrors => {
            let (what, pattern) = *rng.pick(PATTERNS);
            let status = *rng.pick(&[500u16, 595]);
            let rate = (rng.range_f64(0.3, 1.0) * 100.0).round() / 100.0;
            // An empty message is a bare 5xx (a proxy's, or PVE's reason phrase only): transient.
            // Now and then a 500 carries a handler's message, which the workers must take as
            // permanent (the job fails at once; its quota and guest must still add up).
            let message = if status == 500 && rng.chance(0.2) { "injected handler failure" } else { "" };
            let faults = stack.sim.faults();
            faults.add_error(pattern, rate, status, message);
            let lasts = pause(3.0, 12.0, rng);
            tokio::time::sleep(lasts).await;
            faults.clear();
            let kind = if message.is_empty() { "" } else { " with a handler message" };
            format!("{status}{kind} on {:.0}% of {what} for {:.1} s", rate * 100.0, lasts.as_secs_f64())
        }
        FaultKind::PveLatency => {
            let (what, pattern) = *rng.pick(PATTERNS);
            let latency = Duration::from_millis(rng.range_f64(1000.0, 8000.0) as u64);
            let faults = stack.sim.faults();
            faults.add_latency(pattern, latency);
            let lasts = pause(5.0, 14.0, rng);
            tokio::time::sleep(lasts).await;
            faults.clear();
            format!("+{} ms on {what} for {:.1} s", latency.as_millis(), lasts.as_secs_f64())
        }
        FaultKind::PveNodeDown => {
            let nodes: Vec<String> = stack.sim.sim().read().nodes.keys().cloned().collect();
            let node = rng.pick(&nodes).clone();
            let faults = stack.sim.faults();
            faults.set_node_down(&node, true);
            let lasts = pause(3.0, 10.0, rng);
            tokio::time::sleep(lasts).await;
            faults.clear();
            format!("{node} down for {:.1} s", lasts.as_secs_f64())
        }
        FaultKind::PveTaskFail => {
            let ty = *rng.pick(&["qmclone", "vzcreate", "qmstart", "vzstart"]);
            let faults = stack.sim.faults();
            faults.fail_next_task(ty, INJECTED_TASK_FAILURE);
            // It stays armed until a task of that type consumes it, or this window ends.
            let lasts = pause(3.0, 8.0, rng);
            tokio::time::sleep(lasts).await;
            let consumed = !faults.snapshot().fail_next_task.contains_key(ty);
            faults.clear();
            format!("next {ty} fails ({})", if consumed { "consumed" } else { "no such task came" })
        }
    };
    Ok(FaultRecord { kind, detail, start, end: epoch_now() })
}

/// The exit status of a task failed by `pve-task-fail` (the audit recognises its leftovers).
pub const INJECTED_TASK_FAILURE: &str = "injected task failure";

/// Which Proxmox calls a fault hits (regexes on `METHOD /api2/json/path`).
const PATTERNS: &[(&str, &str)] = &[
    ("every call", "."),
    ("guest creation", "^POST .*/(qemu/[0-9]+/clone|lxc)$"),
    ("configure, resize and start", "^(POST|PUT) .*/(config|resize|status/start)$"),
    ("status and address polls", "^GET .*/(tasks/.*/status|status/current|agent/network-get-interfaces|interfaces)$"),
];
