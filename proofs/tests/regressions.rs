//! Regression tests for bugs the properties and the simulation found in `stowage-core`.

use http::{Method, StatusCode};
use stowage_core::Registry;
use stowage_core::manifest::OCI_MANIFEST;
use stowage_core::step::{Step, StorageRequest};
use stowage_proofs::actor::{self, Actor, finish_in_turns};
use stowage_proofs::fixtures;
use stowage_proofs::integrity::sha256;
use stowage_proofs::props::linking::{Action, LinkingScript, check_script};
use stowage_proofs::request::Request;
use stowage_proofs::world::World;

fn push_manifest(reference: &str, manifest: &bytes::Bytes) -> Request {
    Request::new(Method::PUT, format!("/v2/app/manifests/{reference}"))
        .header("content-type", OCI_MANIFEST)
        .body(vec![manifest.clone()])
}

/// Found by the cluster simulation (dangling tag): `DELETE /manifests/<digest>` listed the
/// tags pointing at the manifest before taking its lock, so a push tagging the manifest in
/// between kept its tag, pointing at a manifest that was then deleted.
#[test]
fn a_manifest_delete_misses_no_tag_pushed_meanwhile() {
    let registry = Registry::default();
    let mut world = World::default();
    let manifest = fixtures::image_manifest(&fixtures::blob(1), &[], 0);
    let digest = sha256(&manifest);
    let pushed = world.run(&registry, push_manifest(&digest.to_string(), &manifest), 1);
    assert_eq!(pushed.status, StatusCode::CREATED);

    // The delete runs until it has listed the repository's tags...
    let delete = Request::new(Method::DELETE, format!("/v2/app/manifests/{digest}"));
    let mut delete = Actor::start(&registry, delete, 2);
    loop {
        let step = delete.poll(world.now);
        let listing = matches!(step, Step::Storage(StorageRequest::List { .. }));
        assert!(delete.perform(&mut world, step).is_none());
        if listing {
            break;
        }
    }
    // ...then a push tags the manifest (it has to give up while the delete holds the
    // manifest's lock), and the delete finishes.
    let push = world.run(&registry, push_manifest("latest", &manifest), 3);
    assert!(push.status.is_success() || push.status == StatusCode::SERVICE_UNAVAILABLE);
    let answers = finish_in_turns(&mut world, &mut [Some(delete)], actor::step);
    let deleted = answers
        .into_iter()
        .flatten()
        .next()
        .expect("the delete answered");
    assert_eq!(deleted.status, StatusCode::ACCEPTED);

    // Whichever went first, `latest` names a manifest of the repository.
    let tags = world.run(&registry, Request::get("/v2/app/tags/list"), 4);
    let listed = String::from_utf8_lossy(tags.bytes()).contains("latest");
    let tagged = world.run(&registry, Request::get("/v2/app/manifests/latest"), 5);
    assert_eq!(
        listed,
        tagged.status == StatusCode::OK,
        "tag list and tag disagree"
    );
    let by_digest = world.run(
        &registry,
        Request::get(format!("/v2/app/manifests/{digest}")),
        6,
    );
    assert_eq!(tagged.status, by_digest.status);
}

/// Found by the linking model: `GET /v2/a/tags/list` answered 200 with no tags when only a
/// nested repository `a/b` existed; `a` itself is unknown (404 NAME_UNKNOWN).
#[test]
fn a_path_prefix_of_a_repository_is_no_repository() {
    check_script(&LinkingScript {
        strict: false,
        actions: vec![
            Action::PushManifest {
                repo: 1,
                manifest: 0,
                tag: None,
            },
            Action::ListTags { repo: 0 },
        ],
    });
}
