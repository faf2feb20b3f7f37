//! The TOML configuration file. Unknown keys and bad values stop startup with the file, the
//! key and the reason.

use std::path::{Path, PathBuf};

use bytesize::ByteSize;
use serde::Deserialize;
use stowage_storage::{FsSettings, HashThread, InlineCalls, S3Settings, StoreSettings};

use crate::access::{AuthSection, GlobalSection};
use crate::repositories::RepositoryEntry;

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerSettings,
    #[serde(default)]
    pub registry: RegistrySettings,
    #[serde(default)]
    pub blob_store: StoreSection,
    /// Absent: the metadata store uses the blob store's backend.
    pub metadata_store: Option<StoreSection>,
    #[serde(default)]
    pub cache: CacheSection,
    #[serde(default)]
    pub auth: AuthSection,
    #[serde(default)]
    pub global: GlobalSection,
    /// `[repository."<name or prefix>"]`.
    #[serde(default)]
    pub repository: std::collections::BTreeMap<String, RepositoryEntry>,
    #[serde(default)]
    pub observability: ObservabilitySettings,
    /// `[event_webhook.<name>]`: who hears of pushes and deletes.
    #[serde(default)]
    pub event_webhook: std::collections::BTreeMap<String, stowage_webhooks::WebhookSettings>,
    #[serde(default)]
    pub gc: GcSection,
}

/// `[gc]`: garbage collection, by `stowage gc` or inside the server.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GcSection {
    /// Unreferenced blobs, links and untagged manifests younger than this are kept (pushes
    /// in progress upload their blobs before their manifest).
    pub grace_period_secs: u64,
    /// Collect inside the server this often (0: never); whichever replica takes the
    /// collector's lease collects.
    pub interval_secs: u64,
    /// Whether the collections inside the server delete untagged manifests too.
    pub delete_untagged: bool,
}

impl Default for GcSection {
    fn default() -> Self {
        GcSection {
            grace_period_secs: 3600,
            interval_secs: 0,
            delete_untagged: false,
        }
    }
}

/// `[observability]`: metrics, readiness, logs and traces.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ObservabilitySettings {
    /// How long each `/readyz` check (the metadata store, Redis) may take.
    pub readiness_timeout_ms: u64,
    pub metrics: MetricsSettings,
    pub log: LogSettings,
    pub tracing: TracingSettings,
}

impl Default for ObservabilitySettings {
    fn default() -> Self {
        ObservabilitySettings {
            readiness_timeout_ms: 2000,
            metrics: MetricsSettings::default(),
            log: LogSettings::default(),
            tracing: TracingSettings::default(),
        }
    }
}

/// `[observability.tracing]`: a span per registry request, with its storage, lock and cache
/// steps as children, sent to an OpenTelemetry collector over OTLP/HTTP. Off (and free)
/// without an `endpoint`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingSettings {
    /// The collector's OTLP/HTTP traces URL, used as given
    /// (`http://127.0.0.1:4318/v1/traces`).
    pub endpoint: Option<String>,
    /// The share of requests traced, 0.0 to 1.0 (default 1.0), for requests whose client
    /// did not decide it in its `traceparent`.
    pub sampling_rate: Option<f64>,
    /// PEM: CAs an https collector's certificate may chain to, besides the system's.
    pub ca_bundle: Option<PathBuf>,
}

impl TracingSettings {
    /// The share of requests traced.
    pub fn sampling_rate(&self) -> f64 {
        self.sampling_rate.unwrap_or(1.0)
    }
}

/// `[observability.metrics]`: Prometheus metrics at `/metrics`, on the main listener unless
/// `port` gives them one of their own.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSettings {
    /// On by default: recording costs a few atomic operations per step.
    pub enabled: bool,
    /// The metrics listener's address; default: `[server] bind_address`. Only with `port`.
    pub bind_address: Option<String>,
    /// Serve `/metrics` on this port instead of the main listener.
    pub port: Option<u16>,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        MetricsSettings {
            enabled: true,
            bind_address: None,
            port: None,
        }
    }
}

