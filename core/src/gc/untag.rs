//! The collection's retention pass: every tag no retention rule keeps is untagged before the
//! mark, so the manifest it pointed at is then reclaimed like any untagged one (with
//! `delete_untagged`), unless an index, a referrer or another tag keeps it.
//!
//! When a tag was pushed is when its `current/link` was last written: every push of the tag
//! writes it, and Distribution's layout stays as it is.

use crate::digest::Digest;
use crate::error::RegistryError;
use crate::handlers::manifests::{parse_link, untag};
use crate::handlers::{Ctx, announce, keys};
use crate::layout;
use crate::lock::Held;
use crate::names::{RepoName, Tag};
use crate::repositories::Repositories;
use crate::retention::TagPush;
use crate::step::StoreRole;
use crate::time::Millis;

/// A tag retention untags (or, in a dry run, would), with the digest it pointed at.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Untagged {
    pub(super) name: RepoName,
    pub(super) tag: Tag,
    pub(super) digest: Digest,
}

/// The tags of `name` with when each was pushed and what it points at.
async fn tags_of(
    ctx: &Ctx,
    name: &RepoName,
) -> Result<Vec<(TagPush, Option<Digest>)>, RegistryError> {
    let mut found = Vec::new();
    for folder in layout::folders(ctx.list(StoreRole::Meta, layout::tags_dir(name)).await?) {
        let Ok(tag) = folder.parse::<Tag>() else {
            continue;
        };
        let current = layout::tag_current(name, &tag);
        let pushed = ctx.inspect(StoreRole::Meta, current.clone()).await?;
        let digest = match ctx.read(StoreRole::Meta, current).await? {
            Some(link) => parse_link(&link).ok(),
            None => None,
        };
        // Unreadable, it is kept: the rule cannot judge it.
        let pushed = pushed
            .map(|info| info.modified)
            .filter(|_| digest.is_some());
        found.push((TagPush { tag, pushed }, digest));
    }
    Ok(found)
}

/// What retention untags in `names` at `now`: found and, unless `dry_run`, untagged. An
/// immutable tag is never untagged, nor one pushed again since it was judged, nor one whose
/// lock is taken (the collector never waits on a writer).
pub(super) async fn apply(
    ctx: &Ctx,
    repositories: &Repositories,
    names: &[RepoName],
    now: Millis,
    dry_run: bool,
    lease: &mut Held,
) -> Result<Vec<Untagged>, RegistryError> {
    let mut done = Vec::new();
    for name in names {
        let Some(retention) = repositories
            .for_name(name.as_str())
            .and_then(|s| s.retention.as_ref())
        else {
            continue;
        };
        let tags = tags_of(ctx, name).await?;
        let pushes: Vec<TagPush> = tags.iter().map(|(push, _)| push.clone()).collect();
        for tag in retention.untagged(&pushes, now) {
            if repositories.tag_is_immutable(name.as_str(), tag.as_str()) {
                continue;
            }
            let Some((push, Some(digest))) = tags.iter().find(|(p, _)| p.tag == tag) else {
                continue;
            };
            let judged = Untagged {
                name: name.clone(),
                tag,
                digest: digest.clone(),
            };
            if dry_run || untag_judged(ctx, lease, &judged, push.pushed).await? {
                done.push(judged);
            }
        }
    }
    Ok(done)
}

/// Untags `judged` under its lock if it still points where it did, written when it was.
async fn untag_judged(
    ctx: &Ctx,
    lease: &mut Held,
    judged: &Untagged,
    pushed: Option<Millis>,
) -> Result<bool, RegistryError> {
    ctx.ensure(lease).await?;
    let Untagged { name, tag, digest } = judged;
    let current = layout::tag_current(name, tag);
    let events = ctx
        .try_locked(keys::tag_lock(name, tag), async |held| {
            let written = ctx.inspect(StoreRole::Meta, current.clone()).await?;
            let points = match ctx.read(StoreRole::Meta, current.clone()).await? {
                Some(link) => parse_link(&link).ok(),
                None => None,
            };
            if written.map(|i| i.modified) != pushed || points.as_ref() != Some(digest) {
                return Ok(None);
            }
            untag(ctx, held, name, tag, digest).await.map(Some)
        })
        .await?;
    let Some(Some(events)) = events else {
        return Ok(false);
    };
    announce::after(ctx, events).await?;
    Ok(true)
}
