//! `GET /version`.

use serde_json::json;

use crate::router::Routes;

/// The PVE release the simulator answers as.
pub const RELEASE: &str = "8.4";
/// The full pve-manager version.
pub const VERSION: &str = "8.4.1";
/// The pve-manager repository id of that version.
pub const REPOID: &str = "2a5fa54a8503f96d";

/// Registers the routes.
pub fn register(r: &mut Routes) {
    r.get("/version", vec![], |_, _| {
        Ok(json!({"version": VERSION, "release": RELEASE, "repoid": REPOID, "console": "xtermjs"}))
    });
}