/// `[observability.log]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A filter in `RUST_LOG`'s syntax (`info`, `warn,stowage::access=info`); `RUST_LOG`,
    /// when set, wins.
    pub level: String,
    /// One line per request under the `stowage::access` target.
    pub access_log: bool,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            format: LogFormat::Text,
            level: "info".into(),
            access_log: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// `[cache]`: absent `redis`, an in-memory cache per instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSection {
    pub redis: Option<RedisCacheSettings>,
}

/// `[cache.redis]`: the cache replicas share.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisCacheSettings {
    pub url: String,
    #[serde(default)]
    pub key_prefix: String,
}

/// `[metadata_store.<fs|s3>.redis]`: locks on Redis, for several replicas on one store.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisLockSettings {
    /// `redis://` or `rediss://`.
    pub url: String,
    /// How long a lock lives unless refreshed, in seconds.
    #[serde(default = "default_lock_ttl")]
    pub ttl: u64,
    #[serde(default)]
    pub key_prefix: String,
    #[serde(default = "default_lock_retries")]
    pub max_retries: u32,
    #[serde(default = "default_lock_retry_delay")]
    pub retry_delay_ms: u64,
}

fn default_lock_ttl() -> u64 {
    10
}

fn default_lock_retries() -> u32 {
    100
}

fn default_lock_retry_delay() -> u64 {
    10
}

/// `[server]`: where to listen and how long to wait for slow clients.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    pub bind_address: String,
    pub port: u16,
    /// How long a client may take to send a request's head.
    pub request_header_timeout_secs: u64,
    /// How long a request body may stay silent before the request fails.
    pub body_idle_timeout_secs: u64,
    /// A body slower than this (bytes per second, over the time spent waiting for it) fails
    /// its request once `body_grace_secs` have been spent waiting; 0: no minimum.
    pub min_body_rate_bytes_per_sec: u64,
    pub body_grace_secs: u64,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_timeout_secs: u64,
    /// Whether a large pushed body is hashed on a thread of its own.
    pub hash_thread: HashThread,
    /// `[server.tls]`; absent: plain HTTP.
    pub tls: Option<TlsSettings>,
}

/// `[server.tls]`: the server's certificate and, optionally, the CAs client certificates
/// are verified against. The files are read again whenever they change.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM: the server's certificate, then the chain up to (not necessarily including) a root.
    pub server_certificate_bundle: PathBuf,
    /// PEM: the certificate's private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub server_private_key: PathBuf,
    /// PEM: the CAs a client certificate must chain to. Absent: no client certificates.
    pub client_ca_bundle: Option<PathBuf>,
    /// Whether a client must present a certificate (only with `client_ca_bundle`).
    pub client_auth: Option<ClientAuth>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// A client may present a certificate; one it presents must verify.
    Optional,
    /// A client without a verified certificate cannot connect.
    Required,
}

impl TlsSettings {
    /// The client CA bundle and how client certificates are asked for, if they are.
    pub fn client_verification(&self) -> Option<(&Path, ClientAuth)> {
        let bundle = self.client_ca_bundle.as_deref()?;
        Some((bundle, self.client_auth.unwrap_or(ClientAuth::Optional)))
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            bind_address: "127.0.0.1".into(),
            port: 5000,
            request_header_timeout_secs: 30,
            body_idle_timeout_secs: 60,
            min_body_rate_bytes_per_sec: 1024,
            body_grace_secs: 10,
            shutdown_timeout_secs: 30,
            hash_thread: HashThread::Auto,
            tls: None,
        }
    }
}

/// `[registry]`: policy.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrySettings {
    pub max_manifest_size: ByteSize,
    pub allow_missing_manifest_references: bool,
    /// How long cache entries (tags, manifests, blob sizes, small blobs) last.
    pub cache_ttl_secs: u64,
    /// Upload sessions (and S3 multipart uploads) older than this are purged.
    pub upload_max_age_secs: u64,
    /// Upload sessions one repository may have open; starting another gets 429.
    pub max_open_uploads_per_repository: u64,
    /// `?tag=` parameters one manifest push may carry.
    pub max_tags_per_request: usize,
}

impl Default for RegistrySettings {
    fn default() -> Self {
        RegistrySettings {
            max_manifest_size: ByteSize::mib(4),
            allow_missing_manifest_references: true,
            cache_ttl_secs: 60,
            upload_max_age_secs: 24 * 60 * 60,
            max_open_uploads_per_repository: 1000,
            max_tags_per_request: 32,
        }
    }
}

