//! nimbus-worker against real services: a fresh Postgres database and a Redis key space per test
//! (nimbus-testkit) and an in-process pve-sim cluster with fault injection.

mod backup;
mod billing;
mod crash;
mod ladder;
mod lxc;
mod metrics;
mod node_caps;
mod notify;
mod provision;
mod pve_rate;
mod relay;
mod restore;
mod scheduler;
mod support;
mod webhooks;
