//! Blob uploads: start (plain, monolithic, mount), chunks, status, completion, cancel.

use http::StatusCode;

use super::ctx::keys;
use super::response::{DOCKER_UPLOAD_UUID, Reply};
use super::{Ctx, RequestHead};
use crate::digest::{Digest, Hasher};
use crate::error::{ErrorCode, RegistryError};
use crate::layout;
use crate::lock::Held;
use crate::names::RepoName;
use crate::range::ChunkRange;
use crate::route::UploadId;
use crate::step::{BodyError, BodyTap, Response, Store, TapError};
use crate::upload::UploadRecord;

fn upload_location(name: &RepoName, id: &UploadId) -> String {
    format!("/v2/{name}/blobs/uploads/{}", id.as_str())
}

fn blob_location(name: &RepoName, digest: &Digest) -> String {
    format!("/v2/{name}/blobs/{digest}")
}

/// The answer to a completed upload or mount.
fn created(name: &RepoName, digest: &Digest) -> Response {
    Reply::new(StatusCode::CREATED)
        .location(blob_location(name, digest))
        .digest(digest)
        .done()
}

/// The answer while an upload is open: where to continue and what was received.
fn in_progress(
    status: StatusCode,
    name: &RepoName,
    id: &UploadId,
    record: &UploadRecord,
) -> Response {
    Reply::new(status)
        .location(upload_location(name, id))
        .header("range", record.range_header())
        .header(DOCKER_UPLOAD_UUID, id.as_str())
        .done()
}

/// Maps a refused body to the client's error.
fn body_error(error: BodyError) -> RegistryError {
    let code = match &error {
        BodyError::Refused(TapError::DigestMismatch { .. }) => ErrorCode::DigestInvalid,
        BodyError::Refused(_) | BodyError::TooLarge { .. } => ErrorCode::SizeInvalid,
        BodyError::Client(_) => ErrorCode::BlobUploadInvalid,
        BodyError::Storage(_) => ErrorCode::Unavailable,
    };
    RegistryError::new(code, error.to_string())
}

/// Records `digest` as part of `name`, under the blob's lock, and clears any tombstone a
/// delete left in the cache.
async fn link(
    ctx: &Ctx,
    held: &mut Held,
    name: &RepoName,
    digest: &Digest,
) -> Result<(), RegistryError> {
    ctx.ensure(held).await?;
    ctx.write(
        Store::Meta,
        layout::layer_link(name, digest),
        layout::link_content(digest),
    )
    .await?;
    ctx.cache_delete(vec![keys::blob_cache(name, digest)]).await
}

async fn link_locked(ctx: &Ctx, name: &RepoName, digest: &Digest) -> Result<(), RegistryError> {
    ctx.locked(vec![keys::blob_lock(name, digest)], async |held| {
        link(ctx, held, name, digest).await
    })
    .await
}

pub(super) async fn start(
    ctx: &Ctx,
    head: &RequestHead,
    name: &RepoName,
    digest: Option<Digest>,
    mount: Option<Digest>,
    from: Option<RepoName>,
) -> Result<Response, RegistryError> {
    if let Some(mount) = mount
        && mountable(ctx, &mount, from.as_ref()).await?
    {
        link_locked(ctx, name, &mount).await?;
        return Ok(created(name, &mount));
    }
    if let Some(digest) = digest {
        return monolithic(ctx, head, name, &digest).await;
    }
    let id = UploadId::parse(&ctx.fresh_id())
        .ok_or_else(|| RegistryError::new(ErrorCode::Unavailable, "generated a bad upload id"))?;
    let record = UploadRecord::new(ctx.channel.now());
    save(ctx, name, &id, &record).await?;
    Ok(in_progress(StatusCode::ACCEPTED, name, &id, &record))
}

/// Whether a mount of `digest` can be served: from `from` when named (the blob must belong
/// to it), else from anywhere in the registry.
async fn mountable(
    ctx: &Ctx,
    digest: &Digest,
    from: Option<&RepoName>,
) -> Result<bool, RegistryError> {
    if let Some(from) = from
        && !ctx
            .exists(Store::Meta, layout::layer_link(from, digest))
            .await?
    {
        return Ok(false);
    }
    ctx.exists(Store::Blobs, layout::blob_data(digest)).await
}

/// `POST ?digest=` with the whole blob: the bytes go straight to their content address,
/// where they appear only if they hash to the digest.
async fn monolithic(
    ctx: &Ctx,
    head: &RequestHead,
    name: &RepoName,
    digest: &Digest,
) -> Result<Response, RegistryError> {
    let tap = BodyTap::new(
        Hasher::new(digest.algorithm()),
        head.content_length(),
        Some(digest.clone()),
    );
    let (_, error) = ctx
        .write_body(Store::Blobs, layout::blob_data(digest), tap)
        .await?;
    if let Some(error) = error {
        return Err(body_error(error));
    }
    link_locked(ctx, name, digest).await?;
    Ok(created(name, digest))
}

async fn load(ctx: &Ctx, name: &RepoName, id: &UploadId) -> Result<UploadRecord, RegistryError> {
    let unknown = || RegistryError::new(ErrorCode::BlobUploadUnknown, "upload is unknown");
    let bytes = ctx
        .read(Store::Blobs, layout::upload_record(name, id))
        .await?
        .ok_or_else(unknown)?;
    serde_json::from_slice(&bytes).map_err(|_| unknown())
}

