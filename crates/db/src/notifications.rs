//! The in-app feed, users' notification choices and the emails owed (DESIGN §11).
//!
//! The feed has a row per (user, event) and email a row per (user, event) in
//! `notification_emails` (each sent by a `notify` job), both unique, so an event handled twice
//! notifies nobody twice. A user's choice per event type is a row of `notification_preferences`;
//! a type without one takes its default (`nimbus_domain::events`): in-app always, email for the
//! types marked so.

use chrono::{DateTime, Utc};
use nimbus_domain::{TenantId, UserId};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::{DbError, Result};

/// One entry of the feed.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Notification {
    pub id: Uuid,
    pub event_id: Uuid,
    #[sqlx(rename = "type")]
    pub kind: String,
    pub title: String,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub read_at: Option<DateTime<Utc>>,
}

/// Adds `events` (their ids and titles) to the feed of every active user of their tenant who has
/// not turned the type off in-app. Returns the users whose feed grew.
pub async fn add_to_feeds(ex: impl PgExecutor<'_>, events: &[Uuid], titles: &[String]) -> Result<Vec<Uuid>> {
    Ok(sqlx::query_scalar(
        "insert into notifications (id, tenant_id, user_id, event_id, type, title, resource_type, resource_id, created_at) \
         select gen_random_uuid(), e.tenant_id, u.id, e.id, e.type, t.title, e.resource_type, e.resource_id, e.occurred_at \
         from unnest($1::uuid[], $2::text[]) as t(event_id, title) \
         join events e on e.id = t.event_id \
         join users u on u.tenant_id = e.tenant_id and u.active \
         left join notification_preferences p on p.user_id = u.id and p.event_type = e.type \
         where coalesce(p.in_app, true) \
         on conflict (user_id, event_id) do nothing returning user_id",
    )
    .bind(events)
    .bind(titles)
    .fetch_all(ex)
    .await?)
}

/// An email owed: the user and the event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct OwedEmail {
    pub user_id: Uuid,
    pub tenant_id: Uuid,
    pub event_id: Uuid,
}

/// Records the emails `events` owe: one per active user of their tenant whose address has not
/// bounced and who chose email for the type (or did not choose and it is one of
/// `email_by_default`). Returns those not recorded before.
pub async fn owe_emails(ex: impl PgExecutor<'_>, events: &[Uuid], email_by_default: &[&str]) -> Result<Vec<OwedEmail>> {
    Ok(sqlx::query_as(
        "with owed as (insert into notification_emails (user_id, event_id) \
           select u.id, e.id from events e \
           join users u on u.tenant_id = e.tenant_id and u.active and u.email_bounced_at is null \
           left join notification_preferences p on p.user_id = u.id and p.event_type = e.type \
           where e.id = any($1) and e.type <> 'webhook.test' and coalesce(p.email, e.type = any($2)) \
           on conflict (user_id, event_id) do nothing returning user_id, event_id) \
         select owed.user_id, u.tenant_id, owed.event_id from owed join users u on u.id = owed.user_id",
    )
    .bind(events)
    .bind(email_by_default)
    .fetch_all(ex)
    .await?)
}

/// Notes the job that sends an owed email.
pub async fn set_email_job(ex: impl PgExecutor<'_>, user: Uuid, event: Uuid, job: Uuid) -> Result<()> {
    sqlx::query("update notification_emails set job_id = $3 where user_id = $1 and event_id = $2")
        .bind(user)
        .bind(event)
        .bind(job)
        .execute(ex)
        .await?;
    Ok(())
}

/// Marks `user`'s address as refused for good by the mail server.
pub async fn mark_bounced(ex: impl PgExecutor<'_>, user: Uuid, at: DateTime<Utc>) -> Result<()> {
    sqlx::query("update users set email_bounced_at = $2 where id = $1").bind(user).bind(at).execute(ex).await?;
    Ok(())
}

