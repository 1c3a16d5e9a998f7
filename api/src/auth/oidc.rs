//! The API as an OpenID Connect relying party (DESIGN §5): the configuration of the provider,
//! the authorization code flow with PKCE of the browser sign-in (driven by
//! `routes::auth`), token refresh for sessions, and the mapping of a provider account to a
//! Nimbus user (`nimbus_db::identities`), with the role read from a configurable claim path.
//!
//! Everything here is optional: without `OIDC_ISSUER` the API runs with API keys only.
//!
//! The provider's discovery document (with its JWKS) is fetched once and reused for
//! [`METADATA_MAX_AGE`]: an anonymous `GET /auth/login` costs the provider nothing. It is dropped
//! and fetched again when a call to the provider fails, and a failed discovery is not retried for
//! [`DISCOVERY_RETRY`], so a flood of sign-in attempts cannot hammer a provider that is down.

use std::time::{Duration, Instant};

use chrono::Utc;
use nimbus_db::identities::valid_subject;
use nimbus_db::identities::{self, Profile, SignIn};
use nimbus_db::users::User;
use nimbus_domain::Role;
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreErrorResponseType, CoreGenderClaim, CoreJsonWebKey,
    CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm, CoreRevocableToken, CoreRevocationErrorResponse,
    CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AdditionalClaims, AuthorizationCode, Client, ClientId, ClientSecret, CsrfToken, EmptyExtraTokenFields,
    EndpointMaybeSet, EndpointNotSet, EndpointSet, IdTokenFields, IssuerUrl, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, PkceCodeVerifier, ProviderMetadataWithLogout, RedirectUrl, RefreshToken, RequestTokenError,
    Scope, StandardErrorResponse, StandardTokenResponse, TokenResponse,
};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use super::jwt::JwtVerifier;
use super::session::{Session, SessionStore, redis_down};
use crate::error::ApiError;

/// The OIDC settings (see `config.rs` for the variables).
#[derive(Clone, Debug)]
pub struct OidcConfig {
    /// `OIDC_ISSUER`: the provider's issuer URL, exactly as in its tokens' `iss`.
    pub issuer: String,
    /// `OIDC_CLIENT_ID`.
    pub client_id: String,
    /// `OIDC_CLIENT_SECRET` (confidential client; `None` for a public one).
    pub client_secret: Option<String>,
    /// `PUBLIC_URL`: where browsers reach the API (origin of the CSRF check, base of the
    /// redirect URI `…/auth/callback`).
    pub public_url: url::Url,
    /// `OIDC_ROLES_CLAIM`: dot path of the roles claim (`realm_access.roles`).
    pub roles_claim: String,
    /// `OIDC_JWT_AUDIENCE`: the `aud` bearer JWTs must carry.
    pub jwt_audience: String,
    /// `SESSION_IDLE_SECS`.
    pub session_idle: Duration,
    /// `SESSION_ABSOLUTE_SECS`.
    pub session_absolute: Duration,
    /// `OIDC_JWKS_MIN_REFRESH_SECS`: how often an unknown `kid` may refetch the JWKS.
    pub jwks_min_refresh: Duration,
    /// `OIDC_SIGNUP_PLAN`: the plan of the tenants created at first sign-in.
    pub signup_plan: String,
    /// `OIDC_TRUST_EMAIL`: the provider vouches for every account's email, so a token without
    /// `email_verified` may create an account (Entra ID work accounts send none); an explicit
    /// `email_verified: false` is still refused.
    pub trust_email: bool,
    /// How long a started sign-in may take to come back (state, nonce, PKCE verifier).
    pub login_ttl: Duration,
    /// Timeout of each request to the provider.
    pub http_timeout: Duration,
}

impl OidcConfig {
    /// Defaults for everything but the provider and the public URL.
    pub fn new(issuer: &str, client_id: &str, client_secret: Option<&str>, public_url: url::Url) -> Self {
        OidcConfig {
            issuer: issuer.to_owned(),
            client_id: client_id.to_owned(),
            client_secret: client_secret.map(str::to_owned),
            public_url,
            roles_claim: "realm_access.roles".into(),
            jwt_audience: "nimbus-api".into(),
            session_idle: Duration::from_secs(30 * 60),
            session_absolute: Duration::from_secs(12 * 3600),
            jwks_min_refresh: Duration::from_secs(60),
            signup_plan: "default".into(),
            trust_email: false,
            login_ttl: Duration::from_secs(600),
            http_timeout: Duration::from_secs(5),
        }
    }

