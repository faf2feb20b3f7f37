//! Blob uploads: start (plain, monolithic, mount), chunks, status, completion, cancel.

use bytes::Bytes;
use http::StatusCode;

use super::announce;
use super::blobs;
use super::ctx::keys;
use super::fence::{self, Watch};
use super::{Ctx, RequestHead};
use crate::digest::{Algorithm, Digest, Hasher};
use crate::error::{ErrorCode, RegistryError};
use crate::events::{EventData, EventKind};
use crate::layout;
use crate::lock::Held;
use crate::names::RepoName;
use crate::range::ChunkRange;
use crate::response::{DOCKER_UPLOAD_UUID, Reply};
use crate::route::UploadId;
use crate::step::{
    BodyError, BodyTap, Piece, Response, StoreRole, TapError, Versioned, WriteCondition,
};
use crate::upload::{Part, UploadRecord};

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

/// Records `digest` (of `size` bytes) as part of `name`, under the blob's lock
/// ([`blobs::link_into`], confirmed against the collector's state `watched` read before the
/// blob was found or stored), after the webhooks that must hear of it first did. Answers
/// with the events to announce once the locks are released ([`announce::after`]).
async fn link(
    ctx: &Ctx,
    held: &mut Held,
    watched: Watch,
    name: &RepoName,
    digest: &Digest,
    size: u64,
) -> Result<Vec<announce::Event>, RegistryError> {
    let mut events = Vec::new();
    events.extend(announce::repository_created(ctx, name).await?);
    let uploaded = EventData {
        repository: name.to_string(),
        digest: Some(digest.to_string()),
        size: Some(size),
        ..EventData::default()
    };
    events.extend(announce::event(ctx, EventKind::BlobUploaded, uploaded));
    announce::before(ctx, &events).await?;
    blobs::link_into(ctx, held, watched, name, digest, size).await?;
    Ok(events)
}

/// Completes upload `id`: its blob, stored, is linked ([`link`]) and the session removed.
async fn link_and_end(
    ctx: &Ctx,
    held: &mut Held,
    watched: Watch,
    name: &RepoName,
    id: &UploadId,
    digest: &Digest,
    size: u64,
) -> Result<Vec<announce::Event>, RegistryError> {
    let events = link(ctx, held, watched, name, digest, size).await?;
    ctx.delete_all(StoreRole::Blobs, layout::upload_dir(name, id))
        .await?;
    Ok(events)
}

async fn link_locked(
    ctx: &Ctx,
    watched: Watch,
    name: &RepoName,
    digest: &Digest,
    size: u64,
) -> Result<(), RegistryError> {
    let events = ctx
        .locked(vec![keys::blob_lock(name, digest)], async |held| {
            link(ctx, held, watched, name, digest, size).await
        })
        .await?;
    announce::after(ctx, events).await
}

pub(super) async fn start(
    ctx: &Ctx,
    head: &RequestHead,
    name: &RepoName,
    digest: Option<Digest>,
    mount: Option<Digest>,
    from: Option<MountSource>,
) -> Result<Response, RegistryError> {
    if let (Some(mount), Some(from)) = (mount, from) {
        let watched = fence::watch(ctx).await?;
        if let Some(size) = mountable(ctx, &mount, &from).await? {
            link_locked(ctx, watched, name, &mount, size).await?;
            return Ok(created(name, &mount));
        }
    }
    if let Some(digest) = digest {
        return monolithic(ctx, head, name, &digest).await;
    }
    check_open_uploads(ctx, name).await?;
    let id = UploadId::parse(ctx.upload_id())
        .ok_or_else(|| RegistryError::new(ErrorCode::Unavailable, "generated a bad upload id"))?;
    let record = UploadRecord::new(ctx.channel.now());
    save(ctx, name, &id, &record, None).await?;
    Ok(in_progress(StatusCode::ACCEPTED, name, &id, &record))
}

/// Refuses a new session while `name` has `max_open_uploads_per_repository` open. They are
/// counted by listing the repository's `_uploads/` folder: exact whoever started them (any
/// replica), and nothing to keep in step when sessions complete, are cancelled or purged,
/// which a counter would have to be, for one list request per session start. Starts racing
/// each other may all pass: the limit is exceeded by at most the starts in flight at once.
async fn check_open_uploads(ctx: &Ctx, name: &RepoName) -> Result<(), RegistryError> {
    let limit = ctx.limits.max_open_uploads_per_repository;
    let sessions = ctx
        .list(StoreRole::Blobs, layout::uploads_dir(name))
        .await?;
    let open = sessions.iter().filter(|s| s.ends_with('/')).count() as u64;
    if open < limit {
        return Ok(());
    }
    Err(RegistryError::new(
        ErrorCode::TooManyRequests,
        format!(
            "{name} has {open} open upload sessions, the most allowed \
             (max_open_uploads_per_repository = {limit}): complete or cancel some first"
        ),
    ))
}

