//! The apalis 1.0 backend: [`StreamsBackend`] feeds `WorkerBuilder` with typed tasks decoded from
//! the stream, and [`AckLayer`] (its backend middleware) turns each handler's result into an
//! acknowledgement, a retry or a dead letter. It is also a `Sink`, so apalis' `TaskSink`
//! (`push`, `push_bulk`, `push_task`) works on it.
//!
//! The backend declares the `Ephemeral` finalisation kind and decodes payloads itself: with
//! apalis' `Durable` kind a payload that fails to decode is a poll error that stops the worker,
//! whereas here it is dead-lettered and the worker carries on.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, UNIX_EPOCH};

use apalis_core::backend::finalize::Ephemeral;
use apalis_core::backend::{Backend, BackendConfig};
use apalis_core::error::{AbortError, BoxDynError, RetryAfterError};
use apalis_core::task::Task;
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::task_id::TaskId;
use apalis_core::worker::context::WorkerContext;
use futures::FutureExt;
use futures::future::BoxFuture;
use redis::aio::ConnectionManager;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tower::{Layer, Service};

use crate::entry::Entry;
use crate::error::{Error, Result};
use crate::queue::{NewJob, Queue, now_ms};
use crate::worker::{self, AckMsg, Tasks, WorkerShared};

/// The stream entry a running task came from (in the task's extensions).
#[derive(Debug, Clone)]
struct EntryId(String);

/// An apalis backend over one queue's Redis stream. One instance serves one worker.
pub struct StreamsBackend<Args> {
    queue: Queue,
    /// Entries taken per read (default: the queue's `fetch_count`).
    fetch_count: usize,
    shared: Option<Arc<WorkerShared>>,
    ack_rx: Option<tokio::sync::mpsc::UnboundedReceiver<crate::worker::AckMsg>>,
    boot: Option<BoxFuture<'static, ConnectionManager>>,
    read_conn: Option<ConnectionManager>,
    buffer: VecDeque<Entry>,
    fetch: Option<BoxFuture<'static, Vec<Entry>>>,
    closing: Option<BoxFuture<'static, Result<()>>>,
    tasks: Tasks,
    sink_buf: Vec<NewJob>,
    sink_fut: Option<BoxFuture<'static, Result<()>>>,
    _args: PhantomData<fn() -> Args>,
}

impl<Args> std::fmt::Debug for StreamsBackend<Args> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamsBackend").field("queue", &self.queue).field("buffered", &self.buffer.len()).finish()
    }
}

impl<Args> Clone for StreamsBackend<Args> {
    /// A fresh backend on the same queue (a clone never shares a worker's fetch state).
    fn clone(&self) -> Self {
        Self::new(self.queue.clone()).fetch_count(self.fetch_count)
    }
}

impl<Args> StreamsBackend<Args> {
    /// A backend for `queue`; hand it to `WorkerBuilder::backend`, or use it as a `TaskSink`.
    pub fn new(queue: Queue) -> Self {
        Self {
            fetch_count: queue.config().fetch_count,
            queue,
            shared: None,
            ack_rx: None,
            boot: None,
            read_conn: None,
            buffer: VecDeque::new(),
            fetch: None,
            closing: None,
            tasks: Tasks::default(),
            sink_buf: Vec::new(),
            sink_fut: None,
            _args: PhantomData,
        }
    }

    /// Takes at most `count` entries per read. A worker holds what it read until it runs it, so
    /// for slow jobs read about as many as run at once: a large read would keep a backlog
    /// from the workers started after it (a scale-out would find nothing to take).
    pub fn fetch_count(mut self, count: usize) -> Self {
        self.fetch_count = count.max(1);
        self
    }

    /// The queue this backend serves.
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    fn shared_for(&mut self, worker_name: &str) -> Arc<WorkerShared> {
        if let Some(s) = &self.shared {
            return s.clone();
        }
        // Consumer names are unique per worker instance: a restarted process must not inherit
        // (and then ignore) a dead predecessor's pending entries; reclaim hands those over.
        let consumer = format!("{worker_name}-{:016x}", rand::random::<u64>());
        let (shared, rx) = WorkerShared::new(self.queue.clone(), consumer, self.fetch_count);
        let shared = Arc::new(shared);
        self.shared = Some(shared.clone());
        self.ack_rx = Some(rx);
        shared
    }
}

