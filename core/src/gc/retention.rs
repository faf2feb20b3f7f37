//! Retention: which tags a collection keeps (`[repository."<prefix>".retention]`). Every tag
//! no rule keeps is untagged before the mark, so the manifest it pointed at is then
//! reclaimed like any untagged one (with `delete_untagged`), unless an index, a referrer or
//! another tag keeps it.
//!
//! When a tag was pushed is when its `current/link` was last written: every push of the tag
//! writes it, and Distribution's layout stays as it is.

use std::collections::BTreeSet;

use regex::Regex;

use crate::digest::Digest;
use crate::error::RegistryError;
use crate::handlers::manifests::{parse_link, untag};
use crate::handlers::{Ctx, announce, keys};
use crate::layout;
use crate::lock::Held;
use crate::names::{RepoName, Tag};
use crate::repositories::Repositories;
use crate::step::{Millis, Store};

/// One repository's rules. A tag is kept when any rule keeps it.
#[derive(Debug, Clone, Default)]
pub struct Retention {
    /// Keep the tags pushed most recently, this many.
    pub keep_last: Option<usize>,
    /// Keep the tags matching any of these.
    pub keep_tags: Vec<Regex>,
    /// Keep the tags pushed within this many milliseconds.
    pub keep_within_ms: Option<u64>,
}

/// A tag as retention sees it: when it was pushed (`None` when that could not be told).
#[derive(Debug, Clone)]
pub struct TagPush {
    pub tag: Tag,
    pub pushed: Option<Millis>,
}

impl Retention {
    /// The tags of `tags` no rule keeps, at `now`. A tag whose push time is unknown is kept:
    /// a rule that cannot be evaluated keeps what it would judge. Without any rule, every
    /// tag is kept.
    pub fn untagged(&self, tags: &[TagPush], now: Millis) -> Vec<Tag> {
        if self.keep_last.is_none() && self.keep_tags.is_empty() && self.keep_within_ms.is_none() {
            return Vec::new();
        }
        let mut by_age: Vec<&TagPush> = tags.iter().filter(|t| t.pushed.is_some()).collect();
        // Newest first; ties by name, so two runs over the same tags decide alike.
        by_age.sort_by(|a, b| b.pushed.cmp(&a.pushed).then_with(|| a.tag.cmp(&b.tag)));
        let newest: BTreeSet<&Tag> = by_age
            .iter()
            .take(self.keep_last.unwrap_or(0))
            .map(|t| &t.tag)
            .collect();
        tags.iter()
            .filter(|t| {
                let Some(pushed) = t.pushed else {
                    return false;
                };
                let recent = self
                    .keep_within_ms
                    .is_some_and(|within| now.since(pushed) < within);
                let matches = self.keep_tags.iter().any(|r| r.is_match(t.tag.as_str()));
                !(recent || matches || newest.contains(&t.tag))
            })
            .map(|t| t.tag.clone())
            .collect()
    }
}

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
    for folder in layout::folders(ctx.list(Store::Meta, layout::tags_dir(name)).await?) {
        let Ok(tag) = folder.parse::<Tag>() else {
            continue;
        };
        let current = layout::tag_current(name, &tag);
        let pushed = ctx.inspect(Store::Meta, current.clone()).await?;
        let digest = match ctx.read(Store::Meta, current).await? {
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
            let written = ctx.inspect(Store::Meta, current.clone()).await?;
            let points = match ctx.read(Store::Meta, current.clone()).await? {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn push(tag: &str, pushed: Option<u64>) -> TagPush {
        TagPush {
            tag: tag.parse().unwrap(),
            pushed: pushed.map(Millis),
        }
    }

    fn names(tags: Vec<Tag>) -> Vec<String> {
        tags.into_iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn keeps_the_newest_the_matching_and_the_recent() {
        let tags = [
            push("v1", Some(100)),
            push("v2", Some(200)),
            push("v3", Some(300)),
            push("v4", Some(400)),
            push("release-1", Some(50)),
            push("unknown", None),
        ];
        let rule = Retention {
            keep_last: Some(2),
            keep_tags: vec![Regex::new("^release-").unwrap()],
            keep_within_ms: None,
        };
        assert_eq!(names(rule.untagged(&tags, Millis(1_000))), ["v1", "v2"]);
        let recent = Retention {
            keep_within_ms: Some(750),
            ..Retention::default()
        };
        // Pushed at 300 is 700 ms old at 1,000: kept; at 200, 800 ms: untagged.
        assert_eq!(
            names(recent.untagged(&tags, Millis(1_000))),
            ["v1", "v2", "release-1"]
        );
    }

    #[test]
    fn without_rules_every_tag_stays() {
        let tags = [push("a", Some(1)), push("b", None)];
        assert!(Retention::default().untagged(&tags, Millis(10)).is_empty());
        let none_kept = Retention {
            keep_last: Some(0),
            ..Retention::default()
        };
        assert_eq!(names(none_kept.untagged(&tags, Millis(10))), ["a"]);
    }
}
