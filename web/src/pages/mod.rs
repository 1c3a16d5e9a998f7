//! One module per page.

pub mod admin_nodes;
pub mod admin_queues;
pub mod create;
pub mod dashboard;
pub mod instance;
pub mod instances;
pub mod job;
pub mod keys;
pub mod signin;
