//! The blob store and the metadata store: each is one [`Backend`], the filesystem or S3; the
//! [`Storage`] pair performs the core's storage requests against them.

mod backend;
mod body;
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
mod settings;

use bytes::Bytes;
use futures_util::Stream;
use stowage_core::range::Span;
use stowage_core::step::{Outcome, StorageRequest, Store};

pub use backend::{Backend, StoredObject};
pub use body::BodySource;
pub use fs::FsStore;
pub use hashing::{HashThread, set_hash_thread};
pub use purge::{Leftovers, PurgeReport};
pub use s3_multipart::MultipartError;
pub use s3_store::S3Store;
pub use settings::{
    ConditionalWrites, FsSettings, InlineCalls, RedisLockSettings, S3Settings, StoreSettings,
};

/// Describes the metrics this crate records, once a recorder is installed.
pub fn describe_metrics() {
    metrics::describe_counter!(
        s3::RETRIES,
        "S3 requests retried, by reason: timeout (an attempt ran past operation_attempt_timeout_secs) or error (5xx, throttling, connection errors)"
    );
}

/// The two logical stores. With one backend configured they are the same [`Backend`].
#[derive(Clone, Debug)]
pub struct Storage {
    blobs: Backend,
    meta: Backend,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot open store at {location}: {source}")]
    Open {
        location: String,
        source: opendal::Error,
    },
    #[error("cannot set up multipart upload housekeeping for {location}: {source}")]
    Multipart {
        location: String,
        source: MultipartError,
    },
}

impl Storage {
    pub fn new(blobs: Backend, meta: Backend) -> Self {
        Storage { blobs, meta }
    }

    /// Opens the stores from settings; the metadata store defaults to the blob store's.
    pub fn open(blobs: &StoreSettings, meta: Option<&StoreSettings>) -> Result<Self, StorageError> {
        let blob_backend = Backend::open(blobs)?;
        let meta_backend = match meta {
            Some(settings) => Backend::open(settings)?,
            None => blob_backend.clone(),
        };
        Ok(Storage::new(blob_backend, meta_backend))
    }

    /// Finds which write conditions each S3 store enforces (`conditional_writes = "auto"`);
    /// to be awaited once at startup, before serving.
    pub async fn probe_conditions(&self) {
        self.blobs.probe_conditions().await;
        if !self.meta.shares_conditions(&self.blobs) {
            self.meta.probe_conditions().await;
        }
    }

    pub fn backend(&self, store: Store) -> &Backend {
        match store {
            Store::Blobs => &self.blobs,
            Store::Meta => &self.meta,
        }
    }

    /// Performs one storage request; `body` is the request body, for the requests that
    /// stream it.
    pub async fn perform(&self, request: StorageRequest, body: &mut impl BodySource) -> Outcome {
        match request {
            StorageRequest::Stat { store, key } => self.backend(store).stat(&key).await,
            StorageRequest::Inspect { store, key } => self.backend(store).inspect(&key).await,
            StorageRequest::Read { store, key } => self.backend(store).read(&key).await,
            StorageRequest::ReadVersioned { store, key } => {
                self.backend(store).read_versioned(&key).await
            }
            StorageRequest::Write {
                store,
                key,
                data,
                condition,
            } => self.backend(store).write(&key, data, &condition).await,
            StorageRequest::WriteBody { store, key, tap } => {
                self.backend(store).write_body(&key, tap, body).await
            }
            StorageRequest::WriteBodyAt {
                store,
                key,
                offset,
                tap,
            } => {
                self.backend(store)
                    .write_body_at(&key, offset, tap, body)
                    .await
            }
            StorageRequest::HashStored { store, pieces, tap } => {
                self.backend(store).hash_stored(&pieces, tap).await
            }
            StorageRequest::Concat { store, pieces, to } => {
                self.backend(store).concat(&pieces, &to).await
            }
            StorageRequest::Delete { store, key } => self.backend(store).delete(&key).await,
            StorageRequest::DeleteAll { store, prefix } => {
                self.backend(store).delete_all(&prefix).await
            }
            StorageRequest::List { store, prefix } => self.backend(store).list(&prefix).await,
        }
    }

    /// Streams a span of a stored object, for response bodies.
    pub async fn read_span(
        &self,
        store: Store,
        key: &str,
        span: Span,
    ) -> std::io::Result<impl Stream<Item = std::io::Result<Bytes>> + Send + use<>> {
        self.backend(store).read_span(key, span).await
    }
}
