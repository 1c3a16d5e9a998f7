//! `GET /v1/jobs/{id}/events`: the SSE stream replays the ledger, follows it while a worker
//! (driven here through nimbus-db) makes progress, and ends with the final state.

use std::time::Duration;

use futures::StreamExt;
use nimbus_db::jobs::{self, Progress};
use nimbus_domain::JobId;
use nimbus_jobs::JobEventPublisher;
use serde_json::Value;

use crate::support::{Options, ROOMY, TestApp, vm_body};

/// One parsed SSE event.
#[derive(Debug)]
struct SseEvent {
    event: String,
    id: Option<String>,
    data: Value,
}

/// Reads events until the server closes the stream (or panics after `limit`).
async fn read_all(response: reqwest::Response, limit: Duration) -> Vec<SseEvent> {
    let mut bytes = response.bytes_stream();
    let mut buffer = String::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let chunk = tokio::time::timeout_at(deadline, bytes.next()).await.expect("the stream ended in time");
        let Some(chunk) = chunk else { return events };
        buffer.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let (mut event, mut id, mut data) = (String::from("message"), None, String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            if !data.is_empty() {
                events.push(SseEvent { event, id, data: serde_json::from_str(&data).unwrap() });
            }
        }
    }
}

#[tokio::test]
async fn the_event_stream_replays_follows_and_ends_with_the_final_state() {
    let app = TestApp::new().await;
    let (_, _, created) = app.create_vm(&vm_body("web-1"), &[]).await;
    let id: JobId = created["data"]["id"].as_str().unwrap().parse().unwrap();

    let response =
        app.http.get(app.url(&format!("/v1/jobs/{id}/events"))).bearer_auth(&app.token).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let reader = tokio::spawn(read_all(response, Duration::from_secs(20)));

    // A worker's life of the job, through the ledger, while the client is connected.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pool = app.pool();
    let lease = Duration::from_secs(30);
    jobs::claim(pool, id, "worker-1", lease).await.unwrap().expect("claimed");
    jobs::record_progress(pool, id, "worker-1", Progress { progress: 40, step: Some("clone"), ..Default::default() })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    jobs::record_progress(pool, id, "worker-1", Progress { progress: 80, step: Some("start"), ..Default::default() })
        .await
        .unwrap();
    jobs::complete(pool, id, "worker-1", None).await.unwrap();

    let events = reader.await.unwrap();
    let progress: Vec<(String, i64, Option<String>)> = events
        .iter()
        .filter(|e| e.event == "progress")
        .map(|e| {
            (
                e.data["status"].as_str().unwrap().to_owned(),
                e.data["progress"].as_i64().unwrap(),
                e.data["step"].as_str().map(str::to_owned),
            )
        })
        .collect();
    assert_eq!(
        progress,
        [
            ("queued".to_owned(), 0, None),
            ("running".to_owned(), 0, None),
            ("running".to_owned(), 40, Some("clone".to_owned())),
            ("running".to_owned(), 80, Some("start".to_owned())),
            ("succeeded".to_owned(), 100, Some("start".to_owned())),
        ]
    );
    let last = events.last().unwrap();
    assert_eq!(last.event, "end");
    assert_eq!(last.data["status"], "succeeded");
    assert_eq!(last.data["id"], id.to_string());
    assert_eq!(last.data["progress"], 100);

    // Event ids are the ledger's, increasing: a reconnect with Last-Event-ID resumes after it.
    let ids: Vec<i64> = events.iter().filter_map(|e| e.id.as_deref()).map(|i| i.parse().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let response = app
        .http
        .get(app.url(&format!("/v1/jobs/{id}/events")))
        .bearer_auth(&app.token)
        .header("last-event-id", ids[2].to_string())
        .send()
        .await
        .unwrap();
    let resumed = read_all(response, Duration::from_secs(10)).await;
    let statuses: Vec<&str> = resumed.iter().map(|e| e.data["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["running", "succeeded", "succeeded"], "events after the third, then the end");
    assert_eq!(resumed.last().unwrap().event, "end");
}

#[tokio::test]
async fn a_published_change_wakes_the_stream_long_before_its_fallback_poll() {
    let options = Options { sse_poll: Some(Duration::from_secs(60)), ..Options::default() };
    let app = TestApp::with(ROOMY, options).await;
    let (_, _, created) = app.create_vm(&vm_body("web-1"), &[]).await;
    let id: JobId = created["data"]["id"].as_str().unwrap().parse().unwrap();
    let response =
        app.http.get(app.url(&format!("/v1/jobs/{id}/events"))).bearer_auth(&app.token).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let reader = tokio::spawn(read_all(response, Duration::from_secs(15)));

    // What a worker does: change the ledger, then publish the job's id.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let publisher = JobEventPublisher::new(
        redis::Client::open(app.redis.url()).unwrap(),
        &format!("{}nimbus:", app.redis.prefix()),
    );
    let pool = app.pool();
    jobs::claim(pool, id, "worker-1", Duration::from_secs(30)).await.unwrap().expect("claimed");
    publisher.publish(id).await;
    jobs::complete(pool, id, "worker-1", None).await.unwrap();
    publisher.publish(id).await;

    // Without the wake-ups the stream would sleep 60 s and `read_all` would give up at 15 s.
    let events = reader.await.unwrap();
    let statuses: Vec<&str> = events.iter().filter_map(|e| e.data["status"].as_str()).collect();
    assert_eq!(statuses, ["queued", "running", "succeeded", "succeeded"], "{events:?}");
    assert_eq!(events.last().unwrap().event, "end");
}

#[tokio::test]
async fn a_failed_job_streams_its_error_and_ends() {
    let app = TestApp::new().await;
    let (_, _, created) = app.create_vm(&vm_body("web-1"), &[]).await;
    let id: JobId = created["data"]["id"].as_str().unwrap().parse().unwrap();
    let pool = app.pool();
    jobs::claim(pool, id, "w", Duration::from_secs(30)).await.unwrap().unwrap();
    let error = nimbus_domain::JobError {
        code: nimbus_domain::ErrorCode::ProxmoxRejected,
        message: "template is locked".into(),
        retryable: false,
    };
    jobs::fail(pool, id, "w", &error, Duration::ZERO).await.unwrap();

    // Already final: the replay alone ends the stream.
    let response =
        app.http.get(app.url(&format!("/v1/jobs/{id}/events"))).bearer_auth(&app.token).send().await.unwrap();
    let events = read_all(response, Duration::from_secs(10)).await;
    let end = events.last().unwrap();
    assert_eq!(end.event, "end");
    assert_eq!(end.data["status"], "failed");
    assert_eq!(end.data["error"]["code"], "PROXMOX_REJECTED");
    assert_eq!(events[events.len() - 2].data["message"], "template is locked");

    let (_, _, shown) = app.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(shown["data"]["status"], "failed");
    assert_eq!(shown["data"]["attempts"], 1);
}
