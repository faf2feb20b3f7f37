//! What a handler has at hand: the step channel, settings, randomness, and typed wrappers
//! around each kind of step.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::announce::Audience;
use super::fence::LastRead;
use crate::config::Limits;
use crate::error::{ErrorCode, RegistryError};
use crate::lock::{Held, changed_underneath};
use crate::op::Channel;
use crate::rng::{Entropy, Rng};
use crate::step::{
    BodyError, BodyTap, CacheRequest, ObjectInfo, Outcome, Piece, Progress, Step, StorageRequest,
    StoreRole, UpstreamAnswer, UpstreamRequest, Versioned, WriteCondition,
};

pub(crate) struct Ctx {
    pub(crate) channel: Channel,
    pub(crate) limits: Limits,
    pub(crate) audience: Audience,
    upload_id: String,
    rng: Mutex<Rng>,
    pub(crate) gc_state_read: Arc<LastRead>,
}

/// Why a step did not give the outcome asked for.
fn failure(outcome: Outcome) -> String {
    match outcome {
        Outcome::Failed(e) => e.message,
        other => format!("unexpected outcome {other:?}"),
    }
}

fn unavailable(what: &str, outcome: Outcome) -> RegistryError {
    let reason = failure(outcome);
    RegistryError::new(ErrorCode::Unavailable, format!("{what} failed: {reason}"))
}

impl Ctx {
    pub(crate) fn new(
        channel: Channel,
        limits: Limits,
        audience: Audience,
        entropy: Entropy,
        gc_state_read: Arc<LastRead>,
    ) -> Self {
        Ctx {
            channel,
            limits,
            audience,
            upload_id: entropy.upload_id(),
            rng: Mutex::new(Rng::new(entropy.seed)),
            gc_state_read,
        }
    }

    /// The id for an upload session this request starts (from the driver's cryptographic
    /// randomness, unlike [`Ctx::fresh_id`]).
    pub(crate) fn upload_id(&self) -> &str {
        &self.upload_id
    }

    fn rng(&self) -> std::sync::MutexGuard<'_, Rng> {
        self.rng.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A name no other request picks (storage part names); not secret.
    pub(crate) fn fresh_id(&self) -> String {
        self.rng().id()
    }

    async fn storage(&self, request: StorageRequest) -> Outcome {
        self.channel.perform(Step::Storage(request)).await
    }

    pub(crate) async fn stat(
        &self,
        store: StoreRole,
        key: String,
    ) -> Result<Option<u64>, RegistryError> {
        answer::size(self.storage(StorageRequest::Stat { store, key }).await)
    }

    /// An object's size and when it was written, or `None` when absent.
    pub(crate) async fn inspect(
        &self,
        store: StoreRole,
        key: String,
    ) -> Result<Option<ObjectInfo>, RegistryError> {
        match self.storage(StorageRequest::Inspect { store, key }).await {
            Outcome::Inspected(info) => Ok(info),
            other => Err(unavailable("inspect", other)),
        }
    }

    pub(crate) async fn exists(
        &self,
        store: StoreRole,
        key: String,
    ) -> Result<bool, RegistryError> {
        Ok(self.stat(store, key).await?.is_some())
    }

    pub(crate) async fn read(
        &self,
        store: StoreRole,
        key: String,
    ) -> Result<Option<Bytes>, RegistryError> {
        match self.storage(StorageRequest::Read { store, key }).await {
            Outcome::Read(data) => Ok(data),
            other => Err(unavailable("read", other)),
        }
    }

    pub(crate) async fn read_versioned(
        &self,
        store: StoreRole,
        key: String,
    ) -> Result<Option<Versioned>, RegistryError> {
        answer::versioned(
            self.storage(StorageRequest::ReadVersioned { store, key })
                .await,
        )
    }

    /// Writes `data` at `key` if `condition` holds: `Ok(false)` when it did not, and
    /// nothing changed.
    pub(crate) async fn write(
        &self,
        store: StoreRole,
        key: String,
        data: impl Into<Bytes>,
        condition: WriteCondition,
    ) -> Result<bool, RegistryError> {
        let data = data.into();
        let request = StorageRequest::Write {
            store,
            key,
            data,
            condition,
        };
        answer::written(self.storage(request).await)
    }

    /// Writes `data` at a key that determines it, so finding an object there is success: a
    /// content address, or a link (named by the digest it links to, which is all it says;
    /// readers only ask whether it exists). No read-back, so a re-push costs no extra
    /// request under its lock.
    pub(crate) async fn create(
        &self,
        store: StoreRole,
        key: String,
        data: impl Into<Bytes>,
    ) -> Result<(), RegistryError> {
        self.write(store, key, data, WriteCondition::CreateNew)
            .await
            .map(|_| ())
    }

