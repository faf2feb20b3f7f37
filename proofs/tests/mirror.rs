//! The mirror's decisions against a model upstream (`stowage_proofs::upstream`): a cold pull
//! stores what the upstream sent and streams it to its client, later pulls are local, a
//! corrupting upstream leaves nothing and cuts the stream, a tag is trusted for its TTL and
//! then asked again, and a stored tag is served stale while the upstream is down; a fetch is
//! a writer of the collector's fence, and what the collector took is fetched again.

use bytes::Bytes;
use http::{Method, StatusCode};
use stowage_core::gc::GcSettings;
use stowage_core::layout;
use stowage_core::manifest::OCI_MANIFEST;
use stowage_core::step::{StorageRequest, StoreRole};
use stowage_core::{Limits, Registry};
use stowage_proofs::fixtures;
use stowage_proofs::integrity::sha256;
use stowage_proofs::request::Request;
use stowage_proofs::store::RequestBody;
use stowage_proofs::upstream::{Behaviour, Streamed, UpstreamModel, mirroring};
use stowage_proofs::world::World;

const TTL_MS: u64 = 60_000;

/// A registry mirroring the model upstream under `hub`, and a world holding `library/app:v1`
/// there (a config and one 20 KiB layer); the layer.
fn mirror() -> (Registry, World, Bytes) {
    let registry = mirroring(Limits::default(), "hub", TTL_MS);
    let mut upstream = UpstreamModel::default();
    let (config, layer) = (fixtures::blob(3), layer(1));
    upstream.put_blob("library/app", config.clone());
    upstream.put_blob("library/app", layer.clone());
    let manifest = fixtures::image_manifest(&config, std::slice::from_ref(&layer), 1);
    upstream.put_manifest("library/app", Some("v1"), manifest, OCI_MANIFEST);
    let world = World {
        upstream: Some(upstream),
        ..World::default()
    };
    (registry, world, layer)
}

fn layer(seed: u8) -> Bytes {
    Bytes::from(
        (0..20 * 1024)
            .map(|i| (i as u8) ^ seed)
            .collect::<Vec<u8>>(),
    )
}

fn upstream(world: &mut World) -> &mut UpstreamModel {
    world.upstream.as_mut().expect("the model upstream")
}

fn get_blob(blob: &Bytes) -> Request {
    blob_request(Method::GET, blob)
}

fn head_blob(blob: &Bytes) -> Request {
    blob_request(Method::HEAD, blob)
}

fn blob_request(method: Method, blob: &Bytes) -> Request {
    Request::new(
        method,
        format!("/v2/hub/library/app/blobs/{}", sha256(blob)),
    )
}

fn get_manifest(reference: &str) -> Request {
    Request::get(format!("/v2/hub/library/app/manifests/{reference}"))
        .header("accept", OCI_MANIFEST)
}

#[test]
fn a_cold_blob_is_stored_and_streamed_once_and_later_pulls_are_local() {
    let (registry, mut world, layer) = mirror();
    let reply = world.run(&registry, get_blob(&layer), 1);
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        upstream(&mut world).streamed,
        [Streamed::Whole(layer.clone())]
    );
    let stored = world
        .store
        .objects(StoreRole::Blobs)
        .get(&layout::blob_data(&sha256(&layer)));
    assert_eq!(stored, Some(&layer));

    let reply = world.run(&registry, get_blob(&layer), 2);
    assert_eq!((reply.status, reply.bytes()), (StatusCode::OK, &layer));
    let reply = world.run(&registry, head_blob(&layer), 3);
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(upstream(&mut world).count("get_blob"), 1);
    assert_eq!(
        upstream(&mut world).streamed.len(),
        1,
        "a warm pull streamed again"
    );
}

