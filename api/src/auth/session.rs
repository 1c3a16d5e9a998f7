//! Browser sessions of the OIDC sign-in (DESIGN §5): server-side, in Redis, behind the
//! `__Host-nimbus_session` cookie.
//!
//! The cookie carries 32 random bytes; Redis stores the session under the SHA-256 of that value,
//! so a copy of Redis (a dump, a replica, `MONITOR`) yields no usable cookie. A session ends at
//! the first of: its idle TTL without a request (each request pushes the key's expiry), its
//! absolute TTL since sign-in (checked on every read, and the key never outlives it), logout,
//! or a refresh the provider refuses.
//!
//! Writes are compare-and-set on the record's `version` (a Lua script): a write prepared from a
//! copy that another request has since changed or deleted is refused and redone on a fresh copy,
//! so a logout, a change of impersonation or a token refresh is never overwritten by a stale
//! copy, and a deleted session never comes back.
//!
//! Token refresh: one request per session at a time (a lock in Redis), which re-reads the session
//! once it holds the lock. When the provider cannot be reached the session goes on with the
//! tokens it has (the API itself does not use them) and refreshes pause for
//! [`REFRESH_BACKOFF`] for every session, so an outage neither fails requests nor hammers the
//! provider.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use nimbus_domain::{TenantId, UserId};
use rand::RngCore;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use axum::http::{HeaderMap, Method};
use nimbus_db::DbError;
use nimbus_db::users;

use super::oidc::{Identity, RedisHandle};
use super::{AuthUser, Credential, csrf, impersonation};
use crate::error::ApiError;
use crate::state::AppState;

/// The session cookie. `__Host-` makes browsers refuse it unless it is `Secure`, has `Path=/`
/// and no `Domain`, so no sibling subdomain can plant or overwrite it.
pub const SESSION_COOKIE: &str = "__Host-nimbus_session";

/// How long token refreshes pause after the provider could not be reached.
pub const REFRESH_BACKOFF: Duration = Duration::from_secs(30);

/// Writes `ARGV[2]` with a TTL of `ARGV[3]` ms under `KEYS[1]` only if the record there has
/// `version` = `ARGV[1]`; 1 when written, 0 when the record changed or is gone.
const COMPARE_AND_SET: &str = r"
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
local ok, record = pcall(cjson.decode, current)
if not ok or type(record) ~= 'table' then return 0 end
if (tonumber(record['version']) or 0) ~= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
";

/// A signed-in browser.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    /// The signed-in user.
    pub user_id: UserId,
    /// Their tenant.
    pub tenant_id: TenantId,
    /// The provider's issuer and the account's `sub`.
    pub issuer: String,
    /// The account's `sub`.
    pub subject: String,
    /// The token the SPA sends back in `X-CSRF-Token` (from `GET /v1/me`).
    pub csrf_token: String,
    /// The raw ID token, for `id_token_hint` at logout.
    pub id_token: Option<String>,
    /// The provider's access token.
    pub access_token: Option<String>,
    /// The provider's refresh token, used when the access token expires.
    pub refresh_token: Option<String>,
    /// When the access token expires (unknown: never refreshed).
    pub access_expires_at: Option<DateTime<Utc>>,
    /// Sign-in time: the absolute TTL counts from here.
    pub created_at: DateTime<Utc>,
    /// The user an operator is acting as, if any (set by the impersonation routes).
    pub impersonating: Option<UserId>,
    /// Bumped by every write: the compare-and-set of [`SessionStore::replace`].
    #[serde(default)]
    pub version: u64,
}

impl Session {
    /// Whether the access token has expired (with 10 s of margin) and there is a refresh token
    /// to renew it with.
    pub fn needs_refresh(&self, now: DateTime<Utc>) -> bool {
        self.refresh_token.is_some()
            && self.access_expires_at.is_some_and(|at| at <= now + chrono::Duration::seconds(10))
    }
}

/// The Redis-side identity of a session: the hex SHA-256 of its cookie value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionId(String);

impl SessionId {
    /// The id of the session behind `cookie`, or `None` when the value cannot be one of ours
    /// (a tampered cookie is refused before Redis is asked).
    pub fn from_cookie(cookie: &str) -> Option<SessionId> {
        let ok = cookie.len() == 43 && cookie.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ok.then(|| SessionId(hex::encode(Sha256::digest(cookie.as_bytes()))))
    }

