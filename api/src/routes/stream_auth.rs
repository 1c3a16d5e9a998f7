//! The credential of an open event stream, checked again while it lasts: a revoked key, a
//! deactivated user, an ended session or an expired token ends the stream with an `error` event
//! (`UNAUTHENTICATED`) instead of leaving it open on a credential that no longer holds.

use std::time::{Duration, Instant};

use axum::response::sse::Event;

use crate::auth::AuthUser;
use crate::state::AppState;

/// A stream's caller and when it was last checked.
pub struct StreamCredential {
    state: AppState,
    caller: AuthUser,
    every: Duration,
    checked: Instant,
    marker: Option<u64>,
}

impl StreamCredential {
    /// Checks `caller` every `stream_auth_check` (the setting).
    pub fn new(state: AppState, caller: AuthUser) -> Self {
        StreamCredential {
            every: state.settings().stream_auth_check,
            checked: Instant::now(),
            marker: state.key_cache().change_marker(),
            state,
            caller,
        }
    }

    /// The caller.
    pub fn caller(&self) -> &AuthUser {
        &self.caller
    }

    /// When a check is due and the credential no longer holds: the `error` event that ends
    /// the stream. `about` names the stream in the log.
    pub async fn revoked(&mut self, about: &str) -> Option<Event> {
        if self.checked.elapsed() < self.every {
            return None;
        }
        self.checked = Instant::now();
        match crate::auth::still_valid(&self.state, &self.caller, &mut self.marker).await {
            Ok(true) => None,
            Ok(false) => {
                tracing::info!(stream = about, user.id = %self.caller.user.id, "event stream closed: its credential no longer holds");
                let error = serde_json::json!({
                    "code": "UNAUTHENTICATED",
                    "message": "the credential of this stream was revoked or has expired",
                });
                Some(Event::default().event("error").json_data(error).unwrap_or_default())
            }
            // Unknown (a store unreachable): the stream goes on and asks again next time.
            Err(e) => {
                tracing::warn!(stream = about, error = %e, "event stream could not re-check its credential");
                None
            }
        }
    }
}
