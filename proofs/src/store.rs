//! An in-memory object store with the semantics of the real backend
//! (`adapters/storage/src/backend.rs`): every write is atomic, a streamed body becomes visible
//! only if the tap accepted every chunk and its end (except in place, where the accepted
//! chunks land as they come), reads of missing keys give `None`.
//! Conditional writes are checked as S3 checks them (every object has a version, changed by
//! every write), or, for a store [`ObjectStore::without_versions`], as the filesystem does:
//! reads report no version and only create-new is checked.
//!
//! On S3 a folder exists only while something is stored below it: a `List` never shows an
//! empty folder. On the filesystem a folder, once made for an object, stays until a
//! `DeleteAll` removes it, though the objects below it were deleted one by one: a `List`
//! shows it, empty. The store without versions (the filesystem's profile) lists folders so.
//! (`storage-contract/` holds both profiles to the real backends.)

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::{Bytes, BytesMut};
use stowage_core::range::Span;
use stowage_core::step::{
    BodyError, BodyTap, IoError, ObjectInfo, Outcome, Piece, StorageRequest, StoreRole, Version,
    Versioned, WriteCondition,
};
use stowage_core::time::Millis;

/// A request body as the client sends it: chunks, then possibly a failure (a client that
/// disconnects mid-body).
#[derive(Debug, Clone, Default)]
pub struct RequestBody {
    chunks: VecDeque<Bytes>,
    failure: Option<BodyError>,
}

impl RequestBody {
    pub fn new(chunks: impl IntoIterator<Item = Bytes>) -> Self {
        RequestBody {
            chunks: chunks.into_iter().collect(),
            failure: None,
        }
    }

    /// The body as a client that disconnects after `chunks` chunks sends it.
    pub fn disconnect_after(mut self, chunks: usize) -> Self {
        self.chunks.truncate(chunks);
        self.failure = Some(BodyError::Client("client disconnected".to_owned()));
        self
    }

    /// The next chunk; `None` once the body (or its failure) was consumed. Like a network
    /// body, it can be read only once.
    pub fn next_chunk(&mut self) -> Option<Result<Bytes, BodyError>> {
        match self.chunks.pop_front() {
            Some(chunk) => Some(Ok(chunk)),
            None => self.failure.take().map(Err),
        }
    }

    /// Reads the whole body, refusing it once it passes `limit` bytes.
    pub fn read_all(&mut self, limit: u64) -> Result<Bytes, BodyError> {
        let mut buffer = BytesMut::new();
        while let Some(chunk) = self.next_chunk() {
            let chunk = chunk?;
            if (buffer.len() + chunk.len()) as u64 > limit {
                return Err(BodyError::TooLarge { limit });
            }
            buffer.extend_from_slice(&chunk);
        }
        Ok(buffer.freeze())
    }
}

/// Passes the body through `tap` into `land`, chunk by chunk, until the body ends or fails or
/// the tap refuses a chunk (which then does not land); why it stopped early, if it did.
fn feed(
    tap: &mut BodyTap,
    body: &mut RequestBody,
    mut land: impl FnMut(&[u8]),
) -> Option<BodyError> {
    while let Some(chunk) = body.next_chunk() {
        let accepted = chunk.and_then(|chunk| {
            tap.feed(&chunk).map_err(BodyError::Refused)?;
            land(&chunk);
            Ok(())
        });
        if let Err(e) = accepted {
            return Some(e);
        }
    }
    tap.finish().err().map(BodyError::Refused)
}

/// One store's objects by key, each with the number of the write that stored it (its
/// version) and the time of that write, and every folder an object was ever stored below
/// (until deleted with its contents).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Objects {
    objects: BTreeMap<String, (Bytes, u64, Millis)>,
    writes: u64,
    folders: BTreeSet<String>,
    /// The store's clock: what a write records as its time.
    now: Millis,
}

impl Objects {
    pub fn get(&self, key: &str) -> Option<&Bytes> {
        self.objects.get(key).map(|(data, ..)| data)
    }

    fn inspect(&self, key: &str) -> Option<ObjectInfo> {
        self.objects.get(key).map(|(data, _, modified)| ObjectInfo {
            size: data.len() as u64,
            modified: *modified,
        })
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Bytes)> {
        self.objects.iter().map(|(key, (data, ..))| (key, data))
    }

    pub fn put(&mut self, key: &str, data: Bytes) {
        let folders = key.match_indices('/').map(|(slash, _)| &key[..=slash]);
        self.folders.extend(folders.map(str::to_owned));
        self.writes += 1;
        self.objects
            .insert(key.to_owned(), (data, self.writes, self.now));
    }

    fn remove(&mut self, key: &str) {
        self.objects.remove(key);
    }

    fn read_versioned(&self, key: &str, versioned: bool) -> Option<Versioned> {
        self.objects.get(key).map(|(data, version, _)| Versioned {
            data: data.clone(),
            version: versioned.then(|| Version(version.to_string())),
        })
    }

