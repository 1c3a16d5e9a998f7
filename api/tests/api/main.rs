//! nimbus-api over real services: a fresh Postgres database and a Redis key space per test
//! (nimbus-testkit), an in-process pve-sim, and the router served on a free port.

mod admin;
mod auth_and_errors;
mod bootstrap;
mod health;
mod jobs;
mod support;
mod vms;
