//! What an operation asks of its driver ([`Step`]) and what the driver answers ([`Outcome`]).
//!
//! [`StorageRequest`] is the storage contract: the one interface a backend implements, with
//! its atomicity and condition rules. Io differ only where it says so (versions,
//! writes in place, listing emptied folders). `storage-contract/` is its test suite, run on
//! every backend and on the in-memory model the simulation uses.

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use crate::digest::{Digest, Hasher};
use crate::events::Policy;
use crate::range::Span;
use crate::time::Millis;

/// The two logical stores; each may be its own backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoreRole {
    /// Layers and configs, and upload sessions.
    Blobs,
    /// Manifests, tags, links and referrers.
    Meta,
}

#[derive(Debug)]
pub enum StorageRequest {
    /// Size of an object, or `None` when absent.
    Stat {
        store: StoreRole,
        key: String,
    },
    /// An object's size and when it was last written, or `None` when absent (the collector
    /// spares what is younger than its grace period).
    Inspect {
        store: StoreRole,
        key: String,
    },
    /// A small object's whole content, or `None` when absent.
    Read {
        store: StoreRole,
        key: String,
    },
    /// As [`StorageRequest::Read`], with the object's [`Version`] where the backend has one
    /// (answered by [`Outcome::Versioned`]), for a later [`WriteCondition::IfVersion`].
    ReadVersioned {
        store: StoreRole,
        key: String,
    },
    /// Replace an object atomically with small content, if `condition` holds
    /// ([`Outcome::ConditionFailed`] otherwise, and nothing changes).
    Write {
        store: StoreRole,
        key: String,
        data: Bytes,
        condition: WriteCondition,
    },
    /// Stream the request body to `key`, passing every chunk through `tap`. The object
    /// appears only if every chunk and then [`BodyTap::finish`] were accepted; otherwise the
    /// write is aborted and nothing is visible at `key`.
    WriteBody {
        store: StoreRole,
        key: String,
        tap: BodyTap,
    },
    /// Stream the request body into `key` from byte `offset` on (creating the object if it
    /// is absent), passing every chunk through `tap`. Unlike [`StorageRequest::WriteBody`]
    /// nothing is atomic: bytes are in place as they land, and a failed write may leave some
    /// of them. Only for an upload's data file, whose writers are kept apart by claims (see
    /// [`crate::upload::Part`]), and only where the blob store can
    /// ([`crate::Limits::chunks_in_place`]).
    WriteBodyAt {
        store: StoreRole,
        key: String,
        offset: u64,
        tap: BodyTap,
    },
    /// Feed the stored bytes of `pieces`, in order, through `tap` (re-hashing an upload
    /// under an algorithm it was not hashed with on the way in). A missing piece, or a span
    /// past its object's end, fails.
    HashStored {
        store: StoreRole,
        pieces: Vec<Piece>,
        tap: BodyTap,
    },
    /// Make the concatenation of `pieces` appear atomically at `to`, unless an object is
    /// there already: then `to` is left as it was and the outcome is
    /// [`Outcome::ConditionFailed`] (a create-new write: `to` is a content address). A single
    /// whole piece may be moved there (renamed), so it may be gone afterwards; spans are
    /// copied. A missing piece, or a span past its object's end, fails, and nothing appears.
    Concat {
        store: StoreRole,
        pieces: Vec<Piece>,
        to: String,
    },
    Delete {
        store: StoreRole,
        key: String,
    },
    /// Delete everything below a folder (`prefix` ends with `/`).
    DeleteAll {
        store: StoreRole,
        prefix: String,
    },
    /// The immediate children of a folder (`prefix` ends with `/`): files by name, folders
    /// by name with a trailing `/`, each once, in no particular order (callers sort). Empty
    /// when the folder does not exist. A folder whose objects were deleted one by one may
    /// still be listed, empty (the filesystem), or not (S3); one removed by
    /// [`StorageRequest::DeleteAll`] is gone.
    List {
        store: StoreRole,
        prefix: String,
    },
}