/// Where a cross-repository mount may find its blob.
pub(super) enum MountSource {
    /// The `from` repository: the blob must belong to it.
    Repository(RepoName),
    /// Anywhere in the registry (a mount without `from`, while access is not enforced).
    Anywhere,
}

/// The size of `digest` if a mount of it can be served from `from`.
async fn mountable(
    ctx: &Ctx,
    digest: &Digest,
    from: &MountSource,
) -> Result<Option<u64>, RegistryError> {
    if let MountSource::Repository(from) = from
        && !ctx
            .exists(StoreRole::Meta, layout::layer_link(from, digest))
            .await?
    {
        return Ok(None);
    }
    ctx.stat(StoreRole::Blobs, layout::blob_data(digest)).await
}

/// `POST ?digest=` with the whole blob: the bytes go straight to their content address,
/// where they appear only if they hash to the digest.
async fn monolithic(
    ctx: &Ctx,
    head: &RequestHead,
    name: &RepoName,
    digest: &Digest,
) -> Result<Response, RegistryError> {
    let watched = fence::watch(ctx).await?;
    let size = store_whole(ctx, head.content_length(), digest).await?;
    link_locked(ctx, watched, name, digest, size).await?;
    Ok(created(name, digest))
}

/// Streams a body holding a whole blob to its content address (no lock needed: it appears
/// only if it hashes to `digest`, and anything already there is the same bytes); its size.
async fn store_whole(
    ctx: &Ctx,
    exact_len: Option<u64>,
    digest: &Digest,
) -> Result<u64, RegistryError> {
    let tap = BodyTap::new(
        Hasher::new(digest.algorithm()),
        exact_len,
        Some(digest.clone()),
    );
    let (tap, error) = ctx
        .write_body(StoreRole::Blobs, layout::blob_data(digest), tap)
        .await?;
    match error {
        Some(error) => Err(body_error(error)),
        None => Ok(tap.received()),
    }
}

fn upload_unknown() -> RegistryError {
    RegistryError::new(ErrorCode::BlobUploadUnknown, "upload is unknown")
}

async fn load(ctx: &Ctx, name: &RepoName, id: &UploadId) -> Result<UploadRecord, RegistryError> {
    let bytes = ctx
        .read(StoreRole::Blobs, layout::upload_record(name, id))
        .await?
        .ok_or_else(upload_unknown)?;
    serde_json::from_slice(&bytes).map_err(|_| upload_unknown())
}

/// The record with the version it was read at, for the compare-and-swap that saves it;
/// `None` when the upload is gone.
async fn load_versioned(
    ctx: &Ctx,
    name: &RepoName,
    id: &UploadId,
) -> Result<Option<(UploadRecord, Versioned)>, RegistryError> {
    let Some(found) = ctx
        .read_versioned(StoreRole::Blobs, layout::upload_record(name, id))
        .await?
    else {
        return Ok(None);
    };
    let record = serde_json::from_slice(&found.data).map_err(|_| upload_unknown())?;
    Ok(Some((record, found)))
}

/// Saves `record` over the version `found` under the upload's lock (`None`: a new upload,
/// whose fresh id nothing holds yet).
async fn save(
    ctx: &Ctx,
    name: &RepoName,
    id: &UploadId,
    record: &UploadRecord,
    found: Option<&Versioned>,
) -> Result<(), RegistryError> {
    let json = serde_json::to_vec(record)
        .map_err(|e| RegistryError::new(ErrorCode::Unavailable, e.to_string()))?;
    ctx.replace(
        StoreRole::Blobs,
        layout::upload_record(name, id),
        json,
        found,
    )
    .await
}

/// A chunk stored as a part but not yet part of the upload.
struct StagedChunk {
    /// The upload's offset the chunk was streamed against.
    base: u64,
    /// `None` for an empty body.
    part: Option<Part>,
    /// The hash state after the chunk.
    hasher: Hasher,
}

fn out_of_order(expected: u64, got: u64) -> RegistryError {
    RegistryError::new(
        ErrorCode::RangeInvalid,
        format!("chunk starts at {got}, upload is at {expected}"),
    )
}

/// The length a chunk announces (`Content-Range`, else `Content-Length`), once its
/// `Content-Range`, if any, is found to start where the upload is.
fn chunk_length(head: &RequestHead, record: &UploadRecord) -> Result<Option<u64>, RegistryError> {
    let Some(header) = head.header("content-range") else {
        return Ok(head.content_length());
    };
    let range = ChunkRange::parse(header).map_err(|_| {
        RegistryError::new(
            ErrorCode::RangeInvalid,
            format!("malformed Content-Range {header:?}"),
        )
    })?;
    if range.first != record.offset {
        return Err(out_of_order(record.offset, range.first));
    }
    Ok(Some(range.byte_count()))
}

