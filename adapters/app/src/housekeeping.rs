//! The periodic purge of stale upload sessions and abandoned S3 multipart uploads. It needs
//! nothing of a runtime but the driver's [`Timer`], so every server binary spawns the same
//! future.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use stowage_core::time::Millis;
use stowage_driver::{Io, Timer};
use stowage_storage::Stores;

use crate::Config;

/// Purges run at least this often, however long uploads may live.
const LONGEST_INTERVAL: Duration = Duration::from_secs(10 * 60);

/// Half the maximum age, so a session outlives it by at most half again; between a second
/// and [`LONGEST_INTERVAL`].
fn purge_interval(max_age: Duration) -> Duration {
    (max_age / 2).clamp(Duration::from_secs(1), LONGEST_INTERVAL)
}

/// Purges uploads older than `[registry] upload_max_age_secs` now, then periodically,
/// forever: spawn it beside the server.
pub fn purge_stale_uploads(config: &Config, io: &Io) -> impl Future<Output = ()> + Send + 'static {
    let max_age = Duration::from_secs(config.registry.upload_max_age_secs);
    purge_forever(io.stores.clone(), max_age, io.timer.clone())
}

async fn purge_forever(stores: Stores, max_age: Duration, timer: Arc<dyn Timer>) {
    let max_age_ms = u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX);
    loop {
        let cutoff = Millis(stowage_driver::now().0.saturating_sub(max_age_ms));
        let report = stores.purge_stale_uploads(cutoff).await;
        if report.sessions_removed + report.multipart_uploads_aborted + report.failures > 0 {
            tracing::info!(
                sessions = report.sessions_removed,
                multipart_uploads = report.multipart_uploads_aborted,
                failures = report.failures,
                "purged stale uploads"
            );
        }
        timer.sleep(purge_interval(max_age)).await;
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
