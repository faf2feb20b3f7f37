//! The lock protocol: an operation's keys are sorted and taken one by one (`SET NX PX`
//! semantics), retried with jitter, refreshed before every commit write, and released by
//! compare-and-delete. [`MemoryLocks`] is the single-instance lock table.

mod leases;
mod memory;
mod protocol;

pub(crate) use leases::Leases;
pub use memory::MemoryLocks;
pub(crate) use protocol::{Held, changed_underneath};
