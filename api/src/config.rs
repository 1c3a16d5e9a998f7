//! Typed configuration from environment variables, read once at start and passed explicitly.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `DATABASE_URL` | PostgreSQL URL of the runtime role (`nimbus_app`: rows only, no DDL) | required |
//! | `DATABASE_MIGRATION_URL` | the tables' owner: `serve` and `bootstrap` apply pending migrations with it first; unset: they only check that none is pending (`nimbus-api migrate` applies them) | unset |
//! | `DATABASE_MAX_CONNECTIONS` | pool size | `20` |
//! | `REDIS_URL` | Redis URL | required |
//! | `REDIS_KEY_PREFIX` | prefix of every Redis key (queues are `<prefix>q:{name}`) | `nimbus:` |
//! | `PVE_URL` | Proxmox API, `https://host:8006` | required |
//! | `PVE_TOKEN` | API token, `user@realm!tokenid=secret` | required |
//! | `PVE_FINGERPRINT` | pin the server certificate's SHA-256 (`AB:CD:…`) | one of these three, |
//! | `PVE_CA_FILE` | trust the CA certificates in this PEM file | or the public CAs |
//! | `PVE_INSECURE` | `1`/`true`: accept any certificate (labs only) | when none is set |
//! | `PVE_ALLOW_HTTP` | `1`/`true`: accept an `http://` `PVE_URL` (labs only: the token travels in clear; warned at start) | `false`: refused |
//! | `LISTEN` | address to serve on | `127.0.0.1:8080` |
//! | `METRICS_LISTEN` | address of the metrics listener (`/metrics`, `/healthz`), for Prometheus only | unset: none |
//! | `NIMBUS_WEB_DIST` | the built portal (`web/dist`) to serve at `/`; unset: no portal | unset |
//! | `BILLING_ISSUER_NAME` | who issues the invoices (printed on them) | `Nimbus` |
//! | `BILLING_ISSUER_ADDRESS` | the issuer's address, lines separated by `\|` | empty |
//! | `BILLING_ISSUER_LOGO_URL` | an `https://` or `data:image/` URL of the logo on printed invoices | none |
//! | `RUST_LOG` | log filter | `info` |
//! | `RATE_LIMIT_PER_MINUTE` | requests per minute per user (all their keys, sessions and tokens together) or anonymous client address (also the burst) | `300` |
//! | `AUTH_FAILURES_PER_MINUTE` | failed authentications per minute per client address, then 429 before any lookup | `30` |
//! | `API_KEYS_PER_USER` | live API keys a user may have | `50` |
//! | `HEADER_READ_TIMEOUT_SECS` | a connection must send a request's headers within this | `10` |
//! | `IDLE_TIMEOUT_SECS` | a connection that reads and writes nothing for this long is closed | `60` |
//! | `MAX_CONNECTIONS` | open connections, all clients together; past it new ones get 503 | `10000` |
//! | `MAX_CONNECTIONS_PER_CLIENT` | open connections per client address; past it new ones get 429 | `256` |
//! | `NOFILE_LIMIT` | the open-file limit raised at start (never above the hard limit) | `65536` |
//! | `TRUSTED_PROXIES` | addresses/CIDRs (comma-separated) whose `X-Forwarded-For` names the client | none |
//! | `OIDC_ISSUER` | OpenID provider's issuer URL; unset: API keys only, no sign-in | unset |
//! | `OIDC_CLIENT_ID` | the API's client at the provider | `nimbus` |
//! | `OIDC_CLIENT_SECRET` | its secret (confidential client) | unset |
//! | `PUBLIC_URL` | where browsers reach the API: redirect URI `<it>/auth/callback`, CSRF origin | required with `OIDC_ISSUER` |
//! | `OIDC_ROLES_CLAIM` | dot path of the roles claim | `realm_access.roles` |
//! | `OIDC_JWT_AUDIENCE` | `aud` required in bearer JWTs | `nimbus-api` |
//! | `OIDC_SIGNUP_PLAN` | plan of the tenant created at a user's first sign-in | `default` |
//! | `OIDC_TRUST_EMAIL` | `1`/`true`: tokens without `email_verified` may create accounts (Entra ID) | `false` |
//! | `OIDC_JWKS_MIN_REFRESH_SECS` | least time between two JWKS refetches for unknown `kid`s | `60` |
//! | `SESSION_IDLE_SECS` | a session ends after this long without a request | `1800` |
//! | `SESSION_ABSOLUTE_SECS` | and this long after sign-in, whatever happens | `43200` |
//!
//! `nimbus-api bootstrap` needs only `DATABASE_URL` (and `DATABASE_MIGRATION_URL` to migrate
//! first); `nimbus-api migrate` needs only `DATABASE_MIGRATION_URL`.