    /// Replaces the object at `key` that a [`Ctx::read_versioned`] under the caller's lock
    /// found (`found`; `None`: absent). If it changed since, someone committed while this
    /// operation's lock was lost: nothing is written and the client is told to retry.
    pub(crate) async fn replace(
        &self,
        store: StoreRole,
        key: String,
        data: impl Into<Bytes>,
        found: Option<&Versioned>,
    ) -> Result<(), RegistryError> {
        let condition = WriteCondition::replacing(found);
        if self.write(store, key.clone(), data, condition).await? {
            Ok(())
        } else {
            Err(changed_underneath(&key))
        }
    }

    pub(crate) async fn delete(&self, store: StoreRole, key: String) -> Result<(), RegistryError> {
        match self.storage(StorageRequest::Delete { store, key }).await {
            Outcome::Ok => Ok(()),
            other => Err(unavailable("delete", other)),
        }
    }

    pub(crate) async fn delete_all(
        &self,
        store: StoreRole,
        prefix: String,
    ) -> Result<(), RegistryError> {
        match self
            .storage(StorageRequest::DeleteAll { store, prefix })
            .await
        {
            Outcome::Ok => Ok(()),
            other => Err(unavailable("delete", other)),
        }
    }

    pub(crate) async fn list(
        &self,
        store: StoreRole,
        prefix: String,
    ) -> Result<Vec<String>, RegistryError> {
        match self.storage(StorageRequest::List { store, prefix }).await {
            Outcome::List(names) => Ok(names),
            other => Err(unavailable("list", other)),
        }
    }

    /// The answers to `requests`, asked at once (see [`Step::StorageBatch`]), in order;
    /// `answer` takes each outcome apart, handing back one of the wrong kind.
    async fn storage_batch<T>(
        &self,
        what: &str,
        requests: Vec<StorageRequest>,
        answer: fn(Outcome) -> Result<T, Outcome>,
    ) -> Result<Vec<T>, RegistryError> {
        let asked = requests.len();
        if asked == 0 {
            return Ok(Vec::new());
        }
        match self.channel.perform(Step::StorageBatch(requests)).await {
            Outcome::Batch(outcomes) if outcomes.len() == asked => outcomes
                .into_iter()
                .map(|outcome| answer(outcome).map_err(|other| unavailable(what, other)))
                .collect(),
            other => Err(unavailable(what, other)),
        }
    }

    /// Each of `requests`, of any kinds, asked at once: their outcomes in order, each for
    /// the caller to read with [`answer`].
    pub(crate) async fn storage_each(
        &self,
        requests: Vec<StorageRequest>,
    ) -> Result<Vec<Outcome>, RegistryError> {
        self.storage_batch("storage", requests, Ok).await
    }

    /// Tells the driver how far a long operation has come; nothing waits on the answer.
    pub(crate) async fn progress(&self, phase: &'static str, done: usize, total: usize) {
        let progress = Progress {
            phase,
            done: done as u64,
            total: total as u64,
        };
        self.channel.perform(Step::Progress(progress)).await;
    }

    /// Whether each of `objects` exists, asked at once.
    pub(crate) async fn exists_each(
        &self,
        objects: Vec<(StoreRole, String)>,
    ) -> Result<Vec<bool>, RegistryError> {
        let requests = objects
            .into_iter()
            .map(|(store, key)| StorageRequest::Stat { store, key })
            .collect();
        self.storage_batch("stat", requests, |outcome| match outcome {
            Outcome::Stat(size) => Ok(size.is_some()),
            other => Err(other),
        })
        .await
    }

    /// [`Ctx::create`] for each of `objects` in `store`, asked at once.
    pub(crate) async fn create_each(
        &self,
        store: StoreRole,
        objects: Vec<(String, Bytes)>,
    ) -> Result<(), RegistryError> {
        let requests = objects
            .into_iter()
            .map(|(key, data)| StorageRequest::Write {
                store,
                key,
                data,
                condition: WriteCondition::CreateNew,
            })
            .collect();
        self.storage_batch("write", requests, |outcome| match outcome {
            Outcome::Ok | Outcome::ConditionFailed => Ok(()),
            other => Err(other),
        })
        .await
        .map(|_| ())
    }

    /// [`Ctx::delete_all`] for each of `folders`, asked at once.
    pub(crate) async fn delete_all_each(
        &self,
        folders: Vec<(StoreRole, String)>,
    ) -> Result<(), RegistryError> {
        let requests = folders
            .into_iter()
            .map(|(store, prefix)| StorageRequest::DeleteAll { store, prefix })
            .collect();
        self.storage_batch("delete", requests, |outcome| match outcome {
            Outcome::Ok => Ok(()),
            other => Err(other),
        })
        .await
        .map(|_| ())
    }

