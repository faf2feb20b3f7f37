//! The storage contract's test suite: the rules of [`StorageRequest`] (see
//! `core/src/step.rs`) as executable cases, written once and run against every
//! [`Target`]: the filesystem backend, the S3 backend on each S3 server the test command
//! starts, and the in-memory model (`proofs/src/store.rs`) the simulation and the property
//! tests run on. The proofs prove the model; this suite holds the model to the product.
//!
//! A backend is described by its [`Capabilities`] (whether it has versions, whether it writes
//! in place); a case checks what the contract promises under those capabilities, and, where
//! the contract says a backend cannot do something, that it refuses rather than pretends.
//! Every case runs on a fresh, empty target; [`run`] runs them all and fails once, naming
//! every case that broke (as CNCF Distribution's driver suite does for its drivers).

mod body;
mod cases;
mod s3_server;
mod targets;

use std::future::Future;

use bytes::Bytes;
use stowage_core::range::Span;
use stowage_core::step::{Outcome, StorageRequest};

pub use body::TestBody;
pub use s3_server::{S3Endpoint, S3Server};
pub use targets::{Model, RealStore};

/// What a backend can do, where the contract lets backends differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Reads report versions and [`stowage_core::step::WriteCondition::IfVersion`] is
    /// checked (S3); otherwise reads report none and only create-new is checked.
    pub versions: bool,
    /// [`StorageRequest::WriteBodyAt`] works (the filesystem); otherwise it fails.
    pub in_place: bool,
    /// A folder whose objects were deleted one by one is still listed, empty, until a
    /// `DeleteAll` removes it (the filesystem); otherwise it is gone with its last object.
    pub lists_emptied_folders: bool,
    /// A concatenation of one whole piece (a move) onto an existing object is refused. Every
    /// backend does so, where its server honours the condition (the S3 backend probes it
    /// and sends it only then): moto 5.2 ignores `If-None-Match` on CopyObject and replaces
    /// the object (see [`S3Endpoint`]).
    pub create_new_moves: bool,
}

/// Something that performs storage requests: a backend or the model.
pub trait Target {
    fn capabilities(&self) -> Capabilities;

    /// Performs `request`, streaming `body` for the requests that take one.
    fn perform(&mut self, request: StorageRequest, body: TestBody)
    -> impl Future<Output = Outcome>;

    /// The bytes of `span` of a stored object, as a response body streams them
    /// ([`stowage_core::step::Body::Stored`]); `Err` when they are not all there.
    fn read_span(&mut self, key: &str, span: Span) -> impl Future<Output = Result<Bytes, String>>;
}

/// Runs every case, each on a fresh target from `fresh` (given the case's name), and panics
/// naming each case that failed and why.
pub async fn run<T: Target>(backend: &str, mut fresh: impl AsyncFnMut(&str) -> T) {
    let mut failures = Vec::new();
    macro_rules! cases {
        ($($case:ident),* $(,)?) => {$(
            let mut target = fresh(stringify!($case)).await;
            if let Err(why) = cases::$case(&mut target).await {
                failures.push(format!("{}: {why}", stringify!($case)));
            }
        )*};
    }
    cases!(
        missing_keys,
        write_read_stat,
        inspect_tells_when_written,
        create_new,
        if_version,
        write_body,
        interrupted_body_leaves_nothing,
        refused_body_leaves_nothing,
        interrupted_body_keeps_the_old_object,
        large_declared_body,
        large_undeclared_body,
        undeclared_body_of_whole_parts,
        large_bodies_interrupted,
        large_declared_body_refused,
        write_body_at,
        interrupted_write_body_at,
        concat,
        concat_refuses_an_existing_target,
        concat_of_one_whole_piece,
        concat_of_nothing,
        concat_of_a_missing_piece,
        concat_of_large_pieces,
        hash_stored,
        ranged_reads,
        list_children,
        list_many,
        emptied_folders,
        delete,
        delete_all,
    );
    assert!(
        failures.is_empty(),
        "{backend} breaks the storage contract:\n  {}",
        failures.join("\n  ")
    );
}
