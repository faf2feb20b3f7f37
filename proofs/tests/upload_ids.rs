//! An upload session's id is the driver's cryptographic randomness, unchanged: nothing in
//! the core derives it from the seeded generator, whose next outputs anyone who saw one
//! could compute.

use http::Method;
use stowage_core::access::Caller;
use stowage_core::{Entropy, Limits, Registry};
use stowage_proofs::request::Request;
use stowage_proofs::world::World;

fn start_upload(world: &mut World, registry: &Registry, entropy: Entropy) -> String {
    let reply = world.run_as(
        registry,
        Request::new(Method::POST, "/v2/app/blobs/uploads/"),
        Caller::anonymous(),
        entropy,
    );
    assert_eq!(reply.status, http::StatusCode::ACCEPTED);
    reply
        .header("docker-upload-uuid")
        .expect("an upload id")
        .to_owned()
}

#[test]
fn the_upload_id_is_the_drivers_randomness() {
    let registry = Registry::new(Limits::default());
    let mut world = World::default();
    let seed = 7;
    let ids: Vec<String> = [0x0123_4567_89ab_cdef_u128 << 64, u128::MAX - 5]
        .into_iter()
        .map(|upload_id| start_upload(&mut world, &registry, Entropy { upload_id, seed }))
        .collect();
    assert_eq!(ids[0], "0123456789abcdef0000000000000000");
    assert_eq!(ids[1], format!("{:032x}", u128::MAX - 5));
}
