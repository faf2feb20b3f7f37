//! What pulls read from the cache. A manifest push records the manifest, so the first pull
//! needs no storage request. Small blobs are served from the cache: the push records the
//! size, the first read the bytes, and then a GET needs no storage request; yet a blob that
//! left the repository is refused as before, and a large blob is still streamed from
//! storage.

use bytes::Bytes;
use http::{Method, StatusCode};
use stowage_core::Registry;
use stowage_core::manifest::OCI_MANIFEST;
use stowage_core::step::{Body, Response, Step};
use stowage_proofs::actor::Actor;
use stowage_proofs::fixtures;
use stowage_proofs::integrity::sha256;
use stowage_proofs::request::{Reply, Request, chunks_of};
use stowage_proofs::world::World;

fn blob_of(len: usize) -> Bytes {
    Bytes::from((0..len).map(|i| (i * 7 + len) as u8).collect::<Vec<u8>>())
}

fn push(registry: &Registry, world: &mut World, blob: &Bytes) {
    let request = Request::new(Method::POST, "/v2/app/blobs/uploads/")
        .query(format!("digest={}", sha256(blob)))
        .body(chunks_of(blob, 16 * 1024));
    assert_eq!(world.run(registry, request, 1).status, StatusCode::CREATED);
}

/// Runs `request` to its answer, counting the storage requests it made.
fn run_counting_storage(
    registry: &Registry,
    world: &mut World,
    request: Request,
) -> (Response, usize) {
    let mut actor = Actor::start(registry, request, 7);
    let mut storage_requests = 0;
    loop {
        let step = actor.poll(world.now);
        storage_requests += usize::from(matches!(step, Step::Storage(_)));
        if let Some(response) = actor.perform(world, step) {
            return (response, storage_requests);
        }
    }
}

fn get_counting_storage(
    registry: &Registry,
    world: &mut World,
    request: Request,
) -> (Reply, usize) {
    let (response, storage_requests) = run_counting_storage(registry, world, request);
    (world.reply(response), storage_requests)
}

fn get(blob: &Bytes) -> Request {
    Request::get(format!("/v2/app/blobs/{}", sha256(blob)))
}

#[test]
fn a_small_blob_is_read_from_storage_once() {
    let (registry, mut world) = (Registry::default(), World::default());
    let blob = blob_of(1024);
    push(&registry, &mut world, &blob);

    let (first, reads) = get_counting_storage(&registry, &mut world, get(&blob));
    assert_eq!((first.status, first.bytes()), (StatusCode::OK, &blob));
    // The push recorded the blob's size, so only its bytes are read.
    assert_eq!(reads, 1, "the first GET reads the bytes, and only them");

    let ranged = get(&blob).header("range", "bytes=100-199");
    for (request, expected) in [(get(&blob), blob.clone()), (ranged, blob.slice(100..200))] {
        let (response, reads) = run_counting_storage(&registry, &mut world, request);
        // Bytes in hand: nothing is left for the driver to stream from storage.
        assert!(matches!(response.body, Body::Bytes(_)), "{response:?}");
        assert_eq!(reads, 0, "a cached small blob needs no storage request");
        assert_eq!(world.reply(response).bytes(), &expected);
    }
}

#[test]
fn a_deleted_small_blob_is_not_served_from_the_cache() {
    let (registry, mut world) = (Registry::default(), World::default());
    let blob = blob_of(1024);
    push(&registry, &mut world, &blob);
    assert_eq!(world.run(&registry, get(&blob), 2).status, StatusCode::OK);

    let delete = Request::new(Method::DELETE, format!("/v2/app/blobs/{}", sha256(&blob)));
    assert_eq!(world.run(&registry, delete, 3).status, StatusCode::ACCEPTED);
    assert_eq!(
        world.run(&registry, get(&blob), 4).status,
        StatusCode::NOT_FOUND
    );
    let other_repo = Request::get(format!("/v2/other/blobs/{}", sha256(&blob)));
    assert_eq!(
        world.run(&registry, other_repo, 5).status,
        StatusCode::NOT_FOUND
    );
}

#[test]
fn a_large_blob_is_still_streamed_from_storage() {
    let (registry, mut world) = (Registry::default(), World::default());
    let blob = blob_of(256 * 1024);
    push(&registry, &mut world, &blob);
    for _ in 0..2 {
        let (response, _) = run_counting_storage(&registry, &mut world, get(&blob));
        assert!(matches!(response.body, Body::Stored { .. }), "{response:?}");
        let reply = world.reply(response);
        assert_eq!((reply.status, reply.bytes()), (StatusCode::OK, &blob));
    }
}

#[test]
fn the_first_manifest_pull_after_a_push_needs_no_storage_request() {
    let (registry, mut world) = (Registry::default(), World::default());
    let manifest = fixtures::image_manifest(&blob_of(100), &[], 0);
    let put = Request::new(Method::PUT, "/v2/app/manifests/v1")
        .header("content-type", OCI_MANIFEST)
        .body(vec![manifest.clone()]);
    assert_eq!(world.run(&registry, put, 2).status, StatusCode::CREATED);
    for reference in ["v1".to_owned(), sha256(&manifest).to_string()] {
        let get = Request::get(format!("/v2/app/manifests/{reference}"));
        let (reply, reads) = get_counting_storage(&registry, &mut world, get);
        assert_eq!((reply.status, reply.bytes()), (StatusCode::OK, &manifest));
        assert_eq!(reads, 0, "GET by {reference} went to storage");
    }
}
