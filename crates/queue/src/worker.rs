//! What one worker runs next to its handlers: the fetch loop (reclaim, then blocking read), the
//! batched acknowledger, claim renewal and delayed-job promotion.
//!
//! ```text
//!  fetch loop ──XAUTOCLAIM (every reclaim_interval)──┐
//!             ──XREADGROUP COUNT n BLOCK ms─────────┴─> buffer ─> apalis handlers
//!  handlers ─outcome─> acker ─ MULTI XACK XDEL EXEC (batched) / FAIL script (retry or dead)
//!  renewer  ─ RENEW script (XCLAIM 0 JUSTID) on held entries every renew_interval
//!  promoter ─ PROMOTE script (due delayed jobs → stream) every promote_interval
//! ```

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::entry::Entry;
use crate::queue::Queue;

/// How one attempt ended, sent by the handler layer to the acknowledger.
#[derive(Debug)]
pub(crate) enum AckMsg {
    /// Succeeded: acknowledge and delete.
    Done(String),
    /// Failed: retry at `retry_at_ms`, or dead-letter when `None` or attempts are spent.
    Failed { entry_id: String, spent: u32, retry_at_ms: Option<u64>, error: String },
    /// Answers once every message sent before it has been written.
    Flush(oneshot::Sender<()>),
}

/// State shared by a worker's backend, its handler layer and its background tasks.
pub(crate) struct WorkerShared {
    pub queue: Queue,
    /// This worker's consumer name in the group (unique per worker instance).
    pub consumer: String,
    /// Entries this worker holds (buffered or running): the ones it renews.
    pub held: Mutex<HashSet<String>>,
    pub stop: AtomicBool,
    pub ack_tx: mpsc::UnboundedSender<AckMsg>,
    /// Entries taken per read or reclaim: what this worker may hold beyond those it runs.
    pub fetch_count: usize,
    reclaim: Mutex<(Instant, String)>,
}

impl WorkerShared {
    pub fn new(queue: Queue, consumer: String, fetch_count: usize) -> (Self, mpsc::UnboundedReceiver<AckMsg>) {
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        let shared = Self {
            fetch_count,
            queue,
            consumer,
            held: Mutex::new(HashSet::new()),
            stop: AtomicBool::new(false),
            ack_tx,
            // Due at once: a fresh worker first picks up what crashed peers left behind.
            reclaim: Mutex::new((Instant::now() - Duration::from_secs(3600), "0-0".to_owned())),
        };
        (shared, ack_rx)
    }

    fn hold(&self, entries: &[Entry]) {
        let mut held = self.held.lock().unwrap();
        held.extend(entries.iter().map(|e| e.entry_id.clone()));
    }

    pub fn forget<'a>(&self, ids: impl IntoIterator<Item = &'a String>) {
        let mut held = self.held.lock().unwrap();
        for id in ids {
            held.remove(id);
        }
    }

    fn reclaim_due(&self) -> Option<String> {
        let guard = self.reclaim.lock().unwrap();
        (guard.0.elapsed() >= self.queue.config().reclaim_interval).then(|| guard.1.clone())
    }

    fn reclaimed(&self, cursor: String) {
        *self.reclaim.lock().unwrap() = (Instant::now(), cursor);
    }
}

