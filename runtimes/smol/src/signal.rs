//! The shutdown request: SIGTERM or SIGINT.

use async_signal::{Signal, Signals};
use futures_lite::StreamExt;

/// Resolves on SIGTERM or SIGINT. If the signals cannot be watched the server still runs,
/// as the tokio server does, and only a kill stops it.
pub async fn shutdown_signal() {
    match Signals::new([Signal::Term, Signal::Int]) {
        Ok(mut signals) => {
            signals.next().await;
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGTERM and SIGINT");
            futures_lite::future::pending::<()>().await;
        }
    }
}
