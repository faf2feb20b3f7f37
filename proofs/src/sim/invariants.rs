//! The invariants checked once every client has finished, reading through every replica
//! with no faults, against what the history allows.

use http::StatusCode;
use stowage_core::digest::{Algorithm, Digest};
use stowage_core::layout;
use stowage_core::manifest::Manifest;
use stowage_core::names::RepoName;
use stowage_core::step::StoreRole;

use super::Violation;
use super::cluster::Cluster;
use super::history::Record;
use super::workload::{self, Kind, MIRRORED, Op, REPOS, TAGS};
use crate::integrity::corrupt_blobs;
use crate::request::{BrokenBody, Reply, Request};

pub(super) fn check(cluster: &mut Cluster) -> Result<(), Violation> {
    if let Some(corrupt) = corrupt_blobs(&cluster.world.store).into_iter().next() {
        return Err(Violation::CorruptBlob(corrupt));
    }
    check_locks_released(cluster)?;
    check_blobs(cluster)?;
    check_manifests(cluster)?;
    check_tags(cluster)?;
    if !cluster.config.limits.allow_missing_manifest_references {
        check_references(cluster)?;
    }
    // Only a clock jump lets two operations hold one lock: without, tags never dangle.
    if cluster.config.faults.clock_jump == 0 {
        check_no_dangling_tags(cluster)?;
    }
    // Only faults can leave the cache behind storage: without, they agree.
    if !cluster.config.faults.any() {
        check_cache_agrees(cluster)?;
    }
    check_mirror(cluster)?;
    check_locks_expire(cluster)
}

/// Through every replica, the mirrored repository answers each tag and blob as the upstream
/// holds them, whatever the collector took meanwhile (it is fetched again). In a run with
/// no faults, no collector and no stalled lock holder, no blob or manifest came from the
/// upstream twice, these reads included.
fn check_mirror(cluster: &mut Cluster) -> Result<(), Violation> {
    let tags = TAGS.iter().filter_map(|tag| {
        let digest = workload::upstream_tag(tag)?;
        Some((format!("/v2/{MIRRORED}/manifests/{tag}"), digest))
    });
    let blobs = workload::upstream_blobs().into_iter().map(|digest| {
        let path = format!("/v2/{MIRRORED}/blobs/{digest}");
        (path, digest)
    });
    for (path, digest) in tags.chain(blobs).collect::<Vec<_>>() {
        // A collector that died while deleting left its fence up: what it doomed is refused
        // until the next run takes it down.
        let doomed = cluster
            .world
            .store
            .objects(StoreRole::Meta)
            .get(&layout::gc_doomed(&digest))
            .is_some();
        for reply in read_everywhere(cluster, &path) {
            let got = summarize(&reply, digest.algorithm());
            let fenced = doomed
                && (reply.status == StatusCode::SERVICE_UNAVAILABLE
                    || reply.body == Err(BrokenBody::Cut));
            if got != digest.to_string() && !fenced {
                return Err(Violation::MirrorDiffers {
                    path,
                    got,
                    upstream: digest.to_string(),
                });
            }
        }
    }
    let config = &cluster.config;
    if config.faults.any() || config.gc.is_some() || !config.clients_keep_alive {
        return Ok(());
    }
    let sent = cluster
        .world
        .upstream
        .as_ref()
        .map(|u| u.sent.clone())
        .unwrap_or_default();
    let manifests = TAGS.iter().filter_map(|tag| workload::upstream_tag(tag));
    for digest in workload::upstream_blobs().into_iter().chain(manifests) {
        let times = sent.iter().filter(|d| **d == digest).count();
        if times > 1 {
            return Err(Violation::FetchedAgain { digest, times });
        }
    }
    Ok(())
}

/// `GET path` through every replica.
fn read_everywhere(cluster: &mut Cluster, path: &str) -> Vec<Reply> {
    (0..cluster.config.replicas)
        .map(|replica| {
            let seed = u64::MAX - replica as u64;
            cluster
                .world
                .run(&cluster.registries[replica], Request::get(path), seed)
        })
        .collect()
}

/// How a read answered, in one word: the status, or the body's digest under `algorithm`
/// when 200.
fn summarize(reply: &Reply, algorithm: Algorithm) -> String {
    match (&reply.body, reply.status) {
        (Ok(body), StatusCode::OK) => Digest::of(algorithm, body).to_string(),
        (Err(broken), _) => broken.to_string(),
        (_, status) => status.as_u16().to_string(),
    }
}

