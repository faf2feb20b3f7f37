//! Pulls from a mirrored repository (see [`crate::mirror`]): what to ask the upstreams when a
//! manifest or blob is missing or a tag is due for a check, and what to make of the answer.
//!
//! - A blob is fetched under a lock on its digest ([`keys::mirror_fetch_lock`], in the lock
//!   store replicas share): whoever takes it fetches, the others wait for it to be released
//!   and find the blob stored. The bytes go straight to the blob's address through a tap
//!   expecting its digest, so a blob that does not hash to its name is never visible. The
//!   fetching request's client gets the blob as it arrives (a whole-blob GET), its stream
//!   cut if the blob does not verify.
//! - A missing manifest is fetched under the same lock on its digest (its `GET` counts
//!   against an upstream's pull limit), verified against the digest and kept for good. A tag is
//!   trusted for `tag_ttl_secs` after the upstream last named its digest (a cache entry
//!   replicas share); then a HEAD asks again, and only a new digest is fetched.
//! - An upstream that is unreachable or answers `429`/`5xx` leaves what is stored to be
//!   served, marked stale; a `429`'s `Retry-After` is recorded in the shared cache, and
//!   nobody asks that upstream until it has passed.

use bytes::Bytes;
use http::HeaderMap;

use super::Ctx;
use super::blobs::{link_into, size_in_repo};
use super::ctx::keys;
use super::fence::{self, Named};
use super::manifests::{self, Resolved};
use crate::digest::{Algorithm, Digest, Hasher};
use crate::error::{ErrorCode, RegistryError};
use crate::layout;
use crate::lock::Held;
use crate::manifest::Manifest;
use crate::mirror::{Mirror, UpstreamRef, upstream_name};
use crate::names::{Reference, RepoName, Tag};
use crate::step::{BodyTap, Step, StoreRole, UpstreamAnswer, UpstreamRequest};

/// How long a request waits for another one fetching the same blob before giving up.
const FETCH_WAIT_MS: u64 = 15 * 60 * 1000;
/// How often a waiting request looks whether the fetch it waits for is done.
const FETCH_POLL_MS: u64 = 100;

/// A mirrored repository as one request sees it.
pub(super) struct Mirrored<'a> {
    mirror: &'a Mirror,
    /// The upstream's name for the repository.
    remote: String,
    /// The upstreams this request may ask, in order (`?ns=` narrows them).
    upstreams: Vec<&'a UpstreamRef>,
}

impl<'a> Mirrored<'a> {
    pub(super) fn new(prefix: &str, mirror: &'a Mirror, name: &RepoName, ns: Option<&str>) -> Self {
        Mirrored {
            mirror,
            remote: upstream_name(prefix, name.as_str()),
            upstreams: mirror.candidates(ns),
        }
    }
}

/// Makes sure the manifest `reference` names is stored in `name`, asking the upstreams when
/// it is missing or its tag is due for a check.
pub(super) async fn resolve(
    ctx: &Ctx,
    m: &Mirrored<'_>,
    name: &RepoName,
    reference: &Reference,
) -> Result<Resolved, RegistryError> {
    match reference {
        Reference::Digest(digest) => {
            let bytes = manifests::load(ctx, name, digest).await?;
            if bytes.is_none() {
                fetch_manifest(ctx, m, name, digest, None).await?;
            }
            Ok(Resolved {
                digest: digest.clone(),
                stale: false,
                bytes,
            })
        }
        Reference::Tag(tag) => resolve_tag(ctx, m, name, tag).await,
    }
}