#[test]
fn a_head_or_a_range_is_fetched_whole_and_answered_from_the_store() {
    let (registry, mut world, layer) = mirror();
    let reply = world.run(&registry, head_blob(&layer), 1);
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-length"), Some("20480"));

    let (registry, mut world, layer) = mirror();
    let reply = world.run(&registry, get_blob(&layer).header("range", "bytes=0-9"), 1);
    assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(reply.bytes(), &layer.slice(0..10));
    assert_eq!(upstream(&mut world).count("get_blob"), 1);
    assert!(
        upstream(&mut world).streamed.is_empty(),
        "a range was streamed"
    );
}

#[test]
fn a_corrupting_upstream_leaves_nothing_and_the_next_pull_fetches_again() {
    let (registry, mut world, layer) = mirror();
    upstream(&mut world).behaviour = Behaviour::Corrupts;
    world.run(&registry, get_blob(&layer), 1);
    assert_eq!(upstream(&mut world).streamed, [Streamed::Cut]);
    let key = layout::blob_data(&sha256(&layer));
    assert_eq!(world.store.objects(StoreRole::Blobs).get(&key), None);
    let reply = world.run(&registry, head_blob(&layer), 2);
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);

    upstream(&mut world).behaviour = Behaviour::Serves;
    let reply = world.run(&registry, head_blob(&layer), 3);
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        world.store.objects(StoreRole::Blobs).get(&key),
        Some(&layer)
    );
    assert_eq!(upstream(&mut world).count("get_blob"), 3);
}

#[test]
fn a_tag_is_trusted_for_its_ttl_then_asked_again_and_served_stale_while_the_upstream_is_down() {
    let (registry, mut world, _) = mirror();
    let first = world.run(&registry, get_manifest("v1"), 1);
    assert_eq!(first.status, StatusCode::OK);
    let (config, layer) = (fixtures::blob(4), layer(2));
    let model = upstream(&mut world);
    model.put_blob("library/app", config.clone());
    model.put_blob("library/app", layer.clone());
    let second = fixtures::image_manifest(&config, std::slice::from_ref(&layer), 2);
    model.put_manifest("library/app", Some("v1"), second.clone(), OCI_MANIFEST);

    world.now = world.now.plus(TTL_MS - 1);
    let reply = world.run(&registry, get_manifest("v1"), 2);
    assert_eq!(reply.bytes(), first.bytes(), "re-checked before the TTL");
    world.now = world.now.plus(2);
    let reply = world.run(&registry, get_manifest("v1"), 3);
    assert_eq!(reply.bytes(), &second, "not re-checked after the TTL");
    assert_eq!(reply.header("warning"), None);

    upstream(&mut world).behaviour = Behaviour::Down;
    world.now = world.now.plus(TTL_MS + 1);
    let reply = world.run(&registry, get_manifest("v1"), 4);
    assert_eq!((reply.status, reply.bytes()), (StatusCode::OK, &second));
    assert!(
        reply
            .header("warning")
            .is_some_and(|w| w.starts_with("110"))
    );
    let reply = world.run(&registry, get_manifest("v2"), 5);
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
}

/// A mirror's fetch is a writer like a push (`handlers::fence`): a manifest fetched while a
/// collection has doomed its digest is refused with `Retry-After`, not acknowledged, and
/// fetched once the collection is over.
#[test]
fn a_manifest_fetched_while_the_collector_dooms_it_is_refused_then_fetched() {
    let (registry, mut world, layer) = mirror();
    let manifest = fixtures::image_manifest(&fixtures::blob(3), std::slice::from_ref(&layer), 1);
    world.doom(&sha256(&manifest));
    let refused = world.run(&registry, get_manifest("v1"), 1);
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.header("retry-after"), Some("1"));

    // The next collection clears what the one that doomed it left.
    let settings = GcSettings {
        grace_ms: TTL_MS,
        delete_untagged: false,
        dry_run: false,
        separate_meta_store: true,
    };
    world.collect(&registry, settings, 2).expect("a collection");
    assert!(
        world
            .store
            .meta
            .get(&layout::gc_doomed(&sha256(&manifest)))
            .is_none()
    );
    let reply = world.run(&registry, get_manifest("v1"), 3);
    assert_eq!((reply.status, reply.bytes()), (StatusCode::OK, &manifest));
}

