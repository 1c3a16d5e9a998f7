//! Typed configuration of `nimbus-worker` from environment variables, read once at start.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `DATABASE_URL` | PostgreSQL URL of the runtime role (`nimbus_app`: rows only, no DDL; the worker never migrates) | required |
//! | `DATABASE_MAX_CONNECTIONS` | pool size | `WORKER_CONCURRENCY + 4` |
//! | `REDIS_URL` | Redis URL | required |
//! | `REDIS_KEY_PREFIX` | prefix of every Redis key (same as the API's) | `nimbus:` |
//! | `PVE_URL` | Proxmox API, `https://host:8006` | required |
//! | `PVE_TOKEN` | API token, `user@realm!tokenid=secret` | required |
//! | `PVE_FINGERPRINT` | pin the server certificate's SHA-256 (`AB:CD:…`) | one of these three, |
//! | `PVE_CA_FILE` | trust the CA certificates in this PEM file | or the public CAs |
//! | `PVE_INSECURE` | `1`/`true`: accept any certificate (labs only) | when none is set |
//! | `PVE_ALLOW_HTTP` | `1`/`true`: accept an `http://` `PVE_URL` (labs only: the token travels in clear; warned at start) | `false`: refused |
//! | `WORKER_QUEUES` | the queues this process consumes, comma separated (`provision,rebuild`; see the README for separate pools) | all: `provision,power,resize,rebuild,delete,snapshot,backup,billing,notify` |
//! | `METRICS_LISTEN` | address of the metrics listener (`/metrics`, `/healthz`), for Prometheus only | unset: none |
//! | `WORKER_CONCURRENCY` | jobs of one queue run at once by this process | `8` |
//! | `QUEUE_CONCURRENCY` | per-queue exceptions to `WORKER_CONCURRENCY`, `power=32,provision=4` | none |
//! | `NODE_CAP` | provision jobs loading one Proxmox node at once, across all workers | `4` |
//! | `NODE_CAPS` | per-node exceptions to `NODE_CAP`, `pve1=2,pve3=0` (0: no new work there) | none |
//! | `PVE_RATE_LIMIT` | Proxmox API requests per second, across all workers (0: no cap) | `50` |
//! | `PVE_RATE_BURST` | requests that may go at once after a quiet spell, within `PVE_RATE_LIMIT` | `PVE_RATE_LIMIT` |
//! | `JOB_MAX_WAIT_IP_SECS` | how long a started guest may take to report its IP | `300` |
//! | `JOB_LEASE_SECS` | how long a job's ledger claim lasts unrenewed (renewed every third of it): bounds how soon a crashed worker's job is taken over | `6` |
//! | `WORKER_NAME` | this process's name in leases | host name + pid |
//! | `EVENTS` | `0`/`false`: this process neither relays domain events nor delivers webhooks and notifications (a pool dedicated to other queues) | on |
//! | `WEBHOOK_ALLOW_NETWORKS` | networks webhook deliveries may reach although the SSRF guard refuses them, `127.0.0.0/8,::1/128` (`make dev` allows loopback) | none |
//! | `WEBHOOK_CONCURRENCY` | webhook attempts in flight at once in this process | `64` |
//! | `SMTP_HOST` | the mail server notification emails go through (unset: no email) | none |
//! | `SMTP_PORT` | its port | `587` (`25` with `SMTP_TLS=none`, `465` with `tls`) |
//! | `SMTP_TLS` | `none`, `starttls` (required) or `tls` (from the first byte) | `starttls` |
//! | `SMTP_USERNAME`, `SMTP_PASSWORD` | credentials, when the server asks | none |
//! | `SMTP_FROM` | the sender, `Name <address>` | `Nimbus <nimbus@localhost>` |
//! | `NOTIFY_TEMPLATE_DIR` | a folder of `{type}.html.hbs` / `{type}.txt.hbs` / `{type}.subject.hbs` overriding the built-in email templates | none |
//! | `PUBLIC_URL` | the console's address, for links in emails | none |
//! | `RUST_LOG` | log filter | `info` |

use std::collections::HashMap;
use std::time::Duration;

use nimbus_proxmox::{ApiToken, PveEnv, TlsMode};

