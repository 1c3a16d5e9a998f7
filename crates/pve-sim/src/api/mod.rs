//! The non-guest API endpoints, and `routes()`: the complete route table of the simulator.

pub mod access;
pub mod cluster;
pub mod network;
pub mod nodes;
pub mod pools;
pub mod prune;
pub mod resources;
pub mod sim_faults;
pub mod storage;
pub mod tasks;
pub mod version;
pub mod vzdump;

use crate::router::Routes;

/// Every route the simulator answers.
pub fn routes() -> Routes {
    let mut r = Routes::default();
    version::register(&mut r);
    access::register(&mut r);
    cluster::register(&mut r);
    nodes::register(&mut r);
    network::register(&mut r);
    storage::register(&mut r);
    tasks::register(&mut r);
    pools::register(&mut r);
    vzdump::register(&mut r);
    prune::register(&mut r);
    crate::guests::register(&mut r);
    r
}
