//! A request whose locks expired while it paused right before its commit write, and another
//! request that committed meanwhile: the conditional write refuses the stale commit (503)
//! and the newer state stays, wherever the store can check. Tags: S3 always, the filesystem
//! when the stale push found the tag absent. Upload records (a chunk's commit): S3.

use http::{Method, StatusCode};
use stowage_core::config::LockSettings;
use stowage_core::layout::UPLOAD_RECORD;
use stowage_core::manifest::OCI_MANIFEST;
use stowage_core::step::{Step, StorageRequest};
use stowage_core::{Limits, Registry};
use stowage_proofs::actor::{self, Actor, finish_in_turns};
use stowage_proofs::fixtures;
use stowage_proofs::integrity::sha256;
use stowage_proofs::request::{Reply, Request};
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

fn registry() -> Registry {
    Registry::new(Limits {
        locks: LockSettings {
            ttl_ms: TTL_MS,
            max_retries: 20,
            retry_delay_ms: 10,
        },
        ..Limits::default()
    })
}

/// Runs `stale` up to its write of a key ending in `commit_key`, lets its locks expire while
/// `newer` runs, then lets it write; answers the stale request's reply.
fn stale_commit(
    world: &mut World,
    registry: &Registry,
    stale: Request,
    commit_key: &str,
    newer: Request,
) -> (Reply, Reply) {
    // The stale request runs up to its commit write, and pauses there...
    let mut stale = Actor::start(registry, stale, 2);
    let write = loop {
        let step = stale.poll(world.now);
        if let Step::Storage(StorageRequest::Write { key, .. }) = &step
            && key.ends_with(commit_key)
        {
            break step;
        }
        assert!(stale.perform(world, step).is_none(), "answered early");
    };
    // ...past its locks' TTL, while another request takes them and commits.
    world.now = world.now.plus(TTL_MS + 1);
    let newer = world.run(registry, newer, 3);
    let mut stale = Some(stale);
    let answer = match stale.as_mut().map(|a| a.perform(world, write)) {
        Some(Some(response)) => response,
        _ => finish_in_turns(world, &mut [stale], actor::step)
            .into_iter()
            .flatten()
            .next()
            .expect("the stale request answered"),
    };
    (world.reply(answer), newer)
}

/// Runs the race on `store`, the tag first pointing at manifest 1 if `tagged`; answers the
/// stale push's status and the manifest the tag ends at.
fn race(store: ObjectStore, tagged: bool) -> (StatusCode, String) {
    let registry = registry();
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
    let (stale, newer) = stale_commit(
        &mut world,
        &registry,
        push(&manifest(3)),
        "/tags/latest/current/link",
        push(&manifest(2)),
    );
    assert_eq!(newer.status, StatusCode::CREATED);
    let tag = world.run(&registry, Request::get("/v2/app/manifests/latest"), 4);
    (stale.status, sha256(tag.bytes()).to_string())
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

#[test]
fn a_stale_chunk_commit_leaves_the_newer_chunk_in_the_upload() {
    let registry = registry();
    let mut world = World::default();
    let started = world.run(
        &registry,
        Request::new(Method::POST, "/v2/app/blobs/uploads/"),
        1,
    );
    assert_eq!(started.status, StatusCode::ACCEPTED);
    let location = started.header("location").expect("a location").to_owned();
    let patch = |bytes: &'static [u8]| {
        Request::new(Method::PATCH, location.clone())
            .header("content-range", format!("0-{}", bytes.len() - 1))
            .body(vec![bytes::Bytes::from_static(bytes)])
    };
    let (stale, newer) = stale_commit(
        &mut world,
        &registry,
        patch(b"stale chunk"),
        UPLOAD_RECORD,
        patch(b"newer"),
    );
    assert_eq!(newer.status, StatusCode::ACCEPTED);
    assert_eq!(stale.status, StatusCode::SERVICE_UNAVAILABLE);
    let status = world.run(&registry, Request::get(location), 4);
    assert_eq!(
        status.header("range"),
        Some("0-4"),
        "the newer chunk's 5 bytes"
    );
}