    /// What [`Ctx::inspect`] tells of each of `keys` in `store`, asked at once.
    pub(crate) async fn inspect_each(
        &self,
        store: StoreRole,
        keys: Vec<String>,
    ) -> Result<Vec<Option<ObjectInfo>>, RegistryError> {
        let requests = keys
            .into_iter()
            .map(|key| StorageRequest::Inspect { store, key })
            .collect();
        self.storage_batch("inspect", requests, |outcome| match outcome {
            Outcome::Inspected(info) => Ok(info),
            other => Err(other),
        })
        .await
    }

    /// The content of each of `keys` in `store` (`None` where absent), asked at once.
    pub(crate) async fn read_each(
        &self,
        store: StoreRole,
        keys: Vec<String>,
    ) -> Result<Vec<Option<Bytes>>, RegistryError> {
        let requests = keys
            .into_iter()
            .map(|key| StorageRequest::Read { store, key })
            .collect();
        self.storage_batch("read", requests, |outcome| match outcome {
            Outcome::Read(data) => Ok(data),
            other => Err(other),
        })
        .await
    }

    /// The listing of each folder of `prefixes` in `store`, asked at once.
    pub(crate) async fn list_each(
        &self,
        store: StoreRole,
        prefixes: Vec<String>,
    ) -> Result<Vec<Vec<String>>, RegistryError> {
        let requests = prefixes
            .into_iter()
            .map(|prefix| StorageRequest::List { store, prefix })
            .collect();
        self.storage_batch("list", requests, |outcome| match outcome {
            Outcome::List(names) => Ok(names),
            other => Err(other),
        })
        .await
    }

    /// Assembles `pieces` at the content address `to`; an object already there holds the
    /// same bytes, so finding one is success.
    pub(crate) async fn concat(
        &self,
        store: StoreRole,
        pieces: Vec<Piece>,
        to: String,
    ) -> Result<(), RegistryError> {
        match self
            .storage(StorageRequest::Concat { store, pieces, to })
            .await
        {
            Outcome::Ok | Outcome::ConditionFailed => Ok(()),
            other => Err(unavailable("commit", other)),
        }
    }

    /// Streams the request body to `key` through `tap`; see [`StorageRequest::WriteBody`].
    pub(crate) async fn write_body(
        &self,
        store: StoreRole,
        key: String,
        tap: BodyTap,
    ) -> Result<(BodyTap, Option<BodyError>), RegistryError> {
        self.stream_body(StorageRequest::WriteBody { store, key, tap })
            .await
    }

    /// Streams the request body into `key` from `offset` on; see
    /// [`StorageRequest::WriteBodyAt`].
    pub(crate) async fn write_body_at(
        &self,
        store: StoreRole,
        key: String,
        offset: u64,
        tap: BodyTap,
    ) -> Result<(BodyTap, Option<BodyError>), RegistryError> {
        let request = StorageRequest::WriteBodyAt {
            store,
            key,
            offset,
            tap,
        };
        self.stream_body(request).await
    }

    async fn stream_body(
        &self,
        request: StorageRequest,
    ) -> Result<(BodyTap, Option<BodyError>), RegistryError> {
        match self.storage(request).await {
            Outcome::Body { tap, error } => Ok((*tap, error)),
            other => Err(unavailable("upload", other)),
        }
    }

    pub(crate) async fn hash_stored(
        &self,
        store: StoreRole,
        pieces: Vec<Piece>,
        tap: BodyTap,
    ) -> Result<BodyTap, RegistryError> {
        match self
            .storage(StorageRequest::HashStored { store, pieces, tap })
            .await
        {
            Outcome::Body { tap, error: None } => Ok(*tap),
            Outcome::Body { error: Some(e), .. } => {
                Err(RegistryError::new(ErrorCode::Unavailable, e.to_string()))
            }
            other => Err(unavailable("re-hash", other)),
        }
    }

    pub(crate) async fn read_body(
        &self,
        limit: u64,
    ) -> Result<Result<Bytes, BodyError>, RegistryError> {
        match self.channel.perform(Step::ReadBody { limit }).await {
            Outcome::BodyBytes(body) => Ok(body),
            other => Err(unavailable("reading the body", other)),
        }
    }

