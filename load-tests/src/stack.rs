//! A whole stack of real processes for the soak and the benchmarks, every part on loopback: PostgreSQL and Redis from
//! `infra/scripts/services.sh --persist` (fsync on, Redis append-only, so a restart keeps what was
//! committed), pve-sim in this process (its state and fault control are read directly), the API
//! (`nimbus-api serve`) and the workers (`nimbus-worker`) as processes of their own, so that they
//! can be killed with SIGKILL like a crashed host.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

/// How to start the stack.
#[derive(Clone, Debug)]
pub struct StackConfig {
    /// Everything goes under this folder (services, logs).
    pub root: PathBuf,
    /// Where `nimbus-api` and `nimbus-worker` are.
    pub bin_dir: PathBuf,
    pub workers: usize,
    pub worker_concurrency: usize,
    pub lease_secs: u64,
    pub sim_nodes: usize,
    pub time_scale: f64,
    pub seed: u64,
    /// Plan limit on instances of the soak's tenant (the other limits follow from it).
    pub max_instances: i64,
    /// More environment for every worker (e.g. `PVE_RATE_LIMIT`).
    pub worker_env: Vec<(String, String)>,
}

/// How a service goes down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Orderly shutdown (Redis writes its append-only file; PostgreSQL `-m fast`).
    Graceful,
    /// SIGKILL (Redis) or `-m immediate` (PostgreSQL): what a crash leaves.
    Crash,
    /// Redis only: stopped and its data files deleted, as a replacement with an empty disk.
    Wipe,
}

struct WorkerSlot {
    name: String,
    generation: u32,
    child: Option<Child>,
}

/// A running stack; stopping it (`shutdown`, or drop) kills the processes and stops the services.
pub struct Stack {
    cfg: StackConfig,
    pub services_dir: PathBuf,
    pub logs_dir: PathBuf,
    pub database_url: String,
    /// The same database as the runtime role `nimbus_app`: what the API and the workers use.
    app_database_url: String,
    pub redis_url: String,
    redis_port: String,
    pg_port: String,
    pub api_base: String,
    pub api_key: String,
    pub tenant_id: String,
    pub sim: pve_sim::RunningSim,
    pve_env: Vec<(&'static str, String)>,
    api: Mutex<Option<Child>>,
    /// More API processes (`start_api_replica`), on ports of their own.
    api_replicas: Mutex<Vec<Child>>,
    workers: Mutex<Vec<WorkerSlot>>,
    stopped: std::sync::atomic::AtomicBool,
}

fn services_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/scripts/services.sh")
}

/// `nimbus-api` and `nimbus-worker` next to this executable (same profile). They are built there
/// first when missing, and always when the soak runs under `cargo run` (a no-op when they are up
/// to date; without it a stale API or worker would be soaked).
pub fn find_binaries(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let dir = match explicit {
        Some(d) => return Ok(d),
        None => std::env::current_exe()?.parent().context("the executable has no folder")?.to_path_buf(),
    };
    let missing = |d: &Path| ["nimbus-api", "nimbus-worker"].iter().any(|b| !d.join(b).is_file());
    if missing(&dir) || std::env::var_os("CARGO").is_some() {
        let release = dir.file_name().is_some_and(|n| n == "release");
        let target_dir = dir.parent().context("the binaries' folder has no parent")?;
        eprintln!("chaos-soak: building nimbus-api and nimbus-worker into {}", dir.display());
        let mut cmd = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        // With this package too, so that features unify as in `make chaos` (no rebuild ping-pong).
        cmd.args(["build", "-p", "nimbus-load-tests", "-p", "nimbus-api", "-p", "nimbus-worker", "--bins"]);
        cmd.arg("--target-dir").arg(target_dir);
        if release {
            cmd.arg("--release");
        }
        let status = cmd.current_dir(env!("CARGO_MANIFEST_DIR")).status().context("running cargo build")?;
        anyhow::ensure!(status.success(), "cargo build of nimbus-api and nimbus-worker failed");
        anyhow::ensure!(!missing(&dir), "cargo build left no nimbus-api / nimbus-worker in {}", dir.display());
    }
    Ok(dir)
}

