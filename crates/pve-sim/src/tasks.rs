//! Asynchronous tasks: UPIDs in PVE's exact format, the task registry (status, log, exit
//! status), and the runner that waits the task's (scaled) duration, applies the task body to
//! the cluster under the state lock, clears the guest locks and writes `TASK OK` /
//! `TASK ERROR: <msg>`. A task may first have to take a node-wide [`GlobalLock`] (vzdump's
//! `/var/run/vzdump.lock`); it starts (start log, guest locks, duration) only once it holds it.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::PveResult;
use crate::model::Cluster;
use crate::sim::Sim;
use crate::util;

/// The fields of a UPID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upid {
    pub node: String,
    pub pid: u32,
    pub pstart: u64,
    pub starttime: i64,
    pub ty: String,
    pub id: String,
    pub user: String,
}

static UPID_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^UPID:([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?):([0-9A-Fa-f]{8}):([0-9A-Fa-f]{8,9}):([0-9A-Fa-f]{8}):([^:\s/]+):([^:\s/]*):([^:\s/]+):$",
    )
    .expect("static regex")
});

impl Upid {
    /// Parses a UPID with PVE's regex.
    pub fn parse(s: &str) -> Option<Upid> {
        let c = UPID_RE.captures(s)?;
        Some(Upid {
            node: c[1].to_string(),
            pid: u32::from_str_radix(&c[3], 16).ok()?,
            pstart: u64::from_str_radix(&c[4], 16).ok()?,
            starttime: i64::from_str_radix(&c[5], 16).ok()?,
            ty: c[6].to_string(),
            id: c[7].to_string(),
            user: c[8].to_string(),
        })
    }
}

impl std::fmt::Display for Upid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "UPID:{}:{:08X}:{:08X}:{:08X}:{}:{}:{}:",
            self.node, self.pid, self.pstart, self.starttime, self.ty, self.id, self.user
        )
    }
}

/// One task record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Task {
    pub upid: String,
    pub node: String,
    pub pid: u32,
    pub pstart: u64,
    pub starttime: i64,
    #[serde(rename = "type")]
    pub ty: String,
    pub id: String,
    /// The user as in the UPID (a full token id `user@realm!name` for tokens).
    pub user: String,
    pub running: bool,
    pub exitstatus: Option<String>,
    pub endtime: Option<i64>,
    pub log: Vec<String>,
    /// Guest locks this task takes: (vmid, lock). Held while it runs; kept afterwards as the
    /// record of the guests it worked on (a clone's UPID names only the source).
    #[serde(default)]
    pub locks: Vec<(u32, String)>,
}

/// PVE's `upid_normalize_status_type`.
pub fn status_type(exitstatus: Option<&str>) -> &'static str {
    match exitstatus {
        None | Some("") => "unknown",
        Some("OK") => "ok",
        Some(s) if s.starts_with("WARNINGS: ") => "warning",
        Some("unexpected status") => "unknown",
        Some(_) => "error",
    }
}

impl Task {
    /// `(user, tokenid)` split like pve-manager's `convert_token_task`.
    pub fn user_and_token(&self) -> (&str, Option<&str>) {
        match self.user.split_once('!') {
            Some((u, t)) => (u, Some(t)),
            None => (self.user.as_str(), None),
        }
    }

    /// Whether `authuser` may see this task (a token sees its own tasks, a user its own and
    /// its tokens').
    pub fn visible_to(&self, authuser: &str) -> bool {
        let (user, token) = self.user_and_token();
        match token {
            Some(_) => authuser == self.user || authuser == user,
            None => authuser == user,
        }
    }

    fn base_json(&self) -> serde_json::Map<String, Value> {
        let (user, token) = self.user_and_token();
        let mut m = serde_json::Map::new();
        m.insert("upid".into(), json!(self.upid));
        m.insert("node".into(), json!(self.node));
        m.insert("pid".into(), json!(self.pid));
        m.insert("pstart".into(), json!(self.pstart));
        m.insert("starttime".into(), json!(self.starttime));
        m.insert("type".into(), json!(self.ty));
        m.insert("id".into(), json!(self.id));
        m.insert("user".into(), json!(user));
        if let Some(t) = token {
            m.insert("tokenid".into(), json!(t));
        }
        m
    }

