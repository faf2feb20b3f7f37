//! Manifests: get by tag or digest, put (with tags and subject), delete.

use bytes::Bytes;
use http::StatusCode;

use super::announce;
use super::ctx::{answer, keys};
use super::fence::{self, Named, Watch};
use super::{Ctx, Request};
use crate::digest::{Algorithm, Digest};
use crate::error::{ErrorCode, RegistryError};
use crate::events::{EventData, EventKind};
use crate::layout;
use crate::lock::{Held, changed_underneath};
use crate::manifest::{Manifest, stored_media_type};
use crate::names::{Reference, RepoName, Tag};
use crate::response::Reply;
use crate::step::{BodyError, Response, StorageRequest, StoreRole, Versioned, WriteCondition};

fn manifest_unknown(reference: &dyn std::fmt::Display) -> RegistryError {
    RegistryError::new(
        ErrorCode::ManifestUnknown,
        format!("manifest {reference} is unknown"),
    )
}

pub(crate) fn parse_link(bytes: &[u8]) -> Result<Digest, RegistryError> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| RegistryError::new(ErrorCode::Unavailable, "corrupt link file in storage"))
}

/// The digest a tag points at, from the cache when it can be.
pub(super) async fn resolve_tag(
    ctx: &Ctx,
    name: &RepoName,
    tag: &Tag,
) -> Result<Option<Digest>, RegistryError> {
    let cache_key = keys::tag_cache(name, tag);
    match ctx.cache_get(cache_key.clone()).await {
        Some(None) => return Ok(None),
        Some(Some(cached)) => {
            if let Ok(digest) = parse_link(&cached) {
                return Ok(Some(digest));
            }
        }
        None => {}
    }
    let Some(link) = ctx
        .read(StoreRole::Meta, layout::tag_current(name, tag))
        .await?
    else {
        return Ok(None);
    };
    let digest = parse_link(&link)?;
    ctx.cache_fill(cache_key, link).await;
    Ok(Some(digest))
}

/// A manifest's bytes if it belongs to `name`, from the cache when it can be.
pub(super) async fn load(
    ctx: &Ctx,
    name: &RepoName,
    digest: &Digest,
) -> Result<Option<Bytes>, RegistryError> {
    let cache_key = keys::manifest_cache(name, digest);
    if let Some(known) = ctx.cache_get(cache_key.clone()).await {
        return Ok(known);
    }
    if !ctx
        .exists(StoreRole::Meta, layout::revision_link(name, digest))
        .await?
    {
        return Ok(None);
    }
    let Some(bytes) = ctx.read(StoreRole::Meta, layout::blob_data(digest)).await? else {
        return Ok(None);
    };
    ctx.cache_fill(cache_key, bytes.clone()).await;
    Ok(Some(bytes))
}

/// The manifest a reference names; `stale` when a mirror's upstream could not confirm a tag
/// and the stored answer was kept.
pub(super) struct Resolved {
    pub(super) digest: Digest,
    pub(super) stale: bool,
    /// The manifest's bytes, when resolving read them already.
    pub(super) bytes: Option<Bytes>,
}