/// Streams the request body into the upload against `record` as it was read: in place in
/// the data file when this request could claim the offset (see [`Part`]), else into a part
/// of its own. No lock is held meanwhile (a long body would outlive it); [`commit_chunk`]
/// decides under the lock. A `Content-Range` that does not start at the current offset is
/// refused with 416.
async fn stage_chunk(
    ctx: &Ctx,
    head: &RequestHead,
    name: &RepoName,
    id: &UploadId,
    record: &UploadRecord,
) -> Result<StagedChunk, RegistryError> {
    let exact_len = chunk_length(head, record)?;
    let hasher = record
        .hasher()
        .map_err(|e| RegistryError::new(ErrorCode::BlobUploadInvalid, e.to_string()))?;
    let tap = BodyTap::new(hasher, exact_len, None);
    let in_place = ctx.limits.chunks_in_place
        && head.has_body()
        && record.all_in_place()
        && claim(ctx, name, id, record.offset).await?;
    let (tap, error, part_name) = if in_place {
        let key = layout::upload_data(name, id);
        let (tap, error) = ctx
            .write_body_at(StoreRole::Blobs, key, record.offset, tap)
            .await?;
        (tap, error, None)
    } else {
        let part_name = ctx.fresh_id();
        let key = layout::upload_part(name, id, &part_name);
        let (tap, error) = ctx.write_body(StoreRole::Blobs, key, tap).await?;
        (tap, error, Some(part_name))
    };
    if let Some(error) = error {
        return Err(body_error(error));
    }
    let part = Part {
        name: part_name,
        offset: record.offset,
        len: tap.received(),
    };
    let part = if part.len == 0 {
        drop_part(ctx, name, id, &part).await?;
        None
    } else {
        Some(part)
    };
    Ok(StagedChunk {
        base: record.offset,
        part,
        hasher: tap.hasher().clone(),
    })
}

/// Takes the right to write the data file from `offset` on; `false` when another request
/// has it.
async fn claim(
    ctx: &Ctx,
    name: &RepoName,
    id: &UploadId,
    offset: u64,
) -> Result<bool, RegistryError> {
    let key = layout::upload_claim(name, id, offset);
    ctx.write(
        StoreRole::Blobs,
        key,
        Bytes::new(),
        WriteCondition::CreateNew,
    )
    .await
}

/// Forgets a staged part that will not be committed. Bytes in place stay where they are:
/// no committed part covers them, and the claim keeps anyone else from writing there.
async fn drop_part(
    ctx: &Ctx,
    name: &RepoName,
    id: &UploadId,
    part: &Part,
) -> Result<(), RegistryError> {
    match &part.name {
        Some(part_name) => {
            ctx.delete(StoreRole::Blobs, layout::upload_part(name, id, part_name))
                .await
        }
        None => Ok(()),
    }
}

/// The upload with a staged chunk added, and the stored record it was built from.
struct Appended {
    record: UploadRecord,
    read: Versioned,
}

/// Under the upload's lock: adds a staged chunk to the upload as it is now, if nothing else
/// was added since the chunk began (`Ok(Err(current))` otherwise, and the part is dropped).
async fn commit_chunk(
    ctx: &Ctx,
    name: &RepoName,
    id: &UploadId,
    staged: StagedChunk,
) -> Result<Result<Appended, UploadRecord>, RegistryError> {
    let Some((mut record, read)) = load_versioned(ctx, name, id).await? else {
        // The upload completed or was cancelled while this chunk streamed: its folder was
        // deleted, and what this request wrote since (its part or claim and the bytes in
        // place) would stay, recorded nowhere, until the next purge. The id is never used
        // again, so everything left below it goes.
        ctx.delete_all(StoreRole::Blobs, layout::upload_dir(name, id))
            .await?;
        return Err(upload_unknown());
    };
    let Some(part) = staged.part else {
        return Ok(Ok(Appended { record, read }));
    };
    if record.offset != staged.base {
        drop_part(ctx, name, id, &part).await?;
        return Ok(Err(record));
    }
    record.append(part, &staged.hasher);
    Ok(Ok(Appended { record, read }))
}

pub(super) async fn patch(
    ctx: &Ctx,
    head: &RequestHead,
    name: &RepoName,
    id: &UploadId,
) -> Result<Response, RegistryError> {
    let record = load(ctx, name, id).await?;
    let staged = match stage_chunk(ctx, head, name, id, &record).await {
        Err(e) if e.code == ErrorCode::RangeInvalid => {
            return Ok(in_progress(
                StatusCode::RANGE_NOT_SATISFIABLE,
                name,
                id,
                &record,
            ));
        }
        staged => staged?,
    };
    ctx.locked(
        vec![keys::upload_lock(id)],
        async |held| match commit_chunk(ctx, name, id, staged).await? {
            Ok(Appended { record, read }) => {
                ctx.ensure(held).await?;
                // A compare-and-swap on the record read under the lock: if another request
                // committed while this one's lock was lost, its chunk is not overwritten.
                save(ctx, name, id, &record, Some(&read)).await?;
                Ok(in_progress(StatusCode::ACCEPTED, name, id, &record))
            }
            Err(current) => Ok(in_progress(
                StatusCode::RANGE_NOT_SATISFIABLE,
                name,
                id,
                &current,
            )),
        },
    )
    .await
}

