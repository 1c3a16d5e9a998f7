//! Personal API keys (DESIGN §5): shown once, stored as a SHA-256 of the whole token, scoped,
//! revocable, with an optional expiry.
//!
//! A token reads `nmb_<prefix>_<secret>`: the 12-character prefix is public (lists show it, and
//! it finds the row without scanning hashes); the 40-character secret never leaves the response
//! that created it. The secrets are random (238 bits), so a plain SHA-256 is enough: there is
//! nothing to brute-force that a slow hash would protect.

use chrono::{DateTime, Utc};
use nimbus_domain::{ApiKeyId, TenantId, UserId};
use rand::Rng;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};
use sqlx::postgres::PgRow;
use sqlx::{FromRow, PgExecutor, Row};

use crate::users::User;
use crate::{DbError, Result, rows};

/// The token's fixed leading tag: lets secret scanners recognise leaked keys.
pub const TOKEN_TAG: &str = "nmb";
const PREFIX_LEN: usize = 12;
const SECRET_LEN: usize = 40;

/// An API key row (never the secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKey {
    /// Id.
    pub id: ApiKeyId,
    /// Tenant.
    pub tenant_id: TenantId,
    /// Owner.
    pub user_id: UserId,
    /// Label chosen by the user.
    pub name: String,
    /// Public part of the token.
    pub prefix: String,
    /// Scopes granted (empty = the owner's full role).
    pub scopes: Vec<String>,
    /// Stops working at.
    pub expires_at: Option<DateTime<Utc>>,
    /// Last authenticated request (updated at most once a minute).
    pub last_used_at: Option<DateTime<Utc>>,
    /// Revoked at.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Created at.
    pub created_at: DateTime<Utc>,
}

