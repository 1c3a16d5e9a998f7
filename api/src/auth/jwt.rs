//! Bearer JWTs issued by the OIDC provider, validated by the API itself with `jsonwebtoken`
//! (DESIGN §5): the API never trusts a gateway to have done it.
//!
//! * Keys come from the provider's JWKS (its URL from discovery) and are cached. A token whose
//!   `kid` is unknown triggers one refetch, at most once per `min_refresh` (a flood of tokens
//!   with random `kid`s cannot turn the API into a load generator against the provider). When the
//!   provider is down the cached keys keep working.
//! * The algorithm comes from the key (RSA → RS256, EC P-256 → ES256), never from the token's
//!   header: `alg: none` and HS256-signed-with-the-public-key tokens fail on the algorithm check
//!   (RFC 8725 §2.1, §3.1).
//! * `iss` must be the configured issuer, `aud` contain the configured audience, `exp` and `nbf`
//!   hold with 30 s of leeway for clock skew, `sub` be present.
//! * An ID token is not an access token (RFC 9068 §4, OIDC Core §2): a token with a `nonce`
//!   claim, a Keycloak `typ: ID` claim, or a header `typ` other than `JWT` / `at+jwt` is refused,
//!   even when its audience happens to match.
//! * A refetch that yields no usable key (an empty or unparsable JWKS, a provider answering an
//!   error page) keeps the cached keys; a refetch is one request to the cached `jwks_uri`
//!   (discovery again only when that fails), bounded by [`REFETCH_BUDGET`] in all.
//!
//! Whose account the token is: [`caller`] maps it to a user as the browser sign-in does; an
//! unknown account becomes a user only when the token says `email_verified: true`, else 401.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use tokio::sync::{Mutex, RwLock};

use super::oidc::SignInError;
use super::{AuthUser, Credential};
use crate::error::ApiError;
use crate::state::AppState;

/// Leeway on `exp` and `nbf`, seconds.
pub const LEEWAY_SECS: u64 = 30;

/// The most a JWKS refetch may take, requests waiting for it included.
pub const REFETCH_BUDGET: Duration = Duration::from_secs(5);

/// Header `typ` values of access tokens (RFC 9068 §2.1; `JWT` from providers predating it).
const ACCESS_TOKEN_TYPES: [&str; 3] = ["at+jwt", "application/at+jwt", "JWT"];

/// Why a token was refused (logged at debug; the client sees a plain 401).
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    /// Not a JWT, or its header is unusable (`alg: none` included).
    #[error("malformed token: {0}")]
    Malformed(String),
    /// No `kid` in the header: with several keys, the API does not guess.
    #[error("token has no kid")]
    NoKid,
    /// The `kid` is not in the provider's JWKS (after a refetch, when one was allowed).
    #[error("unknown kid {0}")]
    UnknownKid(String),
    /// Signature, algorithm or claims failed.
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// The validated claims.
#[derive(Clone, Debug)]
pub struct VerifiedJwt {
    /// `iss`.
    pub issuer: String,
    /// `sub`.
    pub subject: String,
    /// Every claim, for the role claim path, `email` and `name`.
    pub claims: Value,
}

/// What a JWT credential carries into [`AuthUser`](super::AuthUser).
#[derive(Clone, Debug)]
pub struct JwtCredential {
    /// `iss`.
    pub issuer: String,
    /// `sub`.
    pub subject: String,
    /// `exp`: the token stops authenticating then, also for the streams it opened.
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The caller behind a bearer token that is not an API key: a valid provider JWT whose
/// account maps to an active user (created on first use when the token carries an email).
/// Anything else is 401; why is logged, not told.
pub(crate) async fn caller(state: &AppState, token: &str) -> Result<AuthUser, ApiError> {
    let identity = state.identity().ok_or(ApiError::Unauthenticated)?;
    let verified = identity.jwt().verify(token).await.map_err(|e| {
        tracing::info!(reason = %e, "bearer JWT refused");
        ApiError::Unauthenticated
    })?;
    let user = identity.user_for(&verified.subject, &verified.claims).await.map_err(|e| match e {
        SignInError::Api(e) => e,
        other => {
            tracing::info!(reason = %other, "bearer JWT has no usable user");
            ApiError::Unauthenticated
        }
    })?;
    let expires_at = verified.claims["exp"].as_i64().and_then(|exp| chrono::DateTime::from_timestamp(exp, 0));
    let credential = JwtCredential { issuer: verified.issuer, subject: verified.subject, expires_at };
    Ok(AuthUser { user, credential: Credential::Jwt(credential), impersonator: None })
}

struct Key {
    key: DecodingKey,
    alg: Algorithm,
}

/// The verifier with its key cache.
pub struct JwtVerifier {
    issuer: String,
    audience: String,
    min_refresh: Duration,
    http: reqwest::Client,
    keys: RwLock<HashMap<String, std::sync::Arc<Key>>>,
    /// The provider's `jwks_uri`, once discovered.
    jwks_uri: RwLock<Option<String>>,
    /// When the keys were last fetched (or tried); the mutex also makes concurrent refetches one.
    last_fetch: Mutex<Option<Instant>>,
}

impl JwtVerifier {
    /// A verifier for tokens of `issuer` meant for `audience`.
    pub fn new(issuer: &str, audience: &str, min_refresh: Duration, http: reqwest::Client) -> Self {
        JwtVerifier {
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            min_refresh,
            http,
            keys: RwLock::new(HashMap::new()),
            jwks_uri: RwLock::new(None),
            last_fetch: Mutex::new(None),
        }
    }

