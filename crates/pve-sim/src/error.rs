//! `PveError`: every failure a handler or the HTTP layer can answer with, rendered the way
//! pve-api-daemon renders it (status, reason phrase, JSON body with `message` and `errors`).

use std::collections::BTreeMap;

/// A failed API call. Messages are stored without PVE's trailing newline; rendering adds it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PveError {
    /// 400 `Parameter verification failed.` with per-parameter messages.
    #[error("Parameter verification failed.")]
    Param(BTreeMap<String, String>),
    /// 500: a handler's `die "text\n"`.
    #[error("{0}")]
    Handler(String),
    /// Any other status with its message (reason phrase and body `message`).
    #[error("{1}")]
    Status(u16, String),
    /// 401 from the auth layer (`No ticket`, `Authentication failed!`, CSRF).
    #[error("{0}")]
    Unauthorized(String),
    /// 403 `Permission check failed (...)`.
    #[error("Permission check failed ({0})")]
    Forbidden(String),
    /// 501 (unknown path, method or format; unexpected body).
    #[error("{0}")]
    NotImplemented(String),
    /// A proxy pseudo-status (595/596) for an unreachable node: reason phrase only, empty body.
    #[error("{1}")]
    Proxy(u16, String),
}

impl PveError {
    /// 400 with a single parameter error.
    pub fn param(name: impl Into<String>, msg: impl Into<String>) -> Self {
        let mut m = BTreeMap::new();
        m.insert(name.into(), msg.into());
        PveError::Param(m)
    }

    /// 500 with a handler message.
    pub fn handler(msg: impl Into<String>) -> Self {
        PveError::Handler(msg.into())
    }

    /// 403 `Permission check failed (<path>, <privs>)`.
    pub fn perm(path: &str, privs: &str) -> Self {
        PveError::Forbidden(format!("{path}, {privs}"))
    }

    /// The 595 answer of pveproxy for a node it cannot connect to.
    pub fn node_unreachable() -> Self {
        PveError::Proxy(595, "Errors during connection establishment, proxy handshake: Connection refused".into())
    }

    /// The HTTP status code.
    pub fn status(&self) -> u16 {
        match self {
            PveError::Param(_) => 400,
            PveError::Handler(_) => 500,
            PveError::Status(code, _) | PveError::Proxy(code, _) => *code,
            PveError::Unauthorized(_) => 401,
            PveError::Forbidden(_) => 403,
            PveError::NotImplemented(_) => 501,
        }
    }

    /// The message as PVE prints it (without the trailing newline).
    pub fn message(&self) -> String {
        match self {
            PveError::Param(_) => "Parameter verification failed.".into(),
            PveError::Forbidden(what) => format!("Permission check failed ({what})"),
            PveError::Handler(m)
            | PveError::Status(_, m)
            | PveError::Unauthorized(m)
            | PveError::NotImplemented(m)
            | PveError::Proxy(_, m) => m.trim_end_matches('\n').to_string(),
        }
    }

    /// The per-parameter errors of a 400.
    pub fn errors(&self) -> Option<&BTreeMap<String, String>> {
        match self {
            PveError::Param(e) => Some(e),
            _ => None,
        }
    }
}

impl From<String> for PveError {
    fn from(msg: String) -> Self {
        PveError::Handler(msg)
    }
}

impl From<&str> for PveError {
    fn from(msg: &str) -> Self {
        PveError::Handler(msg.to_string())
    }
}

/// Handler result type.
pub type PveResult<T> = Result<T, PveError>;
