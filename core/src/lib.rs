//! Stowage's registry logic, free of IO.
//!
//! A request becomes an [`Operation`](op::Operation): the driver asks it for its next
//! [`Step`](step::Step) (a storage, lock or cache request, a request-body read, a sleep, an
//! event for webhooks, or the final response), performs it, and feeds the [`Outcome`](step::Outcome) back. Time and
//! randomness arrive as inputs, so every run is repeatable.
#![forbid(unsafe_code)]

pub mod access;
pub mod cache;
pub mod config;
pub mod digest;
pub mod error;
pub mod events;
pub mod gc;
pub mod layout;
pub mod lock;
pub mod manifest;
pub mod mirror;
pub mod names;
pub mod op;
pub mod purge;
pub mod range;
pub mod repositories;
pub mod retention;
pub mod route;
pub mod step;
pub mod time;
pub mod upload;

mod rng;

mod handlers;
mod response;

pub use config::Limits;
pub use handlers::{Registry, RequestHead};
pub use response::{ReportError, read_report, stored_object_gone, unavailable};
pub use rng::Entropy;
