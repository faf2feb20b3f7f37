//! The upload session machine, driven by arbitrary sequences of requests against a model of
//! what each session has accepted: every answer is the one the model predicts, a completed
//! blob holds exactly the accepted bytes (so its digest is theirs), a refused `PUT` leaves no
//! blob, and no stored blob ever differs from its digest.

use std::collections::BTreeSet;

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use http::{Method, StatusCode};
use stowage_core::digest::{Algorithm, Digest};
use stowage_core::layout;
use stowage_core::names::RepoName;
use stowage_core::step::StoreRole;
use stowage_core::{Limits, Registry};

use crate::integrity::{assert_blobs_intact, sha256};
use crate::request::{Reply, Request, chunks_of};
use crate::store::ObjectStore;
use crate::world::World;

const REPO: &str = "fuzz/upload";

#[derive(Debug, Clone)]
pub struct UploadScript {
    pub events: Vec<UploadEvent>,
}

impl UploadScript {
    pub fn decode(data: &[u8]) -> Self {
        UploadScript {
            events: super::decode_all(&mut Unstructured::new(data)),
        }
    }
}

#[derive(Debug, Clone, Arbitrary)]
pub enum UploadEvent {
    /// `POST /blobs/uploads/`: opens a session.
    Start,
    /// `POST /blobs/uploads/?digest=` with the whole blob.
    Monolithic {
        data: Payload,
        digest: DigestChoice,
        chunk_size: u8,
    },
    /// `PATCH` a chunk to a session (an index into the sessions opened so far).
    Patch {
        session: u8,
        data: Payload,
        range: RangeChoice,
        chunk_size: u8,
    },
    Status {
        session: u8,
    },
    Cancel {
        session: u8,
    },
    /// `PUT ?digest=`, with a last chunk when it is not empty.
    Finish {
        session: u8,
        last_chunk: Payload,
        digest: DigestChoice,
    },
}

/// Request bytes, described rather than spelled out so scripts stay short.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub struct Payload {
    len: u8,
    seed: u8,
}

impl Payload {
    fn bytes(self) -> Vec<u8> {
        (0..self.len)
            .map(|i| i.wrapping_mul(0x9d) ^ self.seed)
            .collect()
    }
}

/// Which digest a client claims for its bytes.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum DigestChoice {
    Sha256,
    Sha512,
    /// The sha256 of other bytes.
    Wrong,
}

impl DigestChoice {
    fn of(self, data: &[u8]) -> Digest {
        match self {
            DigestChoice::Sha256 => sha256(data),
            DigestChoice::Sha512 => Digest::of(Algorithm::Sha512, data),
            DigestChoice::Wrong => sha256(&[data, b"!"].concat()),
        }
    }

    fn is_right(self) -> bool {
        !matches!(self, DigestChoice::Wrong)
    }
}

/// The `Content-Range` a chunk comes with.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum RangeChoice {
    /// None: only `Content-Length`.
    Absent,
    Exact,
    /// Starts this far from the session's offset.
    StartsOff(i8),
    /// Announces this many bytes more (or fewer) than the chunk has.
    CountsOff(i8),
    Malformed,
}

/// What the model expects of a chunk's `Content-Range`.
enum ChunkFate {
    Accepted,
    WrongOffset,
    WrongLength,
}

impl RangeChoice {
    /// The header to send with `len` bytes at `offset`, and what must come of it.
    fn header(self, offset: u64, len: u64) -> (Option<String>, ChunkFate) {
        let range = |first: u64, count: u64| Some(format!("{first}-{}", first + count - 1));
        match self {
            RangeChoice::Absent => (None, ChunkFate::Accepted),
            RangeChoice::Exact | RangeChoice::StartsOff(0) | RangeChoice::CountsOff(0)
                if len == 0 =>
            {
                (None, ChunkFate::Accepted)
            }
            RangeChoice::Exact | RangeChoice::StartsOff(0) | RangeChoice::CountsOff(0) => {
                (range(offset, len), ChunkFate::Accepted)
            }
            RangeChoice::StartsOff(delta) => {
                let first = offset
                    .checked_add_signed(delta.into())
                    .unwrap_or(offset + delta.unsigned_abs() as u64);
                (range(first, len.max(1)), ChunkFate::WrongOffset)
            }
            RangeChoice::CountsOff(delta) => {
                let count = len.saturating_add_signed(delta.into()).max(1);
                let fate = if count == len {
                    ChunkFate::Accepted
                } else {
                    ChunkFate::WrongLength
                };
                (range(offset, count), fate)
            }
            RangeChoice::Malformed => (Some("bytes=oops".to_owned()), ChunkFate::WrongOffset),
        }
    }
}