async fn resolve_tag(
    ctx: &Ctx,
    m: &Mirrored<'_>,
    name: &RepoName,
    tag: &Tag,
) -> Result<Resolved, RegistryError> {
    // A tag whose manifest is gone counts as none, so the manifest is fetched again: a fetch
    // the collector's fence refused leaves its tag, and the collector may take the manifest.
    let local = match manifests::resolve_tag(ctx, name, tag).await? {
        Some(digest) => manifests::load(ctx, name, &digest)
            .await?
            .map(|bytes| (digest, bytes)),
        None => None,
    };
    let checked = keys::mirror_tag_checked(name, tag);
    if let Some((digest, bytes)) = &local
        && let Some(Some(_)) = ctx.cache_get(checked.clone()).await
    {
        return Ok(Resolved {
            digest: digest.clone(),
            stale: false,
            bytes: Some(bytes.clone()),
        });
    }
    let (local, bytes) = local.unzip();
    let head = |u: &UpstreamRef| manifest_request(m, u, tag.as_str(), false, ctx);
    let (digest, bytes) = match ask(ctx, m, head).await {
        UpstreamAnswer::Manifest {
            digest: Some(digest),
            ..
        } => {
            if local.as_ref() == Some(&digest) {
                (digest, bytes)
            } else {
                fetch_manifest(ctx, m, name, &digest, Some(tag)).await?;
                (digest, None)
            }
        }
        // An upstream that names no digest on a HEAD: the GET's bytes name it.
        UpstreamAnswer::Manifest { digest: None, .. } => {
            let get = |u: &UpstreamRef| manifest_request(m, u, tag.as_str(), true, ctx);
            let (body, media_type) = manifest_body(ask(ctx, m, get).await, tag)?;
            let digest = Digest::of(Algorithm::Sha256, &body);
            store_manifest(ctx, name, &digest, body, media_type.as_deref(), Some(tag)).await?;
            (digest, None)
        }
        answer => {
            let Some(digest) = local else {
                return Err(missing(answer, ErrorCode::ManifestUnknown, tag));
            };
            // Gone upstream or refused: the mirror keeps what it has. Unreachable: the same,
            // but not trusted, so the next pull asks again.
            let stale = matches!(answer, UpstreamAnswer::Unavailable { .. });
            if !stale {
                ctx.cache_remember(checked, Bytes::new(), m.mirror.tag_ttl_ms)
                    .await;
            }
            return Ok(Resolved {
                digest,
                stale,
                bytes,
            });
        }
    };
    let record = Bytes::from(digest.to_string());
    ctx.cache_remember(checked, record, m.mirror.tag_ttl_ms)
        .await;
    Ok(Resolved {
        digest,
        stale: false,
        bytes,
    })
}

fn manifest_request(
    m: &Mirrored<'_>,
    upstream: &UpstreamRef,
    reference: &str,
    body: bool,
    ctx: &Ctx,
) -> UpstreamRequest {
    UpstreamRequest::Manifest {
        upstream: upstream.index,
        repository: m.remote.clone(),
        reference: reference.to_owned(),
        body,
        limit: ctx.limits.max_manifest_bytes,
    }
}

/// Stores manifest `digest` in `name` (pointing `tag` at it, if given), fetching it unless
/// it is stored already; once however many requests miss it at the same time (a manifest
/// `GET` counts against an upstream's pull limit).
async fn fetch_manifest(
    ctx: &Ctx,
    m: &Mirrored<'_>,
    name: &RepoName,
    digest: &Digest,
    tag: Option<&Tag>,
) -> Result<(), RegistryError> {
    let stored = move || async move { manifests::load(ctx, name, digest).await };
    match take_turn(ctx, digest, stored).await? {
        // Stored already (by the request this one waited for, or under another tag): a tag
        // is pointed at it by committing it again.
        Turn::Stored(body) => match tag {
            Some(_) => store_manifest(ctx, name, digest, body, None, tag).await,
            None => Ok(()),
        },
        Turn::Fetch(held) => {
            let fetched = async {
                let get = |u: &UpstreamRef| manifest_request(m, u, &digest.to_string(), true, ctx);
                let (body, media_type) = manifest_body(ask(ctx, m, get).await, digest)?;
                let actual = Digest::of(digest.algorithm(), &body);
                if &actual != digest {
                    return Err(RegistryError::new(
                        ErrorCode::Unavailable,
                        format!(
                            "the upstream sent manifest {actual} for {digest}; nothing was kept"
                        ),
                    ));
                }
                store_manifest(ctx, name, digest, body, media_type.as_deref(), tag).await
            };
            let fetched = fetched.await;
            ctx.unlock(held).await;
            fetched
        }
    }
}

/// What a request that misses `digest` is to do.
enum Turn<T> {
    /// Another request fetched it meanwhile (or it was there): what `stored` found.
    Stored(T),
    /// Fetch it, holding the lock on it that replicas share.
    Fetch(Held),
}