fn entry_to_task<Args: DeserializeOwned>(e: &Entry) -> std::result::Result<Task<Args>, serde_json::Error> {
    let args: Args = serde_json::from_slice(&e.payload)?;
    // apalis increments the attempt when the handler first runs, so it starts one below.
    Ok(TaskBuilder::new(args)
        .task_id(TaskId::from_string(e.job_id.clone()))
        .attempt(e.attempt().saturating_sub(1) as usize)
        .max_attempts(e.max_attempts as usize)
        .data(EntryId(e.entry_id.clone()))
        .build())
}

impl<Args> Backend for StreamsBackend<Args>
where
    Args: DeserializeOwned + Send + 'static,
{
    type Task = Task<Args>;
    type Error = Error;

    fn poll_ready(&mut self, cx: &mut Context<'_>, worker: &WorkerContext) -> Poll<Result<()>> {
        if self.read_conn.is_some() {
            return Poll::Ready(Ok(()));
        }
        let shared = self.shared_for(worker.name());
        let boot = self.boot.get_or_insert_with(|| {
            let queue = shared.queue.clone();
            async move {
                // Keep trying: a worker started before Redis is up waits for it instead of exiting.
                let mut tries = 0u32;
                loop {
                    let res = async {
                        queue.ensure_group().await?;
                        Ok::<_, Error>(queue.client().get_connection_manager_with_config(crate::queue::connection_config(queue.config().block)).await?)
                    }
                    .await;
                    match res {
                        Ok(conn) => return conn,
                        Err(e) => {
                            tries += 1;
                            tracing::warn!(queue = %queue.config().name, error = %e, tries, "worker start: redis unavailable");
                            tokio::time::sleep(Duration::from_millis(200 * u64::from(tries.min(10)))).await;
                        }
                    }
                }
            }
            .boxed()
        });
        let conn = match boot.poll_unpin(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(conn) => conn,
        };
        self.boot = None;
        self.read_conn = Some(conn);
        if let Some(rx) = self.ack_rx.take() {
            self.tasks.0.push(tokio::spawn(worker::acker(shared.clone(), rx)));
        }
        self.tasks.0.push(tokio::spawn(worker::renewer(shared.clone())));
        self.tasks.0.push(tokio::spawn(worker::promoter(shared.queue.clone())));
        Poll::Ready(Ok(()))
    }

    fn poll_next(&mut self, cx: &mut Context<'_>, worker: &WorkerContext) -> Poll<Option<Result<Task<Args>>>> {
        let shared = self.shared_for(worker.name());
        loop {
            if let Some(e) = self.buffer.pop_front() {
                match entry_to_task::<Args>(&e) {
                    Ok(task) => return Poll::Ready(Some(Ok(task))),
                    Err(err) => {
                        // A payload this worker cannot read will never succeed: dead-letter it.
                        let _ = shared.ack_tx.send(AckMsg::Failed {
                            entry_id: e.entry_id.clone(),
                            spent: e.attempt(),
                            retry_at_ms: None,
                            error: format!("undecodable payload: {err}"),
                        });
                        continue;
                    }
                }
            }
            let Some(conn) = self.read_conn.clone() else {
                return Poll::Pending;
            };
            let fetch = self.fetch.get_or_insert_with(|| worker::fetch(shared.clone(), conn).boxed());
            match fetch.poll_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(entries) => {
                    self.fetch = None;
                    if entries.is_empty() {
                        // Only when stopping; the worker is about to call poll_close.
                        return Poll::Pending;
                    }
                    self.buffer.extend(entries);
                }
            }
        }
    }

    fn poll_close(&mut self, cx: &mut Context<'_>, _worker: &WorkerContext) -> Poll<Result<()>> {
        if self.closing.is_none() {
            let Some(shared) = self.shared.clone() else {
                return Poll::Ready(Ok(()));
            };
            shared.stop.store(true, Ordering::Release);
            let fetch = self.fetch.take();
            let mut left: Vec<Entry> = self.buffer.drain(..).collect();
            let tasks = std::mem::take(&mut self.tasks);
            let started = self.read_conn.is_some();
            self.closing = Some(
                async move {
                    if let Some(f) = fetch {
                        left.extend(f.await);
                    }
                    let ids: Vec<String> = left.into_iter().map(|e| e.entry_id).collect();
                    if !ids.is_empty() {
                        // Hand unstarted entries straight back so peers need not wait for reclaim.
                        if let Err(e) = shared.queue.release(&ids).await {
                            tracing::warn!(error = %e, "release on shutdown failed; entries will be reclaimed");
                        }
                        shared.forget(&ids);
                    }
                    if started {
                        let (tx, rx) = tokio::sync::oneshot::channel();
                        if shared.ack_tx.send(AckMsg::Flush(tx)).is_ok() {
                            let _ = rx.await;
                        }
                    }
                    drop(tasks);
                    Ok(())
                }
                .boxed(),
            );
        }
        self.closing.as_mut().map_or(Poll::Ready(Ok(())), |f| f.poll_unpin(cx))
    }
}

