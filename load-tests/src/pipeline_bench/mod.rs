//! Pieces of `pipeline-bench`: the services it runs on and the ledgered run.

pub mod ledgered;
pub mod services;
