//! Power actions: `POST .../status/{start,stop,shutdown,reboot,suspend,resume}` for qemu and
//! LXC, with PVE's synchronous refusals (`VM 100 not running`, `CT 100 already running`,
//! `VM is paused - cannot shutdown`) and the checks qemu-server and pve-container make inside
//! the worker (template, lock, already running).

use serde_json::{Value, json};

use crate::error::{PveError, PveResult};
use crate::model::{Cluster, GuestKind, PowerState};
use crate::params::{P, Params, f};
use crate::router::Routes;
use crate::sim::Ctx;
use crate::tasks::TaskLog;
use crate::util::{self, MIB};

use super::common::{guest, skiplock};
use super::formats as xf;

/// Starts a guest inside a task body: applies pending changes, clears a `suspended` state,
/// regenerates cloud-init and marks it running (the agent answers after `boot_ms`).
pub fn start_now(st: &mut Cluster, vmid: u32, boot_ms: i64, log: &mut TaskLog) {
    let pid = st.next_pid();
    let now = util::now_ms();
    let Some(node) = st.guests.get(&vmid).map(|g| g.node.clone()) else { return };
    super::config::apply_pending(st, vmid);
    let state_vol = st.guests.get_mut(&vmid).and_then(|g| {
        if g.lock() == Some("suspended") {
            g.config.remove("lock");
        }
        g.config.remove("vmstate")
    });
    if let Some(v) = state_vol {
        log.line(format!("resuming VM from state volume '{v}'"));
        st.remove_volume(&node, &v);
    }
    if let Some(g) = st.guests.get_mut(&vmid) {
        g.config.remove("runningmachine");
        g.config.remove("runningcpu");
        super::cloudinit::regenerated(g);
        g.set_running(now, boot_ms, pid);
        if g.kind == GuestKind::Qemu {
            log.line(format!("VM {vmid} started with PID {pid}."));
        }
    }
}

/// Stops a guest inside a task body (pending changes are applied on a cold stop, as PVE's
/// `vm_stop_cleanup` does).
pub fn stop_now(st: &mut Cluster, vmid: u32) {
    let seed = st.seed;
    if let Some(g) = st.guests.get_mut(&vmid) {
        g.set_stopped(seed, util::now_ms());
    }
    super::config::apply_pending(st, vmid);
}

/// The worker of qemu's stop and shutdown: a guest stopped meanwhile is left alone.
fn stop_in_task(st: &mut Cluster, node: &str, vmid: u32, skip_lock: bool) -> Result<(), String> {
    let g = st.guests.get(&vmid).ok_or_else(|| missing(node, GuestKind::Qemu, vmid))?;
    if g.state == PowerState::Stopped {
        return Ok(());
    }
    if !skip_lock {
        g.check_lock()?;
    }
    stop_now(st, vmid);
    Ok(())
}

fn root_only(cx: &Ctx, p: &Params, names: &[&str]) -> PveResult<()> {
    for n in names {
        if p.has(n) && p.opt_str(n) != Some("0") && !cx.is_root() {
            return Err(PveError::param(*n, "Only root may use this option."));
        }
    }
    Ok(())
}

fn upid(v: String) -> PveResult<Value> {
    Ok(json!(v))
}

/// Registers the power actions of both guest kinds.
pub fn register(r: &mut Routes) {
    qemu(r);
    lxc(r);
}