impl<Args> BackendConfig for StreamsBackend<Args> {
    type Args = Args;
    type Id = String;
    type Kind = Ephemeral;
    type Config = crate::QueueConfig;
    type Layer = AckLayer;

    fn config(&self) -> &Self::Config {
        self.queue.config()
    }

    fn middleware(&mut self, worker: &mut WorkerContext) -> Self::Layer {
        AckLayer { shared: self.shared_for(worker.name()) }
    }
}

fn task_to_job<Args: Serialize>(task: Task<Args>) -> Result<NewJob> {
    let (args, ctx) = task.take();
    let id = ctx.task_id().map(|id| id.to_string()).unwrap_or_else(|| format!("{:032x}", rand::random::<u128>()));
    let mut job = NewJob::new(id, &args)?;
    job.max_attempts = ctx.max_attempts().map(|n| n as u32);
    // apalis keeps run_at in whole seconds since the epoch.
    job.run_at_ms = ctx.run_at().map(|s| s.saturating_mul(1000));
    Ok(job)
}

impl<Args> futures::Sink<Task<Args>> for StreamsBackend<Args>
where
    Args: Serialize,
{
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        // Backpressure: a new batch waits until the previous one is written.
        let this = self.get_mut();
        match this.sink_fut.as_mut() {
            None => Poll::Ready(Ok(())),
            Some(f) => {
                let res = futures::ready!(f.poll_unpin(cx));
                this.sink_fut = None;
                Poll::Ready(res)
            }
        }
    }

    fn start_send(self: Pin<&mut Self>, item: Task<Args>) -> Result<()> {
        let job = task_to_job(item)?;
        self.get_mut().sink_buf.push(job);
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        loop {
            if let Some(f) = this.sink_fut.as_mut() {
                let res = futures::ready!(f.poll_unpin(cx));
                this.sink_fut = None;
                res?;
            }
            if this.sink_buf.is_empty() {
                return Poll::Ready(Ok(()));
            }
            let jobs = std::mem::take(&mut this.sink_buf);
            let queue = this.queue.clone();
            this.sink_fut = Some(async move { queue.push_jobs(jobs).await }.boxed());
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        futures::Sink::<Task<Args>>::poll_flush(self, cx)
    }
}

/// The backend middleware: reports each attempt's outcome to the worker's acknowledger.
#[derive(Clone)]
pub struct AckLayer {
    shared: Arc<WorkerShared>,
}

impl std::fmt::Debug for AckLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AckLayer").field("consumer", &self.shared.consumer).finish()
    }
}

impl<S> Layer<S> for AckLayer {
    type Service = AckService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AckService { inner, shared: self.shared.clone() }
    }
}

/// The service [`AckLayer`] wraps around the worker's handler.
#[derive(Clone)]
pub struct AckService<S> {
    inner: S,
    shared: Arc<WorkerShared>,
}

impl<S> std::fmt::Debug for AckService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AckService").field("consumer", &self.shared.consumer).finish()
    }
}

