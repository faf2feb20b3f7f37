//! What the simulated clients want done, and how each wish becomes requests: a client
//! works through its intents one request at a time, retrying what is safe to retry.

use bytes::Bytes;
use http::{Method, StatusCode};
use stowage_core::digest::{Algorithm, Digest};
use stowage_core::manifest::OCI_MANIFEST;

use crate::fixtures;
use crate::integrity::sha256;
use crate::request::{Reply, Request, chunks_of};
use crate::rng::SimRng;
use crate::upstream::UpstreamModel;

pub const REPOS: [&str; 2] = ["lib/app", "lib/db"];
pub const TAGS: [&str; 2] = ["latest", "stable"];
/// Under this prefix every run mirrors the model upstream ([`upstream`]).
pub const MIRROR_PREFIX: &str = "hub";
/// The repository clients pull through the mirror; nobody pushes to it.
pub const MIRRORED: &str = "hub/library/app";
/// Its name at the upstream.
const UPSTREAM_REPO: &str = "library/app";
/// Distinct blob contents the clients share (so their pushes collide).
const BLOB_POOL: u64 = 6;
/// Distinct manifests the clients share.
const MANIFEST_POOL: u64 = 4;
/// Attempts of a request that failed with 5xx or lost its connection.
const MAX_ATTEMPTS: u32 = 3;

/// A blob push: monolithic, or chunked with its chunks' sizes.
#[derive(Debug, Clone)]
pub struct BlobPush {
    repo: &'static str,
    blob: Bytes,
    /// Chunk sizes for a chunked upload (`None`: one monolithic `POST`).
    chunks: Option<Vec<usize>>,
    /// Whether the last chunk travels with the `PUT`.
    last_in_put: bool,
    /// Claim a digest the bytes do not have.
    wrong_digest: bool,
    /// Address the blob by its sha512 digest.
    sha512: bool,
}

/// One thing a client wants done.
#[derive(Debug, Clone)]
pub enum Intent {
    PushBlob(BlobPush),
    Mount {
        repo: &'static str,
        from: &'static str,
        digest: Digest,
    },
    PushManifest {
        repo: &'static str,
        manifest: Bytes,
        /// By tag; `None` pushes by digest with `?tag=` for `extra_tag`.
        tag: Option<&'static str>,
        extra_tag: Option<&'static str>,
    },
    Op(Op),
}

/// A delete or a read: one request, wanted by a client and checked as it was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    DeleteBlob {
        repo: &'static str,
        digest: Digest,
    },
    DeleteTag {
        repo: &'static str,
        tag: &'static str,
    },
    DeleteManifest {
        repo: &'static str,
        digest: Digest,
    },
    ReadTag {
        repo: &'static str,
        tag: &'static str,
    },
    ReadBlob {
        repo: &'static str,
        digest: Digest,
    },
}

impl Op {
    fn request(&self) -> Request {
        match self {
            Op::DeleteBlob { repo, digest } => {
                Request::new(Method::DELETE, format!("/v2/{repo}/blobs/{digest}"))
            }
            Op::DeleteTag { repo, tag } => {
                Request::new(Method::DELETE, format!("/v2/{repo}/manifests/{tag}"))
            }
            Op::DeleteManifest { repo, digest } => {
                Request::new(Method::DELETE, format!("/v2/{repo}/manifests/{digest}"))
            }
            Op::ReadTag { repo, tag } => Request::get(format!("/v2/{repo}/manifests/{tag}")),
            Op::ReadBlob { repo, digest } => Request::get(format!("/v2/{repo}/blobs/{digest}")),
        }
    }
}

/// What a request means for the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Completes a blob under its true digest (monolithic `POST` or final `PUT`).
    BlobPush {
        repo: &'static str,
        digest: Digest,
    },
    /// Completes a blob under a digest its bytes do not have: must be refused.
    WrongDigestPush,
    Mount {
        repo: &'static str,
        digest: Digest,
    },
    ManifestPush {
        repo: &'static str,
        digest: Digest,
        bytes: Bytes,
        tags: Vec<&'static str>,
    },
    Op(Op),
    /// Opening, feeding or cancelling an upload.
    UploadStep,
    /// A garbage collection (by the collector actor, not a client).
    Collect,
}

