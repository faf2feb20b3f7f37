//! Garbage collection, online: run beside live replicas, it deletes the bytes no manifest
//! references, the layer links no manifest of their repository names, and (asked to) the
//! manifests nothing keeps, never what an acknowledged push needs.
//!
//! One run, holding the collector's lease (a lock: one collector per store at a time):
//! 1. mark ([`mark`]): every repository's manifests (all, or with `delete_untagged` those
//!    tagged, younger than the grace period or referred to) and, recursively, their child
//!    manifests, subjects and referrers are kept; what they are and name is live;
//! 2. find the content addresses not live and older than the grace period ([`sweep`]);
//! 3. unless a dry run: publish the fence, mark again, delete what both marks agree on,
//!    lift the fence (`handlers/fence.rs` holds the safety argument).
//!
//! The grace period spares pushes in progress (blobs uploaded, manifest not yet pushed);
//! safety does not rest on it, nor on any clock: only on the fence and the second mark.

mod mark;
mod sweep;
mod untag;

use serde::{Deserialize, Serialize};

use std::collections::BTreeSet;

use crate::handlers::{Ctx, keys};
use crate::names::{RepoName, Tag};
use crate::op::Operation;
use crate::repositories::Repositories;
use crate::response::{error_response, report_response};
use crate::rng::Entropy;
use crate::{Registry, error::RegistryError};

pub use crate::handlers::fence::GcState;

/// How many objects one storage batch of a run asks about (manifests read, links
/// inspected, markers written, blobs deleted): thousands cost a few round trips each, and a
/// wave's answers are all in memory at once.
const PER_WAVE: usize = 256;

/// How a run collects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcSettings {
    /// Unreferenced bytes, links and untagged manifests younger than this are kept.
    pub grace_ms: u64,
    /// Whether manifests no tag, index or referrer keeps are deleted too.
    pub delete_untagged: bool,
    /// Report what would be deleted, and delete nothing.
    pub dry_run: bool,
    /// Whether the metadata store is a backend of its own (its manifest bytes are then
    /// swept as well; otherwise they live among the blobs).
    pub separate_meta_store: bool,
}

/// What a run did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcReport {
    pub dry_run: bool,
    pub repositories: u64,
    pub manifests_kept: u64,
    /// Digests found referenced (manifests, configs, layers).
    pub live_digests: u64,
    pub blobs_deleted: u64,
    pub bytes_deleted: u64,
    pub layer_links_deleted: u64,
    pub manifests_deleted: u64,
    /// Found garbage by the first mark, kept by the second: a push named them meanwhile.
    pub spared: u64,
    /// Manifests that could not be read or parsed: nothing was deleted, since what they
    /// name is unknown.
    pub unreadable_manifests: u64,
    /// `repository:tag` of every tag retention untagged, in order.
    pub tags_untagged: Vec<String>,
    pub elapsed_ms: u64,
}

impl Registry {
    /// A collection, run by a driver like a request: it answers `200` with its [`GcReport`]
    /// as JSON, or the error that stopped it (`503` while another collector holds the
    /// lease).
    pub fn collect(&self, settings: GcSettings, entropy: Entropy) -> Operation {
        // Manifests it deletes are announced like any deletion, by no identity.
        let (channel, ctx) = self.own_operation(entropy);
        let repositories = self.repositories.clone();
        Operation::new(
            channel,
            Box::pin(async move {
                match run(&ctx, &settings, &repositories).await {
                    Ok(report) => report_response(&report),
                    Err(e) => error_response(&e),
                }
            }),
        )
    }
}

async fn run(
    ctx: &Ctx,
    settings: &GcSettings,
    repositories: &Repositories,
) -> Result<GcReport, RegistryError> {
    let started = ctx.channel.now();
    let report = ctx
        .locked(vec![keys::GC_LOCK.to_owned()], async |lease| {
            let names = mark::repositories(ctx).await?;
            let untagged =
                untag::apply(ctx, repositories, &names, started, settings.dry_run, lease).await?;
            // A dry run leaves the tags, and marks as if they were gone.
            let gone: BTreeSet<(RepoName, Tag)> = untagged
                .iter()
                .map(|u| (u.name.clone(), u.tag.clone()))
                .collect();
            let first = mark::Mark {
                now: started,
                deletable: mark::Deletable::Any,
                untagged: &gone,
            };
            let marking = mark::mark(ctx, settings, lease, first).await?;
            let mut blobs = Vec::new();
            for store in sweep::swept_stores(settings) {
                let found =
                    sweep::unreferenced(ctx, *store, &marking.live, settings, lease, started);
                blobs.extend(found.await?);
            }
            let garbage = sweep::Garbage { marking, blobs };
            let report = if settings.dry_run || garbage.marking.unreadable > 0 {
                garbage.report(settings.dry_run)
            } else if garbage.is_empty() {
                sweep::lower_dead_collectors_fence(ctx, lease).await?;
                garbage.report(false)
            } else {
                sweep::delete(ctx, settings, lease, garbage, &gone).await?
            };
            let tags_untagged = untagged
                .iter()
                .map(|u| format!("{}:{}", u.name, u.tag))
                .collect();
            Ok(GcReport {
                tags_untagged,
                ..report
            })
        })
        .await?;
    Ok(GcReport {
        elapsed_ms: ctx.channel.now().since(started),
        ..report
    })
}
