//! Housekeeping: removes upload sessions that started before a cutoff, and aborts the S3
//! multipart uploads initiated before it (parts of writes whose process died).

use opendal::{Entry, ErrorKind};
use stowage_core::layout;
use stowage_core::step::Millis;
use stowage_core::upload::UploadRecord;

use crate::{Backend, Storage};

/// What one purge did. Failures are logged; the next purge tries again.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PurgeReport {
    pub sessions_removed: usize,
    pub multipart_uploads_aborted: usize,
    pub failures: usize,
}

impl Storage {
    /// Removes upload sessions started before `cutoff` and aborts S3 multipart uploads
    /// initiated before it, below each store's key prefix.
    pub async fn purge_stale_uploads(&self, cutoff: Millis) -> PurgeReport {
        let mut report = PurgeReport::default();
        // Upload sessions live in the blob store; multipart uploads in either.
        self.blobs.purge_stale_sessions(cutoff, &mut report).await;
        let mut purged = Vec::new();
        for backend in [&self.blobs, &self.meta] {
            let Some(uploads) = backend.multipart_uploads() else {
                continue;
            };
            let location = uploads.location();
            if purged.contains(&location) {
                continue;
            }
            match uploads.abort_stale(cutoff).await {
                Ok(aborted) => report.multipart_uploads_aborted += aborted,
                Err(e) => {
                    tracing::warn!(location, error = %e, "purging multipart uploads failed");
                    report.failures += 1;
                }
            }
            purged.push(location);
        }
        report
    }
}

impl Backend {
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
                Ok(true) => self.op.delete_with(&dir).recursive(true).await,
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
    async fn upload_sessions(&self) -> opendal::Result<Vec<String>> {
        let uploads = format!("{}/", layout::UPLOADS);
        let mut sessions = Vec::new();
        let mut pending = vec![layout::REPOSITORIES.to_owned()];
        while let Some(dir) = pending.pop() {
            for entry in self.folders(&dir).await? {
                if entry.name() == uploads {
                    let found = self.folders(entry.path()).await?;
                    sessions.extend(found.iter().map(|e| e.path().to_owned()));
                } else if !entry.name().starts_with('_') {
                    pending.push(entry.path().to_owned());
                }
            }
        }
        Ok(sessions)
    }

    /// The folders directly below `dir`.
    async fn folders(&self, dir: &str) -> opendal::Result<Vec<Entry>> {
        match self.op.list(dir).await {
            Ok(entries) => Ok(entries
                .into_iter()
                .filter(|e| e.metadata().is_dir() && e.path() != dir)
                .collect()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// A session is stale when it started before `cutoff`, or when its record is missing or
    /// unreadable: then nothing can continue it (the core answers BLOB_UPLOAD_UNKNOWN).
    async fn session_is_stale(&self, dir: &str, cutoff: Millis) -> opendal::Result<bool> {
        let record = format!("{dir}{}", layout::UPLOAD_RECORD);
        match self.op.read(&record).await {
            Ok(bytes) => Ok(
                match serde_json::from_slice::<UploadRecord>(&bytes.to_bytes()) {
                    Ok(record) => record.started_at < cutoff.0,
                    Err(_) => true,
                },
            ),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(true),
            Err(e) => Err(e),
        }
    }
}