/// One session as the model knows it.
struct Session {
    path: String,
    id: String,
    accepted: Vec<u8>,
    open: bool,
}

/// The registry under test and the model of what it holds.
struct Harness {
    registry: Registry,
    world: World,
    name: RepoName,
    sessions: Vec<Session>,
    /// Blobs completed so far; no other digest may appear in the blob store.
    blobs: BTreeSet<Digest>,
    next_seed: u64,
}

pub fn check(data: &[u8]) {
    check_script(&UploadScript::decode(data));
}

/// Runs the script against both kinds of store: one that writes chunks in place (the
/// filesystem, without versions) and one that stores each chunk as an object (S3).
pub fn check_script(script: &UploadScript) {
    check_on(script, true);
    check_on(script, false);
}

fn check_on(script: &UploadScript, in_place: bool) {
    let limits = Limits {
        chunks_in_place: in_place,
        ..Limits::default()
    };
    let store = if in_place {
        ObjectStore::without_versions()
    } else {
        ObjectStore::default()
    };
    let mut harness = Harness {
        registry: Registry::new(limits),
        world: World {
            store,
            ..World::default()
        },
        name: REPO.parse().expect("valid name"),
        sessions: Vec::new(),
        blobs: BTreeSet::new(),
        next_seed: 1,
    };
    for event in &script.events {
        harness.apply(event);
        harness.assert_only_completed_blobs();
    }
    // Blob data is never deleted, so a corrupt blob would still be here.
    assert_blobs_intact(&harness.world.store);
}

impl Harness {
    fn send(&mut self, request: Request) -> Reply {
        self.next_seed += 1;
        self.world.run(&self.registry, request, self.next_seed)
    }

    fn session(&mut self, index: u8) -> Option<usize> {
        (!self.sessions.is_empty()).then(|| index as usize % self.sessions.len())
    }

    fn apply(&mut self, event: &UploadEvent) {
        match event {
            UploadEvent::Start => self.start(),
            UploadEvent::Monolithic {
                data,
                digest,
                chunk_size,
            } => self.monolithic(&data.bytes(), *digest, *chunk_size),
            UploadEvent::Patch {
                session,
                data,
                range,
                chunk_size,
            } => {
                if let Some(s) = self.session(*session) {
                    self.patch(s, &data.bytes(), *range, *chunk_size);
                }
            }
            UploadEvent::Status { session } => {
                if let Some(s) = self.session(*session) {
                    let reply = self.send(Request::get(self.sessions[s].path.clone()));
                    self.expect_progress(s, &reply, StatusCode::NO_CONTENT);
                }
            }
            UploadEvent::Cancel { session } => {
                if let Some(s) = self.session(*session) {
                    let path = self.sessions[s].path.clone();
                    let reply = self.send(Request::new(Method::DELETE, path));
                    if self.expect_open(s, &reply) {
                        assert_eq!(reply.status, StatusCode::NO_CONTENT);
                        self.close(s);
                    }
                }
            }
            UploadEvent::Finish {
                session,
                last_chunk,
                digest,
            } => {
                if let Some(s) = self.session(*session) {
                    self.finish(s, &last_chunk.bytes(), *digest);
                }
            }
        }
    }

    fn start(&mut self) {
        let reply = self.send(Request::new(
            Method::POST,
            format!("/v2/{REPO}/blobs/uploads/"),
        ));
        assert_eq!(reply.status, StatusCode::ACCEPTED);
        let path = reply.header("location").expect("a Location").to_owned();
        let id = reply
            .header("docker-upload-uuid")
            .expect("an id")
            .to_owned();
        assert!(path.ends_with(&id));
        self.sessions.push(Session {
            path,
            id,
            accepted: Vec::new(),
            open: true,
        });
        self.expect_progress(self.sessions.len() - 1, &reply, StatusCode::ACCEPTED);
    }

    fn monolithic(&mut self, data: &[u8], choice: DigestChoice, chunk_size: u8) {
        let digest = choice.of(data);
        let request = Request::new(Method::POST, format!("/v2/{REPO}/blobs/uploads/"))
            .query(format!("digest={digest}"))
            .body(chunks_of(data, chunk_size.into()));
        let reply = self.send(request);
        self.expect_completion(&reply, &digest, choice.is_right(), data);
    }