use std::net::SocketAddr;

use nimbus_proxmox::{ApiToken, PveEnv, TlsMode};

/// What `nimbus-api serve` needs.
#[derive(Clone, Debug)]
pub struct Config {
    /// `DATABASE_URL`.
    pub database_url: String,
    /// `DATABASE_MIGRATION_URL`.
    pub database_migration_url: Option<String>,
    /// `DATABASE_MAX_CONNECTIONS`.
    pub database_max_connections: u32,
    /// `REDIS_URL`.
    pub redis_url: String,
    /// `REDIS_KEY_PREFIX`.
    pub redis_key_prefix: String,
    /// `PVE_URL`.
    pub pve_url: String,
    /// `PVE_TOKEN`.
    pub pve_token: ApiToken,
    /// From `PVE_FINGERPRINT`, `PVE_CA_FILE` or `PVE_INSECURE`.
    pub pve_tls: TlsMode,
    /// `PVE_ALLOW_HTTP`.
    pub pve_allow_http: bool,
    /// `LISTEN`.
    pub listen: SocketAddr,
    /// `METRICS_LISTEN`.
    pub metrics_listen: Option<SocketAddr>,
    /// `RATE_LIMIT_PER_MINUTE`.
    pub rate_limit_per_minute: u32,
    /// `TRUSTED_PROXIES`.
    pub trusted_proxies: crate::ratelimit::TrustedProxies,
    /// `AUTH_FAILURES_PER_MINUTE`.
    pub auth_failures_per_minute: u32,
    /// `API_KEYS_PER_USER`.
    pub api_keys_per_user: u32,
    /// `HEADER_READ_TIMEOUT_SECS`, `IDLE_TIMEOUT_SECS`, `MAX_CONNECTIONS`,
    /// `MAX_CONNECTIONS_PER_CLIENT`, `NOFILE_LIMIT`.
    pub connections: crate::serve::ConnectionLimits,
    /// The `OIDC_*`, `PUBLIC_URL` and `SESSION_*` variables; `None` without `OIDC_ISSUER`.
    pub oidc: Option<crate::auth::oidc::OidcConfig>,
    /// `NIMBUS_WEB_DIST`.
    pub web_dist: Option<std::path::PathBuf>,
    /// `BILLING_ISSUER_NAME`, `BILLING_ISSUER_ADDRESS`, `BILLING_ISSUER_LOGO_URL`.
    pub invoice_issuer: crate::invoice_html::Issuer,
    /// `STRIPE_SECRET_KEY`, `STRIPE_WEBHOOK_SECRET`, `STRIPE_API_BASE`; `None` without the key.
    pub stripe: Option<crate::payments::stripe::StripeConfig>,
}

