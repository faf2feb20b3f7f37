//! What to copy where, and in which order.

use std::collections::HashSet;

use stowage_core::digest::Digest;
use stowage_core::step::StoreRole;
use stowage_storage::StoredObject;

use crate::keys::{KeyKind, classify};

/// How an object is copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Content {
    /// Bytes of any size, streamed; verified on the way when the key is a digest.
    Streamed(Option<Digest>),
    /// A link or descriptor of a few bytes, read and compared whole.
    Small,
}

/// One object to copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Job {
    pub from: StoreRole,
    pub to: StoreRole,
    pub key: String,
    pub size: u64,
    pub content: Content,
}

/// The copies in phases, each finished before the next starts, so that the destination
/// never shows what it cannot serve, however the migration stops: blob and manifest bytes
/// first, then the links that put them in repositories, tags last.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub bytes: Phase,
    pub links: Phase,
    pub tags: Phase,
}

#[derive(Debug, Default)]
pub(crate) struct Phase {
    pub jobs: Vec<Job>,
}

impl Plan {
    pub(crate) fn phases(&self) -> [(&'static str, &Phase); 3] {
        [
            ("blobs", &self.bytes),
            ("links", &self.links),
            ("tags", &self.tags),
        ]
    }

    pub(crate) fn total_bytes(&self) -> u64 {
        self.phases()
            .iter()
            .flat_map(|(_, phase)| &phase.jobs)
            .map(|job| job.size)
            .sum()
    }
}

/// The source's objects. A source whose metadata shares the blob store lists once, and has
/// no `meta`.
pub(crate) struct Listing {
    pub blobs: Vec<StoredObject>,
    pub meta: Option<Vec<StoredObject>>,
}

/// Every object goes to the destination store of its kind. Only when a shared source
/// moves to split stores must `v2/blobs/` be sorted out: manifests (named by revision
/// links) belong to the metadata store, everything else to the blob store.
pub(crate) fn plan(listing: Listing, to_shared: bool) -> Plan {
    let split_a_shared_store = listing.meta.is_none() && !to_shared;
    let objects: Vec<(StoreRole, StoredObject, KeyKind)> = listing
        .blobs
        .into_iter()
        .map(|o| (StoreRole::Blobs, o))
        .chain(
            listing
                .meta
                .into_iter()
                .flatten()
                .map(|o| (StoreRole::Meta, o)),
        )
        .map(|(role, o)| {
            let kind = classify(&o.key);
            (role, o, kind)
        })
        .collect();
    let mut manifests = HashSet::new();
    let mut layers = HashSet::new();
    for (_, _, kind) in &objects {
        match kind {
            KeyKind::RevisionLink(d) => manifests.insert(d.clone()),
            KeyKind::LayerLink(d) => layers.insert(d.clone()),
            _ => false,
        };
    }
    let mut plan = Plan::default();
    for (from, object, kind) in objects {
        let job = |to, content| Job {
            from,
            to,
            key: object.key.clone(),
            size: object.size,
            content,
        };
        match kind {
            KeyKind::UploadSession => {}
            KeyKind::Blob(digest) => {
                let targets = if split_a_shared_store {
                    blob_targets(digest.as_ref(), &manifests, &layers)
                } else {
                    vec![from]
                };
                for to in targets {
                    plan.bytes
                        .jobs
                        .push(job(to, Content::Streamed(digest.clone())));
                }
            }
            KeyKind::Tag => plan.tags.jobs.push(job(StoreRole::Meta, Content::Small)),
            KeyKind::LayerLink(_) | KeyKind::RevisionLink(_) | KeyKind::Other => {
                plan.links.jobs.push(job(StoreRole::Meta, Content::Small));
            }
        }
    }
    plan
}

/// Where a shared store's `v2/blobs/` object goes in split stores.
fn blob_targets(
    digest: Option<&Digest>,
    manifests: &HashSet<Digest>,
    layers: &HashSet<Digest>,
) -> Vec<StoreRole> {
    match digest {
        Some(d) if manifests.contains(d) && layers.contains(d) => {
            vec![StoreRole::Meta, StoreRole::Blobs]
        }
        Some(d) if manifests.contains(d) => vec![StoreRole::Meta],
        _ => vec![StoreRole::Blobs],
    }
}

#[cfg(test)]
mod tests {
    use stowage_core::digest::Algorithm;
    use stowage_core::layout;
    use stowage_core::names::{RepoName, Tag};
    use stowage_core::route::UploadId;