/// `[blob_store]` / `[metadata_store]`: exactly one backend table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    pub fs: Option<BackendTable<FsSettings>>,
    pub s3: Option<BackendTable<S3Settings>>,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            fs: Some(BackendTable {
                store: FsSettings {
                    root_dir: "./data".into(),
                    sync_to_disk: false,
                    inline_calls: InlineCalls::Auto,
                },
                redis: None,
            }),
            s3: None,
        }
    }
}

/// A backend table (`[metadata_store.fs]`, ...): the store's own keys, and `redis`, the lock
/// store, which the file's shape keeps there though storage has no use for it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(
    try_from = "toml::Table",
    bound(deserialize = "T: serde::de::DeserializeOwned")
)]
pub struct BackendTable<T> {
    pub store: T,
    /// `[<store>.<backend>.redis]`.
    pub redis: Option<RedisLockSettings>,
}

impl<T: serde::de::DeserializeOwned> TryFrom<toml::Table> for BackendTable<T> {
    type Error = toml::de::Error;

    fn try_from(mut table: toml::Table) -> Result<Self, Self::Error> {
        let redis = table.remove("redis").map(|r| r.try_into()).transpose()?;
        Ok(BackendTable {
            store: toml::Value::Table(table).try_into()?,
            redis,
        })
    }
}

const ONE_BACKEND: &str = "needs exactly one backend table: .fs or .s3";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {file}: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: {source}")]
    Parse {
        file: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("{file}: {key}: {reason}")]
    Invalid {
        file: PathBuf,
        key: String,
        reason: String,
    },
}

impl StoreSection {
    /// The one backend this section names, if it names exactly one.
    fn backend(&self) -> Option<StoreSettings> {
        match (&self.fs, &self.s3) {
            (Some(fs), None) => Some(StoreSettings::Fs(fs.store.clone())),
            (None, Some(s3)) => Some(StoreSettings::S3(s3.store.clone())),
            _ => None,
        }
    }
}