impl StorageRequest {
    /// The request's kind, as a bounded metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            StorageRequest::Stat { .. } => "stat",
            StorageRequest::Inspect { .. } => "inspect",
            StorageRequest::Read { .. } => "read",
            StorageRequest::ReadVersioned { .. } => "read_versioned",
            StorageRequest::Write { .. } => "write",
            StorageRequest::WriteBody { .. } => "write_body",
            StorageRequest::WriteBodyAt { .. } => "write_body_at",
            StorageRequest::HashStored { .. } => "hash_stored",
            StorageRequest::Concat { .. } => "concat",
            StorageRequest::Delete { .. } => "delete",
            StorageRequest::DeleteAll { .. } => "delete_all",
            StorageRequest::List { .. } => "list",
        }
    }

    /// The store the request goes to.
    pub fn store(&self) -> StoreRole {
        match self {
            StorageRequest::Stat { store, .. }
            | StorageRequest::Inspect { store, .. }
            | StorageRequest::Read { store, .. }
            | StorageRequest::ReadVersioned { store, .. }
            | StorageRequest::Write { store, .. }
            | StorageRequest::WriteBody { store, .. }
            | StorageRequest::WriteBodyAt { store, .. }
            | StorageRequest::HashStored { store, .. }
            | StorageRequest::Concat { store, .. }
            | StorageRequest::Delete { store, .. }
            | StorageRequest::DeleteAll { store, .. }
            | StorageRequest::List { store, .. } => *store,
        }
    }

    /// The object or folder the request is about, as a trace names it: the key read, written
    /// or deleted, the folder listed or emptied, a concatenation's target, or the first of
    /// the pieces hashed.
    pub fn subject(&self) -> &str {
        match self {
            StorageRequest::Stat { key, .. }
            | StorageRequest::Inspect { key, .. }
            | StorageRequest::Read { key, .. }
            | StorageRequest::ReadVersioned { key, .. }
            | StorageRequest::Write { key, .. }
            | StorageRequest::WriteBody { key, .. }
            | StorageRequest::WriteBodyAt { key, .. }
            | StorageRequest::Delete { key, .. } => key,
            StorageRequest::DeleteAll { prefix, .. } | StorageRequest::List { prefix, .. } => {
                prefix
            }
            StorageRequest::Concat { to, .. } => to,
            StorageRequest::HashStored { pieces, .. } => {
                pieces.first().map_or("", |piece| piece.key.as_str())
            }
        }
    }

    /// Whether the request streams the request body into storage (an upload in flight).
    pub fn streams_body(&self) -> bool {
        matches!(
            self,
            StorageRequest::WriteBody { .. } | StorageRequest::WriteBodyAt { .. }
        )
    }
}

/// Stored bytes: a whole object, or a span of one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub key: String,
    /// `None`: the whole object.
    pub span: Option<Span>,
}

impl Piece {
    pub fn whole(key: String) -> Self {
        Piece { key, span: None }
    }

    pub fn span(key: String, start: u64, len: u64) -> Self {
        Piece {
            key,
            span: Some(Span { start, len }),
        }
    }
}

/// Which state of the object a [`StorageRequest::Write`] may replace. A write whose condition
/// does not hold changes nothing: that is how a commit whose lock was lost while it paused
/// is kept from overwriting a newer commit, where the backend can check (an S3 store that
/// enforces the conditions checks all three, one that does not none; the filesystem checks
/// [`WriteCondition::CreateNew`] only). Where it cannot, the lock alone guards the write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteCondition {
    /// Whatever is there, if anything.
    Overwrite,
    /// Only when nothing is at the key.
    CreateNew,
    /// Only while the object is still the version read earlier.
    IfVersion(Version),
}

impl WriteCondition {
    /// The condition for replacing what a [`StorageRequest::ReadVersioned`] found: nothing
    /// (create new), a version (if it is still that one), or an object on a backend without
    /// versions (overwrite: only the lock protects it).
    pub fn replacing(found: Option<&Versioned>) -> WriteCondition {
        match found {
            None => WriteCondition::CreateNew,
            Some(Versioned {
                version: Some(version),
                ..
            }) => WriteCondition::IfVersion(version.clone()),
            Some(_) => WriteCondition::Overwrite,
        }
    }
}

/// What [`StorageRequest::Inspect`] tells of an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectInfo {
    pub size: u64,
    /// When the object was last written, by the store's clock.
    pub modified: Millis,
}

/// An object's version as its backend names it (on S3, its ETag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version(pub String);