/// How a request ended for its client.
#[derive(Debug)]
pub enum Answer {
    Replied(Reply),
    /// The replica crashed while serving it: the client saw the connection drop.
    Crashed,
}

impl Answer {
    fn status(&self) -> Option<StatusCode> {
        match self {
            Answer::Replied(reply) => Some(reply.status),
            Answer::Crashed => None,
        }
    }

    /// Worth retrying: a crash or a server error.
    fn retryable(&self) -> bool {
        self.status().is_none_or(|s| s.is_server_error())
    }
}

fn pick<T: Copy>(rng: &mut SimRng, items: &[T]) -> T {
    items[rng.index(items.len())]
}

fn pool_blob(i: u64) -> Bytes {
    fixtures::blob(i % BLOB_POOL + 1)
}

/// Manifest `i` of the shared pool, with the blobs it names.
fn pool_manifest(i: u64) -> (Bytes, Vec<Bytes>) {
    let config = pool_blob(i);
    let layers: Vec<Bytes> = (0..=i % 2).map(|l| pool_blob(i + 2 + l)).collect();
    let manifest = fixtures::image_manifest(&config, &layers, i % MANIFEST_POOL);
    (manifest, std::iter::once(config).chain(layers).collect())
}

/// The registry every run mirrors: the manifest pool and every blob it names, `TAGS[i]`
/// naming manifest `i`.
pub fn upstream() -> UpstreamModel {
    let mut upstream = UpstreamModel::default();
    for i in 0..MANIFEST_POOL {
        let (manifest, blobs) = pool_manifest(i);
        for blob in blobs {
            upstream.put_blob(UPSTREAM_REPO, blob);
        }
        let tag = usize::try_from(i).ok().and_then(|i| TAGS.get(i)).copied();
        upstream.put_manifest(UPSTREAM_REPO, tag, manifest, OCI_MANIFEST);
    }
    upstream
}

/// The manifest the upstream's `tag` names.
pub fn upstream_tag(tag: &str) -> Option<Digest> {
    let i = TAGS.iter().position(|t| *t == tag)?;
    Some(sha256(&pool_manifest(i as u64).0))
}

/// Every blob the upstream holds.
pub fn upstream_blobs() -> Vec<Digest> {
    (0..BLOB_POOL).map(|i| sha256(&pool_blob(i))).collect()
}

fn push_blob(rng: &mut SimRng, repo: &'static str, blob: Bytes) -> Intent {
    let chunks = rng.chance(500).then(|| {
        let mut sizes = Vec::new();
        let mut left = blob.len();
        while left > 0 {
            let size = 1 + rng.index(left);
            sizes.push(size);
            left -= size;
        }
        sizes
    });
    Intent::PushBlob(BlobPush {
        repo,
        blob,
        chunks,
        last_in_put: rng.chance(300),
        wrong_digest: rng.chance(50),
        sha512: rng.chance(150),
    })
}