async fn save(
    ctx: &Ctx,
    name: &RepoName,
    id: &UploadId,
    record: &UploadRecord,
) -> Result<(), RegistryError> {
    let json = serde_json::to_vec(record)
        .map_err(|e| RegistryError::new(ErrorCode::Unavailable, e.to_string()))?;
    ctx.write(Store::Blobs, layout::upload_record(name, id), json)
        .await
}

/// Stores the request body as the upload's next part and advances `record` (in memory).
/// A `Content-Range` that does not start at the current offset is refused with 416.
async fn accept_chunk(
    ctx: &Ctx,
    head: &RequestHead,
    name: &RepoName,
    id: &UploadId,
    record: &mut UploadRecord,
) -> Result<(), RegistryError> {
    let exact_len = match head.header("content-range") {
        Some(header) => {
            let range = ChunkRange::parse(header).map_err(|_| {
                RegistryError::new(
                    ErrorCode::RangeInvalid,
                    format!("malformed Content-Range {header:?}"),
                )
            })?;
            if range.first != record.offset {
                return Err(RegistryError::new(
                    ErrorCode::RangeInvalid,
                    format!(
                        "chunk starts at {}, upload is at {}",
                        range.first, record.offset
                    ),
                ));
            }
            Some(range.byte_count())
        }
        None => head.content_length(),
    };
    let hasher = record
        .hasher()
        .map_err(|e| RegistryError::new(ErrorCode::BlobUploadInvalid, e.to_string()))?;
    let part = layout::upload_part(name, id, record.offset);
    let tap = BodyTap::new(hasher, exact_len, None);
    let (tap, error) = ctx.write_body(Store::Blobs, part.clone(), tap).await?;
    if let Some(error) = error {
        return Err(body_error(error));
    }
    if tap.received() == 0 {
        ctx.delete(Store::Blobs, part).await?;
    } else {
        record.append(tap.received(), tap.hasher());
    }
    Ok(())
}

pub(super) async fn patch(
    ctx: &Ctx,
    head: &RequestHead,
    name: &RepoName,
    id: &UploadId,
) -> Result<Response, RegistryError> {
    ctx.locked(vec![keys::upload_lock(id)], async |held| {
        let mut record = load(ctx, name, id).await?;
        if let Err(e) = accept_chunk(ctx, head, name, id, &mut record).await {
            if e.code == ErrorCode::RangeInvalid {
                return Ok(in_progress(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    name,
                    id,
                    &record,
                ));
            }
            return Err(e);
        }
        ctx.ensure(held).await?;
        save(ctx, name, id, &record).await?;
        Ok(in_progress(StatusCode::ACCEPTED, name, id, &record))
    })
    .await
}

pub(super) async fn finish(
    ctx: &Ctx,
    head: &RequestHead,
    name: &RepoName,
    id: &UploadId,
    digest: &Digest,
) -> Result<Response, RegistryError> {
    let lock_keys = vec![keys::upload_lock(id), keys::blob_lock(name, digest)];
    ctx.locked(lock_keys, async |held| {
        let mut record = load(ctx, name, id).await?;
        if head.has_body() {
            accept_chunk(ctx, head, name, id, &mut record).await?;
        }
        let parts: Vec<String> = record
            .parts
            .iter()
            .map(|p| layout::upload_part(name, id, p.offset))
            .collect();
        let actual = if digest.algorithm() == crate::digest::Algorithm::Sha256 {
            record
                .hasher()
                .map_err(|e| RegistryError::new(ErrorCode::BlobUploadInvalid, e.to_string()))?
                .finish()
        } else {
            let tap = BodyTap::new(Hasher::new(digest.algorithm()), None, None);
            ctx.hash_stored(Store::Blobs, parts.clone(), tap)
                .await?
                .hasher()
                .finish()
        };
        if &actual != digest {
            return Err(RegistryError::new(
                ErrorCode::DigestInvalid,
                format!("upload has digest {actual}, not {digest}"),
            ));
        }
        let data = layout::blob_data(digest);
        if !ctx.exists(Store::Blobs, data.clone()).await? {
            ctx.concat(Store::Blobs, parts, data).await?;
        }
        link(ctx, held, name, digest).await?;
        ctx.delete_all(Store::Blobs, layout::upload_dir(name, id))
            .await?;
        Ok(created(name, digest))
    })
    .await
}

pub(super) async fn status(
    ctx: &Ctx,
    name: &RepoName,
    id: &UploadId,
) -> Result<Response, RegistryError> {
    let record = load(ctx, name, id).await?;
    Ok(in_progress(StatusCode::NO_CONTENT, name, id, &record))
}

pub(super) async fn cancel(
    ctx: &Ctx,
    name: &RepoName,
    id: &UploadId,
) -> Result<Response, RegistryError> {
    ctx.locked(vec![keys::upload_lock(id)], async |_| {
        load(ctx, name, id).await?;
        ctx.delete_all(Store::Blobs, layout::upload_dir(name, id))
            .await?;
        Ok(Reply::new(StatusCode::NO_CONTENT).done())
    })
    .await
}