    /// Whether a write under `condition` may replace what is at `key`.
    fn holds(&self, key: &str, condition: &WriteCondition, versioned: bool) -> bool {
        let current = self.objects.get(key);
        match condition {
            WriteCondition::Overwrite => true,
            WriteCondition::CreateNew => current.is_none(),
            // As the filesystem: no compare-and-swap, the lock alone protects.
            WriteCondition::IfVersion(_) if !versioned => true,
            WriteCondition::IfVersion(Version(expected)) => {
                current.is_some_and(|(_, version, _)| version.to_string() == *expected)
            }
        }
    }

    fn below<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a String> + 'a {
        self.objects
            .range(prefix.to_owned()..)
            .map(|(key, _)| key)
            .take_while(move |key| key.starts_with(prefix))
    }

    fn missing(what: &str, key: &str) -> Outcome {
        Outcome::Failed(IoError {
            message: format!("{what} {key}: not found"),
        })
    }

    fn write_body(&mut self, key: &str, mut tap: BodyTap, body: &mut RequestBody) -> Outcome {
        let mut data = BytesMut::new();
        let error = feed(&mut tap, body, |chunk| data.extend_from_slice(chunk));
        if error.is_none() {
            self.put(key, data.freeze());
        }
        Outcome::Body {
            tap: Box::new(tap),
            error,
        }
    }

    /// As the fs backend: the accepted chunks land in `key` from `offset` on as they come
    /// (a gap before `offset` reads as zeros), and stay there when the body fails.
    fn write_body_at(
        &mut self,
        key: &str,
        offset: u64,
        mut tap: BodyTap,
        body: &mut RequestBody,
    ) -> Outcome {
        let mut data = self.get(key).map(|d| d.to_vec()).unwrap_or_default();
        let mut at = offset as usize;
        let error = feed(&mut tap, body, |chunk| {
            let end = at + chunk.len();
            if data.len() < end {
                data.resize(end, 0);
            }
            data[at..end].copy_from_slice(chunk);
            at = end;
        });
        if at > offset as usize {
            self.put(key, data.into());
        }
        Outcome::Body {
            tap: Box::new(tap),
            error,
        }
    }

    /// The bytes of a piece, if they are all stored.
    fn piece(&self, piece: &Piece) -> Option<Bytes> {
        match piece.span {
            None => self.get(&piece.key).cloned(),
            Some(span) => self.span(&piece.key, span),
        }
    }

    /// The bytes of `span` of the object at `key`, if they are all stored.
    fn span(&self, key: &str, span: Span) -> Option<Bytes> {
        let data = self.get(key)?;
        let start = usize::try_from(span.start).ok()?;
        let end = usize::try_from(span.start.checked_add(span.len)?).ok()?;
        (end <= data.len()).then(|| data.slice(start..end))
    }

    fn hash_stored(&self, pieces: &[Piece], mut tap: BodyTap) -> Outcome {
        for piece in pieces {
            let Some(data) = self.piece(piece) else {
                return Self::missing("read", &piece.key);
            };
            if let Err(e) = tap.feed(&data) {
                return Outcome::Body {
                    tap: Box::new(tap),
                    error: Some(BodyError::Refused(e)),
                };
            }
        }
        Outcome::Body {
            tap: Box::new(tap),
            error: None,
        }
    }

    /// As the fs backend: no piece writes an empty object, a single whole piece is moved
    /// (renamed), anything else is copied into one atomic write; only if nothing is at `to`.
    fn concat(&mut self, pieces: &[Piece], to: &str) -> Outcome {
        if self.objects.contains_key(to) {
            return Outcome::ConditionFailed;
        }
        let mut data = BytesMut::new();
        for piece in pieces {
            match self.piece(piece) {
                Some(bytes) => data.extend_from_slice(&bytes),
                None => return Self::missing("commit", &piece.key),
            }
        }
        if let [Piece { key, span: None }] = pieces {
            self.remove(key);
        }
        self.put(to, data.freeze());
        Outcome::Ok
    }

    /// The children of `prefix`; with `emptied_folders`, also the folders whose objects were
    /// all deleted one by one (as the filesystem lists them).
    fn list(&self, prefix: &str, emptied_folders: bool) -> Vec<String> {
        let child = |key: &String| {
            let rest = &key[prefix.len()..];
            match rest.find('/') {
                Some(slash) => rest[..=slash].to_owned(),
                None => rest.to_owned(),
            }
        };
        let mut children: BTreeSet<String> = self.below(prefix).map(child).collect();
        if emptied_folders {
            let folders = self.folders.range(prefix.to_owned()..);
            let folders = folders.take_while(|folder| folder.starts_with(prefix));
            children.extend(folders.filter(|folder| *folder != prefix).map(child));
        }
        children.into_iter().collect()
    }

    fn delete_all(&mut self, prefix: &str) {
        let doomed: Vec<String> = self.below(prefix).cloned().collect();
        for key in doomed {
            self.remove(&key);
        }
        self.folders.retain(|folder| !folder.starts_with(prefix));
    }
}

