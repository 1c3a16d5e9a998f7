//! `GET /v1/admin/schedules` and pausing and resuming one: operators see every schedule with
//! its next and last fire and the state of the job that fire started.

use nimbus_db::jobs::NewJob;
use nimbus_db::schedules::{self, NewSchedule};
use nimbus_domain::{JobKind, MissedFirePolicy};
use nimbus_jobs::ManualClock;
use serde_json::json;

use crate::support::{TestApp, split};

#[tokio::test]
async fn operators_see_each_schedule_with_its_fires_and_can_pause_it() {
    let app = TestApp::new().await;
    let first = chrono::DateTime::parse_from_rfc3339("2026-12-07T03:00:00Z").unwrap().with_timezone(&chrono::Utc);
    let new = NewSchedule {
        tenant: None,
        name: "hourly metering".into(),
        cron: "0 * * * *".into(),
        job: NewJob::new(JobKind::Meter, "meter", json!({})),
        policy: MissedFirePolicy::CatchUpAll,
        first_fire_at: first,
    };
    let made = schedules::create(app.pool(), &new).await.unwrap();
    let (status, _, listed) = app.get("/v1/admin/schedules").await;
    assert_eq!(status, 200, "{listed}");
    let one = &listed["data"][0];
    assert_eq!(one["id"], made.id.to_string());
    assert_eq!(one["tenantId"], serde_json::Value::Null, "a system schedule");
    assert_eq!((one["cron"].as_str(), one["missedFirePolicy"].as_str()), (Some("0 * * * *"), Some("catch_up_all")));
    assert_eq!(one["nextFireAt"], "2026-12-07T03:00:00Z");
    assert!(one["lastFire"].is_null(), "{one}");

    // After a fire: its time and its job's status.
    let clock = ManualClock::at(first + chrono::Duration::minutes(1));
    let queues = nimbus_jobs::Queues::new(app.redis.url(), app.redis.key("nimbus:")).unwrap();
    nimbus_worker::scheduler::tick(app.pool(), &queues, &clock).await.unwrap();
    let (_, _, listed) = app.get("/v1/admin/schedules").await;
    let one = &listed["data"][0];
    assert_eq!(one["lastFire"]["at"], "2026-12-07T03:00:00Z", "{one}");
    assert_eq!(one["lastFire"]["jobStatus"], "queued");
    assert_eq!(one["nextFireAt"], "2026-12-07T04:00:00Z");

    let post = |path: String| app.http.post(app.url(&path)).bearer_auth(&app.token).send();
    let (status, _, paused) = split(post(format!("/v1/admin/schedules/{}/pause", made.id)).await.unwrap()).await;
    assert_eq!((status.as_u16(), paused["data"]["paused"].as_bool()), (200, Some(true)), "{paused}");
    let (_, _, only_paused) = app.get("/v1/admin/schedules?paused=true").await;
    assert_eq!(only_paused["pagination"]["total"], 1);
    let (_, _, running) = app.get("/v1/admin/schedules?paused=false").await;
    assert_eq!(running["pagination"]["total"], 0);
    let (status, _, resumed) = split(post(format!("/v1/admin/schedules/{}/resume", made.id)).await.unwrap()).await;
    assert_eq!((status.as_u16(), resumed["data"]["paused"].as_bool()), (200, Some(false)));

    let unknown = "01a217b7-cec9-7448-8945-442910b55deb";
    let (status, _, body) = split(post(format!("/v1/admin/schedules/{unknown}/pause")).await.unwrap()).await;
    assert_eq!((status.as_u16(), body["error"]["code"].as_str()), (404, Some("NOT_FOUND")), "{body}");
}