/// A client's script: a few intents drawn from the shared pools. A manifest push is
/// preceded by pushes of the blobs it names, as real clients do.
pub fn script(rng: &mut SimRng) -> Vec<Intent> {
    let mut intents = Vec::new();
    for _ in 0..2 + rng.below(7) {
        let repo = pick(rng, &REPOS);
        let roll = rng.below(110);
        match roll {
            0..30 => {
                let blob = pool_blob(rng.below(BLOB_POOL));
                intents.push(push_blob(rng, repo, blob));
            }
            30..55 => {
                let (manifest, blobs) = pool_manifest(rng.below(MANIFEST_POOL));
                for blob in blobs {
                    intents.push(push_blob(rng, repo, blob));
                }
                let by_tag = rng.chance(700);
                intents.push(Intent::PushManifest {
                    repo,
                    manifest,
                    tag: by_tag.then(|| pick(rng, &TAGS)),
                    extra_tag: (!by_tag && rng.chance(700)).then(|| pick(rng, &TAGS)),
                });
            }
            55..70 => intents.push(Intent::Op(Op::ReadTag {
                repo,
                tag: pick(rng, &TAGS),
            })),
            70..78 => intents.push(Intent::Op(Op::ReadBlob {
                repo,
                digest: sha256(&pool_blob(rng.below(BLOB_POOL))),
            })),
            78..83 => intents.push(Intent::Mount {
                repo,
                from: pick(rng, &REPOS),
                digest: sha256(&pool_blob(rng.below(BLOB_POOL))),
            }),
            83..89 => intents.push(Intent::Op(Op::DeleteTag {
                repo,
                tag: pick(rng, &TAGS),
            })),
            89..95 => intents.push(Intent::Op(Op::DeleteManifest {
                repo,
                digest: sha256(&pool_manifest(rng.below(MANIFEST_POOL)).0),
            })),
            95..100 => intents.push(Intent::Op(Op::DeleteBlob {
                repo,
                digest: sha256(&pool_blob(rng.below(BLOB_POOL))),
            })),
            // An image pulled through the mirror: its tag, then its blobs.
            _ => {
                let i = rng.index(TAGS.len());
                intents.push(Intent::Op(Op::ReadTag {
                    repo: MIRRORED,
                    tag: TAGS[i],
                }));
                for blob in pool_manifest(i as u64).1 {
                    intents.push(Intent::Op(Op::ReadBlob {
                        repo: MIRRORED,
                        digest: sha256(&blob),
                    }));
                }
            }
        }
    }
    intents
}

/// A request to send, with what it means.
pub struct Planned {
    pub request: Request,
    pub kind: Kind,
}

/// Where an intent stands.
#[derive(Debug, Clone)]
enum Stage {
    /// The intent is one request.
    Single,
    StartUpload,
    Patch {
        location: String,
        chunk: usize,
    },
    Finish {
        location: String,
    },
    Cancel {
        location: String,
    },
    Done,
}

/// One intent in progress.
pub struct Task {
    intent: Intent,
    stage: Stage,
    attempts: u32,
}

impl Task {
    pub fn new(intent: Intent) -> Self {
        let stage = match &intent {
            Intent::PushBlob(BlobPush {
                chunks: Some(_), ..
            }) => Stage::StartUpload,
            _ => Stage::Single,
        };
        Task {
            intent,
            stage,
            attempts: 0,
        }
    }

    /// The next request, or `None` when the intent is over.
    pub fn next(&self) -> Option<Planned> {
        match (&self.stage, &self.intent) {
            (Stage::Single, intent) => Some(single(intent)),
            (Stage::StartUpload, Intent::PushBlob(push)) => Some(push.start()),
            (Stage::Patch { location, chunk }, Intent::PushBlob(push)) => {
                Some(push.patch(location, *chunk))
            }
            (Stage::Finish { location }, Intent::PushBlob(push)) => Some(push.finish(location)),
            (Stage::Cancel { location }, _) => Some(Planned {
                request: Request::new(Method::DELETE, location.clone()),
                kind: Kind::UploadStep,
            }),
            _ => None,
        }
    }

    /// Moves on after the last request's answer.
    pub fn on_answer(&mut self, answer: &Answer) {
        let retry = answer.retryable() && self.attempts + 1 < MAX_ATTEMPTS;
        let status = answer.status();
        self.stage = match std::mem::replace(&mut self.stage, Stage::Done) {
            stage @ (Stage::Single | Stage::StartUpload | Stage::Finish { .. }) if retry => {
                self.attempts += 1;
                stage
            }
            Stage::StartUpload => match answer {
                Answer::Replied(reply) if reply.status == StatusCode::ACCEPTED => {
                    match reply.header("location") {
                        Some(location) => self.after_chunks(location.to_owned(), 0),
                        None => Stage::Done,
                    }
                }
                _ => Stage::Done,
            },
            Stage::Patch { location, chunk } if status == Some(StatusCode::ACCEPTED) => {
                self.after_chunks(location, chunk + 1)
            }
            Stage::Patch { location, .. } => Stage::Cancel { location },
            _ => Stage::Done,
        };
        if !retry {
            self.attempts = 0;
        }
    }

