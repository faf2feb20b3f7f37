//! The mark: which digests every repository still needs, and which of a repository's own
//! links and revisions nothing keeps. Manifests are read a wave at a time and their bytes
//! forgotten: what stays in memory is digests (the live set, what each manifest names, for
//! the second mark, and the candidates found).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::digest::Digest;
use crate::error::RegistryError;
use crate::handlers::Ctx;
use crate::layout;
use crate::lock::Held;
use crate::manifest::Manifest;
use crate::names::{RepoName, Tag};
use crate::step::StoreRole;
use crate::time::Millis;

use super::{GcSettings, PER_WAVE};

/// What one mark found.
#[derive(Debug, Default)]
pub(super) struct Marking {
    /// Every digest a kept manifest is or names, in any repository.
    pub(super) live: HashSet<Digest>,
    /// Layer links no kept manifest of their repository names, older than the grace period.
    pub(super) links: BTreeSet<(RepoName, Digest)>,
    /// Manifests nothing keeps (only with `delete_untagged`), older than the grace period.
    pub(super) manifests: BTreeSet<(RepoName, Digest)>,
    pub(super) repositories: u64,
    pub(super) manifests_kept: u64,
    /// Revisions whose manifest could not be read or parsed: what they name is unknown,
    /// so nothing may be swept.
    pub(super) unreadable: u64,
    /// What each manifest this mark read names.
    pub(super) named: HashMap<Digest, Names>,
}

/// What a manifest names: its blobs, its child manifests and its subject.
#[derive(Debug)]
pub(super) struct Names {
    blobs: Vec<Digest>,
    manifests: Vec<Digest>,
    subject: Option<Digest>,
}

impl Names {
    fn of(manifest: Manifest) -> Names {
        Names {
            blobs: manifest.blobs,
            manifests: manifest.manifests,
            subject: manifest.subject,
        }
    }
}

/// What a mark may find deletable: anything (the first mark), or only what the first mark
/// found so (the second). A manifest or a layer link the second mark sees for the first
/// time stays whatever it is, so what it names must stay with it.
#[derive(Clone, Copy)]
pub(super) enum Deletable<'a> {
    Any,
    FoundBy(&'a Marking),
}

impl Deletable<'_> {
    fn manifest(&self, name: &RepoName, digest: &Digest) -> bool {
        match self {
            Deletable::Any => true,
            Deletable::FoundBy(first) => first.manifests.contains(&(name.clone(), digest.clone())),
        }
    }

    fn link(&self, name: &RepoName, digest: &Digest) -> bool {
        match self {
            Deletable::Any => true,
            Deletable::FoundBy(first) => first.links.contains(&(name.clone(), digest.clone())),
        }
    }
}

/// How a mark looks: at `now`, deleting what `deletable` allows, as if the tags retention
/// untags (`untagged`) were gone (a dry run leaves them).
#[derive(Clone, Copy)]
pub(super) struct Mark<'a> {
    pub(super) now: Millis,
    pub(super) deletable: Deletable<'a>,
    pub(super) untagged: &'a BTreeSet<(RepoName, Tag)>,
}

/// Marks every repository, keeping the collector's `lease` (a mark may take longer than
/// its TTL).
pub(super) async fn mark(
    ctx: &Ctx,
    settings: &GcSettings,
    lease: &mut Held,
    how: Mark<'_>,
) -> Result<Marking, RegistryError> {
    let phase = match how.deletable {
        Deletable::Any => "marking",
        Deletable::FoundBy(_) => "marking again",
    };
    let mut marking = Marking::default();
    let names = repositories(ctx).await?;
    for (done, name) in names.iter().enumerate() {
        ctx.progress(phase, done, names.len()).await;
        marking.repositories += 1;
        mark_repository(ctx, settings, lease, name, how, &mut marking).await?;
    }
    Ok(marking)
}

