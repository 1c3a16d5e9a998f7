//! qemu and LXC guest endpoints (`/nodes/{node}/qemu/...`, `/nodes/{node}/lxc/...`).

use crate::router::Routes;

/// Registers the guest routes.
pub fn register(_r: &mut Routes) {}
