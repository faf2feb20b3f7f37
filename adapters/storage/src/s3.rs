//! S3-compatible object storage through OpenDAL's s3 service.

use std::sync::Once;
use std::time::Duration;

use opendal::layers::{RetryEvent, RetryLayer, TimeoutLayer};
use opendal::services::S3;
use opendal::{HttpTransporter, Operator};
use opendal_http_transport_reqwest::ReqwestTransport;

use crate::causes::WithCauses;
use crate::settings::{AccessKey, S3Settings};

/// The HTTP client and TLS provider are process-wide; install them once.
pub(crate) fn install_transport() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
        HttpTransporter::install_default(ReqwestTransport::default());
    });
}

pub(crate) fn operator(settings: &S3Settings, key: &AccessKey) -> opendal::Result<Operator> {
    install_transport();
    let builder = S3::default()
        .bucket(&settings.bucket)
        .endpoint(&settings.endpoint)
        .region(&settings.region)
        .access_key_id(&key.id)
        .secret_access_key(&key.secret)
        .root(&format!("/{}", settings.key_prefix.trim_matches('/')))
        .disable_config_load()
        .disable_ec2_metadata();
    let attempt = Duration::from_secs(settings.operation_attempt_timeout_secs);
    let operation = Duration::from_secs(settings.operation_timeout_secs);
    // Innermost first: each attempt is bounded, attempts are retried with backoff, and the
    // whole operation, retries included, is bounded again.
    Ok(Operator::new(builder)?
        .layer(
            TimeoutLayer::new()
                .with_timeout(attempt)
                .with_io_timeout(attempt),
        )
        .layer(
            RetryLayer::new()
                .with_max_times(settings.max_attempts.saturating_sub(1))
                .with_jitter()
                .with_notify(count_retry),
        )
        .layer(
            TimeoutLayer::new()
                .with_timeout(operation)
                .with_io_timeout(operation),
        ))
}

/// Counted retries of S3 requests (see [`describe_metrics`]).
pub(crate) const RETRIES: &str = "stowage_s3_retries_total";

/// Counts (and logs, as OpenDAL's default interceptor did) each retry of an S3 request,
/// telling apart the attempts cut off by `operation_attempt_timeout_secs`: the timeout layer
/// below the retry layer reports them as temporary errors with this message.
fn count_retry(event: RetryEvent<'_>) {
    let reason = retry_reason(&event.err.to_string());
    metrics::counter!(RETRIES, "reason" => reason).increment(1);
    tracing::warn!(
        operation = %event.op,
        attempt = event.attempt,
        error = %WithCauses(event.err),
        "retrying an S3 request"
    );
}

fn retry_reason(error: &str) -> &'static str {
    if error.contains("timeout reached") {
        "timeout"
    } else {
        "error"
    }
}

#[cfg(test)]
mod tests {
    use super::retry_reason;

    #[test]
    fn attempt_timeouts_are_told_apart_from_other_retries() {
        let timeout = opendal::Error::new(
            opendal::ErrorKind::Unexpected,
            "io operation timeout reached",
        );
        assert_eq!(retry_reason(&timeout.to_string()), "timeout");
        let refused = opendal::Error::new(opendal::ErrorKind::Unexpected, "connection refused");
        assert_eq!(retry_reason(&refused.to_string()), "error");
    }
}
