//! The Proxmox request cap shared by independent workers (two `ClusterRateCap`s with their own
//! Redis clients) through one key, and its local fallback when Redis is unreachable.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nimbus_proxmox::RequestGate;
use nimbus_testkit::TestRedis;
use nimbus_worker::pve_rate::ClusterRateCap;

/// Clock differences and timer granularity; the bounds below are lower bounds only.
const SLACK: Duration = Duration::from_millis(50);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_one_rate() {
    const RATE: u32 = 20;
    const BURST: u32 = 5;
    const PERMITS: usize = 65;
    let redis = TestRedis::new().await;
    let workers: Vec<Arc<ClusterRateCap>> = (0..2)
        .map(|_| {
            let client = redis::Client::open(redis.url()).unwrap();
            ClusterRateCap::connect(&client, redis.prefix(), RATE, BURST).unwrap()
        })
        .collect();

    let issued = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    // Eight callers per worker, as jobs running at once would be.
    for i in 0..16 {
        let (cap, issued) = (workers[i % 2].clone(), issued.clone());
        tasks.push(tokio::spawn(async move {
            let mut granted = Vec::new();
            while issued.fetch_add(1, Ordering::SeqCst) < PERMITS {
                cap.acquire().await;
                granted.push(started.elapsed());
            }
            (i % 2, granted)
        }));
    }
    let mut granted = Vec::new();
    let mut per_worker = [0; 2];
    for t in tasks {
        let (worker, times) = tokio::time::timeout(Duration::from_secs(30), t).await.unwrap().unwrap();
        per_worker[worker] += times.len();
        granted.extend(times);
    }
    let elapsed = started.elapsed();
    assert_eq!(granted.len(), PERMITS);
    assert!(per_worker.iter().all(|n| *n > 0), "both workers took permits: {per_worker:?}");

    // The burst goes at once, then one permit per 1/RATE s, whoever asks.
    let interval = Duration::from_secs(1) / RATE;
    granted.sort();
    for (k, at) in granted.iter().enumerate().skip(BURST as usize) {
        let earliest = interval * (k as u32 + 1 - BURST);
        assert!(*at + SLACK >= earliest, "permit {k} at {at:?}, before {earliest:?}");
    }
    let floor = interval * (PERMITS as u32 - BURST);
    assert!(elapsed + SLACK >= floor, "{PERMITS} permits in {elapsed:?}, under {floor:?}");
    assert!(elapsed < floor + Duration::from_secs(10), "{PERMITS} permits took {elapsed:?}");
    assert_eq!(redis.keys().await, vec![redis.key("pve:rate")], "one key for the cluster");
}

#[tokio::test]
async fn without_redis_each_process_keeps_the_rate() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
    let cap = ClusterRateCap::connect(&client, "nimbus:", 20, 5).unwrap();
    let limit = Duration::from_secs(10);
    // The first finds Redis down (within its timeout); the process paces itself from there.
    tokio::time::timeout(limit, cap.acquire()).await.expect("acquire returns without Redis");
    let started = Instant::now();
    for _ in 1..15 {
        tokio::time::timeout(limit, cap.acquire()).await.expect("acquire returns without Redis");
    }
    // Still paced: ten beyond the burst at 20 per second.
    let elapsed = started.elapsed();
    assert!(elapsed + SLACK >= Duration::from_millis(500), "15 permits in {elapsed:?}");
    assert!(elapsed < Duration::from_secs(10), "15 permits took {elapsed:?}");
}
