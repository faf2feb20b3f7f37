//! The purge of stale upload sessions: those started before a cutoff
//! (`upload_max_age_secs` ago), and those whose record is missing or unreadable, which
//! nothing can continue (a request naming them is answered `BLOB_UPLOAD_UNKNOWN`).
//!
//! Sessions live in the blob store (below each repository's `_uploads/`), so the walk is
//! that store's. Each session is judged and removed under the upload's lock, the lock every
//! request continuing it takes: a request either finishes first or finds the session gone,
//! and a session whose lock is taken is in use, so it is kept for the next round.

use serde::{Deserialize, Serialize};

use crate::Registry;
use crate::error::RegistryError;
use crate::handlers::{Ctx, keys};
use crate::layout;
use crate::op::Operation;
use crate::response::{error_response, report_response};
use crate::rng::Entropy;
use crate::route::UploadId;
use crate::step::StoreRole;
use crate::time::Millis;
use crate::upload::UploadRecord;

/// What a purge did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeReport {
    pub sessions_removed: u64,
    /// Stale, but their lock was taken: kept for the next round.
    pub sessions_in_use: u64,
}

impl Registry {
    /// A purge of the upload sessions started before `cutoff`, run by a driver like a
    /// request: it answers `200` with its [`PurgeReport`] as JSON, or the error that stopped
    /// it.
    pub fn purge_uploads(&self, cutoff: Millis, entropy: Entropy) -> Operation {
        let (channel, ctx) = self.own_operation(entropy);
        Operation::new(
            channel,
            Box::pin(async move {
                match purge(&ctx, cutoff).await {
                    Ok(report) => report_response(&report),
                    Err(e) => error_response(&e),
                }
            }),
        )
    }
}

async fn purge(ctx: &Ctx, cutoff: Millis) -> Result<PurgeReport, RegistryError> {
    let mut report = PurgeReport::default();
    for (session, id) in sessions(ctx).await? {
        let Some(id) = UploadId::parse(&id) else {
            // No request can name it, so none can hold its lock.
            ctx.delete_all(StoreRole::Blobs, session).await?;
            report.sessions_removed += 1;
            continue;
        };
        let removed = ctx
            .try_locked(keys::upload_lock(&id), async |_| {
                if !is_stale(ctx, &session, cutoff).await? {
                    return Ok(false);
                }
                ctx.delete_all(StoreRole::Blobs, session.clone()).await?;
                Ok(true)
            })
            .await?;
        match removed {
            Some(true) => report.sessions_removed += 1,
            Some(false) => {}
            None => report.sessions_in_use += 1,
        }
    }
    Ok(report)
}

/// Every upload session folder (`v2/repositories/<name>/_uploads/<id>/`) with its id: the
/// walk the catalog does, descending into every folder that is not a repository's own.
async fn sessions(ctx: &Ctx) -> Result<Vec<(String, String)>, RegistryError> {
    let mut sessions = Vec::new();
    let mut pending = vec![layout::REPOSITORIES.to_owned()];
    while let Some(dir) = pending.pop() {
        for folder in layout::folders(ctx.list(StoreRole::Blobs, dir.clone()).await?) {
            if folder == layout::UPLOADS {
                let uploads = format!("{dir}{folder}/");
                let found = ctx.list(StoreRole::Blobs, uploads.clone()).await?;
                sessions.extend(layout::folders(found).map(|id| (format!("{uploads}{id}/"), id)));
            } else if !folder.starts_with('_') {
                pending.push(format!("{dir}{folder}/"));
            }
        }
    }
    Ok(sessions)
}

/// Whether the session in `dir` started before `cutoff`, or has no readable record.
async fn is_stale(ctx: &Ctx, dir: &str, cutoff: Millis) -> Result<bool, RegistryError> {
    let record = ctx
        .read(StoreRole::Blobs, format!("{dir}{}", layout::UPLOAD_RECORD))
        .await?;
    Ok(match record {
        Some(bytes) => serde_json::from_slice::<UploadRecord>(&bytes)
            .map_or(true, |record| record.started_at < cutoff.0),
        None => true,
    })
}
