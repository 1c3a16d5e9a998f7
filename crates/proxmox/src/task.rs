//! Asynchronous PVE tasks: status, log, list, stop, and `wait_task`.
//!
//! A task's status is read from the node in its UPID (FACTS §3.14). It is `running`
//! until `stopped`, when `exitstatus` is `OK`, `WARNINGS: N` (both success) or the
//! error text. [`ProxmoxClient::wait_task`] polls with capped exponential backoff and
//! jitter, retries transient polling errors until the deadline, and on failure returns
//! [`PveError::TaskFailed`] carrying the last lines of the task log. Waiting decodes only
//! `status` and `exitstatus`: a decode error is permanent, so a field waiting does not
//! need (`pid`, `pstart`, `user`, ...) missing or odd must not fail a task that succeeded.

use std::time::{Duration, Instant};

use rand::Rng;
use reqwest::Method;
use serde::{Deserialize, Serialize};

use crate::client::{ProxmoxClient, path_segment};
use crate::config::PollBackoff;
use crate::de;
use crate::error::{PveError, Result};
use crate::params::Params;
use crate::upid::Upid;

/// How many log lines a failed task carries.
pub const LOG_TAIL_LINES: u64 = 20;

/// `GET /nodes/{node}/tasks/{upid}/status`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct TaskStatus {
    /// The task id.
    pub upid: String,
    /// Node running the task.
    pub node: String,
    /// Worker pid.
    #[serde(deserialize_with = "de::int")]
    pub pid: u32,
    /// Worker process start (clock ticks).
    #[serde(deserialize_with = "de::int")]
    pub pstart: u64,
    /// Start time, epoch seconds.
    #[serde(deserialize_with = "de::int")]
    pub starttime: i64,
    /// Task type.
    #[serde(rename = "type")]
    pub task_type: String,
    /// Object id (may be empty).
    #[serde(default, deserialize_with = "de::string")]
    pub id: String,
    /// User or token id that started it.
    pub user: String,
    /// `running` or `stopped`.
    pub status: String,
    /// Present once stopped: `OK`, `WARNINGS: N` or the error text.
    #[serde(default)]
    pub exitstatus: Option<String>,
    /// The token name, when a token started the task.
    #[serde(default)]
    pub tokenid: Option<String>,
}

impl TaskStatus {
    /// True while the task runs.
    pub fn is_running(&self) -> bool {
        self.status == "running"
    }

    /// `Some(true)` once stopped with `OK` or `WARNINGS: N`, `Some(false)` once stopped
    /// otherwise, `None` while running.
    pub fn succeeded(&self) -> Option<bool> {
        if self.is_running() {
            return None;
        }
        Some(self.exitstatus.as_deref().is_some_and(|s| exit_warnings(s).is_some()))
    }
}

/// The part of a task's status that waiting reads.
#[derive(Debug, Deserialize)]
struct TaskState {
    status: String,
    #[serde(default, deserialize_with = "de::opt_string")]
    exitstatus: Option<String>,
}

/// The number of warnings for a successful exit status (`OK` = 0), `None` for a failure.
pub fn exit_warnings(exitstatus: &str) -> Option<u32> {
    let s = exitstatus.trim();
    if s == "OK" {
        return Some(0);
    }
    s.strip_prefix("WARNINGS:").and_then(|n| n.trim().parse::<u32>().ok())
}

/// One line of a task log.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct TaskLogLine {
    /// 1-based line number.
    #[serde(deserialize_with = "de::int")]
    pub n: u64,
    /// The text.
    pub t: String,
}

/// A task log page and the log's total line count.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskLog {
    /// The lines returned.
    pub lines: Vec<TaskLogLine>,
    /// Total lines in the log (`total` of the envelope), when PVE sent it.
    pub total: Option<u64>,
}