    /// `GET /nodes/{node}/tasks/{upid}/status`.
    pub fn status_json(&self) -> Value {
        let mut m = self.base_json();
        m.insert("status".into(), json!(if self.running { "running" } else { "stopped" }));
        if !self.running {
            m.insert("exitstatus".into(), json!(self.exitstatus.clone().unwrap_or_else(|| "unexpected status".into())));
        }
        Value::Object(m)
    }

    /// An item of the task lists (`endtime` and `status` once finished).
    pub fn list_json(&self) -> Value {
        let mut m = self.base_json();
        if !self.running {
            if let Some(e) = self.endtime {
                m.insert("endtime".into(), json!(e));
            }
            if let Some(s) = &self.exitstatus {
                m.insert("status".into(), json!(s));
            }
        }
        Value::Object(m)
    }
}

/// All tasks of the cluster in start order, indexed by UPID.
#[derive(Debug, Clone, Default)]
pub struct TaskList {
    list: Vec<Task>,
    index: HashMap<String, usize>,
}

/// Finished tasks kept before the oldest are dropped.
const MAX_TASKS: usize = 50_000;

impl TaskList {
    /// A task by UPID.
    pub fn get(&self, upid: &str) -> Option<&Task> {
        self.index.get(upid).map(|&i| &self.list[i])
    }
    /// A mutable task by UPID.
    pub fn get_mut(&mut self, upid: &str) -> Option<&mut Task> {
        self.index.get(upid).map(|&i| &mut self.list[i])
    }
    /// All tasks, oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Task> {
        self.list.iter()
    }
    /// Number of tasks.
    pub fn len(&self) -> usize {
        self.list.len()
    }
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
    /// Adds a task.
    pub fn push(&mut self, task: Task) {
        if self.list.len() >= MAX_TASKS {
            let drop = MAX_TASKS / 5;
            let mut removed = 0;
            self.list.retain(|t| {
                let keep = t.running || removed >= drop;
                if !keep {
                    removed += 1;
                }
                keep
            });
            self.reindex();
        }
        self.index.insert(task.upid.clone(), self.list.len());
        self.list.push(task);
    }
    fn reindex(&mut self) {
        self.index = self.list.iter().enumerate().map(|(i, t)| (t.upid.clone(), i)).collect();
    }
}

impl Serialize for TaskList {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.list.serialize(s)
    }
}

impl<'de> Deserialize<'de> for TaskList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let list = Vec::<Task>::deserialize(d)?;
        let mut t = TaskList { list, index: HashMap::new() };
        t.reindex();
        Ok(t)
    }
}

/// The log a task body writes to (lines appear before the final `TASK ...` line).
#[derive(Debug, Default)]
pub struct TaskLog {
    pub lines: Vec<String>,
}

impl TaskLog {
    /// Appends a line.
    pub fn line(&mut self, line: impl Into<String>) {
        self.lines.push(line.into());
    }
}

/// What a task does when it starts, under the state lock: checks and log lines against the
/// cluster as it is then, and the guest locks (`(vmid, lock)`) it holds until it ends.
pub type StartHook = Box<dyn FnOnce(&mut Cluster, &mut TaskLog) -> Vec<(u32, String)> + Send>;

/// A node-wide exclusive lock a task takes before it starts: PVE's `flock` on a file of the
/// node, as vzdump's `getlock` does on `/var/run/vzdump.lock`. Get one with
/// [`Sim::global_lock`].
#[derive(Clone)]
pub struct GlobalLock {
    /// The lock file, as named in the error messages.
    path: String,
    /// One per (node, path), shared by every task that takes it.
    mutex: Arc<tokio::sync::Mutex<()>>,
    /// How long a task waits for it (vzdump's `lockwait`, minutes); 0 = fail at once.
    wait_minutes: u64,
}

