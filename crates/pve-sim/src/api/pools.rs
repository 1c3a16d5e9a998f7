//! Resource pools: `GET/POST/PUT/DELETE /pools` (the PVE 8 forms) and the deprecated
//! `/pools/{poolid}` ones, with guest and storage membership.

use serde_json::{Value, json};

use super::resources::guest_row;
use crate::error::{PveError, PveResult};
use crate::model::{Cluster, Pool};
use crate::params::{P, Params, f, split_list};
use crate::router::Routes;
use crate::sim::Ctx;
use crate::util;

const TYPES: &[&str] = &["qemu", "lxc", "storage"];

/// Registers the routes.
pub fn register(r: &mut Routes) {
    r.get(
        "/pools",
        vec![P::str("poolid").opt().fmt(f::POOLID), P::str("type").opt().en(TYPES).requires("poolid")],
        |cx, p| {
            let st = cx.read();
            if let Some(id) = p.opt_str("poolid") {
                let pool = st.pools.get(id).ok_or_else(|| no_pool(id))?;
                let mut row = pool_json(id, pool);
                row["members"] = members(cx, &st, pool, p.opt_str("type"));
                return Ok(json!([row]));
            }
            Ok(Value::Array(st.pools.iter().map(|(id, pool)| pool_json(id, pool)).collect()))
        },
    );
    r.post("/pools", vec![P::str("poolid").fmt(f::POOLID), P::str("comment").opt()], |cx, p| {
        let id = p.str("poolid")?;
        let mut st = cx.write();
        if st.pools.contains_key(id) {
            return Err(PveError::handler(format!("pool '{id}' already exists")));
        }
        st.pools.insert(id.to_string(), Pool { comment: p.opt_str("comment").map(str::to_string), ..Pool::default() });
        Ok(json!(null))
    });
    let update_params = || {
        vec![
            P::str("poolid").fmt(f::POOLID),
            P::bool("allow-move").opt(),
            P::str("comment").opt(),
            P::bool("delete").opt(),
            P::str("storage").opt().fmt(f::STORAGE_ID_LIST),
            P::str("vms").opt().fmt(f::VMID_LIST),
        ]
    };
    r.put("/pools", update_params(), update);
    r.put("/pools/{poolid}", update_params(), update);
    r.delete("/pools", vec![P::str("poolid").fmt(f::POOLID)], delete);
    r.delete("/pools/{poolid}", vec![P::str("poolid").fmt(f::POOLID)], delete);
    r.get("/pools/{poolid}", vec![P::str("poolid").fmt(f::POOLID), P::str("type").opt().en(TYPES)], |cx, p| {
        let st = cx.read();
        let id = p.str("poolid")?;
        let pool = st.pools.get(id).ok_or_else(|| no_pool(id))?;
        let mut out = json!({"members": members(cx, &st, pool, p.opt_str("type"))});
        if let Some(c) = &pool.comment {
            out["comment"] = json!(c);
        }
        Ok(out)
    });
}

fn no_pool(id: &str) -> PveError {
    PveError::handler(format!("pool '{id}' does not exist"))
}

fn pool_json(id: &str, pool: &Pool) -> Value {
    let mut v = json!({"poolid": id});
    if let Some(c) = &pool.comment {
        v["comment"] = json!(c);
    }
    v
}

fn members(cx: &Ctx, st: &Cluster, pool: &Pool, filter: Option<&str>) -> Value {
    let now_ms = util::now_ms();
    let mut out = Vec::new();
    for vmid in &pool.vms {
        if let Some(g) = st.guests.get(vmid)
            && filter.is_none_or(|f| f == g.kind.as_str())
        {
            out.push(json!(guest_row(st.seed, g, now_ms, cx.sim.node_online(&g.node))));
        }
    }
    if filter.is_none_or(|f| f == "storage") {
        for sid in &pool.storage {
            for n in st.nodes.values() {
                if let Some(s) = n.storages.get(sid) {
                    out.push(json!(super::resources::storage_row(&n.name, s, cx.sim.node_online(&n.name))));
                }
            }
        }
    }
    Value::Array(out)
}

fn update(cx: &Ctx, p: &Params) -> PveResult<Value> {
    let id = p.str("poolid")?.to_string();
    let delete = p.bool("delete");
    let allow_move = p.bool("allow-move");
    let mut st = cx.write();
    if !st.pools.contains_key(&id) {
        return Err(no_pool(&id));
    }
    if let Some(c) = p.opt_str("comment")
        && let Some(pool) = st.pools.get_mut(&id)
    {
        pool.comment = Some(c.to_string());
    }
    for vmid in split_list(p.opt_str("vms").unwrap_or("")) {
        let vmid: u32 = vmid
            .parse()
            .map_err(|_| PveError::param("vms", "invalid format - value does not look like a valid VM ID\n"))?;
        let current =
            st.guests.get(&vmid).ok_or_else(|| PveError::handler(format!("no such VMID '{vmid}'")))?.pool.clone();
        if delete {
            if current.as_deref() == Some(id.as_str()) {
                set_member(&mut st, vmid, None);
            }
            continue;
        }
        match current {
            Some(other) if other == id => {}
            Some(other) if !allow_move => {
                return Err(PveError::handler(format!(
                    "VM {vmid} belongs already to pool '{other}' and allow-move is not set"
                )));
            }
            _ => set_member(&mut st, vmid, Some(&id)),
        }
    }
    for sid in split_list(p.opt_str("storage").unwrap_or("")) {
        if !st.nodes.values().any(|n| n.storages.contains_key(sid)) {
            return Err(PveError::handler(format!("no such storage '{sid}'")));
        }
        let pool = st.pools.get_mut(&id).ok_or_else(|| no_pool(&id))?;
        if delete {
            pool.storage.remove(sid);
        } else {
            pool.storage.insert(sid.to_string());
        }
    }
    Ok(json!(null))
}

/// Moves a guest into `pool` (or out of every pool), keeping both sides in sync.
pub fn set_member(st: &mut Cluster, vmid: u32, pool: Option<&str>) {
    let Some(g) = st.guests.get_mut(&vmid) else { return };
    if let Some(old) = g.pool.take()
        && let Some(p) = st.pools.get_mut(&old)
    {
        p.vms.remove(&vmid);
    }
    if let Some(new) = pool
        && let Some(p) = st.pools.get_mut(new)
    {
        p.vms.insert(vmid);
        g.pool = Some(new.to_string());
    }
}

fn delete(cx: &Ctx, p: &Params) -> PveResult<Value> {
    let id = p.str("poolid")?;
    let mut st = cx.write();
    let pool = st.pools.get(id).ok_or_else(|| no_pool(id))?;
    if !pool.vms.is_empty() || !pool.storage.is_empty() {
        return Err(PveError::handler(format!("pool '{id}' is not empty")));
    }
    st.pools.remove(id);
    Ok(json!(null))
}
