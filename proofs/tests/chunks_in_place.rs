//! Chunked uploads on a store that writes chunks in place (the filesystem): completion moves
//! the data file to the content address only when no request can write to it any more, and
//! copies what it needs otherwise.

use bytes::Bytes;
use http::{Method, StatusCode};
use stowage_core::step::{Piece, Step, StorageRequest};
use stowage_core::{Limits, Registry};
use stowage_proofs::actor::Actor;
use stowage_proofs::integrity::{assert_blobs_intact, sha256};
use stowage_proofs::request::Request;
use stowage_proofs::store::{ObjectStore, RequestBody};
use stowage_proofs::world::World;

fn setup() -> (Registry, World) {
    let registry = Registry::new(Limits {
        chunks_in_place: true,
        ..Limits::default()
    });
    let world = World {
        store: ObjectStore::without_versions(),
        ..World::default()
    };
    (registry, world)
}

fn start(registry: &Registry, world: &mut World) -> String {
    let reply = world.run(
        registry,
        Request::new(Method::POST, "/v2/app/blobs/uploads/"),
        1,
    );
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    reply.header("location").expect("a Location").to_owned()
}

fn patch(location: &str, offset: usize, data: &'static [u8]) -> Request {
    let last = offset + data.len() - 1;
    Request::new(Method::PATCH, location)
        .header("content-range", format!("{offset}-{last}"))
        .body(vec![Bytes::from_static(data)])
}

fn finish(location: &str, blob: &[u8]) -> Request {
    Request::new(Method::PUT, location).query(format!("digest={}", sha256(blob)))
}

/// Runs `request` to its answer, returning the status and the pieces every `Concat` asked
/// for.
fn run_watching_concat(
    registry: &Registry,
    world: &mut World,
    request: Request,
    seed: u64,
) -> (StatusCode, Vec<Vec<Piece>>) {
    let mut actor = Actor::start(registry, request, seed);
    let mut concats = Vec::new();
    loop {
        let step = actor.poll(world.now);
        if let Step::Storage(StorageRequest::Concat { pieces, .. }) = &step {
            concats.push(pieces.clone());
        }
        if let Some(response) = actor.perform(world, step) {
            return (response.status, concats);
        }
    }
}

/// The pieces of the one `Concat` a completion asked for.
fn only_concat(concats: &[Vec<Piece>]) -> &[Piece] {
    match concats {
        [pieces] => pieces,
        _ => panic!("expected one concat, got {concats:?}"),
    }
}

fn blob_reads_back(registry: &Registry, world: &mut World, blob: &[u8]) {
    let path = format!("/v2/app/blobs/{}", sha256(blob));
    let reply = world.run(registry, Request::get(path), 99);
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.bytes().as_ref(), blob);
    assert_blobs_intact(&world.store);
}

#[test]
fn an_upload_in_place_completes_by_moving_its_data_file() {
    let (registry, mut world) = setup();
    let location = start(&registry, &mut world);
    assert_eq!(
        world
            .run(&registry, patch(&location, 0, b"hello "), 2)
            .status,
        StatusCode::ACCEPTED
    );
    let last_chunk = Request::new(Method::PUT, location.as_str())
        .query(format!("digest={}", sha256(b"hello world")))
        .body(vec![Bytes::from_static(b"world")]);
    let (status, concats) = run_watching_concat(&registry, &mut world, last_chunk, 3);
    assert_eq!(status, StatusCode::CREATED);
    let pieces = only_concat(&concats);
    assert!(
        matches!(pieces, [Piece { key, span: None }] if key.ends_with("/data")),
        "{pieces:?}"
    );
    blob_reads_back(&registry, &mut world, b"hello world");
}

#[test]
fn a_chunk_retried_after_a_failed_body_goes_to_a_part_of_its_own() {
    let (registry, mut world) = setup();
    let location = start(&registry, &mut world);
    world.run(&registry, patch(&location, 0, b"abc"), 2);
    // The client goes away after two bytes of its second chunk: they stay in the data file
    // past the accepted bytes, and the claim on offset 3 is spent.
    let mut broken = patch(&location, 3, b"def");
    broken.body = RequestBody::new(vec![Bytes::from_static(b"XY")]).disconnect_after(1);
    assert!(world.run(&registry, broken, 3).status.is_client_error());
    assert_eq!(
        world.run(&registry, patch(&location, 3, b"def"), 4).status,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        world.run(&registry, patch(&location, 6, b"ghi"), 5).status,
        StatusCode::ACCEPTED
    );
    let (status, concats) =
        run_watching_concat(&registry, &mut world, finish(&location, b"abcdefghi"), 6);
    assert_eq!(status, StatusCode::CREATED);
    let pieces = only_concat(&concats);
    assert_eq!(pieces.len(), 3, "{pieces:?}");
    assert_eq!(pieces[0].span.map(|s| (s.start, s.len)), Some((0, 3)));
    assert!(
        pieces[1..]
            .iter()
            .all(|p| p.span.is_none() && p.key.contains("/parts/"))
    );
    blob_reads_back(&registry, &mut world, b"abcdefghi");
}

#[test]
fn a_chunk_streaming_at_the_end_makes_completion_copy() {
    let (registry, mut world) = setup();
    let location = start(&registry, &mut world);
    world.run(&registry, patch(&location, 0, b"abc"), 2);
    // A chunk claims offset 3 and is about to stream into the data file...
    let mut late = Actor::start(&registry, patch(&location, 3, b"def"), 3);
    loop {
        let step = late.poll(world.now);
        if matches!(step, Step::Storage(StorageRequest::WriteBodyAt { .. })) {
            // ...while the upload completes with what it has: the end offset is claimed, so
            // the file is copied from, not moved.
            let (status, concats) =
                run_watching_concat(&registry, &mut world, finish(&location, b"abc"), 4);
            assert_eq!(status, StatusCode::CREATED);
            assert_eq!(
                concats
                    .iter()
                    .map(|p| p.iter().map(|p| p.span.is_some()).collect())
                    .collect::<Vec<Vec<bool>>>(),
                vec![vec![true]]
            );
            // The late chunk then lands and finds the session gone.
            assert!(late.perform(&mut world, step).is_none());
            break;
        }
        assert!(late.perform(&mut world, step).is_none());
    }
    let mut answer = None;
    while answer.is_none() {
        let step = late.poll(world.now);
        answer = late.perform(&mut world, step);
    }
    assert_eq!(answer.map(|r| r.status), Some(StatusCode::NOT_FOUND));
    blob_reads_back(&registry, &mut world, b"abc");
}