/// An object's content and, where the backend has versions, its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub data: Bytes,
    pub version: Option<Version>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockRequest {
    /// Take `key` for `token` unless someone else holds it (`SET NX PX`).
    Acquire {
        key: String,
        token: String,
        ttl_ms: u64,
    },
    /// Extend `key` if `token` still holds it.
    Refresh {
        key: String,
        token: String,
        ttl_ms: u64,
    },
    /// Drop `key` if `token` still holds it (compare-and-delete).
    Release { key: String, token: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheRequest {
    Get {
        key: String,
    },
    /// Store `value`; with `only_if_absent`, only when the key holds nothing (`SET NX`).
    Put {
        key: String,
        value: Bytes,
        ttl_ms: u64,
        only_if_absent: bool,
    },
    /// Forget `key`: the next reader asks storage.
    Remove {
        key: String,
    },
}

/// A request to a mirror's upstream registry (see [`crate::mirror`]). The driver speaks the
/// protocol (authentication, redirects, `Retry-After`); the core decides what to ask and
/// what to do with the answer.
#[derive(Debug)]
pub enum UpstreamRequest {
    /// A manifest of `repository` (the upstream's name for it) by tag or digest: with
    /// `body`, a GET refusing more than `limit` bytes; without, a HEAD (tag revalidation,
    /// which Docker Hub does not count as a pull).
    Manifest {
        upstream: usize,
        repository: String,
        reference: String,
        body: bool,
        limit: u64,
    },
    /// Whether the upstream's `repository` has blob `digest` (a HEAD).
    BlobExists {
        upstream: usize,
        repository: String,
        digest: Digest,
    },
    /// GET blob `digest` and stream it into `key` through `tap`, with the guarantee of
    /// [`StorageRequest::WriteBody`]: the object appears only if the tap accepted it all.
    ///
    /// With `serve`, the client is answered as soon as the upstream sends the blob: `200`
    /// with these headers (the driver sets `Content-Length` to the upstream's), the body the
    /// blob as it arrives. Its last bytes are held back until the blob is stored, so a
    /// client never receives the whole of a blob that does not hash to its name: the stream
    /// is cut instead. The operation's own answer is then not sent.
    FetchBlob {
        upstream: usize,
        repository: String,
        digest: Digest,
        store: StoreRole,
        key: String,
        tap: Box<BodyTap>,
        serve: Option<HeaderMap>,
    },
}

impl UpstreamRequest {
    /// The request's kind, as a bounded metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamRequest::Manifest { body: true, .. } => "get_manifest",
            UpstreamRequest::Manifest { body: false, .. } => "head_manifest",
            UpstreamRequest::BlobExists { .. } => "head_blob",
            UpstreamRequest::FetchBlob { .. } => "get_blob",
        }
    }
}

/// What an upstream answered.
#[derive(Debug)]
pub enum UpstreamAnswer {
    /// The manifest is there: the digest the upstream names for it (`Docker-Content-Digest`),
    /// its media type, and its bytes when they were asked for.
    Manifest {
        digest: Option<Digest>,
        media_type: Option<String>,
        body: Option<Bytes>,
    },
    /// The blob is there ([`UpstreamRequest::BlobExists`]).
    Found,
    /// The tap after a [`UpstreamRequest::FetchBlob`], why the blob was not stored if it was
    /// not, and whether the client was answered with the blob as it streamed (`serve`).
    Fetched {
        tap: Box<BodyTap>,
        error: Option<BodyError>,
        served: bool,
    },
    /// The upstream does not have it (404).
    NotFound,
    /// The upstream cannot answer now: unreachable, timed out, `5xx`, or `429` (then with
    /// how long it asked us to wait).
    Unavailable {
        reason: String,
        retry_after_ms: Option<u64>,
    },
    /// The upstream refused us (`401`/`403` after authenticating, another `4xx`).
    Refused { reason: String },
}

#[derive(Debug)]
pub enum Step {
    Storage(StorageRequest),
    /// Storage requests independent of one another (a manifest's existence checks, a
    /// collector's wave of deletions): the driver may perform them at once and in any
    /// order, and answers with [`Outcome::Batch`]. None streams the request body. An
    /// operation that needs one answer before asking another must not batch them. On S3
    /// this is what keeps an image with many layers from costing a round trip per layer.
    StorageBatch(Vec<StorageRequest>),
    Lock(LockRequest),
    Cache(CacheRequest),
    Upstream(UpstreamRequest),
    /// Read the whole request body, refusing more than `limit` bytes.
    ReadBody {
        limit: u64,
    },
    /// Wait this long (lock retry back-off).
    Sleep {
        ms: u64,
    },
    /// Tell webhooks of an event (answered by [`Outcome::Announced`]).
    Announce(Announcement),
    /// How far a long operation (a garbage collection) has come, for a progress display;
    /// answered by [`Outcome::Ok`].
    Progress(Progress),
    /// The operation is finished: answer the client with this response.
    Respond(Response),
}

/// A long operation's progress: `done` of `total` steps of its current `phase`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub phase: &'static str,
    pub done: u64,
    pub total: u64,
}

/// Why the driver could not complete a storage, lock or cache request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct IoError {
    pub message: String,
}

