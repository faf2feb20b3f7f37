//! What storage leaves below the keys the core sees: the S3 multipart uploads of writes
//! whose process died (aborted by the periodic purge), and for the garbage collector, the
//! leftovers of writes that never committed.

use stowage_core::time::Millis;

use crate::{Store, Stores};

/// What writes that never committed left behind, older than a collection's grace period:
/// found (a dry run) or removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Leftovers {
    pub temp_files: usize,
    pub temp_bytes: u64,
    pub multipart_uploads: usize,
    pub failures: usize,
}

impl Stores {
    /// Aborts the multipart uploads initiated before `cutoff` below each S3 store's prefix:
    /// how many, and how many stores failed (logged; the next purge tries again).
    pub async fn abort_stale_multipart_uploads(&self, cutoff: Millis) -> (usize, usize) {
        self.stale_multipart_uploads(cutoff, true).await
    }

    /// The leftovers of writes begun before `cutoff` that never committed: temporary files
    /// on a filesystem, multipart uploads on S3. With `remove`, they are removed (aborted).
    pub async fn leftovers(&self, cutoff: Millis, remove: bool) -> Leftovers {
        let mut found = Leftovers::default();
        let mut done = Vec::new();
        for backend in self.each() {
            // The two stores may be one folder.
            let Store::Fs(fs) = backend else {
                continue;
            };
            if done.contains(&fs.root()) {
                continue;
            }
            done.push(fs.root());
            match fs.temp_leftovers(cutoff, remove).await {
                Ok((files, bytes)) => {
                    found.temp_files += files;
                    found.temp_bytes += bytes;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reclaiming temporary files failed");
                    found.failures += 1;
                }
            }
        }
        let (uploads, failures) = self.stale_multipart_uploads(cutoff, remove).await;
        found.multipart_uploads = uploads;
        found.failures += failures;
        found
    }

    /// Counts (with `abort`, aborts) the multipart uploads initiated before `cutoff` below
    /// each S3 store's prefix, once per bucket and prefix; how many, and how many stores
    /// failed.
    async fn stale_multipart_uploads(&self, cutoff: Millis, abort: bool) -> (usize, usize) {
        let (mut stale, mut failures) = (0, 0);
        let mut done = Vec::new();
        for backend in self.each() {
            let Some(uploads) = backend.multipart_uploads() else {
                continue;
            };
            let location = uploads.location();
            if done.contains(&location) {
                continue;
            }
            match uploads.stale(cutoff, abort).await {
                Ok(found) => stale += found,
                Err(e) => {
                    tracing::warn!(location, error = %e, "purging multipart uploads failed");
                    failures += 1;
                }
            }
            done.push(location);
        }
        (stale, failures)
    }
}