/// A variable that is missing or wrong.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{var}: {problem}")]
pub struct ConfigError {
    /// The variable.
    pub var: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

fn err(var: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError { var, problem: problem.into() }
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads variables through `get` (the environment, or a map in tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let get = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let required = |k: &'static str| get(k).ok_or_else(|| err(k, "is required"));
        let database_max_connections = match get("DATABASE_MAX_CONNECTIONS") {
            Some(v) => v
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| err("DATABASE_MAX_CONNECTIONS", "must be a positive integer"))?,
            None => 20,
        };
        let pve = PveEnv::from_lookup(get).map_err(|e| err(e.var, e.problem))?;
        let metrics_listen = get("METRICS_LISTEN")
            .map(|v| v.parse().map_err(|_| err("METRICS_LISTEN", "must be an address like 0.0.0.0:9090")))
            .transpose()?;
        let listen = match get("LISTEN") {
            Some(v) => v.parse().map_err(|_| err("LISTEN", "must be an address like 0.0.0.0:8080"))?,
            None => SocketAddr::from(([127, 0, 0, 1], 8080)),
        };
        let oidc = oidc_from_lookup(&get)?;
        let rate_limit_per_minute = match get("RATE_LIMIT_PER_MINUTE") {
            Some(v) => v
                .trim()
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| err("RATE_LIMIT_PER_MINUTE", "must be a positive integer"))?,
            None => crate::ratelimit::RateLimitSettings::DEFAULT_PER_MINUTE,
        };
        let trusted_proxies = match get("TRUSTED_PROXIES") {
            Some(v) => v.parse().map_err(|e: crate::ratelimit::BadProxy| err("TRUSTED_PROXIES", e.to_string()))?,
            None => crate::ratelimit::TrustedProxies::default(),
        };
        let positive = |var: &'static str, default: u64| -> Result<u64, ConfigError> {
            match get(var) {
                Some(v) => {
                    v.trim().parse().ok().filter(|n| *n > 0).ok_or_else(|| err(var, "must be a positive integer"))
                }
                None => Ok(default),
            }
        };
        let defaults = crate::serve::ConnectionLimits::default();
        let connections = crate::serve::ConnectionLimits {
            header_read_timeout: std::time::Duration::from_secs(positive(
                "HEADER_READ_TIMEOUT_SECS",
                defaults.header_read_timeout.as_secs(),
            )?),
            idle_timeout: std::time::Duration::from_secs(positive(
                "IDLE_TIMEOUT_SECS",
                defaults.idle_timeout.as_secs(),
            )?),
            max_connections: positive("MAX_CONNECTIONS", defaults.max_connections as u64)? as usize,
            max_connections_per_client: positive(
                "MAX_CONNECTIONS_PER_CLIENT",
                defaults.max_connections_per_client as u64,
            )? as usize,
            nofile_limit: positive("NOFILE_LIMIT", defaults.nofile_limit)?,
        };
        let stripe = match (get("STRIPE_SECRET_KEY"), get("STRIPE_WEBHOOK_SECRET")) {
            (None, _) => None,
            (Some(_), None) => return Err(err("STRIPE_WEBHOOK_SECRET", "is required with STRIPE_SECRET_KEY")),
            (Some(secret_key), Some(webhook_secret)) => Some(crate::payments::stripe::StripeConfig {
                api_base: get("STRIPE_API_BASE").unwrap_or_else(|| "https://api.stripe.com".into()),
                secret_key,
                webhook_secret,
            }),
        };
        let small = |var: &'static str, default: u32| -> Result<u32, ConfigError> {
            positive(var, u64::from(default))?.try_into().map_err(|_| err(var, "is too large"))
        };
        Ok(Config {
            rate_limit_per_minute,
            trusted_proxies,
            auth_failures_per_minute: small(
                "AUTH_FAILURES_PER_MINUTE",
                crate::ratelimit::RateLimitSettings::DEFAULT_AUTH_FAILURES_PER_MINUTE,
            )?,
            api_keys_per_user: small("API_KEYS_PER_USER", 50)?,
            connections,
            oidc,
            database_url: required("DATABASE_URL")?,
            database_migration_url: get("DATABASE_MIGRATION_URL"),
            database_max_connections,
            redis_url: required("REDIS_URL")?,
            redis_key_prefix: get("REDIS_KEY_PREFIX").unwrap_or_else(|| "nimbus:".into()),
            pve_url: pve.url,
            pve_token: pve.token,
            pve_tls: pve.tls,
            pve_allow_http: pve.allow_http,
            listen,
            metrics_listen,
            web_dist: get("NIMBUS_WEB_DIST").map(std::path::PathBuf::from),
            invoice_issuer: crate::invoice_html::Issuer::from_vars(
                get("BILLING_ISSUER_NAME"),
                get("BILLING_ISSUER_ADDRESS"),
                get("BILLING_ISSUER_LOGO_URL"),
            )
            .map_err(|problem| ConfigError { var: "BILLING_ISSUER_LOGO_URL", problem })?,
            stripe,
        })
    }
}

