//! Pieces of `pipeline-bench`: the services it runs on, the ledger batcher, and the ledgered run.

pub mod batcher;
pub mod ledgered;
pub mod services;
