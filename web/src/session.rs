//! Who is signed in. Two ways in: the API's OIDC sign-in (`/auth/login`, which sets the
//! `__Host-nimbus_session` cookie; state-changing requests then carry `X-CSRF-Token`), or an
//! API key pasted on the sign-in page (kept in `sessionStorage`, sent as `Authorization`).
//! `GET /v1/me` says who the credential belongs to; any 401 marks the session expired.

use std::cell::OnceCell;

use gloo_net::http::RequestBuilder;
use nimbus_domain::MeView;
use sycamore::prelude::*;

use crate::api;

const API_KEY_STORAGE: &str = "nimbus.apiKey";

/// The signed-in user, as `GET /v1/me` describes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Me {
    /// Display name (the email when there is none).
    pub name: String,
    /// Email.
    pub email: String,
    /// Tenant name.
    pub tenant: String,
    /// Tenant id.
    pub tenant_id: String,
    /// `admin`, `billing-admin` or `user`.
    pub role: String,
    /// The CSRF token of the session (none for API keys).
    pub csrf_token: Option<String>,
    /// The administrator acting as this user, when the session impersonates.
    pub impersonator: Option<String>,
}

impl From<MeView> for Me {
    fn from(v: MeView) -> Me {
        let name = v.user.name.filter(|n| !n.is_empty()).unwrap_or_else(|| v.user.email.clone());
        Me {
            name,
            email: v.user.email,
            tenant: v.tenant.name,
            tenant_id: v.tenant.id.to_string(),
            role: v.role.as_str().to_owned(),
            csrf_token: v.csrf_token,
            impersonator: v.impersonator.map(|a| a.name.filter(|n| !n.is_empty()).unwrap_or(a.email)),
        }
    }
}

impl Me {
    /// The signed-in user, if any.
    pub fn current() -> Option<Me> {
        Session::get().state.with_untracked(|s| match s {
            SessionState::SignedIn(me) => Some(me.clone()),
            _ => None,
        })
    }

    /// Which operator pages the user may see: 2 for an `admin` (all of them), 1 for a
    /// `billing-admin` (the billing operations alone; every other `/v1/admin` route refuses
    /// them), 0 for anyone else.
    pub fn operator_level(&self) -> u8 {
        match self.role.as_str() {
            "admin" => 2,
            "billing-admin" => 1,
            _ => 0,
        }
    }
}

/// Where the session stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionState {
    /// `/v1/me` not answered yet.
    Loading,
    /// No credential.
    SignedOut,
    /// A credential was accepted before and is refused now.
    Expired,
    /// Signed in.
    SignedIn(Me),
}

/// The session, shared by every page (one per app; cheap to copy).
#[derive(Clone, Copy)]
pub struct Session {
    /// The current state.
    pub state: Signal<SessionState>,
}

thread_local! {
    static SESSION: OnceCell<Session> = const { OnceCell::new() };
}

fn storage() -> Option<web_sys::Storage> {
    web_sys::window().and_then(|w| w.session_storage().ok().flatten())
}

impl Session {
    /// Creates the app's session (call once, in the root component).
    pub fn install() -> Session {
        let session = Session { state: create_signal(SessionState::Loading) };
        SESSION.with(|s| {
            let _ = s.set(session);
        });
        session
    }

    /// The app's session.
    pub fn get() -> Session {
        SESSION.with(|s| *s.get().expect("Session::install runs before any request"))
    }

    fn api_key() -> Option<String> {
        storage().and_then(|s| s.get_item(API_KEY_STORAGE).ok().flatten()).filter(|k| !k.is_empty())
    }

    /// Whether requests carry an API key (EventSource cannot send one: progress then polls).
    pub fn uses_api_key() -> bool {
        Self::api_key().is_some()
    }

    /// Adds the credential to a request.
    pub fn authorize(&self, b: RequestBuilder, changes_state: bool) -> RequestBuilder {
        if let Some(key) = Self::api_key() {
            return b.header("Authorization", &format!("Bearer {key}"));
        }
        let csrf = self.state.with_untracked(|s| match s {
            SessionState::SignedIn(me) => me.csrf_token.clone(),
            _ => None,
        });
        match (changes_state, csrf) {
            (true, Some(token)) => b.header("X-CSRF-Token", &token),
            _ => b,
        }
    }

