//! The error type of the queue layer.

/// What can go wrong talking to the queue.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Redis refused the command or the connection failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A payload could not be serialised.
    #[error("payload encoding: {0}")]
    Encode(#[from] serde_json::Error),
    /// Redis answered with a shape this crate does not expect.
    #[error("unexpected reply: {0}")]
    Protocol(String),
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
