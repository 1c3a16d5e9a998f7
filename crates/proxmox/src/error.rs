//! `PveError`, every way a PVE call can fail, and its classification for retries.
//!
//! Workers retry [`ErrorClass::Transient`] errors (with backoff) and fail the job on
//! [`ErrorClass::Permanent`] ones. The rules, in the order they are applied:
//!
//! **Transient**
//! * transport failures (connection refused or reset, DNS) and request timeouts;
//! * a task that did not finish before the caller's deadline ([`PveError::TaskTimeout`]);
//! * HTTP 595 and 596: pveproxy could not reach the node that owns the resource;
//! * HTTP 408, 429, 502, 503 and 504 (a proxy or load balancer in front of PVE);
//! * any 5xx other than 501 whose body carries no PVE message (not a handler's
//!   answer, e.g. a proxy's error page);
//! * any error (HTTP status or failed task) whose message names a lock conflict or a
//!   passing condition: `is locked` (`VM is locked (backup)`), `can't lock file`,
//!   `got timeout`, `cfs-lock`, `no quorum`, `cluster not ready`, and
//!   `QEMU guest agent is not running` (the guest is still booting).
//!
//! **Permanent**
//! * HTTP 400 (parameter verification, with per-parameter `errors`), 401, 403, 404,
//!   501 and every other 4xx;
//! * HTTP 500 with a PVE message that is not one of the transient ones above: PVE's
//!   handlers `die` with a deterministic text (`... does not exist`,
//!   `... already exists`, `VM 100 not running`, `shrinking disks is not supported`)
//!   that retrying the same request cannot change;
//! * a failed task whose exit status is not transient by the message rule;
//! * TLS rejections (a wrong pinned fingerprint stays wrong), undecodable responses,
//!   invalid client configuration or request parameters, local I/O errors;
//! * [`PveError::NotProxmox`]: a 404 that PVE did not write (a wrong base URL, a proxy's
//!   page). It is a misconfiguration, and never means that a guest is gone.
//!
//! PVE itself never answers 404 (an unknown guest is a 500 `Configuration file '...'
//! does not exist`, an unknown path a 501), so a 404 counts as PVE's only when it carries
//! PVE's message: the error envelope `{"data":null,"message":"..."}` (or per-parameter
//! `errors`), or a reason phrase of its own.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::upid::Upid;

/// Whether retrying can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Retry later: network trouble, a busy or unreachable node, a lock held by another task.
    Transient,
    /// Retrying the same request will fail the same way.
    Permanent,
}

/// Substrings (lowercase) of PVE messages that describe a condition that passes.
const TRANSIENT_MESSAGES: &[&str] = &[
    "is locked",
    "can't lock file",
    "got timeout",
    "cfs-lock",
    "no quorum",
    "cluster not ready",
    "qemu guest agent is not running",
];

/// Whether a PVE message (HTTP error text or task exit status) describes a condition
/// that passes by itself.
fn transient_message(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    TRANSIENT_MESSAGES.iter().any(|p| m.contains(p))
}