    use super::*;

    fn object(key: String) -> StoredObject {
        StoredObject { key, size: 7 }
    }

    struct Repo {
        layer: Digest,
        manifest: Digest,
        objects: Vec<StoredObject>,
    }

    fn repo() -> Repo {
        let name: RepoName = "app".parse().unwrap();
        let tag: Tag = "v1".parse().unwrap();
        let layer = Digest::of(Algorithm::Sha256, b"layer");
        let manifest = Digest::of(Algorithm::Sha256, b"manifest");
        let id = UploadId::parse("u1").unwrap();
        let objects = vec![
            object(layout::tag_current(&name, &tag)),
            object(layout::layer_link(&name, &layer)),
            object(layout::revision_link(&name, &manifest)),
            object(layout::blob_data(&layer)),
            object(layout::blob_data(&manifest)),
            object(layout::upload_record(&name, &id)),
        ];
        Repo {
            layer,
            manifest,
            objects,
        }
    }

    fn targets(plan: &Plan, digest: &Digest) -> Vec<StoreRole> {
        let key = layout::blob_data(digest);
        let jobs = plan.bytes.jobs.iter().filter(|j| j.key == key);
        jobs.map(|j| j.to).collect()
    }

    #[test]
    fn bytes_come_before_links_and_links_before_tags() {
        let repo = repo();
        let listing = Listing {
            blobs: repo.objects,
            meta: None,
        };
        let plan = plan(listing, true);
        assert_eq!(plan.bytes.jobs.len(), 2);
        assert!(
            plan.bytes
                .jobs
                .iter()
                .all(|j| j.key.starts_with("v2/blobs/"))
        );
        assert_eq!(plan.links.jobs.len(), 2);
        assert_eq!(plan.tags.jobs.len(), 1);
        assert!(plan.tags.jobs[0].key.ends_with("/current/link"));
        assert_eq!(
            plan.total_bytes(),
            5 * 7,
            "upload sessions are not migrated"
        );
        let layer = layout::blob_data(&repo.layer);
        let job = plan.bytes.jobs.iter().find(|j| j.key == layer).unwrap();
        assert_eq!(job.content, Content::Streamed(Some(repo.layer.clone())));
    }

    #[test]
    fn a_shared_store_is_split_by_what_the_links_say() {
        let repo = repo();
        let listing = Listing {
            blobs: repo.objects,
            meta: None,
        };
        let plan = plan(listing, false);
        assert_eq!(targets(&plan, &repo.layer), vec![StoreRole::Blobs]);
        assert_eq!(targets(&plan, &repo.manifest), vec![StoreRole::Meta]);
        assert!(plan.links.jobs.iter().all(|j| j.to == StoreRole::Meta));
    }

    #[test]
    fn split_stores_keep_their_roles() {
        let repo = repo();
        let (blobs, meta) = repo
            .objects
            .into_iter()
            .partition(|o| o.key == layout::blob_data(&repo.layer));
        let listing = Listing {
            blobs,
            meta: Some(meta),
        };
        let plan = plan(listing, false);
        assert_eq!(targets(&plan, &repo.layer), vec![StoreRole::Blobs]);
        assert_eq!(targets(&plan, &repo.manifest), vec![StoreRole::Meta]);
        let manifest = layout::blob_data(&repo.manifest);
        let job = plan.bytes.jobs.iter().find(|j| j.key == manifest).unwrap();
        assert_eq!(job.from, StoreRole::Meta);
    }
}