/// Why a request body could not be read in full.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("request body exceeds {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("request body was refused: {0}")]
    Refused(#[from] TapError),
    #[error("reading the request body failed: {0}")]
    Client(String),
    #[error("storage failed while writing the request body: {0}")]
    Storage(String),
}

#[derive(Debug)]
pub enum Outcome {
    /// The request was carried out and has nothing to report.
    Ok,
    Stat(Option<u64>),
    /// What a [`StorageRequest::Inspect`] found.
    Inspected(Option<ObjectInfo>),
    Read(Option<Bytes>),
    /// What a [`StorageRequest::ReadVersioned`] found.
    Versioned(Option<Versioned>),
    /// A conditional write's condition did not hold; nothing changed.
    ConditionFailed,
    List(Vec<String>),
    /// The tap after a [`StorageRequest::WriteBody`], [`StorageRequest::WriteBodyAt`] or
    /// [`StorageRequest::HashStored`], and why the body was not stored, if it was not.
    Body {
        tap: Box<BodyTap>,
        error: Option<BodyError>,
    },
    BodyBytes(Result<Bytes, BodyError>),
    Lock(bool),
    Cache(Option<Bytes>),
    Upstream(UpstreamAnswer),
    /// The webhooks of an [`Announcement::Deliver`] that did not take the event.
    Announced(Vec<Undelivered>),
    /// The outcomes of a [`Step::StorageBatch`], in the order its requests were asked.
    Batch(Vec<Outcome>),
    Failed(IoError),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Announcement {
    /// Deliver `body` (a CloudEvent) to each of `webhooks` now, retrying as each webhook's
    /// settings say, and answer with those that did not take it.
    Deliver {
        body: Bytes,
        webhooks: Vec<String>,
        policy: Policy,
    },
    /// Events were just queued in the metadata store (below [`crate::layout::EVENT_QUEUE`]):
    /// deliver them in the background.
    Queued,
}

/// A webhook that did not take an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undelivered {
    pub webhook: String,
    /// The receiver answered with a client error (4xx): it refused the event, rather
    /// than failing to take it.
    pub refused: bool,
    pub reason: String,
}

/// Counts and hashes body bytes on their way to storage, and refuses them when they break
/// the upload's rules (length from `Content-Range`/`Content-Length`, expected digest).
#[derive(Debug, Clone)]
pub struct BodyTap {
    hasher: Hasher,
    received: u64,
    exact_len: Option<u64>,
    expect: Option<Digest>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TapError {
    #[error("body is longer than the {expected} bytes announced")]
    TooLong { expected: u64 },
    #[error("body has {received} bytes, {expected} were announced")]
    TooShort { expected: u64, received: u64 },
    #[error("content digest {actual} does not match {expected}")]
    DigestMismatch { expected: Digest, actual: Digest },
}

impl BodyTap {
    /// A tap continuing `hasher`, expecting exactly `exact_len` bytes if given and, if
    /// `expect` is given, that the hasher ends at that digest.
    pub fn new(hasher: Hasher, exact_len: Option<u64>, expect: Option<Digest>) -> Self {
        BodyTap {
            hasher,
            received: 0,
            exact_len,
            expect,
        }
    }

    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), TapError> {
        let received = self.received + chunk.len() as u64;
        if let Some(expected) = self.exact_len
            && received > expected
        {
            return Err(TapError::TooLong { expected });
        }
        self.received = received;
        self.hasher.update(chunk);
        Ok(())
    }

    pub fn finish(&self) -> Result<(), TapError> {
        if let Some(expected) = self.exact_len
            && self.received != expected
        {
            return Err(TapError::TooShort {
                expected,
                received: self.received,
            });
        }
        if let Some(expected) = &self.expect {
            let actual = self.hasher.finish();
            if &actual != expected {
                return Err(TapError::DigestMismatch {
                    expected: expected.clone(),
                    actual,
                });
            }
        }
        Ok(())
    }

    pub fn received(&self) -> u64 {
        self.received
    }

    pub fn hasher(&self) -> &Hasher {
        &self.hasher
    }
}

/// The response an operation ends with.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Body,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    Empty,
    Bytes(Bytes),
    /// A range of a stored object, streamed by the driver.
    Stored {
        store: StoreRole,
        key: String,
        span: Span,
        /// The cache entry that vouched for the object. A driver that finds the object
        /// gone removes it, so the next request asks storage (and a mirror fetches the blob
        /// again), and answers [`crate::stored_object_gone`] instead.
        cached_as: String,
    },
}