    /// The origin browsers' requests must come from (`https://cloud.example.com`).
    pub fn public_origin(&self) -> String {
        self.public_url.origin().ascii_serialization()
    }

    /// `<public url>/auth/callback`.
    pub fn redirect_uri(&self) -> String {
        format!("{}/auth/callback", self.public_url.as_str().trim_end_matches('/'))
    }

    /// `<public url>/`, where the provider sends the browser after logout.
    pub fn post_logout_uri(&self) -> String {
        format!("{}/", self.public_url.as_str().trim_end_matches('/'))
    }
}

/// A lazily connected Redis connection shared by the sessions and sign-in states.
#[derive(Clone)]
pub struct RedisHandle {
    client: redis::Client,
    conn: std::sync::Arc<OnceCell<redis::aio::ConnectionManager>>,
}

impl RedisHandle {
    /// Nothing connects until first used.
    pub fn new(url: &str) -> redis::RedisResult<Self> {
        Ok(RedisHandle { client: redis::Client::open(url)?, conn: std::sync::Arc::new(OnceCell::new()) })
    }

    /// The connection (503 when Redis cannot be reached).
    pub async fn connection(&self) -> Result<redis::aio::ConnectionManager, ApiError> {
        let conn = self
            .conn
            .get_or_try_init(|| async {
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Duration::from_secs(2))
                    .set_response_timeout(Duration::from_secs(2))
                    .set_number_of_retries(1);
                tokio::time::timeout(
                    Duration::from_secs(3),
                    redis::aio::ConnectionManager::new_with_config(self.client.clone(), config),
                )
                .await
                .map_err(|_| ApiError::ServiceUnavailable("redis: connect timed out".into()))?
                .map_err(redis_down)
            })
            .await?;
        Ok(conn.clone())
    }
}

/// Every claim that is not a standard one (the roles claim lives here).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExtraClaims(pub serde_json::Map<String, Value>);
impl AdditionalClaims for ExtraClaims {}

type IdFields = IdTokenFields<
    ExtraClaims,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type Tokens = StandardTokenResponse<IdFields, CoreTokenType>;
type RpClient = Client<
    ExtraClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    Tokens,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// How long a fetched discovery document (and its JWKS) is used before it is fetched again.
pub const METADATA_MAX_AGE: Duration = Duration::from_secs(3600);
/// How long a failed discovery answers "provider down" without asking the provider again.
pub const DISCOVERY_RETRY: Duration = Duration::from_secs(5);