    /// The hex digest.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A fresh secret of 32 random bytes, base64url without padding (43 characters).
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Sessions in Redis.
pub struct SessionStore {
    redis: RedisHandle,
    prefix: String,
    backoff_key: String,
    idle: Duration,
    absolute: Duration,
    cas: redis::Script,
}

impl SessionStore {
    /// A store with keys `<prefix>session:<id>` (and `<prefix>oidc:refresh-backoff`).
    pub fn new(redis: RedisHandle, key_prefix: &str, idle: Duration, absolute: Duration) -> Self {
        SessionStore {
            redis,
            prefix: format!("{key_prefix}session:"),
            backoff_key: format!("{key_prefix}oidc:refresh-backoff"),
            idle,
            absolute,
            cas: redis::Script::new(COMPARE_AND_SET),
        }
    }

    fn key(&self, id: &SessionId) -> String {
        format!("{}{}", self.prefix, id.0)
    }

    /// How long the key may live from now: the idle TTL, cut at the absolute end.
    fn ttl(&self, session: &Session, now: DateTime<Utc>) -> Option<Duration> {
        let end = session.created_at + chrono::Duration::from_std(self.absolute).ok()?;
        let left = (end - now).to_std().ok().filter(|d| !d.is_zero())?;
        Some(left.min(self.idle))
    }

    /// Stores a new session; returns the cookie value (shown to the browser only) and its id.
    pub async fn create(&self, session: &Session) -> Result<(String, SessionId), ApiError> {
        let cookie = random_secret();
        let id = SessionId::from_cookie(&cookie).ok_or_else(|| ApiError::Internal("session id".into()))?;
        let ttl = self.ttl(session, Utc::now()).ok_or_else(|| ApiError::Internal("session born expired".into()))?;
        let json = serde_json::to_string(session).map_err(|e| ApiError::Internal(format!("session: {e}")))?;
        let mut conn = self.redis.connection().await?;
        let created: Option<String> = redis::cmd("SET")
            .arg(self.key(&id))
            .arg(json)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .query_async(&mut conn)
            .await
            .map_err(redis_down)?;
        // 256 random bits do not collide; a `None` here would mean a broken random source.
        created.ok_or_else(|| ApiError::Internal("session id collision".into()))?;
        Ok((cookie, id))
    }

    /// The live session behind `id`, its idle expiry pushed back; `None` when it expired, was
    /// deleted or never existed.
    pub async fn load(&self, id: &SessionId) -> Result<Option<Session>, ApiError> {
        let mut conn = self.redis.connection().await?;
        let raw: Option<String> = conn.get(self.key(id)).await.map_err(redis_down)?;
        let Some(raw) = raw else { return Ok(None) };
        let Ok(session) = serde_json::from_str::<Session>(&raw) else {
            // A record this version cannot read is no session.
            let _: Result<(), _> = conn.del(self.key(id)).await;
            return Ok(None);
        };
        match self.ttl(&session, Utc::now()) {
            Some(ttl) => {
                let _: bool = conn.pexpire(self.key(id), ttl.as_millis() as i64).await.map_err(redis_down)?;
                Ok(Some(session))
            }
            None => {
                let _: Result<(), _> = conn.del(self.key(id)).await;
                Ok(None)
            }
        }
    }

    /// Writes `session` (a copy read by [`SessionStore::load`] and changed) under `id` if the
    /// stored record is still the version it was read at; returns the record as written (its
    /// version bumped), or `None` when the session has changed or ended since (nothing written).
    pub async fn replace(&self, id: &SessionId, session: &Session) -> Result<Option<Session>, ApiError> {
        let Some(ttl) = self.ttl(session, Utc::now()) else {
            self.delete(id).await?;
            return Ok(None);
        };
        let mut next = session.clone();
        next.version = session.version.wrapping_add(1);
        let json = serde_json::to_string(&next).map_err(|e| ApiError::Internal(format!("session: {e}")))?;
        let mut conn = self.redis.connection().await?;
        let written: i64 = self
            .cas
            .key(self.key(id))
            .arg(session.version)
            .arg(json)
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut conn)
            .await
            .map_err(redis_down)?;
        Ok((written == 1).then_some(next))
    }

    /// Applies `change` to the live session and writes it, redoing both on a fresh copy when
    /// another request wrote in between; `None` when the session has ended (it is not revived).
    pub async fn update(&self, id: &SessionId, change: impl Fn(&mut Session)) -> Result<Option<Session>, ApiError> {
        for _ in 0..8 {
            let Some(mut session) = self.load(id).await? else { return Ok(None) };
            change(&mut session);
            if let Some(written) = self.replace(id, &session).await? {
                return Ok(Some(written));
            }
        }
        Err(ApiError::ServiceUnavailable("session: too many concurrent writes".into()))
    }

