//! The linking machine — blob links, mounts, manifests, tags and deletes across
//! repositories — against a plain model of what each repository contains. Every answer is
//! the one the model predicts, and at the end every blob, manifest and tag of every
//! repository reads back as the model says.

use std::collections::{BTreeMap, BTreeSet};

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use http::{Method, StatusCode};
use stowage_core::digest::Digest;
use stowage_core::manifest::OCI_MANIFEST;
use stowage_core::{Limits, Registry};

use crate::fixtures;
use crate::integrity::{assert_blobs_intact, sha256};
use crate::request::{Reply, Request};
use crate::world::World;

/// Repositories, one nested inside another's path.
const REPOS: [&str; 3] = ["a", "a/b", "c"];
const TAGS: [&str; 3] = ["latest", "v1", "v2"];
const BLOBS: u64 = 5;
const MANIFESTS: u64 = 4;

#[derive(Debug, Clone)]
pub struct LinkingScript {
    /// `allow_missing_manifest_references = false`.
    pub strict: bool,
    pub actions: Vec<Action>,
}

impl LinkingScript {
    pub fn decode(data: &[u8]) -> Self {
        let mut u = Unstructured::new(data);
        LinkingScript {
            strict: u.arbitrary().unwrap_or_default(),
            actions: super::decode_all(&mut u),
        }
    }
}

/// One request; the numbers pick a repository, blob, manifest or tag from small pools.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Action {
    PushBlob {
        repo: u8,
        blob: u8,
    },
    Mount {
        repo: u8,
        from: u8,
        blob: u8,
    },
    DeleteBlob {
        repo: u8,
        blob: u8,
    },
    GetBlob {
        repo: u8,
        blob: u8,
    },
    PushManifest {
        repo: u8,
        manifest: u8,
        tag: Option<u8>,
    },
    TagByDigest {
        repo: u8,
        manifest: u8,
        tag: u8,
    },
    GetTag {
        repo: u8,
        tag: u8,
    },
    GetManifest {
        repo: u8,
        manifest: u8,
    },
    DeleteTag {
        repo: u8,
        tag: u8,
    },
    DeleteManifest {
        repo: u8,
        manifest: u8,
    },
    ListTags {
        repo: u8,
    },
}

/// What one repository should contain.
#[derive(Debug, Default)]
struct Contents {
    blobs: BTreeSet<Digest>,
    manifests: BTreeMap<Digest, Bytes>,
    tags: BTreeMap<String, Digest>,
}

impl Contents {
    fn exists(&self) -> bool {
        !self.blobs.is_empty() || !self.manifests.is_empty()
    }
}

fn repo(i: u8) -> &'static str {
    REPOS[i as usize % REPOS.len()]
}

fn tag(i: u8) -> &'static str {
    TAGS[i as usize % TAGS.len()]
}

fn blob(i: u8) -> Bytes {
    fixtures::blob(u64::from(i) % BLOBS + 1)
}

/// The layers of manifest `i`: a config and one layer from the blob pool.
fn manifest_blobs(i: u8) -> (Bytes, Vec<Bytes>) {
    let i = u64::from(i) % MANIFESTS;
    (
        fixtures::blob(i % BLOBS + 1),
        vec![fixtures::blob((i + 2) % BLOBS + 1)],
    )
}

fn manifest(i: u8) -> Bytes {
    let (config, layers) = manifest_blobs(i);
    fixtures::image_manifest(&config, &layers, u64::from(i) % MANIFESTS)
}

struct Harness {
    registry: Registry,
    world: World,
    strict: bool,
    model: BTreeMap<&'static str, Contents>,
    next_seed: u64,
}

pub fn check(data: &[u8]) {
    check_script(&LinkingScript::decode(data));
}

pub fn check_script(script: &LinkingScript) {
    let limits = Limits {
        allow_missing_manifest_references: !script.strict,
        ..Limits::default()
    };
    let mut harness = Harness {
        registry: Registry::new(limits),
        world: World::default(),
        strict: script.strict,
        model: REPOS.iter().map(|r| (*r, Contents::default())).collect(),
        next_seed: 1,
    };
    for action in &script.actions {
        harness.apply(*action);
    }
    harness.sweep();
    // Blob data is never deleted, so a corrupt blob would still be here.
    assert_blobs_intact(&harness.world.store);
}

