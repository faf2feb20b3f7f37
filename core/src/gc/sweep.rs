//! The sweep: finds the unreferenced bytes, and deletes what two marks agree on behind the
//! fence (see [`super::fence`]).

use std::collections::{BTreeSet, HashSet};

use bytes::Bytes;

use crate::digest::Digest;
use crate::error::{ErrorCode, RegistryError};
use crate::handlers::blobs::unlink;
use crate::handlers::manifests::{remove_manifest, tags_pointing_at};
use crate::handlers::{Ctx, announce, keys};
use crate::layout;
use crate::lock::Held;
use crate::names::{RepoName, Tag};
use crate::step::StoreRole;
use crate::time::Millis;

use super::mark::{self, Marking};
use super::{GcReport, GcSettings, PER_WAVE};
use crate::handlers::fence::{self, GcState};

/// Bytes at a content address that nothing references.
#[derive(Debug, Clone)]
pub(super) struct UnreferencedBlob {
    store: StoreRole,
    digest: Digest,
    size: u64,
}

/// The content addresses of `store` not in `live` and written before the grace period,
/// one `<alg>/<xx>/` folder in memory at a time.
pub(super) async fn unreferenced(
    ctx: &Ctx,
    store: StoreRole,
    live: &HashSet<Digest>,
    settings: &GcSettings,
    lease: &mut Held,
    now: Millis,
) -> Result<Vec<UnreferencedBlob>, RegistryError> {
    let mut found = Vec::new();
    for algorithm in layout::folders(ctx.list(store, layout::BLOBS.to_owned()).await?) {
        let by_algorithm = format!("{}{algorithm}/", layout::BLOBS);
        let prefixes: Vec<String> =
            layout::folders(ctx.list(store, by_algorithm.clone()).await?).collect();
        for (done, prefix) in prefixes.iter().enumerate() {
            ctx.progress("sweeping", done, prefixes.len()).await;
            let folder = format!("{by_algorithm}{prefix}/");
            ctx.ensure(lease).await?;
            let candidates: Vec<Digest> = layout::folders(ctx.list(store, folder).await?)
                .filter_map(|hex| format!("{algorithm}:{hex}").parse().ok())
                .filter(|digest| !live.contains(digest))
                .collect();
            let keys = candidates.iter().map(layout::blob_data).collect();
            let infos = ctx.inspect_each(store, keys).await?;
            for (digest, info) in candidates.into_iter().zip(infos) {
                if let Some(info) = info
                    && now.since(info.modified) >= settings.grace_ms
                {
                    found.push(UnreferencedBlob {
                        store,
                        digest,
                        size: info.size,
                    });
                }
            }
        }
    }
    Ok(found)
}

/// The stores whose content addresses are swept: the metadata store's too when it is a
/// backend of its own (it holds the manifests' bytes).
pub(super) fn swept_stores(settings: &GcSettings) -> &'static [StoreRole] {
    if settings.separate_meta_store {
        &[StoreRole::Blobs, StoreRole::Meta]
    } else {
        &[StoreRole::Blobs]
    }
}

/// What the first mark found to delete.
pub(super) struct Garbage {
    pub(super) marking: Marking,
    pub(super) blobs: Vec<UnreferencedBlob>,
}

impl Garbage {
    pub(super) fn is_empty(&self) -> bool {
        self.blobs.is_empty() && self.marking.links.is_empty() && self.marking.manifests.is_empty()
    }

    /// The report of deleting all of it (what a dry run prints).
    pub(super) fn report(&self, dry_run: bool) -> GcReport {
        GcReport {
            dry_run,
            repositories: self.marking.repositories,
            manifests_kept: self.marking.manifests_kept,
            live_digests: self.marking.live.len() as u64,
            blobs_deleted: self.blobs.len() as u64,
            bytes_deleted: self.blobs.iter().map(|b| b.size).sum(),
            layer_links_deleted: self.marking.links.len() as u64,
            manifests_deleted: self.marking.manifests.len() as u64,
            unreadable_manifests: self.marking.unreadable,
            ..GcReport::default()
        }
    }

    /// Every digest some deletion touches.
    fn doomed(&self) -> BTreeSet<&Digest> {
        let blobs = self.blobs.iter().map(|b| &b.digest);
        let links = self.marking.links.iter().map(|(_, d)| d);
        let manifests = self.marking.manifests.iter().map(|(_, d)| d);
        blobs.chain(links).chain(manifests).collect()
    }
}

/// Deletes what `garbage` holds and a second mark, made behind the fence, agrees on;
/// `lease` is the collector's lock, checked before every deletion.
pub(super) async fn delete(
    ctx: &Ctx,
    settings: &GcSettings,
    lease: &mut Held,
    garbage: Garbage,
    untagged: &BTreeSet<(RepoName, Tag)>,
) -> Result<GcReport, RegistryError> {
    let previous = fence::read_state(ctx).await?;
    let state = GcState {
        epoch: previous.epoch.wrapping_add(1),
        deleting: true,
    };
    ctx.ensure(lease).await?;
    fence::write_state(ctx, state).await?;
    let deleted = publish_and_delete(ctx, settings, lease, &garbage, untagged).await;
    // Every deletion above has finished, so the markers may go.
    lower_fence(ctx, lease, state).await?;
    let planned = garbage.report(false);
    let mut done = deleted?;
    done.spared = (planned.blobs_deleted + planned.layer_links_deleted + planned.manifests_deleted)
        - (done.blobs_deleted + done.layer_links_deleted + done.manifests_deleted);
    Ok(done)
}

