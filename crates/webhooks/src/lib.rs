//! `nimbus-webhooks`: what a webhook delivery must get right, apart from where it is stored
//! (DESIGN §11).
//!
//! * [`signing`]: secrets (`whsec_…`) and Standard Webhooks v1 signatures.
//! * [`guard`]: the SSRF guard: which addresses a delivery may connect to, checked on the address
//!   actually connected to (a resolver inside the HTTP client), with an operator allow-list.
//! * [`schedule`]: when a failed delivery is tried again.

pub mod guard;
pub mod schedule;
pub mod signing;

pub use guard::{AllowList, Guard, Refusal};
pub use schedule::{Outcome, next_attempt_delay};
pub use signing::{Secret, sign};
