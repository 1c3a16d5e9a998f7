//! An instance's backup policy: `GET`/`PUT`/`DELETE /v1/vms/{id}/backup-policy`
//! (`{schedule, retention}`) and `GET /v1/vms/{id}/backup-policy/preview` (the retention's dry
//! run on the current backups).
//!
//! The schedule is a cron expression (UTC; `daily` and `weekly` too, which are placed at a minute
//! of the night window 00:00-05:59 UTC derived from the instance, Sunday night for `weekly`, so
//! that a node's backups do not all queue for its one backup slot at midnight) fired by the
//! workers' scheduler with the `latest_only` policy: after an outage, one backup, not one per missed
//! time. Each fire starts a backup job named by the schedule, which runs the retention after the
//! backup (Proxmox `prunebackups`, protected backups never removed). The plan limits both: the
//! schedule may not fire more often than `minIntervalMinutes`, and the retention may not keep
//! more than `maxBackups` (backups made on the Proxmox side count toward it, and a backup that
//! would exceed it is refused).

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use nimbus_db::backup_policies::{self, BackupPolicy};
use nimbus_db::instances::Instance;
use nimbus_db::plans::{self, BackupSettings};
use nimbus_db::schedules::NewSchedule;
use nimbus_domain::{
    ApiError as ApiErrorBody, ApiResponse, ErrorCode, InstanceId, InstanceStatus, MissedFirePolicy, ResourceRef,
    Retention,
};
use nimbus_jobs::BackupInstance;
use nimbus_jobs::schedule::CronSpec;
use nimbus_proxmox::PruneQuery;
use serde::{Deserialize, Serialize};

use crate::auth::AuthUser;
use crate::error::{ApiError, FieldError};
use crate::extract::{QueryParams, decode};
use crate::middleware::RequestId;
use crate::routes::vm_backups::{archive_id, belongs_to};
use crate::routes::vms::tenant_instance;
use crate::state::AppState;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/vms/{id}/backup-policy", get(show).put(put).delete(remove))
        .route("/v1/vms/{id}/backup-policy/preview", get(preview))
}

/// The note of scheduled backups.
const SCHEDULED_NOTE: &str = "scheduled";

/// The plan's limits as the policy shows them.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = VmBackupPolicyLimits)]
struct Limits {
    /// The most backups an instance may hold (the retention may keep no more).
    #[schema(example = 7)]
    max_backups: i32,
    /// The shortest time between two scheduled backups, minutes.
    #[schema(example = 60)]
    min_interval_minutes: i32,
}

/// An instance's policy as the customer sees it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = VmBackupPolicy)]
struct PolicyView {
    /// The cron expression (UTC; `daily` and `weekly` show as the time they were placed at);
    /// `null`: no scheduled backups.
    #[schema(example = "17 2 * * *")]
    schedule: Option<String>,
    /// What each scheduled backup keeps (the plan's default when there is no policy).
    retention: Retention,
    /// Paused by an operator.
    paused: bool,
    /// The next scheduled backup.
    next_run_at: Option<DateTime<Utc>>,
    /// The last scheduled backup.
    last_run_at: Option<DateTime<Utc>>,
    /// The plan's limits.
    limits: Limits,
}

fn view(policy: Option<BackupPolicy>, plan: &BackupSettings) -> PolicyView {
    let limits = Limits { max_backups: plan.max_backups, min_interval_minutes: plan.min_interval_minutes };
    match policy {
        Some(p) => PolicyView {
            schedule: Some(p.cron),
            retention: p.retention,
            paused: p.paused,
            next_run_at: Some(p.next_fire_at),
            last_run_at: p.last_fire_at,
            limits,
        },
        None => PolicyView {
            schedule: None,
            retention: Retention { keep_last: plan.max_backups.clamp(0, 7) as u32, ..Retention::default() },
            paused: false,
            next_run_at: None,
            last_run_at: None,
            limits,
        },
    }
}

/// The instance's backup policy: schedule, retention and the plan's limits.
///
/// An instance without a policy shows no schedule and the plan's default retention.
#[utoipa::path(
    get, path = "/v1/vms/{id}/backup-policy", operation_id = "getVmBackupPolicy", tag = "Backups",
    params(("id" = InstanceId, Path, description = "The instance's id.")),
    responses((status = 200, description = "The instance's backup policy.", body = ApiResponse<PolicyView>))
)]
async fn show(
    State(state): State<AppState>,
    auth: AuthUser,
    rid: RequestId,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let i = tenant_instance(&state, &auth, &id).await?;
    let plan = plans::backup_settings_for_tenant(state.db(), auth.tenant()).await?;
    let policy = backup_policies::get(state.db(), auth.tenant(), i.id).await?;
    Ok(super::data(&rid, view(policy, &plan)).into_response())
}