impl GlobalLock {
    /// Holds the lock as a vzdump outside the API would (one from the node's cron or shell):
    /// API tasks that take it wait until the guard is dropped. None while a task holds it.
    pub fn try_hold(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        self.mutex.clone().try_lock_owned().ok()
    }
}

impl std::fmt::Debug for GlobalLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GlobalLock").field("path", &self.path).field("wait_minutes", &self.wait_minutes).finish()
    }
}

/// The mutexes behind the [`GlobalLock`]s, by (node, lock file).
pub(crate) type GlobalLocks = HashMap<(String, String), Arc<tokio::sync::Mutex<()>>>;

/// What to start: node, type, id, user, locks and the base duration.
pub struct TaskSpec {
    pub node: String,
    pub ty: String,
    pub id: String,
    pub user: String,
    pub locks: Vec<(u32, String)>,
    pub duration: Option<Duration>,
    pub start_log: Vec<String>,
    pub global_lock: Option<GlobalLock>,
    pub on_start: Option<StartHook>,
}

impl std::fmt::Debug for TaskSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskSpec")
            .field("node", &self.node)
            .field("ty", &self.ty)
            .field("id", &self.id)
            .field("user", &self.user)
            .field("locks", &self.locks)
            .field("duration", &self.duration)
            .field("start_log", &self.start_log)
            .field("global_lock", &self.global_lock)
            .field("on_start", &self.on_start.as_ref().map(|_| "<hook>"))
            .finish()
    }
}

impl TaskSpec {
    /// A task of `ty` with `id` (vmid, storage, or empty) on `node`, run as `user`
    /// (use `cx.user()`: the full token id for tokens).
    pub fn new(node: &str, ty: &str, id: impl ToString, user: &str) -> TaskSpec {
        TaskSpec {
            node: node.into(),
            ty: ty.into(),
            id: id.to_string(),
            user: user.into(),
            locks: Vec::new(),
            duration: None,
            start_log: Vec::new(),
            global_lock: None,
            on_start: None,
        }
    }
    /// Sets `lock: <lock>` on guest `vmid` when the task starts, removed when it ends.
    pub fn lock(mut self, vmid: u32, lock: &str) -> TaskSpec {
        self.locks.push((vmid, lock.to_string()));
        self
    }
    /// The realistic duration of this task (before the per-type override and the time scale).
    pub fn duration(mut self, d: Duration) -> TaskSpec {
        self.duration = Some(d);
        self
    }
    /// A log line written when the task starts.
    pub fn log(mut self, line: impl Into<String>) -> TaskSpec {
        self.start_log.push(line.into());
        self
    }
    /// Takes `lock` before starting: while another task holds it, this one waits (or fails,
    /// see [`GlobalLock`]), and its start log, guest locks, start hook and duration wait too.
    pub fn global_lock(mut self, lock: GlobalLock) -> TaskSpec {
        self.global_lock = Some(lock);
        self
    }
    /// Runs `hook` when the task starts (after the start log lines); the guest locks it returns
    /// are set then and held until the task ends. For work that must see the cluster as it is
    /// when a delayed task really starts (vzdump checks and locks its guests then).
    pub fn on_start(
        mut self,
        hook: impl FnOnce(&mut Cluster, &mut TaskLog) -> Vec<(u32, String)> + Send + 'static,
    ) -> TaskSpec {
        self.on_start = Some(Box::new(hook));
        self
    }
}

/// The parts of a spec applied when the task starts.
struct Start {
    locks: Vec<(u32, String)>,
    log: Vec<String>,
    hook: Option<StartHook>,
}

impl Start {
    /// Writes the start log, runs the hook and sets the guest locks (recorded on the task so
    /// that `finish` releases them).
    fn apply(self, st: &mut Cluster, upid: &str) {
        let mut log = TaskLog { lines: self.log };
        let mut locks = self.locks;
        if let Some(hook) = self.hook {
            locks.extend(hook(st, &mut log));
        }
        for (vmid, lock) in &locks {
            if let Some(g) = st.guests.get_mut(vmid) {
                g.config.insert("lock".into(), lock.clone());
            }
        }
        if let Some(task) = st.tasks.get_mut(upid) {
            task.log.extend(log.lines);
            task.locks.extend(locks);
        }
    }
}