/// An error from the PVE client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PveError {
    /// PVE (or something in front of it) answered with an HTTP error status.
    #[error("{method} {path}: HTTP {status}: {message}{}", format_param_errors(.errors))]
    Api {
        /// HTTP method of the request.
        method: String,
        /// API path (below `/api2/json`).
        path: String,
        /// HTTP status code (595/596 included).
        status: u16,
        /// PVE's message: body `message` (trimmed), else the reason phrase.
        message: String,
        /// Per-parameter errors of a 400 `Parameter verification failed.`.
        errors: BTreeMap<String, String>,
    },
    /// The request did not complete within the configured timeout.
    #[error("{method} {path}: request timed out after {after:?}")]
    Timeout {
        /// HTTP method of the request.
        method: String,
        /// API path.
        path: String,
        /// The timeout that expired.
        after: Duration,
    },
    /// Connection-level failure (refused, reset, DNS, broken body stream).
    #[error("{method} {path}: transport error: {source}")]
    Transport {
        /// HTTP method of the request.
        method: String,
        /// API path.
        path: String,
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },
    /// The server's certificate was rejected (wrong pinned fingerprint, unknown CA).
    #[error("{method} {path}: TLS certificate rejected: {message}")]
    Tls {
        /// HTTP method of the request.
        method: String,
        /// API path.
        path: String,
        /// What the verifier said.
        message: String,
    },
    /// The response was not the JSON shape expected.
    #[error("{method} {path}: cannot decode response: {message} (body: {body})")]
    Decode {
        /// HTTP method of the request.
        method: String,
        /// API path.
        path: String,
        /// The decoder's message.
        message: String,
        /// The start of the body, for diagnosis.
        body: String,
    },
    /// An HTTP 404 without PVE's message: something other than PVE's API answered (a
    /// wrong base URL, a reverse proxy's error page). Permanent, and deliberately not
    /// [`PveError::Api`]: [`PveError::status`] is `None` and [`PveError::is_not_found`]
    /// false, so that no caller takes a misrouted request for a vanished guest.
    #[error(
        "{method} {path}: HTTP {status} without a Proxmox error message (check PVE_URL and any proxy in front of PVE): {body}"
    )]
    NotProxmox {
        /// HTTP method of the request.
        method: String,
        /// API path.
        path: String,
        /// HTTP status code.
        status: u16,
        /// The start of the body, for diagnosis.
        body: String,
    },
    /// A task ended with an exit status other than `OK` or `WARNINGS: N`.
    #[error("task {upid} failed: {exitstatus}")]
    TaskFailed {
        /// The task.
        upid: Upid,
        /// PVE's exit status (the `TASK ERROR:` text).
        exitstatus: String,
        /// The last lines of the task log.
        log_tail: Vec<String>,
    },
    /// A task was still running when the caller's deadline passed.
    #[error("task {upid} still running after {waited:?}{}", .last_error.as_ref().map(|e| format!(" (last poll error: {e})")).unwrap_or_default())]
    TaskTimeout {
        /// The task.
        upid: Upid,
        /// How long the caller waited.
        waited: Duration,
        /// The last transient error seen while polling, if polling failed at the end.
        last_error: Option<String>,
    },
    /// The client configuration is invalid (bad URL, token, fingerprint or CA).
    #[error("invalid client configuration: {0}")]
    Config(String),
    /// The request could not be built (parameters that do not encode).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A local I/O error (reading a file to upload).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A websocket (console) connection failed after the HTTP upgrade or before it.
    #[error("websocket {path}: {message}")]
    WebSocket {
        /// API path.
        path: String,
        /// What went wrong.
        message: String,
    },
}

fn format_param_errors(errors: &BTreeMap<String, String>) -> String {
    if errors.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = errors.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!(" ({})", parts.join("; "))
}

/// Result alias for this crate.
pub type Result<T, E = PveError> = std::result::Result<T, E>;

impl PveError {
    /// Whether retrying can help; see the module documentation for the rules.
    pub fn class(&self) -> ErrorClass {
        use ErrorClass::{Permanent, Transient};
        match self {
            PveError::Timeout { .. }
            | PveError::Transport { .. }
            | PveError::TaskTimeout { .. }
            | PveError::WebSocket { .. } => Transient,
            PveError::Api { status, message, .. } => {
                if transient_message(message) {
                    return Transient;
                }
                match *status {
                    595 | 596 | 408 | 429 | 502 | 503 | 504 => Transient,
                    501 => Permanent,
                    500..=599 if message.is_empty() || is_reason_only(*status, message) => Transient,
                    _ => Permanent,
                }
            }
            PveError::TaskFailed { exitstatus, .. } => {
                if transient_message(exitstatus) {
                    Transient
                } else {
                    Permanent
                }
            }
            PveError::Tls { .. }
            | PveError::NotProxmox { .. }
            | PveError::Decode { .. }
            | PveError::Config(_)
            | PveError::InvalidRequest(_)
            | PveError::Io { .. } => Permanent,
        }
    }

    /// `class() == Transient`.
    pub fn is_transient(&self) -> bool {
        self.class() == ErrorClass::Transient
    }

