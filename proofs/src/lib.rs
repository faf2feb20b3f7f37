//! Proofs about `stowage-core`: property checks (one per fuzz target, see [`props`]), a
//! model of the registry's contents, and a simulated cluster ([`sim`]) that interleaves
//! several replicas' operations over one in-memory world while injecting faults.
//!
//! Everything runs in one thread with time and randomness as inputs, so every failure
//! replays from its input or seed.
#![forbid(unsafe_code)]

pub mod actor;
pub mod fixtures;
pub mod grammar;
pub mod integrity;
pub mod props;
pub mod request;
pub mod rng;
pub mod sim;
pub mod store;
pub mod upstream;
pub mod world;
