//! Domain events from Postgres to their sinks (DESIGN §11):
//!
//! ```text
//!  events table ──relay──► Redis stream `{prefix}events` ──group `webhooks`──► deliveries ──► receivers
//!  (same tx as the change)                               └─group `notifications`─► feed + `notify` jobs ──► SMTP
//! ```
//!
//! * [`relay`]: moves events not relayed yet onto the stream (woken by `NOTIFY`, polling too),
//!   and trims the stream below what every group has acknowledged.
//! * [`consumer`]: one consumer group's loop: read, hand to its sink, acknowledge; entries a
//!   crashed consumer held are taken over (`XAUTOCLAIM`), so a crash loses nothing.
//! * [`sinks`]: what each group does with a batch. Each writes rows unique per event (a delivery per
//!   endpoint and event, a feed entry and an email per user and event), so an event handled twice
//!   (a crash between the sink's commit and the acknowledgement, a relay that pushed twice) sends
//!   nothing twice.

pub mod consumer;
pub mod relay;
pub mod sinks;

/// The stream's key under the Redis key prefix.
pub fn stream_key(key_prefix: &str) -> String {
    format!("{key_prefix}events")
}

/// The consumer groups reading the stream.
pub const GROUPS: &[&str] = &[sinks::WEBHOOKS, sinks::NOTIFICATIONS];