    /// Takes the session's refresh lock (for at most 15 s); `false` when another request has it.
    pub async fn lock_refresh(&self, id: &SessionId) -> Result<bool, ApiError> {
        let mut conn = self.redis.connection().await?;
        let taken: Option<String> = redis::cmd("SET")
            .arg(format!("{}:refresh", self.key(id)))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(15_000)
            .query_async(&mut conn)
            .await
            .map_err(redis_down)?;
        Ok(taken.is_some())
    }

    /// Releases the refresh lock (it also expires on its own).
    pub async fn unlock_refresh(&self, id: &SessionId) {
        if let Ok(mut conn) = self.redis.connection().await {
            let _: Result<(), _> = conn.del(format!("{}:refresh", self.key(id))).await;
        }
    }

    /// Whether token refreshes are paused after the provider could not be reached.
    pub async fn refresh_backed_off(&self) -> Result<bool, ApiError> {
        let mut conn = self.redis.connection().await?;
        conn.exists(&self.backoff_key).await.map_err(redis_down)
    }

    /// Pauses token refreshes of every session for [`REFRESH_BACKOFF`].
    pub async fn back_off_refresh(&self) {
        if let Ok(mut conn) = self.redis.connection().await {
            let ms = REFRESH_BACKOFF.as_millis() as u64;
            let _: Result<(), _> = conn.pset_ex(&self.backoff_key, 1, ms).await;
        }
    }

    /// Ends the session.
    pub async fn delete(&self, id: &SessionId) -> Result<(), ApiError> {
        let mut conn = self.redis.connection().await?;
        let _: () = conn.del(self.key(id)).await.map_err(redis_down)?;
        Ok(())
    }

    /// Starts (`Some`) or stops (`None`) acting as another user in this session. Returns
    /// `false` when the session no longer exists.
    pub async fn set_impersonating(&self, id: &SessionId, user: Option<UserId>) -> Result<bool, ApiError> {
        Ok(self.update(id, |s| s.impersonating = user).await?.is_some())
    }
}

/// What a session credential carries into [`AuthUser`](super::AuthUser).
#[derive(Clone, Debug)]
pub struct SessionCredential {
    /// The session, for [`SessionStore::set_impersonating`] and logout.
    pub id: SessionId,
    /// The CSRF token the SPA must send back (shown by `GET /v1/me`).
    pub csrf_token: String,
    /// The session's impersonation target, as stored.
    pub impersonating: Option<UserId>,
}

/// Whose session the request's cookie names, without checking anything else: for the audit row
/// of a request the session could not make (a failed CSRF check).
pub(crate) async fn owner(state: &AppState, headers: &HeaderMap) -> Option<(UserId, TenantId)> {
    let identity = state.identity()?;
    let id = SessionId::from_cookie(cookie_value(headers, SESSION_COOKIE)?)?;
    let session = identity.sessions().load(&id).await.ok()??;
    Some((session.user_id, session.tenant_id))
}

