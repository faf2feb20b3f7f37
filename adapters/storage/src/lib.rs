//! The blob store and the metadata store: each is one [`Store`], the filesystem or S3; the
//! [`Stores`] pair performs the core's storage requests against them.

mod body;
mod causes;
mod committed;
mod fs;
mod fs_calls;
mod fs_kind;
mod fs_reader;
mod fs_writer;
mod hashing;
mod object_writer;
mod purge;
mod s3;
mod s3_conditions;
mod s3_multipart;
mod s3_store;
mod s3_streamed_writer;
mod settings;
mod shared;
mod store;

use bytes::Bytes;
use futures_util::Stream;
use stowage_core::range::Span;
use stowage_core::step::{Outcome, StorageRequest, StoreRole};

pub use body::BodySource;
pub use fs::FsStore;
pub use hashing::{HashThread, set_hash_thread};
pub use purge::Leftovers;
pub use s3_multipart::MultipartError;
pub use s3_store::S3Store;
pub use settings::{ConditionalWrites, FsSettings, InlineCalls, S3Settings, StoreSettings};
pub use shared::StoredObject;
pub use store::Store;

/// Describes the metrics this crate records, once a recorder is installed.
pub fn describe_metrics() {
    metrics::describe_counter!(
        s3::RETRIES,
        "S3 requests retried, by reason: timeout (an attempt ran past operation_attempt_timeout_secs) or error (5xx, throttling, connection errors)"
    );
}

/// The blob store and the metadata store: one [`Store`] for both unless a metadata store of
/// its own is configured.
#[derive(Clone, Debug)]
pub struct Stores {
    blobs: Store,
    /// `None`: the blob store holds the metadata too.
    meta: Option<Store>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreOpenError {
    #[error("cannot open store at {location}: {source}")]
    Open {
        location: String,
        source: opendal::Error,
    },
    #[error(
        "no S3 access key for {location}: set both access_key_id and secret_key in its table, or neither and AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment"
    )]
    NoAccessKey { location: String },
    #[error("cannot set up multipart upload housekeeping for {location}: {source}")]
    Multipart {
        location: String,
        source: MultipartError,
    },
    #[error(
        "cannot write the filesystem store at {root}: {source} (the server's user must be able to create files there)"
    )]
    FsNotWritable {
        root: String,
        source: std::io::Error,
    },
    #[error(
        "cannot write the S3 store at {location}: {} (the bucket must exist and the credentials must be allowed to put objects in it)",
        causes::WithCauses(.source)
    )]
    S3NotWritable {
        location: String,
        source: opendal::Error,
    },
}

impl Stores {
    pub fn new(blobs: Store, meta: Option<Store>) -> Self {
        Stores { blobs, meta }
    }

    /// Opens the stores from settings; without metadata store settings, the blob store
    /// holds the metadata too.
    pub fn open(
        blobs: &StoreSettings,
        meta: Option<&StoreSettings>,
    ) -> Result<Self, StoreOpenError> {
        Ok(Stores::new(
            Store::open(blobs)?,
            meta.map(Store::open).transpose()?,
        ))
    }

    /// Checks each store once at startup, before serving: each must take a new file or
    /// object, and each S3 store's enforced write conditions are probed
    /// (`conditional_writes = "auto"`).
    pub async fn prepare(&self) -> Result<(), StoreOpenError> {
        self.blobs.prepare().await?;
        match &self.meta {
            Some(meta) if !meta.shares_conditions(&self.blobs) => meta.prepare().await,
            _ => Ok(()),
        }
    }

    pub fn store(&self, role: StoreRole) -> &Store {
        match (role, &self.meta) {
            (StoreRole::Meta, Some(meta)) => meta,
            _ => &self.blobs,
        }
    }

    /// The metadata store, when it is not the blob store.
    pub fn separate_meta(&self) -> Option<&Store> {
        self.meta.as_ref()
    }

    /// Each distinct store: the blob store, then a separate metadata store.
    pub(crate) fn each(&self) -> impl Iterator<Item = &Store> {
        std::iter::once(&self.blobs).chain(&self.meta)
    }

    /// Performs one storage request; `body` is the request body, for the requests that
    /// stream it.
    pub async fn perform(&self, request: StorageRequest, body: &mut impl BodySource) -> Outcome {
        match request {
            StorageRequest::Stat { store, key } => self.store(store).stat(&key).await,
            StorageRequest::Inspect { store, key } => self.store(store).inspect(&key).await,
            StorageRequest::Read { store, key } => self.store(store).read(&key).await,
            StorageRequest::ReadVersioned { store, key } => {
                self.store(store).read_versioned(&key).await
            }
            StorageRequest::Write {
                store,
                key,
                data,
                condition,
            } => self.store(store).write(&key, data, &condition).await,
            StorageRequest::WriteBody { store, key, tap } => {
                self.store(store).write_body(&key, tap, body).await
            }
            StorageRequest::WriteBodyAt {
                store,
                key,
                offset,
                tap,
            } => {
                self.store(store)
                    .write_body_at(&key, offset, tap, body)
                    .await
            }
            StorageRequest::HashStored { store, pieces, tap } => {
                self.store(store).hash_stored(&pieces, tap).await
            }
            StorageRequest::Concat { store, pieces, to } => {
                self.store(store).concat(&pieces, &to).await
            }
            StorageRequest::Delete { store, key } => self.store(store).delete(&key).await,
            StorageRequest::DeleteAll { store, prefix } => {
                self.store(store).delete_all(&prefix).await
            }
            StorageRequest::List { store, prefix } => self.store(store).list(&prefix).await,
        }
    }

    /// Streams a span of a stored object, for response bodies.
    pub async fn read_span(
        &self,
        store: StoreRole,
        key: &str,
        span: Span,
    ) -> std::io::Result<impl Stream<Item = std::io::Result<Bytes>> + Send + use<>> {
        self.store(store).read_span(key, span).await
    }
}