    /// Asks `/v1/me` who the current credential belongs to.
    pub async fn refresh(self) {
        let state = match api::get::<MeView>("/v1/me").await {
            Ok(v) => SessionState::SignedIn(Me::from(v)),
            Err(f) if f.status == 401 && self.state.with_untracked(|s| matches!(s, SessionState::Expired)) => {
                SessionState::Expired
            }
            Err(_) => SessionState::SignedOut,
        };
        self.state.set(state);
    }

    /// Signs in with an API key: kept only if `/v1/me` accepts it.
    pub async fn sign_in_with_key(self, key: &str) -> Result<(), api::Failure> {
        if let Some(s) = storage() {
            let _ = s.set_item(API_KEY_STORAGE, key.trim());
        }
        match api::get::<MeView>("/v1/me").await {
            Ok(v) => {
                self.state.set(SessionState::SignedIn(Me::from(v)));
                Ok(())
            }
            Err(f) => {
                self.forget_key();
                self.state.set(SessionState::SignedOut);
                Err(f)
            }
        }
    }

    fn forget_key(self) {
        if let Some(s) = storage() {
            let _ = s.remove_item(API_KEY_STORAGE);
        }
    }

    /// A 401: the credential is no longer accepted.
    pub fn expire(self) {
        let signed_in = self.state.with_untracked(|s| matches!(s, SessionState::SignedIn(_)));
        if signed_in {
            self.forget_key();
            // Deferred: this runs inside a page's request, and changing the session now would
            // dispose that page (and the signals it is about to set) under its feet.
            wasm_bindgen_futures::spawn_local(async move { self.state.set(SessionState::Expired) });
        }
    }

    /// Signs out of an API-key session (browser sessions post the sign-out form instead).
    pub fn sign_out(self) {
        self.forget_key();
        self.state.set(SessionState::SignedOut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn me(v: serde_json::Value) -> Me {
        Me::from(serde_json::from_value::<MeView>(v).unwrap())
    }

    #[test]
    fn me_reads_the_apis_answer() {
        let me = me(json!({
            "user": {"id": "01a217b7-cec9-7448-8945-442910b55deb", "email": "alice@acme.test",
                "name": "Alice Acme", "role": "user"},
            "tenant": {"id": "01a217b7-cec9-7448-8945-442910b55dec", "name": "Acme"},
            "role": "user",
            "authMethod": "session",
            "csrfToken": "tok"
        }));
        assert_eq!(me.name, "Alice Acme");
        assert_eq!(me.tenant, "Acme");
        assert_eq!(me.tenant_id, "01a217b7-cec9-7448-8945-442910b55dec");
        assert_eq!(me.csrf_token.as_deref(), Some("tok"));
        assert_eq!(me.operator_level(), 0);
    }

    #[test]
    fn a_user_without_a_name_is_shown_by_email_and_keys_have_no_csrf_token() {
        let me = me(json!({
            "user": {"id": "01a217b7-cec9-7448-8945-442910b55deb", "email": "ops@acme.test", "name": null,
                "role": "admin"},
            "tenant": {"id": "01a217b7-cec9-7448-8945-442910b55dec", "name": "Ops"},
            "role": "admin",
            "authMethod": "apiKey",
            "csrfToken": null
        }));
        assert_eq!(me.name, "ops@acme.test");
        assert_eq!(me.csrf_token, None);
        assert_eq!(me.operator_level(), 2);
    }

    #[test]
    fn a_billing_administrator_sees_the_billing_operations_alone() {
        let me = me(json!({
            "user": {"id": "01a217b7-cec9-7448-8945-442910b55ded", "email": "bill@nimbus.test", "name": "Bill",
                "role": "billing-admin"},
            "tenant": {"id": "01a217b7-cec9-7448-8945-442910b55dec", "name": "Ops"},
            "role": "billing-admin",
            "authMethod": "session",
            "csrfToken": "tok"
        }));
        assert_eq!(me.role, "billing-admin");
        assert_eq!(me.operator_level(), 1);
    }
}