    /// The HTTP status of an answer PVE gave ([`PveError::Api`]); `None` for anything
    /// else, [`PveError::NotProxmox`] included.
    pub fn status(&self) -> Option<u16> {
        match self {
            PveError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// PVE's message (HTTP error text or task exit status).
    pub fn pve_message(&self) -> Option<&str> {
        match self {
            PveError::Api { message, .. } => Some(message),
            PveError::TaskFailed { exitstatus, .. } => Some(exitstatus),
            _ => None,
        }
    }

    /// Per-parameter errors of a 400 (empty for anything else).
    pub fn param_errors(&self) -> Option<&BTreeMap<String, String>> {
        match self {
            PveError::Api { errors, .. } if !errors.is_empty() => Some(errors),
            _ => None,
        }
    }

    /// Every text PVE gave, lowercased: the message and each per-parameter error (PVE
    /// names the real problem there, e.g. nextid's `errors.vmid: VM 100 already exists`
    /// under the generic `Parameter verification failed.`).
    fn pve_texts(&self) -> impl Iterator<Item = String> + '_ {
        let errors = self.param_errors().into_iter().flat_map(|e| e.values());
        self.pve_message().into_iter().chain(errors.map(String::as_str)).map(str::to_ascii_lowercase)
    }

    fn any_text(&self, needles: &[&str]) -> bool {
        self.pve_texts().any(|t| needles.iter().any(|n| t.contains(n)))
    }

    /// The guest, snapshot, volume or task named in the request does not exist, as PVE
    /// said (a [`PveError::NotProxmox`] 404 is not PVE saying so).
    pub fn is_not_found(&self) -> bool {
        matches!(self, PveError::Api { status: 404, .. })
            || self.any_text(&["does not exist", "no such task", "not found"])
    }

    /// The id or name is already taken (`VM 100 already exists`, `config file already exists`).
    pub fn is_already_exists(&self) -> bool {
        self.any_text(&["already exists", "already used"])
    }

    /// Another task holds the guest's lock.
    pub fn is_lock_conflict(&self) -> bool {
        self.any_text(&["is locked", "can't lock file"])
    }
}

/// True when `message` is only the standard reason phrase for `status`, i.e. PVE's
/// handler did not say anything (the body had no `message`).
fn is_reason_only(status: u16, message: &str) -> bool {
    reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .is_some_and(|r| r.eq_ignore_ascii_case(message))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, message: &str) -> PveError {
        PveError::Api {
            method: "POST".into(),
            path: "/nodes/pve1/qemu/100/status/start".into(),
            status,
            message: message.into(),
            errors: BTreeMap::new(),
        }
    }

    fn upid() -> Upid {
        Upid::parse("UPID:pve1:000FF1FD:10F9374C:630D702C:qmstart:100:root@pam:").unwrap()
    }

    #[test]
    fn node_unreachable_is_transient() {
        assert!(api(595, "Errors during connection establishment, proxy handshake: Connection refused").is_transient());
        assert!(
            api(596, "Errors during TLS negotiation, request sending and header processing: Connection timed out")
                .is_transient()
        );
        assert!(api(595, "").is_transient());
    }

    #[test]
    fn lock_conflicts_are_transient() {
        assert!(api(500, "VM is locked (snapshot)").is_transient());
        assert!(api(500, "CT is locked (backup)").is_transient());
        assert!(api(500, "can't lock file '/var/lock/qemu-server/lock-100.conf' - got timeout").is_transient());
        assert!(api(500, "cfs-lock 'file-user_cfg' error: got lock request timeout").is_transient());
        assert!(api(500, "cluster not ready - no quorum?").is_transient());
        assert!(api(500, "QEMU guest agent is not running").is_transient());
        assert!(api(500, "VM is locked (snapshot)").is_lock_conflict());
    }

    #[test]
    fn gateway_and_throttling_statuses_are_transient() {
        for s in [408, 429, 502, 503, 504] {
            assert!(api(s, "whatever").is_transient(), "{s}");
        }
    }

    #[test]
    fn five_hundred_without_pve_message_is_transient() {
        assert!(api(500, "").is_transient());
        assert!(api(500, "Internal Server Error").is_transient());
        assert!(api(502, "Bad Gateway").is_transient());
    }

    #[test]
    fn client_errors_are_permanent() {
        for s in [400, 401, 403, 404, 409, 501] {
            assert_eq!(api(s, "x").class(), ErrorClass::Permanent, "{s}");
        }
        assert_eq!(api(501, "Method 'GET /foo' not implemented").class(), ErrorClass::Permanent);
        assert_eq!(api(501, "").class(), ErrorClass::Permanent);
        assert_eq!(api(403, "Permission check failed (/vms/100, VM.PowerMgmt)").class(), ErrorClass::Permanent);
    }

    #[test]
    fn handler_failures_are_permanent() {
        for m in [
            "Configuration file 'nodes/pve1/qemu-server/999.conf' does not exist",
            "unable to create VM 100 - VM 100 already exists on node 'pve1'",
            "VM 100 not running",
            "shrinking disks is not supported",
            "parameter 'storage' not allowed for linked clones",
            "snapshot 'x' does not exist",
        ] {
            assert_eq!(api(500, m).class(), ErrorClass::Permanent, "{m}");
        }
        assert!(api(500, "snapshot 'x' does not exist").is_not_found());
        assert!(api(500, "unable to create VM 100 - VM 100 already exists on node 'pve1'").is_already_exists());
    }

