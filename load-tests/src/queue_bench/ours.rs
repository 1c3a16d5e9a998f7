//! Our dispatch layer (`nimbus-queue` through apalis' `WorkerBuilder`) in the benchmark's three
//! scenarios: end-to-end throughput, a large backlog drained, and idle pickup latency.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use apalis::prelude::*;
use nimbus_queue::{NewJob, Queue, QueueConfig, QueueStats, StreamsBackend};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, oneshot};

/// The no-op job: its index, so the drain can count every job exactly.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Noop {
    pub n: u32,
}

/// A ledger-style job id (UUID-shaped, 36 characters) for job `n`.
fn job_id(n: u32) -> String {
    format!("00000000-0000-7000-8000-{n:012x}")
}

async fn queue(url: &str) -> anyhow::Result<Queue> {
    Ok(Queue::connect(url, QueueConfig::new("bench")).await?)
}

type Running = (oneshot::Sender<()>, tokio::task::JoinHandle<Result<(), WorkerError>>);

/// Starts one apalis worker with `concurrency` whose handler calls `on_job(n)`.
fn start_worker<F>(queue: &Queue, concurrency: usize, on_job: F) -> Running
where
    F: Fn(u32) + Clone + Send + Sync + 'static,
{
    let (tx, rx) = oneshot::channel::<()>();
    let worker = WorkerBuilder::new("bench")
        .backend(StreamsBackend::<Noop>::new(queue.clone()))
        .concurrency(concurrency)
        .build(move |job: Noop| {
            let on_job = on_job.clone();
            async move {
                on_job(job.n);
                Ok::<(), BoxDynError>(())
            }
        });
    let handle = tokio::spawn(worker.run_until(async move {
        let _ = rx.await;
        Ok::<(), std::io::Error>(())
    }));
    (tx, handle)
}

/// Stops a worker gracefully; returns whether it ended without a worker error.
async fn stop(worker: Running) -> anyhow::Result<bool> {
    let _ = worker.0.send(());
    let res =
        tokio::time::timeout(Duration::from_secs(30), worker.1).await.context("worker did not stop in 30 s")??;
    Ok(res.is_ok())
}