/// Every repository: the folders below `v2/repositories/` holding `_manifests/` or
/// `_layers/`, at any depth (as the catalog finds them).
pub(super) async fn repositories(ctx: &Ctx) -> Result<Vec<RepoName>, RegistryError> {
    let mut found = Vec::new();
    let mut pending = vec![String::new()];
    while let Some(prefix) = pending.pop() {
        let entries = ctx
            .list(StoreRole::Meta, format!("{}{prefix}", layout::REPOSITORIES))
            .await?;
        let own = entries
            .iter()
            .any(|e| e == "_manifests/" || e == "_layers/");
        if own && let Ok(name) = prefix.trim_end_matches('/').parse::<RepoName>() {
            found.push(name);
        }
        pending.extend(
            layout::folders(entries)
                .filter(|e| !e.starts_with('_'))
                .map(|e| format!("{prefix}{e}/")),
        );
    }
    Ok(found)
}

/// The digests of a `<alg>/<hex>/` tree below `dir`.
pub(super) async fn digests_below(
    ctx: &Ctx,
    store: StoreRole,
    dir: &str,
) -> Result<Vec<Digest>, RegistryError> {
    let mut digests = Vec::new();
    for algorithm in layout::folders(ctx.list(store, dir.to_owned()).await?) {
        let below = ctx.list(store, format!("{dir}{algorithm}/")).await?;
        digests.extend(
            layout::folders(below).filter_map(|hex| format!("{algorithm}:{hex}").parse().ok()),
        );
    }
    Ok(digests)
}

/// A revision: a manifest of the repository, with when its link was written.
struct Revision {
    written: Millis,
}

/// The manifests of a repository, by digest (those whose link exists).
async fn revisions(
    ctx: &Ctx,
    name: &RepoName,
) -> Result<BTreeMap<Digest, Revision>, RegistryError> {
    let digests = digests_below(ctx, StoreRole::Meta, &layout::revisions_dir(name)).await?;
    let links = digests
        .iter()
        .map(|digest| layout::revision_link(name, digest))
        .collect();
    let infos = ctx.inspect_each(StoreRole::Meta, links).await?;
    Ok(digests
        .into_iter()
        .zip(infos)
        .filter_map(|(digest, info)| {
            let written = info?.modified;
            Some((digest, Revision { written }))
        })
        .collect())
}

/// The manifests the repository's tags point at, but for the tags in `untagged`.
async fn tagged(
    ctx: &Ctx,
    name: &RepoName,
    untagged: &BTreeSet<(RepoName, Tag)>,
) -> Result<BTreeSet<Digest>, RegistryError> {
    let mut found = BTreeSet::new();
    for tag in layout::folders(ctx.list(StoreRole::Meta, layout::tags_dir(name)).await?) {
        let Ok(tag) = tag.parse::<Tag>() else {
            continue;
        };
        if untagged.contains(&(name.clone(), tag.clone())) {
            continue;
        }
        let current = ctx
            .read(StoreRole::Meta, layout::tag_current(name, &tag))
            .await?;
        if let Some(digest) = current
            .as_deref()
            .and_then(|link| std::str::from_utf8(link).ok())
            .and_then(|link| link.trim().parse().ok())
        {
            found.insert(digest);
        }
    }
    Ok(found)
}

/// Subject -> the manifests referring to it, from the repository's referrer entries.
async fn referrers(
    ctx: &Ctx,
    name: &RepoName,
) -> Result<BTreeMap<Digest, Vec<Digest>>, RegistryError> {
    let mut found = BTreeMap::new();
    for subject in digests_below(ctx, StoreRole::Meta, &layout::referrers_root(name)).await? {
        let entries = ctx
            .list(StoreRole::Meta, layout::referrers_dir(name, &subject))
            .await?;
        let referring: Vec<Digest> = entries
            .iter()
            .filter_map(|entry| entry.split_once('-'))
            .filter_map(|(algorithm, hex)| format!("{algorithm}:{hex}").parse().ok())
            .collect();
        if !referring.is_empty() {
            found.insert(subject, referring);
        }
    }
    Ok(found)
}

fn older_than_grace(written: Millis, now: Millis, settings: &GcSettings) -> bool {
    now.since(written) >= settings.grace_ms
}

