//! `/cluster/*`: resources, nextid, tasks and status.

use serde_json::{Value, json};

use super::resources::{guest_row, node_row, storage_row};
use crate::error::PveError;
use crate::params::P;
use crate::router::{Reply, Routes};
use crate::util;

/// The default `next-id` range of datacenter.cfg: [100, 1,000,000).
pub const NEXTID_LOWER: u32 = 100;
pub const NEXTID_UPPER: u32 = 1_000_000;

/// Tasks `/cluster/tasks` lists at most (PVE keeps a short cluster-wide list).
const CLUSTER_TASKS: usize = 500;

/// Registers the routes.
pub fn register(r: &mut Routes) {
    r.get("/cluster/nextid", vec![P::vmid().opt()], |cx, p| {
        let st = cx.read();
        if let Some(vmid) = p.opt_u32("vmid") {
            if st.guests.contains_key(&vmid) {
                return Err(PveError::param("vmid", format!("VM {vmid} already exists")));
            }
            return Ok(json!(vmid.to_string()));
        }
        // Guests are keyed by vmid in order: the first gap at or above the lower bound.
        let mut candidate = NEXTID_LOWER;
        for &id in st.guests.range(NEXTID_LOWER..NEXTID_UPPER).map(|(id, _)| id) {
            if id != candidate {
                break;
            }
            candidate += 1;
        }
        if candidate >= NEXTID_UPPER {
            return Err(PveError::handler(format!(
                "unable to get any free VMID in range [{NEXTID_LOWER}, {NEXTID_UPPER}]"
            )));
        }
        Ok(json!(candidate.to_string()))
    });

    r.get_reply("/cluster/resources", vec![P::str("type").opt().en(&["vm", "storage", "node", "sdn"])], |cx, p| {
        let filter = p.opt_str("type");
        let st = cx.read();
        let now_ms = util::now_ms();
        let fp = cx.sim.fingerprint.clone();
        let mut out: Vec<u8> = Vec::with_capacity(256 * (st.guests.len() + 16));
        out.push(b'[');
        let mut first = true;
        let mut push = |out: &mut Vec<u8>, row: &dyn erased::Ser| -> Result<(), PveError> {
            if !first {
                out.push(b',');
            }
            first = false;
            row.write(out)
        };
        if matches!(filter, None | Some("vm")) {
            for g in st.guests.values() {
                let online = cx.sim.node_online(&g.node);
                push(&mut out, &guest_row(st.seed, g, now_ms, online))?;
            }
        }
        if matches!(filter, None | Some("node")) {
            for n in st.nodes.values() {
                push(&mut out, &node_row(&cx.sim, &st, n, now_ms, fp.as_deref()))?;
            }
        }
        if matches!(filter, None | Some("storage")) {
            for n in st.nodes.values() {
                let online = cx.sim.node_online(&n.name);
                for s in n.storages.values() {
                    push(&mut out, &storage_row(&n.name, s, online))?;
                }
            }
        }
        if filter.is_none() {
            for id in st.pools.keys() {
                push(&mut out, &json!({"id": format!("/pool/{id}"), "type": "pool", "pool": id}))?;
            }
        }
        out.push(b']');
        Ok(Reply::Json { json: out, total: None })
    });

    r.get("/cluster/tasks", vec![], |cx, _| {
        let st = cx.read();
        let user = cx.user();
        let mut rows: Vec<&crate::tasks::Task> = st.tasks.iter().rev().filter(|t| t.visible_to(&user)).collect();
        rows.truncate(CLUSTER_TASKS);
        rows.sort_by_key(|t| std::cmp::Reverse(t.starttime));
        Ok(Value::Array(rows.into_iter().map(|t| t.list_json()).collect()))
    });

    r.get("/cluster/status", vec![], |cx, _| {
        let st = cx.read();
        let online = st.nodes.keys().filter(|n| cx.sim.node_online(n)).count();
        let mut rows = vec![json!({
            "type": "cluster", "id": "cluster", "name": st.cluster_name, "nodes": st.nodes.len(),
            "quorate": u8::from(online * 2 > st.nodes.len()), "version": st.nodes.len() + 2
        })];
        for (i, n) in st.nodes.values().enumerate() {
            rows.push(json!({
                "type": "node", "id": format!("node/{}", n.name), "name": n.name, "nodeid": n.nodeid,
                "ip": n.ip, "online": u8::from(cx.sim.node_online(&n.name)), "local": u8::from(i == 0), "level": ""
            }));
        }
        Ok(Value::Array(rows))
    });
}

/// Streaming serialisation of heterogeneous rows into one buffer.
mod erased {
    use crate::error::PveError;

    pub trait Ser {
        fn write(&self, out: &mut Vec<u8>) -> Result<(), PveError>;
    }

    impl<T: serde::Serialize> Ser for T {
        fn write(&self, out: &mut Vec<u8>) -> Result<(), PveError> {
            serde_json::to_writer(out, self).map_err(|e| PveError::handler(e.to_string()))
        }
    }
}
