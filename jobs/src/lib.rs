//! `nimbus-jobs`: the contract between the API and the workers (DESIGN §2, §7).
//!
//! * [`queues`]: the stable queue names and the one place their Redis settings are made.
//! * [`payload`]: what travels: the Redis message ([`Dispatch`], only a ledger job id, its kind
//!   and queue) and each job kind's ledger payload ([`ProvisionVm`]).
//! * [`operations`]: the payloads of the operations on existing instances (power, resize,
//!   rebuild, delete, snapshots).
//! * [`dispatch`]: pushing messages to nimbus-queue ([`Queues`], [`dispatch()`]).
//! * [`events`]: wake-ups for the streams that follow jobs and instances (Redis pub/sub;
//!   Postgres stays the truth).
//! * [`ledger`]: group commit for a worker's claims and completions ([`LedgerWriter`]).
//! * [`clock`]: the injected time of schedules (and billing periods).
//! * [`schedule`]: when schedules fire: cron expressions and the missed-fire policies.
//! * [`templates`]: the naming rule of templates, so API and workers mean the same thing.
//!
//! The ledger (nimbus-db's `jobs`) is the source of truth: a Redis message only says "job X may
//! be due"; the worker claims X in the ledger and reads its input from there, so a duplicate or
//! stale message has no effect.

pub mod clock;
pub mod dispatch;
pub mod events;
pub mod ledger;
pub mod operations;
pub mod payload;
pub mod queues;
pub mod schedule;
pub mod templates;

pub use clock::{Clock, ManualClock, SystemClock};
pub use dispatch::{DispatchError, Queues, dispatch};
pub use events::{EventPublisher, FeedWakeups, InstanceWakeups, JobEventPublisher, JobWakeups};
pub use ledger::LedgerWriter;
pub use operations::{
    BackupInstance, BackupOp, DeleteInstance, PowerAction, RebuildInstance, ResizeInstance, Sizes, SnapshotAction,
    SnapshotOp,
};
pub use payload::{BillingRun, Dispatch, ProvisionVm};
pub use templates::vztmpl_name;
