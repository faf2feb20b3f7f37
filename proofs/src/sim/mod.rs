//! The simulated cluster: several replicas serve the requests of several clients over one
//! in-memory world (object store with the real backend's semantics, a shared lock table and
//! a shared cache, as with Redis). A seeded scheduler interleaves the operations step by
//! step and injects faults: storage, lock, cache and upstream errors (not applied) and
//! timeouts (applied, answer lost), client disconnects mid-body, replica crashes between any
//! two steps, and clock jumps past the lock TTL. Every run mirrors a model upstream under
//! `hub/`, and clients pull through it. After the run the invariants are checked.
//!
//! A seed replays a run exactly: `SIM_SEED=<seed> cargo nextest run -p stowage-proofs
//! --release cluster_simulation`.

mod cluster;
mod history;
mod invariants;
mod workload;

use http::StatusCode;
use stowage_core::digest::Digest;

use crate::integrity::CorruptBlob;

pub use cluster::Summary;

/// The command that replays one seed.
pub fn replay_command(seed: u64) -> String {
    format!("SIM_SEED={seed} cargo nextest run -p stowage-proofs --release cluster_simulation")
}

/// Runs the simulation for `seed` and checks its invariants.
pub fn run(seed: u64) -> Result<Summary, Violation> {
    checked(cluster::Cluster::new(seed, false))
}

/// As [`run`], with a garbage collector among the replicas in half the runs.
pub fn run_with_collector(seed: u64) -> Result<Summary, Violation> {
    checked(cluster::Cluster::new(seed, true))
}

fn checked(cluster: cluster::Cluster) -> Result<Summary, Violation> {
    let mut cluster = cluster.run()?;
    if let Err(v) = invariants::check(&mut cluster) {
        // A replay with SIM_TRACE set shows what led there.
        if std::env::var_os("SIM_TRACE").is_some() {
            cluster.trace();
        }
        return Err(v);
    }
    Ok(cluster.summary)
}

/// A broken invariant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("clients did not finish within {ticks} ticks")]
    Stuck { ticks: u64 },
    #[error("a push with the wrong digest {digest} was acknowledged")]
    WrongDigestAccepted { digest: String },
    #[error("{path}: unexpected {status} ({detail})")]
    BadReply {
        path: String,
        status: StatusCode,
        detail: String,
    },
    #[error("acknowledged {what} is lost: {detail}")]
    AcknowledgedWriteLost { what: String, detail: String },
    #[error("acknowledged delete of {what} was undone: {detail}")]
    DeleteUndone { what: String, detail: String },
    #[error("tag {repo}:{tag} answers differ between replicas: {answers:?}")]
    TagDiverges {
        repo: String,
        tag: String,
        answers: Vec<String>,
    },
    #[error("tag {repo}:{tag} resolves to {got}, allowed: {allowed:?}")]
    TagUnexpected {
        repo: String,
        tag: String,
        got: String,
        allowed: Vec<String>,
    },
    #[error("tag {repo}:{tag} points at {digest}, which is not in the repository")]
    DanglingTag {
        repo: String,
        tag: String,
        digest: Digest,
    },
    #[error("{path} answers {got}, storage holds {stored}")]
    CacheDisagrees {
        path: String,
        got: String,
        stored: String,
    },
    #[error("manifest {manifest} in {repo} names {blob}, which is missing")]
    MissingReference {
        repo: String,
        manifest: Digest,
        blob: Digest,
    },
    #[error("{path} through the mirror answers {got}, the upstream holds {upstream}")]
    MirrorDiffers {
        path: String,
        got: String,
        upstream: String,
    },
    #[error("{digest} was fetched from the upstream {times} times")]
    FetchedAgain { digest: Digest, times: usize },
    #[error("corrupt blob: {0}")]
    CorruptBlob(CorruptBlob),
    #[error("lock {key} still held by {token} ({why})")]
    LockLeftHeld {
        key: String,
        token: String,
        why: String,
    },
}
