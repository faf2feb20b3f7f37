//! `stowage migrate`: copies the blob store and metadata store of one configuration into
//! those of another (filesystem or S3, either way), object by object in the shared layout.
//!
//! Every blob streams through a hasher and appears at the destination only if its bytes
//! hash to the digest it is stored under. Blob and manifest bytes are copied before the
//! links that name them, tags last, so a migration stopped anywhere never shows a tag whose
//! blobs are missing. A rerun skips what the destination already holds, so after an
//! interruption nothing is copied twice. Upload sessions are transient and stay behind.

mod copy;
mod keys;
mod plan;
mod progress;

use std::fmt;

use futures_util::{StreamExt, TryStreamExt, stream};
use stowage_core::digest::Digest;
use stowage_core::step::StoreRole;
use stowage_core::step::TapError;
use stowage_storage::{Store, Stores};

use crate::copy::Copied;
use crate::plan::Listing;
pub use crate::progress::Progress;

/// Objects copied at once: enough to hide per-request latency on S3, few enough that the
/// multipart buffers (part size times parts in flight, per object) stay modest.
const OBJECTS_IN_FLIGHT: usize = 4;

/// Where the layout starts in every store.
const LAYOUT_ROOT: &str = "v2/";

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("listing the source's {store} store: {source}")]
    List {
        store: &'static str,
        source: std::io::Error,
    },
    #[error("{key}: the source's bytes hash to {actual}, not to the digest they are stored under")]
    Corrupt { key: String, actual: Digest },
    #[error("{key}: changed at the source while being copied: {source}")]
    Changed { key: String, source: TapError },
    #[error("{key}: vanished from the source while being copied")]
    Vanished { key: String },
    #[error("{key}: {action}: {message}")]
    Storage {
        key: String,
        action: &'static str,
        message: String,
    },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

/// What a migration did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub copied: usize,
    pub copied_bytes: u64,
    /// Objects the destination held already.
    pub skipped: usize,
    /// Copied blobs whose bytes were checked against their digest.
    pub verified: usize,
}

impl Summary {
    fn add(&mut self, copied: Copied) {
        match copied {
            Copied::New { bytes, verified } => {
                self.copied += 1;
                self.copied_bytes += bytes;
                self.verified += usize::from(verified);
            }
            Copied::Present => self.skipped += 1,
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "copied {} objects ({} bytes), skipped {} already present, verified {} blob digests",
            self.copied, self.copied_bytes, self.skipped, self.verified
        )
    }
}

/// Copies `from` into `to`.
pub async fn migrate(
    from: &Stores,
    to: &Stores,
    progress: &Progress,
) -> Result<Summary, MigrateError> {
    let listing = Listing {
        blobs: list(from.store(StoreRole::Blobs), "blob").await?,
        meta: match from.separate_meta() {
            Some(meta) => Some(list(meta, "metadata").await?),
            None => None,
        },
    };
    let plan = plan::plan(listing, to.separate_meta().is_none());
    progress.start(plan.total_bytes());
    let mut summary = Summary::default();
    for (name, phase) in plan.phases() {
        progress.phase(name);
        let copies = phase
            .jobs
            .iter()
            .map(|job| copy::copy(job, from.store(job.from), to.store(job.to), progress));
        let mut copies = stream::iter(copies).buffer_unordered(OBJECTS_IN_FLIGHT);
        while let Some(copied) = copies.try_next().await? {
            summary.add(copied);
        }
    }
    progress.finish();
    Ok(summary)
}

async fn list(
    backend: &Store,
    store: &'static str,
) -> Result<Vec<stowage_storage::StoredObject>, MigrateError> {
    backend
        .list_objects(LAYOUT_ROOT)
        .await
        .map_err(|source| MigrateError::List { store, source })
}

/// [`migrate`] on a runtime of its own, with a progress bar on stderr. The stores need a
/// tokio context (the filesystem's blocking calls, S3's HTTP), whichever server binary runs
/// the command.
pub fn run(from: &Stores, to: &Stores) -> Result<Summary, MigrateError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(MigrateError::Runtime)?;
    runtime.block_on(migrate(from, to, &Progress::default()))
}