/// An entry of `/nodes/{node}/tasks` or `/cluster/tasks`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct TaskListEntry {
    /// The task id.
    pub upid: String,
    /// Node.
    #[serde(default)]
    pub node: Option<String>,
    /// Worker pid.
    #[serde(default, deserialize_with = "de::opt_int")]
    pub pid: Option<u32>,
    /// Start time.
    #[serde(default, deserialize_with = "de::opt_int")]
    pub starttime: Option<i64>,
    /// End time (finished tasks only).
    #[serde(default, deserialize_with = "de::opt_int")]
    pub endtime: Option<i64>,
    /// Task type.
    #[serde(rename = "type", default)]
    pub task_type: Option<String>,
    /// Object id.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub id: Option<String>,
    /// User.
    #[serde(default)]
    pub user: Option<String>,
    /// Exit status text for finished tasks (`OK`, error text); absent while running.
    #[serde(default)]
    pub status: Option<String>,
}

/// Filters for `/nodes/{node}/tasks`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TaskListQuery {
    /// Offset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<u64>,
    /// Page size (PVE default 50).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// Only failed tasks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<bool>,
    /// Only tasks of this guest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vmid: Option<u32>,
    /// Only this task type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub typefilter: Option<String>,
    /// Only this user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub userfilter: Option<String>,
    /// `archive`, `active` or `all`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Only tasks started after this epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<i64>,
    /// Only tasks started before this epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<i64>,
}

/// A finished, successful task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskOutcome {
    /// The task.
    pub upid: Upid,
    /// `OK` or `WARNINGS: N`.
    pub exitstatus: String,
    /// N of `WARNINGS: N` (0 for `OK`).
    pub warnings: u32,
}

/// When `wait_task` gives up: an absolute instant or a duration from now.
#[derive(Debug, Clone, Copy)]
pub enum Deadline {
    /// Give up at this instant.
    At(Instant),
    /// Give up after this long.
    After(Duration),
}

impl From<Instant> for Deadline {
    fn from(i: Instant) -> Self {
        Deadline::At(i)
    }
}

impl From<tokio::time::Instant> for Deadline {
    fn from(i: tokio::time::Instant) -> Self {
        Deadline::At(i.into_std())
    }
}

impl From<Duration> for Deadline {
    fn from(d: Duration) -> Self {
        Deadline::After(d)
    }
}

impl Deadline {
    fn instant(self, now: Instant) -> Instant {
        match self {
            Deadline::At(i) => i,
            Deadline::After(d) => now.checked_add(d).unwrap_or(now + Duration::from_secs(86400 * 365)),
        }
    }
}

/// The delay before poll number `attempt` (0-based), with jitter in ±`jitter`.
pub(crate) fn backoff_delay(p: &PollBackoff, attempt: u32, rng: &mut impl Rng) -> Duration {
    let base = p.initial.as_secs_f64() * p.factor.max(1.0).powi(attempt.min(64) as i32);
    let capped = base.min(p.max.as_secs_f64());
    let spread = p.jitter.clamp(0.0, 1.0);
    let factor = if spread > 0.0 { rng.random_range(1.0 - spread..=1.0 + spread) } else { 1.0 };
    Duration::from_secs_f64((capped * factor).max(0.0))
}

fn task_status_path(upid: &Upid) -> String {
    format!("/nodes/{}/tasks/{}/status", path_segment(upid.node()), path_segment(upid.as_str()))
}

impl ProxmoxClient {
    /// `GET /nodes/{node}/tasks/{upid}/status`, on the UPID's node: every field PVE
    /// documents. [`ProxmoxClient::wait_task`] reads less and tolerates more.
    pub async fn task_status(&self, upid: &Upid) -> Result<TaskStatus> {
        self.call(Method::GET, &task_status_path(upid), &Params::new()).await
    }

    /// `GET /nodes/{node}/tasks/{upid}/log?start=&limit=`.
    pub async fn task_log(&self, upid: &Upid, start: u64, limit: u64) -> Result<TaskLog> {
        let path = format!("/nodes/{}/tasks/{}/log", path_segment(upid.node()), path_segment(upid.as_str()));
        let params = Params::new().with("start", start.to_string()).with("limit", limit.to_string());
        let (lines, total) = self.call_with_total(Method::GET, &path, &params).await?;
        Ok(TaskLog { lines, total })
    }