/// Deletes `key` from the world's store, as the collector does.
fn delete(world: &mut World, store: StoreRole, key: String) {
    let request = StorageRequest::Delete { store, key };
    let now = world.now;
    world
        .store
        .perform(request, &mut RequestBody::default(), now);
}

/// Found by the cluster simulation: a fetch the collector's fence refused leaves its tag,
/// and the collector then deletes the manifest's bytes. The tag's manifest is fetched
/// again; it answered 404 for good (the upstream still named the same digest).
#[test]
fn a_tag_whose_manifest_the_collector_took_is_fetched_again() {
    let (registry, mut world, layer) = mirror();
    let manifest = fixtures::image_manifest(&fixtures::blob(3), std::slice::from_ref(&layer), 1);
    let first = world.run(&registry, get_manifest("v1"), 1);
    assert_eq!((first.status, first.bytes()), (StatusCode::OK, &manifest));
    delete(
        &mut world,
        StoreRole::Meta,
        layout::blob_data(&sha256(&manifest)),
    );
    // The refused fetch forgot its cache entries.
    world.forget_cache();
    let reply = world.run(&registry, get_manifest("v1"), 2);
    assert_eq!((reply.status, reply.bytes()), (StatusCode::OK, &manifest));
    assert_eq!(upstream(&mut world).count("get_manifest"), 2);
}

/// Found by the cluster simulation: a blob's size cached while the collector deleted its
/// bytes under a link its fence refused. A small blob read finds the bytes gone, the cache
/// forgets it, and the mirror fetches it again; it answered 404 while the entry lived.
#[test]
fn a_cached_blob_whose_bytes_the_collector_took_is_fetched_again() {
    let (registry, mut world, layer) = mirror();
    let first = world.run(&registry, get_blob(&layer), 1);
    assert_eq!(first.status, StatusCode::OK);
    delete(
        &mut world,
        StoreRole::Blobs,
        layout::blob_data(&sha256(&layer)),
    );
    let reply = world.run(&registry, get_blob(&layer), 2);
    assert_eq!((reply.status, reply.bytes()), (StatusCode::OK, &layer));
    assert_eq!(upstream(&mut world).count("get_blob"), 2);
}

/// The same for a blob too large to be read whole: its bytes stream from storage after the
/// answer's head, so the driver opens them first, and finding them gone answers 404 and
/// forgets the entry, and the next pull fetches the blob again. (Before, the answer was a
/// `200` whose bytes were not in the store, for as long as the entry lived.)
#[test]
fn a_cached_large_blob_whose_bytes_the_collector_took_is_fetched_again() {
    let (registry, mut world, _) = mirror();
    let large = Bytes::from(layer(7).repeat(5));
    assert!(
        large.len() > 64 * 1024,
        "streamed from storage, not cached whole"
    );
    upstream(&mut world).put_blob("library/app", large.clone());
    let first = world.run(&registry, get_blob(&large), 1);
    assert_eq!((first.status, first.bytes()), (StatusCode::OK, &large));
    delete(
        &mut world,
        StoreRole::Blobs,
        layout::blob_data(&sha256(&large)),
    );
    let gone = world.run(&registry, get_blob(&large), 2);
    assert_eq!(gone.status, StatusCode::NOT_FOUND, "{gone:?}");
    assert!(String::from_utf8_lossy(gone.bytes()).contains("BLOB_UNKNOWN"));
    let reply = world.run(&registry, get_blob(&large), 3);
    assert_eq!((reply.status, reply.bytes()), (StatusCode::OK, &large));
    assert_eq!(upstream(&mut world).count("get_blob"), 2);
}
