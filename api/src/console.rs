//! Console tickets: `POST /v1/vms/{id}/console` hands the browser a short-lived, single-use
//! ticket bound to the user and the instance; the websocket that presents it is proxied to
//! Proxmox (`routes::vm_console`). Tickets live in Redis, so any API replica can take the
//! websocket; only their SHA-256 is stored, and redeeming one deletes it (`GETDEL`), so a
//! replayed ticket finds nothing.

use std::time::Duration;

use nimbus_domain::{InstanceId, TenantId, UserId};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::auth::oidc::RedisHandle;
use crate::error::ApiError;

/// How long a ticket may wait for its websocket.
pub const TICKET_TTL: Duration = Duration::from_secs(30);

/// Whom a ticket was given to, for what, and the Proxmox console session it opens (kept on the
/// server side: Proxmox's ticket never reaches the browser).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The user.
    pub user: UserId,
    /// Their tenant.
    pub tenant: TenantId,
    /// The instance whose console it opens.
    pub instance: InstanceId,
    /// The `vncwebsocket` port of the Proxmox session.
    pub port: u16,
    /// Proxmox's ticket for it.
    pub pve_ticket: String,
    /// The Proxmox user the session is for (the terminal protocol's greeting names it).
    pub pve_user: String,
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grant").field("user", &self.user).field("instance", &self.instance).finish_non_exhaustive()
    }
}

/// The ticket store.
#[derive(Clone)]
pub struct ConsoleTickets {
    redis: RedisHandle,
    prefix: String,
}

impl ConsoleTickets {
    /// Tickets in the Redis at `url`, keys under `key_prefix` (nothing connects until used).
    pub fn new(url: &str, key_prefix: &str) -> redis::RedisResult<Self> {
        Ok(ConsoleTickets { redis: RedisHandle::new(url)?, prefix: format!("{key_prefix}console:") })
    }

    fn key(&self, ticket: &str) -> String {
        format!("{}{}", self.prefix, hex::encode(Sha256::digest(ticket.as_bytes())))
    }

    /// Issues a ticket for `grant`, valid for [`TICKET_TTL`].
    pub async fn issue(&self, grant: &Grant) -> Result<String, ApiError> {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let ticket = hex::encode(bytes);
        let value = serde_json::to_string(grant).map_err(|e| ApiError::Internal(e.to_string()))?;
        let mut conn = self.redis.connection().await?;
        redis::cmd("SET")
            .arg(self.key(&ticket))
            .arg(value)
            .arg("EX")
            .arg(TICKET_TTL.as_secs())
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| ApiError::ServiceUnavailable(format!("redis: {e}")))?;
        Ok(ticket)
    }

    /// Redeems `ticket` once: its grant, or `None` when it is unknown, used or expired.
    pub async fn redeem(&self, ticket: &str) -> Result<Option<Grant>, ApiError> {
        let mut conn = self.redis.connection().await?;
        let value: Option<String> = redis::cmd("GETDEL")
            .arg(self.key(ticket))
            .query_async(&mut conn)
            .await
            .map_err(|e| ApiError::ServiceUnavailable(format!("redis: {e}")))?;
        Ok(value.and_then(|v| serde_json::from_str(&v).ok()))
    }
}
