//! What the tokio and smol servers share: the command line, the configuration file, logging,
//! and the wiring of storage, locks and cache into [`Io`].

mod accept;
mod access;
mod access_log;
mod allocator;
mod cli;
mod config;
mod gc;
mod gc_progress;
mod housekeeping;
mod invalid;
mod log_writer;
mod logging;
mod migrate;
mod mirror;
mod prometheus;
mod repositories;
mod spread;
mod tls;
mod tokio_runtime;
mod traces;

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use stowage_core::access::AccessControl;
use stowage_core::config::LockSettings;
use stowage_core::step::StoreRole;
use stowage_core::{Limits, Registry};
use stowage_driver::{
    Cache, Io, LockStore, MemoryCacheStore, MemoryLockStore, NoProgress, NoUpstreams, NoWebhooks,
    Spawn, Timer, Upstreams, Webhooks,
};
use stowage_http::{BodyPace, Observability, Service};
use stowage_redis::{Redis, RedisCache, RedisLocks};
use stowage_storage::Stores;

pub use accept::AcceptBackoff;
pub use cli::{Cli, Command};
pub use config::{ClientAuth, Config, ConfigError, ServerSettings, TlsSettings};
pub use gc::collect_periodically;
pub use housekeeping::purge_stale_uploads;
pub use spread::{Serving, Spread};
pub use tls::{Tls, TlsError, tls_peer};
pub use tokio_runtime::{TokioSleep, TokioSpawn};

