//! The call observer: an optional hook told of every HTTP request to PVE once its answer's
//! status is known (or that none came), for metrics.
//!
//! Paths are reported as templates (`/nodes/{node}/qemu/{vmid}/status/current`), so a metric
//! labelled by path has one series per kind of call, not one per guest.

use std::fmt;
use std::time::Duration;

use reqwest::Method;

/// One request as the observer sees it.
#[derive(Clone, Copy, Debug)]
pub struct ObservedCall<'a> {
    pub method: &'a Method,
    /// The path's template (see [`path_template`]).
    pub path: &'a str,
    /// The HTTP status; `None` when no answer came (refused, reset, timed out, TLS).
    pub status: Option<u16>,
    /// From sending to the answer's headers (or to the failure).
    pub elapsed: Duration,
}

/// Told of every request. Called concurrently from every clone of a client; must not block.
pub trait CallObserver: fmt::Debug + Send + Sync + 'static {
    fn observe(&self, call: &ObservedCall<'_>);
}

/// The segments after which PVE paths carry a value, and the name of that value.
const PARAMETERS: &[(&str, &str)] = &[
    ("nodes", "{node}"),
    ("qemu", "{vmid}"),
    ("lxc", "{vmid}"),
    ("tasks", "{upid}"),
    ("snapshot", "{snapname}"),
    ("storage", "{storage}"),
    ("content", "{volume}"),
    ("pools", "{poolid}"),
    ("users", "{userid}"),
    ("token", "{tokenid}"),
    ("ha", "{section}"),
];

/// `path` with the values PVE's API paths carry replaced by their names, e.g.
/// `/nodes/pve1/qemu/101/snapshot/before-upgrade/rollback` →
/// `/nodes/{node}/qemu/{vmid}/snapshot/{snapname}/rollback`. The query string is dropped.
pub fn path_template(path: &str) -> String {
    let path = path.split('?').next().unwrap_or_default();
    let mut out = String::with_capacity(path.len());
    let mut parameter: Option<&str> = None;
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        match parameter.take() {
            Some(name) => out.push_str(name),
            None => {
                out.push_str(segment);
                parameter = PARAMETERS.iter().find(|(after, _)| *after == segment).map(|(_, name)| *name);
            }
        }
    }
    if out.is_empty() { "/".to_owned() } else { out }
}

#[cfg(test)]
mod tests {
    use super::path_template;

    #[test]
    fn values_become_their_names() {
        assert_eq!(path_template("/nodes/pve1/qemu/101/status/current"), "/nodes/{node}/qemu/{vmid}/status/current");
        assert_eq!(
            path_template("/nodes/pve2/lxc/7001/snapshot/pre-upgrade/rollback"),
            "/nodes/{node}/lxc/{vmid}/snapshot/{snapname}/rollback"
        );
        assert_eq!(
            path_template("/nodes/pve1/tasks/UPID:pve1:0001:0002:0003:qmstart:101:root@pam:/status"),
            "/nodes/{node}/tasks/{upid}/status"
        );
        assert_eq!(
            path_template("/nodes/pve1/storage/local/content/local%3Abackup%2Fvzdump-qemu-101.vma.zst"),
            "/nodes/{node}/storage/{storage}/content/{volume}"
        );
        assert_eq!(path_template("/cluster/resources?type=vm"), "/cluster/resources");
        assert_eq!(path_template("/nodes"), "/nodes");
        assert_eq!(path_template("/nodes/pve1/qemu"), "/nodes/{node}/qemu");
        assert_eq!(path_template("/version"), "/version");
    }
}
