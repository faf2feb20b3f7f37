//! The lock protocol under arbitrary interleavings of several contending operations and
//! arbitrary clock steps (including jumps past the TTL, so locks expire while held): two
//! holders never hold one lock at the same instant, the table agrees with what the holders
//! were granted, and once every operation finished no lock is left held.

use std::collections::BTreeMap;

use arbitrary::{Arbitrary, Unstructured};
use http::Method;
use stowage_core::config::LockSettings;
use stowage_core::step::{LockRequest, Outcome, Response, Step};
use stowage_core::time::Millis;
use stowage_core::{Limits, Registry};

use crate::actor::{Actor, finish_in_turns};
use crate::fixtures;
use crate::integrity::sha256;
use crate::request::Request;
use crate::world::World;

const REPO: &str = "fuzz/lock";
const TAG: &str = "contended";
const MAX_CONTENDERS: usize = 5;

fn limits() -> Limits {
    Limits {
        locks: LockSettings {
            ttl_ms: 300,
            max_retries: 20,
            retry_delay_ms: 10,
        },
        ..Limits::default()
    }
}

#[derive(Debug, Clone)]
pub struct LockScript {
    pub contenders: Vec<Contender>,
    pub schedule: Vec<Tick>,
}

impl LockScript {
    /// A count of contenders (2 to [`MAX_CONTENDERS`]), the contenders, then the ticks.
    pub fn decode(data: &[u8]) -> Self {
        let mut u = Unstructured::new(data);
        let count = u.int_in_range(2..=MAX_CONTENDERS).unwrap_or(2);
        let contenders = (0..count).map_while(|_| u.arbitrary().ok()).collect();
        LockScript {
            contenders,
            schedule: super::decode_all(&mut u),
        }
    }
}

/// An operation that takes locks others want too.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Contender {
    /// `PUT` one of a few manifests to the contended tag.
    PushManifest(u8),
    DeleteTag,
    /// `DELETE` one of those manifests by digest.
    DeleteManifest(u8),
    /// `PATCH` this many bytes to the shared upload.
    PatchUpload(u8),
    /// `PUT` the shared upload complete (with whatever digest its bytes have at the start).
    FinishUpload,
}

#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Tick {
    /// One step of one contender.
    Step(u8),
    /// The clock moves this many milliseconds.
    Advance(u8),
    /// The clock jumps past the lock TTL.
    Expire,
}

/// The leases granted so far, as the lock steps' answers reported them.
#[derive(Default)]
struct Leases {
    /// key -> token -> lease end.
    granted: BTreeMap<String, BTreeMap<String, Millis>>,
}

impl Leases {
    fn record(&mut self, request: &LockRequest, taken: bool, now: Millis) {
        if !taken {
            return;
        }
        match request {
            LockRequest::Acquire { key, token, ttl_ms }
            | LockRequest::Refresh { key, token, ttl_ms } => {
                let leases = self.granted.entry(key.clone()).or_default();
                leases.insert(token.clone(), now.plus(*ttl_ms));
            }
            LockRequest::Release { key, token } => {
                if let Some(leases) = self.granted.get_mut(key) {
                    leases.remove(token);
                }
            }
        }
    }

    /// At most one live lease per key, and the table names its holder.
    fn check(&self, world: &World) {
        for (key, leases) in &self.granted {
            let live: Vec<&String> = leases
                .iter()
                .filter(|(_, until)| **until > world.now)
                .map(|(token, _)| token)
                .collect();
            assert!(live.len() <= 1, "{key} held by {live:?} at {:?}", world.now);
            if let Some(token) = live.first() {
                assert_eq!(world.locks.holder(key, world.now), Some(token.as_str()));
            }
        }
    }

    fn keys(&self) -> impl Iterator<Item = &String> {
        self.granted.keys()
    }
}

pub fn check(data: &[u8]) {
    check_script(&LockScript::decode(data));
}

pub fn check_script(script: &LockScript) {
    let registry = Registry::new(limits());
    let mut world = World::default();
    let upload = open_upload(&registry, &mut world);
    let mut actors: Vec<Option<Actor>> = script
        .contenders
        .iter()
        .take(MAX_CONTENDERS)
        .enumerate()
        .map(|(i, c)| Some(Actor::start(&registry, c.request(&upload), i as u64 + 10)))
        .collect();
    if actors.is_empty() {
        return;
    }
    let mut leases = Leases::default();
    let ttl = limits().locks.ttl_ms;
    for tick in &script.schedule {
        match *tick {
            Tick::Step(i) => {
                let index = i as usize % actors.len();
                step(&mut actors[index], &mut world, &mut leases);
            }
            Tick::Advance(ms) => world.now = world.now.plus(ms.into()),
            Tick::Expire => world.now = world.now.plus(ttl),
        }
        leases.check(&world);
    }
    finish_in_turns(&mut world, &mut actors, |world, actor| {
        let response = observed_step(actor, world, &mut leases);
        leases.check(world);
        response
    });
    for key in leases.keys() {
        assert_eq!(world.locks.holder(key, world.now), None, "{key} left held");
    }
}

/// One step of a contender, if it is running and awake, noting what its lock steps got.
fn step(slot: &mut Option<Actor>, world: &mut World, leases: &mut Leases) {
    if let Some(actor) = slot
        && actor.ready(world.now)
        && observed_step(actor, world, leases).is_some()
    {
        *slot = None;
    }
}

fn observed_step(actor: &mut Actor, world: &mut World, leases: &mut Leases) -> Option<Response> {
    match actor.poll(world.now) {
        Step::Lock(request) => {
            let taken = world.lock(&request);
            leases.record(&request, taken, world.now);
            actor.answer(Outcome::Lock(taken));
            None
        }
        step => actor.perform(world, step),
    }
}

/// Opens the upload the upload contenders share; answers its path.
fn open_upload(registry: &Registry, world: &mut World) -> String {
    let start = Request::new(Method::POST, format!("/v2/{REPO}/blobs/uploads/"));
    let reply = world.run(registry, start, 1);
    reply
        .header("location")
        .expect("an upload location")
        .to_owned()
}

impl Contender {
    fn request(self, upload: &str) -> Request {
        let manifest = |i: u8| {
            let config = fixtures::blob(u64::from(i % 3));
            fixtures::image_manifest(&config, &[], 0)
        };
        match self {
            Contender::PushManifest(i) => {
                Request::new(Method::PUT, format!("/v2/{REPO}/manifests/{TAG}"))
                    .header("content-type", stowage_core::manifest::OCI_MANIFEST)
                    .body(vec![manifest(i)])
            }
            Contender::DeleteTag => {
                Request::new(Method::DELETE, format!("/v2/{REPO}/manifests/{TAG}"))
            }
            Contender::DeleteManifest(i) => Request::new(
                Method::DELETE,
                format!("/v2/{REPO}/manifests/{}", sha256(&manifest(i))),
            ),
            Contender::PatchUpload(len) => {
                Request::new(Method::PATCH, upload).body(vec![fixtures::blob(u64::from(len))])
            }
            Contender::FinishUpload => {
                Request::new(Method::PUT, upload).query(format!("digest={}", sha256(b"")))
            }
        }
    }
}