/// Answers a manifest pull; `resolved`: what a mirror already resolved `reference` to.
pub(super) async fn get(
    ctx: &Ctx,
    name: &RepoName,
    reference: &Reference,
    only_head: bool,
    resolved: Option<Resolved>,
) -> Result<Response, RegistryError> {
    let Resolved {
        digest,
        stale,
        bytes,
    } = match (reference, resolved) {
        (_, Some(resolved)) => resolved,
        (Reference::Digest(d), None) => Resolved {
            digest: d.clone(),
            stale: false,
            bytes: None,
        },
        (Reference::Tag(tag), None) => Resolved {
            digest: resolve_tag(ctx, name, tag)
                .await?
                .ok_or_else(|| manifest_unknown(reference))?,
            stale: false,
            bytes: None,
        },
    };
    let bytes = match bytes {
        Some(bytes) => bytes,
        None => load(ctx, name, &digest)
            .await?
            .ok_or_else(|| manifest_unknown(reference))?,
    };
    let mut reply = Reply::new(StatusCode::OK)
        .digest(&digest)
        .content_type(&stored_media_type(&bytes));
    if stale {
        // RFC 9111 5.5 retired the header, but it is still how a cache says so.
        reply = reply.header("warning", r#"110 stowage "Response is Stale""#);
    }
    let reply = if only_head {
        reply.length(bytes.len() as u64)
    } else {
        reply.bytes(bytes)
    };
    Ok(reply.done())
}

fn invalid(message: impl Into<String>) -> RegistryError {
    RegistryError::new(ErrorCode::ManifestInvalid, message)
}

/// Under a push's locks, in one round trip: stores the manifest's bytes at their content
/// address (a push refused after this leaves only garbage, which the collector takes), reads
/// what each of `tags` points at (for its commit to replace exactly that), and checks that
/// each of `checked` is in repository `name`: its link, and its bytes, as a link can outlive
/// its bytes when the collector deleted them under a push it then refused (see `gc::fence`).
pub(super) async fn prepare(
    ctx: &Ctx,
    name: &RepoName,
    digest: &Digest,
    body: &Bytes,
    tags: &[Tag],
    checked: &[Named<'_>],
) -> Result<Vec<Option<Versioned>>, RegistryError> {
    let store_bytes = StorageRequest::Write {
        store: StoreRole::Meta,
        key: layout::blob_data(digest),
        data: body.clone(),
        condition: WriteCondition::CreateNew,
    };
    let read_tags = tags.iter().map(|tag| StorageRequest::ReadVersioned {
        store: StoreRole::Meta,
        key: layout::tag_current(name, tag),
    });
    let checks = checked.iter().flat_map(|n| {
        [
            StorageRequest::Stat {
                store: StoreRole::Meta,
                key: n.link.clone(),
            },
            StorageRequest::Stat {
                store: n.store,
                key: layout::blob_data(n.digest),
            },
        ]
    });
    let requests = std::iter::once(store_bytes)
        .chain(read_tags)
        .chain(checks)
        .collect();
    let mut outcomes = ctx.storage_each(requests).await?.into_iter();
    // Found already is as good as written: the same bytes.
    if let Some(stored) = outcomes.next() {
        answer::written(stored)?;
    }
    let current = outcomes
        .by_ref()
        .take(tags.len())
        .map(answer::versioned)
        .collect::<Result<Vec<_>, _>>()?;
    let found = outcomes
        .map(|o| answer::size(o).map(|size| size.is_some()))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some((missing, _)) = checked
        .iter()
        .zip(found.chunks(2))
        .find(|(_, both)| both.contains(&false))
    {
        return Err(RegistryError::new(
            ErrorCode::ManifestBlobUnknown,
            format!("manifest names {}, which is not in {name}", missing.digest),
        ));
    }
    Ok(current)
}

/// What a pushed manifest makes referenced: itself (`digest`, if given), its blobs and its
/// child manifests, each through its link in `name`.
fn named_by<'a>(
    name: &RepoName,
    digest: Option<&'a Digest>,
    manifest: &'a Manifest,
) -> Vec<Named<'a>> {
    let this = digest.map(|digest| Named {
        store: StoreRole::Meta,
        digest,
        link: layout::revision_link(name, digest),
    });
    let blobs = manifest.blobs.iter().map(|d| Named {
        store: StoreRole::Blobs,
        digest: d,
        link: layout::layer_link(name, d),
    });
    let children = manifest.manifests.iter().map(|d| Named {
        store: StoreRole::Meta,
        digest: d,
        link: layout::revision_link(name, d),
    });
    this.into_iter().chain(blobs).chain(children).collect()
}

fn immutable(name: &RepoName, tag: &Tag) -> RegistryError {
    RegistryError::new(
        ErrorCode::TagImmutable,
        format!("tag {tag} of {name} is immutable: it cannot be re-pointed or deleted"),
    )
}