    /// The stage of a chunked upload after `sent` chunks went out.
    fn after_chunks(&self, location: String, sent: usize) -> Stage {
        match &self.intent {
            Intent::PushBlob(push) if sent < push.patched_chunks() => Stage::Patch {
                location,
                chunk: sent,
            },
            Intent::PushBlob(_) => Stage::Finish { location },
            _ => Stage::Done,
        }
    }
}

impl BlobPush {
    fn chunks(&self) -> &[usize] {
        self.chunks.as_deref().unwrap_or_default()
    }

    /// Whether the last chunk goes with the `PUT` (a chunked upload with chunks only).
    fn sends_last_in_put(&self) -> bool {
        self.last_in_put && !self.chunks().is_empty()
    }

    /// How many chunks go out as `PATCH`es.
    fn patched_chunks(&self) -> usize {
        self.chunks().len() - usize::from(self.sends_last_in_put())
    }

    /// The digest the push claims, and what completing it means.
    fn claim(&self) -> (Digest, Kind) {
        let algorithm = if self.sha512 {
            Algorithm::Sha512
        } else {
            Algorithm::Sha256
        };
        if self.wrong_digest {
            let digest = Digest::of(algorithm, &[self.blob.as_ref(), b"!"].concat());
            (digest, Kind::WrongDigestPush)
        } else {
            let digest = Digest::of(algorithm, &self.blob);
            let kind = Kind::BlobPush {
                repo: self.repo,
                digest: digest.clone(),
            };
            (digest, kind)
        }
    }

    /// The byte range of chunk `i`.
    fn chunk_span(&self, i: usize) -> (usize, usize) {
        let start: usize = self.chunks()[..i].iter().sum();
        (start, start + self.chunks()[i])
    }

    fn monolithic(&self) -> Planned {
        let (digest, kind) = self.claim();
        let request = Request::new(Method::POST, format!("/v2/{}/blobs/uploads/", self.repo))
            .query(format!("digest={digest}"))
            .body(chunks_of(&self.blob, 7));
        Planned { request, kind }
    }

    fn start(&self) -> Planned {
        Planned {
            request: Request::new(Method::POST, format!("/v2/{}/blobs/uploads/", self.repo)),
            kind: Kind::UploadStep,
        }
    }

    fn patch(&self, location: &str, i: usize) -> Planned {
        let (start, end) = self.chunk_span(i);
        let request = Request::new(Method::PATCH, location)
            .header("content-range", format!("{start}-{}", end - 1))
            .body(vec![self.blob.slice(start..end)]);
        Planned {
            request,
            kind: Kind::UploadStep,
        }
    }

    fn finish(&self, location: &str) -> Planned {
        let (digest, kind) = self.claim();
        let mut request = Request::new(Method::PUT, location).query(format!("digest={digest}"));
        if self.sends_last_in_put() {
            let (start, end) = self.chunk_span(self.chunks().len() - 1);
            request = request.body(vec![self.blob.slice(start..end)]);
        }
        Planned { request, kind }
    }
}

/// The request of an intent that is one request.
fn single(intent: &Intent) -> Planned {
    match intent {
        Intent::PushBlob(push) => push.monolithic(),
        Intent::Mount { repo, from, digest } => Planned {
            request: Request::new(Method::POST, format!("/v2/{repo}/blobs/uploads/"))
                .query(format!("mount={digest}&from={from}")),
            kind: Kind::Mount {
                repo,
                digest: digest.clone(),
            },
        },
        Intent::PushManifest {
            repo,
            manifest,
            tag,
            extra_tag,
        } => {
            let digest = sha256(manifest);
            let reference = tag.map_or(digest.to_string(), str::to_owned);
            let mut request =
                Request::new(Method::PUT, format!("/v2/{repo}/manifests/{reference}"))
                    .header("content-type", OCI_MANIFEST)
                    .body(vec![manifest.clone()]);
            if let Some(extra) = extra_tag {
                request = request.query(format!("tag={extra}"));
            }
            let tags = tag.iter().chain(extra_tag).copied().collect();
            Planned {
                request,
                kind: Kind::ManifestPush {
                    repo,
                    digest,
                    bytes: manifest.clone(),
                    tags,
                },
            }
        }
        Intent::Op(op) => Planned {
            request: op.request(),
            kind: Kind::Op(op.clone()),
        },
    }
}
