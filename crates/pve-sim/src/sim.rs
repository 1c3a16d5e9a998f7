//! The running simulator's shared core (`Sim`: configuration, the cluster behind one lock,
//! faults, running tasks, routes) and the per-request context handlers receive (`Ctx`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::SimConfig;
use crate::auth::AuthUser;
use crate::error::PveResult;
use crate::faults::FaultControl;
use crate::model::Cluster;
use crate::router::Routes;
use crate::tasks::{GlobalLocks, TaskLog, TaskSpec};
use crate::tls::CertBundle;

/// Shared state of one simulator instance.
pub struct Sim {
    pub config: SimConfig,
    state: RwLock<Cluster>,
    /// Bumped on every write access; the state file writer saves when it moved.
    generation: AtomicU64,
    pub faults: FaultControl,
    pub(crate) running_tasks: Mutex<HashMap<String, tokio::sync::oneshot::Sender<()>>>,
    /// Node-wide task locks, e.g. vzdump's `/var/run/vzdump.lock`; see `tasks::GlobalLock`.
    pub(crate) global_locks: Mutex<GlobalLocks>,
    pub(crate) routes: Routes,
    pub cert: Option<CertBundle>,
    /// SHA-256 fingerprint of `cert` (`AB:CD:..`).
    pub fingerprint: Option<String>,
    /// API requests answered since start (what a client's request rate is measured by).
    requests: AtomicU64,
}

impl Sim {
    pub(crate) fn new(
        config: SimConfig,
        cluster: Cluster,
        faults: FaultControl,
        routes: Routes,
        cert: Option<CertBundle>,
    ) -> Sim {
        Sim {
            config,
            state: RwLock::new(cluster),
            generation: AtomicU64::new(1),
            faults,
            running_tasks: Mutex::new(HashMap::new()),
            global_locks: Mutex::new(HashMap::new()),
            routes,
            fingerprint: cert.as_ref().and_then(|c| crate::tls::fingerprint(c).ok()),
            cert,
            requests: AtomicU64::new(0),
        }
    }

    /// API requests received since start (`/api2/...`, authenticated or not).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub(crate) fn count_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Shared read access to the cluster.
    pub fn read(&self) -> RwLockReadGuard<'_, Cluster> {
        self.state.read()
    }

    /// Exclusive access to the cluster (marks the state as changed for the state file).
    pub fn write(&self) -> RwLockWriteGuard<'_, Cluster> {
        let guard = self.state.write();
        self.generation.fetch_add(1, Ordering::AcqRel);
        guard
    }

    /// The change counter.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// A realistic duration multiplied by the time scale.
    pub fn scaled(&self, d: Duration) -> Duration {
        let scale = self.config.time_scale;
        if scale <= 0.0 { Duration::ZERO } else { d.mul_f64(scale) }
    }

    /// Milliseconds until a started guest's agent answers (boot time × time scale).
    pub fn boot_ms(&self) -> i64 {
        self.scaled(self.config.guest_boot_time).as_millis() as i64
    }

    /// Whether a node is up (not taken down by a fault).
    pub fn node_online(&self, node: &str) -> bool {
        !self.faults.is_node_down(node)
    }
}

/// Everything a handler knows about its request.
pub struct Ctx {
    pub sim: Arc<Sim>,
    /// The caller (None only on endpoints that need no authentication).
    pub auth: Option<AuthUser>,
    pub method: http::Method,
    /// The path below `/api2/json`, URL-unescaped.
    pub rel_path: String,
    pub headers: http::HeaderMap,
    pub(crate) total: Mutex<Option<u64>>,
    pub(crate) upgrade: Mutex<Option<hyper::upgrade::OnUpgrade>>,
    /// Set on upload endpoints: what the multipart body held.
    pub upload: Option<crate::server::UploadInfo>,
}

impl Ctx {
    /// The effective user (`root@pam!nimbus` for a token), as written into UPIDs.
    pub fn user(&self) -> String {
        self.auth.as_ref().map(AuthUser::user).unwrap_or_default()
    }

    /// Whether the caller is root@pam itself.
    pub fn is_root(&self) -> bool {
        self.auth.as_ref().is_some_and(AuthUser::is_root)
    }

    /// Shared read access to the cluster.
    pub fn read(&self) -> RwLockReadGuard<'_, Cluster> {
        self.sim.read()
    }

    /// Exclusive access to the cluster.
    pub fn write(&self) -> RwLockWriteGuard<'_, Cluster> {
        self.sim.write()
    }

    /// Sets the envelope's `total` (row count of list endpoints).
    pub fn set_total(&self, total: u64) {
        *self.total.lock() = Some(total);
    }

    /// Takes the connection upgrade (websocket endpoints); None when the request had none.
    pub fn take_upgrade(&self) -> Option<hyper::upgrade::OnUpgrade> {
        self.upgrade.lock().take()
    }

    /// Starts a task as the calling user; see [`Sim::spawn_task`].
    pub fn spawn_task<F>(&self, st: &mut Cluster, spec: TaskSpec, body: F) -> PveResult<String>
    where
        F: FnOnce(&mut Cluster, &mut TaskLog) -> Result<(), String> + Send + 'static,
    {
        self.sim.spawn_task(st, spec, body)
    }

    /// A task spec on `node` for the calling user.
    pub fn task(&self, node: &str, ty: &str, id: impl ToString) -> TaskSpec {
        TaskSpec::new(node, ty, id, &self.user())
    }
}
