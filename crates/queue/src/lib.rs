//! nimbus-queue: job dispatch on Redis Streams, as an apalis 1.0 backend.
//!
//! Each queue is a stream `nimbus:q:{name}` read by one consumer group. Producers push jobs with
//! the id they choose (the ledger's job id) in pipelined `XADD`s; workers read with
//! `XREADGROUP COUNT n BLOCK ms` on a dedicated connection, run the handler through apalis'
//! `WorkerBuilder`, and acknowledge in batches with `XACK` + `XDEL`, so finished jobs leave Redis.
//! A failed attempt is re-added through the delayed set `nimbus:q:{name}:delayed` with
//! exponential backoff and jitter, keeping its job id, until `max_attempts`; then it goes to the
//! dead stream `nimbus:dead:{name}` with its last error. Entries of a worker that died are taken
//! over by a peer after `claim_min_idle` (`XAUTOCLAIM`); long jobs renew their claim so they are
//! not stolen. A graceful shutdown stops fetching, finishes what runs, hands unstarted entries
//! back and flushes acknowledgements.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use apalis::prelude::*;
//! use nimbus_queue::{Queue, QueueConfig, StreamsBackend};
//!
//! let queue = Queue::connect("redis://127.0.0.1:6379", QueueConfig::new("provision")).await?;
//! queue.push("job-1", &42u32).await?;
//! async fn handle(n: u32, id: TaskId, attempt: Attempt) -> Result<(), BoxDynError> {
//!     Ok(())
//! }
//! WorkerBuilder::new("provisioner")
//!     .backend(StreamsBackend::<u32>::new(queue))
//!     .concurrency(50)
//!     .build(handle)
//!     .run()
//!     .await?;
//! # Ok(()) }
//! ```

mod backend;
mod backoff;
mod config;
mod entry;
mod error;
mod queue;
mod scripts;
mod worker;

pub use backend::{AckLayer, AckService, StreamsBackend, run_at_after};
pub use backoff::Backoff;
pub use config::QueueConfig;
pub use entry::DeadJob;
pub use error::{Error, Result};
pub use queue::{Horizon, NewJob, Queue, QueueStats, connection_config};