/// Why a step of the sign-in failed; `routes::auth` turns each into an HTML page.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// The provider cannot be reached or answers nonsense (503).
    #[error("provider unavailable: {0}")]
    ProviderDown(String),
    /// The state is unknown, expired, already used, or not this browser's (400).
    #[error("invalid or replayed state")]
    BadState,
    /// The provider refused the code or the ID token did not verify (400).
    #[error("rejected: {0}")]
    Rejected(String),
    /// The account has no email, so no user can be created (403).
    #[error("the account has no email")]
    NeedsEmail,
    /// The provider has not verified the account's email, so no user is created (403).
    #[error("the account's email is not verified")]
    EmailNotVerified,
    /// A claim the user would be made of is unusable (`sub` too long, a malformed email) (403).
    #[error("unusable claim: {0}")]
    InvalidClaim(&'static str),
    /// The user is deactivated (403).
    #[error("the user is deactivated")]
    Deactivated,
    /// The sign-up plan is missing (503).
    #[error("no sign-up plan")]
    NoSignupPlan,
    /// Redis or Postgres failed.
    #[error(transparent)]
    Api(#[from] ApiError),
}

/// What `/auth/login` keeps in Redis until the provider sends the browser back.
#[derive(Serialize, Deserialize)]
struct PendingLogin {
    verifier: String,
    nonce: String,
    return_to: String,
}

/// A started sign-in: where to send the browser, and the state to bind to it with a cookie.
pub struct LoginStart {
    /// The provider's authorization URL.
    pub url: url::Url,
    /// The `state` parameter.
    pub state: String,
}

/// A finished sign-in.
pub struct LoginDone {
    /// The user signed in.
    pub user: User,
    /// The new session.
    pub session: Session,
    /// Where the browser goes now (a checked relative path).
    pub return_to: String,
}

/// Tokens of a successful refresh, applied to the session by the caller (under its
/// compare-and-set, so nothing else written meanwhile is lost).
#[derive(Clone, Debug)]
pub struct RefreshedTokens {
    access_token: String,
    refresh_token: Option<String>,
    access_expires_at: Option<chrono::DateTime<Utc>>,
    id_token: Option<String>,
}

impl RefreshedTokens {
    /// Writes the new tokens into `session`. Providers that rotate refresh tokens send a new
    /// one; the others keep the old.
    pub fn apply_to(&self, session: &mut Session) {
        session.access_token = Some(self.access_token.clone());
        if let Some(r) = &self.refresh_token {
            session.refresh_token = Some(r.clone());
        }
        session.access_expires_at = self.access_expires_at;
        if let Some(id) = &self.id_token {
            session.id_token = Some(id.clone());
        }
    }
}

struct CachedMetadata {
    meta: ProviderMetadataWithLogout,
    fetched: Instant,
}

/// The provider, the session store and the JWT verifier.
pub struct Identity {
    config: OidcConfig,
    db: nimbus_db::PgPool,
    http: reqwest::Client,
    redis: RedisHandle,
    key_prefix: String,
    sessions: SessionStore,
    jwt: JwtVerifier,
    metadata: tokio::sync::RwLock<Option<CachedMetadata>>,
    /// Held while discovering (one discovery at a time); the time of the last failed one.
    discovery: tokio::sync::Mutex<Option<Instant>>,
}

impl Identity {
    /// The identity layer for `config`, with Redis keys under `key_prefix`. Nothing talks to the
    /// provider until needed, so the API starts while the provider is down.
    pub fn new(config: OidcConfig, db: nimbus_db::PgPool, redis_url: &str, key_prefix: &str) -> Result<Self, String> {
        // No redirects: the token endpoint must not be able to bounce credentials elsewhere.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.http_timeout)
            .build()
            .map_err(|e| e.to_string())?;
        let redis = RedisHandle::new(redis_url).map_err(|e| e.to_string())?;
        let sessions = SessionStore::new(redis.clone(), key_prefix, config.session_idle, config.session_absolute);
        let jwt = JwtVerifier::new(&config.issuer, &config.jwt_audience, config.jwks_min_refresh, http.clone());
        Ok(Identity {
            config,
            db,
            http,
            redis,
            key_prefix: key_prefix.to_owned(),
            sessions,
            jwt,
            metadata: tokio::sync::RwLock::new(None),
            discovery: tokio::sync::Mutex::new(None),
        })
    }

    /// The settings.
    pub fn config(&self) -> &OidcConfig {
        &self.config
    }

    /// The session store.
    pub fn sessions(&self) -> &SessionStore {
        &self.sessions
    }

    /// The bearer JWT verifier.
    pub fn jwt(&self) -> &JwtVerifier {
        &self.jwt
    }

    /// Fetches the provider's discovery document (and JWKS) now, and caches it.
    async fn discover(&self) -> Result<ProviderMetadataWithLogout, SignInError> {
        let issuer =
            IssuerUrl::new(self.config.issuer.clone()).map_err(|e| SignInError::ProviderDown(e.to_string()))?;
        let meta = ProviderMetadataWithLogout::discover_async(issuer, &self.http)
            .await
            .map_err(|e| SignInError::ProviderDown(format!("discovery: {e}")))?;
        *self.metadata.write().await = Some(CachedMetadata { meta: meta.clone(), fetched: Instant::now() });
        Ok(meta)
    }

    async fn cached_metadata(&self) -> Option<ProviderMetadataWithLogout> {
        let cached = self.metadata.read().await;
        cached.as_ref().filter(|c| c.fetched.elapsed() < METADATA_MAX_AGE).map(|c| c.meta.clone())
    }

    /// The cached discovery document, fetched when there is none (or it is too old). Concurrent
    /// callers share one fetch; after a failed one, callers are told the provider is down for
    /// [`DISCOVERY_RETRY`] without a new attempt.
    async fn metadata(&self) -> Result<ProviderMetadataWithLogout, SignInError> {
        if let Some(m) = self.cached_metadata().await {
            return Ok(m);
        }
        let mut last_failure = self.discovery.lock().await;
        // Another request may have fetched it while this one waited.
        if let Some(m) = self.cached_metadata().await {
            return Ok(m);
        }
        if last_failure.is_some_and(|at| at.elapsed() < DISCOVERY_RETRY) {
            return Err(SignInError::ProviderDown("discovery failed moments ago".into()));
        }
        let fetched = self.discover().await;
        *last_failure = if fetched.is_err() { Some(Instant::now()) } else { None };
        fetched
    }

    /// Drops the cached discovery document after a failed call to the provider: its endpoints or
    /// keys may have changed, and the next use fetches them again.
    async fn forget_metadata(&self) {
        *self.metadata.write().await = None;
    }

    /// The provider's end-session endpoint, if it announces one (`None` too when the provider
    /// cannot be reached: logout still ends the session here).
    pub async fn end_session_endpoint(&self) -> Option<url::Url> {
        let meta = self.metadata().await.ok()?;
        meta.additional_metadata().end_session_endpoint.as_ref().map(|u| u.url().clone())
    }

    fn client(&self, meta: ProviderMetadataWithLogout) -> Result<RpClient, SignInError> {
        let redirect = RedirectUrl::new(self.config.redirect_uri()).map_err(|e| SignInError::Api(internal(e)))?;
        Ok(RpClient::from_provider_metadata(
            meta,
            ClientId::new(self.config.client_id.clone()),
            self.config.client_secret.clone().map(ClientSecret::new),
        )
        .set_redirect_uri(redirect))
    }

    fn login_key(&self, state: &str) -> String {
        format!("{}oidc:login:{}", self.key_prefix, hex::encode(Sha256::digest(state.as_bytes())))
    }

    /// Starts a sign-in: authorization code with PKCE S256, state and nonce; the verifier and
    /// nonce stay in Redis (never in the browser) for `login_ttl`. The discovery document comes
    /// from the cache: an anonymous request must not cost a round trip to the provider.
    pub async fn start_login(&self, return_to: &str) -> Result<LoginStart, SignInError> {
        let client = self.client(self.metadata().await?)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = client
            .authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
            .add_scope(Scope::new("email".into()))
            .add_scope(Scope::new("profile".into()))
            .set_pkce_challenge(challenge)
            .url();
        let pending = PendingLogin {
            verifier: verifier.secret().clone(),
            nonce: nonce.secret().clone(),
            return_to: return_to.to_owned(),
        };
        let json = serde_json::to_string(&pending).map_err(internal)?;
        let mut conn = self.redis.connection().await?;
        let _: () = conn
            .set_ex(self.login_key(state.secret()), json, self.config.login_ttl.as_secs())
            .await
            .map_err(redis_down)?;
        Ok(LoginStart { url, state: state.secret().clone() })
    }

    /// Finishes a sign-in: the state is taken from Redis (once: a replayed callback finds
    /// nothing), the code exchanged with the PKCE verifier, the ID token verified (signature,
    /// issuer, audience, expiry, nonce), the user found or created, and a session stored.
    pub async fn finish_login(&self, state: &str, code: &str) -> Result<(LoginDone, String), SignInError> {
        let mut conn = self.redis.connection().await?;
        let raw: Option<String> =
            redis::cmd("GETDEL").arg(self.login_key(state)).query_async(&mut conn).await.map_err(redis_down)?;
        let pending: PendingLogin = raw.and_then(|r| serde_json::from_str(&r).ok()).ok_or(SignInError::BadState)?;
        let client = self.client(self.metadata().await?)?;
        let exchanged = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| SignInError::ProviderDown(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier))
            .request_async(&self.http)
            .await
            .map_err(token_error);
        let tokens = match exchanged {
            Ok(t) => t,
            Err(e) => {
                if matches!(e, SignInError::ProviderDown(_)) {
                    self.forget_metadata().await;
                }
                return Err(e);
            }
        };
        let id_token = tokens.id_token().ok_or_else(|| SignInError::Rejected("no ID token".into()))?;
        let claims = match id_token.claims(&client.id_token_verifier(), &Nonce::new(pending.nonce)) {
            Ok(c) => c,
            Err(e) => {
                // Perhaps signed with a key published after the cached JWKS: fetch it again next time.
                self.forget_metadata().await;
                return Err(SignInError::Rejected(format!("ID token: {e}")));
            }
        };
        let subject = claims.subject().as_str().to_owned();
        let mut all = claims.additional_claims().0.clone();
        if let Some(email) = claims.email() {
            all.insert("email".into(), Value::String(email.as_str().to_owned()));
        }
        if let Some(verified) = claims.email_verified() {
            all.insert("email_verified".into(), Value::Bool(verified));
        }
        if let Some(name) = claims.name().and_then(|n| n.get(None)) {
            all.insert("name".into(), Value::String(name.as_str().to_owned()));
        }
        let user = self.user_for(&subject, &Value::Object(all)).await?;
        let session = Session {
            user_id: user.id,
            tenant_id: user.tenant_id,
            issuer: self.config.issuer.clone(),
            subject,
            csrf_token: super::session::random_secret(),
            id_token: Some(id_token.to_string()),
            access_token: Some(tokens.access_token().secret().clone()),
            refresh_token: tokens.refresh_token().map(|t| t.secret().clone()),
            access_expires_at: expires_at(tokens.expires_in()),
            created_at: Utc::now(),
            impersonating: None,
            version: 0,
        };
        let (cookie, _) = self.sessions.create(&session).await?;
        Ok((LoginDone { user, session, return_to: pending.return_to }, cookie))
    }

    /// Renews the session's tokens with its refresh token. `Ok(None)`: the provider refused
    /// (the session must end); an unreachable provider is an error, so a provider outage does
    /// not sign everyone out. The refreshed ID token is verified like the first one (OIDC Core
    /// §12.2: same account) and the user's role re-synced from it.
    pub async fn refresh(&self, session: &Session) -> Result<Option<RefreshedTokens>, ApiError> {
        let Some(refresh) = session.refresh_token.clone() else { return Ok(None) };
        let meta = self.metadata().await.map_err(|e| ApiError::ServiceUnavailable(e.to_string()))?;
        let client = self.client(meta).map_err(|e| ApiError::Internal(e.to_string()))?;
        let result = client
            .exchange_refresh_token(&RefreshToken::new(refresh))
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .request_async(&self.http)
            .await;
        let tokens = match result {
            Ok(tokens) => tokens,
            Err(RequestTokenError::ServerResponse(e)) => {
                tracing::info!(oidc.error = %e.error(), "the provider refused the session's refresh token");
                return Ok(None);
            }
            Err(e) => {
                self.forget_metadata().await;
                return Err(ApiError::ServiceUnavailable(format!("oidc refresh: {e}")));
            }
        };
        let mut id_token = None;
        if let Some(id) = tokens.id_token() {
            // No nonce in a refreshed ID token (OIDC Core §12.2).
            match id.claims(&client.id_token_verifier(), |_: Option<&Nonce>| -> Result<(), String> { Ok(()) }) {
                Ok(claims) if claims.subject().as_str() != session.subject => {
                    tracing::warn!(user.id = %session.user_id, "refreshed ID token names another account: session ended");
                    return Ok(None);
                }
                Ok(claims) => {
                    id_token = Some(id.to_string());
                    let extra = Value::Object(claims.additional_claims().0.clone());
                    self.sync_role(session, &extra).await;
                }
                // The new access and refresh tokens are kept (a rotated refresh token must not be
                // lost); the old ID token stays, and the keys are fetched again next time.
                Err(e) => {
                    tracing::warn!(error = %e, user.id = %session.user_id, "refreshed ID token did not verify");
                    self.forget_metadata().await;
                }
            }
        }
        Ok(Some(RefreshedTokens {
            access_token: tokens.access_token().secret().clone(),
            refresh_token: tokens.refresh_token().map(|r| r.secret().clone()),
            access_expires_at: expires_at(tokens.expires_in()),
            id_token,
        }))
    }

    /// Applies the role of a refreshed ID token (nothing when it has no role claim). A failure is
    /// logged, not returned: the refreshed tokens must still reach the session.
    async fn sync_role(&self, session: &Session, claims: &Value) {
        let Some(role) = role_from_claims(claims, &self.config.roles_claim) else { return };
        match identities::set_role(&self.db, &session.issuer, &session.subject, role).await {
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, user.id = %session.user_id, "could not re-sync the role"),
        }
    }

    /// The user of the provider account `subject` with these claims: found and updated, or
    /// created with a tenant of their own.
    pub async fn user_for(&self, subject: &str, claims: &Value) -> Result<User, SignInError> {
        if !valid_subject(subject) {
            return Err(SignInError::InvalidClaim("sub"));
        }
        let profile = Profile {
            email: claims["email"].as_str().map(str::to_owned),
            email_verified: email_verified(claims)
                || (self.config.trust_email && claims.get("email_verified").is_none_or(Value::is_null)),
            name: claims["name"].as_str().map(str::to_owned),
            role: role_from_claims(claims, &self.config.roles_claim),
        };
        let outcome = identities::sign_in(&self.db, &self.config.issuer, subject, &profile, &self.config.signup_plan)
            .await
            .map_err(ApiError::from)?;
        let user = match outcome {
            SignIn::Existing(u) => u,
            SignIn::Created(u) => {
                tracing::info!(user.id = %u.id, tenant.id = %u.tenant_id, "first sign-in: user and tenant created");
                u
            }
            SignIn::NeedsEmail => return Err(SignInError::NeedsEmail),
            SignIn::EmailNotVerified => return Err(SignInError::EmailNotVerified),
            SignIn::InvalidEmail => return Err(SignInError::InvalidClaim("email")),
            SignIn::InvalidSubject => return Err(SignInError::InvalidClaim("sub")),
            SignIn::NoSignupPlan => return Err(SignInError::NoSignupPlan),
        };
        if !user.active {
            return Err(SignInError::Deactivated);
        }
        Ok(user)
    }
}