/// End to end, like the BullMQ anchor: `push_bulk` of `jobs` no-op jobs (apalis `TaskSink`, one
/// pipelined round trip), then a worker with `concurrency` runs them; jobs/s from the first push
/// to the last handler call.
pub async fn throughput(url: &str, jobs: usize, concurrency: usize) -> anyhow::Result<f64> {
    let q = queue(url).await?;
    let done = Arc::new(AtomicUsize::new(0));
    let all_done = Arc::new(Notify::new());
    let started = Instant::now();
    let mut sink = StreamsBackend::<Noop>::new(q.clone());
    let tasks = (0..jobs as u32).map(|n| TaskBuilder::new(Noop { n }).task_id(TaskId::from_string(job_id(n))).build());
    sink.push_all(futures::stream::iter(tasks)).await?;
    let worker = start_worker(&q, concurrency, {
        let (done, all_done) = (done.clone(), all_done.clone());
        move |_| {
            if done.fetch_add(1, Ordering::Relaxed) + 1 == jobs {
                all_done.notify_one();
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(120), all_done.notified()).await.context("jobs not done in 120 s")?;
    let rate = jobs as f64 / started.elapsed().as_secs_f64();
    if !stop(worker).await? {
        bail!("worker ended with an error");
    }
    let stats = q.stats().await?;
    if stats != QueueStats::default() {
        bail!("jobs left in Redis after the run: {stats:?}");
    }
    Ok(rate)
}

/// What the backlog scenario measured.
#[derive(Debug)]
pub struct Backlog {
    pub jobs: usize,
    pub push_rate: f64,
    pub drain_rate: f64,
    pub errors: usize,
    pub lost: usize,
    pub duplicates: usize,
    pub mem_before: u64,
    pub mem_after_push: u64,
    pub mem_after_drain: u64,
    pub left: QueueStats,
}

/// `jobs` pushed with no worker running (pipelined batches of 10,000), then drained by one
/// worker with `concurrency`; every job index is checked off exactly once.
pub async fn backlog(url: &str, jobs: usize, concurrency: usize, limit: Duration) -> anyhow::Result<Backlog> {
    let q = queue(url).await?;
    q.ensure_group().await?;
    let mem_before = super::redis_server::used_memory(url).await?;
    let pushed = Instant::now();
    for start in (0..jobs).step_by(10_000) {
        let batch = (start..(start + 10_000).min(jobs))
            .map(|n| NewJob::new(job_id(n as u32), &Noop { n: n as u32 }))
            .collect::<Result<Vec<_>, _>>()?;
        q.push_jobs(batch).await?;
    }
    let push_rate = jobs as f64 / pushed.elapsed().as_secs_f64();
    let mem_after_push = super::redis_server::used_memory(url).await?;
    if q.stats().await?.waiting != jobs as u64 {
        bail!("the backlog holds {:?}, expected {jobs} waiting", q.stats().await?);
    }

    let seen: Arc<Vec<AtomicBool>> = Arc::new((0..jobs).map(|_| AtomicBool::new(false)).collect());
    let handled = Arc::new(AtomicUsize::new(0));
    let all_done = Arc::new(Notify::new());
    let drained = Instant::now();
    let worker = start_worker(&q, concurrency, {
        let (seen, handled, all_done) = (seen.clone(), handled.clone(), all_done.clone());
        move |n| {
            seen[n as usize].store(true, Ordering::Relaxed);
            if handled.fetch_add(1, Ordering::Relaxed) + 1 == jobs {
                all_done.notify_one();
            }
        }
    });
    let finished = tokio::time::timeout(limit, all_done.notified()).await.is_ok();
    let drain_secs = drained.elapsed().as_secs_f64();
    let worker_ok = stop(worker).await?;
    let left = q.stats().await?;
    let mem_after_drain = super::redis_server::used_memory(url).await?;
    let distinct = seen.iter().filter(|s| s.load(Ordering::Relaxed)).count();
    let handled = handled.load(Ordering::Relaxed);
    Ok(Backlog {
        jobs,
        push_rate,
        drain_rate: handled as f64 / drain_secs,
        errors: usize::from(!worker_ok) + usize::from(!finished) + left.dead as usize,
        lost: jobs - distinct,
        duplicates: handled - distinct,
        mem_before,
        mem_after_push,
        mem_after_drain,
        left,
    })
}

/// Pushes `count` jobs one at a time to an idle worker (a pause between them) and returns each
/// job's push → handler-start latency in microseconds.
pub async fn pickup(url: &str, count: usize) -> anyhow::Result<Vec<u64>> {
    let q = queue(url).await?;
    let starts: Arc<Vec<std::sync::Mutex<Option<Instant>>>> =
        Arc::new((0..count).map(|_| std::sync::Mutex::new(None)).collect());
    let worker = start_worker(&q, 50, {
        let starts = starts.clone();
        move |n| *starts[n as usize].lock().unwrap() = Some(Instant::now())
    });
    // Let the worker register and block in XREADGROUP before the first job.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut micros = Vec::with_capacity(count);
    for n in 0..count {
        let pushed = Instant::now();
        q.push(&job_id(n as u32), &Noop { n: n as u32 }).await?;
        let deadline = pushed + Duration::from_secs(5);
        let started = loop {
            if let Some(t) = *starts[n].lock().unwrap() {
                break t;
            }
            if Instant::now() > deadline {
                bail!("job {n} did not start within 5 s");
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        };
        micros.push(started.duration_since(pushed).as_micros() as u64);
        // Idle again: the worker is back in its blocking read before the next push.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop(worker).await?;
    Ok(micros)
}