/// What `nimbus-worker` needs.
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
    /// `METRICS_LISTEN`: the metrics listener (`/metrics`, `/healthz`); `None`: none.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// `PVE_URL`.
    pub pve_url: String,
    /// `PVE_TOKEN`.
    pub pve_token: ApiToken,
    /// From `PVE_FINGERPRINT`, `PVE_CA_FILE` or `PVE_INSECURE`.
    pub pve_tls: TlsMode,
    /// `PVE_ALLOW_HTTP`.
    pub pve_allow_http: bool,
    /// `WORKER_CONCURRENCY`.
    pub concurrency: usize,
    /// `WORKER_QUEUES`, in `nimbus_jobs::queues::ALL` order.
    pub queues: Vec<&'static str>,
    /// `QUEUE_CONCURRENCY`.
    pub queue_concurrency: HashMap<String, u32>,
    /// `NODE_CAP`.
    pub node_cap: u32,
    /// `EVENTS`.
    pub events: bool,
    /// `WEBHOOK_ALLOW_NETWORKS`.
    pub webhook_allow: nimbus_webhooks::AllowList,
    /// `WEBHOOK_CONCURRENCY`.
    pub webhook_concurrency: usize,
    /// `SMTP_*`, `NOTIFY_TEMPLATE_DIR`, `PUBLIC_URL` (`None` without `SMTP_HOST`).
    pub mail: Option<crate::notify::MailConfig>,
    /// `NODE_CAPS`.
    pub node_caps: HashMap<String, u32>,
    /// `PVE_RATE_LIMIT` (0: no cap).
    pub pve_rate_limit: u32,
    /// `PVE_RATE_BURST`.
    pub pve_rate_burst: u32,
    /// `JOB_MAX_WAIT_IP_SECS`.
    pub ip_timeout: Duration,
    /// `JOB_LEASE_SECS`.
    pub lease: Duration,
    /// `WORKER_NAME`.
    pub worker_name: String,
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

/// `pve1=2,pve3=0`: node names as Proxmox spells them, caps as non-negative integers.
fn node_caps(value: &str) -> Result<HashMap<String, u32>, ConfigError> {
    name_values("NODE_CAPS", "must read like pve1=2,pve3=0 (node=cap, comma separated)", value)
}

/// `WORKER_QUEUES`: known queue names, each once.
fn worker_queues(value: &str) -> Result<Vec<&'static str>, ConfigError> {
    let all = nimbus_jobs::queues::ALL;
    let named: Vec<&str> = value.split(',').map(str::trim).filter(|q| !q.is_empty()).collect();
    if let Some(unknown) = named.iter().find(|q| !all.contains(q)) {
        return Err(err("WORKER_QUEUES", format!("unknown queue '{unknown}' (queues: {})", all.join(", "))));
    }
    if named.is_empty() {
        return Err(err("WORKER_QUEUES", "names no queue"));
    }
    Ok(all.iter().copied().filter(|q| named.contains(q)).collect())
}

/// `QUEUE_CONCURRENCY`: known queue names with positive numbers.
fn queue_concurrency(value: &str) -> Result<HashMap<String, u32>, ConfigError> {
    let var = "QUEUE_CONCURRENCY";
    let map = name_values(var, "must read like power=32,provision=4 (queue=jobs at once, comma separated)", value)?;
    if let Some((q, _)) = map.iter().find(|(q, n)| !nimbus_jobs::queues::ALL.contains(&q.as_str()) || **n == 0) {
        return Err(err(var, format!("'{q}' is not a queue, or its number is 0")));
    }
    Ok(map)
}

/// `name=n,name=n` with each name once.
fn name_values(var: &'static str, shape: &str, value: &str) -> Result<HashMap<String, u32>, ConfigError> {
    let bad = || err(var, shape);
    let mut caps = HashMap::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (node, cap) = entry.split_once('=').ok_or_else(bad)?;
        let node = node.trim();
        let valid_name = !node.is_empty() && node.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        let cap: u32 = cap.trim().parse().map_err(|_| bad())?;
        if !valid_name || caps.insert(node.to_owned(), cap).is_some() {
            return Err(bad());
        }
    }
    Ok(caps)
}

fn positive<T: std::str::FromStr + PartialOrd + Default>(
    var: &'static str,
    value: Option<String>,
    default: T,
) -> Result<T, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) => {
            v.trim().parse().ok().filter(|n| *n > T::default()).ok_or_else(|| err(var, "must be a positive integer"))
        }
    }
}

