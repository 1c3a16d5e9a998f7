//! The cluster a simulator starts with when no state file exists: nodes pve1..pveN with their
//! storages, cloud-init VM templates, LXC template archives and ISO images, all deterministic
//! for a given seed. Also the deterministic MAC/UUID generators the guest code reuses.

use std::collections::BTreeMap;

use serde_json::json;

use super::guest::{Config, Guest, GuestKind};
use super::storage::{self, Storage};
use super::{ApiToken, Cluster, Node, User};
use crate::tasks::TaskList;
use crate::util::{self, GIB, MIB};

/// A MAC address with Proxmox's OUI `BC:24:11`, deterministic for seed and parts.
pub fn mac(seed: u64, parts: &[&[u8]]) -> String {
    let h = util::hash_parts(seed, parts);
    format!("BC:24:11:{:02X}:{:02X}:{:02X}", (h >> 16) as u8, (h >> 8) as u8, h as u8)
}

/// The MAC of NIC `idx` of guest `vmid` (stable across restarts for the same seed).
pub fn guest_mac(seed: u64, vmid: u32, idx: u32) -> String {
    mac(seed, &[b"mac", &vmid.to_be_bytes(), &idx.to_be_bytes()])
}

/// A version-4-shaped UUID, deterministic for seed and parts.
pub fn uuid(seed: u64, parts: &[&[u8]]) -> String {
    let a = util::hash_parts(seed, parts);
    let b = util::hash_parts(seed ^ 0x5555, parts);
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        (a >> 32) as u32,
        (a >> 16) as u16,
        (a as u16) & 0x0fff,
        ((b >> 48) as u16 & 0x3fff) | 0x8000,
        b & 0xffff_ffff_ffff
    )
}

/// Seeded ISO images and container templates: (volume name, size).
pub const ISOS: &[(&str, u64)] =
    &[("iso/debian-12.9.0-amd64-netinst.iso", 632 * MIB), ("iso/ubuntu-24.04.2-live-server-amd64.iso", 3 * GIB)];
/// Seeded LXC template archives.
pub const CT_TEMPLATES: &[(&str, u64)] = &[
    ("vztmpl/debian-12-standard_12.7-1_amd64.tar.zst", 120 * MIB),
    ("vztmpl/ubuntu-24.04-standard_24.04-2_amd64.tar.zst", 141 * MIB),
];
/// Seeded cloud-init templates per node: (name, disk size, ostype).
pub const VM_TEMPLATES: &[(&str, u64)] = &[("debian-12-cloudinit", 3 * GIB), ("ubuntu-24.04-cloudinit", 3584 * MIB)];

/// The VMID of template `t` on node index `i` (0-based): 9000, 9001 on pve1; 9010, 9011 on pve2...
pub fn template_vmid(node_index: usize, t: usize) -> u32 {
    9000 + (node_index as u32) * 10 + t as u32
}

/// A node's interfaces as `GET /nodes/{node}/network` lists them (PVE never lists the loopback `lo`).
fn node_network(ip: &str) -> Vec<serde_json::Value> {
    vec![
        json!({"iface": "eno1", "type": "eth", "families": ["inet"], "method": "manual", "method6": "manual", "exists": 1, "active": 1, "priority": 2}),
        json!({
            "iface": "vmbr0", "type": "bridge", "families": ["inet"], "method": "static", "method6": "manual",
            "address": ip, "netmask": "24", "cidr": format!("{ip}/24"), "gateway": "10.10.10.1",
            "bridge_ports": "eno1", "bridge_stp": "off", "bridge_fd": "0", "autostart": 1, "active": 1, "priority": 3
        }),
    ]
}

