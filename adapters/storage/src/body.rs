//! Where a streamed request body comes from.

use std::future::Future;

use bytes::Bytes;
use stowage_core::step::BodyError;

/// A request body, read chunk by chunk. `None` marks its end.
pub trait BodySource: Send {
    fn next_chunk(&mut self) -> impl Future<Output = Option<Result<Bytes, BodyError>>> + Send;

    /// How many bytes the body declared it will send, before any is read (its
    /// `Content-Length`), if it declared a length: S3 streams such a body part by part as it
    /// arrives (`s3_streamed_writer.rs`).
    fn declared_len(&self) -> Option<u64> {
        None
    }
}

/// No body at all: for callers that never stream one.
impl BodySource for () {
    async fn next_chunk(&mut self) -> Option<Result<Bytes, BodyError>> {
        None
    }
}