/// A port nothing listens on now (the API binds it right after; a race is reported, not hidden).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn read_trimmed(path: &Path) -> String {
    std::fs::read_to_string(path).map(|s| s.trim().to_owned()).unwrap_or_default()
}

impl Stack {
    pub async fn start(cfg: StackConfig) -> anyhow::Result<Stack> {
        anyhow::ensure!(!cfg.root.exists(), "{} exists already; pick another --dir", cfg.root.display());
        std::fs::create_dir_all(&cfg.root)?;
        // PostgreSQL runs as an unprivileged user when we are root: it must reach the folder.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cfg.root, std::fs::Permissions::from_mode(0o755))?;
        let services_dir = cfg.root.join("svc");
        let logs_dir = cfg.root.join("logs");
        std::fs::create_dir_all(&logs_dir)?;

        // The simulator first: nothing to clean up if it fails.
        let token = format!("root@pam!chaos={:016x}{:016x}", cfg.seed, std::process::id());
        let sim_config = pve_sim::SimConfig {
            nodes: cfg.sim_nodes,
            time_scale: cfg.time_scale,
            tokens: vec![token.clone()],
            auth_failure_delay: Duration::ZERO,
            seed: cfg.seed,
            ..pve_sim::SimConfig::default()
        };
        let sim = pve_sim::start(sim_config, "127.0.0.1:0".parse()?).await?;
        let fingerprint = sim.fingerprint().context("the simulator serves no certificate")?.to_owned();
        let pve_env = vec![("PVE_URL", sim.base_url()), ("PVE_TOKEN", token), ("PVE_FINGERPRINT", fingerprint)];

        let env = services_start(&services_dir).await?;
        let var = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default();
        let (database_url, redis_url) = (var("NIMBUS_DATABASE_URL"), var("NIMBUS_REDIS_URL"));
        let app_database_url = var("NIMBUS_APP_DATABASE_URL");
        let redis_port = read_trimmed(&services_dir.join("redis.port"));
        let pg_port = read_trimmed(&services_dir.join("postgres.port"));

        let mut stack = Stack {
            services_dir,
            logs_dir,
            database_url,
            app_database_url,
            redis_url,
            redis_port,
            pg_port,
            api_base: String::new(),
            api_key: String::new(),
            tenant_id: String::new(),
            sim,
            pve_env,
            api: Mutex::new(None),
            api_replicas: Mutex::new(Vec::new()),
            workers: Mutex::new(Vec::new()),
            stopped: std::sync::atomic::AtomicBool::new(false),
            cfg,
        };
        // From here on, dropping `stack` on an error stops the services.
        anyhow::ensure!(
            !stack.database_url.is_empty() && !stack.app_database_url.is_empty() && !stack.redis_url.is_empty(),
            "services.sh printed no NIMBUS_DATABASE_URL / NIMBUS_APP_DATABASE_URL / NIMBUS_REDIS_URL"
        );
        stack.bootstrap().await?;
        stack.start_api().await?;
        for slot in 0..stack.cfg.workers {
            stack.workers.lock().await.push(WorkerSlot { name: String::new(), generation: 0, child: None });
            stack.start_worker(slot).await?;
        }
        Ok(stack)
    }

    pub fn root(&self) -> &Path {
        &self.cfg.root
    }

    fn command(&self, bin: &str) -> Command {
        let mut cmd = Command::new(self.cfg.bin_dir.join(bin));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("DATABASE_URL", &self.app_database_url)
            .env("REDIS_URL", &self.redis_url)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        for (k, v) in &self.pve_env {
            cmd.env(k, v);
        }
        cmd
    }

    fn log_file(&self, name: &str) -> anyhow::Result<(Stdio, Stdio)> {
        let f =
            std::fs::OpenOptions::new().create(true).append(true).open(self.logs_dir.join(format!("{name}.log")))?;
        Ok((Stdio::from(f.try_clone()?), Stdio::from(f)))
    }