/// The body of `PUT /v1/vms/{id}/backup-policy`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PutVmBackupPolicy, example = json!({"schedule": "daily", "retention": {"keepLast": 3, "keepDaily": 7}}))]
struct PolicyBody {
    /// A cron expression (5 fields, UTC), `daily` or `weekly` (placed at a minute of 00:00-05:59
    /// UTC, Sunday night for `weekly`); no more often than the plan's `minIntervalMinutes`.
    /// `null` (or absent) turns scheduled backups off.
    #[schema(example = "daily")]
    schedule: Option<String>,
    /// What each scheduled backup keeps: at least one, at most the plan's `maxBackups` in all.
    retention: Retention,
}

/// Statuses in which an instance can have scheduled backups.
const SCHEDULABLE: &[InstanceStatus] =
    &[InstanceStatus::Provisioning, InstanceStatus::Running, InstanceStatus::Stopped];

/// The schedule and retention, checked against the plan.
fn check(body: &PolicyBody, plan: &BackupSettings, now: DateTime<Utc>) -> Result<Option<CronSpec>, ApiError> {
    let mut errors = Vec::new();
    let spec = match body.schedule.as_deref().map(CronSpec::parse) {
        None => None,
        Some(Err(e)) => {
            errors.push(FieldError::new("schedule", e.to_string()));
            None
        }
        Some(Ok(spec)) => {
            let min = chrono::Duration::minutes(i64::from(plan.min_interval_minutes.max(0)));
            if let Some(gap) = spec.shortest_gap(now).filter(|gap| *gap < min) {
                errors.push(FieldError::new(
                    "schedule",
                    format!(
                        "fires {} minutes apart; the plan allows a backup every {} minutes at most",
                        gap.num_minutes(),
                        min.num_minutes()
                    ),
                ));
            }
            Some(spec)
        }
    };
    let kept = body.retention.most_kept();
    if kept == 0 {
        errors.push(FieldError::new("retention", "keep at least one backup (keepLast, keepDaily, ...)"));
    } else if kept > plan.max_backups.max(0) as u64 {
        errors.push(FieldError::new(
            "retention",
            format!("keeps up to {kept} backups; the plan allows {} per instance", plan.max_backups),
        ));
    }
    if errors.is_empty() { Ok(spec) } else { Err(ApiError::Validation(errors)) }
}

/// Sets the instance's backup schedule and retention.
///
/// A `null` schedule turns scheduled backups off (and removes the policy).
#[utoipa::path(
    put, path = "/v1/vms/{id}/backup-policy", operation_id = "putVmBackupPolicy", tag = "Backups",
    params(("id" = InstanceId, Path, description = "The instance's id.")),
    request_body = PolicyBody,
    responses(
        (status = 200, description = "The policy as set.", body = ApiResponse<PolicyView>),
        (status = 409, description = "`INVALID_INSTANCE_STATE`: the instance is missing, failed, deleting or \
            deleted (`details.status`).", body = ApiErrorBody),
    )
)]
async fn put(
    State(state): State<AppState>,
    auth: AuthUser,
    rid: RequestId,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let i = tenant_instance(&state, &auth, &id).await?;
    let body = decode::<PolicyBody>(&bytes)?.value;
    if !SCHEDULABLE.contains(&i.status) {
        return Err(ApiError::Refused {
            code: ErrorCode::InvalidInstanceState,
            message: format!("a {} instance has no backups to schedule", i.status),
            details: serde_json::json!({ "status": i.status }),
        });
    }
    let plan = plans::backup_settings_for_tenant(state.db(), auth.tenant()).await?;
    let now = Utc::now();
    let body = PolicyBody { schedule: body.schedule.map(|s| in_night_window(&s, i.id)), ..body };
    let Some(spec) = check(&body, &plan, now)? else {
        backup_policies::remove(state.db(), auth.tenant(), i.id).await?;
        return Ok(super::data(&rid, view(None, &plan)).into_response());
    };
    let first_fire_at = spec.next_after(now).ok_or_else(|| ApiError::field("schedule", "never fires"))?;
    let mut job = BackupInstance { note: Some(SCHEDULED_NOTE.to_owned()), ..BackupInstance::default() }.new_job();
    job.resources = vec![ResourceRef::instance(i.id)];
    let schedule = NewSchedule {
        tenant: Some(auth.tenant()),
        name: format!("backups of {}", i.name),
        cron: spec.as_str().to_owned(),
        job,
        policy: MissedFirePolicy::LatestOnly,
        first_fire_at,
    };
    let mut tx = state.db().begin().await.map_err(nimbus_db::DbError::from)?;
    let policy = backup_policies::put(&mut tx, auth.tenant(), i.id, &schedule, body.retention).await?;
    tx.commit().await.map_err(nimbus_db::DbError::from)?;
    tracing::info!(vm.id = %i.id, schedule = %policy.cron, "backup policy set");
    Ok(super::data(&rid, view(Some(policy), &plan)).into_response())
}

