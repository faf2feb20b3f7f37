//! Garbage collection from the command line (`stowage gc`) and inside a server (`[gc]
//! interval_secs`). The core decides and keeps one collector at a time per store (its
//! lease is a lock, shared through Redis by replicas); this drives it and reports.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ring::rand::{SecureRandom, SystemRandom};
use stowage_core::gc::{GcReport, GcSettings};
use stowage_core::step::Body;
use stowage_core::time::Millis;
use stowage_core::{Entropy, Registry, ReportError, read_report};
use stowage_driver::Io;
use stowage_storage::Leftovers;

use crate::gc_progress::GcProgress;
use crate::tokio_runtime::{TokioSleep, TokioSpawn};
use crate::{Config, StartError};

/// What the collector is told by `[gc]` and the command line.
fn settings(config: &Config, dry_run: bool, delete_untagged: bool) -> GcSettings {
    GcSettings {
        grace_ms: config.gc.grace_period_secs.saturating_mul(1000),
        delete_untagged,
        dry_run,
        separate_meta_store: config.metadata_store_settings().is_some(),
    }
}

/// Lock tokens of two operations of the registry's own (collectors, purges) must differ:
/// from the operating system's random source.
pub(crate) fn entropy() -> Result<Entropy, ReportError> {
    let mut bytes = [0u8; 24];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| ReportError::Report("no randomness from the operating system".to_owned()))?;
    let (id, seed) = bytes.split_at(16);
    let mut upload_id = [0u8; 16];
    upload_id.copy_from_slice(id);
    let mut seed_bytes = [0u8; 8];
    seed_bytes.copy_from_slice(seed);
    Ok(Entropy {
        upload_id: u128::from_le_bytes(upload_id),
        seed: u64::from_le_bytes(seed_bytes),
    })
}

/// What one collection did: the core's report, and the leftovers of writes that never
/// committed (temporary files, multipart uploads) older than the grace period.
struct Collected {
    report: GcReport,
    leftovers: Leftovers,
}

/// One collection, driven against `io`, then the leftovers of crashed writes (a
/// storage matter below the keys the core sees, so reclaimed here).
async fn collect(
    registry: &Registry,
    io: &Io,
    settings: GcSettings,
) -> Result<Collected, ReportError> {
    let op = registry.collect(settings.clone(), entropy()?);
    let report: GcReport = run_to_report(op, io).await?;
    let cutoff = Millis(stowage_driver::now().0.saturating_sub(settings.grace_ms));
    let leftovers = io.stores.leftovers(cutoff, !settings.dry_run).await;
    Ok(Collected { report, leftovers })
}

/// Drives an operation of the registry's own to its report.
pub(crate) async fn run_to_report<T: serde::de::DeserializeOwned>(
    op: stowage_core::op::Operation,
    io: &Io,
) -> Result<T, ReportError> {
    let response = stowage_driver::drive(op, io, &mut (), None, None).await;
    let body = match &response.body {
        Body::Bytes(bytes) => bytes.as_ref(),
        _ => &[],
    };
    read_report(response.status, body)
}

fn log(Collected { report, leftovers }: &Collected) {
    tracing::info!(
        dry_run = report.dry_run,
        repositories = report.repositories,
        manifests_kept = report.manifests_kept,
        blobs_deleted = report.blobs_deleted,
        bytes_deleted = report.bytes_deleted,
        layer_links_deleted = report.layer_links_deleted,
        manifests_deleted = report.manifests_deleted,
        spared = report.spared,
        unreadable_manifests = report.unreadable_manifests,
        elapsed_ms = report.elapsed_ms,
        temp_files = leftovers.temp_files,
        temp_bytes = leftovers.temp_bytes,
        multipart_uploads = leftovers.multipart_uploads,
        leftover_failures = leftovers.failures,
        tags_untagged = report.tags_untagged.len(),
        "garbage collection finished"
    );
}

/// What `stowage gc` prints.
fn summary(Collected { report, leftovers }: &Collected) -> String {
    let verb = if report.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    let untag = if report.dry_run {
        "would untag"
    } else {
        "untagged"
    };
    // One line a tag retention judged, then the counts.
    let mut text: String = report
        .tags_untagged
        .iter()
        .map(|tag| format!("{untag} {tag}\n"))
        .collect();
    text.push_str(&format!(
        "{} repositories, {} manifests kept; {untag} {} tags by retention; {verb} {} blobs \
         ({} bytes), {} layer links, {} untagged manifests; {} spared by the re-check; {:.1} s",
        report.repositories,
        report.manifests_kept,
        report.tags_untagged.len(),
        report.blobs_deleted,
        report.bytes_deleted,
        report.layer_links_deleted,
        report.manifests_deleted,
        report.spared,
        report.elapsed_ms as f64 / 1000.0,
    ));
    text.push_str(&format!(
        "; left by writes that never committed, {verb} {} temporary files ({} bytes) and {} \
         multipart uploads",
        leftovers.temp_files, leftovers.temp_bytes, leftovers.multipart_uploads
    ));
    if leftovers.failures > 0 {
        text.push_str(&format!(
            " ({} stores could not be searched: see the log)",
            leftovers.failures
        ));
    }
    if report.unreadable_manifests > 0 {
        text.push_str(&format!(
            "; nothing deleted: {} manifests could not be read",
            report.unreadable_manifests
        ));
    }
    text
}

/// `stowage gc --config FILE [--dry-run] [--delete-untagged]`, beside the servers.
pub(crate) fn collect_once(
    config: &Config,
    dry_run: bool,
    delete_untagged: bool,
) -> Result<(), StartError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?;
    let progress = Arc::new(GcProgress::new());
    let collected = runtime.block_on(async {
        let (registry, mut io) = crate::build(config, Arc::new(TokioSleep), Arc::new(TokioSpawn))?;
        io.progress = progress.clone();
        let settings = settings(config, dry_run, delete_untagged);
        collect(&registry, &io, settings)
            .await
            .map_err(StartError::Gc)
    });
    progress.finish();
    let collected = collected?;
    log(&collected);
    println!("{}", summary(&collected));
    Ok(())
}

/// Collects every `[gc] interval_secs`, forever, when set: spawn it beside the server.
/// Every replica may run it; the lease lets one collect at a time, the others find it
/// taken and wait for the next interval.
pub fn collect_periodically(
    config: &Config,
    registry: &Registry,
    io: &Io,
) -> impl Future<Output = ()> + Send + 'static {
    let interval = Duration::from_secs(config.gc.interval_secs);
    let settings = settings(config, false, config.gc.delete_untagged);
    let (registry, io) = (registry.clone(), io.clone());
    async move {
        if interval.is_zero() {
            return;
        }
        loop {
            io.timer.sleep(interval).await;
            match collect(&registry, &io, settings.clone()).await {
                Ok(collected) => log(&collected),
                Err(e) => tracing::warn!(error = %e, "garbage collection did not run"),
            }
        }
    }
}