/// The blob store and the metadata store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectStore {
    pub blobs: Objects,
    pub meta: Objects,
    /// Whether reads report versions and writes check them (S3), or not (the filesystem).
    pub versioned: bool,
}

impl Default for ObjectStore {
    fn default() -> Self {
        ObjectStore {
            blobs: Objects::default(),
            meta: Objects::default(),
            versioned: true,
        }
    }
}

impl ObjectStore {
    /// A store with the filesystem's conditions: no versions, create-new only.
    pub fn without_versions() -> Self {
        ObjectStore {
            versioned: false,
            ..ObjectStore::default()
        }
    }

    /// Whether [`StorageRequest::WriteBodyAt`] works: on the filesystem, not on S3.
    pub fn writes_in_place(&self) -> bool {
        !self.versioned
    }

    /// The bytes of `span` of a stored object, as a response body streams them; `None`
    /// unless they are all there.
    pub fn read_span(&self, store: StoreRole, key: &str, span: Span) -> Option<Bytes> {
        self.objects(store).span(key, span)
    }

    pub fn objects(&self, store: StoreRole) -> &Objects {
        match store {
            StoreRole::Blobs => &self.blobs,
            StoreRole::Meta => &self.meta,
        }
    }

    fn objects_mut(&mut self, store: StoreRole) -> &mut Objects {
        match store {
            StoreRole::Blobs => &mut self.blobs,
            StoreRole::Meta => &mut self.meta,
        }
    }

    /// Performs one storage request at `now` (the time writes record); `body` is the
    /// request body for the requests that stream it.
    pub fn perform(
        &mut self,
        request: StorageRequest,
        body: &mut RequestBody,
        now: Millis,
    ) -> Outcome {
        self.blobs.now = now;
        self.meta.now = now;
        match request {
            StorageRequest::Stat { store, key } => {
                Outcome::Stat(self.objects(store).get(&key).map(|d| d.len() as u64))
            }
            StorageRequest::Inspect { store, key } => {
                Outcome::Inspected(self.objects(store).inspect(&key))
            }
            StorageRequest::Read { store, key } => {
                Outcome::Read(self.objects(store).get(&key).cloned())
            }
            StorageRequest::ReadVersioned { store, key } => {
                Outcome::Versioned(self.objects(store).read_versioned(&key, self.versioned))
            }
            StorageRequest::Write {
                store,
                key,
                data,
                condition,
            } => {
                let versioned = self.versioned;
                let objects = self.objects_mut(store);
                if !objects.holds(&key, &condition, versioned) {
                    return Outcome::ConditionFailed;
                }
                objects.put(&key, data);
                Outcome::Ok
            }
            StorageRequest::WriteBody { store, key, tap } => {
                self.objects_mut(store).write_body(&key, tap, body)
            }
            StorageRequest::WriteBodyAt { key, .. } if !self.writes_in_place() => {
                Outcome::Failed(IoError {
                    message: format!("write in place {key}: object storage cannot write in place"),
                })
            }
            StorageRequest::WriteBodyAt {
                store,
                key,
                offset,
                tap,
            } => self
                .objects_mut(store)
                .write_body_at(&key, offset, tap, body),
            StorageRequest::HashStored { store, pieces, tap } => {
                self.objects(store).hash_stored(&pieces, tap)
            }
            StorageRequest::Concat { store, pieces, to } => {
                self.objects_mut(store).concat(&pieces, &to)
            }
            StorageRequest::Delete { store, key } => {
                self.objects_mut(store).remove(&key);
                Outcome::Ok
            }
            StorageRequest::DeleteAll { store, prefix } => {
                self.objects_mut(store).delete_all(&prefix);
                Outcome::Ok
            }
            StorageRequest::List { store, prefix } => {
                Outcome::List(self.objects(store).list(&prefix, !self.versioned))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_immediate_children_only() {
        let mut objects = Objects::default();
        for key in ["a/b/c", "a/b/d", "a/e", "ab/f"] {
            objects.put(key, Bytes::new());
        }
        assert_eq!(objects.list("a/", false), ["b/", "e"]);
        objects.delete_all("a/b/");
        assert_eq!(objects.list("a/", false), ["e"]);
        assert_eq!(objects.list("a/", true), ["e"]);
        objects.remove("a/e");
        objects.put("a/f/g", Bytes::new());
        objects.remove("a/f/g");
        assert_eq!(objects.list("a/", false), Vec::<String>::new());
        assert_eq!(objects.list("a/", true), ["f/"]);
    }
}
