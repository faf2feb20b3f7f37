//! The periodic purge of stale upload sessions (the core's [`Registry::purge_uploads`]) and
//! of abandoned S3 multipart uploads (a storage matter below the keys the core sees). It
//! needs nothing of a runtime but the driver's [`Timer`], so every server binary spawns the
//! same future.

use std::future::Future;
use std::time::Duration;

use stowage_core::Registry;
use stowage_core::purge::PurgeReport;
use stowage_core::time::Millis;
use stowage_driver::Io;

use crate::Config;
use crate::gc::{entropy, run_to_report};

/// Purges run at least this often, however long uploads may live.
const LONGEST_INTERVAL: Duration = Duration::from_secs(10 * 60);

/// Half the maximum age, so a session outlives it by at most half again; between a second
/// and [`LONGEST_INTERVAL`].
fn purge_interval(max_age: Duration) -> Duration {
    (max_age / 2).clamp(Duration::from_secs(1), LONGEST_INTERVAL)
}

/// Purges uploads older than `[registry] upload_max_age_secs` now, then periodically,
/// forever: spawn it beside the server.
pub fn purge_stale_uploads(
    config: &Config,
    registry: &Registry,
    io: &Io,
) -> impl Future<Output = ()> + Send + 'static {
    let max_age = Duration::from_secs(config.registry.upload_max_age_secs);
    purge_forever(registry.clone(), io.clone(), max_age)
}

async fn purge_forever(registry: Registry, io: Io, max_age: Duration) {
    let max_age_ms = u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX);
    loop {
        let cutoff = Millis(stowage_driver::now().0.saturating_sub(max_age_ms));
        let sessions = match entropy() {
            Ok(entropy) => run_to_report(registry.purge_uploads(cutoff, entropy), &io).await,
            Err(e) => Err(e),
        };
        let (aborted, failures) = io.stores.abort_stale_multipart_uploads(cutoff).await;
        match sessions {
            Ok(PurgeReport {
                sessions_removed,
                sessions_in_use,
            }) if sessions_removed > 0 || aborted + failures > 0 => tracing::info!(
                sessions = sessions_removed,
                sessions_in_use,
                multipart_uploads = aborted,
                failures,
                "purged stale uploads"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(
                error = %e,
                multipart_uploads = aborted,
                failures,
                "purging stale upload sessions failed"
            ),
        }
        io.timer.sleep(purge_interval(max_age)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purges_twice_per_max_age_within_bounds() {
        assert_eq!(purge_interval(Duration::from_secs(86400)), LONGEST_INTERVAL);
        assert_eq!(
            purge_interval(Duration::from_secs(600)),
            Duration::from_secs(300)
        );
        assert_eq!(
            purge_interval(Duration::from_secs(1)),
            Duration::from_secs(1)
        );
    }
}