    /// The last `n` lines of a task log.
    pub async fn task_log_tail(&self, upid: &Upid, n: u64) -> Result<Vec<String>> {
        let first = self.task_log(upid, 0, n).await?;
        let total = first.total.unwrap_or(first.lines.len() as u64);
        let lines = if total > n { self.task_log(upid, total - n, n).await?.lines } else { first.lines };
        Ok(lines.into_iter().map(|l| l.t).collect())
    }

    /// `DELETE /nodes/{node}/tasks/{upid}`: stops a running task.
    pub async fn stop_task(&self, upid: &Upid) -> Result<()> {
        let path = format!("/nodes/{}/tasks/{}", path_segment(upid.node()), path_segment(upid.as_str()));
        let _: serde_json::Value = self.call(Method::DELETE, &path, &Params::new()).await?;
        Ok(())
    }

    /// `GET /nodes/{node}/tasks`.
    pub async fn node_tasks(&self, node: &str, query: &TaskListQuery) -> Result<Vec<TaskListEntry>> {
        let path = format!("/nodes/{}/tasks", path_segment(node));
        self.call_with(Method::GET, &path, query).await
    }

    /// `GET /cluster/tasks`: recent tasks of the whole cluster.
    pub async fn cluster_tasks(&self) -> Result<Vec<TaskListEntry>> {
        self.call(Method::GET, "/cluster/tasks", &Params::new()).await
    }

    /// Waits until the task stops or `deadline` passes.
    ///
    /// * stopped with `OK` / `WARNINGS: N` → `Ok(TaskOutcome)`;
    /// * stopped otherwise → [`PveError::TaskFailed`] with the exit status and the last
    ///   [`LOG_TAIL_LINES`] log lines;
    /// * still running at the deadline → [`PveError::TaskTimeout`] (transient);
    /// * a permanent error while polling (e.g. `no such task`) is returned as is;
    ///   transient ones (node briefly unreachable, timeouts) are retried.
    pub async fn wait_task(&self, upid: &Upid, deadline: impl Into<Deadline>) -> Result<TaskOutcome> {
        let started = Instant::now();
        let until = deadline.into().instant(started);
        let backoff = self.inner.task_poll;
        let mut attempt = 0u32;
        let mut last_error: Option<PveError>;
        loop {
            match self.task_state(upid).await {
                Ok(st) if st.status != "running" => return self.finish(upid, st.exitstatus).await,
                Ok(_) => last_error = None,
                Err(e) if e.is_transient() => {
                    tracing::debug!(%upid, error = %e, "task poll failed, retrying");
                    last_error = Some(e);
                }
                Err(e) => return Err(e),
            }
            let delay = backoff_delay(&backoff, attempt, &mut rand::rng());
            attempt = attempt.saturating_add(1);
            let now = Instant::now();
            if now >= until {
                return Err(PveError::TaskTimeout {
                    upid: upid.clone(),
                    waited: now - started,
                    last_error: last_error.map(|e| e.to_string()),
                });
            }
            tokio::time::sleep(delay.min(until - now)).await;
        }
    }

    async fn task_state(&self, upid: &Upid) -> Result<TaskState> {
        self.call(Method::GET, &task_status_path(upid), &Params::new()).await
    }

