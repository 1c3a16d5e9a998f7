//! qemu and LXC guest endpoints (`/nodes/{node}/qemu/...`, `/nodes/{node}/lxc/...`): lists and
//! status, create and restore, clone, config and pending changes, power actions, destroy,
//! resize, templates, snapshots, cloud-init, guest agent and interfaces, consoles (vncproxy,
//! termproxy, vncwebsocket with RFB), firewall, rrddata and migration.

pub mod agent;
pub mod clone;
pub mod cloudinit;
pub mod common;
pub mod config;
pub mod console;
pub mod create_lxc;
pub mod create_qemu;
pub mod delete;
pub mod disks;
pub mod firewall;
pub mod formats;
pub mod list;
pub mod lxc_params;
pub mod migrate;
pub mod power;
pub mod qemu_params;
pub mod resize;
pub mod restore;
pub mod rfb;
pub mod rrd;
pub mod snapshots;
pub mod template;

use crate::router::Routes;

/// Registers the guest routes.
pub fn register(r: &mut Routes) {
    list::register(r);
    create_qemu::register(r);
    create_lxc::register(r);
    config::register(r);
    cloudinit::register(r);
    power::register(r);
    delete::register(r);
    clone::register(r);
    resize::register(r);
    template::register(r);
    snapshots::register(r);
    agent::register(r);
    console::register(r);
    firewall::register(r);
    rrd::register(r);
    migrate::register(r);
}
