//! S3-compatible object storage through OpenDAL's s3 service.

use std::sync::Once;
use std::time::Duration;

use opendal::layers::{RetryLayer, TimeoutLayer};
use opendal::services::S3;
use opendal::{HttpTransporter, Operator};
use opendal_http_transport_reqwest::ReqwestTransport;

use crate::settings::S3Settings;

/// The HTTP client and TLS provider are process-wide; install them once.
pub(crate) fn install_transport() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
        HttpTransporter::install_default(ReqwestTransport::default());
    });
}

pub(crate) fn operator(settings: &S3Settings) -> opendal::Result<Operator> {
    install_transport();
    let builder = S3::default()
        .bucket(&settings.bucket)
        .endpoint(&settings.endpoint)
        .region(&settings.region)
        .access_key_id(&settings.access_key_id)
        .secret_access_key(&settings.secret_key)
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
                .with_jitter(),
        )
        .layer(
            TimeoutLayer::new()
                .with_timeout(operation)
                .with_io_timeout(operation),
        ))
}