/// Realistic default durations per task type (seconds), before the time scale.
pub fn default_duration(ty: &str) -> Duration {
    let secs = match ty {
        "qmcreate" | "vzcreate" => 3.0,
        "qmclone" | "vzclone" => 5.0,
        "qmrestore" | "vzrestore" => 8.0,
        "qmstart" | "vzstart" => 2.0,
        "qmstop" | "vzstop" | "qmsuspend" | "qmpause" | "vzsuspend" | "qmresume" | "vzresume" => 1.0,
        "qmshutdown" | "vzshutdown" => 4.0,
        "qmreboot" | "vzreboot" => 6.0,
        "qmdestroy" | "vzdestroy" => 2.0,
        "qmsnapshot" | "vzsnapshot" | "qmrollback" | "vzrollback" => 2.0,
        "qmdelsnapshot" | "vzdelsnapshot" | "qmtemplate" | "vztemplate" | "qmconfig" | "resize" => 1.0,
        "vzdump" => 10.0,
        "imgdel" | "imgcopy" => 1.0,
        "download" => 6.0,
        "qmigrate" | "vzmigrate" => 10.0,
        _ => 1.0,
    };
    Duration::from_secs_f64(secs)
}

impl Sim {
    /// The effective duration of a task type: per-type override or `base`, times the time scale.
    pub fn task_duration(&self, ty: &str, base: Option<Duration>) -> Duration {
        let d = self.config.task_durations.get(ty).copied().or(base).unwrap_or_else(|| default_duration(ty));
        self.scaled(d)
    }

    /// The lock file `path` of `node` (one mutex per node and path), waited for up to
    /// `wait_minutes` (scaled like task durations; 0 = fail at once).
    pub fn global_lock(&self, node: &str, path: &str, wait_minutes: u64) -> GlobalLock {
        let mutex = self.global_locks.lock().entry((node.to_string(), path.to_string())).or_default().clone();
        GlobalLock { path: path.to_string(), mutex, wait_minutes }
    }

    /// How long a task waits for a global lock before `got timeout`; None = until it is free.
    /// With time scale 0 (tests) nothing would be left of the wait, so the waiter waits for
    /// the holder instead of timing out at once.
    fn lock_wait_limit(&self, wait_minutes: u64) -> Option<Duration> {
        (self.config.time_scale > 0.0).then(|| self.scaled(Duration::from_secs(wait_minutes * 60)))
    }

