//! A push whose locks expired while it paused right before its tag write, and another push
//! that committed meanwhile: the conditional tag write refuses the stale commit (503) and
//! the newer tag stays, wherever the store can check (S3: always; the filesystem: when the
//! stale push found the tag absent).

use http::{Method, StatusCode};
use stowage_core::config::LockSettings;
use stowage_core::manifest::OCI_MANIFEST;
use stowage_core::step::{Step, StorageRequest};
use stowage_core::{Limits, Registry};
use stowage_proofs::actor::{self, Actor, finish_in_turns};
use stowage_proofs::fixtures;
use stowage_proofs::integrity::sha256;
use stowage_proofs::request::Request;
use stowage_proofs::store::ObjectStore;
use stowage_proofs::world::World;

const TTL_MS: u64 = 300;

fn push(manifest: &bytes::Bytes) -> Request {
    Request::new(Method::PUT, "/v2/app/manifests/latest")
        .header("content-type", OCI_MANIFEST)
        .body(vec![manifest.clone()])
}

fn manifest(n: u64) -> bytes::Bytes {
    fixtures::image_manifest(&fixtures::blob(n), &[], n)
}

/// Runs the race on `store`, the tag first pointing at manifest 1 if `tagged`; answers the
/// stale push's status and the manifest the tag ends at.
fn race(store: ObjectStore, tagged: bool) -> (StatusCode, String) {
    let registry = Registry::new(Limits {
        locks: LockSettings {
            ttl_ms: TTL_MS,
            max_retries: 20,
            retry_delay_ms: 10,
        },
        ..Limits::default()
    });
    let mut world = World {
        store,
        ..World::default()
    };
    if tagged {
        assert_eq!(
            world.run(&registry, push(&manifest(1)), 1).status,
            StatusCode::CREATED
        );
    }
    // The stale push runs up to its tag write, and pauses there...
    let mut stale = Actor::start(&registry, push(&manifest(3)), 2);
    let tag_write = loop {
        let step = stale.poll(world.now);
        if let Step::Storage(StorageRequest::Write { key, .. }) = &step
            && key.ends_with("/tags/latest/current/link")
        {
            break step;
        }
        assert!(stale.perform(&mut world, step).is_none(), "answered early");
    };
    // ...past its locks' TTL, while another push takes them and commits.
    world.now = world.now.plus(TTL_MS + 1);
    let newer = world.run(&registry, push(&manifest(2)), 3);
    assert_eq!(newer.status, StatusCode::CREATED);
    let mut stale = Some(stale);
    let answer = match stale.as_mut().map(|a| a.perform(&mut world, tag_write)) {
        Some(Some(response)) => response,
        _ => finish_in_turns(&mut world, &mut [stale], actor::step)
            .into_iter()
            .flatten()
            .next()
            .expect("the stale push answered"),
    };
    let tag = world.run(&registry, Request::get("/v2/app/manifests/latest"), 4);
    (answer.status, sha256(tag.bytes()).to_string())
}

#[test]
fn a_stale_tag_commit_is_refused_where_the_store_checks_versions() {
    let newer = sha256(&manifest(2)).to_string();
    for tagged in [false, true] {
        let (status, tag) = race(ObjectStore::default(), tagged);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "tagged: {tagged}");
        assert_eq!(tag, newer, "tagged: {tagged}");
    }
}

#[test]
fn without_versions_a_stale_commit_is_refused_only_where_it_creates() {
    let (status, tag) = race(ObjectStore::without_versions(), false);
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(tag, sha256(&manifest(2)).to_string());
    // The filesystem's known limit: with no compare-and-swap, the lock alone guarded this.
    let (status, tag) = race(ObjectStore::without_versions(), true);
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(tag, sha256(&manifest(3)).to_string());
}