/// `daily` and `weekly` as the cron expression of their time for `instance`; anything else as
/// given.
fn in_night_window(schedule: &str, instance: InstanceId) -> String {
    // The UUID's random end (its start is a timestamp), as a minute of the six-hour window.
    let minute = (instance.as_uuid().as_u128() & 0xffff_ffff) % (6 * 60);
    let (h, m) = (minute / 60, minute % 60);
    match schedule.trim().to_ascii_lowercase().as_str() {
        "daily" => format!("{m} {h} * * *"),
        "weekly" => format!("{m} {h} * * 0"),
        _ => schedule.to_owned(),
    }
}

/// Removes the instance's backup policy: no more scheduled backups (the backups stay).
#[utoipa::path(
    delete, path = "/v1/vms/{id}/backup-policy", operation_id = "deleteVmBackupPolicy", tag = "Backups",
    params(("id" = InstanceId, Path, description = "The instance's id.")),
    responses(
        (status = 204, description = "Removed."),
        (status = 404, description = "`NOT_FOUND`: no such instance, or it has no backup policy.", body = ApiErrorBody),
    )
)]
async fn remove(State(state): State<AppState>, auth: AuthUser, Path(id): Path<String>) -> Result<Response, ApiError> {
    let i = tenant_instance(&state, &auth, &id).await?;
    if !backup_policies::remove(state.db(), auth.tenant(), i.id).await? {
        return Err(ApiError::NotFound("backup policy"));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `?keepLast=&keepDaily=&keepWeekly=&keepMonthly=`; none: the retention `GET` shows.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct PreviewQuery {
    /// The newest N backups (absent: 0, when another option is given).
    #[param(example = 3)]
    keep_last: Option<u32>,
    /// The newest backup of each of N days.
    #[param(example = 7)]
    keep_daily: Option<u32>,
    /// The newest backup of each of N ISO weeks.
    keep_weekly: Option<u32>,
    /// The newest backup of each of N months.
    keep_monthly: Option<u32>,
}

/// One backup as the dry run marks it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = RetentionMark)]
struct Marked {
    /// The backup's id (its archive's file name).
    #[schema(example = "vzdump-qemu-104-2026_12_06-03_00_00.vma.zst")]
    id: String,
    /// When it was taken.
    created_at: Option<DateTime<Utc>>,
    /// `keep`, `remove` or `protected`.
    #[schema(example = "keep")]
    mark: String,
}

/// The dry run's answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = RetentionPreview)]
struct Preview {
    /// The retention tried.
    retention: Retention,
    /// The instance's backups, newest first, each marked.
    backups: Vec<Marked>,
    /// How many it would remove.
    #[schema(example = 2)]
    removes: usize,
}

/// A dry run of a retention on the instance's current backups.
///
/// Which backups it would keep and remove; the policy's retention when no option is given.
#[utoipa::path(
    get, path = "/v1/vms/{id}/backup-policy/preview", operation_id = "previewVmBackupRetention", tag = "Backups",
    params(("id" = InstanceId, Path, description = "The instance's id."), PreviewQuery),
    responses((status = 200, description = "The backups, each marked.", body = ApiResponse<Preview>))
)]
async fn preview(
    State(state): State<AppState>,
    auth: AuthUser,
    rid: RequestId,
    Path(id): Path<String>,
    QueryParams(q): QueryParams<PreviewQuery>,
) -> Result<Response, ApiError> {
    let i = tenant_instance(&state, &auth, &id).await?;
    let asked = [q.keep_last, q.keep_daily, q.keep_weekly, q.keep_monthly];
    let retention = if asked.iter().all(Option::is_none) {
        let plan = plans::backup_settings_for_tenant(state.db(), auth.tenant()).await?;
        view(backup_policies::get(state.db(), auth.tenant(), i.id).await?, &plan).retention
    } else {
        Retention {
            keep_last: q.keep_last.unwrap_or(0),
            keep_daily: q.keep_daily.unwrap_or(0),
            keep_weekly: q.keep_weekly.unwrap_or(0),
            keep_monthly: q.keep_monthly.unwrap_or(0),
        }
    };
    if retention.most_kept() == 0 {
        return Err(ApiError::field("keepLast", "keep at least one backup (keepLast, keepDaily, ...)"));
    }
    let backups = dry_run(&state, &i, retention).await?;
    let removes = backups.iter().filter(|b| b.mark == "remove").count();
    Ok(super::data(&rid, Preview { retention, backups, removes }).into_response())
}

