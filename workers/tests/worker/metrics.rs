//! A worker's metrics: jobs by kind and outcome, their duration, waits for a node's cap, the
//! Proxmox calls by path template, and the queue gauges read from Redis.

use std::time::Duration;

use nimbus_domain::{JobId, JobKind, JobStatus};
use nimbus_jobs::Dispatch;
use nimbus_telemetry::Registry;
use nimbus_worker::node_caps::NodeCaps;

use crate::support::{Harness, wait_until};

/// The value of the series `series` (0 when absent).
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

/// The sum of every series of `name` whose labels start with `labels_prefix`.
fn sum(text: &str, name: &str, labels_prefix: &str) -> f64 {
    text.lines()
        .filter_map(|l| l.strip_prefix(&format!("{name}{{{labels_prefix}")))
        .filter_map(|rest| rest.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_its_node_wait_its_proxmox_calls_and_the_queues_are_measured() {
    let h = Harness::new().await;
    let mut registry = Registry::default();
    // Billing is consumed by no one here, so what is pushed there waits.
    let worker = h
        .start_measured("measured", 2, &mut registry, |o| {
            o.queues.retain(|q| *q != "billing");
            o.queue_sample_every = Duration::from_millis(100);
        })
        .await;

    // Every node at its cap (1) for half a second: the provision's capped steps wait.
    let holder = NodeCaps::new(h.redis.client(), &h.key_prefix(), 1, Duration::from_secs(30)).await.unwrap();
    let mut held = Vec::new();
    for node in ["pve1", "pve2", "pve3"] {
        held.push(holder.try_acquire(node, "another-worker").await.unwrap().expect("a free node"));
    }
    let (_, enqueued) = h.accept("measured-1", 3).await;
    h.push(&enqueued).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for permit in held {
        permit.release().await;
    }
    let job = h.final_job(enqueued.job.id, Duration::from_secs(60)).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");

    let text = nimbus_telemetry::encode(&registry);
    assert_eq!(value(&text, "nimbus_jobs_total{kind=\"provision\",outcome=\"succeeded\"}"), 1.0, "{text}");
    assert_eq!(
        value(&text, "nimbus_job_duration_seconds_count{kind=\"provision\",outcome=\"succeeded\"}"),
        1.0,
        "{text}"
    );
    assert!(value(&text, "nimbus_job_duration_seconds_sum{kind=\"provision\",outcome=\"succeeded\"}") >= 0.4, "{text}");
    assert!(sum(&text, "nimbus_node_cap_waits_total", "node=") >= 1.0, "{text}");
    assert!(value(&text, "nimbus_node_cap_wait_seconds_sum") >= 0.3, "the wait lasted until the permits went: {text}");
    // Proxmox calls by template: the template's clone, and never a node's or guest's own name.
    assert!(
        sum(
            &text,
            "nimbus_proxmox_requests_total",
            "method=\"POST\",path=\"/nodes/{node}/qemu/{vmid}/clone\",status=\"200\""
        ) >= 1.0,
        "{text}"
    );
    assert!(!text.contains("path=\"/nodes/pve"), "a node's name in a path label: {text}");

    // A message nobody takes: the billing queue's gauges show it waiting, and for how long.
    let stranded = Dispatch { job_id: JobId::new(), kind: JobKind::Meter, queue: "billing".into() };
    h.queues().push(&stranded).await.unwrap();
    let waiting =
        || async { value(&nimbus_telemetry::encode(&registry), "nimbus_queue_waiting{queue=\"billing\"}") == 1.0 };
    assert!(wait_until(Duration::from_secs(10), waiting).await, "{}", nimbus_telemetry::encode(&registry));
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let text = nimbus_telemetry::encode(&registry);
    assert!(value(&text, "nimbus_queue_oldest_waiting_seconds{queue=\"billing\"}") >= 1.0, "{text}");
    assert_eq!(value(&text, "nimbus_queue_waiting{queue=\"provision\"}"), 0.0, "{text}");
    assert!(text.contains("nimbus_queue_dead{queue=\"provision\"} 0"), "{text}");
    worker.stop().await;
}