/// The caller behind the request's session cookie: `None` without a cookie (or without OIDC),
/// 401 for a tampered, expired or ended session or a deactivated user, 403 for a
/// state-changing request that fails the CSRF check.
pub(crate) async fn caller(
    state: &AppState,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Result<Option<AuthUser>, ApiError> {
    let Some(identity) = state.identity() else { return Ok(None) };
    // The sign-in routes read the cookie themselves and answer with pages, not the envelope:
    // a stale cookie must not stop anyone from signing in again.
    if path.starts_with("/auth/") {
        return Ok(None);
    }
    let Some(cookie) = cookie_value(headers, SESSION_COOKIE) else { return Ok(None) };
    let id = SessionId::from_cookie(cookie).ok_or(ApiError::Unauthenticated)?;
    let store = identity.sessions();
    let mut session = store.load(&id).await?.ok_or(ApiError::Unauthenticated)?;
    // Before anything with effects (a refresh at the provider): a forged request stops here.
    csrf::check(method, headers, &session.csrf_token, &identity.config().public_origin())?;
    if session.needs_refresh(Utc::now()) {
        session = refresh(identity, &id, session).await?;
    }
    // Re-read on every request: a deactivated (or deleted) user stops at once.
    let user = match users::get(state.db(), session.tenant_id, session.user_id).await {
        Ok(u) if u.active => u,
        Ok(_) | Err(DbError::NotFound) => {
            store.delete(&id).await?;
            return Err(ApiError::Unauthenticated);
        }
        Err(e) => return Err(e.into()),
    };
    let credential = SessionCredential {
        id: id.clone(),
        csrf_token: session.csrf_token.clone(),
        impersonating: session.impersonating,
    };
    let caller = AuthUser { user, credential: Credential::Session(credential), impersonator: None };
    if let Some(target) = session.impersonating {
        match impersonation::act_as(state, caller.clone(), target).await {
            Ok(as_target) => return Ok(Some(as_target)),
            // The target was deactivated or removed, or the admin lost the role: the
            // impersonation ends, and this request fails rather than run as the administrator
            // (which it was not sent as). The next one runs as the administrator.
            Err(e @ (ApiError::Forbidden { .. } | ApiError::NotFound(_) | ApiError::Validation(_))) => {
                tracing::warn!(error = %e, user.id = %caller.user.id, "session impersonation ended: no longer allowed");
                store.update(&id, |s| s.impersonating = s.impersonating.filter(|t| *t != target)).await?;
                return Err(ApiError::ConflictWith {
                    message: "the impersonation of this session has ended: it is no longer allowed; \
                              nothing was done, and the next request runs as yourself"
                        .into(),
                    details: serde_json::json!({ "impersonationEnded": target }),
                });
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Some(caller))
}

/// Renews the session's provider tokens. One request per session does it at a time (providers
/// that rotate refresh tokens treat a second use of the old one as theft and revoke the grant);
/// the others, and every request while refreshes are backed off, go on with the session as it
/// is (the API itself does not use the provider's access token).
async fn refresh(identity: &Identity, id: &SessionId, session: Session) -> Result<Session, ApiError> {
    let store = identity.sessions();
    if store.refresh_backed_off().await? || !store.lock_refresh(id).await? {
        return Ok(session);
    }
    let refreshed = refresh_locked(identity, id).await;
    store.unlock_refresh(id).await;
    refreshed
}

async fn refresh_locked(identity: &Identity, id: &SessionId) -> Result<Session, ApiError> {
    let store = identity.sessions();
    // Read again under the lock: the copy read before it may be from before another request's
    // refresh, and its refresh token already used up.
    let current = store.load(id).await?.ok_or(ApiError::Unauthenticated)?;
    if !current.needs_refresh(Utc::now()) {
        return Ok(current);
    }
    match identity.refresh(&current).await {
        // Applied to the live record: a logout during the provider call is not undone, an
        // impersonation set meanwhile is kept.
        Ok(Some(tokens)) => store.update(id, |s| tokens.apply_to(s)).await?.ok_or(ApiError::Unauthenticated),
        Ok(None) => {
            store.delete(id).await?;
            Err(ApiError::Unauthenticated)
        }
        Err(e) => {
            tracing::warn!(
                error = %e,
                backoff.secs = REFRESH_BACKOFF.as_secs(),
                "session token refresh failed; the session goes on and refreshes pause"
            );
            store.back_off_refresh().await;
            Ok(current)
        }
    }
}

pub(crate) fn redis_down(e: redis::RedisError) -> ApiError {
    ApiError::ServiceUnavailable(format!("redis: {e}"))
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie_value<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// A `Set-Cookie` value for a `__Host-` cookie: HttpOnly, Secure, SameSite=Lax, Path=/.
/// `max_age: None` deletes it.
pub fn set_cookie(name: &str, value: &str, max_age: Option<Duration>) -> String {
    match max_age {
        Some(age) => {
            format!("{name}={value}; Max-Age={}; Path=/; Secure; HttpOnly; SameSite=Lax", age.as_secs())
        }
        None => format!("{name}=; Max-Age=0; Path=/; Secure; HttpOnly; SameSite=Lax"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_cookies_become_ids() {
        let c = random_secret();
        assert_eq!(c.len(), 43);
        let id = SessionId::from_cookie(&c).unwrap();
        assert_eq!(id.as_str().len(), 64);
        assert_ne!(id.as_str(), c, "Redis keys are hashes, never the cookie");
        assert!(SessionId::from_cookie("short").is_none());
        assert!(SessionId::from_cookie(&format!("{}!", &c[..42])).is_none());
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = axum::http::HeaderMap::new();
        h.append("cookie", "a=1; __Host-nimbus_session=xyz".parse().unwrap());
        h.append("cookie", "b=2".parse().unwrap());
        assert_eq!(cookie_value(&h, SESSION_COOKIE), Some("xyz"));
        assert_eq!(cookie_value(&h, "b"), Some("2"));
        assert_eq!(cookie_value(&h, "c"), None);
        let set = set_cookie(SESSION_COOKIE, "v", Some(Duration::from_secs(60)));
        for part in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"] {
            assert!(set.contains(part), "{set}");
        }
    }
}
