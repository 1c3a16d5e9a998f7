//! Client configuration: endpoint, API token, TLS mode, timeouts, task polling and the
//! request gate.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{PveError, Result};
use crate::gate::RequestGate;
use crate::observe::CallObserver;

/// A PVE API token, `user@realm!tokenid=secret`. `Debug` and `Display` never show the
/// secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken {
    token_id: String,
    secret: String,
}

impl ApiToken {
    /// Builds a token from its id (`user@realm!name`) and secret.
    pub fn new(token_id: impl Into<String>, secret: impl Into<String>) -> Result<Self> {
        let token_id = token_id.into();
        let secret = secret.into();
        validate_token_id(&token_id)?;
        if secret.is_empty() {
            return Err(PveError::Config("API token secret is empty".into()));
        }
        Ok(Self { token_id, secret })
    }

    /// Parses `user@realm!tokenid=secret`, optionally prefixed with `PVEAPIToken=`.
    /// Like PVE, the id and the secret are split at the last `=`.
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim();
        let s = s.strip_prefix("PVEAPIToken=").unwrap_or(s);
        let (id, secret) = s
            .rsplit_once('=')
            .ok_or_else(|| PveError::Config("API token must look like user@realm!tokenid=secret".into()))?;
        Self::new(id, secret)
    }

    /// The token id, `user@realm!name` (the user PVE records on tasks).
    pub fn token_id(&self) -> &str {
        &self.token_id
    }

    /// The `Authorization` header value.
    pub(crate) fn header_value(&self) -> String {
        format!("PVEAPIToken={}={}", self.token_id, self.secret)
    }
}

fn validate_token_id(id: &str) -> Result<()> {
    let bad = || PveError::Config(format!("API token id '{id}' is not user@realm!tokenname"));
    let (user_realm, name) = id.split_once('!').ok_or_else(bad)?;
    let (user, realm) = user_realm.rsplit_once('@').ok_or_else(bad)?;
    // PVE's token name uses the realm regex `[A-Za-z][A-Za-z0-9\.\-_]+`.
    let name_ok = name.len() >= 2
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if user.is_empty() || realm.is_empty() || !name_ok {
        return Err(bad());
    }
    Ok(())
}

impl FromStr for ApiToken {
    type Err = PveError;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiToken({}=<redacted>)", self.token_id)
    }
}

impl fmt::Display for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}=<redacted>", self.token_id)
    }
}

/// How the server certificate is checked.
#[derive(Clone, PartialEq, Eq)]
pub enum TlsMode {
    /// Public CAs (Mozilla's root store) and hostname verification.
    System,
    /// Accept exactly the certificate whose DER SHA-256 is this (hex, with or without
    /// PVE's `AB:CD:..` colons, any case). No CA or hostname check; handshake signatures
    /// are still verified against the pinned certificate's key.
    Fingerprint(String),
    /// Trust the CA certificates in this PEM text (e.g. `/etc/pve/pve-root-ca.pem`),
    /// with hostname verification.
    CaPem(String),
    /// Like [`TlsMode::CaPem`], read from a file at construction.
    CaFile(PathBuf),
    /// Accept any certificate. Logged loudly at construction; for labs only.
    Insecure,
}

impl fmt::Debug for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsMode::System => f.write_str("System"),
            TlsMode::Fingerprint(fp) => write!(f, "Fingerprint({fp})"),
            TlsMode::CaPem(pem) => write!(f, "CaPem({} bytes)", pem.len()),
            TlsMode::CaFile(p) => write!(f, "CaFile({})", p.display()),
            TlsMode::Insecure => f.write_str("Insecure"),
        }
    }
}

/// Exponential backoff used while polling a task's status.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PollBackoff {
    /// First delay.
    pub initial: Duration,
    /// Upper bound of the delay.
    pub max: Duration,
    /// Growth factor per poll.
    pub factor: f64,
    /// Random spread, as a fraction of the delay (0.2 = ±20 %), so that many workers
    /// polling many tasks do not synchronise.
    pub jitter: f64,
}

impl Default for PollBackoff {
    fn default() -> Self {
        Self { initial: Duration::from_millis(250), max: Duration::from_secs(5), factor: 1.6, jitter: 0.2 }
    }
}

