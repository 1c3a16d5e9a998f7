//! `Idempotency-Key` records (DESIGN §6): the same key with the same request replays the first
//! answer; with another request it is refused (422 `IDEMPOTENCY_KEY_REUSED`); while the first
//! request is still in flight a duplicate gets 409 `IDEMPOTENCY_KEY_IN_PROGRESS`. Keys expire
//! after 24 hours.
//!
//! Flow: [`begin`] → on `Started` do the work, then [`complete`] with the response (inside the
//! work's transaction when there is one, so the answer and its effect commit together) or
//! [`abandon`] when the answer must not be replayed (5xx). An in-flight record holds a lease:
//! if its request died, the same request may take the key over once the lease ends.

use std::time::Duration;

use nimbus_domain::TenantId;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::PgExecutor;

use crate::{DbError, Result};

/// How long a key is remembered.
pub const TTL_HOURS: i32 = 24;

/// The fingerprint of a request: method, path and body. Two requests with the same key are "the
/// same request" when their fingerprints are equal.
pub fn request_hash(method: &str, path: &str, body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    // Lengths first, so (method, path, body) boundaries cannot shift.
    for part in [method.as_bytes(), path.as_bytes(), body] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

/// The outcome of [`begin`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Begin {
    /// The caller owns the key: do the work, then [`complete`] or [`abandon`].
    Started,
    /// Answered before: send this again.
    Replay {
        /// HTTP status.
        status: u16,
        /// Body.
        body: Option<Value>,
    },
    /// The key was used with a different request.
    Mismatch,
    /// The first request with this key is still running.
    InProgress,
}

/// Claims `key` for a request with fingerprint `hash`, holding it in flight for `lease`.
pub async fn begin(
    pool: &sqlx::PgPool,
    tenant: TenantId,
    key: &str,
    hash: &[u8; 32],
    lease: Duration,
) -> Result<Begin> {
    // The insert takes the key when it is new, expired, or abandoned in flight by the same
    // request (lease over). Otherwise the existing record decides. Read committed can hide a
    // record committed while this statement ran (conflict seen, row not in our snapshot): then
    // run it again.
    for _ in 0..5 {
        let row: (Option<bool>, Option<Vec<u8>>, Option<i16>, Option<Value>) = sqlx::query_as(
            "with ins as (insert into idempotency_keys (tenant_id, key, request_sha256, locked_until, expires_at) \
             values ($1, $2, $3, now() + make_interval(secs => $4), now() + make_interval(hours => $5)) \
             on conflict (tenant_id, key) do update set request_sha256 = excluded.request_sha256, \
             locked_until = excluded.locked_until, response_status = null, response_body = null, \
             created_at = now(), expires_at = excluded.expires_at \
             where idempotency_keys.expires_at <= now() \
             or (idempotency_keys.response_status is null and idempotency_keys.locked_until <= now() \
             and idempotency_keys.request_sha256 = excluded.request_sha256) \
             returning true as started) \
             select (select started from ins), k.request_sha256, k.response_status, k.response_body \
             from (select 1) one left join idempotency_keys k on k.tenant_id = $1 and k.key = $2 \
             and not exists (select 1 from ins)",
        )
        .bind(tenant.as_uuid())
        .bind(key)
        .bind(hash.as_slice())
        .bind(lease.as_secs_f64())
        .bind(TTL_HOURS)
        .fetch_one(pool)
        .await?;
        match row {
            (Some(true), ..) => return Ok(Begin::Started),
            (_, Some(stored), status, body) => {
                if stored != hash.as_slice() {
                    return Ok(Begin::Mismatch);
                }
                return Ok(match status {
                    Some(status) => Begin::Replay { status: status as u16, body },
                    None => Begin::InProgress,
                });
            }
            _ => continue,
        }
    }
    Ok(Begin::InProgress)
}

/// Stores the answer of a request that owns `key` (status 100-599).
pub async fn complete(ex: impl PgExecutor<'_>, tenant: TenantId, key: &str, status: u16, body: &Value) -> Result<()> {
    let done = sqlx::query(
        "update idempotency_keys set response_status = $3, response_body = $4, locked_until = null \
         where tenant_id = $1 and key = $2 and response_status is null",
    )
    .bind(tenant.as_uuid())
    .bind(key)
    .bind(i16::try_from(status).unwrap_or(i16::MAX))
    .bind(body)
    .execute(ex)
    .await?;
    if done.rows_affected() == 0 { Err(DbError::NotFound) } else { Ok(()) }
}

/// Forgets an in-flight key so the request can be sent again (after an answer that must not be
/// replayed, e.g. a 503).
pub async fn abandon(ex: impl PgExecutor<'_>, tenant: TenantId, key: &str) -> Result<()> {
    sqlx::query("delete from idempotency_keys where tenant_id = $1 and key = $2 and response_status is null")
        .bind(tenant.as_uuid())
        .bind(key)
        .execute(ex)
        .await?;
    Ok(())
}

/// Deletes expired records (housekeeping; expired ones are already ignored by [`begin`]).
pub async fn purge_expired(ex: impl PgExecutor<'_>) -> Result<u64> {
    let done = sqlx::query("delete from idempotency_keys where expires_at <= now()").execute(ex).await?;
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_hash_separates_its_parts() {
        let a = request_hash("POST", "/v1/vms", b"{}");
        assert_eq!(a, request_hash("POST", "/v1/vms", b"{}"));
        assert_ne!(a, request_hash("POST", "/v1/vms", b"{ }"));
        assert_ne!(request_hash("POST", "/v1/ab", b"c"), request_hash("POST", "/v1/a", b"bc"));
    }
}