/// Removes the doomed markers and publishes `state` as no longer deleting; unless the lease
/// was lost: then another collector may be deleting behind markers of its own.
async fn lower_fence(ctx: &Ctx, lease: &mut Held, state: GcState) -> Result<(), RegistryError> {
    ctx.ensure(lease).await?;
    ctx.delete_all(StoreRole::Meta, layout::GC_DOOMED.to_owned())
        .await?;
    fence::write_state(
        ctx,
        GcState {
            deleting: false,
            ..state
        },
    )
    .await
}

/// For a run that deletes nothing: a collector that died while deleting left the fence up
/// (writers refuse its doomed digests until it is down), and this run, holding the lease,
/// takes it down.
pub(super) async fn lower_dead_collectors_fence(
    ctx: &Ctx,
    lease: &mut Held,
) -> Result<(), RegistryError> {
    let state = fence::read_state(ctx).await?;
    if !state.deleting {
        return Ok(());
    }
    lower_fence(ctx, lease, state).await
}

async fn publish_and_delete(
    ctx: &Ctx,
    settings: &GcSettings,
    lease: &mut Held,
    garbage: &Garbage,
    untagged: &BTreeSet<(RepoName, Tag)>,
) -> Result<GcReport, RegistryError> {
    let doomed: Vec<&Digest> = garbage.doomed().into_iter().collect();
    for (done, wave) in doomed.chunks(PER_WAVE).enumerate() {
        ctx.progress("fencing", done * PER_WAVE, doomed.len()).await;
        ctx.ensure(lease).await?;
        // Empty: a marker's name says all, and an empty file takes no block on a disk, so
        // the fence fits in the little room deleting manifests frees on a full one.
        let markers = wave
            .iter()
            .map(|digest| (layout::gc_doomed(digest), Bytes::new()))
            .collect();
        ctx.create_each(StoreRole::Meta, markers).await?;
    }
    // Only what the first mark found deletable may be deleted: a manifest or a link first
    // seen now stays, and keeps what it names.
    let second = mark::Mark {
        now: ctx.channel.now(),
        deletable: mark::Deletable::FoundBy(&garbage.marking),
        untagged,
    };
    let second = mark::mark(ctx, settings, lease, second).await?;
    let mut report = GcReport {
        repositories: second.repositories,
        manifests_kept: second.manifests_kept,
        live_digests: second.live.len() as u64,
        unreadable_manifests: second.unreadable,
        ..GcReport::default()
    };
    if second.unreadable > 0 {
        return Ok(report);
    }
    for (name, digest) in garbage.marking.manifests.intersection(&second.manifests) {
        ctx.ensure(lease).await?;
        if remove_untagged(ctx, name, digest).await? {
            report.manifests_deleted += 1;
        } else {
            // It stays (tagged meanwhile, its lock taken, or not found through a stale cache
            // entry): what it names was found garbage only because it was not kept. This run
            // stops.
            return Ok(report);
        }
    }
    // The collector never waits on a writer's lock (its lease would run out meanwhile, and
    // the push would stall): a link whose lock is taken stays, and keeps its bytes.
    let mut busy = HashSet::new();
    for (name, digest) in garbage.marking.links.intersection(&second.links) {
        ctx.ensure(lease).await?;
        let lock = keys::blob_lock(name, digest);
        match ctx
            .try_locked(lock, async |held| unlink(ctx, held, name, digest).await)
            .await?
        {
            Some(true) => report.layer_links_deleted += 1,
            Some(false) => {}
            None => {
                busy.insert(digest);
            }
        }
    }
    let deletable: Vec<&UnreferencedBlob> = garbage
        .blobs
        .iter()
        .filter(|blob| !second.live.contains(&blob.digest) && !busy.contains(&blob.digest))
        .collect();
    for (done, wave) in deletable.chunks(PER_WAVE).enumerate() {
        ctx.progress("deleting", done * PER_WAVE, deletable.len())
            .await;
        ctx.ensure(lease).await?;
        let folders = wave
            .iter()
            .map(|blob| (blob.store, layout::blob_dir(&blob.digest)))
            .collect();
        ctx.delete_all_each(folders).await?;
        report.blobs_deleted += wave.len() as u64;
        report.bytes_deleted += wave.iter().map(|blob| blob.size).sum::<u64>();
    }
    Ok(report)
}

/// Removes a manifest nothing keeps, under its lock, as a `DELETE` by digest would (the
/// webhooks hear of it as of any deletion); not if a tag points at it by now (a push tagged
/// it after the mark), nor while someone else holds its lock (the collector never waits on
/// a writer). `false` when it stayed.
async fn remove_untagged(
    ctx: &Ctx,
    name: &RepoName,
    digest: &Digest,
) -> Result<bool, RegistryError> {
    let removed = ctx
        .try_locked(keys::manifest_lock(name, digest), async |held| {
            if !tags_pointing_at(ctx, name, digest).await?.is_empty() {
                return Ok(None);
            }
            match remove_manifest(ctx, name, digest, &[], &mut [held]).await {
                Ok(events) => Ok(Some(events)),
                Err(e) if e.code == ErrorCode::ManifestUnknown => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await?;
    let Some(Some(events)) = removed else {
        return Ok(false);
    };
    announce::after(ctx, events).await?;
    Ok(true)
}