fn qemu(r: &mut Routes) {
    r.post(
        "/nodes/{node}/qemu/{vmid}/status/start",
        vec![
            P::node(),
            P::vmid(),
            P::str("force-cpu").opt(),
            P::str("machine").opt().prop(&xf::MACHINE),
            P::str("migratedfrom").opt().fmt(f::NODE),
            P::str("migration_network").opt().fmt(f::CIDR),
            P::str("migration_type").opt().en(&["secure", "insecure"]),
            P::str("nets-host-mtu").opt().pattern(r"net\d+=\d+(,net\d+=\d+)*"),
            P::bool("skiplock").opt(),
            P::str("stateuri").opt().max_len(128),
            P::str("targetstorage").opt().fmt(crate::params::Format::List(xf::storage_pair)),
            P::int("timeout").opt().min(0),
        ],
        |cx, p| {
            root_only(
                cx,
                p,
                &[
                    "stateuri",
                    "skiplock",
                    "migratedfrom",
                    "migration_type",
                    "migration_network",
                    "targetstorage",
                    "force-cpu",
                    "nets-host-mtu",
                ],
            )?;
            let skip = p.bool("skiplock");
            let mut st = cx.write();
            let g = guest(&st, p, GuestKind::Qemu)?;
            let (node, vmid) = (g.node.clone(), g.vmid);
            let boot_ms = cx.sim.boot_ms();
            upid(cx.spawn_task(&mut st, cx.task(&node, "qmstart", vmid), move |st, log| {
                let g = st.guests.get(&vmid).ok_or_else(|| missing(&node, GuestKind::Qemu, vmid))?;
                if g.is_template() {
                    return Err("you can't start a vm if it's a template".into());
                }
                let suspended = g.lock() == Some("suspended");
                if !skip && !suspended {
                    g.check_lock()?;
                }
                if g.state != PowerState::Stopped {
                    return Err(format!("VM {vmid} already running"));
                }
                start_now(st, vmid, boot_ms, log);
                Ok(())
            })?)
        },
    );

    r.post(
        "/nodes/{node}/qemu/{vmid}/status/stop",
        vec![
            P::node(),
            P::vmid(),
            P::bool("keepActive").opt(),
            P::str("migratedfrom").opt().fmt(f::NODE),
            P::bool("overrule-shutdown").opt(),
            P::bool("skiplock").opt(),
            P::int("timeout").opt().min(0),
        ],
        |cx, p| {
            root_only(cx, p, &["skiplock", "keepActive", "migratedfrom"])?;
            let skip = p.bool("skiplock");
            let mut st = cx.write();
            let g = guest(&st, p, GuestKind::Qemu)?;
            let (node, vmid) = (g.node.clone(), g.vmid);
            upid(cx.spawn_task(&mut st, cx.task(&node, "qmstop", vmid), move |st, _log| {
                stop_in_task(st, &node, vmid, skip)
            })?)
        },
    );

    r.post(
        "/nodes/{node}/qemu/{vmid}/status/shutdown",
        vec![
            P::node(),
            P::vmid(),
            P::bool("forceStop").opt(),
            P::bool("keepActive").opt(),
            P::bool("skiplock").opt(),
            P::int("timeout").opt().min(0),
        ],
        |cx, p| {
            root_only(cx, p, &["skiplock", "keepActive"])?;
            let skip = p.bool("skiplock");
            let mut st = cx.write();
            let g = guest(&st, p, GuestKind::Qemu)?;
            if g.state == PowerState::Paused && !p.bool("forceStop") {
                return Err(PveError::handler("VM is paused - cannot shutdown"));
            }
            let (node, vmid) = (g.node.clone(), g.vmid);
            upid(cx.spawn_task(&mut st, cx.task(&node, "qmshutdown", vmid), move |st, _log| {
                stop_in_task(st, &node, vmid, skip)
            })?)
        },
    );

    r.post(
        "/nodes/{node}/qemu/{vmid}/status/reboot",
        vec![P::node(), P::vmid(), P::int("timeout").opt().min(0)],
        |cx, p| {
            let mut st = cx.write();
            let g = guest(&st, p, GuestKind::Qemu)?;
            if g.state == PowerState::Paused {
                return Err(PveError::handler("VM is paused - cannot shutdown"));
            }
            if g.state == PowerState::Stopped {
                return Err(PveError::handler(format!("VM {} not running", g.vmid)));
            }
            let (node, vmid) = (g.node.clone(), g.vmid);
            let boot_ms = cx.sim.boot_ms();
            upid(cx.spawn_task(&mut st, cx.task(&node, "qmreboot", vmid), move |st, log| {
                let g = st.guests.get(&vmid).ok_or_else(|| missing(&node, GuestKind::Qemu, vmid))?;
                if g.state == PowerState::Stopped {
                    return Ok(());
                }
                g.check_lock()?;
                stop_now(st, vmid);
                start_now(st, vmid, boot_ms, log);
                Ok(())
            })?)
        },
    );

    r.post(
        "/nodes/{node}/qemu/{vmid}/status/suspend",
        vec![
            P::node(),
            P::vmid(),
            P::bool("skiplock").opt(),
            P::str("statestorage").opt().fmt(f::STORAGE_ID).requires("todisk"),
            P::bool("todisk").opt(),
        ],
        |cx, p| {
            let skip = skiplock(cx, p)?;
            let todisk = p.bool("todisk");
            let mut st = cx.write();
            let g = guest(&st, p, GuestKind::Qemu)?;
            let (node, vmid) = (g.node.clone(), g.vmid);
            if g.state == PowerState::Stopped {
                return Err(PveError::handler(format!("VM {vmid} not running")));
            }
            let mut statestorage = p.opt_str("statestorage").map(str::to_string);
            if todisk {
                if g.config.keys().any(|k| k.starts_with("hostpci")) {
                    return Err(PveError::handler(
                        "cannot suspend VM to disk due to passed-through PCI device(s), which lack the possibility to save/restore their internal state",
                    ));
                }
                if statestorage.is_none() {
                    statestorage = Some(vmstate_storage(g));
                }
            }
            let ty = if todisk { "qmsuspend" } else { "qmpause" };
            upid(cx.spawn_task(&mut st, cx.task(&node, ty, vmid), move |st, log| {
                let g = st.guests.get(&vmid).ok_or_else(|| missing(&node, GuestKind::Qemu, vmid))?;
                let backing_up = g.lock() == Some("backup");
                if !skip && (!backing_up || todisk) {
                    g.check_lock()?;
                }
                if backing_up && todisk {
                    return Err("cannot suspend to disk during backup".into());
                }
                if g.state == PowerState::Stopped {
                    return Err(format!("VM {vmid} not running"));
                }
                if !todisk {
                    if let Some(g) = st.guests.get_mut(&vmid) {
                        g.state = PowerState::Paused;
                    }
                    return Ok(());
                }
                let sid = statestorage.unwrap_or_else(|| "local-lvm".into());
                let size = g.maxmem() * 2 + 500 * MIB;
                let name = format!("vm-{vmid}-state-suspend-{}", chrono::Local::now().format("%Y-%m-%d"));
                let s = st.storage_mut(&node, &sid).map_err(|e| e.message())?;
                let volid = s.add_volume(&name, "images", "raw", size, size, Some(vmid), None)?;
                log.line(format!("saving VM state and RAM using storage '{sid}'"));
                let seed = st.seed;
                if let Some(g) = st.guests.get_mut(&vmid) {
                    g.set_stopped(seed, util::now_ms());
                    g.config.insert("vmstate".into(), volid);
                    g.config.insert("lock".into(), "suspended".into());
                    g.config.insert("runningmachine".into(), super::list::RUNNING_MACHINE.into());
                }
                Ok(())
            })?)
        },
    );

    r.post(
        "/nodes/{node}/qemu/{vmid}/status/resume",
        vec![P::node(), P::vmid(), P::bool("nocheck").opt(), P::bool("skiplock").opt()],
        |cx, p| {
            let skip = skiplock(cx, p)?;
            root_only(cx, p, &["nocheck"])?;
            let mut st = cx.write();
            let g = guest(&st, p, GuestKind::Qemu)?;
            let (node, vmid) = (g.node.clone(), g.vmid);
            let suspended = g.lock() == Some("suspended");
            if !suspended && g.state == PowerState::Stopped {
                return Err(PveError::handler(format!("VM {vmid} not running")));
            }
            let boot_ms = cx.sim.boot_ms();
            upid(cx.spawn_task(&mut st, cx.task(&node, "qmresume", vmid), move |st, log| {
                let g = st.guests.get(&vmid).ok_or_else(|| missing(&node, GuestKind::Qemu, vmid))?;
                if suspended {
                    if g.state != PowerState::Stopped {
                        return Err(format!("VM {vmid} already running"));
                    }
                    start_now(st, vmid, boot_ms, log);
                    return Ok(());
                }
                if g.is_template() {
                    return Err(format!("VM {vmid} is a template and cannot be resumed!"));
                }
                if g.state == PowerState::Running {
                    return Ok(());
                }
                if !skip && g.lock() != Some("backup") {
                    g.check_lock()?;
                }
                if g.state == PowerState::Stopped {
                    return Err(format!("VM {vmid} not running"));
                }
                if let Some(g) = st.guests.get_mut(&vmid) {
                    g.state = PowerState::Running;
                }
                Ok(())
            })?)
        },
    );
}