    /// `nimbus-api bootstrap`: the soak's tenant, with a plan that holds every create it sends.
    async fn bootstrap(&mut self) -> anyhow::Result<()> {
        let n = self.cfg.max_instances;
        let out = self
            .command("nimbus-api")
            // The owner migrates; everything after runs as `nimbus_app`, as in production.
            .env("DATABASE_MIGRATION_URL", &self.database_url)
            .args(["bootstrap", "--tenant", "Chaos", "--email", "chaos@example.com", "--plan", "chaos"])
            .args(["--max-instances", &n.to_string(), "--max-vcpus", &(n * 2).to_string()])
            .args(["--max-memory-mib", &(n * 1024).to_string(), "--max-disk-gib", &(n * 10).to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .await
            .context("running nimbus-api bootstrap")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        anyhow::ensure!(
            out.status.success(),
            "nimbus-api bootstrap failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let field = |prefix: &str| {
            stdout.lines().find_map(|l| l.strip_prefix(prefix)).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
        };
        self.api_key = field("API key:").context("bootstrap printed no API key")?;
        self.tenant_id = field("tenant:").context("bootstrap printed no tenant")?;
        Ok(())
    }

    async fn start_api(&mut self) -> anyhow::Result<()> {
        let (base, child) = self.spawn_api("api").await?;
        self.api_base = base;
        *self.api.lock().await = Some(child);
        Ok(())
    }

    /// Starts one more `nimbus-api serve` on a port of its own (a replica: same database and
    /// Redis); returns its base URL once it is ready.
    pub async fn start_api_replica(&self) -> anyhow::Result<String> {
        let n = self.api_replicas.lock().await.len() + 2;
        let (base, child) = self.spawn_api(&format!("api-{n}")).await?;
        self.api_replicas.lock().await.push(child);
        Ok(base)
    }

    /// `nimbus-api serve` on a free port, logging to `<name>.log`; its base URL once ready.
    async fn spawn_api(&self, name: &str) -> anyhow::Result<(String, Child)> {
        let port = free_port()?;
        let base = format!("http://127.0.0.1:{port}");
        let (out, err) = self.log_file(name)?;
        let mut child = self
            .command("nimbus-api")
            .arg("serve")
            .env("LISTEN", format!("127.0.0.1:{port}"))
            // The soak measures faults, not the rate limiter.
            .env("RATE_LIMIT_PER_MINUTE", "100000000")
            .stdout(out)
            .stderr(err)
            .spawn()
            .context("starting nimbus-api serve")?;
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        let log = self.logs_dir.join(format!("{name}.log"));
        loop {
            if let Ok(r) = http.get(format!("{base}/readyz")).send().await
                && r.status().is_success()
            {
                return Ok((base, child));
            }
            if let Ok(Some(status)) = child.try_wait() {
                bail!("nimbus-api exited at start ({status}); see {}", log.display());
            }
            if Instant::now() > deadline {
                bail!("nimbus-api was not ready within 60 s; see {}", log.display());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Adds a worker slot and starts its worker; returns the slot.
    pub async fn add_worker(&self) -> anyhow::Result<usize> {
        let slot = {
            let mut workers = self.workers.lock().await;
            workers.push(WorkerSlot { name: String::new(), generation: 0, child: None });
            workers.len() - 1
        };
        self.start_worker(slot).await?;
        Ok(slot)
    }

    /// Stops every worker (SIGTERM, then SIGKILL after 10 s) and forgets their slots.
    pub async fn remove_workers(&self) {
        let mut workers = self.workers.lock().await;
        for w in workers.iter_mut() {
            if let Some(mut c) = w.child.take() {
                if let Some(pid) = c.id() {
                    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status().await;
                }
                if tokio::time::timeout(Duration::from_secs(10), c.wait()).await.is_err() {
                    let _ = c.start_kill();
                    let _ = c.wait().await;
                }
            }
        }
        workers.clear();
    }

    /// Starts the worker of `slot` under a new name (as a replacement host would be).
    pub async fn start_worker(&self, slot: usize) -> anyhow::Result<String> {
        let mut workers = self.workers.lock().await;
        let w = workers.get_mut(slot).context("no such worker slot")?;
        w.generation += 1;
        let name = format!("chaos-worker-{}-{}", slot + 1, w.generation);
        let (out, err) = self.log_file(&name)?;
        let child = self
            .command("nimbus-worker")
            .env("WORKER_NAME", &name)
            .env("WORKER_CONCURRENCY", self.cfg.worker_concurrency.to_string())
            .env("JOB_LEASE_SECS", self.cfg.lease_secs.to_string())
            .env("JOB_MAX_WAIT_IP_SECS", "120")
            .envs(self.cfg.worker_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(out)
            .stderr(err)
            .spawn()
            .context("starting nimbus-worker")?;
        w.name = name.clone();
        w.child = Some(child);
        Ok(name)
    }

    /// SIGKILLs the worker of `slot` (no chance to hand its jobs back) and reaps it.
    pub async fn kill_worker(&self, slot: usize) -> anyhow::Result<Option<String>> {
        let mut workers = self.workers.lock().await;
        let w = workers.get_mut(slot).context("no such worker slot")?;
        let Some(mut child) = w.child.take() else { return Ok(None) };
        child.start_kill()?;
        child.wait().await?;
        Ok(Some(w.name.clone()))
    }

    /// Worker processes (with their slot) or the API that exited by themselves, not killed by
    /// the soak: crashes.
    pub async fn unexpected_exits(&self) -> Vec<(Option<usize>, String)> {
        let mut out = Vec::new();
        for (slot, w) in self.workers.lock().await.iter_mut().enumerate() {
            if let Some(c) = w.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                out.push((Some(slot), format!("{} exited: {status}", w.name)));
                w.child = None;
            }
        }
        let mut api = self.api.lock().await;
        if let Some(c) = api.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            out.push((None, format!("nimbus-api exited: {status}")));
            *api = None;
        }
        out
    }

    /// Restarts every worker slot that has no running process (after the faults, before the drain).
    pub async fn ensure_workers(&self) -> anyhow::Result<()> {
        let empty: Vec<usize> = {
            let workers = self.workers.lock().await;
            workers.iter().enumerate().filter(|(_, w)| w.child.is_none()).map(|(i, _)| i).collect()
        };
        for slot in empty {
            self.start_worker(slot).await?;
        }
        Ok(())
    }

    pub fn worker_slots(&self) -> usize {
        self.cfg.workers
    }

    pub async fn redis_stop(&self, how: Stop) -> anyhow::Result<()> {
        let redis_dir = self.services_dir.join("redis");
        let pid = read_trimmed(&redis_dir.join("redis.pid"));
        match how {
            Stop::Graceful => redis_cli(&self.redis_port, &["shutdown"]).await?,
            Stop::Wipe => redis_cli(&self.redis_port, &["shutdown", "nosave"]).await?,
            Stop::Crash => {
                anyhow::ensure!(!pid.is_empty(), "no Redis pid file");
                run(Command::new("kill").args(["-9", &pid])).await?;
            }
        }
        if !pid.is_empty() {
            let gone = Instant::now() + Duration::from_secs(10);
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < gone {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        if how == Stop::Wipe {
            for name in ["appendonlydir", "dump.rdb"] {
                let p = redis_dir.join(name);
                if p.is_dir() {
                    std::fs::remove_dir_all(&p)?;
                } else if p.exists() {
                    std::fs::remove_file(&p)?;
                }
            }
        }
        Ok(())
    }

    pub async fn postgres_stop(&self, how: Stop) -> anyhow::Result<()> {
        let mode = if how == Stop::Graceful { "fast" } else { "immediate" };
        let data = self.services_dir.join("postgres/data");
        let mut cmd = as_postgres(&pg_bin("pg_ctl")).await;
        cmd.arg("-D").arg(&data).args(["-m", mode, "-w", "-t", "30", "stop"]);
        run(&mut cmd).await
    }

    /// Starts whatever of PostgreSQL and Redis is down, on the ports they had (the API and the
    /// workers keep their URLs).
    pub async fn services_up(&self) -> anyhow::Result<()> {
        services_start(&self.services_dir).await?;
        let (redis, pg) = (
            read_trimmed(&self.services_dir.join("redis.port")),
            read_trimmed(&self.services_dir.join("postgres.port")),
        );
        anyhow::ensure!(
            redis == self.redis_port && pg == self.pg_port,
            "a service came back on another port (Redis {} → {redis}, PostgreSQL {} → {pg}): another process took it",
            self.redis_port,
            self.pg_port
        );
        Ok(())
    }

    /// Kills the processes and stops the services; removes the folder unless `keep`.
    pub async fn shutdown(&self, keep: bool) {
        if self.stopped.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        for w in self.workers.lock().await.iter_mut() {
            if let Some(mut c) = w.child.take() {
                let _ = c.start_kill();
                let _ = c.wait().await;
            }
        }
        if let Some(mut c) = self.api.lock().await.take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
        for mut c in self.api_replicas.lock().await.drain(..) {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
        let _ = services_stop(&self.services_dir);
        if !keep {
            let _ = std::fs::remove_dir_all(&self.cfg.root);
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // Reached on an error path: children die with their handles (`kill_on_drop`), the
        // services need the script, and the logs stay for whoever looks into the error.
        if !self.stopped.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = services_stop(&self.services_dir);
            eprintln!("chaos-soak: logs kept in {}", self.logs_dir.display());
        }
    }
}

async fn services_start(dir: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let out = Command::new(services_script())
        .arg("start")
        .arg(dir)
        .arg("--persist")
        .stdin(Stdio::null())
        .output()
        .await
        .context("running services.sh start")?;
    anyhow::ensure!(out.status.success(), "services.sh start failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8(out.stdout)?
        .lines()
        .filter_map(|l| l.strip_prefix("export ")?.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches(|c| c == '"' || c == '\'').to_owned()))
        .collect())
}

fn services_stop(dir: &Path) -> anyhow::Result<()> {
    let out = std::process::Command::new(services_script()).arg("stop").arg(dir).output()?;
    anyhow::ensure!(out.status.success(), "services.sh stop: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

async fn redis_cli(port: &str, args: &[&str]) -> anyhow::Result<()> {
    // `shutdown` closes the connection instead of answering: only the exit matters here.
    let _ = Command::new("redis-cli").args(["-h", "127.0.0.1", "-p", port]).args(args).output().await?;
    Ok(())
}

async fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.stdin(Stdio::null()).output().await?;
    anyhow::ensure!(
        out.status.success(),
        "{:?} failed: {}{}",
        cmd.as_std().get_program(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A PostgreSQL program, where services.sh looks for it.
fn pg_bin(name: &str) -> PathBuf {
    let mut candidates = vec![PathBuf::from("/usr/local/bin").join(name)];
    if let Ok(dirs) = std::fs::read_dir("/usr/lib/postgresql") {
        candidates.extend(dirs.flatten().map(|d| d.path().join("bin").join(name)));
    }
    candidates.into_iter().find(|p| p.is_file()).unwrap_or_else(|| PathBuf::from(name))
}

/// `program` run as the user services.sh runs PostgreSQL as (it refuses root).
async fn as_postgres(program: &Path) -> Command {
    let uid = Command::new("id").arg("-u").output().await.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if uid.ok().as_deref() != Some("0") {
        return Command::new(program);
    }
    let has_postgres = Command::new("id").arg("postgres").output().await.is_ok_and(|o| o.status.success());
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", if has_postgres { "postgres" } else { "nobody" }, "--"]).arg(program);
    cmd
}