/// When a token with `expires_in` expires; `None` (never refreshed) when the provider sends a
/// lifetime beyond what a date can hold, rather than a panic.
fn expires_at(expires_in: Option<Duration>) -> Option<chrono::DateTime<Utc>> {
    let lifetime = chrono::Duration::from_std(expires_in?).ok()?;
    Utc::now().checked_add_signed(lifetime)
}

/// `email_verified` as providers send it: `true`, or the string `"true"` (some providers).
fn email_verified(claims: &Value) -> bool {
    match &claims["email_verified"] {
        Value::Bool(b) => *b,
        Value::String(s) => s == "true",
        _ => false,
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(format!("oidc: {e}"))
}

fn token_error<RE: std::error::Error + 'static>(
    e: RequestTokenError<RE, StandardErrorResponse<CoreErrorResponseType>>,
) -> SignInError {
    match e {
        RequestTokenError::ServerResponse(r) => SignInError::Rejected(format!("token endpoint: {}", r.error())),
        other => SignInError::ProviderDown(format!("token endpoint: {other}")),
    }
}

/// The highest role named by the claim at the dot `path` (a string or an array of strings):
/// admin > billing-admin > user; `user` when the claim names none of them. `None` when the
/// token has no such claim (or not a string or array there): the role is then left as it is,
/// since many providers put roles in access tokens only, and a missing claim is no demotion.
pub fn role_from_claims(claims: &Value, path: &str) -> Option<Role> {
    let mut v = claims;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        v = &v[part];
    }
    let names: Vec<&str> = match v {
        Value::String(s) => vec![s.as_str()],
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        _ => return None,
    };
    Some(if names.contains(&"admin") {
        Role::Admin
    } else if names.contains(&"billing-admin") {
        Role::BillingAdmin
    } else {
        Role::User
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_highest_role_wins_and_a_missing_claim_is_no_role() {
        let c = json!({"realm_access": {"roles": ["offline_access", "user", "admin"]}, "groups": "billing-admin"});
        assert_eq!(role_from_claims(&c, "realm_access.roles"), Some(Role::Admin));
        assert_eq!(role_from_claims(&c, "groups"), Some(Role::BillingAdmin));
        assert_eq!(role_from_claims(&c, "missing.path"), None);
        assert_eq!(role_from_claims(&json!({"roles": ["uma_authorization"]}), "roles"), Some(Role::User));
        assert_eq!(role_from_claims(&json!({"roles": []}), "roles"), Some(Role::User));
        assert_eq!(role_from_claims(&json!({"roles": 3}), "roles"), None);
    }

    #[test]
    fn a_huge_expires_in_is_no_panic() {
        assert_eq!(expires_at(Some(Duration::from_secs(u64::MAX))), None);
        assert_eq!(expires_at(Some(Duration::from_secs(i64::MAX as u64 / 1000))), None);
        assert!(expires_at(Some(Duration::from_secs(300))).is_some_and(|t| t > Utc::now()));
        assert_eq!(expires_at(None), None);
    }

    #[test]
    fn email_verified_takes_a_bool_or_the_string_true() {
        assert!(email_verified(&json!({"email_verified": true})));
        assert!(email_verified(&json!({"email_verified": "true"})));
        assert!(!email_verified(&json!({"email_verified": false})));
        assert!(!email_verified(&json!({"email_verified": "yes"})));
        assert!(!email_verified(&json!({})));
    }

    #[test]
    fn uris_derive_from_the_public_url() {
        let c = OidcConfig::new("http://idp", "nimbus", None, url::Url::parse("https://cloud.example.com/").unwrap());
        assert_eq!(c.public_origin(), "https://cloud.example.com");
        assert_eq!(c.redirect_uri(), "https://cloud.example.com/auth/callback");
        assert_eq!(c.post_logout_uri(), "https://cloud.example.com/");
    }
}