/// The in-memory cache's size bound.
const MEMORY_CACHE_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Storage(#[from] stowage_storage::StoreOpenError),
    #[error("the configuration names no blob store backend")]
    NoBlobStore,
    #[error(transparent)]
    Redis(#[from] stowage_redis::RedisError),
    #[error("server.bind_address {address:?}: {source}")]
    BindAddress {
        address: String,
        source: std::net::AddrParseError,
    },
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("migration stopped: {0}")]
    Migrate(#[from] stowage_migrate::MigrateError),
    #[error(transparent)]
    Auth(#[from] stowage_auth::AuthError),
    #[error(transparent)]
    Upstream(#[from] stowage_upstream::UpstreamError),
    #[error("{0}")]
    Hash(String),
    #[error("cannot set up metrics: {0}")]
    Metrics(String),
    #[error("cannot set up tracing: {0}")]
    Tracing(String),
    #[error(transparent)]
    Webhooks(#[from] stowage_webhooks::WebhookError),
    #[error("garbage collection: {0}")]
    Gc(#[from] stowage_core::ReportError),
}

/// A server binary's `main` around its runtime: logging, the command line, the configuration
/// file, and the exit code. `serve` runs the server until it has shut down; `migrate` runs
/// on a runtime of its own.
pub fn run(program: &str, serve: impl FnOnce(Config) -> Result<(), StartError>) -> ExitCode {
    allocator::tune();
    let command = Cli::parse().command;
    // Logging follows the configuration file, so the file is read first (an error reading
    // it is printed below); the other commands log as the default configuration says.
    let config = match &command {
        Command::Serve { config } => Config::load(config.as_deref()),
        Command::Gc { config, .. } => Config::load(Some(config.as_path())),
        Command::Migrate { .. } | Command::HashPassword => Ok(Config::default()),
    };
    let log_settings = config
        .as_ref()
        .map(|config| config.observability.log.clone())
        .unwrap_or_default();
    let _log_writer = logging::init(&log_settings);
    let result = match command {
        Command::Serve { .. } => config.map_err(StartError::from).and_then(serve),
        Command::Migrate { from, to } => migrate::migrate(&from, &to),
        Command::HashPassword => print_password_hash(),
        Command::Gc {
            dry_run,
            delete_untagged,
            ..
        } => config
            .map_err(StartError::from)
            .and_then(|config| gc::collect_once(&config, dry_run, delete_untagged)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("{program}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `stowage hash-password`: reads a password from standard input (one line) and prints its
/// argon2 hash for `[auth.identity.<name>] password`.
fn print_password_hash() -> Result<(), StartError> {
    let mut password = String::new();
    std::io::stdin()
        .read_line(&mut password)
        .map_err(|e| StartError::Hash(format!("cannot read the password: {e}")))?;
    let password = password.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        return Err(StartError::Hash("the password is empty".to_owned()));
    }
    println!("{}", stowage_auth::hash_password(password)?);
    Ok(())
}

/// The HTTP service over the registry, and where it listens, from `[server]` and `[auth]`.
pub fn http_service(
    config: &Config,
    registry: Registry,
    io: Io,
) -> Result<(Service, SocketAddr), StartError> {
    let server = &config.server;
    stowage_storage::set_hash_thread(server.hash_thread);
    let body_pace = BodyPace {
        idle_timeout: Duration::from_secs(server.body_idle_timeout_secs),
        min_bytes_per_sec: server.min_body_rate_bytes_per_sec,
        grace: Duration::from_secs(server.body_grace_secs),
    };
    let authenticator = if config.auth.any() {
        let shared = stowage_auth::Shared {
            cache: io.cache.clone(),
            timer: io.timer.clone(),
            fetch: Arc::new(stowage_auth::HttpFetch::new()?),
        };
        Some(Arc::new(stowage_auth::Authenticator::new(
            &config.auth.settings(),
            shared,
        )?))
    } else {
        None
    };
    let service = Service::new(
        registry,
        io,
        body_pace,
        authenticator,
        observability(config)?,
    );
    Ok((service, listen_address(server)?))
}

/// TLS from `[server.tls]`, or `None` for plain HTTP. Reads the files now.
pub fn tls(config: &Config) -> Result<Option<Tls>, StartError> {
    Ok(config.server.tls.as_ref().map(Tls::start).transpose()?)
}

/// What the service tells about itself, from `[observability]`; starts the metrics
/// recorder, the metrics listener when it has a port of its own, and the trace exporter.
fn observability(config: &Config) -> Result<Observability, StartError> {
    let settings = &config.observability;
    let metrics = match settings.metrics.enabled {
        true => Some(prometheus::install()?),
        false => None,
    };
    let own_address = prometheus::own_address(&settings.metrics, &config.server.bind_address)?;
    let metrics = match (metrics, own_address) {
        (Some(render), Some(address)) => {
            prometheus::serve_alone(address, render)?;
            None
        }
        (metrics, _) => metrics,
    };
    Ok(Observability {
        metrics,
        access_log: access_log::start(&settings.log, logging::writer()),
        readiness_timeout: Duration::from_millis(settings.readiness_timeout_ms),
        tracing: traces::start(&settings.tracing)?,
    })
}

/// Where the server listens: `bind_address` is an IP address (v4 or v6).
pub fn listen_address(server: &ServerSettings) -> Result<SocketAddr, StartError> {
    let ip: IpAddr = server
        .bind_address
        .parse()
        .map_err(|source| StartError::BindAddress {
            address: server.bind_address.clone(),
            source,
        })?;
    Ok(SocketAddr::new(ip, server.port))
}

/// The registry logic and its io, built from a configuration, with the runtime's `timer`
/// and `spawner`. Must be called inside the async runtime (the Redis client binds to it).
pub fn build(
    config: &Config,
    timer: Arc<dyn Timer>,
    spawner: Arc<dyn Spawn>,
) -> Result<(Registry, Io), StartError> {
    let blobs = config
        .blob_store_settings()
        .ok_or(StartError::NoBlobStore)?;
    let stores = Stores::open(&blobs, config.metadata_store_settings().as_ref())?;
    let (locks, lock_settings): (Arc<dyn LockStore>, LockSettings) = match config.lock_settings() {
        Some(redis) => (
            Arc::new(RedisLocks::new(Redis::new(&redis.url, &redis.key_prefix)?)),
            LockSettings {
                ttl_ms: redis.ttl * 1000,
                max_retries: redis.max_retries,
                retry_delay_ms: redis.retry_delay_ms,
            },
        ),
        None => (
            Arc::new(MemoryLockStore::default()),
            LockSettings::default(),
        ),
    };
    let cache: Arc<dyn Cache> = match &config.cache.redis {
        Some(redis) => Arc::new(RedisCache::new(Redis::new(&redis.url, &redis.key_prefix)?)),
        None => Arc::new(MemoryCacheStore::new(MEMORY_CACHE_BYTES)),
    };
    let limits = Limits {
        max_manifest_bytes: config.registry.max_manifest_size.as_u64(),
        allow_missing_manifest_references: config.registry.allow_missing_manifest_references,
        cache_ttl_ms: config.registry.cache_ttl_secs * 1000,
        locks: lock_settings,
        chunks_in_place: stores.store(StoreRole::Blobs).writes_in_place(),
        max_open_uploads_per_repository: config.registry.max_open_uploads_per_repository,
        max_tags_per_request: config.registry.max_tags_per_request,
    };
    let upstream_settings =
        repositories::upstream_settings(&config.repository).map_err(invalid_at_start)?;
    let upstreams: Arc<dyn Upstreams> = match upstream_settings.is_empty() {
        true => Arc::new(NoUpstreams),
        false => Arc::new(stowage_upstream::HttpUpstreams::new(
            &upstream_settings,
            cache.clone(),
        )?),
    };
    let webhooks: Arc<dyn Webhooks> = match config.event_webhook.is_empty() {
        true => Arc::new(NoWebhooks),
        false => Arc::new(stowage_webhooks::Webhooks::new(
            &config.event_webhook,
            timer.clone(),
        )?),
    };
    let subscriptions = stowage_webhooks::subscriptions(&config.event_webhook)
        .map_err(stowage_webhooks::WebhookError::from)?;
    let io = Io {
        stores,
        locks,
        cache,
        timer,
        spawner,
        upstreams,
        webhooks,
        progress: Arc::new(NoProgress),
    };
    let access = AccessControl {
        challenge: config.auth.settings().challenge(),
        global_policy: config.global.policy().map_err(invalid_at_start)?,
    };
    let repositories = repositories::compile(&config.repository).map_err(invalid_at_start)?;
    let registry = Registry::new(limits)
        .with_access(access, repositories)
        .with_events(subscriptions);
    Ok((registry, io))
}

/// Delivers the events queued for `async` webhooks, forever: spawn it beside the server.
pub fn deliver_queued_events(io: &Io) -> stowage_driver::BoxFuture<'static, ()> {
    io.webhooks.deliver_queued(io.clone())
}

/// Settings are checked when the file loads; this is for a configuration built in code.
fn invalid_at_start(e: invalid::Invalid) -> StartError {
    StartError::Config(ConfigError::Invalid {
        file: "(configuration)".into(),
        key: e.key,
        reason: e.reason,
    })
}