/// Whether any request matching `is_target` may have acted after `tick`.
fn any_after(cluster: &Cluster, tick: u64, is_target: impl Fn(&Kind) -> bool) -> bool {
    cluster
        .history
        .iter()
        .any(|r| is_target(&r.kind) && r.may_act_after(tick))
}

/// Whether a garbage collection may have acted after `tick`.
fn collected_after(cluster: &Cluster, tick: u64) -> bool {
    any_after(cluster, tick, |k| *k == Kind::Collect)
}

fn acknowledged(cluster: &Cluster) -> Vec<Record> {
    cluster
        .history
        .iter()
        .filter(|r| r.acknowledged())
        .cloned()
        .collect()
}

/// Every acknowledged blob push or mount reads back from every replica unless a delete may
/// have followed it; every acknowledged delete sticks unless a push may have followed it.
fn check_blobs(cluster: &mut Cluster) -> Result<(), Violation> {
    for record in acknowledged(cluster) {
        let (repo, digest, is_write) = match &record.kind {
            Kind::BlobPush { repo, digest } => (*repo, digest, true),
            // A mount answered 202 did not mount: it opened an upload instead.
            Kind::Mount { repo, digest } if record.status() == Some(StatusCode::CREATED) => {
                (*repo, digest, true)
            }
            Kind::Op(Op::DeleteBlob { repo, digest }) => (*repo, digest, false),
            _ => continue,
        };
        let same_blob = |k: &Kind, deletes: bool| match k {
            Kind::BlobPush { repo: r, digest: d } | Kind::Mount { repo: r, digest: d } => {
                !deletes && *r == repo && d == digest
            }
            Kind::Op(Op::DeleteBlob { repo: r, digest: d }) => deletes && *r == repo && d == digest,
            _ => false,
        };
        if any_after(cluster, record.started, |k| same_blob(k, is_write)) {
            continue;
        }
        // The collector deletes what no manifest names: `check_references` holds it to
        // keeping the rest.
        if is_write && collected_after(cluster, record.started) {
            continue;
        }
        let expected = if is_write {
            digest.to_string()
        } else {
            "404".to_owned()
        };
        for reply in read_everywhere(cluster, &format!("/v2/{repo}/blobs/{digest}")) {
            let got = summarize(&reply, digest.algorithm());
            if got != expected {
                return Err(lost_or_undone(is_write, &record, got));
            }
        }
    }
    Ok(())
}

fn lost_or_undone(is_write: bool, record: &Record, got: String) -> Violation {
    let what = record.describe();
    let detail = format!("reads answer {got}");
    if is_write {
        Violation::AcknowledgedWriteLost { what, detail }
    } else {
        Violation::DeleteUndone { what, detail }
    }
}

/// The same for manifests by digest.
fn check_manifests(cluster: &mut Cluster) -> Result<(), Violation> {
    for record in acknowledged(cluster) {
        let (repo, digest, is_write) = match &record.kind {
            Kind::ManifestPush { repo, digest, .. } => (*repo, digest, true),
            Kind::Op(Op::DeleteManifest { repo, digest }) => (*repo, digest, false),
            _ => continue,
        };
        let same_manifest = |k: &Kind, deletes: bool| match k {
            Kind::ManifestPush {
                repo: r, digest: d, ..
            } => !deletes && *r == repo && d == digest,
            Kind::Op(Op::DeleteManifest { repo: r, digest: d }) => {
                deletes && *r == repo && d == digest
            }
            _ => false,
        };
        if any_after(cluster, record.started, |k| same_manifest(k, is_write)) {
            continue;
        }
        let deletes_untagged = cluster
            .config
            .gc
            .as_ref()
            .is_some_and(|plan| plan.settings.delete_untagged);
        if is_write && deletes_untagged && collected_after(cluster, record.started) {
            continue;
        }
        let expected = if is_write {
            digest.to_string()
        } else {
            "404".to_owned()
        };
        for reply in read_everywhere(cluster, &format!("/v2/{repo}/manifests/{digest}")) {
            let got = summarize(&reply, digest.algorithm());
            if got != expected {
                return Err(lost_or_undone(is_write, &record, got));
            }
        }
    }
    Ok(())
}