    /// Validates `token`.
    pub async fn verify(&self, token: &str) -> Result<VerifiedJwt, JwtError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| JwtError::Malformed(e.to_string()))?;
        if let Some(typ) = &header.typ
            && !ACCESS_TOKEN_TYPES.iter().any(|t| t.eq_ignore_ascii_case(typ))
        {
            return Err(JwtError::Invalid(format!("typ {typ} is not an access token")));
        }
        let kid = header.kid.ok_or(JwtError::NoKid)?;
        // Bound first: the read guard must be gone before a refetch takes the write lock.
        let cached = self.keys.read().await.get(&kid).cloned();
        let key = match cached {
            Some(k) => k,
            None => self.refetch_for(&kid).await?,
        };
        let mut validation = Validation::new(key.alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        let data = jsonwebtoken::decode::<Value>(token, &key.key, &validation)
            .map_err(|e| JwtError::Invalid(e.to_string()))?;
        let claims = data.claims;
        let subject = claims["sub"].as_str().filter(|s| !s.is_empty()).ok_or(JwtError::Invalid("no sub".into()))?;
        if claims.get("nonce").is_some() || claims["typ"].as_str().is_some_and(|t| t.eq_ignore_ascii_case("ID")) {
            return Err(JwtError::Invalid("an ID token is not an access token".into()));
        }
        Ok(VerifiedJwt { issuer: self.issuer.clone(), subject: subject.to_owned(), claims: claims.clone() })
    }

    /// Refetches the JWKS if the last fetch is old enough, then looks `kid` up again.
    async fn refetch_for(&self, kid: &str) -> Result<std::sync::Arc<Key>, JwtError> {
        let mut last = self.last_fetch.lock().await;
        // Another request may have refetched while this one waited for the lock.
        let cached = self.keys.read().await.get(kid).cloned();
        if let Some(k) = cached {
            return Ok(k);
        }
        if last.is_some_and(|at| at.elapsed() < self.min_refresh) {
            return Err(JwtError::UnknownKid(kid.to_owned()));
        }
        *last = Some(Instant::now());
        let fetched =
            tokio::time::timeout(REFETCH_BUDGET, self.fetch_keys()).await.unwrap_or_else(|_| Err("timed out".into()));
        match fetched {
            // The set the provider publishes now: a key it removed is revoked, not kept.
            Ok(keys) if !keys.is_empty() => {
                tracing::info!(oidc.keys = keys.len(), "fetched the provider's signing keys");
                *self.keys.write().await = keys;
            }
            // Keep the cached keys: tokens signed with them still validate while the provider is
            // down or publishes nothing usable.
            Ok(_) => tracing::warn!("the provider's JWKS has no usable key; keeping the cached keys"),
            Err(e) => tracing::warn!(error = %e, "could not fetch the provider's signing keys"),
        }
        self.keys.read().await.get(kid).cloned().ok_or_else(|| JwtError::UnknownKid(kid.to_owned()))
    }

    /// The provider's keys from the known `jwks_uri`, discovering it first (or again, when the
    /// known one fails).
    async fn fetch_keys(&self) -> Result<HashMap<String, std::sync::Arc<Key>>, String> {
        let known = self.jwks_uri.read().await.clone();
        if let Some(uri) = known
            && let Ok(jwks) = get_json(&self.http, &uri).await
        {
            return Ok(usable_keys(&jwks));
        }
        let discovery = format!("{}/.well-known/openid-configuration", self.issuer.trim_end_matches('/'));
        let meta: Value = get_json(&self.http, &discovery).await?;
        let jwks_uri = meta["jwks_uri"].as_str().ok_or("discovery has no jwks_uri")?.to_owned();
        let jwks: Value = get_json(&self.http, &jwks_uri).await?;
        *self.jwks_uri.write().await = Some(jwks_uri);
        Ok(usable_keys(&jwks))
    }
}

/// The keys of a JWKS this API can use, by `kid`.
fn usable_keys(jwks: &Value) -> HashMap<String, std::sync::Arc<Key>> {
    let mut keys = HashMap::new();
    for raw in jwks["keys"].as_array().into_iter().flatten() {
        // Keys this API cannot use (encryption keys, other curves) are skipped one by one.
        let Ok(jwk) = serde_json::from_value::<Jwk>(raw.clone()) else { continue };
        if let Some((kid, key)) = usable(&jwk) {
            keys.insert(kid, std::sync::Arc::new(key));
        }
    }
    keys
}

/// A signing key of an accepted algorithm, with its `kid`.
fn usable(jwk: &Jwk) -> Option<(String, Key)> {
    use jsonwebtoken::jwk::PublicKeyUse;
    let kid = jwk.common.key_id.clone()?;
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let alg = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        _ => return None,
    };
    // A key that declares another algorithm (RS512, PS256...) is not used for this one.
    if let Some(declared) = &jwk.common.key_algorithm {
        let declared = format!("{declared:?}");
        if declared != format!("{alg:?}") {
            return None;
        }
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some((kid, Key { key, alg }))
}

async fn get_json(http: &reqwest::Client, url: &str) -> Result<Value, String> {
    let r = http.get(url).send().await.map_err(|e| format!("GET {url}: {e}"))?;
    if !r.status().is_success() {
        return Err(format!("GET {url}: {}", r.status()));
    }
    r.json().await.map_err(|e| format!("GET {url}: {e}"))
}