    fn patch(&mut self, s: usize, data: &[u8], range: RangeChoice, chunk_size: u8) {
        let offset = self.sessions[s].accepted.len() as u64;
        let (content_range, fate) = range.header(offset, data.len() as u64);
        let mut request = Request::new(Method::PATCH, self.sessions[s].path.clone())
            .body(chunks_of(data, chunk_size.into()));
        if let Some(content_range) = content_range {
            request = request.header("content-range", content_range);
        }
        let reply = self.send(request);
        if !self.expect_open(s, &reply) {
            return;
        }
        match fate {
            ChunkFate::Accepted => {
                self.sessions[s].accepted.extend_from_slice(data);
                self.expect_progress(s, &reply, StatusCode::ACCEPTED);
            }
            ChunkFate::WrongOffset => {
                self.expect_progress(s, &reply, StatusCode::RANGE_NOT_SATISFIABLE)
            }
            ChunkFate::WrongLength => assert_eq!(reply.status, StatusCode::BAD_REQUEST),
        }
    }

    fn finish(&mut self, s: usize, last_chunk: &[u8], choice: DigestChoice) {
        let whole = [self.sessions[s].accepted.as_slice(), last_chunk].concat();
        let digest = choice.of(&whole);
        let mut request = Request::new(Method::PUT, self.sessions[s].path.clone())
            .query(format!("digest={digest}"));
        if !last_chunk.is_empty() {
            request = request.body(vec![Bytes::copy_from_slice(last_chunk)]);
        }
        let reply = self.send(request);
        if !self.expect_open(s, &reply) {
            return;
        }
        self.expect_completion(&reply, &digest, choice.is_right(), &whole);
        if choice.is_right() {
            self.close(s);
        } else {
            self.expect_status(s);
        }
    }

    /// A completion answer: 201 and the blob readable as `data`, or 400 and no new blob.
    fn expect_completion(&mut self, reply: &Reply, digest: &Digest, right: bool, data: &[u8]) {
        if !right {
            assert_eq!(
                reply.status,
                StatusCode::BAD_REQUEST,
                "wrong digest accepted"
            );
            return;
        }
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        assert_eq!(
            reply.header("docker-content-digest"),
            Some(digest.to_string().as_str())
        );
        self.blobs.insert(digest.clone());
        let read = self.send(Request::get(format!("/v2/{REPO}/blobs/{digest}")));
        assert_eq!(read.status, StatusCode::OK);
        assert_eq!(read.bytes().as_ref(), data, "blob {digest} differs");
    }

    /// Whether the session is open; a closed one must be answered 404.
    fn expect_open(&self, s: usize, reply: &Reply) -> bool {
        if !self.sessions[s].open {
            assert_eq!(
                reply.status,
                StatusCode::NOT_FOUND,
                "closed session answered"
            );
        }
        self.sessions[s].open
    }

    /// An open session's answer reports what the model accepted.
    fn expect_progress(&self, s: usize, reply: &Reply, status: StatusCode) {
        if !self.expect_open(s, reply) {
            return;
        }
        assert_eq!(reply.status, status);
        let accepted = self.sessions[s].accepted.len() as u64;
        let range = format!("0-{}", accepted.saturating_sub(1));
        assert_eq!(reply.header("range"), Some(range.as_str()));
    }

    fn expect_status(&mut self, s: usize) {
        let reply = self.send(Request::get(self.sessions[s].path.clone()));
        self.expect_progress(s, &reply, StatusCode::NO_CONTENT);
    }

    /// A completed or cancelled session leaves nothing behind.
    fn close(&mut self, s: usize) {
        let session = &mut self.sessions[s];
        session.open = false;
        let id = stowage_core::route::UploadId::parse(&session.id).expect("a valid id");
        let dir = layout::upload_dir(&self.name, &id);
        let leftover = self
            .world
            .store
            .objects(StoreRole::Blobs)
            .iter()
            .find(|(key, _)| key.starts_with(&dir));
        assert!(leftover.is_none(), "{leftover:?} outlived its upload");
    }

    fn assert_only_completed_blobs(&self) {
        for (key, _) in self.world.store.blobs.iter() {
            if let Some(digest) = crate::integrity::addressed_digest(key) {
                assert!(self.blobs.contains(&digest), "{digest} was never completed");
            }
        }
    }
}