/// Every tag answers the same from every replica, with a manifest that may be its last
/// value: one pushed to it and not overwritten by an acknowledged push that started after
/// it ended (so, with sequential pushes, the last one). It may be gone only if no push was
/// acknowledged or a delete may have followed the latest acknowledged one.
fn check_tags(cluster: &mut Cluster) -> Result<(), Violation> {
    for repo in REPOS {
        for tag in TAGS {
            let answers: Vec<String> =
                read_everywhere(cluster, &format!("/v2/{repo}/manifests/{tag}"))
                    .iter()
                    .map(|reply| summarize(reply, Algorithm::Sha256))
                    .collect();
            if answers.iter().any(|a| *a != answers[0]) {
                return Err(Violation::TagDiverges {
                    repo: repo.into(),
                    tag: tag.into(),
                    answers,
                });
            }
            let allowed = allowed_tag_answers(cluster, repo, tag);
            if !allowed.contains(&answers[0]) {
                return Err(Violation::TagUnexpected {
                    repo: repo.into(),
                    tag: tag.into(),
                    got: answers[0].clone(),
                    allowed,
                });
            }
        }
    }
    Ok(())
}

fn allowed_tag_answers(cluster: &Cluster, repo: &str, tag: &str) -> Vec<String> {
    let pushes: Vec<(&Record, &Digest)> = cluster
        .history
        .iter()
        .filter_map(|r| match &r.kind {
            Kind::ManifestPush {
                repo: pr,
                digest,
                tags,
                ..
            } if *pr == repo && tags.contains(&tag) => Some((r, digest)),
            _ => None,
        })
        .collect();
    let overwritten = |q: &Record| {
        pushes
            .iter()
            .any(|(p, _)| p.acknowledged() && p.started > q.last_effect())
    };
    let mut allowed: Vec<String> = pushes
        .iter()
        .filter(|(q, _)| !overwritten(q))
        .map(|(_, d)| d.to_string())
        .collect();
    let latest_acknowledged = pushes
        .iter()
        .filter(|(p, _)| p.acknowledged())
        .map(|(p, _)| p.started)
        .max();
    let gone_allowed = latest_acknowledged.is_none_or(|start| {
        any_after(cluster, start, |k| match k {
            Kind::Op(Op::DeleteTag { repo: r, tag: t }) => *r == repo && *t == tag,
            Kind::Op(Op::DeleteManifest { repo: r, .. }) => *r == repo,
            _ => false,
        })
    });
    // A push the collector's fence refused (503) may have left the tag at a manifest whose
    // bytes the collector then deleted: it reads 404 until a push succeeds.
    let refused_left_it = cluster.config.gc.is_some()
        && pushes
            .iter()
            .any(|(p, _)| !p.acknowledged() && !overwritten(p));
    if gone_allowed || refused_left_it {
        allowed.push("404".to_owned());
    }
    allowed
}

/// With `allow_missing_manifest_references = false`, every manifest in a repository names
/// only blobs that are stored and (unless someone deleted them) linked into it. With a
/// collector, every acknowledged and undeleted one: a push the fence refused (503) may
/// have left its revision naming bytes the collector deleted, also after an acknowledged
/// push of the same manifest was deleted (by a client, or as untagged by the collector).
fn check_references(cluster: &Cluster) -> Result<(), Violation> {
    let meta = cluster.world.store.objects(StoreRole::Meta);
    let blobs = cluster.world.store.objects(StoreRole::Blobs);
    for repo in REPOS {
        let name: RepoName = repo.parse().expect("valid repository name");
        let prefix = format!("v2/repositories/{repo}/_manifests/revisions/");
        let revisions = meta
            .iter()
            .filter(|(key, _)| key.starts_with(&prefix))
            .filter_map(|(_, link)| std::str::from_utf8(link).ok()?.parse::<Digest>().ok());
        for manifest_digest in revisions {
            let acknowledged = cluster.history.iter().any(|r| {
                r.acknowledged()
                    && matches!(&r.kind, Kind::ManifestPush { repo: pr, digest, .. }
                        if *pr == repo && *digest == manifest_digest)
            });
            if cluster.config.gc.is_some()
                && (!acknowledged || refused_since_deleted(cluster, repo, &manifest_digest))
            {
                continue;
            }
            let Some(bytes) = meta.get(&layout::blob_data(&manifest_digest)) else {
                if acknowledged {
                    return Err(Violation::MissingReference {
                        repo: repo.into(),
                        manifest: manifest_digest.clone(),
                        blob: manifest_digest,
                    });
                }
                continue;
            };
            let Ok(manifest) = Manifest::parse(bytes, None) else {
                continue;
            };
            for blob in &manifest.blobs {
                let deleted = cluster.history.iter().any(|r| {
                    matches!(&r.kind, Kind::Op(Op::DeleteBlob { repo: dr, digest }) if *dr == repo && digest == blob)
                });
                let stored = blobs.get(&layout::blob_data(blob)).is_some();
                let linked = meta.get(&layout::layer_link(&name, blob)).is_some();
                if !stored || (!linked && !deleted) {
                    return Err(Violation::MissingReference {
                        repo: repo.into(),
                        manifest: manifest_digest.clone(),
                        blob: blob.clone(),
                    });
                }
            }
        }
    }
    Ok(())
}