    async fn finish(&self, upid: &Upid, exitstatus: Option<String>) -> Result<TaskOutcome> {
        let exitstatus = exitstatus.unwrap_or_else(|| "unexpected status".to_string());
        if let Some(warnings) = exit_warnings(&exitstatus) {
            return Ok(TaskOutcome { upid: upid.clone(), exitstatus, warnings });
        }
        // The log is diagnostics only: a failure to read it must not hide the task error.
        let log_tail = match self.task_log_tail(upid, LOG_TAIL_LINES).await {
            Ok(lines) => lines,
            Err(e) => vec![format!("(task log unavailable: {e})")],
        };
        Err(PveError::TaskFailed { upid: upid.clone(), exitstatus, log_tail })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn exit_statuses() {
        assert_eq!(exit_warnings("OK"), Some(0));
        assert_eq!(exit_warnings("WARNINGS: 3"), Some(3));
        assert_eq!(exit_warnings("WARNINGS:1"), Some(1));
        assert_eq!(exit_warnings("VM 100 already running"), None);
        assert_eq!(exit_warnings("unexpected status"), None);
        assert_eq!(exit_warnings("OK but not"), None);
    }

    #[test]
    fn status_decoding_and_success() {
        let st: TaskStatus = serde_json::from_str(
            r#"{"upid":"UPID:pve1:000FF1FD:10F9374C:630D702C:qmstart:100:root@pam!ci:","node":"pve1","pid":1044989,"pstart":"284767052","starttime":1661825068,"type":"qmstart","id":"100","user":"root@pam!ci","tokenid":"ci","status":"stopped","exitstatus":"WARNINGS: 2"}"#,
        )
        .unwrap();
        assert_eq!(st.pstart, 284_767_052);
        assert_eq!(st.succeeded(), Some(true));
        let running: TaskStatus = serde_json::from_str(
            r#"{"upid":"u","node":"pve1","pid":1,"pstart":1,"starttime":1,"type":"imgcopy","id":"","user":"root@pam","status":"running"}"#,
        )
        .unwrap();
        assert_eq!(running.succeeded(), None);
        assert!(running.is_running());
    }

    #[test]
    fn waiting_reads_only_status_and_exitstatus() {
        let st: TaskState = serde_json::from_str(r#"{"status":"stopped","exitstatus":"OK"}"#).unwrap();
        assert_eq!((st.status.as_str(), st.exitstatus.as_deref()), ("stopped", Some("OK")));
        // Odd or missing fields that waiting does not need.
        let st: TaskState =
            serde_json::from_str(r#"{"status":"stopped","exitstatus":"WARNINGS: 1","pid":-1,"pstart":null,"user":7}"#)
                .unwrap();
        assert_eq!(st.exitstatus.as_deref(), Some("WARNINGS: 1"));
        let running: TaskState = serde_json::from_str(r#"{"status":"running"}"#).unwrap();
        assert_eq!(running.exitstatus, None);
        assert!(serde_json::from_str::<TaskState>(r#"{"exitstatus":"OK"}"#).is_err(), "status is required");
    }

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let p =
            PollBackoff { initial: Duration::from_millis(100), max: Duration::from_secs(2), factor: 2.0, jitter: 0.0 };
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        assert_eq!(backoff_delay(&p, 0, &mut rng), Duration::from_millis(100));
        assert_eq!(backoff_delay(&p, 1, &mut rng), Duration::from_millis(200));
        assert_eq!(backoff_delay(&p, 3, &mut rng), Duration::from_millis(800));
        assert_eq!(backoff_delay(&p, 10, &mut rng), Duration::from_secs(2));
        assert_eq!(backoff_delay(&p, u32::MAX, &mut rng), Duration::from_secs(2));
        let j = PollBackoff { jitter: 0.2, ..p };
        let delays: Vec<Duration> = (0..50).map(|_| backoff_delay(&j, 10, &mut rng)).collect();
        assert!(delays.iter().all(|d| *d >= Duration::from_millis(1600) && *d <= Duration::from_millis(2400)));
        assert!(delays.iter().any(|d| *d != delays[0]), "jitter varies");
    }

    #[test]
    fn deadlines() {
        let now = Instant::now();
        assert_eq!(Deadline::from(Duration::from_secs(5)).instant(now), now + Duration::from_secs(5));
        assert_eq!(Deadline::from(now).instant(Instant::now()), now);
        assert!(Deadline::from(Duration::MAX).instant(now) > now);
    }
}
