//! Blob `Range` requests: a range whose last byte comes before its first is unsatisfiable
//! (416 with `Content-Range: bytes */<size>`), as Go's `http.ServeContent` refuses it, rather
//! than ignored (which served the whole blob); a malformed one is still ignored.

use bytes::Bytes;
use http::{Method, StatusCode};
use stowage_core::Registry;
use stowage_proofs::integrity::sha256;
use stowage_proofs::request::{Request, chunks_of};
use stowage_proofs::world::World;

const SIZE: usize = 100_000;

fn pushed(registry: &Registry, world: &mut World) -> Bytes {
    let blob = Bytes::from((0..SIZE).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let request = Request::new(Method::POST, "/v2/app/blobs/uploads/")
        .query(format!("digest={}", sha256(&blob)))
        .body(chunks_of(&blob, 16 * 1024));
    assert_eq!(world.run(registry, request, 1).status, StatusCode::CREATED);
    blob
}

fn get(blob: &Bytes, range: &str) -> Request {
    Request::get(format!("/v2/app/blobs/{}", sha256(blob))).header("range", range)
}

#[test]
fn a_range_ending_before_it_starts_is_unsatisfiable() {
    let (registry, mut world) = (Registry::default(), World::default());
    let blob = pushed(&registry, &mut world);
    let reply = world.run(&registry, get(&blob, "bytes=500-0"), 2);
    assert_eq!(reply.status, StatusCode::RANGE_NOT_SATISFIABLE);
    let whole = format!("bytes */{SIZE}");
    assert_eq!(reply.header("content-range"), Some(whole.as_str()));
    assert!(reply.bytes().is_empty());
}

#[test]
fn a_malformed_range_is_ignored_and_a_good_one_served() {
    let (registry, mut world) = (Registry::default(), World::default());
    let blob = pushed(&registry, &mut world);
    let reply = world.run(&registry, get(&blob, "bytes=x-1"), 2);
    assert_eq!((reply.status, reply.bytes()), (StatusCode::OK, &blob));
    let reply = world.run(&registry, get(&blob, "bytes=500-599"), 3);
    assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(reply.bytes(), &blob.slice(500..600));
}