pub(super) async fn finish(
    ctx: &Ctx,
    head: &RequestHead,
    name: &RepoName,
    id: &UploadId,
    digest: &Digest,
) -> Result<Response, RegistryError> {
    let watched = fence::watch(ctx).await?;
    let staged = if head.has_body() {
        let record = load(ctx, name, id).await?;
        if record.offset == 0 {
            return finish_whole(ctx, head, watched, name, id, &record, digest).await;
        }
        Some(stage_chunk(ctx, head, name, id, &record).await?)
    } else {
        None
    };
    let lock_keys = vec![keys::upload_lock(id), keys::blob_lock(name, digest)];
    let events = ctx
        .locked(lock_keys, async |held| {
            let record = match staged {
                Some(staged) => {
                    let base = staged.base;
                    commit_chunk(ctx, name, id, staged)
                        .await?
                        .map_err(|current| out_of_order(current.offset, base))?
                        .record
                }
                None => load(ctx, name, id).await?,
            };
            let pieces: Vec<Piece> = record.parts.iter().map(|p| p.piece(name, id)).collect();
            let actual = if digest.algorithm() == Algorithm::Sha256 {
                record
                    .hasher()
                    .map_err(|e| RegistryError::new(ErrorCode::BlobUploadInvalid, e.to_string()))?
                    .finish()
            } else {
                let tap = BodyTap::new(Hasher::new(digest.algorithm()), None, None);
                ctx.hash_stored(StoreRole::Blobs, pieces.clone(), tap)
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
            if !ctx.exists(StoreRole::Blobs, data.clone()).await? {
                // A digest checked by re-hashing the stored pieces needs them again when this
                // completion is retried (the fence may refuse it after the move): only an
                // upload hashed on the way in may give its data file or a part away.
                let pieces = if digest.algorithm() == Algorithm::Sha256 {
                    match whole_data_file(ctx, name, id, &record).await? {
                        Some(file) => vec![file],
                        None => pieces,
                    }
                } else {
                    record
                        .parts
                        .iter()
                        .map(|p| p.kept_piece(name, id))
                        .collect()
                };
                ctx.concat(StoreRole::Blobs, pieces, data).await?;
            }
            link_and_end(ctx, held, watched, name, id, digest, record.offset).await
        })
        .await?;
    announce::after(ctx, events).await?;
    Ok(created(name, digest))
}

/// The data file as the whole blob, when it may be moved to the content address instead of
/// copied: every part is in place, the file holds exactly them, and this request claimed
/// the end offset, so no request can write to the file any more.
async fn whole_data_file(
    ctx: &Ctx,
    name: &RepoName,
    id: &UploadId,
    record: &UploadRecord,
) -> Result<Option<Piece>, RegistryError> {
    if record.parts.is_empty() || !record.all_in_place() {
        return Ok(None);
    }
    let file = layout::upload_data(name, id);
    if !claim(ctx, name, id, record.offset).await?
        || ctx.stat(StoreRole::Blobs, file.clone()).await? != Some(record.offset)
    {
        return Ok(None);
    }
    Ok(Some(Piece::whole(file)))
}

/// A completing `PUT` that carries the whole blob (nothing was sent before): the body goes
/// straight to the content address, as a monolithic push does, instead of through a part.
/// A chunk that some other request added meanwhile is dropped with the session: the blob
/// is complete and verified without it.
async fn finish_whole(
    ctx: &Ctx,
    head: &RequestHead,
    watched: Watch,
    name: &RepoName,
    id: &UploadId,
    record: &UploadRecord,
    digest: &Digest,
) -> Result<Response, RegistryError> {
    let size = store_whole(ctx, chunk_length(head, record)?, digest).await?;
    let lock_keys = vec![keys::upload_lock(id), keys::blob_lock(name, digest)];
    let events = ctx
        .locked(lock_keys, async |held| {
            link_and_end(ctx, held, watched, name, id, digest, size).await
        })
        .await?;
    announce::after(ctx, events).await?;
    Ok(created(name, digest))
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
        ctx.delete_all(StoreRole::Blobs, layout::upload_dir(name, id))
            .await?;
        Ok(Reply::new(StatusCode::NO_CONTENT).done())
    })
    .await
}