impl Harness {
    fn send(&mut self, request: Request) -> Reply {
        self.next_seed += 1;
        self.world.run(&self.registry, request, self.next_seed)
    }

    fn contents(&mut self, repo: &'static str) -> &mut Contents {
        self.model
            .get_mut(repo)
            .expect("every repository is modelled")
    }

    fn apply(&mut self, action: Action) {
        match action {
            Action::PushBlob { repo: r, blob: b } => {
                let (name, data) = (repo(r), blob(b));
                let request = Request::new(Method::POST, format!("/v2/{name}/blobs/uploads/"))
                    .query(format!("digest={}", sha256(&data)))
                    .body(vec![data.clone()]);
                let reply = self.send(request);
                assert_eq!(reply.status, StatusCode::CREATED, "{action:?}");
                self.contents(name).blobs.insert(sha256(&data));
            }
            Action::Mount {
                repo: r,
                from,
                blob: b,
            } => {
                let (name, from, digest) = (repo(r), repo(from), sha256(&blob(b)));
                let request = Request::new(Method::POST, format!("/v2/{name}/blobs/uploads/"))
                    .query(format!("mount={digest}&from={from}"));
                let reply = self.send(request);
                if self.contents(from).blobs.contains(&digest) {
                    assert_eq!(reply.status, StatusCode::CREATED, "{action:?}");
                    self.contents(name).blobs.insert(digest);
                } else {
                    assert_eq!(reply.status, StatusCode::ACCEPTED, "{action:?}");
                }
            }
            Action::DeleteBlob { repo: r, blob: b } => {
                let (name, digest) = (repo(r), sha256(&blob(b)));
                let reply = self.send(Request::new(
                    Method::DELETE,
                    format!("/v2/{name}/blobs/{digest}"),
                ));
                let present = self.contents(name).blobs.remove(&digest);
                expect_found(&reply, present, StatusCode::ACCEPTED, &action);
            }
            Action::GetBlob { repo: r, blob: b } => self.expect_blob(repo(r), &blob(b)),
            Action::PushManifest {
                repo: r,
                manifest: m,
                tag: t,
            } => {
                let digest = sha256(&manifest(m));
                let reference = t.map_or(digest.to_string(), |t| tag(t).to_owned());
                self.push_manifest(repo(r), m, &reference, None, action);
            }
            Action::TagByDigest {
                repo: r,
                manifest: m,
                tag: t,
            } => {
                let reference = sha256(&manifest(m)).to_string();
                self.push_manifest(repo(r), m, &reference, Some(tag(t)), action);
            }
            Action::GetTag { repo: r, tag: t } => self.expect_tag(repo(r), tag(t)),
            Action::GetManifest {
                repo: r,
                manifest: m,
            } => self.expect_manifest(repo(r), &sha256(&manifest(m))),
            Action::DeleteTag { repo: r, tag: t } => {
                let (name, tag) = (repo(r), tag(t));
                let reply = self.send(Request::new(
                    Method::DELETE,
                    format!("/v2/{name}/manifests/{tag}"),
                ));
                let present = self.contents(name).tags.remove(tag).is_some();
                expect_found(&reply, present, StatusCode::ACCEPTED, &action);
            }
            Action::DeleteManifest {
                repo: r,
                manifest: m,
            } => {
                let (name, digest) = (repo(r), sha256(&manifest(m)));
                let reply = self.send(Request::new(
                    Method::DELETE,
                    format!("/v2/{name}/manifests/{digest}"),
                ));
                let contents = self.contents(name);
                let present = contents.manifests.remove(&digest).is_some();
                contents.tags.retain(|_, d| *d != digest);
                expect_found(&reply, present, StatusCode::ACCEPTED, &action);
            }
            Action::ListTags { repo: r } => self.expect_tag_list(repo(r)),
        }
    }

