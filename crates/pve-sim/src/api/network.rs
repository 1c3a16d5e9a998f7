//! `/nodes/{node}/network`: list interfaces, create one (pending until applied), apply
//! (`PUT`, task `srvreload`) and revert (`DELETE`).

use serde_json::{Map, Value, json};

use crate::error::PveError;
use crate::params::{P, f};
use crate::router::Routes;

const TYPES: &[&str] =
    &["bridge", "bond", "eth", "alias", "vlan", "OVSBridge", "OVSBond", "OVSPort", "OVSIntPort", "vnet", "unknown"];

/// Registers the routes.
pub fn register(r: &mut Routes) {
    r.get(
        "/nodes/{node}/network",
        vec![
            P::node(),
            P::str("type").opt().en(&[
                "bridge",
                "bond",
                "eth",
                "alias",
                "vlan",
                "OVSBridge",
                "OVSBond",
                "OVSPort",
                "OVSIntPort",
                "vnet",
                "any_bridge",
                "any_local_bridge",
            ]),
        ],
        |cx, p| {
            let st = cx.read();
            let n = st.node(p.node()?)?;
            let filter = p.opt_str("type");
            let rows = n
                .network
                .iter()
                .filter(|i| {
                    let ty = i["type"].as_str().unwrap_or("");
                    match filter {
                        None => true,
                        Some("any_bridge") | Some("any_local_bridge") => ty == "bridge" || ty == "OVSBridge",
                        Some(f) => ty == f,
                    }
                })
                .cloned()
                .collect();
            Ok(Value::Array(rows))
        },
    );
    r.post(
        "/nodes/{node}/network",
        vec![
            P::node(),
            P::str("address").opt().fmt(f::IPV4).requires("netmask"),
            P::str("address6").opt().fmt(f::IPV6).requires("netmask6"),
            P::bool("autostart").opt(),
            P::str("bond-primary").opt().fmt(f::IFACE),
            P::str("bond_mode").opt().en(&[
                "balance-rr",
                "active-backup",
                "balance-xor",
                "broadcast",
                "802.3ad",
                "balance-tlb",
                "balance-alb",
                "balance-slb",
                "lacp-balance-slb",
                "lacp-balance-tcp",
            ]),
            P::str("bond_xmit_hash_policy").opt().en(&["layer2", "layer2+3", "layer3+4"]),
            P::str("bridge_ports").opt().fmt(f::IFACE_LIST),
            P::str("bridge_vids").opt(),
            P::bool("bridge_vlan_aware").opt(),
            P::str("cidr").opt().fmt(f::CIDRV4),
            P::str("cidr6").opt().fmt(f::CIDRV6),
            P::str("comments").opt(),
            P::str("comments6").opt(),
            P::str("gateway").opt().fmt(f::IPV4),
            P::str("gateway6").opt().fmt(f::IPV6),
            P::str("iface").fmt(f::IFACE).max_len(20).min_len(2),
            P::int("mtu").opt().range(1280, 65520),
            P::str("netmask").opt().fmt(f::IPV4MASK).requires("address"),
            P::int("netmask6").opt().range(0, 128).requires("address6"),
            P::str("ovs_bonds").opt().fmt(f::IFACE_LIST),
            P::str("ovs_bridge").opt().fmt(f::IFACE),
            P::str("ovs_options").opt().max_len(1024),
            P::str("ovs_ports").opt().fmt(f::IFACE_LIST),
            P::int("ovs_tag").opt().range(1, 4094),
            P::str("slaves").opt().fmt(f::IFACE_LIST),
            P::str("type").en(TYPES),
            P::int("vlan-id").opt().range(1, 4094),
            P::str("vlan-raw-device").opt().fmt(f::IFACE),
        ],
        |cx, p| {
            let node = p.node()?.to_string();
            let iface = p.str("iface")?.to_string();
            let mut st = cx.write();
            let n = st.node_mut(&node)?;
            if n.network.iter().any(|i| i["iface"] == iface.as_str()) {
                return Err(PveError::handler(format!("interface '{iface}' already exists")));
            }
            let mut m = Map::new();
            for (k, v) in p.iter() {
                if k != "node" {
                    m.insert(k.to_string(), json!(v));
                }
            }
            m.insert("families".into(), json!(["inet"]));
            m.insert("pending".into(), json!(1));
            m.insert("active".into(), json!(0));
            n.network.push(Value::Object(m));
            Ok(json!(null))
        },
    );
    r.put("/nodes/{node}/network", vec![P::node()], |cx, p| {
        let node = p.node()?.to_string();
        let mut st = cx.write();
        let spec = cx.task(&node, "srvreload", "networking");
        let n2 = node.clone();
        let upid = cx.spawn_task(&mut st, spec, move |st, log| {
            let n = st.node_mut(&n2).map_err(|e| e.message())?;
            for i in n.network.iter_mut() {
                if let Some(m) = i.as_object_mut() {
                    m.remove("pending");
                    m.insert("active".into(), json!(1));
                }
            }
            log.line("reloading network config");
            Ok(())
        })?;
        Ok(json!(upid))
    });
    r.delete("/nodes/{node}/network", vec![P::node()], |cx, p| {
        let node = p.node()?.to_string();
        let mut st = cx.write();
        st.node_mut(&node)?.network.retain(|i| i.get("pending").is_none());
        Ok(json!(null))
    });
}
