//! The fence between the collector and writers that make a digest referenced (a manifest
//! push, an upload's completion, a mount, a mirror's fetch), on any replica.
//!
//! A grace period alone is not enough: a push may link, or name in a manifest, a blob that
//! has been unreferenced for longer than the grace period, at the moment the collector
//! deletes it. The fence is a handshake over the metadata store, which is linearizable
//! (S3 since 2020, a local filesystem):
//!
//! The collector, holding its lease, (1) writes [`GcState`] with a new epoch and
//! `deleting = true`, (2) writes a doomed marker for every digest it means to delete
//! (bytes, links to it, revisions of it), (3) marks again from scratch and deletes only
//! what the second mark also finds unreferenced, (4) removes the markers and writes the
//! state back with `deleting = false`.
//!
//! A writer (1) knows a state the store held before it relies on anything existing
//! ([`watch`]), (2) writes everything its answer promises (links, revision, tags), (3) reads
//! the state again ([`confirm`]). If the state is unchanged and not deleting, no deletion
//! happened between the two (deletions happen only while `deleting`, inside an epoch that
//! began after the first or ended before it), so what it checked at the start still exists, and
//! every later deletion follows a second mark that reads the writer's writes and keeps what
//! they name. Otherwise it checks each digest it names: a doomed marker means the collector
//! may delete it, so the writer answers 503 with `Retry-After` instead of acknowledging;
//! with no marker, the digest's bytes must still exist. That check is sound because a
//! marker is removed only after the deletion it announces: a writer that finds no marker
//! either came before it was written (then its writes precede the second mark, which keeps
//! the digest) or after the deletion (then the bytes, or the link, are seen to be gone:
//! both are checked, as the collector may delete a repository's link and keep the bytes).
//! The bytes and links must be looked at after the markers, not alongside them: the
//! cluster simulation found the interleaving where a look at the bytes that lands first
//! misses a whole doom-delete-clear.
//!
//! The state of step (1) need not be read for the writer: any read this process finished
//! before the writer's checks began is a state the store held before them
//! ([`LastRead`]). An older state only widens the window between (1) and (3): a run that
//! ended inside it sends the writer down the slow path, never past a deletion unseen. So a
//! writer spends no round trip on (1) unless its process has not read the state yet.
//!
//! So an acknowledged write never names a digest the collector deletes. A collector that
//! dies while deleting leaves `deleting = true` and its markers: writers then take the
//! slow path, and answer 503 for the doomed digests only, until the next run clears them.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::Ctx;
use crate::digest::Digest;
use crate::error::{ErrorCode, RegistryError};
use crate::layout;
use crate::step::{StoreRole, WriteCondition};

/// What the collector publishes at [`layout::GC_STATE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GcState {
    /// Bumped by every run that deletes.
    pub epoch: u64,
    /// Whether a run may be deleting now.
    pub deleting: bool,
}

/// The collector's state as a writer knew it before relying on what exists.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Watch(GcState);

/// The collector's state as this process last read it, for a writer's step (1). One per
/// process (a [`crate::Registry`] and its clones): another replica's reads are not known
/// to have finished before this one's checks.
#[derive(Debug, Default)]
pub(crate) struct LastRead(Mutex<Option<GcState>>);

impl LastRead {
    fn get(&self) -> Option<GcState> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, state: GcState) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(state);
    }
}

pub(crate) async fn read_state(ctx: &Ctx) -> Result<GcState, RegistryError> {
    let state = match ctx
        .read(StoreRole::Meta, layout::GC_STATE.to_owned())
        .await?
    {
        None => GcState::default(),
        // Unreadable: assume a run is deleting, which only costs the slow path.
        Some(bytes) => serde_json::from_slice(&bytes).unwrap_or(GcState {
            epoch: u64::MAX,
            deleting: true,
        }),
    };
    ctx.gc_state_read.set(state);
    Ok(state)
}

pub(crate) async fn write_state(ctx: &Ctx, state: GcState) -> Result<(), RegistryError> {
    let json = serde_json::to_vec(&state)
        .map_err(|e| RegistryError::new(ErrorCode::Unavailable, e.to_string()))?;
    ctx.write(
        StoreRole::Meta,
        layout::GC_STATE.to_owned(),
        json,
        WriteCondition::Overwrite,
    )
    .await
    .map(|_| ())
}

/// Step (1) of a writer: before it checks that what it will reference exists. The state
/// this process last read, or read now if it has read none.
pub(crate) async fn watch(ctx: &Ctx) -> Result<Watch, RegistryError> {
    match ctx.gc_state_read.get() {
        Some(state) => Ok(Watch(state)),
        None => read_state(ctx).await.map(Watch),
    }
}

/// Refuses a write that names `digest`, which the collector may delete or has deleted.
pub(crate) fn collecting(digest: &Digest) -> RegistryError {
    RegistryError::new(
        ErrorCode::Unavailable,
        format!("{digest} is being garbage collected; retry (its blob may need pushing again)"),
    )
}

/// A digest a write references: its bytes in `store`, reached through `link` in the
/// metadata store (a layer link or a revision link of the repository written to).
pub(crate) struct Named<'a> {
    pub(crate) store: StoreRole,
    pub(crate) digest: &'a Digest,
    pub(crate) link: String,
}

/// Step (3) of a writer, after its writes and before it acknowledges: fails with 503 when
/// one of `named` may be deleted by the collector, or was (its bytes or its link are gone).
pub(crate) async fn confirm(
    ctx: &Ctx,
    watched: Watch,
    named: &[Named<'_>],
) -> Result<(), RegistryError> {
    let now = read_state(ctx).await?;
    if now == watched.0 && !now.deleting {
        return Ok(());
    }
    // Doomed markers first, bytes and links after: a run could doom, delete and clear its
    // markers between two checks, and then only the later look at the bytes sees it.
    let doomed = named
        .iter()
        .map(|n| (StoreRole::Meta, layout::gc_doomed(n.digest)))
        .collect();
    let doomed = ctx.exists_each(doomed).await?;
    if let Some((at_risk, _)) = named.iter().zip(doomed).find(|(_, doomed)| *doomed) {
        return Err(collecting(at_risk.digest));
    }
    let kept = named
        .iter()
        .flat_map(|n| {
            [
                (n.store, layout::blob_data(n.digest)),
                (StoreRole::Meta, n.link.clone()),
            ]
        })
        .collect();
    let kept = ctx.exists_each(kept).await?;
    match named
        .iter()
        .zip(kept.chunks(2))
        .find(|(_, both)| both.contains(&false))
    {
        Some((gone, _)) => Err(collecting(gone.digest)),
        None => Ok(()),
    }
}
