//! Typed configuration from environment variables, read once at start and passed explicitly.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `DATABASE_URL` | PostgreSQL URL | required |
//! | `DATABASE_MAX_CONNECTIONS` | pool size | `20` |
//! | `REDIS_URL` | Redis URL | required |
//! | `REDIS_KEY_PREFIX` | prefix of every Redis key (queues are `<prefix>q:{name}`) | `nimbus:` |
//! | `PVE_URL` | Proxmox API, `https://host:8006` | required |
//! | `PVE_TOKEN` | API token, `user@realm!tokenid=secret` | required |
//! | `PVE_FINGERPRINT` | pin the server certificate's SHA-256 (`AB:CD:…`) | one of these three, |
//! | `PVE_CA_FILE` | trust the CA certificates in this PEM file | or the public CAs |
//! | `PVE_INSECURE` | `1`/`true`: accept any certificate (labs only) | when none is set |
//! | `LISTEN` | address to serve on | `127.0.0.1:8080` |
//! | `RUST_LOG` | log filter | `info` |
//!
//! `nimbus-api bootstrap` needs only `DATABASE_URL`.

use std::net::SocketAddr;

use nimbus_proxmox::{ApiToken, PveEnv, TlsMode};

/// What `nimbus-api serve` needs.
#[derive(Clone, Debug)]
pub struct Config {
    /// `DATABASE_URL`.
    pub database_url: String,
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
    /// `LISTEN`.
    pub listen: SocketAddr,
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
        let listen = match get("LISTEN") {
            Some(v) => v.parse().map_err(|_| err("LISTEN", "must be an address like 0.0.0.0:8080"))?,
            None => SocketAddr::from(([127, 0, 0, 1], 8080)),
        };
        Ok(Config {
            database_url: required("DATABASE_URL")?,
            database_max_connections,
            redis_url: required("REDIS_URL")?,
            redis_key_prefix: get("REDIS_KEY_PREFIX").unwrap_or_else(|| "nimbus:".into()),
            pve_url: pve.url,
            pve_token: pve.token,
            pve_tls: pve.tls,
            listen,
        })
    }
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
        assert_eq!(c.redis_key_prefix, "nimbus:");
        assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.pve_tls, TlsMode::System);
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
