//! Housekeeping: removes upload sessions that started before a cutoff, and aborts the S3
//! multipart uploads initiated before it (parts of writes whose process died); and for the
//! garbage collector, the leftovers of writes that never committed.

use stowage_core::layout;
use stowage_core::step::Outcome;
use stowage_core::time::Millis;
use stowage_core::upload::UploadRecord;

use crate::{Store, Stores};

/// What one purge did. Failures are logged; the next purge tries again.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PurgeReport {
    pub sessions_removed: usize,
    pub multipart_uploads_aborted: usize,
    pub failures: usize,
}

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
    /// Removes upload sessions started before `cutoff` and aborts S3 multipart uploads
    /// initiated before it, below each store's key prefix.
    pub async fn purge_stale_uploads(&self, cutoff: Millis) -> PurgeReport {
        let mut report = PurgeReport::default();
        // Upload sessions live in the blob store; multipart uploads in either.
        self.blobs.purge_stale_sessions(cutoff, &mut report).await;
        let (aborted, failures) = self.stale_multipart_uploads(cutoff, true).await;
        report.multipart_uploads_aborted = aborted;
        report.failures += failures;
        report
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

/// Why a purge step could not tell or do what it needed.
fn outcome_error(what: &str, outcome: Outcome) -> String {
    match outcome {
        Outcome::Failed(e) => e.message,
        other => format!("{what} answered {other:?}"),
    }
}

impl Store {
    async fn purge_stale_sessions(&self, cutoff: Millis, report: &mut PurgeReport) {
        let sessions = match self.upload_sessions().await {
            Ok(sessions) => sessions,
            Err(e) => {
                tracing::warn!(error = %e, "listing upload sessions failed");
                report.failures += 1;
                return;
            }
        };
        for dir in sessions {
            let removed = match self.session_is_stale(&dir, cutoff).await {
                Ok(false) => continue,
                Ok(true) => match self.delete_all(&dir).await {
                    Outcome::Ok => Ok(()),
                    other => Err(outcome_error("delete", other)),
                },
                Err(e) => Err(e),
            };
            match removed {
                Ok(()) => {
                    tracing::info!(session = dir, "removed a stale upload session");
                    report.sessions_removed += 1;
                }
                Err(e) => {
                    tracing::warn!(session = dir, error = %e, "purging an upload session failed");
                    report.failures += 1;
                }
            }
        }
    }

    /// Every upload session folder, `v2/repositories/<name>/_uploads/<id>/`: the walk the
    /// catalog does, descending into every folder that is not a repository's own (`_...`).
    async fn upload_sessions(&self) -> Result<Vec<String>, String> {
        let uploads = format!("{}/", layout::UPLOADS);
        let mut sessions = Vec::new();
        let mut pending = vec![layout::REPOSITORIES.to_owned()];
        while let Some(dir) = pending.pop() {
            for folder in self.folders(&dir).await? {
                if folder == uploads {
                    let found = self.folders(&format!("{dir}{folder}")).await?;
                    sessions.extend(found.iter().map(|s| format!("{dir}{folder}{s}")));
                } else if !folder.starts_with('_') {
                    pending.push(format!("{dir}{folder}"));
                }
            }
        }
        Ok(sessions)
    }

    /// The folders directly below `dir`, by name with a trailing `/`.
    async fn folders(&self, dir: &str) -> Result<Vec<String>, String> {
        match self.list(dir).await {
            Outcome::List(names) => Ok(names.into_iter().filter(|n| n.ends_with('/')).collect()),
            other => Err(outcome_error("list", other)),
        }
    }

    /// A session is stale when it started before `cutoff`, or when its record is missing or
    /// unreadable: then nothing can continue it (the core answers BLOB_UPLOAD_UNKNOWN).
    async fn session_is_stale(&self, dir: &str, cutoff: Millis) -> Result<bool, String> {
        let record = format!("{dir}{}", layout::UPLOAD_RECORD);
        match self.read(&record).await {
            Outcome::Read(Some(bytes)) => {
                Ok(match serde_json::from_slice::<UploadRecord>(&bytes) {
                    Ok(record) => record.started_at < cutoff.0,
                    Err(_) => true,
                })
            }
            Outcome::Read(None) => Ok(true),
            other => Err(outcome_error("read", other)),
        }
    }
}