/// Waits for the turn of a request that misses `digest`: whoever takes the lock looks again
/// and fetches, the others look every [`FETCH_POLL_MS`] whether `stored` finds it, and take
/// the lock if the one fetching failed. So a miss is fetched once however many requests
/// have it.
async fn take_turn<T, F, Found>(
    ctx: &Ctx,
    digest: &Digest,
    stored: F,
) -> Result<Turn<T>, RegistryError>
where
    F: Fn() -> Found,
    Found: Future<Output = Result<Option<T>, RegistryError>>,
{
    let deadline = ctx.channel.now().plus(FETCH_WAIT_MS);
    loop {
        if let Some(found) = stored().await? {
            return Ok(Turn::Stored(found));
        }
        if let Some(held) = ctx.try_lock(keys::mirror_fetch_lock(digest)).await? {
            // The one fetching may have finished between the look above and the lock.
            let turn = match stored().await {
                Ok(None) => return Ok(Turn::Fetch(held)),
                Ok(Some(found)) => Ok(Turn::Stored(found)),
                Err(e) => Err(e),
            };
            ctx.unlock(held).await;
            return turn;
        }
        if ctx.channel.now() >= deadline {
            return Err(RegistryError::new(
                ErrorCode::Unavailable,
                format!("{digest} is still being fetched from the upstream; retry"),
            ));
        }
        ctx.channel.perform(Step::Sleep { ms: FETCH_POLL_MS }).await;
    }
}

fn manifest_body(
    answer: UpstreamAnswer,
    reference: &dyn std::fmt::Display,
) -> Result<(Bytes, Option<String>), RegistryError> {
    match answer {
        UpstreamAnswer::Manifest {
            body: Some(body),
            media_type,
            ..
        } => Ok((body, media_type)),
        other => Err(missing(other, ErrorCode::ManifestUnknown, reference)),
    }
}

async fn store_manifest(
    ctx: &Ctx,
    name: &RepoName,
    digest: &Digest,
    body: Bytes,
    media_type: Option<&str>,
    tag: Option<&Tag>,
) -> Result<(), RegistryError> {
    let manifest = Manifest::parse(&body, media_type).map_err(|e| {
        RegistryError::new(
            ErrorCode::Unavailable,
            format!("the upstream sent an invalid manifest {digest}: {e}"),
        )
    })?;
    let watched = fence::watch(ctx).await?;
    let mut locks = vec![keys::manifest_lock(name, digest)];
    locks.extend(tag.map(|t| keys::tag_lock(name, t)));
    ctx.locked(locks, async |held| {
        let tags: Vec<Tag> = tag.into_iter().cloned().collect();
        let current = manifests::prepare(ctx, name, digest, &body, &tags, &[]).await?;
        let tags: Vec<_> = tags.into_iter().zip(current).collect();
        manifests::commit(ctx, name, digest, &body, &manifest, &tags, held).await?;
        // Only the manifest itself is named: its blobs and children are fetched when they
        // are pulled, so naming them would refuse every fetch during a collection.
        let itself = [Named {
            store: StoreRole::Meta,
            digest,
            link: layout::revision_link(name, digest),
        }];
        manifests::confirm_commit(ctx, watched, &itself, name, digest, &tags).await
    })
    .await
}

/// How a missed blob reached the mirror.
pub(super) enum Fetched {
    /// It is stored and linked; the request answers from the store.
    Stored,
    /// This request fetched it and its client was answered with the blob as it arrived
    /// (see [`UpstreamRequest::FetchBlob`]'s `serve`).
    Streamed,
}

/// Makes sure blob `digest` is stored and belongs to `name`, fetching it once however many
/// requests (on however many replicas) miss it at the same time. The request that fetches
/// streams it to its client as it arrives when `serve` gives the answer's headers.
pub(super) async fn fetch_blob(
    ctx: &Ctx,
    m: &Mirrored<'_>,
    name: &RepoName,
    digest: &Digest,
    serve: Option<HeaderMap>,
) -> Result<Fetched, RegistryError> {
    let stored = move || async move { size_in_repo(ctx, name, digest).await };
    match take_turn(ctx, digest, stored).await? {
        Turn::Stored(_) => Ok(Fetched::Stored),
        Turn::Fetch(mut held) => {
            let result = fetch_blob_holding(ctx, m, name, digest, serve, &mut held).await;
            ctx.unlock(held).await;
            result
        }
    }
}