/// Whether, after the last acknowledged push of `digest` to `repo` started, it may have
/// been deleted and then pushed again by a push that was not acknowledged: the revision
/// now there may be that push's.
fn refused_since_deleted(cluster: &Cluster, repo: &str, digest: &Digest) -> bool {
    let is_push = |k: &Kind| matches!(k, Kind::ManifestPush { repo: r, digest: d, .. } if *r == repo && d == digest);
    let collects_untagged = cluster
        .config
        .gc
        .as_ref()
        .is_some_and(|plan| plan.settings.delete_untagged);
    let deletes = |k: &Kind| match k {
        Kind::Op(Op::DeleteManifest { repo: r, digest: d }) => *r == repo && d == digest,
        Kind::Collect => collects_untagged,
        _ => false,
    };
    let Some(acknowledged) = cluster
        .history
        .iter()
        .filter(|r| r.acknowledged() && is_push(&r.kind))
        .map(|r| r.started)
        .max()
    else {
        return false;
    };
    let deleted = cluster
        .history
        .iter()
        .filter(|r| deletes(&r.kind) && r.may_act_after(acknowledged))
        .map(|r| r.started)
        .min();
    deleted.is_some_and(|deleted| {
        any_after(cluster, deleted, |k| is_push(k))
            && cluster
                .history
                .iter()
                .any(|r| is_push(&r.kind) && !r.acknowledged() && r.may_act_after(deleted))
    })
}

/// Every tag in storage points at a manifest of its repository.
fn check_no_dangling_tags(cluster: &Cluster) -> Result<(), Violation> {
    let meta = cluster.world.store.objects(StoreRole::Meta);
    for repo in REPOS {
        let name: RepoName = repo.parse().expect("valid repository name");
        for tag in TAGS {
            let Some(digest) = stored_tag(cluster, &name, tag) else {
                continue;
            };
            if meta.get(&layout::revision_link(&name, &digest)).is_none() {
                return Err(Violation::DanglingTag {
                    repo: repo.into(),
                    tag: tag.into(),
                    digest,
                });
            }
        }
    }
    Ok(())
}

/// The digest a tag's current link in storage names.
fn stored_tag(cluster: &Cluster, name: &RepoName, tag: &str) -> Option<Digest> {
    let tag = tag.parse().expect("valid tag");
    let link = cluster
        .world
        .store
        .objects(StoreRole::Meta)
        .get(&layout::tag_current(name, &tag))?;
    std::str::from_utf8(link).ok()?.trim().parse().ok()
}