impl Config {
    /// Loads a file, or the embedded default when there is none.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let Some(file) = file else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            file: file.to_owned(),
            source,
        })?;
        Config::parse(&text, file)
    }

    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|source| ConfigError::Parse {
            file: file.to_owned(),
            source: Box::new(source),
        })?;
        config.validate(file)?;
        Ok(config)
    }

    fn validate(&self, file: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: &str| ConfigError::Invalid {
            file: file.to_owned(),
            key: key.to_owned(),
            reason: reason.into(),
        };
        let compiled = |e: crate::invalid::Invalid| invalid(&e.key, &e.reason);
        self.global.policy().map_err(compiled)?;
        crate::repositories::compile(&self.repository).map_err(compiled)?;
        self.auth.settings().check().map_err(|e| match e {
            stowage_auth::AuthError::Setting { key, reason } => invalid(&key, &reason),
            other => invalid("auth", &other.to_string()),
        })?;
        for (name, identity) in &self.auth.identity {
            if identity.username.is_empty() || identity.username.contains(':') {
                return Err(invalid(
                    &format!("auth.identity.{name}.username"),
                    "must be non-empty and hold no ':'",
                ));
            }
        }
        if self.blob_store.backend().is_none() {
            return Err(invalid("blob_store", ONE_BACKEND));
        }
        if self
            .metadata_store
            .as_ref()
            .is_some_and(|m| m.backend().is_none())
        {
            return Err(invalid("metadata_store", ONE_BACKEND));
        }
        if self.registry.upload_max_age_secs == 0 {
            return Err(invalid(
                "registry.upload_max_age_secs",
                "must be at least 1",
            ));
        }
        if self.registry.max_manifest_size.as_u64() == 0 {
            return Err(invalid("registry.max_manifest_size", "must be more than 0"));
        }
        if self.server.body_idle_timeout_secs == 0 || self.server.request_header_timeout_secs == 0 {
            return Err(invalid("server", "timeouts must be at least 1 second"));
        }
        if self
            .server
            .tls
            .as_ref()
            .is_some_and(|tls| tls.client_auth.is_some() && tls.client_ca_bundle.is_none())
        {
            return Err(invalid(
                "server.tls.client_auth",
                "needs client_ca_bundle, the CAs to verify client certificates against",
            ));
        }
        let observability = &self.observability;
        if observability.readiness_timeout_ms == 0 {
            return Err(invalid(
                "observability.readiness_timeout_ms",
                "must be at least 1",
            ));
        }
        if observability.metrics.bind_address.is_some() && observability.metrics.port.is_none() {
            return Err(invalid(
                "observability.metrics.bind_address",
                "needs observability.metrics.port",
            ));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&observability.log.level) {
            return Err(invalid("observability.log.level", &e.to_string()));
        }
        let tracing = &observability.tracing;
        if let Some(endpoint) = &tracing.endpoint {
            let scheme = url::Url::parse(endpoint).map(|url| url.scheme().to_owned());
            if !matches!(scheme.as_deref(), Ok("http" | "https")) {
                return Err(invalid(
                    "observability.tracing.endpoint",
                    "must be an http:// or https:// URL",
                ));
            }
        } else if tracing.sampling_rate.is_some() || tracing.ca_bundle.is_some() {
            let key = match tracing.ca_bundle {
                Some(_) => "observability.tracing.ca_bundle",
                None => "observability.tracing.sampling_rate",
            };
            return Err(invalid(key, "needs observability.tracing.endpoint"));
        }
        if !(0.0..=1.0).contains(&tracing.sampling_rate()) {
            return Err(invalid(
                "observability.tracing.sampling_rate",
                "must be between 0.0 and 1.0",
            ));
        }
        if let Err(e) = stowage_webhooks::subscriptions(&self.event_webhook) {
            let key = format!("event_webhook.{}.{}", e.webhook, e.key);
            return Err(invalid(&key, &e.reason));
        }
        Ok(())
    }

    /// The blob store's backend (validated at load).
    pub fn blob_store_settings(&self) -> Option<StoreSettings> {
        self.blob_store.backend()
    }

    /// `[metadata_store.<fs|s3>.redis]`, or the blob store's table when the metadata store
    /// is the blob store's backend. `None`: in-memory locks.
    pub fn lock_settings(&self) -> Option<&RedisLockSettings> {
        let section = self.metadata_store.as_ref().unwrap_or(&self.blob_store);
        match (&section.fs, &section.s3) {
            (Some(fs), _) => fs.redis.as_ref(),
            (_, Some(s3)) => s3.redis.as_ref(),
            _ => None,
        }
    }

    /// The metadata store's backend; `None` means "the blob store's".
    pub fn metadata_store_settings(&self) -> Option<StoreSettings> {
        self.metadata_store.as_ref().and_then(StoreSection::backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn reads_a_full_file() {
        let config = parse(
            r#"
            [server]
            bind_address = "0.0.0.0"
            port = 5001
            [registry]
            max_manifest_size = "8MiB"
            allow_missing_manifest_references = false
            [blob_store.fs]
            root_dir = "/srv/blobs"
            sync_to_disk = true
            [metadata_store.fs]
            root_dir = "/srv/meta"
            "#,
        )
        .unwrap();
        assert_eq!(config.server.port, 5001);
        assert_eq!(config.registry.max_manifest_size, ByteSize::mib(8));
        assert!(config.blob_store.fs.as_ref().unwrap().store.sync_to_disk);
        assert_eq!(
            config.metadata_store.unwrap().fs.unwrap().store.root_dir,
            "/srv/meta"
        );
    }

    #[test]
    fn names_the_file_and_key_of_an_error() {
        let err = parse("[server]\nprot = 1\n").unwrap_err().to_string();
        assert!(err.contains("test.toml") && err.contains("prot"), "{err}");
        let err = parse("[server]\nport = \"x\"\n").unwrap_err().to_string();
        assert!(err.contains("port"), "{err}");
        let err = parse("[blob_store]\n").unwrap_err().to_string();
        assert!(err.contains("blob_store"), "{err}");
    }

    #[test]
    fn reads_webhooks_and_names_the_key_of_a_bad_one() {
        let config = parse(
            "[event_webhook.scanner]\nurl = \"http://127.0.0.1:9/hook\"\n\
             policy = \"required\"\nevents = [\"tag_deleted\"]\n",
        )
        .unwrap();
        let scanner = &config.event_webhook["scanner"];
        assert_eq!(scanner.policy, stowage_core::events::Policy::Required);
        assert_eq!(
            scanner.events,
            [stowage_core::events::EventKind::TagDeleted]
        );
        assert_eq!((scanner.timeout_secs, scanner.max_retries), (5, 5));
        for (bad, key) in [
            ("url = \"ftp://host/\"", "event_webhook.w.url"),
            (
                "url = \"http://h/\"\nrepository_filter = \"(\"",
                "event_webhook.w.repository_filter",
            ),
            ("url = \"http://h/\"\nevents = []", "event_webhook.w.events"),
            (
                "url = \"http://h/\"\ntimeout_secs = 0",
                "event_webhook.w.timeout_secs",
            ),
        ] {
            let Err(ConfigError::Invalid { key: got, .. }) =
                parse(&format!("[event_webhook.w]\n{bad}\n"))
            else {
                panic!("{bad} was accepted");
            };
            assert_eq!(got, key);
        }
        let err =
            parse("[event_webhook.w]\nurl = \"http://h/\"\nevents = [\"pushed\"]\n").unwrap_err();
        assert!(err.to_string().contains("pushed"), "{err}");
    }

    #[test]
    fn upload_max_age_defaults_to_a_day_and_is_at_least_a_second() {
        assert_eq!(parse("").unwrap().registry.upload_max_age_secs, 86400);
        let config = parse("[registry]\nupload_max_age_secs = 60\n").unwrap();
        assert_eq!(config.registry.upload_max_age_secs, 60);
        let err = parse("[registry]\nupload_max_age_secs = 0\n").unwrap_err();
        assert!(err.to_string().contains("upload_max_age_secs"), "{err}");
    }

    #[test]
    fn hashes_on_a_thread_of_its_own_while_a_core_is_spare_unless_told() {
        assert_eq!(parse("").unwrap().server.hash_thread, HashThread::Auto);
        let config = parse("[server]\nhash_thread = \"never\"\n").unwrap();
        assert_eq!(config.server.hash_thread, HashThread::Never);
        assert!(parse("[server]\nhash_thread = \"sometimes\"\n").is_err());
    }

    #[test]
    fn reads_the_limits_a_client_could_exhaust() {
        let defaults = parse("").unwrap();
        assert_eq!(defaults.registry.max_open_uploads_per_repository, 1000);
        assert_eq!(defaults.registry.max_tags_per_request, 32);
        assert_eq!(defaults.server.min_body_rate_bytes_per_sec, 1024);
        assert_eq!(defaults.server.body_grace_secs, 10);
        let config = parse(
            "[server]\nmin_body_rate_bytes_per_sec = 0\nbody_grace_secs = 3\n\
             [registry]\nmax_open_uploads_per_repository = 5\nmax_tags_per_request = 2\n",
        )
        .unwrap();
        assert_eq!(config.server.min_body_rate_bytes_per_sec, 0);
        assert_eq!(config.server.body_grace_secs, 3);
        assert_eq!(config.registry.max_open_uploads_per_repository, 5);
        assert_eq!(config.registry.max_tags_per_request, 2);
    }

    #[test]
    fn reads_where_filesystem_calls_run() {
        let fs = |section: StoreSection| section.fs.expect("fs").store.inline_calls;
        assert_eq!(fs(parse("").unwrap().blob_store), InlineCalls::Auto);
        let config = parse("[blob_store.fs]\nroot_dir = \"x\"\ninline_calls = \"never\"\n");
        assert_eq!(fs(config.unwrap().blob_store), InlineCalls::Never);
        let meta =
            parse("[metadata_store.fs]\nroot_dir = \"m\"\ninline_calls = \"always\"\n").unwrap();
        assert_eq!(fs(meta.metadata_store.expect("meta")), InlineCalls::Always);
        let err = parse("[blob_store.fs]\nroot_dir = \"x\"\ninline_calls = \"sometimes\"\n");
        assert!(err.unwrap_err().to_string().contains("inline_calls"));
    }

    #[test]
    fn reads_observability_with_defaults() {
        let config = parse("").unwrap().observability;
        assert!(config.metrics.enabled && config.log.access_log);
        assert_eq!(config.metrics.port, None);
        assert_eq!(config.log.format, LogFormat::Text);
        assert_eq!(config.readiness_timeout_ms, 2000);
        assert_eq!(config.tracing.endpoint, None);
        let config = parse(
            r#"
            [observability]
            readiness_timeout_ms = 500
            [observability.metrics]
            bind_address = "0.0.0.0"
            port = 9100
            [observability.log]
            format = "json"
            level = "warn,stowage::access=info"
            access_log = false
            [observability.tracing]
            endpoint = "http://127.0.0.1:4318/v1/traces"
            sampling_rate = 0.25
            "#,
        )
        .unwrap()
        .observability;
        assert_eq!(
            config.tracing.endpoint.as_deref(),
            Some("http://127.0.0.1:4318/v1/traces")
        );
        assert_eq!(config.tracing.sampling_rate(), 0.25);
        assert_eq!(config.metrics.port, Some(9100));
        assert_eq!(config.log.format, LogFormat::Json);
        assert!(!config.log.access_log);
        for bad in [
            "[observability.log]\nformat = \"xml\"\n",
            "[observability.log]\nlevel = \"stowage=loud\"\n",
            "[observability.metrics]\nbind_address = \"0.0.0.0\"\n",
            "[observability]\nreadiness_timeout_ms = 0\n",
            "[observability.metrics]\npath = \"/m\"\n",
            "[observability.tracing]\nsampling_rate = 0.5\n",
            "[observability.tracing]\nca_bundle = \"/etc/ssl/collector.pem\"\n",
            "[observability.tracing]\nendpoint = \"127.0.0.1:4318\"\n",
            "[observability.tracing]\nendpoint = \"grpc://c:4317\"\n",
            "[observability.tracing]\nendpoint = \"http://c:4318\"\nsampling_rate = 1.5\n",
            "[observability.tracing]\nendpoint = \"http://c:4318\"\nsampling_rate = nan\n",
            "[observability.tracing]\nendpoint = \"http://c:4318\"\nsampling_rate = -0.1\n",
        ] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(
                err.contains("observability") || err.contains("format") || err.contains("path"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn empty_file_is_the_default() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn reads_tls_and_defaults_client_auth_to_optional() {
        assert_eq!(parse("").unwrap().server.tls, None);
        let config = parse(
            r#"
            [server.tls]
            server_certificate_bundle = "/etc/stowage/server.pem"
            server_private_key = "/etc/stowage/server.key"
            client_ca_bundle = "/etc/stowage/clients.pem"
            "#,
        )
        .unwrap();
        let tls = config.server.tls.unwrap();
        assert_eq!(
            tls.server_certificate_bundle,
            Path::new("/etc/stowage/server.pem")
        );
        assert_eq!(
            tls.client_verification(),
            Some((Path::new("/etc/stowage/clients.pem"), ClientAuth::Optional))
        );
        let required = parse(
            "[server.tls]\nserver_certificate_bundle = \"c\"\nserver_private_key = \"k\"\n\
             client_ca_bundle = \"ca\"\nclient_auth = \"required\"\n",
        )
        .unwrap();
        assert_eq!(
            required.server.tls.unwrap().client_verification(),
            Some((Path::new("ca"), ClientAuth::Required))
        );
    }

    #[test]
    fn refuses_client_auth_without_a_client_ca_bundle_and_unknown_tls_keys() {
        let keys = "[server.tls]\nserver_certificate_bundle = \"c\"\nserver_private_key = \"k\"\n";
        let err = parse(&format!("{keys}client_auth = \"required\"\n")).unwrap_err();
        assert!(err.to_string().contains("server.tls.client_auth"), "{err}");
        let err = parse(&format!("{keys}client_auth = \"sometimes\"\n")).unwrap_err();
        assert!(err.to_string().contains("client_auth"), "{err}");
        let err = parse(&format!("{keys}ca = \"x\"\n")).unwrap_err();
        assert!(err.to_string().contains("ca"), "{err}");
        let err = parse("[server.tls]\nserver_private_key = \"k\"\n").unwrap_err();
        assert!(
            err.to_string().contains("server_certificate_bundle"),
            "{err}"
        );
    }

    #[test]
    fn reads_s3_with_defaults() {
        let config = parse(
            r#"
            [blob_store.s3]
            access_key_id = "a"
            secret_key = "b"
            endpoint = "http://127.0.0.1:9000"
            bucket = "registry"
            region = "us-east-1"
            multipart_part_size = "8MiB"
            [metadata_store.fs]
            root_dir = "/srv/meta"
            "#,
        )
        .unwrap();
        let Some(StoreSettings::S3(s3)) = config.blob_store_settings() else {
            panic!("expected an S3 blob store");
        };
        assert_eq!(s3.multipart_part_size, ByteSize::mib(8));
        assert_eq!(s3.multipart_copy_threshold, ByteSize::gb(5));
        assert_eq!(s3.max_attempts, 3);
        let both = "[blob_store.fs]\nroot_dir = \"x\"\n[blob_store.s3]\nbucket = \"b\"\n";
        assert!(parse(both).is_err());
    }

    #[test]
    fn a_backend_table_refuses_unknown_keys_of_its_own_and_of_its_locks() {
        let store = parse("[blob_store.fs]\nroot_dir = \"x\"\nroot = \"y\"\n");
        assert!(
            store
                .unwrap_err()
                .to_string()
                .contains("unknown field `root`")
        );
        let locks = "[blob_store.fs]\nroot_dir = \"x\"\n[blob_store.fs.redis]\nurl = \"redis://x\"\nttll = 3\n";
        assert!(
            parse(locks)
                .unwrap_err()
                .to_string()
                .contains("unknown field `ttll`")
        );
    }

    #[test]
    fn reads_redis_locks_and_cache() {
        let config = parse(
            r#"
            [blob_store.fs]
            root_dir = "/srv/blobs"
            [metadata_store.fs]
            root_dir = "/srv/meta"
            [metadata_store.fs.redis]
            url = "redis://127.0.0.1:6379"
            key_prefix = "reg1:"
            [cache.redis]
            url = "rediss://cache.example:6380"
            "#,
        )
        .unwrap();
        let locks = config.lock_settings().unwrap();
        assert_eq!(
            (locks.ttl, locks.max_retries, locks.retry_delay_ms),
            (10, 100, 10)
        );
        assert_eq!(locks.key_prefix, "reg1:");
        assert_eq!(
            config.cache.redis.unwrap().url,
            "rediss://cache.example:6380"
        );
        assert!(parse("[cache.redis]\nurl = \"redis://x\"\nttl = 3\n").is_err());
    }

    #[test]
    fn reads_oidc_providers_and_refuses_unsafe_ones() {
        let provider = r#"
            [auth.oidc.github-actions]
            issuer = "https://token.actions.githubusercontent.com"
            required_audience = "https://registry.example"
            required_claims = { repository_owner = "org" }
        "#;
        let config = parse(provider).unwrap();
        let settings = config.auth.settings();
        let oidc = &settings.oidc[0];
        assert_eq!(oidc.name, "github-actions");
        assert_eq!(oidc.allowed_algorithms, ["RS256", "ES256"]);
        assert_eq!(oidc.jwks_refresh_interval.as_secs(), 300);
        assert_eq!(oidc.clock_skew.as_secs(), 30);
        assert_eq!(oidc.required_claims["repository_owner"], "org");
        assert!(config.auth.any());
        for (bad, key) in [
            ("allowed_algorithms = [\"HS256\"]", "allowed_algorithms"),
            ("allowed_algorithms = [\"none\"]", "allowed_algorithms"),
            ("jwks_uri = \"ftp://x/keys\"", "jwks_uri"),
        ] {
            let Err(ConfigError::Invalid { key: got, .. }) = parse(&format!("{provider}{bad}\n"))
            else {
                panic!("{bad} was accepted");
            };
            assert!(got.ends_with(key), "{got}");
        }
        assert!(parse(&format!("{provider}surprise = 1\n")).is_err());
    }

    #[test]
    fn an_external_token_server_excludes_the_token_service() {
        let external = r#"
            [auth.token]
            realm = "https://auth.example/token"
            service = "registry.example"
            issuer = "auth.example"
            jwks_uri = "https://auth.example/jwks"
        "#;
        parse(external).unwrap();
        let both = format!("{external}\n[auth.token_service]\nsigning_key = \"k.pem\"\n");
        assert!(matches!(parse(&both), Err(ConfigError::Invalid { .. })));
        let no_keys = external.replace("jwks_uri", "# jwks_uri");
        assert!(matches!(parse(&no_keys), Err(ConfigError::Invalid { .. })));
    }
}