    /// Starts a task: registers it as running, sets the spec's guest locks, and schedules the
    /// body to run under the state lock when the duration has passed. Returns the UPID.
    /// Callers check `Guest::check_lock` first; this sets the locks unconditionally.
    /// With a [`GlobalLock`] held by another task, the start (log, locks, hook) and the
    /// duration wait until this task holds it.
    pub fn spawn_task<F>(self: &Arc<Self>, st: &mut Cluster, spec: TaskSpec, body: F) -> PveResult<String>
    where
        F: FnOnce(&mut Cluster, &mut TaskLog) -> Result<(), String> + Send + 'static,
    {
        let now = util::now();
        let boot = st.node(&spec.node)?.boot_time;
        let pid = st.next_pid();
        let upid = Upid {
            node: spec.node.clone(),
            pid,
            pstart: ((now - boot).max(1) as u64) * 100 + u64::from(pid % 100),
            starttime: now,
            ty: spec.ty.clone(),
            id: spec.id.clone(),
            user: spec.user.clone(),
        };
        let upid_s = upid.to_string();
        st.tasks.push(Task {
            upid: upid_s.clone(),
            node: spec.node.clone(),
            pid,
            pstart: upid.pstart,
            starttime: now,
            ty: spec.ty.clone(),
            id: spec.id.clone(),
            user: spec.user.clone(),
            running: true,
            exitstatus: None,
            endtime: None,
            log: Vec::new(),
            locks: Vec::new(),
        });
        let start = Start { locks: spec.locks, log: spec.start_log, hook: spec.on_start };
        // Uncontended (the common case) the global lock is taken here and the task starts at
        // once, exactly like a task without one; else it starts in the runner once it holds it.
        let mut held = None;
        let mut waiting = None;
        match spec.global_lock.map(|gl| (gl.mutex.clone().try_lock_owned(), gl)) {
            None => start.apply(st, &upid_s),
            Some((Ok(guard), _)) => {
                held = Some(guard);
                start.apply(st, &upid_s);
            }
            Some((Err(_), gl)) if gl.wait_minutes == 0 => {
                let line = format!("ERROR: can't acquire lock '{}' (wait = 0)", gl.path);
                end_without_status(st, &upid_s, vec![line]);
                return Ok(upid_s);
            }
            Some((Err(_), gl)) => {
                if let Some(task) = st.tasks.get_mut(&upid_s) {
                    task.log.push("INFO: trying to get global lock - waiting...".into());
                }
                waiting = Some((gl, start));
            }
        }
        let duration = self.task_duration(&spec.ty, spec.duration);
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        self.running_tasks.lock().insert(upid_s.clone(), stop_tx);
        let sim = self.clone();
        let upid_task = upid_s.clone();
        let ty = spec.ty;
        tracing::debug!(upid = %upid_s, "task started");
        tokio::spawn(async move {
            let mut global_guard = held;
            if let Some((gl, start)) = waiting {
                let limit = sim.lock_wait_limit(gl.wait_minutes);
                let timeout = async {
                    match limit {
                        Some(d) => tokio::time::sleep(d).await,
                        None => std::future::pending().await,
                    }
                };
                // PVE's flock under `alarm(lockwait * 60)`; a stop (SIGTERM) interrupts it too.
                let failure = tokio::select! {
                    guard = gl.mutex.clone().lock_owned() => {
                        global_guard = Some(guard);
                        None
                    }
                    _ = timeout => Some("got timeout"),
                    _ = &mut stop_rx => Some("interrupted by signal"),
                };
                let mut st = sim.write();
                if let Some(reason) = failure {
                    sim.running_tasks.lock().remove(&upid_task);
                    let line = format!("ERROR: can't acquire lock '{}' - {reason}", gl.path);
                    end_without_status(&mut st, &upid_task, vec![line]);
                    return;
                }
                if let Some(task) = st.tasks.get_mut(&upid_task) {
                    task.log.push("INFO: got global lock".into());
                }
                start.apply(&mut st, &upid_task);
            }
            let interrupted = tokio::select! {
                _ = tokio::time::sleep(duration) => false,
                r = stop_rx => r.is_ok(),
            };
            sim.running_tasks.lock().remove(&upid_task);
            let injected = if interrupted { None } else { sim.faults.take_task_failure(&ty) };
            let mut st = sim.write();
            let mut log = TaskLog::default();
            let result = if interrupted {
                Err("received interrupt".to_string())
            } else if let Some(msg) = injected {
                Err(msg)
            } else {
                body(&mut st, &mut log)
            };
            if interrupted || result.is_err() {
                remove_placeholders(&mut st, &upid_task);
            }
            finish(&mut st, &upid_task, log, result);
            drop(st);
            // Held until the task has ended, whichever way (done, failed, stopped): the next
            // waiter starts now.
            drop(global_guard);
        });
        Ok(upid_s)
    }

    /// Stops a running task (`DELETE /nodes/{node}/tasks/{upid}`); false when it is not running.
    pub fn stop_task(&self, upid: &str) -> bool {
        match self.running_tasks.lock().remove(upid) {
            Some(tx) => tx.send(()).is_ok(),
            None => false,
        }
    }
}