fn non_negative(var: &'static str, value: Option<String>, default: u32) -> Result<u32, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) => v.trim().parse().map_err(|_| err(var, "must be a non-negative integer")),
    }
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
        let concurrency: usize = positive("WORKER_CONCURRENCY", get("WORKER_CONCURRENCY"), 8)?;
        let database_max_connections =
            positive("DATABASE_MAX_CONNECTIONS", get("DATABASE_MAX_CONNECTIONS"), concurrency as u32 + 4)?;
        let queues = match get("WORKER_QUEUES") {
            Some(v) => worker_queues(&v)?,
            None => nimbus_jobs::queues::ALL.to_vec(),
        };
        let queue_concurrency =
            get("QUEUE_CONCURRENCY").map(|v| queue_concurrency(&v)).transpose()?.unwrap_or_default();
        let node_cap = positive("NODE_CAP", get("NODE_CAP"), 4)?;
        let node_caps = get("NODE_CAPS").map(|v| node_caps(&v)).transpose()?.unwrap_or_default();
        let pve_rate_limit = non_negative("PVE_RATE_LIMIT", get("PVE_RATE_LIMIT"), 50)?;
        let pve_rate_burst = positive("PVE_RATE_BURST", get("PVE_RATE_BURST"), pve_rate_limit.max(1))?;
        let ip_timeout = Duration::from_secs(positive("JOB_MAX_WAIT_IP_SECS", get("JOB_MAX_WAIT_IP_SECS"), 300)?);
        let default_lease = crate::Settings::default().lease.as_secs();
        let lease = Duration::from_secs(positive("JOB_LEASE_SECS", get("JOB_LEASE_SECS"), default_lease)?);
        let pve = PveEnv::from_lookup(get).map_err(|e| err(e.var, e.problem))?;
        let worker_name = get("WORKER_NAME").unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "worker".into());
            format!("{host}-{}", std::process::id())
        });
        let events = !matches!(get("EVENTS").as_deref(), Some("0" | "false"));
        let webhook_allow = nimbus_webhooks::AllowList::parse(&get("WEBHOOK_ALLOW_NETWORKS").unwrap_or_default())
            .map_err(|e| err("WEBHOOK_ALLOW_NETWORKS", e))?;
        let webhook_concurrency = positive("WEBHOOK_CONCURRENCY", get("WEBHOOK_CONCURRENCY"), 64)?;
        let mail = match get("SMTP_HOST") {
            None => None,
            Some(host) => {
                let tls: crate::notify::SmtpTls =
                    get("SMTP_TLS").as_deref().unwrap_or("starttls").parse().map_err(|e| err("SMTP_TLS", e))?;
                let default_port = match tls {
                    crate::notify::SmtpTls::None => 25,
                    crate::notify::SmtpTls::StartTls => 587,
                    crate::notify::SmtpTls::Tls => 465,
                };
                let port = get("SMTP_PORT")
                    .map(|p| p.parse::<u16>().map_err(|_| err("SMTP_PORT", "must be a port number")))
                    .transpose()?
                    .unwrap_or(default_port);
                Some(crate::notify::MailConfig {
                    host,
                    port,
                    tls,
                    username: get("SMTP_USERNAME"),
                    password: get("SMTP_PASSWORD"),
                    from: get("SMTP_FROM").unwrap_or_else(|| "Nimbus <nimbus@localhost>".into()),
                    template_dir: get("NOTIFY_TEMPLATE_DIR").map(Into::into),
                    console_url: get("PUBLIC_URL"),
                })
            }
        };
        Ok(Config {
            events,
            webhook_allow,
            webhook_concurrency,
            mail,
            database_url: required("DATABASE_URL")?,
            database_max_connections,
            redis_url: required("REDIS_URL")?,
            redis_key_prefix: get("REDIS_KEY_PREFIX").unwrap_or_else(|| "nimbus:".into()),
            metrics_listen: get("METRICS_LISTEN")
                .map(|v| v.parse().map_err(|_| err("METRICS_LISTEN", "must be an address like 0.0.0.0:9090")))
                .transpose()?,
            pve_url: pve.url,
            pve_token: pve.token,
            pve_tls: pve.tls,
            pve_allow_http: pve.allow_http,
            concurrency,
            queues,
            queue_concurrency,
            node_cap,
            node_caps,
            pve_rate_limit,
            pve_rate_burst,
            ip_timeout,
            lease,
            worker_name,
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

    fn with(extra: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut v = BASE.to_vec();
        v.extend_from_slice(extra);
        Config::from_lookup(lookup(&v))
    }

    #[test]
    fn defaults_apply() {
        let c = with(&[]).unwrap();
        assert_eq!((c.concurrency, c.node_cap, c.database_max_connections), (8, 4, 12));
        assert_eq!(c.redis_key_prefix, "nimbus:");
        assert_eq!(c.pve_tls, TlsMode::System);
        assert!(!c.worker_name.is_empty());
    }

    #[test]
    fn numbers_and_tls_are_checked() {
        let c = with(&[("WORKER_CONCURRENCY", "3"), ("NODE_CAP", "2"), ("PVE_INSECURE", "true")]).unwrap();
        assert_eq!((c.concurrency, c.node_cap, c.pve_tls), (3, 2, TlsMode::Insecure));
        assert_eq!(with(&[("NODE_CAP", "0")]).unwrap_err().var, "NODE_CAP");
        let c = with(&[("NODE_CAPS", "pve1=2, pve3=0")]).unwrap();
        assert_eq!(c.node_caps, HashMap::from([("pve1".to_owned(), 2), ("pve3".to_owned(), 0)]));
        for bad in ["pve1", "pve1=x", "=2", "pve1=2,pve1=3", "pve 1=2", "pve1=-1"] {
            assert_eq!(with(&[("NODE_CAPS", bad)]).unwrap_err().var, "NODE_CAPS", "{bad}");
        }
        assert_eq!(with(&[("WORKER_CONCURRENCY", "many")]).unwrap_err().var, "WORKER_CONCURRENCY");
        assert!(with(&[("PVE_FINGERPRINT", "AB"), ("PVE_INSECURE", "1")]).is_err());
        assert_eq!(Config::from_lookup(lookup(&BASE[1..])).unwrap_err().var, "DATABASE_URL");
    }

    #[test]
    fn proxmox_rate_cap() {
        let c = with(&[]).unwrap();
        assert_eq!((c.pve_rate_limit, c.pve_rate_burst), (50, 50));
        let c = with(&[("PVE_RATE_LIMIT", "20")]).unwrap();
        assert_eq!((c.pve_rate_limit, c.pve_rate_burst), (20, 20), "the burst follows the rate");
        let c = with(&[("PVE_RATE_LIMIT", "20"), ("PVE_RATE_BURST", "5")]).unwrap();
        assert_eq!((c.pve_rate_limit, c.pve_rate_burst), (20, 5));
        assert_eq!(with(&[("PVE_RATE_LIMIT", "0")]).unwrap().pve_rate_limit, 0, "0: no cap");
        for bad in ["-1", "x", "2.5"] {
            assert_eq!(with(&[("PVE_RATE_LIMIT", bad)]).unwrap_err().var, "PVE_RATE_LIMIT", "{bad}");
        }
        for bad in ["0", "-1", "x"] {
            assert_eq!(with(&[("PVE_RATE_BURST", bad)]).unwrap_err().var, "PVE_RATE_BURST", "{bad}");
        }
    }

    #[test]
    fn plain_http_proxmox_needs_the_lab_allowance() {
        assert!(!with(&[]).unwrap().pve_allow_http);
        // Later entries win in `lookup`, so these replace BASE's https URL.
        assert_eq!(with(&[("PVE_URL", "http://pve-sim:8006")]).unwrap_err().var, "PVE_URL");
        let lab = with(&[("PVE_URL", "http://pve-sim:8006"), ("PVE_ALLOW_HTTP", "1")]).unwrap();
        assert!(lab.pve_allow_http);
    }

    #[test]
    fn queues_default_to_all_and_can_be_named() {
        assert_eq!(with(&[]).unwrap().queues, nimbus_jobs::queues::ALL.to_vec());
        let c = with(&[("WORKER_QUEUES", " snapshot, power ,power"), ("QUEUE_CONCURRENCY", "power=32")]).unwrap();
        assert_eq!(c.queues, vec!["power", "snapshot"]);
        assert_eq!(c.queue_concurrency.get("power"), Some(&32));
        assert_eq!(with(&[("WORKER_QUEUES", "provision,nonesuch")]).unwrap_err().var, "WORKER_QUEUES");
        assert_eq!(with(&[("WORKER_QUEUES", " , ")]).unwrap_err().var, "WORKER_QUEUES");
        assert_eq!(with(&[("QUEUE_CONCURRENCY", "power=0")]).unwrap_err().var, "QUEUE_CONCURRENCY");
        assert_eq!(with(&[("QUEUE_CONCURRENCY", "nonesuch=2")]).unwrap_err().var, "QUEUE_CONCURRENCY");
    }
}