async fn mark_repository(
    ctx: &Ctx,
    settings: &GcSettings,
    lease: &mut Held,
    name: &RepoName,
    how: Mark<'_>,
    marking: &mut Marking,
) -> Result<(), RegistryError> {
    let Mark {
        now,
        deletable,
        untagged,
    } = how;
    let revisions = revisions(ctx, name).await?;
    let referrers = referrers(ctx, name).await?;
    let roots: Vec<Digest> = if settings.delete_untagged {
        // Tagged, young (a push in progress names its children before its index is
        // tagged), pointed at by a referrer, or not deletable by this run.
        let tagged = tagged(ctx, name, untagged).await?;
        revisions
            .iter()
            .filter(|(digest, revision)| {
                tagged.contains(*digest)
                    || !older_than_grace(revision.written, now, settings)
                    || referrers.contains_key(*digest)
                    || !deletable.manifest(name, digest)
            })
            .map(|(digest, _)| digest.clone())
            .collect()
    } else {
        revisions.keys().cloned().collect()
    };
    // Kept: the roots and, recursively, their children, subjects and referrers that are
    // manifests of this repository.
    let mut kept: HashSet<Digest> = HashSet::new();
    let mut named_blobs: HashSet<Digest> = HashSet::new();
    let mut pending = roots;
    while !pending.is_empty() {
        let wave: Vec<Digest> = pending
            .split_off(pending.len().saturating_sub(PER_WAVE))
            .into_iter()
            .filter(|digest| kept.insert(digest.clone()))
            .collect();
        ctx.ensure(lease).await?;
        // A manifest's bytes never change: the second mark reads only those new to it.
        let known = |digest: &Digest| match deletable {
            Deletable::FoundBy(first) => first.named.contains_key(digest),
            Deletable::Any => false,
        };
        let unread: Vec<&Digest> = wave.iter().filter(|digest| !known(digest)).collect();
        let keys = unread
            .iter()
            .map(|digest| layout::blob_data(digest))
            .collect();
        let bodies = ctx.read_each(StoreRole::Meta, keys).await?;
        for (digest, bytes) in unread.into_iter().zip(bodies) {
            match bytes.and_then(|bytes| Manifest::parse(&bytes, None).ok()) {
                Some(manifest) => {
                    marking.named.insert(digest.clone(), Names::of(manifest));
                }
                None => marking.unreadable += 1,
            }
        }
        for digest in wave {
            let names = match deletable {
                Deletable::FoundBy(first) if known(&digest) => first.named.get(&digest),
                _ => marking.named.get(&digest),
            };
            let Some(names) = names else {
                continue; // unreadable, counted above
            };
            let related = names
                .manifests
                .iter()
                .chain(&names.subject)
                .chain(referrers.get(&digest).into_iter().flatten());
            for other in related {
                marking.live.insert(other.clone());
                if revisions.contains_key(other) {
                    pending.push(other.clone());
                }
            }
            named_blobs.extend(names.blobs.iter().cloned());
        }
    }
    marking.manifests_kept += kept.len() as u64;
    let unnamed: Vec<Digest> = digests_below(ctx, StoreRole::Meta, &layout::layers_dir(name))
        .await?
        .into_iter()
        .filter(|digest| !named_blobs.contains(digest))
        .collect();
    for wave in unnamed.chunks(PER_WAVE) {
        ctx.ensure(lease).await?;
        let links = wave
            .iter()
            .map(|digest| layout::layer_link(name, digest))
            .collect();
        let infos = ctx.inspect_each(StoreRole::Meta, links).await?;
        for (digest, link) in wave.iter().zip(infos) {
            match link {
                Some(info)
                    if older_than_grace(info.modified, now, settings)
                        && deletable.link(name, digest) =>
                {
                    marking.links.insert((name.clone(), digest.clone()));
                }
                // A link that stays keeps its bytes: a push in progress uploaded them, and
                // its manifest, checked against the link, will name them.
                Some(_) => {
                    marking.live.insert(digest.clone());
                }
                None => {}
            }
        }
    }
    marking.manifests.extend(
        revisions
            .keys()
            .filter(|digest| !kept.contains(*digest))
            .map(|digest| (name.clone(), digest.clone())),
    );
    marking.live.extend(named_blobs);
    marking.live.extend(kept);
    Ok(())
}