/// Aborts background tasks when dropped (a worker dropped without a graceful close leaves its
/// unacknowledged entries to be reclaimed by peers).
#[derive(Default)]
pub(crate) struct Tasks(pub Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

fn retry_pause(failures: u32) -> Duration {
    Duration::from_millis(50u64.saturating_mul(1 << failures.min(6))).min(Duration::from_secs(2))
}

/// Fetches the next batch: abandoned entries first (when a reclaim is due), otherwise a blocking
/// read. Loops until it has entries or the worker stops; Redis errors are retried with a pause
/// so a Redis restart does not end the worker.
pub(crate) async fn fetch(shared: std::sync::Arc<WorkerShared>, mut conn: ConnectionManager) -> Vec<Entry> {
    let mut failures = 0u32;
    while !shared.stop.load(Ordering::Acquire) {
        if let Some(cursor) = shared.reclaim_due() {
            match shared.queue.reclaim(&shared.consumer, &cursor, shared.fetch_count).await {
                Ok((next, entries, dead)) => {
                    shared.reclaimed(next);
                    if dead > 0 {
                        tracing::warn!(queue = %shared.queue.config().name, dead, "abandoned jobs out of attempts moved to the dead stream");
                    }
                    if !entries.is_empty() {
                        tracing::info!(queue = %shared.queue.config().name, count = entries.len(), "reclaimed abandoned jobs");
                        shared.hold(&entries);
                        return entries;
                    }
                }
                Err(e) => {
                    tracing::warn!(queue = %shared.queue.config().name, error = %e, "reclaim failed");
                    shared.queue.heal(&e).await;
                }
            }
        }
        match shared.queue.read(&mut conn, &shared.consumer, shared.fetch_count).await {
            Ok(entries) if !entries.is_empty() => {
                shared.hold(&entries);
                return entries;
            }
            Ok(_) => failures = 0,
            Err(e) => {
                tracing::warn!(queue = %shared.queue.config().name, error = %e, "read failed");
                // A recreated group is read again at once; other failures back off.
                if !shared.queue.heal(&e).await {
                    failures += 1;
                    tokio::time::sleep(retry_pause(failures)).await;
                }
            }
        }
    }
    Vec::new()
}

/// Writes outcomes in batches: all successes of a batch in one `MULTI XACK XDEL EXEC`, each
/// failure through the FAIL script. A write that fails is retried; after 20 tries the batch is
/// dropped and its entries are left for reclaim (at-least-once, never lost).
pub(crate) async fn acker(shared: std::sync::Arc<WorkerShared>, mut rx: mpsc::UnboundedReceiver<AckMsg>) {
    let max = shared.queue.config().ack_batch.max(1);
    let mut batch = Vec::with_capacity(max);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < max {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let mut done = Vec::new();
        let mut flushes = Vec::new();
        let mut failed = Vec::new();
        for m in batch.drain(..) {
            match m {
                AckMsg::Done(id) => done.push(id),
                AckMsg::Flush(tx) => flushes.push(tx),
                f @ AckMsg::Failed { .. } => failed.push(f),
            }
        }
        write_with_retries(&shared.queue, "ack", || shared.queue.ack(&done)).await;
        shared.forget(&done);
        for f in failed {
            if let AckMsg::Failed { entry_id, spent, retry_at_ms, error } = f {
                write_with_retries(&shared.queue, "fail", || shared.queue.fail(&entry_id, spent, retry_at_ms, &error))
                    .await;
                shared.forget([&entry_id]);
            }
        }
        for tx in flushes {
            let _ = tx.send(());
        }
    }
}

async fn write_with_retries<T, F, Fut>(queue: &Queue, what: &str, mut op: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = crate::Result<T>>,
{
    for tries in 1..=20u32 {
        match op().await {
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(op = what, tries, error = %e, "queue write failed");
                if !queue.heal(&e).await {
                    tokio::time::sleep(retry_pause(tries)).await;
                }
            }
        }
    }
    tracing::error!(op = what, "queue write abandoned; the entries will be reclaimed");
}

/// Renews the claim on held entries so peers' reclaim does not take over long jobs.
pub(crate) async fn renewer(shared: std::sync::Arc<WorkerShared>) {
    let mut tick = tokio::time::interval(shared.queue.config().renew_interval.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let ids: Vec<String> = shared.held.lock().unwrap().iter().cloned().collect();
        for chunk in ids.chunks(500) {
            if let Err(e) = shared.queue.renew(&shared.consumer, chunk).await {
                tracing::warn!(queue = %shared.queue.config().name, error = %e, "claim renewal failed");
                shared.queue.heal(&e).await;
            }
        }
    }
}

/// Moves due delayed jobs and retries into the stream.
pub(crate) async fn promoter(queue: Queue) {
    let mut tick = tokio::time::interval(queue.config().promote_interval.max(Duration::from_millis(5)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = queue.promote_due().await {
            tracing::warn!(queue = %queue.config().name, error = %e, "promotion of delayed jobs failed");
        }
    }
}