/// Proxmox's dry run of `retention` on the guest's backups, newest first.
async fn dry_run(state: &AppState, i: &Instance, retention: Retention) -> Result<Vec<Marked>, ApiError> {
    let (Some(node), Some(vmid)) = (i.node.as_deref(), i.vmid) else { return Ok(Vec::new()) };
    let storage = plans::backup_settings_for_tenant(state.db(), i.tenant_id).await?.storage;
    let query = PruneQuery {
        prune_backups: retention.prune_backups(),
        guest_type: Some(i.kind.as_str().to_owned()),
        vmid: Some(vmid as u32),
    };
    let marks =
        state.inventory().client().node(node).storage(&storage).prune_preview(&query).await.map_err(|e| {
            ApiError::ProxmoxUnavailable(format!("retention dry run of {node}/{vmid} on {storage}: {e}"))
        })?;
    let mut out: Vec<Marked> = marks
        .into_iter()
        .filter(|m| belongs_to(i, Some(m.ctime)))
        .map(|m| Marked {
            id: archive_id(&m.volid).to_owned(),
            created_at: DateTime::from_timestamp(m.ctime, 0),
            mark: if m.mark == "renamed" { "keep".to_owned() } else { m.mark },
        })
        .collect();
    out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
    Ok(out)
}

/// The paths of this module, for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(show, put, remove, preview))]
pub struct ApiDoc;

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(max_backups: i32, min_interval_minutes: i32) -> BackupSettings {
        BackupSettings { storage: "local".into(), max_backups, min_interval_minutes }
    }

    fn body(schedule: Option<&str>, keep_last: u32, keep_daily: u32) -> PolicyBody {
        PolicyBody {
            schedule: schedule.map(str::to_owned),
            retention: Retention { keep_last, keep_daily, ..Retention::default() },
        }
    }

    fn fields(r: Result<Option<CronSpec>, ApiError>) -> Vec<String> {
        match r {
            Err(ApiError::Validation(errors)) => errors.into_iter().filter_map(|e| e.field).collect(),
            Err(e) => panic!("not a validation error: {e:?}"),
            Ok(_) => Vec::new(),
        }
    }

    #[test]
    fn daily_and_weekly_are_spread_over_the_night() {
        let mut minutes = std::collections::HashSet::new();
        for _ in 0..50 {
            let id = InstanceId::new();
            let daily = in_night_window("daily", id);
            assert_eq!(daily, in_night_window("Daily", id), "the same instance, the same time");
            let fields: Vec<u32> = daily.split(' ').take(2).map(|f| f.parse().unwrap()).collect();
            assert!(fields[0] < 60 && fields[1] < 6, "{daily}");
            assert!(CronSpec::parse(&daily).is_ok());
            assert_eq!(in_night_window("weekly", id), format!("{} {} * * 0", fields[0], fields[1]));
            minutes.insert(daily);
        }
        assert!(minutes.len() > 25, "spread, not all at one time: {minutes:?}");
        assert_eq!(in_night_window("0 3 * * *", InstanceId::new()), "0 3 * * *");
    }

    #[test]
    fn the_plan_limits_schedule_and_retention() {
        let now = Utc::now();
        assert!(fields(check(&body(Some("0 3 * * *"), 3, 7), &plan(10, 60), now)).is_empty());
        // Every 30 minutes is more often than the plan's hour.
        assert_eq!(fields(check(&body(Some("*/30 * * * *"), 3, 0), &plan(10, 60), now)), ["schedule"]);
        assert_eq!(fields(check(&body(Some("not cron"), 3, 0), &plan(10, 60), now)), ["schedule"]);
        // 3 + 8 kept is more than 10.
        assert_eq!(fields(check(&body(Some("daily"), 3, 8), &plan(10, 60), now)), ["retention"]);
        // Keeping nothing by any option is Proxmox's keep-all: unbounded.
        assert_eq!(fields(check(&body(Some("daily"), 0, 0), &plan(10, 60), now)), ["retention"]);
        // No schedule: nothing to check but the retention.
        assert!(matches!(check(&body(None, 1, 0), &plan(10, 60), now), Ok(None)));
    }
}