    #[test]
    fn param_errors_are_permanent_and_exposed() {
        let mut errors = BTreeMap::new();
        errors.insert("vmid".to_string(), "VM 100 already exists".to_string());
        let e = PveError::Api {
            method: "GET".into(),
            path: "/cluster/nextid".into(),
            status: 400,
            message: "Parameter verification failed.".into(),
            errors,
        };
        assert_eq!(e.class(), ErrorClass::Permanent);
        assert_eq!(e.param_errors().unwrap().get("vmid").map(String::as_str), Some("VM 100 already exists"));
        assert!(e.to_string().contains("vmid: VM 100 already exists"));
    }

    fn with_param(status: u16, param: &str, text: &str) -> PveError {
        PveError::Api {
            method: "POST".into(),
            path: "/nodes/pve1/qemu".into(),
            status,
            message: "Parameter verification failed.".into(),
            errors: BTreeMap::from([(param.to_string(), text.to_string())]),
        }
    }

    #[test]
    fn helpers_read_per_parameter_errors() {
        let taken = with_param(400, "vmid", "VM 100 already exists");
        assert!(taken.is_already_exists());
        assert!(!taken.is_not_found());
        assert!(with_param(500, "newid", "unable to create VM 101: config file already exists").is_already_exists());
        assert!(with_param(400, "snapname", "snapshot name 'a' already used").is_already_exists());
        let missing = with_param(400, "storage", "storage 'nvme' does not exist");
        assert!(missing.is_not_found());
        assert!(!missing.is_already_exists());
        assert!(with_param(500, "vmid", "VM is locked (clone)").is_lock_conflict());
        let other = with_param(400, "vmid", "type check ('integer') failed - got 'abc'");
        assert!(!other.is_already_exists() && !other.is_not_found() && !other.is_lock_conflict());
    }

    #[test]
    fn a_404_not_written_by_pve_is_no_vanished_guest() {
        let e = PveError::NotProxmox {
            method: "GET".into(),
            path: "/nodes/pve1/qemu/100/status/current".into(),
            status: 404,
            body: "<html>404 page not found</html>".into(),
        };
        assert!(!e.is_not_found());
        assert!(!e.is_already_exists());
        assert_eq!(e.status(), None);
        assert_eq!(e.pve_message(), None);
        assert_eq!(e.class(), ErrorClass::Permanent);
        assert!(e.to_string().contains("PVE_URL"), "{e}");
        // A 404 carrying PVE's message (what some simulators send) is PVE's word.
        assert!(api(404, "VM 100 not found").is_not_found());
    }

    #[test]
    fn task_failures_classified_by_exit_status() {
        let failed = |s: &str| PveError::TaskFailed { upid: upid(), exitstatus: s.into(), log_tail: vec![] };
        assert_eq!(failed("VM 100 already running").class(), ErrorClass::Permanent);
        assert_eq!(failed("VM is locked (backup)").class(), ErrorClass::Transient);
        assert!(
            PveError::TaskTimeout { upid: upid(), waited: Duration::from_secs(1), last_error: None }.is_transient()
        );
    }

    #[test]
    fn local_failures_are_permanent() {
        assert_eq!(PveError::Config("x".into()).class(), ErrorClass::Permanent);
        assert_eq!(PveError::InvalidRequest("x".into()).class(), ErrorClass::Permanent);
        let tls =
            PveError::Tls { method: "GET".into(), path: "/version".into(), message: "fingerprint mismatch".into() };
        assert_eq!(tls.class(), ErrorClass::Permanent);
        let decode = PveError::Decode {
            method: "GET".into(),
            path: "/version".into(),
            message: "x".into(),
            body: String::new(),
        };
        assert_eq!(decode.class(), ErrorClass::Permanent);
        let io = PveError::Io { context: "read".into(), source: std::io::Error::other("x") };
        assert_eq!(io.class(), ErrorClass::Permanent);
    }

    #[test]
    fn websocket_failures_are_transient() {
        let e = PveError::WebSocket {
            path: "/nodes/pve1/qemu/100/vncwebsocket".into(),
            message: "connection reset".into(),
        };
        assert!(e.is_transient());
        assert_eq!(e.status(), None);
    }

    #[test]
    fn timeouts_are_transient() {
        let t = PveError::Timeout { method: "GET".into(), path: "/version".into(), after: Duration::from_secs(30) };
        assert!(t.is_transient());
    }
}