/// Decides what a failed attempt leads to: `AbortError` (a permanent error) dead-letters at
/// once, `RetryAfterError` retries after its own delay, anything else retries with the queue's
/// backoff until attempts are spent.
fn failure_outcome(
    entry_id: String,
    attempt: u32,
    max_attempts: u32,
    err: &BoxDynError,
    config: &crate::QueueConfig,
) -> AckMsg {
    let mut error = err.to_string();
    error.truncate(2000);
    let retry_at_ms = if err.downcast_ref::<AbortError>().is_some() || attempt >= max_attempts {
        None
    } else if let Some(r) = err.downcast_ref::<RetryAfterError>() {
        Some(now_ms() + r.get_duration().as_millis() as u64)
    } else {
        Some(now_ms() + config.backoff.next_delay(attempt).as_millis() as u64)
    };
    AckMsg::Failed { entry_id, spent: attempt, retry_at_ms, error }
}

impl<S, Args> Service<Task<Args>> for AckService<S>
where
    S: Service<Task<Args>>,
    S::Future: Send + 'static,
    S::Error: Into<BoxDynError>,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxDynError;
    type Future = BoxFuture<'static, std::result::Result<S::Response, BoxDynError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), BoxDynError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, task: Task<Args>) -> Self::Future {
        let ctx = task.ctx().clone();
        let fut = self.inner.call(task);
        let shared = self.shared.clone();
        async move {
            let res = fut.await.map_err(Into::into);
            if let Some(EntryId(entry_id)) = ctx.data().get::<EntryId>().cloned() {
                let msg = match &res {
                    Ok(_) => AckMsg::Done(entry_id),
                    Err(e) => {
                        let max = ctx.max_attempts().unwrap_or(1) as u32;
                        failure_outcome(entry_id, ctx.attempt() as u32, max, e, shared.queue.config())
                    }
                };
                let _ = shared.ack_tx.send(msg);
            }
            res
        }
        .boxed()
    }
}

/// Seconds since the epoch `d` from now, the unit apalis uses for `run_at`.
pub fn run_at_after(d: Duration) -> u64 {
    (std::time::SystemTime::now() + d).duration_since(UNIX_EPOCH).map(|t| t.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Backoff, QueueConfig};

    fn config() -> QueueConfig {
        QueueConfig::new("t").backoff(Backoff {
            base: Duration::from_secs(10),
            max: Duration::from_secs(60),
            jitter: false,
        })
    }

    #[test]
    fn failures_retry_with_backoff_until_attempts_are_spent() {
        let err: BoxDynError = "boom".into();
        let before = now_ms();
        let AckMsg::Failed { retry_at_ms, spent, error, .. } = failure_outcome("1-0".into(), 2, 3, &err, &config())
        else {
            panic!("expected a failure")
        };
        let at = retry_at_ms.expect("attempt 2 of 3 retries");
        assert!(at >= before + 20_000 && at <= now_ms() + 20_000, "second failure waits 2 x base");
        assert_eq!((spent, error.as_str()), (2, "boom"));
        let AckMsg::Failed { retry_at_ms, .. } = failure_outcome("1-0".into(), 3, 3, &err, &config()) else { panic!() };
        assert_eq!(retry_at_ms, None, "the last attempt dead-letters");
    }

    #[test]
    fn abort_is_permanent_and_retry_after_sets_its_own_delay() {
        let abort: BoxDynError = Box::new(AbortError::new("bad template"));
        let AckMsg::Failed { retry_at_ms, .. } = failure_outcome("1-0".into(), 1, 5, &abort, &config()) else {
            panic!()
        };
        assert_eq!(retry_at_ms, None);
        let later: BoxDynError = Box::new(RetryAfterError::new("busy", Duration::from_millis(1500)));
        let before = now_ms();
        let AckMsg::Failed { retry_at_ms, .. } = failure_outcome("1-0".into(), 1, 5, &later, &config()) else {
            panic!()
        };
        let at = retry_at_ms.unwrap();
        assert!(at >= before + 1500 && at < before + 5000);
    }
}
