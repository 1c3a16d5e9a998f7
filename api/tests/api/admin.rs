//! `/v1/admin`: retrying a failed job (admin role only, own tenant only, failed jobs only), and
//! the admin queue view.

use std::time::Duration;

use nimbus_db::api_keys;
use nimbus_db::instances;
use nimbus_db::jobs;
use nimbus_db::users::{self, NewUser};
use nimbus_domain::{ErrorCode, InstanceId, InstanceStatus, JobError, JobId, PlanLimits, Role, TenantId};
use redis::AsyncCommands;
use serde_json::Value;

use crate::support::{ROOMY, TestApp, assert_error, new_tenant, split, vm_body};

/// Creates a VM and drives its job to `failed` through the ledger, with its instance marked
/// failed as the worker does; returns the job and instance ids.
async fn failed_provision(app: &TestApp, name: &str) -> (JobId, InstanceId) {
    let (status, _, body) = app.create_vm(&vm_body(name), &[]).await;
    assert_eq!(status, 202, "{body}");
    let job: JobId = body["data"]["id"].as_str().unwrap().parse().unwrap();
    let instance: InstanceId = body["data"]["resources"][0]["id"].as_str().unwrap().parse().unwrap();
    jobs::claim(app.pool(), job, "worker-1", Duration::from_secs(30)).await.unwrap().expect("claimed");
    let error = JobError { code: ErrorCode::ProxmoxRejected, message: "clone refused".into(), retryable: false };
    let failed = jobs::fail(app.pool(), job, "worker-1", &error, Duration::ZERO).await.unwrap();
    assert_eq!(failed.status.as_str(), "failed");
    instances::set_status(app.pool(), instance, InstanceStatus::Failed).await.unwrap();
    (job, instance)
}

async fn retry_as(app: &TestApp, token: &str, id: &str) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Value) {
    retry_with(app, token, id, "").await
}

async fn retry_with(
    app: &TestApp,
    token: &str,
    id: &str,
    query: &str,
) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Value) {
    let r =
        app.http.post(app.url(&format!("/v1/admin/jobs/{id}/retry{query}"))).bearer_auth(token).send().await.unwrap();
    split(r).await
}

/// A key of a user with `role` in the default tenant.
async fn key_with_role(app: &TestApp, role: Role) -> String {
    let user = users::create(
        app.pool(),
        app.tenant,
        &NewUser { email: format!("{}@acme.test", role.as_str()), display_name: None, role },
    )
    .await
    .unwrap();
    api_keys::create(app.pool(), app.tenant, user.id, "test", &[], None).await.unwrap().1
}

async fn job_row(app: &TestApp, id: JobId) -> (String, i32, i32) {
    sqlx::query_as("select status, attempts, max_attempts from jobs where id = $1")
        .bind(id.as_uuid())
        .fetch_one(app.pool())
        .await
        .unwrap()
}