/// Every tag, manifest and blob answers what storage holds, cache or not.
fn check_cache_agrees(cluster: &mut Cluster) -> Result<(), Violation> {
    let mut reads: Vec<(String, Algorithm, String, &str)> = Vec::new();
    let meta = cluster.world.store.objects(StoreRole::Meta).clone();
    for repo in REPOS {
        let name: RepoName = repo.parse().expect("valid repository name");
        for tag in TAGS {
            let truth = stored_tag(cluster, &name, tag).filter(|d| {
                meta.get(&layout::revision_link(&name, d)).is_some()
                    && meta.get(&layout::blob_data(d)).is_some()
            });
            let expected = truth.map_or("404".to_owned(), |d| d.to_string());
            reads.push((
                format!("/v2/{repo}/manifests/{tag}"),
                Algorithm::Sha256,
                expected,
                repo,
            ));
        }
        for digest in mentioned_digests(cluster) {
            // A link whose bytes are gone answers 404: the collector deleted them under a
            // push it refused.
            let data = layout::blob_data(&digest);
            let manifest = meta.get(&layout::revision_link(&name, &digest)).is_some()
                && meta.get(&data).is_some();
            let blob = meta.get(&layout::layer_link(&name, &digest)).is_some()
                && cluster
                    .world
                    .store
                    .objects(StoreRole::Blobs)
                    .get(&data)
                    .is_some();
            let answer = |present: bool| {
                if present {
                    digest.to_string()
                } else {
                    "404".to_owned()
                }
            };
            let alg = digest.algorithm();
            reads.push((
                format!("/v2/{repo}/manifests/{digest}"),
                alg,
                answer(manifest),
                repo,
            ));
            reads.push((
                format!("/v2/{repo}/blobs/{digest}"),
                alg,
                answer(blob),
                repo,
            ));
        }
    }
    for (path, algorithm, expected, repo) in reads {
        for reply in read_everywhere(cluster, &path) {
            let got = summarize(&reply, algorithm);
            if got != expected && !cached_under_refused_write(cluster, repo, &got, &expected) {
                return Err(Violation::CacheDisagrees {
                    path: path.clone(),
                    got,
                    stored: expected.clone(),
                });
            }
        }
    }
    Ok(())
}

/// The cache race `docs/gc.md` names: a write the collector's fence refused (503) left
/// links to `got` in `repo`; a reader filled the cache from them just before the collector
/// deleted the bytes, so until the entry's TTL it claims what storage no longer holds.
fn cached_under_refused_write(cluster: &Cluster, repo: &str, got: &str, expected: &str) -> bool {
    cluster.config.gc.is_some()
        && expected == "404"
        && cluster.history.iter().any(|r| {
            let wrote = match &r.kind {
                Kind::ManifestPush {
                    repo: w, digest, ..
                }
                | Kind::BlobPush { repo: w, digest }
                | Kind::Mount { repo: w, digest } => *w == repo && digest.to_string() == got,
                _ => false,
            };
            wrote && r.status() == Some(StatusCode::SERVICE_UNAVAILABLE)
        })
}

/// Every blob or manifest digest the run's requests named.
fn mentioned_digests(cluster: &Cluster) -> Vec<Digest> {
    let mut digests: Vec<Digest> = cluster
        .history
        .iter()
        .filter_map(|r| match &r.kind {
            Kind::BlobPush { digest, .. }
            | Kind::Mount { digest, .. }
            | Kind::ManifestPush { digest, .. }
            | Kind::Op(Op::DeleteBlob { digest, .. })
            | Kind::Op(Op::DeleteManifest { digest, .. })
            | Kind::Op(Op::ReadBlob { digest, .. }) => Some(digest.clone()),
            _ => None,
        })
        .collect();
    digests.sort();
    digests.dedup();
    digests
}

/// Once every operation ended, a lock may still be held only by one that crashed or lost
/// the answer to a lock step.
fn check_locks_released(cluster: &Cluster) -> Result<(), Violation> {
    let now = cluster.world.now;
    for key in &cluster.lock_keys {
        let Some(token) = cluster.world.locks.holder(key, now) else {
            continue;
        };
        let owner = cluster
            .lock_owners
            .get(token)
            .map(|&r| &cluster.history.records[r]);
        if let Some(owner) = owner
            && (owner.crashed() || owner.lock_fault)
        {
            continue;
        }
        return Err(Violation::LockLeftHeld {
            key: key.clone(),
            token: token.to_owned(),
            why: format!("held by {:?}", owner.map(Record::describe)),
        });
    }
    Ok(())
}

/// And one TTL later, none at all.
fn check_locks_expire(cluster: &mut Cluster) -> Result<(), Violation> {
    cluster.world.now = cluster.world.now.plus(cluster.config.limits.locks.ttl_ms);
    for key in &cluster.lock_keys {
        if let Some(token) = cluster.world.locks.holder(key, cluster.world.now) {
            return Err(Violation::LockLeftHeld {
                key: key.clone(),
                token: token.to_owned(),
                why: "after its TTL".to_owned(),
            });
        }
    }
    Ok(())
}
