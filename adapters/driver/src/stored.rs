//! A stored response body, opened before its answer's head goes out, so that an object
//! found gone can still change the answer.

use bytes::Bytes;
use futures_util::Stream;
use stowage_core::range::Span;
use stowage_core::step::{CacheRequest, Response, StoreRole};

use crate::{Io, now};

/// Opens the `span` of `key` for an answer's body. An object found gone (the collector took
/// bytes the cache entry `cached_as` still vouched for) makes the cache forget that entry,
/// so the next request asks storage and a mirror fetches the blob again, and answers the
/// core's 404 instead; any other failure answers 503.
pub async fn open_stored(
    io: &Io,
    store: StoreRole,
    key: &str,
    span: Span,
    cached_as: String,
) -> Result<impl Stream<Item = std::io::Result<Bytes>> + Send + use<>, Response> {
    match io.stores.read_span(store, key, span).await {
        Ok(stream) => Ok(stream),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!(key, "a blob's bytes are gone: its cache entry is forgotten");
            // Only a shortcut: if the removal fails, the entry lives out its TTL.
            let forget = CacheRequest::Remove { key: cached_as };
            let _ = io.cache.apply(forget, now()).await;
            Err(stowage_core::stored_object_gone())
        }
        Err(e) => {
            tracing::error!(key, error = %e, "opening a blob for reading failed");
            Err(stowage_core::unavailable(
                "the stored blob could not be read",
            ))
        }
    }
}