    // The cache protocol: readers only ever fill an empty key (`only_if_absent`); writers,
    // under their locks and before acknowledging, overwrite the key with what they
    // committed, or with a tombstone (an empty value) when they removed it. A reader that
    // read storage before a write committed therefore cannot overwrite the writer's entry,
    // and replicas sharing the cache never serve what an acknowledged write replaced.

    /// What the cache knows of `key`: `Some(Some(value))`, `Some(None)` when a writer
    /// recorded it gone, `None` when it does not know. A cache failure counts as not
    /// knowing: the cache is only ever a shortcut.
    pub(crate) async fn cache_get(&self, key: String) -> Option<Option<Bytes>> {
        match self
            .channel
            .perform(Step::Cache(CacheRequest::Get { key }))
            .await
        {
            Outcome::Cache(Some(value)) if value.is_empty() => Some(None),
            Outcome::Cache(Some(value)) => Some(Some(value)),
            _ => None,
        }
    }

    /// A reader remembers what it read from storage, unless a writer got there first.
    pub(crate) async fn cache_fill(&self, key: String, value: Bytes) {
        self.cache_put(key, value, true).await;
    }

    /// A writer records what it committed (`None`: that `key` is gone). The record must
    /// reach the cache: a failure fails the write.
    pub(crate) async fn cache_record(
        &self,
        key: String,
        value: Option<Bytes>,
    ) -> Result<(), RegistryError> {
        match self.cache_put(key, value.unwrap_or_default(), false).await {
            Outcome::Ok | Outcome::Cache(_) => Ok(()),
            other => Err(unavailable("cache update", other)),
        }
    }

    /// Records `value` at `key` for `ttl_ms` (a mirror's tag check and an upstream's
    /// back-off last their own time); like every cache entry, only a shortcut: a failure
    /// is ignored.
    pub(crate) async fn cache_remember(&self, key: String, value: Bytes, ttl_ms: u64) {
        let request = CacheRequest::Put {
            key,
            value,
            ttl_ms,
            only_if_absent: false,
        };
        self.channel.perform(Step::Cache(request)).await;
    }

    /// A writer that cannot tell what storage holds makes every reader ask it. Like a
    /// reader's fill, only a shortcut: a failure is ignored (the entry then lives out its
    /// TTL).
    pub(crate) async fn cache_forget(&self, key: String) {
        let request = CacheRequest::Remove { key };
        self.channel.perform(Step::Cache(request)).await;
    }

    async fn cache_put(&self, key: String, value: Bytes, only_if_absent: bool) -> Outcome {
        let ttl_ms = self.limits.cache_ttl_ms;
        let request = CacheRequest::Put {
            key,
            value,
            ttl_ms,
            only_if_absent,
        };
        self.channel.perform(Step::Cache(request)).await
    }

    pub(crate) async fn lock(&self, keys: Vec<String>) -> Result<Held, RegistryError> {
        // A generator of its own, so no guard on ours is held across the lock steps.
        let mut rng = Rng::new(self.rng().next_u64());
        Held::acquire(&self.channel, &mut rng, &self.limits.locks, keys).await
    }

    /// Takes the lock on `key` if it is free, without waiting.
    pub(crate) async fn try_lock(&self, key: String) -> Result<Option<Held>, RegistryError> {
        let mut rng = Rng::new(self.rng().next_u64());
        Held::try_acquire(&self.channel, &mut rng, &self.limits.locks, key).await
    }

    /// Asks a mirror's upstream; a driver that cannot answers with a failure, which counts
    /// as the upstream being unavailable.
    pub(crate) async fn upstream(&self, request: UpstreamRequest) -> UpstreamAnswer {
        match self.channel.perform(Step::Upstream(request)).await {
            Outcome::Upstream(answer) => answer,
            other => UpstreamAnswer::Unavailable {
                reason: failure(other),
                retry_after_ms: None,
            },
        }
    }

    /// Checks the locks are still held right before a commit write.
    pub(crate) async fn ensure(&self, held: &mut Held) -> Result<(), RegistryError> {
        held.ensure(&self.channel).await
    }

    pub(crate) async fn unlock(&self, held: Held) {
        held.release(&self.channel).await;
    }
}

impl Ctx {
    /// Runs `body` holding the locks on `keys`, and releases them whatever it returns.
    pub(crate) async fn locked<T>(
        &self,
        keys: Vec<String>,
        body: impl AsyncFnOnce(&mut Held) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        let mut held = self.lock(keys).await?;
        let result = body(&mut held).await;
        self.unlock(held).await;
        result
    }

