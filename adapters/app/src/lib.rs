//! What the tokio and smol servers share: the command line, the configuration file, logging,
//! and the wiring of storage, locks and cache into [`Backends`].

mod cli;
mod config;

use std::sync::Arc;

use stowage_core::{Limits, Registry};
use stowage_driver::{Backends, MemoryCacheStore, MemoryLockStore, Timer};
use stowage_storage::Storage;

pub use cli::{Cli, Command};
pub use config::{Config, ConfigError, ServerSettings};

/// The in-memory cache's size bound.
const MEMORY_CACHE_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Storage(#[from] stowage_storage::StorageError),
}

/// Logs to stderr; `RUST_LOG` picks the level (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// The registry logic and its backends, built from a configuration.
pub fn build(config: &Config, timer: Arc<dyn Timer>) -> Result<(Registry, Backends), StartError> {
    let storage = Storage::open(
        &config.blob_store.settings()?,
        config.metadata_store_settings()?.as_ref(),
    )?;
    let limits = Limits {
        max_manifest_bytes: config.registry.max_manifest_size.as_u64(),
        allow_missing_manifest_references: config.registry.allow_missing_manifest_references,
        cache_ttl_ms: config.registry.cache_ttl_secs * 1000,
        ..Limits::default()
    };
    let backends = Backends {
        storage,
        locks: Arc::new(MemoryLockStore::default()),
        cache: Arc::new(MemoryCacheStore::new(MEMORY_CACHE_BYTES)),
        timer,
    };
    Ok((Registry::new(limits), backends))
}
