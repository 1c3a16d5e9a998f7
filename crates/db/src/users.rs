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

// The operators' functions below deliberately span tenants: only the `/v1/admin` user routes,
// whose callers are the provider's administrators, may call them. Their names say so.

/// What [`search_all_tenants`] narrows the list to; `None` means "any".
#[derive(Clone, Debug, Default)]
pub struct UserFilter {
    /// A case-insensitive substring of the email or the display name.
    pub q: Option<String>,
    /// One tenant.
    pub tenant: Option<TenantId>,
    /// One role.
    pub role: Option<Role>,
    /// Active or deactivated users.
    pub active: Option<bool>,
}

/// Escapes `%`, `_` and `\` so a search term matches literally inside `ilike`.
fn like_pattern(q: &str) -> String {
    let mut p = String::with_capacity(q.len() + 2);
    p.push('%');
    for c in q.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// The `where` of [`search_all_tenants`] (a macro so that `concat!` can use it twice).
macro_rules! user_filter {
    () => {
        "($1::text is null or email ilike $1 or display_name ilike $1) \
         and ($2::uuid is null or tenant_id = $2) and ($3::text is null or role = $3) \
         and ($4::boolean is null or active = $4)"
    };
}

/// Users of every tenant matching `filter`, newest first, one page of them with the total.
pub async fn search_all_tenants(
    ex: impl PgExecutor<'_>,
    filter: &UserFilter,
    page: nimbus_domain::PageRequest,
) -> Result<(Vec<User>, i64)> {
    // One round trip that also yields the total when the page is past the end.
    let rows = sqlx::query(concat!(
        "select t.total, p.* from (select count(*) as total from users where ",
        user_filter!(),
        ") t left join lateral (select id, tenant_id, email, display_name, role, active, created_at from users where ",
        user_filter!(),
        " order by created_at desc, id desc limit $5 offset $6) p on true"
    ))
    .bind(filter.q.as_deref().map(like_pattern))
    .bind(filter.tenant.map(|t| t.as_uuid()))
    .bind(filter.role.map(|r| r.as_str()))
    .bind(filter.active)
    .bind(page.limit())
    .bind(page.offset())
    .fetch_all(ex)
    .await?;
    Ok(rows::page::<User>(&rows)?)
}

/// A user of any tenant.
pub async fn get_any_tenant(ex: impl PgExecutor<'_>, id: UserId) -> Result<User> {
    Ok(sqlx::query_as("select id, tenant_id, email, display_name, role, active, created_at from users where id = $1")
        .bind(id.as_uuid())
        .fetch_one(ex)
        .await?)
}

/// What [`update_any_tenant`] changes; `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct UserUpdate {
    /// The new role.
    pub role: Option<Role>,
    /// The new display name (`Some(None)` clears it).
    pub display_name: Option<Option<String>>,
}

/// Changes the role and/or display name of a user of any tenant.
pub async fn update_any_tenant(ex: impl PgExecutor<'_>, id: UserId, update: &UserUpdate) -> Result<User> {
    Ok(sqlx::query_as(
        "update users set role = coalesce($2, role), \
         display_name = case when $3 then $4 else display_name end \
         where id = $1 returning id, tenant_id, email, display_name, role, active, created_at",
    )
    .bind(id.as_uuid())
    .bind(update.role.map(|r| r.as_str()))
    .bind(update.display_name.is_some())
    .bind(update.display_name.clone().flatten())
    .fetch_one(ex)
    .await?)
}

/// Activates or deactivates a user of any tenant. A deactivated user's API keys fail from the
/// next request on (authentication joins on `users.active`).
pub async fn set_active_any_tenant(ex: impl PgExecutor<'_>, id: UserId, active: bool) -> Result<User> {
    Ok(sqlx::query_as(
        "update users set active = $2 where id = $1 \
         returning id, tenant_id, email, display_name, role, active, created_at",
    )
    .bind(id.as_uuid())
    .bind(active)
    .fetch_one(ex)
    .await?)
}

#[cfg(test)]
mod search_tests {
    use super::like_pattern;

    #[test]
    fn search_terms_match_literally() {
        assert_eq!(like_pattern("ann"), "%ann%");
        assert_eq!(like_pattern("50%_off\\"), "%50\\%\\_off\\\\%");
    }
}