async fn fetch_blob_holding(
    ctx: &Ctx,
    m: &Mirrored<'_>,
    name: &RepoName,
    digest: &Digest,
    serve: Option<HeaderMap>,
    held: &mut Held,
) -> Result<Fetched, RegistryError> {
    let watched = fence::watch(ctx).await?;
    let key = layout::blob_data(digest);
    // Stored already, for another repository: linked here only if the upstream has it
    // here too, so a mirrored repository never serves a blob its upstream would not.
    let answer = if ctx.exists(StoreRole::Blobs, key.clone()).await? {
        ask(ctx, m, |u| UpstreamRequest::BlobExists {
            upstream: u.index,
            repository: m.remote.clone(),
            digest: digest.clone(),
        })
        .await
    } else {
        ask(ctx, m, |u| UpstreamRequest::FetchBlob {
            upstream: u.index,
            repository: m.remote.clone(),
            digest: digest.clone(),
            store: StoreRole::Blobs,
            key: key.clone(),
            tap: Box::new(BodyTap::new(
                Hasher::new(digest.algorithm()),
                None,
                Some(digest.clone()),
            )),
            serve: serve.clone(),
        })
        .await
    };
    let fetched = match answer {
        UpstreamAnswer::Found => Fetched::Stored,
        UpstreamAnswer::Fetched {
            error: None,
            served,
            ..
        } => match served {
            true => Fetched::Streamed,
            false => Fetched::Stored,
        },
        // Only a streamed fetch comes back broken (`ask` tries the next upstream
        // otherwise): its client's stream was cut, nothing was stored.
        UpstreamAnswer::Fetched {
            error: Some(error), ..
        } => {
            return Err(RegistryError::new(
                ErrorCode::Unavailable,
                format!("blob {digest} broke off while it streamed from the upstream: {error}"),
            ));
        }
        answer => return Err(missing(answer, ErrorCode::BlobUnknown, digest)),
    };
    // Only the collector deletes a blob's bytes: it took them before they were linked.
    let size = ctx
        .stat(StoreRole::Blobs, key)
        .await?
        .ok_or_else(|| fence::collecting(digest))?;
    link_into(ctx, held, watched, name, digest, size).await?;
    Ok(fetched)
}

/// Asks the upstreams in order until one has what `request` asks for. An upstream in its
/// `Retry-After` time is skipped; one answering `429` with a time is recorded as such.
/// Without a useful answer, the most telling failure: unavailable over refused over not
/// found.
async fn ask(
    ctx: &Ctx,
    m: &Mirrored<'_>,
    request: impl Fn(&UpstreamRef) -> UpstreamRequest,
) -> UpstreamAnswer {
    let mut worst = UpstreamAnswer::NotFound;
    for upstream in &m.upstreams {
        let backoff = keys::upstream_backoff(&upstream.url);
        let answer = if let Some(Some(_)) = ctx.cache_get(backoff.clone()).await {
            UpstreamAnswer::Unavailable {
                reason: format!("{} asked us to wait (429 Retry-After)", upstream.url),
                retry_after_ms: None,
            }
        } else {
            match ctx.upstream(request(upstream)).await {
                // A broken blob its client was not shown yet: the next upstream may have it.
                UpstreamAnswer::Fetched {
                    error: Some(error),
                    served: false,
                    ..
                } => UpstreamAnswer::Unavailable {
                    reason: format!("{} sent a broken blob: {error}", upstream.url),
                    retry_after_ms: None,
                },
                answer => answer,
            }
        };
        if let UpstreamAnswer::Unavailable {
            retry_after_ms: Some(ms),
            ..
        } = &answer
        {
            ctx.cache_remember(backoff, Bytes::from_static(b"429"), *ms)
                .await;
        }
        worst = match answer {
            UpstreamAnswer::NotFound => worst,
            UpstreamAnswer::Refused { .. }
                if matches!(worst, UpstreamAnswer::Unavailable { .. }) =>
            {
                worst
            }
            UpstreamAnswer::Refused { .. } | UpstreamAnswer::Unavailable { .. } => answer,
            useful => return useful,
        };
    }
    worst
}

/// The error for something the upstreams did not provide and the mirror does not have.
fn missing(
    answer: UpstreamAnswer,
    not_found: ErrorCode,
    what: &dyn std::fmt::Display,
) -> RegistryError {
    match answer {
        UpstreamAnswer::Unavailable {
            reason,
            retry_after_ms,
        } => {
            let code = match retry_after_ms {
                Some(_) => ErrorCode::TooManyRequests,
                None => ErrorCode::Unavailable,
            };
            RegistryError::new(
                code,
                format!("{what} is not cached and the upstream is unavailable: {reason}"),
            )
        }
        UpstreamAnswer::Refused { reason } => RegistryError::new(
            not_found,
            format!("{what} is not cached and the upstream refused it: {reason}"),
        ),
        _ => RegistryError::new(not_found, format!("{what} is unknown here and upstream")),
    }
}