/// `user`'s feed, unread first, newest first within each; with the total and the unread count.
pub async fn feed(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    unread_only: bool,
    limit: i64,
    offset: i64,
) -> Result<(Vec<Notification>, i64)> {
    let rows = sqlx::query_as(
        "select id, event_id, type, title, resource_type, resource_id, created_at, read_at from notifications \
         where tenant_id = $1 and user_id = $2 and (not $3 or read_at is null) \
         order by (read_at is null) desc, created_at desc, id desc limit $4 offset $5",
    )
    .bind(tenant.as_uuid())
    .bind(user.as_uuid())
    .bind(unread_only)
    .bind(limit)
    .bind(offset)
    .fetch_all(&mut *conn)
    .await?;
    let total = sqlx::query_scalar(
        "select count(*) from notifications where tenant_id = $1 and user_id = $2 and (not $3 or read_at is null)",
    )
    .bind(tenant.as_uuid())
    .bind(user.as_uuid())
    .bind(unread_only)
    .fetch_one(&mut *conn)
    .await?;
    Ok((rows, total))
}

/// How many of `user`'s notifications are unread.
pub async fn unread_count(ex: impl PgExecutor<'_>, tenant: TenantId, user: UserId) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "select count(*) from notifications where tenant_id = $1 and user_id = $2 and read_at is null",
    )
    .bind(tenant.as_uuid())
    .bind(user.as_uuid())
    .fetch_one(ex)
    .await?)
}

/// Marks one of `user`'s notifications read (again is fine).
pub async fn mark_read(ex: impl PgExecutor<'_>, tenant: TenantId, user: UserId, id: Uuid) -> Result<()> {
    let done = sqlx::query(
        "update notifications set read_at = coalesce(read_at, now()) where tenant_id = $1 and user_id = $2 and id = $3",
    )
    .bind(tenant.as_uuid())
    .bind(user.as_uuid())
    .bind(id)
    .execute(ex)
    .await?;
    if done.rows_affected() == 0 { Err(DbError::NotFound) } else { Ok(()) }
}

/// Marks all of `user`'s notifications read; returns how many were unread.
pub async fn mark_all_read(ex: impl PgExecutor<'_>, tenant: TenantId, user: UserId) -> Result<u64> {
    Ok(sqlx::query(
        "update notifications set read_at = now() where tenant_id = $1 and user_id = $2 and read_at is null",
    )
    .bind(tenant.as_uuid())
    .bind(user.as_uuid())
    .execute(ex)
    .await?
    .rows_affected())
}

/// A user's choice for one type.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Preference {
    pub event_type: String,
    pub email: bool,
    pub in_app: bool,
}

/// The choices `user` made (types without a row take their defaults).
pub async fn preferences(ex: impl PgExecutor<'_>, user: UserId) -> Result<Vec<Preference>> {
    Ok(sqlx::query_as("select event_type, email, in_app from notification_preferences where user_id = $1")
        .bind(user.as_uuid())
        .fetch_all(ex)
        .await?)
}

/// Stores `user`'s choices for the types in `choices` (others keep theirs).
pub async fn set_preferences(ex: impl PgExecutor<'_>, user: UserId, choices: &[Preference]) -> Result<()> {
    let types: Vec<&str> = choices.iter().map(|c| c.event_type.as_str()).collect();
    let email: Vec<bool> = choices.iter().map(|c| c.email).collect();
    let in_app: Vec<bool> = choices.iter().map(|c| c.in_app).collect();
    sqlx::query(
        "insert into notification_preferences (user_id, event_type, email, in_app) \
         select $1, t, e, i from unnest($2::text[], $3::bool[], $4::bool[]) as c(t, e, i) \
         on conflict (user_id, event_type) do update set email = excluded.email, in_app = excluded.in_app",
    )
    .bind(user.as_uuid())
    .bind(&types)
    .bind(&email)
    .bind(&in_app)
    .execute(ex)
    .await?;
    Ok(())
}