impl<'r> FromRow<'r, PgRow> for ApiKey {
    fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        Ok(ApiKey {
            id: rows::id(row, "id")?,
            tenant_id: rows::id(row, "tenant_id")?,
            user_id: rows::id(row, "user_id")?,
            name: row.try_get("name")?,
            prefix: row.try_get("prefix")?,
            scopes: row.try_get("scopes")?,
            expires_at: row.try_get("expires_at")?,
            last_used_at: row.try_get("last_used_at")?,
            revoked_at: row.try_get("revoked_at")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

/// A key that authenticated, with its owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authenticated {
    /// The key.
    pub key: ApiKey,
    /// Its owner (active).
    pub user: User,
}

fn random_string(len: usize) -> String {
    rand::rng().sample_iter(Alphanumeric).take(len).map(char::from).collect()
}

fn sha256(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// The prefix of a well-formed token.
fn parse_prefix(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(TOKEN_TAG)?.strip_prefix('_')?;
    let (prefix, secret) = rest.split_once('_')?;
    let ok = prefix.len() == PREFIX_LEN
        && secret.len() == SECRET_LEN
        && prefix.bytes().chain(secret.bytes()).all(|b| b.is_ascii_alphanumeric());
    ok.then_some(prefix)
}

/// Equality that takes the same time wherever the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Creates a key for `user` and returns it with the full token, which is not stored and cannot
/// be shown again. A user of another tenant is `ForeignKey { constraint: "api_keys_user_fkey" }`.
pub async fn create(
    ex: impl PgExecutor<'_>,
    tenant: TenantId,
    user: UserId,
    name: &str,
    scopes: &[String],
    expires_at: Option<DateTime<Utc>>,
) -> Result<(ApiKey, String)> {
    let prefix = random_string(PREFIX_LEN);
    let token = format!("{TOKEN_TAG}_{prefix}_{}", random_string(SECRET_LEN));
    let key = sqlx::query_as(
        "insert into api_keys (id, tenant_id, user_id, name, prefix, secret_sha256, scopes, expires_at) \
         values ($1, $2, $3, $4, $5, $6, $7, $8) \
         returning id, tenant_id, user_id, name, prefix, scopes, expires_at, last_used_at, revoked_at, created_at",
    )
    .bind(ApiKeyId::new().as_uuid())
    .bind(tenant.as_uuid())
    .bind(user.as_uuid())
    .bind(name)
    .bind(&prefix)
    .bind(sha256(&token))
    .bind(scopes)
    .bind(expires_at)
    .fetch_one(ex)
    .await?;
    Ok((key, token))
}

/// Like [`create`], unless `user` already has `max_live` live keys (not revoked, not expired):
/// then `Ok(None)`. The user's row is locked for the count and the insert, so concurrent creates
/// cannot pass the limit together.
pub async fn create_within_limit(
    pool: &sqlx::PgPool,
    tenant: TenantId,
    user: UserId,
    name: &str,
    scopes: &[String],
    expires_at: Option<DateTime<Utc>>,
    max_live: i64,
) -> Result<Option<(ApiKey, String)>> {
    let mut tx = pool.begin().await?;
    sqlx::query("select 1 from users where tenant_id = $1 and id = $2 for update")
        .bind(tenant.as_uuid())
        .bind(user.as_uuid())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(DbError::NotFound)?;
    let live: i64 = sqlx::query_scalar(
        "select count(*) from api_keys where tenant_id = $1 and user_id = $2 and revoked_at is null \
         and (expires_at is null or expires_at > now())",
    )
    .bind(tenant.as_uuid())
    .bind(user.as_uuid())
    .fetch_one(&mut *tx)
    .await?;
    if live >= max_live {
        return Ok(None);
    }
    let created = create(&mut *tx, tenant, user, name, scopes, expires_at).await?;
    tx.commit().await?;
    Ok(Some(created))
}

/// Whether key `id` still authenticates: not revoked, not expired, its user active.
pub async fn is_live(ex: impl PgExecutor<'_>, id: ApiKeyId) -> Result<bool> {
    Ok(sqlx::query_scalar(
        "select exists (select 1 from api_keys k join users u on u.tenant_id = k.tenant_id and u.id = k.user_id \
         where k.id = $1 and k.revoked_at is null and (k.expires_at is null or k.expires_at > now()) and u.active)",
    )
    .bind(id.as_uuid())
    .fetch_one(ex)
    .await?)
}

/// The key and user behind `token`, or `None` when the token is malformed, unknown, wrong,
/// revoked, expired, or its user is deactivated (callers answer 401 alike for all of them).
pub async fn authenticate(pool: &sqlx::PgPool, token: &str) -> Result<Option<Authenticated>> {
    let Some(prefix) = parse_prefix(token) else { return Ok(None) };
    let row = sqlx::query(
        "select k.id, k.tenant_id, k.user_id, k.name, k.prefix, k.scopes, k.expires_at, k.last_used_at, \
         k.revoked_at, k.created_at, k.secret_sha256, \
         u.email, u.display_name, u.role, u.active, u.created_at as user_created_at \
         from api_keys k join users u on u.tenant_id = k.tenant_id and u.id = k.user_id \
         where k.prefix = $1 and k.revoked_at is null and (k.expires_at is null or k.expires_at > now()) \
         and u.active",
    )
    .bind(prefix)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let stored: Vec<u8> = row.try_get("secret_sha256").map_err(DbError::from)?;
    if !constant_time_eq(&stored, &sha256(token)) {
        return Ok(None);
    }
    let key = ApiKey::from_row(&row)?;
    let user = User {
        id: key.user_id,
        tenant_id: key.tenant_id,
        email: row.try_get("email")?,
        display_name: row.try_get("display_name")?,
        role: rows::enumeration(&row, "role")?,
        active: row.try_get("active")?,
        created_at: row.try_get("user_created_at")?,
    };
    // At most one write a minute per key, and no round trip at all otherwise: authentication is
    // on every request's hot path.
    let stale = key.last_used_at.is_none_or(|at| Utc::now() - at > chrono::TimeDelta::minutes(1));
    if stale {
        sqlx::query(
            "update api_keys set last_used_at = now() \
             where id = $1 and (last_used_at is null or last_used_at < now() - interval '1 minute')",
        )
        .bind(key.id.as_uuid())
        .execute(pool)
        .await?;
    }
    Ok(Some(Authenticated { key, user }))
}

/// The keys of `tenant`, newest first.
pub async fn list(ex: impl PgExecutor<'_>, tenant: TenantId) -> Result<Vec<ApiKey>> {
    Ok(sqlx::query_as(
        "select id, tenant_id, user_id, name, prefix, scopes, expires_at, last_used_at, revoked_at, created_at \
         from api_keys where tenant_id = $1 order by created_at desc, id desc",
    )
    .bind(tenant.as_uuid())
    .fetch_all(ex)
    .await?)
}

/// Revokes a key of `tenant` (idempotent: revoking twice keeps the first time).
pub async fn revoke(ex: impl PgExecutor<'_>, tenant: TenantId, id: ApiKeyId) -> Result<ApiKey> {
    Ok(sqlx::query_as(
        "update api_keys set revoked_at = coalesce(revoked_at, now()) where tenant_id = $1 and id = $2 \
         returning id, tenant_id, user_id, name, prefix, scopes, expires_at, last_used_at, revoked_at, created_at",
    )
    .bind(tenant.as_uuid())
    .bind(id.as_uuid())
    .fetch_one(ex)
    .await?)
}

/// The keys of one user of `tenant`, newest first, one page of them with the total.
pub async fn list_for_user(
    ex: impl PgExecutor<'_>,
    tenant: TenantId,
    user: UserId,
    page: nimbus_domain::PageRequest,
) -> Result<(Vec<ApiKey>, i64)> {
    // One round trip that also yields the total when the page is past the end.
    let rows = sqlx::query(
        "select t.total, p.* from (select count(*) as total from api_keys where tenant_id = $1 and user_id = $2) t \
         left join lateral (select id, tenant_id, user_id, name, prefix, scopes, expires_at, last_used_at, \
         revoked_at, created_at from api_keys where tenant_id = $1 and user_id = $2 \
         order by created_at desc, id desc limit $3 offset $4) p on true",
    )
    .bind(tenant.as_uuid())
    .bind(user.as_uuid())
    .bind(page.limit())
    .bind(page.offset())
    .fetch_all(ex)
    .await?;
    Ok(rows::page::<ApiKey>(&rows)?)
}

/// Revokes a key of one user of `tenant` (idempotent: revoking twice keeps the first time). A
/// key of another user, even in the same tenant, is `NotFound`.
pub async fn revoke_for_user(ex: impl PgExecutor<'_>, tenant: TenantId, user: UserId, id: ApiKeyId) -> Result<ApiKey> {
    Ok(sqlx::query_as(
        "update api_keys set revoked_at = coalesce(revoked_at, now()) \
         where tenant_id = $1 and user_id = $2 and id = $3 \
         returning id, tenant_id, user_id, name, prefix, scopes, expires_at, last_used_at, revoked_at, created_at",
    )
    .bind(tenant.as_uuid())
    .bind(user.as_uuid())
    .bind(id.as_uuid())
    .fetch_one(ex)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_tokens_have_a_prefix() {
        let token = format!("nmb_{}_{}", "a".repeat(12), "B".repeat(40));
        assert_eq!(parse_prefix(&token), Some("aaaaaaaaaaaa"));
        assert_eq!(parse_prefix("nmb_short_x"), None);
        assert_eq!(parse_prefix(&format!("xyz_{}_{}", "a".repeat(12), "B".repeat(40))), None);
        assert_eq!(parse_prefix(&format!("nmb_{}_{}", "a".repeat(12), "-".repeat(40))), None);
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