    /// Runs `body` holding the lock on `key` if it is free, and releases it; `None`,
    /// without running `body`, when someone else holds it.
    pub(crate) async fn try_locked<T>(
        &self,
        key: String,
        body: impl AsyncFnOnce(&mut Held) -> Result<T, RegistryError>,
    ) -> Result<Option<T>, RegistryError> {
        let Some(mut held) = self.try_lock(key).await? else {
            return Ok(None);
        };
        let result = body(&mut held).await;
        self.unlock(held).await;
        result.map(Some)
    }
}

/// What a storage outcome says to each kind of request; any other outcome is a failure.
pub(crate) mod answer {
    use super::unavailable;
    use crate::error::RegistryError;
    use crate::step::{Outcome, Versioned};

    /// To a stat: the object's size, `None` when absent.
    pub(crate) fn size(outcome: Outcome) -> Result<Option<u64>, RegistryError> {
        match outcome {
            Outcome::Stat(size) => Ok(size),
            other => Err(unavailable("stat", other)),
        }
    }

    /// To a versioned read: the object and its version, `None` when absent.
    pub(crate) fn versioned(outcome: Outcome) -> Result<Option<Versioned>, RegistryError> {
        match outcome {
            Outcome::Versioned(found) => Ok(found),
            other => Err(unavailable("read", other)),
        }
    }

    /// To a conditional write: whether its condition held (and it wrote).
    pub(crate) fn written(outcome: Outcome) -> Result<bool, RegistryError> {
        match outcome {
            Outcome::Ok => Ok(true),
            Outcome::ConditionFailed => Ok(false),
            other => Err(unavailable("write", other)),
        }
    }
}

/// Lock and cache key names, one place for all of them.
pub(crate) mod keys {
    use crate::digest::Digest;
    use crate::names::{RepoName, Tag};
    use crate::route::UploadId;

    pub(crate) fn blob_lock(name: &RepoName, d: &Digest) -> String {
        format!("blob/{name}/{d}")
    }

    pub(crate) fn manifest_lock(name: &RepoName, d: &Digest) -> String {
        format!("manifest/{name}/{d}")
    }

    pub(crate) fn tag_lock(name: &RepoName, tag: &Tag) -> String {
        format!("tag/{name}/{tag}")
    }

    /// The collector's lease: one collector at a time per store.
    pub(crate) const GC_LOCK: &str = "gc";

    pub(crate) fn upload_lock(id: &UploadId) -> String {
        format!("upload/{}", id.as_str())
    }

    /// Cached: the digest a tag points at.
    pub(crate) fn tag_cache(name: &RepoName, tag: &Tag) -> String {
        format!("tag/{name}/{tag}")
    }

    /// Cached: a manifest's bytes, present only while it belongs to the repository.
    pub(crate) fn manifest_cache(name: &RepoName, d: &Digest) -> String {
        format!("manifest/{name}/{d}")
    }

    /// Cached: a blob's size, present only while it belongs to the repository.
    pub(crate) fn blob_cache(name: &RepoName, d: &Digest) -> String {
        format!("blob/{name}/{d}")
    }

    /// Held while one request fetches a blob from a mirror's upstream: the others wait for
    /// it instead of fetching it again (per digest, since the bytes are shared).
    pub(crate) fn mirror_fetch_lock(d: &Digest) -> String {
        format!("mirror-fetch/{d}")
    }

    /// Cached for the mirror's `tag_ttl_secs`: the digest the upstream last named for a tag.
    pub(crate) fn mirror_tag_checked(name: &RepoName, tag: &Tag) -> String {
        format!("mirror-tag/{name}/{tag}")
    }

    /// Cached for as long as an upstream asked (`Retry-After`): it is not asked meanwhile.
    pub(crate) fn upstream_backoff(url: &str) -> String {
        format!("upstream-backoff/{url}")
    }

    /// Cached: a small blob's bytes, shared by every repository (a digest's bytes never
    /// change).
    pub(crate) fn blob_data_cache(d: &Digest) -> String {
        format!("blob-data:{d}")
    }
}

#[cfg(test)]
mod tests {
    use super::keys;
    use crate::cache::key_kind;

    #[test]
    fn every_cache_key_has_its_kind_and_the_kind_holds_no_name() {
        let name = "team/tag/app".parse().unwrap();
        let digest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            .parse()
            .unwrap();
        let tag = "latest".parse().unwrap();
        assert_eq!(key_kind(&keys::tag_cache(&name, &tag)), "tag");
        assert_eq!(key_kind(&keys::manifest_cache(&name, &digest)), "manifest");
        assert_eq!(key_kind(&keys::blob_cache(&name, &digest)), "blob");
        assert_eq!(key_kind(&keys::blob_data_cache(&digest)), "blob-data");
        assert_eq!(key_kind("team/tag/app"), "other");
        assert_eq!(key_kind(""), "other");
    }
}
