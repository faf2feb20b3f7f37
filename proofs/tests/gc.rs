//! The collector alone, over the model store: what it deletes and what it keeps, and the
//! writers' side of its fence. (Concurrency, faults and crashes: cluster_simulation.rs.)

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::json;
use stowage_core::access::AccessControl;
use stowage_core::digest::Digest;
use stowage_core::gc::{GcReport, GcSettings};
use stowage_core::layout;
use stowage_core::manifest::{OCI_INDEX, OCI_MANIFEST};
use stowage_core::repositories::{Repositories, RepositorySettings};
use stowage_core::retention::Retention;
use stowage_core::step::StoreRole;
use stowage_core::{Limits, Registry};
use stowage_proofs::fixtures;
use stowage_proofs::integrity::sha256;
use stowage_proofs::request::Request;
use stowage_proofs::world::World;

const REPO: &str = "lib/app";
const GRACE_MS: u64 = 60_000;

fn settings(delete_untagged: bool, dry_run: bool) -> GcSettings {
    GcSettings {
        grace_ms: GRACE_MS,
        delete_untagged,
        dry_run,
        separate_meta_store: true,
    }
}

struct Harness {
    registry: Registry,
    world: World,
    seed: u64,
}

impl Harness {
    fn new() -> Self {
        let limits = Limits {
            allow_missing_manifest_references: false,
            ..Limits::default()
        };
        Harness {
            registry: Registry::new(limits),
            world: World::default(),
            seed: 0,
        }
    }

    fn send(&mut self, request: Request) -> StatusCode {
        self.seed += 1;
        self.world.run(&self.registry, request, self.seed).status
    }

    fn push_blob(&mut self, blob: &Bytes) -> Digest {
        let digest = sha256(blob);
        let request = Request::new(Method::POST, format!("/v2/{REPO}/blobs/uploads/"))
            .query(format!("digest={digest}"))
            .body(vec![blob.clone()]);
        assert_eq!(self.send(request), StatusCode::CREATED);
        digest
    }

    fn push_manifest(&mut self, reference: &str, media_type: &str, manifest: &Bytes) -> Digest {
        let request = Request::new(Method::PUT, format!("/v2/{REPO}/manifests/{reference}"))
            .header("content-type", media_type)
            .body(vec![manifest.clone()]);
        assert_eq!(self.send(request), StatusCode::CREATED, "push {reference}");
        sha256(manifest)
    }

    /// Pushes an image naming `config` and `layers`, by tag or (`None`) by digest.
    fn push_image(&mut self, tag: Option<&str>, config: &Bytes, layers: &[Bytes]) -> Digest {
        for blob in std::iter::once(config).chain(layers) {
            self.push_blob(blob);
        }
        let manifest = fixtures::image_manifest(config, layers, self.seed);
        let reference = tag.map_or_else(|| sha256(&manifest).to_string(), str::to_owned);
        self.push_manifest(&reference, OCI_MANIFEST, &manifest)
    }

    fn status(&mut self, path: String) -> StatusCode {
        self.send(Request::get(path))
    }

    fn blob(&mut self, digest: &Digest) -> StatusCode {
        self.status(format!("/v2/{REPO}/blobs/{digest}"))
    }

    fn manifest(&mut self, reference: &str) -> StatusCode {
        self.status(format!("/v2/{REPO}/manifests/{reference}"))
    }

    fn collect(&mut self, settings: GcSettings) -> GcReport {
        self.seed += 1;
        self.world
            .collect(&self.registry, settings, self.seed)
            .expect("the collection succeeds")
    }

    fn age_past_grace(&mut self) {
        self.world.now = self.world.now.plus(GRACE_MS + 1);
    }

    fn stored(&self, store: StoreRole, digest: &Digest) -> bool {
        self.world
            .store
            .objects(store)
            .get(&layout::blob_data(digest))
            .is_some()
    }
}

fn descriptor(media_type: &str, manifest: &Bytes) -> serde_json::Value {
    json!({ "mediaType": media_type, "digest": sha256(manifest).to_string(), "size": manifest.len() })
}

/// What a report says would go or went, without the parts only a real run has.
fn planned(report: &GcReport) -> (u64, u64, u64, u64) {
    (
        report.blobs_deleted,
        report.bytes_deleted,
        report.layer_links_deleted,
        report.manifests_deleted,
    )
}

