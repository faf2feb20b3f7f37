//! A PATCH still streaming when its upload completes: the completion deletes the session's
//! folder, and what the PATCH writes afterwards (a part of its own, or a claim and bytes in
//! the data file) must not stay behind once the PATCH ends, recorded by nothing.

use bytes::Bytes;
use http::{Method, StatusCode};
use stowage_core::step::{Step, StorageRequest};
use stowage_core::{Limits, Registry};
use stowage_proofs::actor::Actor;
use stowage_proofs::integrity::sha256;
use stowage_proofs::request::Request;
use stowage_proofs::store::ObjectStore;
use stowage_proofs::world::World;

fn chunk(location: &str, offset: usize, data: &'static [u8]) -> Request {
    let last = offset + data.len() - 1;
    Request::new(Method::PATCH, location)
        .header("content-range", format!("{offset}-{last}"))
        .body(vec![Bytes::from_static(data)])
}

/// Session objects left in the blob store.
fn left_behind(world: &World) -> Vec<String> {
    world
        .store
        .blobs
        .iter()
        .map(|(key, _)| key.clone())
        .filter(|key| key.contains("/_uploads/"))
        .collect()
}

fn completion_during_a_patch(chunks_in_place: bool) {
    let registry = Registry::new(Limits {
        chunks_in_place,
        ..Limits::default()
    });
    let mut world = World {
        store: ObjectStore::without_versions(),
        ..World::default()
    };
    let start = Request::new(Method::POST, "/v2/app/blobs/uploads/");
    let reply = world.run(&registry, start, 1);
    let location = reply.header("location").expect("a Location").to_owned();
    let first = world.run(&registry, chunk(&location, 0, b"abc"), 2);
    assert_eq!(first.status, StatusCode::ACCEPTED);

    // The second chunk gets as far as streaming its body...
    let mut late = Actor::start(&registry, chunk(&location, 3, b"def"), 3);
    let streaming = loop {
        let step = late.poll(world.now);
        if let Step::Storage(
            StorageRequest::WriteBody { .. } | StorageRequest::WriteBodyAt { .. },
        ) = &step
        {
            break step;
        }
        assert!(late.perform(&mut world, step).is_none(), "answered early");
    };
    // ...when the upload completes without it, and its folder goes.
    let finish =
        Request::new(Method::PUT, location.as_str()).query(format!("digest={}", sha256(b"abc")));
    assert_eq!(world.run(&registry, finish, 4).status, StatusCode::CREATED);
    assert_eq!(left_behind(&world), Vec::<String>::new());

    // The body lands after that, and the chunk finds no upload to join.
    let mut response = late.perform(&mut world, streaming);
    while response.is_none() {
        let step = late.poll(world.now);
        response = late.perform(&mut world, step);
    }
    let reply = world.reply(response.expect("an answer"));
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(left_behind(&world), Vec::<String>::new());
}

#[test]
fn a_part_written_after_completion_is_removed_when_its_patch_ends() {
    completion_during_a_patch(false);
}

#[test]
fn a_claim_and_bytes_in_place_written_after_completion_are_removed() {
    completion_during_a_patch(true);
}