pub(super) async fn put(
    request: &Request<'_>,
    name: &RepoName,
    reference: &Reference,
    extra_tags: Vec<Tag>,
) -> Result<Response, RegistryError> {
    let (ctx, head) = (request.ctx, request.head);
    // TAG_INVALID rather than MANIFEST_INVALID: the manifest may be fine, the tags asked
    // for are what the client must change.
    let most = ctx.limits.max_tags_per_request;
    if extra_tags.len() > most {
        return Err(RegistryError::new(
            ErrorCode::TagInvalid,
            format!(
                "{} tags in one push, at most {most} allowed (max_tags_per_request)",
                extra_tags.len()
            ),
        ));
    }
    let limit = ctx.limits.max_manifest_bytes;
    let body = ctx.read_body(limit).await?.map_err(|e| match e {
        BodyError::TooLarge { .. } => {
            RegistryError::new(ErrorCode::ManifestTooLarge, e.to_string())
        }
        other => invalid(other.to_string()),
    })?;
    let algorithm = match reference {
        Reference::Digest(d) => d.algorithm(),
        Reference::Tag(_) => Algorithm::Sha256,
    };
    let digest = Digest::of(algorithm, &body);
    if let Reference::Digest(expected) = reference
        && expected != &digest
    {
        return Err(RegistryError::new(
            ErrorCode::DigestInvalid,
            format!("manifest has digest {digest}, not {expected}"),
        ));
    }
    let manifest =
        Manifest::parse(&body, head.header("content-type")).map_err(|e| invalid(e.to_string()))?;
    let watched = fence::watch(ctx).await?;
    let mut tags = extra_tags;
    if let Reference::Tag(tag) = reference {
        tags.insert(0, tag.clone());
    }
    // Each tag is committed once: a second commit would find the first one's version.
    let mut seen = std::collections::HashSet::new();
    tags.retain(|t| seen.insert(t.clone()));
    let mut lock_keys = vec![keys::manifest_lock(name, &digest)];
    lock_keys.extend(tags.iter().map(|t| keys::tag_lock(name, t)));
    let checked = if ctx.limits.allow_missing_manifest_references {
        Vec::new()
    } else {
        named_by(name, None, &manifest)
    };
    let events = ctx
        .locked(lock_keys, async |held| {
            let current = prepare(ctx, name, &digest, &body, &tags, &checked).await?;
            for (tag, found) in tags.iter().zip(&current) {
                // Pushing the same manifest again leaves an immutable tag where it was.
                if let Some(found) = found
                    && request.tag_is_immutable(name, tag)
                    && parse_link(&found.data)? != digest
                {
                    return Err(immutable(name, tag));
                }
            }
            let mut events = Vec::new();
            events.extend(announce::repository_created(ctx, name).await?);
            let pushed = EventData {
                repository: name.to_string(),
                reference: Some(reference.to_string()),
                tags: tags.iter().map(|t| t.to_string()).collect(),
                digest: Some(digest.to_string()),
                media_type: Some(stored_media_type(&body)),
                size: Some(body.len() as u64),
                identity: None,
            };
            events.extend(announce::event(ctx, EventKind::ManifestPushed, pushed));
            announce::before(ctx, &events).await?;
            let tags: Vec<_> = tags.iter().cloned().zip(current).collect();
            commit(ctx, name, &digest, &body, &manifest, &tags, held).await?;
            // After every write the push makes, tags included: a collector's second mark
            // that misses them comes after this check's read (see `fence`).
            let named = named_by(name, Some(&digest), &manifest);
            confirm_commit(ctx, watched, &named, name, &digest, &tags).await?;
            Ok(events)
        })
        .await?;
    announce::after(ctx, events).await?;
    let mut reply = Reply::new(StatusCode::CREATED)
        .location(format!("/v2/{name}/manifests/{digest}"))
        .digest(&digest);
    if let Some(subject) = &manifest.subject {
        reply = reply.header("oci-subject", subject.to_string());
    }
    if matches!(reference, Reference::Digest(_)) {
        for tag in &tags {
            reply = reply.header("oci-tag", tag.as_str());
        }
    }
    Ok(reply.done())
}