#[test]
fn deletes_what_no_manifest_references_and_keeps_shared_layers() {
    let mut r = Harness::new();
    let (config, shared, only_v2, only_deleted, stray) = (
        fixtures::blob(1),
        fixtures::blob(2),
        fixtures::blob(3),
        fixtures::blob(4),
        fixtures::blob(6),
    );
    r.push_image(Some("v1"), &config, std::slice::from_ref(&shared));
    r.push_image(Some("v2"), &config, &[shared.clone(), only_v2.clone()]);
    let deleted = r.push_image(Some("v3"), &config, &[shared.clone(), only_deleted.clone()]);
    let status = r.send(Request::new(
        Method::DELETE,
        format!("/v2/{REPO}/manifests/{deleted}"),
    ));
    assert_eq!(status, StatusCode::ACCEPTED);
    let stray = r.push_blob(&stray);
    r.age_past_grace();

    let dry = r.collect(settings(false, true));
    assert!(dry.dry_run);
    assert_eq!(r.blob(&stray), StatusCode::OK, "a dry run deletes nothing");
    let real = r.collect(settings(false, false));
    assert_eq!(
        planned(&dry),
        planned(&real),
        "the dry run tells the real run"
    );
    // The bytes of `only_deleted`, of `stray` and of the deleted manifest; their two links.
    assert_eq!((real.blobs_deleted, real.layer_links_deleted), (3, 2));
    assert_eq!(real.manifests_deleted, 0);
    assert_eq!(real.spared, 0);

    for tag in ["v1", "v2"] {
        assert_eq!(r.manifest(tag), StatusCode::OK);
    }
    for kept in [&config, &shared, &only_v2] {
        assert_eq!(r.blob(&sha256(kept)), StatusCode::OK);
    }
    for gone in [sha256(&only_deleted), stray] {
        assert_eq!(r.blob(&gone), StatusCode::NOT_FOUND);
        assert!(!r.stored(StoreRole::Blobs, &gone), "{gone} still stored");
    }
    assert!(!r.stored(StoreRole::Meta, &deleted));
    let again = r.collect(settings(false, false));
    assert_eq!(planned(&again), (0, 0, 0, 0), "a second run finds nothing");
}

#[test]
fn spares_what_is_younger_than_the_grace_period() {
    let mut r = Harness::new();
    let uploaded = r.push_blob(&fixtures::blob(7));
    let report = r.collect(settings(true, false));
    assert_eq!(planned(&report), (0, 0, 0, 0));
    assert_eq!(r.blob(&uploaded), StatusCode::OK);
    r.age_past_grace();
    let report = r.collect(settings(true, false));
    assert_eq!((report.blobs_deleted, report.layer_links_deleted), (1, 1));
    assert_eq!(r.blob(&uploaded), StatusCode::NOT_FOUND);
}

#[test]
fn delete_untagged_keeps_index_children_and_referrers() {
    let mut r = Harness::new();
    let config = fixtures::blob(1);
    let (amd64_layer, arm64_layer, untagged_layer) =
        (fixtures::blob(2), fixtures::blob(3), fixtures::blob(4));
    let amd64 = r.push_image(None, &config, std::slice::from_ref(&amd64_layer));
    let arm64 = r.push_image(None, &config, std::slice::from_ref(&arm64_layer));
    let untagged = r.push_image(None, &config, std::slice::from_ref(&untagged_layer));
    let children: Vec<Bytes> = [&amd64, &arm64]
        .iter()
        .map(|d| r.world.store.meta.get(&layout::blob_data(d)).cloned())
        .map(|m| m.expect("child manifest stored"))
        .collect();
    let index = Bytes::from(
        json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": children.iter().map(|m| descriptor(OCI_MANIFEST, m)).collect::<Vec<_>>(),
        })
        .to_string(),
    );
    r.push_manifest("multi", OCI_INDEX, &index);
    // A signature of the index: untagged, kept by its subject.
    let signature_blob = fixtures::blob(8);
    r.push_blob(&signature_blob);
    let signature = Bytes::from(
        json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.example.signature",
            "config": descriptor("application/vnd.oci.empty.v1+json", &config),
            "layers": [descriptor("application/octet-stream", &signature_blob)],
            "subject": descriptor(OCI_INDEX, &index),
        })
        .to_string(),
    );
    let signature = r.push_manifest(&sha256(&signature).to_string(), OCI_MANIFEST, &signature);
    r.age_past_grace();

    let report = r.collect(settings(true, false));
    assert_eq!(report.manifests_deleted, 1, "{report:?}");
    for kept in [&amd64, &arm64, &signature] {
        assert_eq!(r.manifest(&kept.to_string()), StatusCode::OK, "{kept}");
    }
    assert_eq!(r.manifest("multi"), StatusCode::OK);
    assert_eq!(r.manifest(&untagged.to_string()), StatusCode::NOT_FOUND);
    for kept in [&config, &amd64_layer, &arm64_layer, &signature_blob] {
        assert_eq!(r.blob(&sha256(kept)), StatusCode::OK);
    }
    assert_eq!(r.blob(&sha256(&untagged_layer)), StatusCode::NOT_FOUND);
    assert!(!r.stored(StoreRole::Meta, &untagged));
}

