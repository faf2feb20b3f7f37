//! Blob reads and deletes.

use bytes::Bytes;
use http::StatusCode;

use super::ctx::keys;
use super::fence::{self, Named, Watch};
use super::{Ctx, RequestHead};
use crate::digest::Digest;
use crate::error::{ErrorCode, RegistryError};
use crate::layout;
use crate::names::RepoName;
use crate::range::{ByteRange, Span};
use crate::response::Reply;
use crate::step::{Body, Response, StoreRole};

/// Blobs up to this size are kept in the cache whole, so image configs and the other small
/// blobs every pull fetches are served without a storage request (on S3, a round trip
/// each). A digest's bytes never change, so such an entry needs no invalidation: whether
/// the blob still belongs to the repository is checked first, as for every blob.
const CACHED_BLOB_MAX_BYTES: u64 = 64 * 1024;

fn blob_unknown(digest: &Digest) -> RegistryError {
    RegistryError::new(ErrorCode::BlobUnknown, format!("blob {digest} is unknown"))
}

/// The whole of a small blob of `size` bytes, from the cache when it can be.
async fn small_blob(
    ctx: &Ctx,
    name: &RepoName,
    digest: &Digest,
    size: u64,
) -> Result<Bytes, RegistryError> {
    let cache_key = keys::blob_data_cache(digest);
    if let Some(Some(bytes)) = ctx.cache_get(cache_key.clone()).await
        && bytes.len() as u64 == size
    {
        return Ok(bytes);
    }
    let Some(bytes) = ctx
        .read(StoreRole::Blobs, layout::blob_data(digest))
        .await?
    else {
        // The size came from a cache entry filled before the collector deleted the bytes
        // under a link its fence refused: forgotten, so the next read (a mirror's refetch
        // among them) asks storage. A larger blob's driver does the same when it opens the
        // bytes (`Body::Stored::cached_as`).
        ctx.cache_forget(keys::blob_cache(name, digest)).await;
        return Err(blob_unknown(digest));
    };
    if bytes.len() as u64 != size {
        return Err(RegistryError::new(
            ErrorCode::Unavailable,
            format!("blob {digest} changed size while it was read"),
        ));
    }
    ctx.cache_fill(cache_key, bytes.clone()).await;
    Ok(bytes)
}

/// A blob's size as the cache keeps it under [`keys::blob_cache`]: decimal text, read back
/// by [`size_in_repo`].
pub(super) fn size_entry(size: u64) -> Bytes {
    Bytes::from(size.to_string())
}

/// Links `digest` (of `size` bytes, stored) into `name` while `held` (the blob's lock) still
/// holds, and records it in the cache over any tombstone a delete left there: the first
/// pull after a push or a mirror's fetch then needs no storage request to find it.
/// `watched` is the collector's state read before the blob was found or stored: the link is
/// confirmed against it ([`fence`]), so a blob the collector deletes meanwhile is answered
/// 503, not acknowledged.
pub(super) async fn link_into(
    ctx: &Ctx,
    held: &mut crate::lock::Held,
    watched: Watch,
    name: &RepoName,
    digest: &Digest,
    size: u64,
) -> Result<(), RegistryError> {
    ctx.ensure(held).await?;
    let link = layout::layer_link(name, digest);
    ctx.create(StoreRole::Meta, link.clone(), layout::link_content(digest))
        .await?;
    let cache_key = keys::blob_cache(name, digest);
    let named = Named {
        store: StoreRole::Blobs,
        digest,
        link,
    };
    if let Err(refused) = fence::confirm(ctx, watched, &[named]).await {
        // The link stays (another push may rely on it) while its bytes may go: reads check
        // the bytes too, and the next collection removes the link. The cache forgets the
        // blob, so no replica answers from it what storage may no longer hold.
        ctx.cache_forget(cache_key).await;
        return Err(refused);
    }
    ctx.cache_record(cache_key, Some(size_entry(size))).await
}