/// The OIDC settings, when `OIDC_ISSUER` is set.
fn oidc_from_lookup(
    get: &impl Fn(&str) -> Option<String>,
) -> Result<Option<crate::auth::oidc::OidcConfig>, ConfigError> {
    let Some(issuer) = get("OIDC_ISSUER") else { return Ok(None) };
    url::Url::parse(&issuer)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .ok_or_else(|| err("OIDC_ISSUER", "must be an http(s) URL"))?;
    let public_url = get("PUBLIC_URL")
        .ok_or_else(|| err("PUBLIC_URL", "is required with OIDC_ISSUER"))?
        .parse::<url::Url>()
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .ok_or_else(|| err("PUBLIC_URL", "must be an http(s) URL like https://cloud.example.com"))?;
    let client_id = get("OIDC_CLIENT_ID").unwrap_or_else(|| "nimbus".into());
    let secret = get("OIDC_CLIENT_SECRET");
    let mut c = crate::auth::oidc::OidcConfig::new(&issuer, &client_id, secret.as_deref(), public_url);
    if let Some(v) = get("OIDC_ROLES_CLAIM") {
        c.roles_claim = v;
    }
    if let Some(v) = get("OIDC_JWT_AUDIENCE") {
        c.jwt_audience = v;
    }
    if let Some(v) = get("OIDC_SIGNUP_PLAN") {
        c.signup_plan = v;
    }
    c.trust_email = match get("OIDC_TRUST_EMAIL").as_deref().map(str::trim) {
        None | Some("0" | "false") => false,
        Some("1" | "true") => true,
        Some(_) => return Err(err("OIDC_TRUST_EMAIL", "must be true or false")),
    };
    let secs = |var: &'static str| -> Result<Option<std::time::Duration>, ConfigError> {
        get(var)
            .map(|v| {
                v.parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .map(std::time::Duration::from_secs)
                    .ok_or_else(|| err(var, "must be a positive number of seconds"))
            })
            .transpose()
    };
    if let Some(d) = secs("OIDC_JWKS_MIN_REFRESH_SECS")? {
        c.jwks_min_refresh = d;
    }
    if let Some(d) = secs("SESSION_IDLE_SECS")? {
        c.session_idle = d;
    }
    if let Some(d) = secs("SESSION_ABSOLUTE_SECS")? {
        c.session_absolute = d;
    }
    Ok(Some(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    const BASE: &[(&str, &str)] = &[
        ("DATABASE_URL", "postgres://x/nimbus"),
        ("REDIS_URL", "redis://127.0.0.1:6379"),
        ("PVE_URL", "https://pve:8006"),
        ("PVE_TOKEN", "root@pam!nimbus=secret"),
    ];

    #[test]
    fn defaults_apply() {
        let c = Config::from_lookup(lookup(BASE)).unwrap();
        assert_eq!(c.database_max_connections, 20);
        assert_eq!(c.database_migration_url, None);
        assert_eq!(c.redis_key_prefix, "nimbus:");
        assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.pve_tls, TlsMode::System);
        let mut v = BASE.to_vec();
        v.push(("DATABASE_MIGRATION_URL", "postgres://owner@x/nimbus"));
        let c = Config::from_lookup(lookup(&v)).unwrap();
        assert_eq!(c.database_migration_url.as_deref(), Some("postgres://owner@x/nimbus"));
    }

    #[test]
    fn tls_mode_is_exactly_one_choice() {
        let with = |extra: &[(&str, &str)]| {
            let mut v = BASE.to_vec();
            v.extend_from_slice(extra);
            Config::from_lookup(lookup(&v))
        };
        assert_eq!(with(&[("PVE_FINGERPRINT", "AB:CD")]).unwrap().pve_tls, TlsMode::Fingerprint("AB:CD".into()));
        assert_eq!(with(&[("PVE_INSECURE", "true")]).unwrap().pve_tls, TlsMode::Insecure);
        assert_eq!(with(&[("PVE_INSECURE", "0")]).unwrap().pve_tls, TlsMode::System);
        assert!(with(&[("PVE_FINGERPRINT", "AB"), ("PVE_INSECURE", "1")]).is_err());
        assert!(with(&[("PVE_INSECURE", "maybe")]).is_err());
    }

    #[test]
    fn plain_http_proxmox_needs_the_lab_allowance() {
        let http = |extra: &[(&str, &str)]| {
            let mut v: Vec<_> = BASE.iter().filter(|(k, _)| *k != "PVE_URL").copied().collect();
            v.push(("PVE_URL", "http://pve-sim:8006"));
            v.extend_from_slice(extra);
            Config::from_lookup(lookup(&v))
        };
        assert_eq!(http(&[]).unwrap_err().var, "PVE_URL");
        assert!(http(&[("PVE_ALLOW_HTTP", "true")]).unwrap().pve_allow_http);
        assert!(!Config::from_lookup(lookup(BASE)).unwrap().pve_allow_http);
    }

    #[test]
    fn stripe_needs_its_webhook_secret_and_defaults_to_stripes_api() {
        let with = |extra: &[(&str, &str)]| {
            let mut v = BASE.to_vec();
            v.extend_from_slice(extra);
            Config::from_lookup(lookup(&v))
        };
        assert!(with(&[]).unwrap().stripe.is_none());
        assert_eq!(with(&[("STRIPE_SECRET_KEY", "sk_live_x")]).unwrap_err().var, "STRIPE_WEBHOOK_SECRET");
        let set = with(&[("STRIPE_SECRET_KEY", "sk_live_x"), ("STRIPE_WEBHOOK_SECRET", "whsec_y")]).unwrap();
        let stripe = set.stripe.unwrap();
        assert_eq!((stripe.api_base.as_str(), stripe.webhook_secret.as_str()), ("https://api.stripe.com", "whsec_y"));
        assert!(!format!("{stripe:?}").contains("sk_live_x"), "secrets stay out of logs");
    }

    #[test]
    fn oidc_is_optional_and_checked_when_set() {
        assert!(Config::from_lookup(lookup(BASE)).unwrap().oidc.is_none());
        let with = |extra: &[(&str, &str)]| {
            let mut v = BASE.to_vec();
            v.extend_from_slice(extra);
            Config::from_lookup(lookup(&v))
        };
        assert_eq!(with(&[("OIDC_ISSUER", "http://idp")]).unwrap_err().var, "PUBLIC_URL");
        assert_eq!(with(&[("OIDC_ISSUER", "idp"), ("PUBLIC_URL", "https://c")]).unwrap_err().var, "OIDC_ISSUER");
        let ok = &[("OIDC_ISSUER", "http://idp"), ("PUBLIC_URL", "https://cloud.example.com")];
        let c = with(ok).unwrap().oidc.unwrap();
        assert_eq!(c.roles_claim, "realm_access.roles");
        assert_eq!(c.client_id, "nimbus");
        assert!(!c.trust_email, "only tokens saying email_verified create accounts by default");
        let mut trusting = ok.to_vec();
        trusting.push(("OIDC_TRUST_EMAIL", "true"));
        assert!(with(&trusting).unwrap().oidc.unwrap().trust_email);
        trusting.pop();
        trusting.push(("OIDC_TRUST_EMAIL", "yes"));
        assert_eq!(with(&trusting).unwrap_err().var, "OIDC_TRUST_EMAIL");
        let mut bad = ok.to_vec();
        bad.push(("SESSION_IDLE_SECS", "0"));
        assert_eq!(with(&bad).unwrap_err().var, "SESSION_IDLE_SECS");
    }

    #[test]
    fn rate_limits_default_to_300_per_minute_and_are_checked() {
        let with = |extra: &[(&str, &str)]| {
            let mut v = BASE.to_vec();
            v.extend_from_slice(extra);
            Config::from_lookup(lookup(&v))
        };
        let c = with(&[]).unwrap();
        assert_eq!(c.rate_limit_per_minute, 300);
        assert!(c.trusted_proxies.is_empty());
        let c = with(&[("RATE_LIMIT_PER_MINUTE", "1200"), ("TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1")]).unwrap();
        assert_eq!(c.rate_limit_per_minute, 1200);
        assert!(c.trusted_proxies.contains("10.9.8.7".parse().unwrap()));
        assert_eq!(with(&[("RATE_LIMIT_PER_MINUTE", "0")]).unwrap_err().var, "RATE_LIMIT_PER_MINUTE");
        assert_eq!(c.auth_failures_per_minute, 30);
        assert_eq!(c.api_keys_per_user, 50);
        let c =
            with(&[("API_KEYS_PER_USER", "5"), ("MAX_CONNECTIONS_PER_CLIENT", "8"), ("HEADER_READ_TIMEOUT_SECS", "3")])
                .unwrap();
        assert_eq!(c.api_keys_per_user, 5);
        assert_eq!(c.connections.max_connections_per_client, 8);
        assert_eq!(c.connections.header_read_timeout, std::time::Duration::from_secs(3));
        assert_eq!(with(&[("MAX_CONNECTIONS", "none")]).unwrap_err().var, "MAX_CONNECTIONS");
        assert_eq!(with(&[("AUTH_FAILURES_PER_MINUTE", "0")]).unwrap_err().var, "AUTH_FAILURES_PER_MINUTE");
        assert_eq!(with(&[("RATE_LIMIT_PER_MINUTE", "lots")]).unwrap_err().var, "RATE_LIMIT_PER_MINUTE");
        assert_eq!(with(&[("TRUSTED_PROXIES", "10.0.0.0/99")]).unwrap_err().var, "TRUSTED_PROXIES");
    }

    #[test]
    fn missing_and_malformed_variables_are_named() {
        let e = Config::from_lookup(lookup(&BASE[1..])).unwrap_err();
        assert_eq!(e.var, "DATABASE_URL");
        let mut v = BASE.to_vec();
        v.push(("LISTEN", "nowhere"));
        assert_eq!(Config::from_lookup(lookup(&v)).unwrap_err().var, "LISTEN");
        let mut v = BASE.to_vec();
        v[3] = ("PVE_TOKEN", "nope");
        let e = Config::from_lookup(lookup(&v)).unwrap_err();
        assert_eq!(e.var, "PVE_TOKEN");
        assert!(!e.to_string().contains("nope"), "the token is never echoed");
    }
}