/// Makes manifest `digest` (`body`, stored by [`prepare`]) part of `name` and points `tags`
/// at it. The caller holds the manifest's lock and every tag's, and read under them what
/// each tag pointed at (with the tag in `tags`). Pushes and mirror fetches both commit this
/// way, in two round trips: the links, then the tags, which reach the manifest through its
/// revision link and so must not be seen before it.
pub(super) async fn commit(
    ctx: &Ctx,
    name: &RepoName,
    digest: &Digest,
    body: &Bytes,
    manifest: &Manifest,
    tags: &[(Tag, Option<Versioned>)],
    held: &mut Held,
) -> Result<(), RegistryError> {
    let link = Bytes::from(layout::link_content(digest));
    let mut links = vec![(layout::revision_link(name, digest), link.clone())];
    if let Some(subject) = &manifest.subject {
        let descriptor = manifest.referrer_descriptor(digest, body.len() as u64);
        let json = serde_json::to_vec(&descriptor).map_err(|e| invalid(e.to_string()))?;
        // Derived from the manifest its key names: the same bytes whoever writes it.
        links.push((layout::referrer_entry(name, subject, digest), json.into()));
    }
    links.extend(
        tags.iter()
            .map(|(tag, _)| (layout::tag_index(name, tag, digest), link.clone())),
    );
    ctx.ensure(held).await?;
    ctx.create_each(StoreRole::Meta, links).await?;
    // The first pull after the push then finds the manifest in the cache.
    ctx.cache_record(keys::manifest_cache(name, digest), Some(body.clone()))
        .await?;
    ctx.ensure(held).await?;
    let replaces = tags
        .iter()
        .map(|(tag, found)| StorageRequest::Write {
            store: StoreRole::Meta,
            key: layout::tag_current(name, tag),
            data: link.clone(),
            condition: WriteCondition::replacing(found.as_ref()),
        })
        .collect();
    let outcomes = ctx.storage_each(replaces).await?;
    let mut committed = Ok(());
    for ((tag, _), outcome) in tags.iter().zip(outcomes) {
        let cached = keys::tag_cache(name, tag);
        match answer::written(outcome) {
            Ok(true) => ctx.cache_record(cached, Some(link.clone())).await?,
            // Someone committed while this lock was lost, or the write failed: readers ask
            // storage what the tag is.
            Ok(false) => {
                ctx.cache_forget(cached).await;
                let key = layout::tag_current(name, tag);
                committed = committed.and(Err(changed_underneath(&key)));
            }
            Err(failed) => {
                ctx.cache_forget(cached).await;
                committed = committed.and(Err(failed));
            }
        }
    }
    committed
}

