//! Users of a tenant, with their role. Emails are unique per tenant, case-insensitively.

use chrono::{DateTime, Utc};
use nimbus_domain::{Role, TenantId, UserId};
use sqlx::postgres::PgRow;
use sqlx::{FromRow, PgExecutor, Row};

use crate::{Result, rows};

/// A user row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// Id.
    pub id: UserId,
    /// Tenant.
    pub tenant_id: TenantId,
    /// Email (unique per tenant, case-insensitively).
    pub email: String,
    /// Display name.
    pub display_name: Option<String>,
    /// Role.
    pub role: Role,
    /// Whether the user may sign in and use keys.
    pub active: bool,
    /// Created at.
    pub created_at: DateTime<Utc>,
}

impl<'r> FromRow<'r, PgRow> for User {
    fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        Ok(User {
            id: rows::id(row, "id")?,
            tenant_id: rows::id(row, "tenant_id")?,
            email: row.try_get("email")?,
            display_name: row.try_get("display_name")?,
            role: rows::enumeration(row, "role")?,
            active: row.try_get("active")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

/// What [`create`] needs.
#[derive(Clone, Debug)]
pub struct NewUser {
    /// Email.
    pub email: String,
    /// Display name.
    pub display_name: Option<String>,
    /// Role.
    pub role: Role,
}

/// Inserts a user. A taken email is `Conflict { constraint: "users_tenant_email_key" }`.
pub async fn create(ex: impl PgExecutor<'_>, tenant: TenantId, new: &NewUser) -> Result<User> {
    create_with_id(ex, UserId::new(), tenant, new).await
}

/// [`create`] with a chosen id.
pub async fn create_with_id(ex: impl PgExecutor<'_>, id: UserId, tenant: TenantId, new: &NewUser) -> Result<User> {
    Ok(sqlx::query_as(
        "insert into users (id, tenant_id, email, display_name, role) values ($1, $2, $3, $4, $5) \
         returning id, tenant_id, email, display_name, role, active, created_at",
    )
    .bind(id.as_uuid())
    .bind(tenant.as_uuid())
    .bind(&new.email)
    .bind(&new.display_name)
    .bind(new.role.as_str())
    .fetch_one(ex)
    .await?)
}

/// A user of `tenant`.
pub async fn get(ex: impl PgExecutor<'_>, tenant: TenantId, id: UserId) -> Result<User> {
    Ok(sqlx::query_as(
        "select id, tenant_id, email, display_name, role, active, created_at from users \
         where tenant_id = $1 and id = $2",
    )
    .bind(tenant.as_uuid())
    .bind(id.as_uuid())
    .fetch_one(ex)
    .await?)
}

/// A user of `tenant` by email (case-insensitive).
pub async fn find_by_email(ex: impl PgExecutor<'_>, tenant: TenantId, email: &str) -> Result<Option<User>> {
    Ok(sqlx::query_as(
        "select id, tenant_id, email, display_name, role, active, created_at from users \
         where tenant_id = $1 and lower(email) = lower($2)",
    )
    .bind(tenant.as_uuid())
    .bind(email)
    .fetch_optional(ex)
    .await?)
}

/// The users of `tenant`, by email.
pub async fn list(ex: impl PgExecutor<'_>, tenant: TenantId) -> Result<Vec<User>> {
    Ok(sqlx::query_as(
        "select id, tenant_id, email, display_name, role, active, created_at from users \
         where tenant_id = $1 order by lower(email)",
    )
    .bind(tenant.as_uuid())
    .fetch_all(ex)
    .await?)
}

/// Activates or deactivates a user (a deactivated user's keys stop working).
pub async fn set_active(ex: impl PgExecutor<'_>, tenant: TenantId, id: UserId, active: bool) -> Result<User> {
    Ok(sqlx::query_as(
        "update users set active = $3 where tenant_id = $1 and id = $2 \
         returning id, tenant_id, email, display_name, role, active, created_at",
    )
    .bind(tenant.as_uuid())
    .bind(id.as_uuid())
    .bind(active)
    .fetch_one(ex)
    .await?)
}