/// `find_vmstate_storage`: `vmstatestorage`, else the storage of the first disk.
fn vmstate_storage(g: &crate::model::Guest) -> String {
    if let Some(s) = g.config.get("vmstatestorage") {
        return s.clone();
    }
    super::common::referenced_volumes(GuestKind::Qemu, &g.config)
        .into_iter()
        .find(|(k, v)| k != "vmstate" && !super::common::is_cloudinit(v))
        .and_then(|(_, v)| v.split_once(':').map(|(s, _)| s.to_string()))
        .unwrap_or_else(|| "local-lvm".into())
}

fn missing(node: &str, kind: GuestKind, vmid: u32) -> String {
    format!("Configuration file '{}' does not exist", crate::model::config_path(node, kind, vmid))
}

fn lxc(r: &mut Routes) {
    r.post(
        "/nodes/{node}/lxc/{vmid}/status/start",
        vec![P::node(), P::vmid(), P::bool("debug").opt(), P::bool("skiplock").opt()],
        |cx, p| {
            let skip = skiplock(cx, p)?;
            let mut st = cx.write();
            let g = guest(&st, p, GuestKind::Lxc)?;
            let (node, vmid) = (g.node.clone(), g.vmid);
            if g.state != PowerState::Stopped {
                return Err(PveError::handler(format!("CT {vmid} already running")));
            }
            let boot_ms = cx.sim.boot_ms();
            upid(cx.spawn_task(&mut st, cx.task(&node, "vzstart", vmid), move |st, log| {
                let g = st.guests.get(&vmid).ok_or_else(|| missing(&node, GuestKind::Lxc, vmid))?;
                if g.is_template() {
                    return Err("you can't start a CT if it's a template".into());
                }
                if !skip && g.lock() != Some("mounted") {
                    g.check_lock()?;
                }
                if g.state != PowerState::Stopped {
                    return Err(format!("CT {vmid} already running"));
                }
                start_now(st, vmid, boot_ms, log);
                Ok(())
            })?)
        },
    );

    // stop, shutdown, reboot and suspend all refuse a stopped container up front.
    type Action = fn(&mut Cluster, u32, i64, &mut TaskLog) -> Result<(), String>;
    let actions: [(&'static str, &'static str, Vec<P>, Action); 4] = [
        (
            "/nodes/{node}/lxc/{vmid}/status/stop",
            "vzstop",
            vec![P::node(), P::vmid(), P::bool("overrule-shutdown").opt(), P::bool("skiplock").opt()],
            |st, vmid, _, _| {
                stop_now(st, vmid);
                Ok(())
            },
        ),
        (
            "/nodes/{node}/lxc/{vmid}/status/shutdown",
            "vzshutdown",
            vec![P::node(), P::vmid(), P::bool("forceStop").opt(), P::int("timeout").opt().min(0)],
            |st, vmid, _, _| {
                stop_now(st, vmid);
                Ok(())
            },
        ),
        (
            "/nodes/{node}/lxc/{vmid}/status/reboot",
            "vzreboot",
            vec![P::node(), P::vmid(), P::int("timeout").opt().min(0)],
            |st, vmid, boot_ms, log| {
                stop_now(st, vmid);
                start_now(st, vmid, boot_ms, log);
                Ok(())
            },
        ),
        ("/nodes/{node}/lxc/{vmid}/status/suspend", "vzsuspend", vec![P::node(), P::vmid()], |st, vmid, _, _| {
            // lxc-checkpoint -s dumps the container and stops it.
            stop_now(st, vmid);
            if let Some(g) = st.guests.get_mut(&vmid) {
                g.ext.insert("checkpoint".into(), json!(util::now()));
            }
            Ok(())
        }),
    ];
    for (path, ty, params, action) in actions {
        r.post(path, params, move |cx, p| {
            let skip = if p.has("skiplock") { skiplock(cx, p)? } else { false };
            let mut st = cx.write();
            let g = guest(&st, p, GuestKind::Lxc)?;
            let (node, vmid) = (g.node.clone(), g.vmid);
            if g.state == PowerState::Stopped {
                // pve-container's reboot says "VM" here.
                let label = if ty == "vzreboot" { "VM" } else { "CT" };
                return Err(PveError::handler(format!("{label} {vmid} not running")));
            }
            let boot_ms = cx.sim.boot_ms();
            upid(cx.spawn_task(&mut st, cx.task(&node, ty, vmid), move |st, log| {
                let g = st.guests.get(&vmid).ok_or_else(|| missing(&node, GuestKind::Lxc, vmid))?;
                if !skip {
                    g.check_lock()?;
                }
                if g.state == PowerState::Stopped {
                    return Ok(());
                }
                action(st, vmid, boot_ms, log)
            })?)
        });
    }

    r.post("/nodes/{node}/lxc/{vmid}/status/resume", vec![P::node(), P::vmid()], |cx, p| {
        let mut st = cx.write();
        let g = guest(&st, p, GuestKind::Lxc)?;
        let (node, vmid) = (g.node.clone(), g.vmid);
        if g.state != PowerState::Stopped {
            return Err(PveError::handler(format!("CT {vmid} already running")));
        }
        let boot_ms = cx.sim.boot_ms();
        upid(cx.spawn_task(&mut st, cx.task(&node, "vzresume", vmid), move |st, log| {
            let g = st.guests.get_mut(&vmid).ok_or_else(|| missing(&node, GuestKind::Lxc, vmid))?;
            if g.ext.remove("checkpoint").is_none() {
                return Err(format!(
                    "command 'lxc-checkpoint -n {vmid} -r --foreground -D /var/lib/vz/dump' failed: exit code 1"
                ));
            }
            start_now(st, vmid, boot_ms, log);
            Ok(())
        })?)
    });
}
