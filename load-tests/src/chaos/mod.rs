//! The chaos soak (`chaos-soak`): a steady stream of creates against a whole stack while a seeded
//! fault driver breaks its parts, then an accounting of every request that was answered 202.

pub mod audit;
pub mod faults;
pub mod load;
pub mod rng;
