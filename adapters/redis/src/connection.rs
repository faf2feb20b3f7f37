//! One lazily connected, self-reconnecting Redis connection with short timeouts, so that
//! while Redis is unreachable writes fail fast instead of hanging.

use std::future::Future;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use stowage_core::step::IoError;

/// How long to wait for Redis before calling it unreachable.
const TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("redis url {url:?}: {source}")]
    Url {
        url: String,
        source: redis::RedisError,
    },
}

#[derive(Clone)]
pub struct Redis {
    connection: ConnectionManager,
    /// Prepended to every key, so several registries can share one Redis.
    key_prefix: String,
}

impl Redis {
    /// Prepares a connection to `url` (`redis://` or `rediss://`); it is made on first use.
    /// Must be called inside the async runtime.
    pub fn new(url: &str, key_prefix: &str) -> Result<Self, RedisError> {
        let url_error = |source| RedisError::Url {
            url: url.to_owned(),
            source,
        };
        let client = redis::Client::open(url).map_err(url_error)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(1);
        let connection =
            ConnectionManager::new_lazy_with_config(client, config).map_err(url_error)?;
        Ok(Redis {
            connection,
            key_prefix: key_prefix.to_owned(),
        })
    }

    pub(crate) fn key(&self, kind: &str, key: &str) -> String {
        format!("{}{kind}:{key}", self.key_prefix)
    }

    pub(crate) fn connection(&self) -> ConnectionManager {
        self.connection.clone()
    }

    /// `PING`: whether Redis answers (readiness).
    pub(crate) async fn ping(&self) -> Result<(), IoError> {
        retry_once("ping", || {
            let mut connection = self.connection();
            async move {
                redis::cmd("PING")
                    .query_async::<String>(&mut connection)
                    .await
            }
        })
        .await
        .map(drop)
    }
}

/// Runs a request, and once more if the connection had dropped (after a Redis restart the
/// manager notices only when a request fails; the retry goes out on the new connection).
pub(crate) async fn retry_once<T, Fut>(
    what: &str,
    mut attempt: impl FnMut() -> Fut,
) -> Result<T, IoError>
where
    Fut: Future<Output = redis::RedisResult<T>>,
{
    match attempt().await {
        Err(e) if e.is_connection_dropped() || e.is_io_error() => attempt().await,
        other => other,
    }
    .map_err(|e| io_error(what, e))
}

/// Redis failures as the driver reports them, logged once here.
fn io_error(what: &str, e: redis::RedisError) -> IoError {
    tracing::error!(error = %e, "redis {what} failed");
    IoError {
        message: format!("redis {what}: {e}"),
    }
}
