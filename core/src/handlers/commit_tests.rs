//! Commit writes under a lost lock: a conditional write that finds its key changed since it
//! was read under the lock answers 503 and changes nothing. The driver here is the smallest
//! that runs a handler: an in-memory store (with or without versions, like S3 and the
//! filesystem), locks always granted, an empty cache, and a hook that lets "another replica"
//! write just before a chosen write is performed.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};

use super::{Registry, RequestHead};
use crate::digest::{Algorithm, Digest};
use crate::layout;
use crate::names::{RepoName, Tag};
use crate::step::{
    Millis, Outcome, Response, Step, StorageRequest, Store, Version, Versioned, WriteCondition,
};

#[derive(Default)]
struct TestStore {
    objects: BTreeMap<(bool, String), (Bytes, u64)>,
    writes: u64,
    /// Whether reads report versions (S3) or not (the filesystem).
    versioned: bool,
}

fn slot(store: Store, key: String) -> (bool, String) {
    (store == Store::Meta, key)
}

impl TestStore {
    fn put(&mut self, store: Store, key: &str, data: impl Into<Bytes>) {
        self.writes += 1;
        let version = self.writes;
        self.objects
            .insert(slot(store, key.to_owned()), (data.into(), version));
    }

    fn get(&self, store: Store, key: &str) -> Option<Bytes> {
        let found = self.objects.get(&slot(store, key.to_owned()));
        found.map(|(data, _)| data.clone())
    }

    fn perform(&mut self, request: StorageRequest, body: &Bytes) -> Outcome {
        match request {
            StorageRequest::Stat { store, key } => {
                Outcome::Stat(self.get(store, &key).map(|d| d.len() as u64))
            }
            StorageRequest::Read { store, key } => Outcome::Read(self.get(store, &key)),
            StorageRequest::ReadVersioned { store, key } => {
                let found = self.objects.get(&slot(store, key));
                Outcome::Versioned(found.map(|(data, version)| Versioned {
                    data: data.clone(),
                    version: self.versioned.then(|| Version(version.to_string())),
                }))
            }
            StorageRequest::Write {
                store,
                key,
                data,
                condition,
            } => {
                let current = self.objects.get(&slot(store, key.clone()));
                let holds = match (&condition, current) {
                    (WriteCondition::Overwrite, _) => true,
                    (WriteCondition::CreateNew, found) => found.is_none(),
                    (WriteCondition::IfVersion(_), _) if !self.versioned => true,
                    (WriteCondition::IfVersion(Version(v)), Some((_, version))) => {
                        *v == version.to_string()
                    }
                    (WriteCondition::IfVersion(_), None) => false,
                };
                if !holds {
                    return Outcome::ConditionFailed;
                }
                self.put(store, &key, data);
                Outcome::Done
            }
            StorageRequest::WriteBody {
                store,
                key,
                mut tap,
            } => {
                let error = tap.feed(body).and_then(|()| tap.finish()).err();
                if error.is_none() {
                    self.put(store, &key, body.clone());
                }
                Outcome::Body {
                    tap: Box::new(tap),
                    error: error.map(Into::into),
                }
            }
            StorageRequest::Delete { store, key } => {
                self.objects.remove(&slot(store, key));
                Outcome::Done
            }
            other => panic!("the test driver does not perform {other:?}"),
        }
    }
}

fn head(method: Method, path: &str, body: &Bytes) -> RequestHead {
    let mut headers = HeaderMap::new();
    headers.insert("content-length", body.len().into());
    headers.insert(
        "content-type",
        "application/vnd.oci.image.manifest.v1+json"
            .parse()
            .expect("a header value"),
    );
    RequestHead {
        method,
        path: path.to_owned(),
        query: None,
        headers,
    }
}

/// Runs one request; `before_write` sees the key of every write before it is performed.
fn run(
    store: &mut TestStore,
    method: Method,
    path: &str,
    body: Bytes,
    mut before_write: impl FnMut(&mut TestStore, &str),
) -> Response {
    let mut op = Registry::default().handle(head(method, path, &body), 7);
    loop {
        let outcome = match op.poll(Millis(1_000)) {
            Step::Done(response) => return response,
            Step::Storage(request) => {
                if let StorageRequest::Write { key, .. } = &request {
                    before_write(store, key);
                }
                store.perform(request, &body)
            }
            Step::Lock(_) => Outcome::Lock(true),
            Step::Cache(_) => Outcome::Cache(None),
            Step::ReadBody { .. } => Outcome::BodyBytes(Ok(body.clone())),
            Step::Sleep { .. } => Outcome::Done,
        };
        op.on_result(outcome);
    }
}

