//! `nimbus-worker`: the processes that run Nimbus's jobs (DESIGN §2-§3).
//!
//! ```text
//!  Postgres outbox ──relay──► Redis stream per queue ──► pool per queue (apalis, N at once)
//!        ▲                                                   │ claim in the ledger (lease)
//!        │ retry due / lease recovered                        ▼
//!  job ledger ◄──── progress, complete, fail ──── job's step machine ──► Proxmox
//!                                                    (node permits in Redis)
//! ```
//!
//! * [`step_machine`]: what every job shares (claim, lease, resume, permits, record, settle).
//! * One file per job: [`provision_vm`] (and [`rebuild`] on the same machine), [`power`],
//!   [`resize`], [`delete`] (also the cleanup of a failed provision), [`snapshot`], [`backup`];
//!   [`guest_ops`]: the Proxmox calls they share.
//! * [`node_caps`]: per-node concurrency caps shared by every worker process.
//! * [`pve_rate`]: the cap on Proxmox API requests per second shared by every worker process.
//! * [`retry`]: backoff with jitter for the ledger's retries.
//! * [`reconciler`]: instance statuses follow what Proxmox reports.
//! * [`scheduler`]: cron schedules fire exactly once across replicas (DESIGN §9).
//! * [`relay`]: the outbox relay and its sweep for lost dispatches; [`recovery`]: the lease
//!   recovery tick.
//! * [`events`]: domain events relayed to a Redis stream and read by consumer groups;
//!   [`webhook_delivery`]: signed webhook deliveries through the SSRF guard, with retries;
//!   [`notify`]: the `notify` queue's emails.
//! * [`env`]: what handlers share; [`config`]: the environment variables; [`runtime`]: the
//!   wiring `main.rs` runs.

pub mod backup;
pub mod billing;
pub mod config;
pub mod delete;
pub mod env;
pub mod events;
pub mod guest_ops;
pub mod metrics;
pub mod node_caps;
pub mod notify;
pub mod power;
pub mod provision_vm;
pub mod pve_rate;
pub mod rebuild;
pub mod reconciler;
pub mod recovery;
pub mod relay;
pub mod resize;
pub mod retry;
pub mod runtime;
pub mod scheduler;
pub mod snapshot;
pub mod step_machine;
pub mod webhook_delivery;

pub use env::{Env, Settings};