/// Step (3) of the fence (see `fence`) for a committed manifest `digest` and its `tags`,
/// naming `named`. When it refuses, what the commit wrote stays, naming what the collector
/// may delete: the cache forgets it, so readers ask storage.
pub(super) async fn confirm_commit(
    ctx: &Ctx,
    watched: Watch,
    named: &[Named<'_>],
    name: &RepoName,
    digest: &Digest,
    tags: &[(Tag, Option<Versioned>)],
) -> Result<(), RegistryError> {
    let refused = match fence::confirm(ctx, watched, named).await {
        Ok(()) => return Ok(()),
        Err(refused) => refused,
    };
    ctx.cache_forget(keys::manifest_cache(name, digest)).await;
    for (tag, _) in tags {
        ctx.cache_forget(keys::tag_cache(name, tag)).await;
    }
    Err(refused)
}

pub(super) async fn delete(
    request: &Request<'_>,
    name: &RepoName,
    reference: &Reference,
) -> Result<Response, RegistryError> {
    let ctx = request.ctx;
    match reference {
        Reference::Tag(tag) if request.tag_is_immutable(name, tag) => {
            if resolve_current(ctx, name, tag).await?.is_none() {
                return Err(manifest_unknown(tag));
            }
            Err(immutable(name, tag))
        }
        Reference::Tag(tag) => delete_tag(ctx, name, tag).await,
        Reference::Digest(digest) => delete_manifest(request, name, digest).await,
    }
}

async fn delete_tag(ctx: &Ctx, name: &RepoName, tag: &Tag) -> Result<Response, RegistryError> {
    let events = ctx
        .locked(vec![keys::tag_lock(name, tag)], async |held| {
            let Some(digest) = resolve_current(ctx, name, tag).await? else {
                return Err(manifest_unknown(tag));
            };
            untag(ctx, held, name, tag, &digest).await
        })
        .await?;
    announce::after(ctx, events).await?;
    Ok(Reply::new(StatusCode::ACCEPTED).done())
}

/// Removes `tag` (pointing at `digest`) while `held` (its lock) holds, after the webhooks
/// that must hear of it first did; answers with the events to announce once it is released.
pub(crate) async fn untag(
    ctx: &Ctx,
    held: &mut Held,
    name: &RepoName,
    tag: &Tag,
    digest: &Digest,
) -> Result<Vec<announce::Event>, RegistryError> {
    let deleted = EventData {
        repository: name.to_string(),
        reference: Some(tag.to_string()),
        tags: vec![tag.to_string()],
        digest: Some(digest.to_string()),
        ..EventData::default()
    };
    let events: Vec<_> = announce::event(ctx, EventKind::TagDeleted, deleted)
        .into_iter()
        .collect();
    announce::before(ctx, &events).await?;
    ctx.ensure(held).await?;
    ctx.delete_all(StoreRole::Meta, layout::tag_dir(name, tag))
        .await?;
    ctx.cache_record(keys::tag_cache(name, tag), None).await?;
    Ok(events)
}

/// Removes a manifest from the repository with every tag pointing at it and its referrer
/// entry. The revision link goes last, so a crash midway leaves a manifest that can be
/// deleted again.
///
/// The tags are listed under the manifest's lock: while it is held no push can make a tag
/// point at this manifest, so none is missed. Their locks are taken next; they sort after
/// the manifest's, the order every operation takes its locks in.
async fn delete_manifest(
    request: &Request<'_>,
    name: &RepoName,
    digest: &Digest,
) -> Result<Response, RegistryError> {
    let ctx = request.ctx;
    let manifest_lock = vec![keys::manifest_lock(name, digest)];
    let events = ctx
        .locked(manifest_lock, async |manifest_held| {
            let pointing = tags_pointing_at(ctx, name, digest).await?;
            // Deleting the manifest would delete its tags with it.
            if let Some(tag) = pointing.iter().find(|t| request.tag_is_immutable(name, t)) {
                return Err(immutable(name, tag));
            }
            let tag_locks = pointing.iter().map(|t| keys::tag_lock(name, t)).collect();
            ctx.locked(tag_locks, async |tags_held| {
                remove_manifest(
                    ctx,
                    name,
                    digest,
                    &pointing,
                    &mut [manifest_held, tags_held],
                )
                .await
            })
            .await
        })
        .await?;
    announce::after(ctx, events).await?;
    Ok(Reply::new(StatusCode::ACCEPTED).done())
}

/// The removal itself, holding the manifest's lock and those of the tags `pointing` at it
/// (`held`).
pub(crate) async fn remove_manifest(
    ctx: &Ctx,
    name: &RepoName,
    digest: &Digest,
    pointing: &[Tag],
    held: &mut [&mut Held],
) -> Result<Vec<announce::Event>, RegistryError> {
    let bytes = load(ctx, name, digest)
        .await?
        .ok_or_else(|| manifest_unknown(digest))?;
    let manifest = Manifest::parse(&bytes, None).ok();
    let deleted = EventData {
        repository: name.to_string(),
        reference: Some(digest.to_string()),
        tags: pointing.iter().map(|t| t.to_string()).collect(),
        digest: Some(digest.to_string()),
        media_type: Some(stored_media_type(&bytes)),
        size: Some(bytes.len() as u64),
        identity: None,
    };
    let events: Vec<_> = announce::event(ctx, EventKind::ManifestDeleted, deleted)
        .into_iter()
        .collect();
    announce::before(ctx, &events).await?;
    for held in held.iter_mut() {
        ctx.ensure(held).await?;
    }
    for tag in pointing {
        // Re-check under the lock: the tag may have moved since we listed it.
        if resolve_current(ctx, name, tag).await?.as_ref() == Some(digest) {
            ctx.delete_all(StoreRole::Meta, layout::tag_dir(name, tag))
                .await?;
            ctx.cache_record(keys::tag_cache(name, tag), None).await?;
        }
    }
    if let Some(subject) = manifest.as_ref().and_then(|m| m.subject.as_ref()) {
        ctx.delete(
            StoreRole::Meta,
            layout::referrer_entry(name, subject, digest),
        )
        .await?;
    }
    ctx.delete(StoreRole::Meta, layout::revision_link(name, digest))
        .await?;
    ctx.cache_record(keys::manifest_cache(name, digest), None)
        .await?;
    Ok(events)
}

/// A tag's current digest straight from storage (no cache).
async fn resolve_current(
    ctx: &Ctx,
    name: &RepoName,
    tag: &Tag,
) -> Result<Option<Digest>, RegistryError> {
    match ctx
        .read(StoreRole::Meta, layout::tag_current(name, tag))
        .await?
    {
        Some(link) => parse_link(&link).map(Some),
        None => Ok(None),
    }
}

pub(crate) async fn tags_pointing_at(
    ctx: &Ctx,
    name: &RepoName,
    digest: &Digest,
) -> Result<Vec<Tag>, RegistryError> {
    let tags: Vec<Tag> = layout::folders(ctx.list(StoreRole::Meta, layout::tags_dir(name)).await?)
        .filter_map(|folder| folder.parse().ok())
        .collect();
    let currents = tags
        .iter()
        .map(|tag| layout::tag_current(name, tag))
        .collect();
    let links = ctx.read_each(StoreRole::Meta, currents).await?;
    let mut pointing = Vec::new();
    for (tag, link) in tags.into_iter().zip(links) {
        if let Some(link) = link
            && parse_link(&link)? == *digest
        {
            pointing.push(tag);
        }
    }
    Ok(pointing)
}
