//! A model of the registry a mirror asks (`Step::Upstream`): manifests and blobs by the
//! upstream's repository name, a behaviour the test sets (serving, sending corrupted blobs,
//! unreachable), and a record of what it was asked and of what a streamed fetch's client
//! received. A fetched blob goes through the object store's `WriteBody` with the core's tap,
//! as the real upstream client does.

use std::collections::BTreeMap;

use bytes::Bytes;
use stowage_core::access::AccessControl;
use stowage_core::digest::Digest;
use stowage_core::mirror::{Mirror, UpstreamRef};
use stowage_core::repositories::{Repositories, RepositorySettings};
use stowage_core::step::{Outcome, StorageRequest, UpstreamAnswer, UpstreamRequest};
use stowage_core::time::Millis;
use stowage_core::{Limits, Registry};

use crate::request::chunks_of;
use crate::store::{ObjectStore, RequestBody};

/// The chunks a fetched blob arrives in.
const CHUNK: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Behaviour {
    #[default]
    Serves,
    /// Blobs arrive with their first byte flipped.
    Corrupts,
    /// Nothing answers.
    Down,
}

/// What the client of a streamed fetch received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Streamed {
    /// The whole blob, its end marked: it was stored.
    Whole(Bytes),
    /// The stream was cut before its end.
    Cut,
}

#[derive(Debug, Default)]
pub struct UpstreamModel {
    pub behaviour: Behaviour,
    /// By (repository, tag or digest): the manifest's bytes and media type.
    manifests: BTreeMap<(String, String), (Bytes, String)>,
    blobs: BTreeMap<(String, Digest), Bytes>,
    /// Each request's kind (`UpstreamRequest::kind`), in order.
    pub asked: Vec<&'static str>,
    /// What each streamed fetch's client received, in order.
    pub streamed: Vec<Streamed>,
    /// The digest of each blob or manifest sent whole (a `GET` that found it), in order.
    pub sent: Vec<Digest>,
}

/// A registry that mirrors the model upstream under `prefix/` (its one upstream, index 0),
/// trusting a tag's answer for `tag_ttl_ms`.
pub fn mirroring(limits: Limits, prefix: &str, tag_ttl_ms: u64) -> Registry {
    let settings = RepositorySettings {
        mirror: Some(Mirror {
            upstreams: vec![UpstreamRef {
                index: 0,
                url: "https://upstream.test".to_owned(),
                hosts: vec!["upstream.test".to_owned()],
            }],
            tag_ttl_ms,
            allow_push: false,
        }),
        ..RepositorySettings::default()
    };
    Registry::new(limits).with_access(
        AccessControl::default(),
        Repositories::new([(prefix.to_owned(), settings)]),
    )
}

impl UpstreamModel {
    pub fn put_blob(&mut self, repository: &str, data: Bytes) -> Digest {
        let digest = Digest::of(stowage_core::digest::Algorithm::Sha256, &data);
        self.blobs
            .insert((repository.to_owned(), digest.clone()), data);
        digest
    }

    /// Stores a manifest under its digest and, if given, a tag; its digest.
    pub fn put_manifest(
        &mut self,
        repository: &str,
        tag: Option<&str>,
        body: Bytes,
        media_type: &str,
    ) -> Digest {
        let digest = Digest::of(stowage_core::digest::Algorithm::Sha256, &body);
        let entry = (body, media_type.to_owned());
        let mut references = vec![digest.to_string()];
        references.extend(tag.map(str::to_owned));
        for reference in references {
            self.manifests
                .insert((repository.to_owned(), reference), entry.clone());
        }
        digest
    }

    /// How many requests of `kind` were made.
    pub fn count(&self, kind: &str) -> usize {
        self.asked.iter().filter(|k| **k == kind).count()
    }

    /// Answers `request` as a registry would, writing a fetched blob into `store`.
    pub fn answer(
        &mut self,
        request: UpstreamRequest,
        store: &mut ObjectStore,
        now: Millis,
    ) -> UpstreamAnswer {
        self.asked.push(request.kind());
        if self.behaviour == Behaviour::Down {
            return UpstreamAnswer::Unavailable {
                reason: "the model upstream is down".to_owned(),
                retry_after_ms: None,
            };
        }
        match request {
            UpstreamRequest::Manifest {
                repository,
                reference,
                body,
                ..
            } => match self.manifests.get(&(repository, reference)) {
                Some((bytes, media_type)) => {
                    let digest = Digest::of(stowage_core::digest::Algorithm::Sha256, bytes);
                    if body {
                        self.sent.push(digest.clone());
                    }
                    UpstreamAnswer::Manifest {
                        digest: Some(digest),
                        media_type: Some(media_type.clone()),
                        body: body.then(|| bytes.clone()),
                    }
                }
                None => UpstreamAnswer::NotFound,
            },
            UpstreamRequest::BlobExists {
                repository, digest, ..
            } => match self.blobs.contains_key(&(repository, digest)) {
                true => UpstreamAnswer::Found,
                false => UpstreamAnswer::NotFound,
            },
            UpstreamRequest::FetchBlob {
                repository,
                digest,
                store: role,
                key,
                tap,
                serve,
                ..
            } => {
                let Some(data) = self.blobs.get(&(repository, digest.clone())).cloned() else {
                    return UpstreamAnswer::NotFound;
                };
                self.sent.push(digest);
                let data = match self.behaviour {
                    Behaviour::Corrupts => {
                        let mut bytes = data.to_vec();
                        if let Some(first) = bytes.first_mut() {
                            *first ^= 0xff;
                        }
                        Bytes::from(bytes)
                    }
                    _ => data,
                };
                let write = StorageRequest::WriteBody {
                    store: role,
                    key,
                    tap: *tap,
                };
                let mut body = RequestBody::new(chunks_of(&data, CHUNK));
                let Outcome::Body { tap, error } = store.perform(write, &mut body, now) else {
                    return UpstreamAnswer::Unavailable {
                        reason: "the model store did not take the body".to_owned(),
                        retry_after_ms: None,
                    };
                };
                let served = serve.is_some();
                if served {
                    self.streamed.push(match error {
                        None => Streamed::Whole(data),
                        Some(_) => Streamed::Cut,
                    });
                }
                UpstreamAnswer::Fetched { tap, error, served }
            }
        }
    }
}
