//! Where a streamed request body comes from.

use std::future::Future;

use bytes::Bytes;
use stowage_core::step::BodyError;

/// A request body, read chunk by chunk. `None` marks its end.
pub trait BodySource: Send {
    fn next_chunk(&mut self) -> impl Future<Output = Option<Result<Bytes, BodyError>>> + Send;
}

/// No body at all: for callers that never stream one.
impl BodySource for () {
    async fn next_chunk(&mut self) -> Option<Result<Bytes, BodyError>> {
        None
    }
}
