//! An upstream response's body as the storage adapter reads a request body.

use bytes::Bytes;
use stowage_core::step::BodyError;
use stowage_storage::BodySource;

pub(crate) struct ResponseBody(pub(crate) reqwest::Response);

impl BodySource for ResponseBody {
    async fn next_chunk(&mut self) -> Option<Result<Bytes, BodyError>> {
        match self.0.chunk().await {
            Ok(Some(chunk)) => Some(Ok(chunk)),
            Ok(None) => None,
            Err(e) => Some(Err(BodyError::Client(format!(
                "the upstream's body broke off: {e}"
            )))),
        }
    }

    fn declared_len(&self) -> Option<u64> {
        self.0.content_length()
    }
}
