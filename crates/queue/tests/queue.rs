//! Behaviour of the Streams backend against a real Redis (`NIMBUS_TEST_REDIS_URL`, started by
//! `make test` / `infra/scripts/services.sh`), each test in its own key prefix.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apalis::prelude::*;
use nimbus_queue::{Backoff, NewJob, Queue, QueueConfig, QueueStats, StreamsBackend};
use nimbus_testkit::TestRedis;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Job {
    n: u32,
}

/// Every (job id, attempt) a handler saw, in order.
type Seen = Arc<Mutex<Vec<(String, usize)>>>;

async fn queue(redis: &TestRedis, name: &str, tune: impl FnOnce(QueueConfig) -> QueueConfig) -> Queue {
    let config = tune(QueueConfig::new(name).key_prefix(redis.key("nimbus:")));
    Queue::new(redis.client().clone(), config).await.unwrap()
}

fn fast_backoff() -> Backoff {
    Backoff { base: Duration::from_millis(50), max: Duration::from_millis(200), jitter: false }
}

async fn wait_until<F, Fut>(limit: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Runs a worker whose handler records what it saw and then behaves as `behave` says; returns
/// the stop switch and the run's join handle.
fn spawn_worker<F, Fut>(
    name: &str,
    queue: &Queue,
    concurrency: usize,
    seen: Seen,
    behave: F,
) -> (oneshot::Sender<()>, tokio::task::JoinHandle<Result<(), WorkerError>>)
where
    F: Fn(Job, usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BoxDynError>> + Send + 'static,
{
    spawn_worker_on(name, StreamsBackend::<Job>::new(queue.clone()), concurrency, seen, behave)
}

/// [`spawn_worker`] on `backend`.
fn spawn_worker_on<F, Fut>(
    name: &str,
    backend: StreamsBackend<Job>,
    concurrency: usize,
    seen: Seen,
    behave: F,
) -> (oneshot::Sender<()>, tokio::task::JoinHandle<Result<(), WorkerError>>)
where
    F: Fn(Job, usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BoxDynError>> + Send + 'static,
{
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let worker = WorkerBuilder::new(name).backend(backend).concurrency(concurrency).build(
        move |job: Job, id: TaskId, attempt: Attempt| {
            let seen = seen.clone();
            let behave = behave.clone();
            async move {
                seen.lock().unwrap().push((id.to_string(), attempt.current()));
                behave(job, attempt.current()).await
            }
        },
    );
    let handle = tokio::spawn(worker.run_until(async move {
        let _ = stop_rx.await;
        Ok::<(), std::io::Error>(())
    }));
    (stop_tx, handle)
}

async fn stop(worker: (oneshot::Sender<()>, tokio::task::JoinHandle<Result<(), WorkerError>>)) {
    let _ = worker.0.send(());
    tokio::time::timeout(Duration::from_secs(10), worker.1).await.expect("worker stops within 10 s").unwrap().unwrap();
}

async fn keys_of(redis: &TestRedis) -> Vec<String> {
    let mut conn = redis.connection().await;
    let mut keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("{}*", redis.prefix())).query_async(&mut conn).await.unwrap();
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_jobs_run_once_and_leave_nothing_in_redis() {
    let redis = TestRedis::new().await;
    let q = queue(&redis, "basic", |c| c).await;
    let mut sink = StreamsBackend::<Job>::new(q.clone());
    sink.push_bulk((0..500).map(|n| Job { n }).collect()).await.unwrap();
    sink.push_task(TaskBuilder::new(Job { n: 999 }).task_id(TaskId::from_string("ledger-job-42")).build())
        .await
        .unwrap();
    assert_eq!(q.stats().await.unwrap(), QueueStats { waiting: 501, inflight: 0, delayed: 0, dead: 0 });

    let seen: Seen = Arc::default();
    let worker = spawn_worker("basic", &q, 20, seen.clone(), |_, _| async { Ok(()) });
    assert!(wait_until(Duration::from_secs(10), || async { seen.lock().unwrap().len() >= 501 }).await);
    stop(worker).await;

    let seen = seen.lock().unwrap().clone();
    let mut per_job: HashMap<String, Vec<usize>> = HashMap::new();
    for (id, attempt) in seen {
        per_job.entry(id).or_default().push(attempt);
    }
    assert_eq!(per_job.len(), 501, "every job ran");
    assert!(per_job.values().all(|a| a == &vec![1]), "each exactly once, as attempt 1");
    assert_eq!(per_job["ledger-job-42"], vec![1], "the producer's job id reaches the handler");
    assert_eq!(q.stats().await.unwrap(), QueueStats::default());
    // Only the (empty) stream holding the consumer group remains.
    assert_eq!(keys_of(&redis).await, vec![q.config().stream_key()]);
    let mut conn = redis.connection().await;
    let len: u64 = redis::cmd("XLEN").arg(q.config().stream_key()).query_async(&mut conn).await.unwrap();
    assert_eq!(len, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_retry_up_to_max_attempts_then_go_to_the_dead_stream() {
    let redis = TestRedis::new().await;
    let q = queue(&redis, "retry", |c| c.max_attempts(3).backoff(fast_backoff())).await;
    q.push("always-fails", &Job { n: 1 }).await.unwrap();
    q.push_jobs(vec![NewJob::new("permanent", &Job { n: 2 }).unwrap()]).await.unwrap();
    q.push_jobs(vec![NewJob::new("one-shot", &Job { n: 3 }).unwrap().max_attempts(1)]).await.unwrap();

    let seen: Seen = Arc::default();
    let worker = spawn_worker("retry", &q, 4, seen.clone(), |job, attempt| async move {
        match job.n {
            2 => Err(Box::new(AbortError::new("template does not exist")) as BoxDynError),
            _ => Err(format!("boom on attempt {attempt}").into()),
        }
    });
    assert!(wait_until(Duration::from_secs(10), || async { q.stats().await.unwrap().dead == 3 }).await);
    // Give a wrongly scheduled fourth attempt time to show up.
    tokio::time::sleep(Duration::from_millis(600)).await;
    stop(worker).await;

    let seen = seen.lock().unwrap().clone();
    let attempts = |id: &str| seen.iter().filter(|(j, _)| j == id).map(|(_, a)| *a).collect::<Vec<_>>();
    assert_eq!(attempts("always-fails"), vec![1, 2, 3], "same job id on every retry, attempts counted");
    assert_eq!(attempts("permanent"), vec![1], "AbortError is not retried");
    assert_eq!(attempts("one-shot"), vec![1], "the job's own max_attempts wins");

    let dead = q.dead_jobs(10).await.unwrap();
    let by_id: HashMap<_, _> = dead.iter().map(|d| (d.job_id.as_str(), d)).collect();
    assert_eq!(by_id["always-fails"].attempts, 3);
    assert_eq!(by_id["always-fails"].error, "boom on attempt 3");
    assert_eq!(by_id["always-fails"].payload, r#"{"n":1}"#);
    assert!(by_id["permanent"].error.contains("template does not exist"));
    assert_eq!(q.stats().await.unwrap(), QueueStats { waiting: 0, inflight: 0, delayed: 0, dead: 3 });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_workers_job_is_taken_over_as_attempt_two() {
    let redis = TestRedis::new().await;
    let q = queue(&redis, "crash", |c| c.claim_min_idle(Duration::from_secs(1))).await;
    q.push("crashy", &Job { n: 7 }).await.unwrap();

    let seen_a: Seen = Arc::default();
    let a = spawn_worker("a", &q, 1, seen_a.clone(), |_, _| async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok(())
    });
    assert!(wait_until(Duration::from_secs(5), || async { !seen_a.lock().unwrap().is_empty() }).await);
    // The crash: the worker is dropped mid-job, nothing acknowledged or released.
    a.1.abort();
    let _ = a.1.await;
    let killed = Instant::now();
    assert_eq!(q.stats().await.unwrap().inflight, 1);

    let seen_b: Seen = Arc::default();
    let b = spawn_worker("b", &q, 1, seen_b.clone(), |_, _| async { Ok(()) });
    assert!(wait_until(Duration::from_secs(10), || async { !seen_b.lock().unwrap().is_empty() }).await);
    let recovered = killed.elapsed();
    assert!(wait_until(Duration::from_secs(5), || async { q.stats().await.unwrap() == QueueStats::default() }).await);
    stop(b).await;

    assert_eq!(seen_a.lock().unwrap().clone(), vec![("crashy".to_owned(), 1)]);
    assert_eq!(seen_b.lock().unwrap().clone(), vec![("crashy".to_owned(), 2)], "same job id, attempt 2");
    assert!(recovered < Duration::from_secs(10), "recovered in {recovered:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_job_renews_its_claim_and_is_not_stolen() {
    let redis = TestRedis::new().await;
    let q = queue(&redis, "long", |c| c.claim_min_idle(Duration::from_millis(600))).await;
    let seen: Seen = Arc::default();
    // Two idle peers reclaim every ~120 ms; the job runs four times the claim idle time.
    let a = spawn_worker("a", &q, 2, seen.clone(), |_, _| async {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        Ok(())
    });
    let b = spawn_worker("b", &q, 2, seen.clone(), |_, _| async {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        Ok(())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    q.push("long", &Job { n: 1 }).await.unwrap();
    assert!(wait_until(Duration::from_secs(10), || async { q.stats().await.unwrap() == QueueStats::default() }).await);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop(a).await;
    stop(b).await;
    assert_eq!(seen.lock().unwrap().clone(), vec![("long".to_owned(), 1)], "ran once, never reclaimed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_jobs_run_after_their_delay() {
    let redis = TestRedis::new().await;
    let q = queue(&redis, "delayed", |c| c).await;
    let seen: Seen = Arc::default();
    let worker = spawn_worker("d", &q, 4, seen.clone(), |_, _| async { Ok(()) });
    let pushed = Instant::now();
    q.push_jobs(vec![NewJob::new("later", &Job { n: 1 }).unwrap().delay(Duration::from_millis(1200))]).await.unwrap();
    q.push("now", &Job { n: 2 }).await.unwrap();
    assert_eq!(q.stats().await.unwrap().delayed, 1);

    assert!(wait_until(Duration::from_secs(5), || async { seen.lock().unwrap().len() == 1 }).await);
    assert!(pushed.elapsed() < Duration::from_millis(1000), "the due job is not held back");
    assert!(wait_until(Duration::from_secs(5), || async { seen.lock().unwrap().len() == 2 }).await);
    let ran_after = pushed.elapsed();
    stop(worker).await;
    assert_eq!(seen.lock().unwrap()[1].0, "later");
    assert!(ran_after >= Duration::from_millis(1200), "ran after {ran_after:?}");
    assert!(ran_after < Duration::from_millis(2500), "promoted promptly: {ran_after:?}");
    assert_eq!(q.stats().await.unwrap(), QueueStats::default());
}

/// Runs 24 jobs of 100 ms: worker `a` alone, then `b` beside it; how many `b` ran.
async fn share_of_a_late_worker(redis: &TestRedis, name: &str, fetch: Option<usize>) -> usize {
    let q = queue(redis, name, |c| c).await;
    let jobs: Vec<NewJob> = (0..24).map(|n| NewJob::new(format!("j{n}"), &Job { n }).unwrap()).collect();
    q.push_jobs(jobs).await.unwrap();
    let backend = || {
        let b = StreamsBackend::<Job>::new(q.clone());
        match fetch {
            Some(n) => b.fetch_count(n),
            None => b,
        }
    };
    let slow = |_, _| async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(())
    };
    let (seen_a, seen_b): (Seen, Seen) = (Arc::default(), Arc::default());
    let a = spawn_worker_on("a", backend(), 2, seen_a.clone(), slow);
    assert!(wait_until(Duration::from_secs(5), || async { !seen_a.lock().unwrap().is_empty() }).await);
    let b = spawn_worker_on("b", backend(), 2, seen_b.clone(), slow);
    let all = || async { seen_a.lock().unwrap().len() + seen_b.lock().unwrap().len() == 24 };
    assert!(wait_until(Duration::from_secs(20), all).await);
    stop(a).await;
    stop(b).await;
    seen_b.lock().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_started_later_shares_a_backlog_when_workers_read_what_they_run() {
    let redis = TestRedis::new().await;
    // Reading as many as it runs, the first worker leaves the rest to whoever comes.
    let shared = share_of_a_late_worker(&redis, "share", Some(2)).await;
    assert!(shared >= 6, "the late worker ran {shared} of 24");
    // Reading the queue's default (100), it holds the whole backlog: the late worker idles.
    let hoarded = share_of_a_late_worker(&redis, "hoard", None).await;
    assert_eq!(hoarded, 0, "the late worker ran {hoarded} of 24");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_running_jobs_and_hands_back_the_rest() {
    let redis = TestRedis::new().await;
    let q = queue(&redis, "drain", |c| c.fetch_count(50)).await;
    let jobs: Vec<NewJob> = (0..50).map(|n| NewJob::new(format!("j{n}"), &Job { n }).unwrap()).collect();
    q.push_jobs(jobs).await.unwrap();
    let seen: Seen = Arc::default();
    let worker = spawn_worker("g", &q, 1, seen.clone(), |_, _| async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(())
    });
    assert!(wait_until(Duration::from_secs(5), || async { !seen.lock().unwrap().is_empty() }).await);
    stop(worker).await;
    let ran = seen.lock().unwrap().len() as u64;
    assert!(ran >= 1);
    // Finished jobs were acknowledged; unstarted ones are waiting again, not stuck in flight.
    assert_eq!(q.stats().await.unwrap(), QueueStats { waiting: 50 - ran, inflight: 0, delayed: 0, dead: 0 });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_payload_is_dead_lettered_and_the_worker_carries_on() {
    let redis = TestRedis::new().await;
    let q = queue(&redis, "poison", |c| c).await;
    q.push("poison", &"not a job").await.unwrap();
    q.push("fine", &Job { n: 1 }).await.unwrap();
    let seen: Seen = Arc::default();
    let worker = spawn_worker("p", &q, 2, seen.clone(), |_, _| async { Ok(()) });
    assert!(
        wait_until(Duration::from_secs(5), || async {
            q.stats().await.unwrap() == QueueStats { waiting: 0, inflight: 0, delayed: 0, dead: 1 }
        })
        .await
    );
    stop(worker).await;
    assert_eq!(seen.lock().unwrap().clone(), vec![("fine".to_owned(), 1)]);
    let dead = q.dead_jobs(1).await.unwrap();
    assert_eq!(dead[0].job_id, "poison");
    assert!(dead[0].error.starts_with("undecodable payload"), "{}", dead[0].error);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_picks_up_a_pushed_job_within_milliseconds() {
    let redis = TestRedis::new().await;
    let q = queue(&redis, "idle", |c| c).await;
    let started: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let s = started.clone();
    let worker = spawn_worker("i", &q, 4, Arc::default(), move |_, _| {
        let s = s.clone();
        async move {
            s.lock().unwrap().push(Instant::now());
            Ok(())
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut latencies = Vec::new();
    for n in 0..20 {
        let t = Instant::now();
        q.push(&format!("i{n}"), &Job { n }).await.unwrap();
        assert!(wait_until(Duration::from_secs(2), || async { started.lock().unwrap().len() > n as usize }).await);
        latencies.push(started.lock().unwrap()[n as usize] - t);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop(worker).await;
    latencies.sort();
    let median = latencies[latencies.len() / 2];
    assert!(median < Duration::from_millis(10), "median pickup {median:?}");
}

#[tokio::test]
async fn the_horizon_is_the_oldest_undelivered_message_and_the_held_ones() {
    let redis = TestRedis::new().await;
    let q = queue(&redis, "horizon", |c| c).await;
    let wall_ms = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    // Nothing pushed: now, by Redis's clock (the same machine's here), and nothing held.
    let empty = q.horizon(100).await.unwrap();
    assert!(empty.since_ms.abs_diff(wall_ms()) < 1_000 && empty.held.is_empty(), "{empty:?}");

    q.push("first", &Job { n: 1 }).await.unwrap();
    let pushed_at = wall_ms();
    tokio::time::sleep(Duration::from_millis(50)).await;
    q.push("second", &Job { n: 2 }).await.unwrap();
    let waiting = q.horizon(100).await.unwrap();
    assert!(waiting.since_ms <= pushed_at && pushed_at - waiting.since_ms < 1_000, "{waiting:?} vs {pushed_at}");
    assert!(waiting.held.is_empty());

    // A worker takes both and runs them slowly: delivered, held, no longer holding the time back.
    let seen: Seen = Arc::default();
    let (release, hold) = tokio::sync::watch::channel(false);
    let (stop, run) = spawn_worker("w", &q, 2, seen.clone(), move |_, _| {
        let mut hold = hold.clone();
        async move {
            let _ = hold.wait_for(|go| *go).await;
            Ok(())
        }
    });
    assert!(wait_until(Duration::from_secs(5), || async { seen.lock().unwrap().len() == 2 }).await);
    let running = q.horizon(100).await.unwrap();
    let mut held = running.held.clone();
    held.sort();
    assert_eq!(held, ["first", "second"]);
    assert!(running.since_ms >= waiting.since_ms + 50, "{running:?}");

    // Acknowledged: nothing held.
    release.send(true).unwrap();
    assert!(wait_until(Duration::from_secs(5), || async { q.stats().await.unwrap() == QueueStats::default() }).await);
    assert!(q.horizon(100).await.unwrap().held.is_empty());
    let _ = stop.send(());
    run.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_recreates_its_group_after_redis_loses_the_data() {
    let redis = TestRedis::new().await;
    let q = queue(&redis, "wiped", |c| c).await;
    let seen: Seen = Arc::default();
    let worker = spawn_worker("w", &q, 4, seen.clone(), |_, _| async { Ok(()) });
    q.push("before", &Job { n: 0 }).await.unwrap();
    assert!(wait_until(Duration::from_secs(5), || async { seen.lock().unwrap().len() == 1 }).await);

    // What FLUSHALL does to this test's keys: the stream and its consumer group are gone.
    let mut conn = redis.connection().await;
    let keys = keys_of(&redis).await;
    let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await.unwrap();
    // Let the worker's reads and renewals run into the missing group first.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // As the relay does after a wipe: XADD recreates the stream, not the group.
    for n in 1..=3 {
        q.push(&format!("after-{n}"), &Job { n }).await.unwrap();
    }
    let ok = wait_until(Duration::from_secs(5), || async { seen.lock().unwrap().len() == 4 }).await;
    let seen_now = seen.lock().unwrap().clone();
    assert!(ok, "jobs pushed after the wipe ran without restarting the worker: {seen_now:?}");
    stop(worker).await;
    assert_eq!(q.stats().await.unwrap(), QueueStats::default());
}

/// A private `redis-server` (append-only file in its own directory) that can be killed and
/// started again on the same port with the same data.
struct PrivateRedis {
    port: u16,
    dir: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl PrivateRedis {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = std::env::temp_dir().join(format!("nimbus-queue-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = Self { port, dir, child: None };
        r.spawn();
        r
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits until the server answers PING on a fresh connection.
    async fn wait_up(&self) {
        let client = redis::Client::open(self.url()).unwrap();
        let up = wait_until(Duration::from_secs(10), || async {
            match client.get_multiplexed_async_connection().await {
                Ok(mut c) => redis::cmd("PING").query_async::<String>(&mut c).await.is_ok(),
                Err(_) => false,
            }
        })
        .await;
        assert!(up, "private redis-server did not start");
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processing_resumes_within_seconds_of_a_redis_restart() {
    let mut server = PrivateRedis::start();
    server.wait_up().await;
    let client = redis::Client::open(server.url()).unwrap();
    let q = Queue::new(client, QueueConfig::new("restart")).await.unwrap();
    let seen: Seen = Arc::default();
    let worker = spawn_worker("r", &q, 4, seen.clone(), |_, _| async { Ok(()) });
    q.push("before", &Job { n: 0 }).await.unwrap();
    assert!(wait_until(Duration::from_secs(5), || async { seen.lock().unwrap().len() == 1 }).await);

    // Down long enough for the connections' reconnect attempts to back off.
    server.kill();
    tokio::time::sleep(Duration::from_secs(4)).await;
    server.spawn();
    server.wait_up().await;
    let back = Instant::now();

    // The same handle the API and the relay push with; each push bounded like theirs.
    let pushed = wait_until(Duration::from_secs(10), || async {
        matches!(tokio::time::timeout(Duration::from_secs(1), q.push("after", &Job { n: 1 })).await, Ok(Ok(())))
    })
    .await;
    assert!(pushed, "push still failing {:?} after the restart", back.elapsed());
    let ran =
        wait_until(Duration::from_secs(10), || async { seen.lock().unwrap().iter().any(|(id, _)| id == "after") })
            .await;
    let took = back.elapsed();
    eprintln!("job pushed after the restart ran {took:?} after Redis was back");
    assert!(ran && took < Duration::from_secs(10), "job after the restart not run within 10 s ({took:?})");
    stop(worker).await;
}