#[test]
fn writers_refuse_a_doomed_digest_with_retry_after() {
    let mut r = Harness::new();
    let (config, layer, other) = (fixtures::blob(1), fixtures::blob(2), fixtures::blob(3));
    r.push_blob(&config);
    r.push_blob(&other);
    let doomed = sha256(&layer);
    r.world.doom(&doomed);

    let upload = Request::new(Method::POST, format!("/v2/{REPO}/blobs/uploads/"))
        .query(format!("digest={doomed}"))
        .body(vec![layer.clone()]);
    r.seed += 1;
    let refused = r.world.run(&r.registry, upload, r.seed);
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.header("retry-after"), Some("1"));

    // A manifest naming only digests that are not doomed goes through the slow path.
    let fine = fixtures::image_manifest(&config, std::slice::from_ref(&other), 0);
    r.push_manifest("fine", OCI_MANIFEST, &fine);
    // One naming the doomed layer is refused, though its link and bytes exist now.
    let named = fixtures::image_manifest(&config, std::slice::from_ref(&layer), 0);
    let put = Request::new(Method::PUT, format!("/v2/{REPO}/manifests/named"))
        .header("content-type", OCI_MANIFEST)
        .body(vec![named]);
    assert_eq!(r.send(put), StatusCode::SERVICE_UNAVAILABLE);
}

/// A collector that died while deleting left its fence up; the next run takes it down even
/// when it finds nothing to delete, and the digest it doomed may be named again.
#[test]
fn a_run_with_nothing_to_delete_lowers_a_dead_collectors_fence() {
    let mut r = Harness::new();
    let (config, layer) = (fixtures::blob(1), fixtures::blob(2));
    r.push_blob(&config);
    let doomed = r.push_blob(&layer);
    r.world.doom(&doomed);
    let manifest = fixtures::image_manifest(&config, std::slice::from_ref(&layer), 0);
    let put = || {
        Request::new(Method::PUT, format!("/v2/{REPO}/manifests/v1"))
            .header("content-type", OCI_MANIFEST)
            .body(vec![manifest.clone()])
    };
    assert_eq!(r.send(put()), StatusCode::SERVICE_UNAVAILABLE);

    let report = r.collect(settings(false, false));
    assert_eq!(planned(&report), (0, 0, 0, 0), "{report:?}");
    assert_eq!(r.send(put()), StatusCode::CREATED);
}

/// Retention keeps the two newest tags and the `release-` ones; the rest are untagged and
/// their manifests reclaimed. A dry run names exactly what the real run then does.
#[test]
fn retention_untags_what_no_rule_keeps_and_a_dry_run_tells_exactly_that() {
    let retention = Retention {
        keep_last: Some(2),
        keep_tags: vec![regex::Regex::new("^release-").unwrap()],
        keep_within_ms: None,
    };
    let settings_for = |prefix: &str| {
        (
            prefix.to_owned(),
            RepositorySettings {
                retention: Some(retention.clone()),
                ..RepositorySettings::default()
            },
        )
    };
    let mut r = Harness::new();
    r.registry = r.registry.clone().with_access(
        AccessControl::default(),
        Repositories::new([settings_for("lib/")]),
    );
    let mut pushed = Vec::new();
    for (i, tag) in ["v1", "release-1", "v2", "v3", "v4"]
        .into_iter()
        .enumerate()
    {
        let config = fixtures::blob(10 + i as u64);
        let layer = fixtures::blob(20 + i as u64);
        pushed.push((tag, r.push_image(Some(tag), &config, &[layer]), config));
        r.world.now = r.world.now.plus(1_000);
    }
    r.age_past_grace();
    let dry = r.collect(settings(true, true));
    assert_eq!(dry.tags_untagged, ["lib/app:v1", "lib/app:v2"]);
    for (tag, ..) in &pushed {
        assert_eq!(r.manifest(tag), StatusCode::OK, "a dry run keeps {tag}");
    }
    let real = r.collect(settings(true, false));
    assert_eq!(real.tags_untagged, dry.tags_untagged);
    assert_eq!(planned(&real), planned(&dry));
    for (tag, digest, config) in &pushed {
        let kept = !dry.tags_untagged.contains(&format!("{REPO}:{tag}"));
        let expected = if kept {
            StatusCode::OK
        } else {
            StatusCode::NOT_FOUND
        };
        assert_eq!(r.manifest(tag), expected, "{tag}");
        assert_eq!(
            r.manifest(&digest.to_string()),
            expected,
            "{tag}'s manifest"
        );
        assert_eq!(
            r.stored(StoreRole::Blobs, &sha256(config)),
            kept,
            "{tag}'s config"
        );
    }
}