async fn instance_status(app: &TestApp, id: InstanceId) -> String {
    sqlx::query_scalar("select status from instances where id = $1")
        .bind(id.as_uuid())
        .fetch_one(app.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn an_admin_retries_a_failed_job_which_is_requeued_pushed_and_its_instance_provisioning() {
    let app = TestApp::new().await;
    let (job, instance) = failed_provision(&app, "web-1").await;
    assert_eq!(job_row(&app, job).await, ("failed".into(), 1, 5));

    let (status, headers, body) = retry_as(&app, &app.token, &job.to_string()).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(headers["location"], format!("/v1/jobs/{job}").as_str());
    assert_eq!(body["data"]["id"], job.to_string());
    assert_eq!(body["data"]["status"], "queued");
    assert_eq!(body["data"]["error"], Value::Null);
    assert!(body["meta"]["requestId"].is_string());

    // Ledger: queued again with the default extra attempts on top of the one it used.
    assert_eq!(job_row(&app, job).await, ("queued".into(), 1, 1 + 5));
    let messages: Vec<Option<String>> =
        sqlx::query_scalar("select message from job_events where job_id = $1 order by id")
            .bind(job.as_uuid())
            .fetch_all(app.pool())
            .await
            .unwrap();
    assert_eq!(messages.last().unwrap().as_deref(), Some("retried by an administrator"));
    assert_eq!(instance_status(&app, instance).await, "provisioning");

    // Outbox: the retry's row, pushed by the fast path (the create wrote none); the stream holds
    // both pushes.
    let pushed = app.outbox_marks_settled(Some(job), 1).await;
    assert!(pushed.iter().all(Option::is_some), "the retry's push is marked: {pushed:?}");
    let mut conn = app.redis.connection().await;
    let len: usize = conn.xlen(app.redis.key("nimbus:q:{provision}")).await.unwrap();
    assert_eq!(len, 2);

    // A worker can claim it again: attempt 2 of 6.
    let claimed = jobs::claim(app.pool(), job, "worker-2", Duration::from_secs(30)).await.unwrap().expect("claimed");
    assert_eq!((claimed.attempts, claimed.max_attempts), (2, 6));
}

#[tokio::test]
async fn attempts_can_be_chosen_within_bounds() {
    let app = TestApp::new().await;
    let (job, _) = failed_provision(&app, "web-1").await;
    let (status, _, body) = retry_with(&app, &app.token, &job.to_string(), "?attempts=0").await;
    assert_eq!(status, 400, "{body}");
    assert_error(&body, "VALIDATION_FAILED");
    assert_eq!(job_row(&app, job).await.0, "failed");
    let (status, _, body) = retry_with(&app, &app.token, &job.to_string(), "?attempts=2").await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(job_row(&app, job).await, ("queued".into(), 1, 3));
}

#[tokio::test]
async fn a_non_admin_is_forbidden_and_nothing_changes() {
    let app = TestApp::new().await;
    let (job, instance) = failed_provision(&app, "web-1").await;
    for role in [Role::User, Role::BillingAdmin] {
        let token = key_with_role(&app, role).await;
        let (status, _, body) = retry_as(&app, &token, &job.to_string()).await;
        assert_eq!(status, 403, "{body}");
        assert_error(&body, "FORBIDDEN");
        let (status, _, body) = app.get_as(&token, "/v1/admin/jobs?status=failed").await;
        assert_eq!(status, 403, "{body}");
        assert_error(&body, "FORBIDDEN");
    }
    assert_eq!(job_row(&app, job).await.0, "failed");
    assert_eq!(instance_status(&app, instance).await, "failed");
    assert_eq!(app.count("outbox").await, 0, "no retry, no dispatch owed");
}

#[tokio::test]
async fn a_job_that_is_not_failed_is_a_conflict_naming_its_status() {
    let app = TestApp::new().await;
    let (_, _, body) = app.create_vm(&vm_body("web-1"), &[]).await;
    let queued = body["data"]["id"].as_str().unwrap().to_owned();
    let (status, _, body) = retry_as(&app, &app.token, &queued).await;
    assert_eq!(status, 409, "{body}");
    assert_error(&body, "INVALID_JOB_STATE");
    assert_eq!(body["error"]["details"]["status"], "queued");
    assert_eq!(body["error"]["details"]["jobId"], queued.as_str());

    // A retried job is queued again, so a second retry is refused the same way.
    let (job, _) = failed_provision(&app, "web-2").await;
    assert_eq!(retry_as(&app, &app.token, &job.to_string()).await.0, 202);
    let (status, _, body) = retry_as(&app, &app.token, &job.to_string()).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["details"]["status"], "queued");
    assert_eq!(job_row(&app, job).await, ("queued".into(), 1, 6), "the refused retry added nothing");
}

#[tokio::test]
async fn an_operator_sees_and_retries_every_tenants_jobs() {
    let app = TestApp::new().await;
    let (job, instance) = failed_provision(&app, "web-1").await;
    // An administrator of another tenant: the provider's operator.
    let (_, operator) = new_tenant(app.pool(), ROOMY).await;

    let (_, _, listed) = app.get_as(&operator, "/v1/admin/jobs").await;
    assert_eq!(listed["pagination"]["total"], 1, "{listed}");
    assert_eq!(listed["data"][0]["tenantId"], app.tenant.to_string());
    let (_, _, filtered) = app.get_as(&operator, &format!("/v1/admin/jobs?tenant={}", TenantId::new())).await;
    assert_eq!(filtered["pagination"]["total"], 0, "{filtered}");
    let (status, _, bad) = app.get_as(&operator, "/v1/admin/jobs?tenant=nope").await;
    assert_eq!(status, 400, "{bad}");

    let (status, _, missing) = retry_as(&app, &operator, &JobId::new().to_string()).await;
    assert_eq!(status, 404, "{missing}");
    assert_error(&missing, "NOT_FOUND");
    let (status, _, malformed) = retry_as(&app, &operator, "not-a-job").await;
    assert_eq!(status, 404, "{malformed}");
    assert_eq!(malformed["error"], missing["error"]);

    let (status, _, body) = retry_as(&app, &operator, &job.to_string()).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(job_row(&app, job).await.0, "queued");
    assert_eq!(instance_status(&app, instance).await, "provisioning", "revived in its own tenant");
}

#[tokio::test]
async fn a_retry_that_no_longer_fits_the_plan_is_refused_and_changes_nothing() {
    let limits = PlanLimits { max_instances: 1, ..ROOMY };
    let app = TestApp::with(limits, Default::default()).await;
    let (job, instance) = failed_provision(&app, "web-1").await;
    // The failed instance released its slot, and another took it.
    let (status, _, body) = app.create_vm(&vm_body("web-2"), &[]).await;
    assert_eq!(status, 202, "{body}");

    let (status, _, body) = retry_as(&app, &app.token, &job.to_string()).await;
    assert_eq!(status, 422, "{body}");
    assert_error(&body, "QUOTA_EXCEEDED");
    assert_eq!(job_row(&app, job).await, ("failed".into(), 1, 5));
    assert_eq!(instance_status(&app, instance).await, "failed");
    assert_eq!(app.count("outbox").await, 0, "creates push without a row; the refused retry owes none");
}

#[tokio::test]
async fn the_admin_queue_view_lists_jobs_by_status() {
    let app = TestApp::new().await;
    let (failed, _) = failed_provision(&app, "web-1").await;
    let (_, headers, body) = app.create_vm(&vm_body("web-2"), &[("x-request-id", "req-q-2")]).await;
    // The job carries the server's request id, whatever the client sent.
    let request_id = headers["x-request-id"].to_str().unwrap().to_owned();
    assert_ne!(request_id, "req-q-2");
    let queued = body["data"]["id"].as_str().unwrap().to_owned();

    let (status, _, body) = app.get("/v1/admin/jobs?status=failed").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["pagination"]["total"], 1, "{body}");
    let item = &body["data"][0];
    assert_eq!(item["id"], failed.to_string());
    assert_eq!(item["status"], "failed");
    assert_eq!(item["error"]["code"], "PROXMOX_REJECTED");
    assert_eq!(item["attempts"], 1);
    assert_eq!(item["maxAttempts"], 5);
    assert_eq!(item["queue"], "provision");

    let (_, _, body) = app.get("/v1/admin/jobs?status=queued").await;
    assert_eq!(body["pagination"]["total"], 1, "{body}");
    assert_eq!(body["data"][0]["id"], queued.as_str());
    assert_eq!(body["data"][0]["requestId"], request_id.as_str());

    let (_, _, body) = app.get("/v1/admin/jobs").await;
    assert_eq!(body["pagination"]["total"], 2, "{body}");
    let (status, _, body) = app.get("/v1/admin/jobs?status=bogus").await;
    assert_eq!(status, 400, "{body}");
}