/// Builds the initial cluster.
pub fn build(nodes: usize, seed: u64, root_password: &str, tokens: &[(String, String)]) -> Cluster {
    let now = util::now();
    let mut c = Cluster {
        cluster_name: "pve-sim".into(),
        seed,
        nodes: BTreeMap::new(),
        guests: BTreeMap::new(),
        pools: BTreeMap::new(),
        users: BTreeMap::new(),
        tokens: BTreeMap::new(),
        auth_key: hex::encode(util::hash_parts(seed ^ now as u64, &[b"auth-key"]).to_be_bytes())
            + &hex::encode(util::hash_parts(now as u64, &[b"auth-key-2"]).to_be_bytes()),
        tasks: TaskList::default(),
        last_pid: 1000 + (util::hash_parts(seed, &[b"pid"]) % 5000) as u32,
    };
    c.users.insert("root@pam".into(), User { enable: true, expire: 0, password: root_password.into() });
    for (id, secret) in tokens {
        let user = id.split('!').next().unwrap_or(id).to_string();
        c.users.entry(user).or_insert(User { enable: true, expire: 0, password: String::new() });
        c.tokens.insert(id.clone(), ApiToken { secret: secret.clone(), comment: None, expire: 0, privsep: false });
    }
    for i in 0..nodes {
        let name = format!("pve{}", i + 1);
        let ip = format!("10.10.10.{}", 11 + i);
        let mut local = Storage::local(storage::LOCAL_TOTAL);
        for (vol, size) in ISOS.iter().chain(CT_TEMPLATES) {
            let content = if vol.starts_with("iso/") { "iso" } else { "vztmpl" };
            let format = if content == "iso" { "iso" } else { "tzst" };
            local.add_volume(vol, content, format, *size, *size, None, None).expect("seed fits");
        }
        let mut lvm = Storage::local_lvm(storage::LOCAL_LVM_TOTAL);
        let boot_time = now - 86_400 * (3 + (util::hash_parts(seed, &[name.as_bytes()]) % 20) as i64);
        let mut templates = Vec::new();
        for (t, (tname, size)) in VM_TEMPLATES.iter().enumerate() {
            let vmid = template_vmid(i, t);
            let disk = lvm
                .add_volume(&format!("base-{vmid}-disk-0"), "images", "raw", *size, *size / 2, Some(vmid), None)
                .expect("seed fits");
            let ci = lvm
                .add_volume(&format!("vm-{vmid}-cloudinit"), "images", "raw", 4 * MIB, 4 * MIB, Some(vmid), None)
                .expect("seed fits");
            let vid = vmid.to_be_bytes();
            let mut cfg = Config::new();
            for (k, v) in [
                ("agent", "1".to_string()),
                ("boot", "order=scsi0".into()),
                ("cores", "2".into()),
                ("cpu", "x86-64-v2-AES".into()),
                ("ide2", format!("{ci},media=cdrom")),
                ("ipconfig0", "ip=dhcp".into()),
                ("memory", "2048".into()),
                ("meta", format!("creation-qemu=9.2.0,ctime={}", boot_time + 3600)),
                ("name", (*tname).to_string()),
                ("net0", format!("virtio={},bridge=vmbr0,firewall=1", guest_mac(seed, vmid, 0))),
                ("ostype", "l26".into()),
                ("scsi0", format!("{disk},size={}", util::format_size(*size))),
                ("scsihw", "virtio-scsi-single".into()),
                ("serial0", "socket".into()),
                ("smbios1", format!("uuid={}", uuid(seed, &[b"smbios", &vid]))),
                ("template", "1".into()),
                ("vga", "serial0".into()),
                ("vmgenid", uuid(seed, &[b"vmgenid", &vid])),
            ] {
                cfg.insert(k.to_string(), v);
            }
            templates.push(Guest::new(vmid, GuestKind::Qemu, &name, cfg));
        }
        for g in templates {
            c.guests.insert(g.vmid, g);
        }
        let mut storages = BTreeMap::new();
        storages.insert(local.id.clone(), local);
        storages.insert(lvm.id.clone(), lvm);
        c.nodes.insert(
            name.clone(),
            Node {
                name: name.clone(),
                nodeid: i as u32 + 1,
                network: node_network(&ip),
                ip,
                maxcpu: 16,
                maxmem: 64 * GIB,
                swap_total: 8 * GIB,
                rootfs_total: storage::LOCAL_TOTAL,
                cpu_model: "AMD EPYC 7302P 16-Core Processor".into(),
                boot_time,
                storages,
            },
        );
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_is_deterministic_and_complete() {
        let a = build(3, 42, "pw", &[]);
        let b = build(3, 42, "pw", &[]);
        assert_eq!(a.nodes.len(), 3);
        assert_eq!(a.guests.len(), 6);
        let t = &a.guests[&9010];
        assert_eq!(t.node, "pve2");
        assert!(t.is_template());
        assert_eq!(t.config["name"], "debian-12-cloudinit");
        assert_eq!(t.config, b.guests[&9010].config);
        assert!(t.config["net0"].starts_with("virtio=BC:24:11:"));
        let local = &a.nodes["pve1"].storages["local"];
        assert!(local.volumes.contains_key("local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"));
        assert_ne!(guest_mac(1, 100, 0), guest_mac(2, 100, 0));
        assert_eq!(uuid(1, &[b"x"]).len(), 36);
    }
}