/// Removes the guests a creating task (create, clone, restore) made for itself and never filled:
/// PVE destroys a failed creation's target, so an aborted or injected failure leaves nothing behind
/// either. A guest with any config beyond its lock (an in-place restore's target) is kept.
fn remove_placeholders(st: &mut Cluster, upid: &str) {
    let Some(task) = st.tasks.get(upid) else { return };
    let placeholders: Vec<u32> = task
        .locks
        .iter()
        .filter(|(vmid, lock)| {
            (lock == "create" || lock == "clone")
                && st.guests.get(vmid).is_some_and(|g| g.config.len() == 1 && g.config.get("lock") == Some(lock))
        })
        .map(|(vmid, _)| *vmid)
        .collect();
    for vmid in placeholders {
        st.guests.remove(&vmid);
    }
}

/// Ends a task: log lines, final status line, locks released.
fn finish(st: &mut Cluster, upid: &str, log: TaskLog, result: Result<(), String>) {
    let Some(task) = st.tasks.get_mut(upid) else { return };
    task.log.extend(log.lines);
    match &result {
        Ok(()) => {
            task.log.push("TASK OK".into());
            task.exitstatus = Some("OK".into());
        }
        Err(msg) => {
            let one_line = msg.trim_end_matches('\n').replace('\n', " ");
            task.log.push(format!("TASK ERROR: {one_line}"));
            task.exitstatus = Some(one_line);
        }
    }
    task.running = false;
    task.endtime = Some(util::now());
    // The task keeps its list: it records which guests it worked on (a clone's target).
    let locks = task.locks.clone();
    if let Err(msg) = &result {
        tracing::debug!(%upid, error = %msg, "task failed");
    }
    for (vmid, lock) in locks {
        if let Some(g) = st.guests.get_mut(&vmid)
            && g.config.get("lock") == Some(&lock)
        {
            g.config.remove("lock");
        }
    }
}

/// Ends a task whose process exited without writing a final `TASK ...` line (after `lines`),
/// releasing its locks. PVE reads the status from the log's last line, so it is
/// `unexpected status`: e.g. vzdump, whose worker `exit`s when `getlock` fails.
fn end_without_status(st: &mut Cluster, upid: &str, lines: Vec<String>) {
    finish(st, upid, TaskLog { lines }, Err("unexpected status".into()));
    if let Some(t) = st.tasks.get_mut(upid) {
        t.log.pop();
        t.exitstatus = Some("unexpected status".into());
    }
}

/// Marks tasks that were running when the state was saved as ended (the process is gone) and
/// releases their locks.
pub fn recover_after_restart(st: &mut Cluster) {
    let running: Vec<String> = st.tasks.iter().filter(|t| t.running).map(|t| t.upid.clone()).collect();
    for upid in running {
        end_without_status(st, &upid, Vec::new());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upid_round_trips_in_pve_format() {
        let s = "UPID:pve1:000FF1FD:10F9374C:630D702C:vzdump:110:root@pam:";
        let u = Upid::parse(s).unwrap();
        assert_eq!(u.pid, 0xFF1FD);
        assert_eq!(u.ty, "vzdump");
        assert_eq!(u.to_string(), s);
        let t = Upid {
            node: "pve2".into(),
            pid: 42,
            pstart: 0x1_0000_0000,
            starttime: 1_700_000_000,
            ty: "imgcopy".into(),
            id: String::new(),
            user: "root@pam!nimbus".into(),
        };
        let printed = t.to_string();
        assert_eq!(printed, "UPID:pve2:0000002A:100000000:6553F100:imgcopy::root@pam!nimbus:");
        assert_eq!(Upid::parse(&printed).unwrap(), t);
        assert!(Upid::parse("UPID:pve1:xyz").is_none());
    }

    #[test]
    fn status_types_normalise() {
        assert_eq!(status_type(Some("OK")), "ok");
        assert_eq!(status_type(Some("WARNINGS: 2")), "warning");
        assert_eq!(status_type(Some("boom")), "error");
        assert_eq!(status_type(None), "unknown");
    }
}
