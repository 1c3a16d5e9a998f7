//! `nimbus-worker`: the processes that run Nimbus's jobs (DESIGN §2-§3).
//!
//! ```text
//!  Postgres outbox ──relay──► Redis stream `provision` ──► pool (apalis, N at once)
//!        ▲                                                   │ claim in the ledger (lease)
//!        │ retry due / lease recovered                        ▼
//!  job ledger ◄──── progress, complete, fail ──── provision step machine ──► Proxmox
//!                                                    (node permits in Redis)
//! ```
//!
//! * [`provision_vm`]: the provision job (one file per job kind).
//! * [`node_caps`]: per-node concurrency caps shared by every worker process.
//! * [`pve_rate`]: the cap on Proxmox API requests per second shared by every worker process.
//! * [`retry`]: backoff with jitter for the ledger's retries.
//! * [`relay`]: the outbox relay and its sweep for lost dispatches; [`recovery`]: the lease
//!   recovery tick.
//! * [`env`]: what handlers share; [`config`]: the environment variables; [`runtime`]: the
//!   wiring `main.rs` runs.

pub mod config;
pub mod env;
pub mod node_caps;
pub mod provision_vm;
pub mod pve_rate;
pub mod recovery;
pub mod relay;
pub mod retry;
pub mod runtime;

pub use env::{Env, Settings};