fn manifest(n: u8) -> Bytes {
    let config = Digest::of(Algorithm::Sha256, &[n]);
    Bytes::from(format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":1}},"layers":[]}}"#
    ))
}

fn repo() -> RepoName {
    "team/app".parse().expect("a repository name")
}

fn tag_key() -> String {
    layout::tag_current(&repo(), &"latest".parse::<Tag>().expect("a tag"))
}

fn link_to(body: &Bytes) -> Bytes {
    Bytes::from(layout::link_content(&Digest::of(Algorithm::Sha256, body)))
}

fn push_tag(store: &mut TestStore, body: Bytes) -> Response {
    run(
        store,
        Method::PUT,
        "/v2/team/app/manifests/latest",
        body,
        |_, _| {},
    )
}

fn assert_unavailable(response: &Response) {
    assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE);
    let crate::step::Body::Bytes(body) = &response.body else {
        panic!("an error body");
    };
    assert!(String::from_utf8_lossy(body).contains("UNAVAILABLE"));
}

/// Another replica moves the tag after this push read it under its lock (its lock was lost
/// meanwhile): the push's commit is refused and the newer tag stays.
fn tag_moved_underneath(versioned: bool, tag_existed: bool) {
    let mut store = TestStore {
        versioned,
        ..TestStore::default()
    };
    if tag_existed {
        assert_eq!(
            push_tag(&mut store, manifest(1)).status,
            StatusCode::CREATED
        );
    }
    let newer = link_to(&manifest(2));
    let response = run(
        &mut store,
        Method::PUT,
        "/v2/team/app/manifests/latest",
        manifest(3),
        |store, key| {
            if key == tag_key() {
                store.put(Store::Meta, key, newer.clone());
            }
        },
    );
    assert_unavailable(&response);
    assert_eq!(store.get(Store::Meta, &tag_key()), Some(newer));
}

#[test]
fn a_tag_replaced_underneath_refuses_the_commit() {
    tag_moved_underneath(true, true);
}

#[test]
fn a_tag_created_underneath_refuses_the_commit() {
    tag_moved_underneath(true, false);
    // The filesystem has no versions, but creating a tag is create-new there too.
    tag_moved_underneath(false, false);
}

#[test]
fn without_versions_the_lock_alone_guards_a_replaced_tag() {
    let mut store = TestStore::default();
    assert_eq!(
        push_tag(&mut store, manifest(1)).status,
        StatusCode::CREATED
    );
    assert_eq!(
        push_tag(&mut store, manifest(2)).status,
        StatusCode::CREATED
    );
    assert_eq!(
        store.get(Store::Meta, &tag_key()),
        Some(link_to(&manifest(2)))
    );
}

#[test]
fn pushing_again_finds_content_addressed_objects_and_succeeds() {
    let mut store = TestStore {
        versioned: true,
        ..TestStore::default()
    };
    for body in [manifest(1), manifest(2), manifest(1)] {
        assert_eq!(push_tag(&mut store, body).status, StatusCode::CREATED);
    }
    assert_eq!(
        store.get(Store::Meta, &tag_key()),
        Some(link_to(&manifest(1)))
    );
}

#[test]
fn a_chunk_commit_refuses_a_record_changed_underneath() {
    let mut store = TestStore {
        versioned: true,
        ..TestStore::default()
    };
    let started = run(
        &mut store,
        Method::POST,
        "/v2/team/app/blobs/uploads/",
        Bytes::new(),
        |_, _| {},
    );
    assert_eq!(started.status, StatusCode::ACCEPTED);
    let location = started.headers["location"]
        .to_str()
        .expect("a location")
        .to_owned();
    let record_key = store
        .objects
        .keys()
        .map(|(_, key)| key.clone())
        .find(|key| key.ends_with("session.json"))
        .expect("an upload record");
    let theirs = Bytes::from_static(b"another replica's record");
    let response = run(
        &mut store,
        Method::PATCH,
        &location,
        Bytes::from_static(b"chunk"),
        |store, key| {
            if key == record_key {
                store.put(Store::Blobs, key, theirs.clone());
            }
        },
    );
    assert_unavailable(&response);
    assert_eq!(store.get(Store::Blobs, &record_key), Some(theirs));
}