/// Everything needed to talk to one PVE cluster.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `https://host:8006` (a trailing `/api2/json` is accepted and ignored).
    pub base_url: String,
    /// The API token.
    pub token: ApiToken,
    /// Certificate checking.
    pub tls: TlsMode,
    /// Timeout of one API request (not uploads).
    pub timeout: Duration,
    /// Timeout to establish a connection.
    pub connect_timeout: Duration,
    /// Timeout of a whole upload; `None` = no limit (multi-GB ISOs take a while).
    pub upload_timeout: Option<Duration>,
    /// Task polling backoff for `wait_task`.
    pub task_poll: PollBackoff,
    /// `User-Agent` header.
    pub user_agent: String,
    /// Accept an `http://` base URL (the token then travels in clear): labs only, and
    /// warned about when the client is built. Off by default: an `http://` URL is a
    /// configuration error.
    pub allow_http: bool,
    /// Awaited before every request is sent (see [`crate::gate`]); `None`: requests go at once.
    pub request_gate: Option<Arc<dyn RequestGate>>,
    /// Told of every request's outcome (see [`crate::observe`]); `None`: nobody is.
    pub observer: Option<Arc<dyn CallObserver>>,
}

impl ClientConfig {
    /// A configuration with defaults: 60 s request timeout (pveproxy itself gives up
    /// proxying after 30 s), 10 s connect timeout, no upload limit.
    pub fn new(base_url: impl Into<String>, token: ApiToken, tls: TlsMode) -> Self {
        Self {
            base_url: base_url.into(),
            token,
            tls,
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            upload_timeout: None,
            task_poll: PollBackoff::default(),
            user_agent: concat!("nimbus-proxmox/", env!("CARGO_PKG_VERSION")).to_string(),
            allow_http: false,
            request_gate: None,
            observer: None,
        }
    }

    /// Allows (or refuses, the default) a plain `http://` base URL; see
    /// [`ClientConfig::allow_http`](ClientConfig#structfield.allow_http).
    pub fn allow_http(mut self, allow: bool) -> Self {
        self.allow_http = allow;
        self
    }

    /// Sets the request timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the task polling backoff.
    pub fn task_poll(mut self, poll: PollBackoff) -> Self {
        self.task_poll = poll;
        self
    }

    /// Tells `observer` of every request's outcome, task polls included.
    pub fn observer(mut self, observer: Arc<dyn CallObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Makes every request, task polls included, wait for `gate` before it is sent.
    pub fn request_gate(mut self, gate: Arc<dyn RequestGate>) -> Self {
        self.request_gate = Some(gate);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_parse_and_redaction() {
        // Split at the last '=' like PVE: an '=' in the secret makes the id invalid.
        assert!(ApiToken::parse("root@pam!nimbus=0b1c=tail").is_err());
        let t = ApiToken::parse("PVEAPIToken=root@pam!nimbus=0b1c-uuid").unwrap();
        assert_eq!(t.token_id(), "root@pam!nimbus");
        let t = ApiToken::parse("root@pam!ci=s3cr3t-value").unwrap();
        assert_eq!(t.token_id(), "root@pam!ci");
        assert_eq!(t.header_value(), "PVEAPIToken=root@pam!ci=s3cr3t-value");
        let dbg = format!("{t:?} {t}");
        assert!(!dbg.contains("s3cr3t"), "{dbg}");
        assert!(dbg.contains("root@pam!ci"));
        let cfg = ClientConfig::new("https://x:8006", t, TlsMode::Insecure);
        assert!(!format!("{cfg:?}").contains("s3cr3t"));
    }

    #[test]
    fn token_rejects_malformed() {
        for bad in [
            "root@pam=secret",
            "root!ci=secret",
            "root@pam!ci=",
            "root@pam!1ci=secret",
            "@pam!ci=secret",
            "root@pam!c i=secret",
            "nothing",
        ] {
            assert!(ApiToken::parse(bad).is_err(), "{bad}");
        }
        // A user name may itself contain '@' (user@domain@realm).
        assert!(ApiToken::parse("me@example.com@pve!ci=x").is_ok());
    }
}
