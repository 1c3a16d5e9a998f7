//! Node caps shared by independent holders (two "processes": two `NodeCaps` with their own
//! connections) through Redis.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use nimbus_testkit::TestRedis;
use nimbus_worker::node_caps::NodeCaps;
use tokio_util::sync::CancellationToken;

async fn caps(redis: &TestRedis, cap: u32, ttl: Duration) -> NodeCaps {
    // A client of its own, like another process.
    let client = redis::Client::open(redis.url()).unwrap();
    NodeCaps::new(&client, &redis.key("nimbus:"), cap, ttl).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_override_sets_that_nodes_cap_apart() {
    let redis = TestRedis::new().await;
    let client = redis::Client::open(redis.url()).unwrap();
    let overrides = std::collections::HashMap::from([("pve1".to_owned(), 1), ("pve3".to_owned(), 0)]);
    let caps =
        NodeCaps::with_overrides(&client, &redis.key("nimbus:"), 2, overrides, Duration::from_secs(5)).await.unwrap();
    let _small = caps.try_acquire("pve1", "h-1").await.unwrap().expect("pve1 takes one");
    assert!(caps.try_acquire("pve1", "h-2").await.unwrap().is_none(), "pve1 is capped at 1");
    assert!(caps.try_acquire("pve3", "h-3").await.unwrap().is_none(), "pve3 takes no new work");
    let _a = caps.try_acquire("pve2", "h-4").await.unwrap().expect("pve2 has the default cap");
    let _b = caps.try_acquire("pve2", "h-5").await.unwrap().expect("pve2 has the default cap");
    assert!(caps.try_acquire("pve2", "h-6").await.unwrap().is_none(), "default cap 2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cap_holds_across_processes_and_frees_on_release() {
    let redis = TestRedis::new().await;
    let (a, b) = (caps(&redis, 2, Duration::from_secs(5)).await, caps(&redis, 2, Duration::from_secs(5)).await);
    let p1 = a.try_acquire("pve1", "a-1").await.unwrap().expect("first slot");
    let p2 = b.try_acquire("pve1", "b-1").await.unwrap().expect("second slot");
    assert!(a.try_acquire("pve1", "a-2").await.unwrap().is_none(), "full for a");
    assert!(b.try_acquire("pve1", "b-2").await.unwrap().is_none(), "full for b");
    let other = b.try_acquire("pve2", "b-3").await.unwrap().expect("another node has its own cap");
    assert_eq!(a.holders("pve1").await.unwrap(), 2);

    p1.release().await;
    let p3 = b.try_acquire("pve1", "b-2").await.unwrap().expect("a's release frees a slot for b");
    drop(p2);
    // Dropping releases in the background.
    let mut freed = false;
    for _ in 0..50 {
        if a.holders("pve1").await.unwrap() == 1 {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(freed);
    p3.release().await;
    other.release().await;
    assert_eq!(a.holders("pve1").await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_holder_s_slot_expires_and_live_ones_are_renewed() {
    let redis = TestRedis::new().await;
    let ttl = Duration::from_millis(600);
    let a = caps(&redis, 1, ttl).await;
    let b = caps(&redis, 1, ttl).await;
    let held = a.try_acquire("pve1", "a-1").await.unwrap().unwrap();
    // Held well past its ttl: the renewal keeps it.
    tokio::time::sleep(ttl * 3).await;
    assert!(b.try_acquire("pve1", "b-1").await.unwrap().is_none(), "renewed permit still held");
    // A holder that crashed (its renewal stops and nothing releases it) frees after the ttl.
    held.abandon();
    let mut got = None;
    for _ in 0..100 {
        if let Some(p) = b.try_acquire("pve1", "b-1").await.unwrap() {
            got = Some(p);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(got.is_some(), "the crashed holder's slot came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_work_on_a_node_never_exceeds_the_cap() {
    let redis = TestRedis::new().await;
    let instances = [caps(&redis, 2, Duration::from_secs(5)).await, caps(&redis, 2, Duration::from_secs(5)).await];
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let cancel = CancellationToken::new();
    let mut tasks = Vec::new();
    for i in 0..12 {
        let caps = instances[i % 2].clone();
        let (running, peak, cancel) = (running.clone(), peak.clone(), cancel.clone());
        tasks.push(tokio::spawn(async move {
            let permit = caps.acquire("pve1", &format!("h-{i}"), &cancel).await.unwrap().unwrap();
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(40)).await;
            running.fetch_sub(1, Ordering::SeqCst);
            permit.release().await;
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(20), t).await.unwrap().unwrap();
    }
    assert_eq!(peak.load(Ordering::SeqCst), 2, "the cap was reached and never exceeded");
    // A waiter gives up when cancelled.
    let a = &instances[0];
    let _p1 = a.try_acquire("pve9", "x-1").await.unwrap().unwrap();
    let _p2 = a.try_acquire("pve9", "x-2").await.unwrap().unwrap();
    cancel.cancel();
    assert!(a.acquire("pve9", "x-3", &cancel).await.unwrap().is_none());
}