    fn push_manifest(
        &mut self,
        name: &'static str,
        m: u8,
        reference: &str,
        extra_tag: Option<&str>,
        action: Action,
    ) {
        let bytes = manifest(m);
        let mut request = Request::new(Method::PUT, format!("/v2/{name}/manifests/{reference}"))
            .header("content-type", OCI_MANIFEST)
            .body(vec![bytes.clone()]);
        if let Some(tag) = extra_tag {
            request = request.query(format!("tag={tag}"));
        }
        let reply = self.send(request);
        let (config, layers) = manifest_blobs(m);
        let missing = fixtures::named_blobs(&config, &layers)
            .iter()
            .any(|d| !self.model[name].blobs.contains(d));
        if self.strict && missing {
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{action:?}");
            return;
        }
        assert_eq!(reply.status, StatusCode::CREATED, "{action:?}");
        let digest = sha256(&bytes);
        let contents = self.contents(name);
        contents.manifests.insert(digest.clone(), bytes);
        let tags = extra_tag
            .into_iter()
            .chain(Some(reference).filter(|r| !r.contains(':')));
        for tag in tags {
            contents.tags.insert(tag.to_owned(), digest.clone());
        }
    }

    fn expect_blob(&mut self, name: &'static str, data: &Bytes) {
        let digest = sha256(data);
        let reply = self.send(Request::get(format!("/v2/{name}/blobs/{digest}")));
        let present = self.model[name].blobs.contains(&digest);
        expect_found(&reply, present, StatusCode::OK, &(name, &digest));
        if present {
            assert_eq!(reply.bytes(), data, "{name} blob {digest}");
        }
    }

    fn expect_manifest(&mut self, name: &'static str, digest: &Digest) {
        let reply = self.send(Request::get(format!("/v2/{name}/manifests/{digest}")));
        let expected = self.model[name].manifests.get(digest).cloned();
        expect_document(&reply, expected.as_ref(), &(name, digest));
    }

    fn expect_tag(&mut self, name: &'static str, tag: &str) {
        let reply = self.send(Request::get(format!("/v2/{name}/manifests/{tag}")));
        let contents = &self.model[name];
        let expected = contents
            .tags
            .get(tag)
            .map(|d| contents.manifests[d].clone());
        expect_document(&reply, expected.as_ref(), &(name, tag));
    }

    fn expect_tag_list(&mut self, name: &'static str) {
        let reply = self.send(Request::get(format!("/v2/{name}/tags/list")));
        let contents = &self.model[name];
        if !contents.exists() {
            assert_eq!(reply.status, StatusCode::NOT_FOUND, "tags of {name}");
            return;
        }
        assert_eq!(reply.status, StatusCode::OK, "tags of {name}");
        let listed: serde_json::Value =
            serde_json::from_slice(reply.bytes()).expect("a JSON tag list");
        let expected: Vec<&String> = contents.tags.keys().collect();
        assert_eq!(
            listed["tags"],
            serde_json::json!(expected),
            "tags of {name}"
        );
    }

    /// Reads every blob, manifest and tag of every repository back.
    fn sweep(&mut self) {
        for name in REPOS {
            for b in 0..BLOBS as u8 {
                self.expect_blob(name, &blob(b));
            }
            for m in 0..MANIFESTS as u8 {
                self.expect_manifest(name, &sha256(&manifest(m)));
            }
            for tag in TAGS {
                self.expect_tag(name, tag);
            }
            self.expect_tag_list(name);
        }
    }
}

/// `found` when the model has it, else 404.
fn expect_found(reply: &Reply, present: bool, found: StatusCode, what: &dyn std::fmt::Debug) {
    let expected = if present {
        found
    } else {
        StatusCode::NOT_FOUND
    };
    assert_eq!(reply.status, expected, "{what:?}");
}

/// A manifest answer: the model's bytes with their digest, or 404.
fn expect_document(reply: &Reply, expected: Option<&Bytes>, what: &dyn std::fmt::Debug) {
    expect_found(reply, expected.is_some(), StatusCode::OK, what);
    if let Some(bytes) = expected {
        assert_eq!(reply.bytes(), bytes, "{what:?}");
        let digest = sha256(bytes).to_string();
        assert_eq!(reply.header("docker-content-digest"), Some(digest.as_str()));
    }
}
