//! Pieces of `queue-bench`: a private Redis, the BullMQ anchor, and our dispatch layer's scenarios.

pub mod bullmq;
pub mod ours;
pub mod redis_server;
