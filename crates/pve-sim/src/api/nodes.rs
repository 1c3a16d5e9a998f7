//! `/nodes`, `/nodes/{node}/status` (GET and the reboot/shutdown command) and
//! `/nodes/{node}/rrddata`.

use serde_json::json;

use super::resources::{node_cpu, node_mem_used, node_row, root_used};
use super::version;
use crate::error::PveError;
use crate::params::P;
use crate::router::{Reply, Routes};
use crate::rrd;
use crate::util;

const KERNEL_RELEASE: &str = "6.8.12-9-pve";
const KERNEL_VERSION: &str = "#1 SMP PREEMPT_DYNAMIC PMX 6.8.12-9 (2025-03-16T19:18Z)";

/// Registers the routes.
pub fn register(r: &mut Routes) {
    r.get_reply("/nodes", vec![], |cx, _| {
        let st = cx.read();
        let now_ms = util::now_ms();
        let fp = cx.sim.fingerprint.as_deref();
        let rows: Vec<_> = st.nodes.values().map(|n| node_row(&cx.sim, &st, n, now_ms, fp)).collect();
        Reply::json(&rows)
    });

    r.get("/nodes/{node}/status", vec![P::node()], |cx, p| {
        let st = cx.read();
        let n = st.node(p.node()?)?;
        let now_ms = util::now_ms();
        let used = node_mem_used(&st, &n.name, now_ms);
        let cpu = node_cpu(&st, n, now_ms);
        let load = cpu * n.maxcpu as f64;
        let swap_used = (n.swap_total as f64 * 0.02) as u64;
        let rootused = root_used(n);
        Ok(json!({
            "uptime": (now_ms / 1000 - n.boot_time).max(0),
            "cpu": cpu,
            "wait": 0.0012,
            "idle": 0,
            "loadavg": [format!("{:.2}", load), format!("{:.2}", load * 0.9), format!("{:.2}", load * 0.8)],
            "kversion": format!("Linux {KERNEL_RELEASE} {KERNEL_VERSION}"),
            "current-kernel": {"sysname": "Linux", "release": KERNEL_RELEASE, "version": KERNEL_VERSION, "machine": "x86_64"},
            "cpuinfo": {"model": n.cpu_model, "cpus": n.maxcpu, "cores": n.maxcpu, "sockets": 1, "mhz": "3000.000", "hvm": "1", "user_hz": 100, "flags": "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl nonstop_tsc cpuid extd_apicid aperfmperf rapl pni pclmulqdq monitor ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt aes xsave avx f16c rdrand lahf_lm cmp_legacy svm extapic cr8_legacy abm sse4a misalignsse 3dnowprefetch osvw ibs skinit wdt tce topoext perfctr_core perfctr_nb bpext perfctr_llc mwaitx cpb cat_l3 cdp_l3 hw_pstate ssbd mba ibrs ibpb stibp vmmcall fsgsbase bmi1 avx2 smep bmi2 cqm rdt_a rdseed adx smap clflushopt clwb sha_ni xsaveopt xsavec xgetbv1 xsaves cqm_llc cqm_occup_llc cqm_mbm_total cqm_mbm_local clzero irperf xsaveerptr rdpru wbnoinvd amd_ppin arat npt lbrv svm_lock nrip_save tsc_scale vmcb_clean flushbyasid decodeassists pausefilter pfthreshold avic v_vmsave_vmload vgif v_spec_ctrl umip rdpid overflow_recov succor smca sev sev_es"},
            "memory": {"total": n.maxmem, "used": used, "free": n.maxmem - used},
            "swap": {"total": n.swap_total, "used": swap_used, "free": n.swap_total - swap_used},
            "rootfs": {"total": n.rootfs_total, "used": rootused, "free": n.rootfs_total - rootused, "avail": n.rootfs_total - rootused},
            "ksm": {"shared": 0},
            "pveversion": format!("pve-manager/{}/{}", version::VERSION, version::REPOID),
            "boot-info": {"mode": "efi", "secureboot": 0},
        }))
    });

    r.post("/nodes/{node}/status", vec![P::node(), P::str("command").en(&["reboot", "shutdown"])], |cx, p| {
        let node = p.node()?.to_string();
        let mut st = cx.write();
        let n = st.node_mut(&node)?;
        match p.str("command")? {
            // A reboot is instant here: the node comes back with a new boot time.
            "reboot" => n.boot_time = util::now(),
            _ => cx.sim.faults.set_node_down(&node, true),
        }
        Ok(json!(null))
    });

    r.get(
        "/nodes/{node}/rrddata",
        vec![
            P::node(),
            P::str("timeframe").en(&["hour", "day", "week", "month", "year"]),
            P::str("cf").opt().en(&["AVERAGE", "MAX"]),
        ],
        |cx, p| {
            let st = cx.read();
            let node = p.node()?;
            let n = st.nodes.get(node).ok_or_else(|| PveError::handler(format!("no such cluster node '{node}'")))?;
            let tf = rrd::Timeframe::parse(p.str("timeframe")?).ok_or_else(|| PveError::handler("bad timeframe"))?;
            let max = p.opt_str("cf") == Some("MAX");
            let used = node_mem_used(&st, node, util::now_ms());
            let online = cx.sim.node_online(node);
            Ok(json!(rrd::node(st.seed, n, used, tf, max, util::now(), online)))
        },
    )
    .local();
}