/// The size of a blob that belongs to `name`, from the cache when it can be.
pub(super) async fn size_in_repo(
    ctx: &Ctx,
    name: &RepoName,
    digest: &Digest,
) -> Result<Option<u64>, RegistryError> {
    let cache_key = keys::blob_cache(name, digest);
    match ctx.cache_get(cache_key.clone()).await {
        Some(None) => return Ok(None),
        Some(Some(size)) => {
            if let Some(size) = std::str::from_utf8(&size).ok().and_then(|s| s.parse().ok()) {
                return Ok(Some(size));
            }
        }
        None => {}
    }
    if !ctx
        .exists(StoreRole::Meta, layout::layer_link(name, digest))
        .await?
    {
        return Ok(None);
    }
    let size = ctx
        .stat(StoreRole::Blobs, layout::blob_data(digest))
        .await?;
    if let Some(size) = size {
        ctx.cache_fill(cache_key, size_entry(size)).await;
    }
    Ok(size)
}

/// A blob's answer before its length and body: the same whether it comes from the store or
/// streams from a mirror's upstream.
fn found(digest: &Digest) -> Reply {
    Reply::new(StatusCode::OK)
        .digest(digest)
        .content_type("application/octet-stream")
        .header("accept-ranges", "bytes")
}

/// The headers of blob `digest`'s answer when a mirror may stream it to the client as it is
/// fetched: a whole-blob GET; a HEAD or a range is answered from the store once it is there.
pub(super) fn streamed_headers(
    head: &RequestHead,
    digest: &Digest,
    only_head: bool,
) -> Option<http::HeaderMap> {
    let whole = !only_head && head.header("range").is_none();
    whole.then(|| found(digest).done().headers)
}

pub(super) async fn get(
    ctx: &Ctx,
    head: &RequestHead,
    name: &RepoName,
    digest: &Digest,
    only_head: bool,
) -> Result<Response, RegistryError> {
    let size = size_in_repo(ctx, name, digest)
        .await?
        .ok_or_else(|| blob_unknown(digest))?;
    let reply = found(digest);
    // A malformed Range is ignored (RFC 9110 14.2); an unsatisfiable one is refused.
    let range = head.header("range").and_then(|r| ByteRange::parse(r).ok());
    let (reply, span) = match range {
        None => (
            reply,
            Span {
                start: 0,
                len: size,
            },
        ),
        Some(range) => match range.resolve(size) {
            Some(span) => {
                let content_range = format!("bytes {}-{}/{size}", span.start, span.last());
                let mut reply = reply.header("content-range", content_range);
                reply = reply.status(StatusCode::PARTIAL_CONTENT);
                (reply, span)
            }
            None => {
                return Ok(Reply::new(StatusCode::RANGE_NOT_SATISFIABLE)
                    .header("content-range", format!("bytes */{size}"))
                    .done());
            }
        },
    };
    let reply = if only_head || span.len == 0 {
        reply.length(span.len)
    } else if size <= CACHED_BLOB_MAX_BYTES {
        let bytes = small_blob(ctx, name, digest, size).await?;
        // Within `size`: `resolve` keeps every span inside the blob.
        let (start, end) = (span.start as usize, (span.start + span.len) as usize);
        reply.body(Body::Bytes(bytes.slice(start..end)), span.len)
    } else {
        let body = Body::Stored {
            store: StoreRole::Blobs,
            key: layout::blob_data(digest),
            span,
            cached_as: keys::blob_cache(name, digest),
        };
        reply.body(body, span.len)
    };
    Ok(reply.done())
}

pub(super) async fn delete(
    ctx: &Ctx,
    name: &RepoName,
    digest: &Digest,
) -> Result<Response, RegistryError> {
    let lock = vec![keys::blob_lock(name, digest)];
    let unlinked = ctx
        .locked(lock, async |held| unlink(ctx, held, name, digest).await)
        .await?;
    if !unlinked {
        return Err(blob_unknown(digest));
    }
    Ok(Reply::new(StatusCode::ACCEPTED).digest(digest).done())
}

/// Removes `digest` from `name` while `held` (the blob's lock) holds; `false` when it was
/// not there.
pub(crate) async fn unlink(
    ctx: &Ctx,
    held: &mut crate::lock::Held,
    name: &RepoName,
    digest: &Digest,
) -> Result<bool, RegistryError> {
    let link = layout::layer_link(name, digest);
    if !ctx.exists(StoreRole::Meta, link.clone()).await? {
        return Ok(false);
    }
    ctx.ensure(held).await?;
    ctx.delete(StoreRole::Meta, link).await?;
    ctx.cache_record(keys::blob_cache(name, digest), None)
        .await?;
    Ok(true)
}
