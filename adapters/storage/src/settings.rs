//! Store settings as they appear in the configuration file (`[blob_store.fs]`,
//! `[blob_store.s3]`, ...), with the Simple-Registry keys and defaults.

use bytesize::ByteSize;
use serde::Deserialize;

/// `[blob_store.fs]` / `[metadata_store.fs]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FsSettings {
    pub root_dir: String,
    /// Also fsync the folder after every commit, so a rename survives a power loss.
    #[serde(default)]
    pub sync_to_disk: bool,
    /// Where the store's filesystem calls run (`fs_calls.rs`).
    #[serde(default)]
    pub inline_calls: InlineCalls,
}

/// `inline_calls`: whether a filesystem store's calls may run on the runtime's thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InlineCalls {
    /// As `always` on a local filesystem, as `never` on a network or FUSE one (`statfs`).
    #[default]
    Auto,
    /// On the thread that asks while calls are fast, whatever the filesystem.
    Always,
    /// Always on blocking threads.
    Never,
}

/// `[blob_store.s3]` / `[metadata_store.s3]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Settings {
    /// With `secret_key`; both absent: the process environment's (see [`S3Settings::access_key`]).
    #[serde(default)]
    pub access_key_id: Option<String>,
    #[serde(default)]
    pub secret_key: Option<String>,
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    /// Every key lives below this prefix, so registries can share a bucket.
    #[serde(default)]
    pub key_prefix: String,
    /// Part size of multipart uploads (memory per upload is this times parts in flight).
    #[serde(default = "defaults::part_size")]
    pub multipart_part_size: ByteSize,
    /// Objects larger than this are copied part by part.
    #[serde(default = "defaults::copy_threshold")]
    pub multipart_copy_threshold: ByteSize,
    #[serde(default = "defaults::copy_chunk")]
    pub multipart_copy_chunk_size: ByteSize,
    /// Parts copied, and uploaded, at the same time.
    #[serde(default = "defaults::copy_jobs")]
    pub multipart_copy_jobs: usize,
    /// Attempts of one request on retryable errors (5xx, timeouts, throttling).
    #[serde(default = "defaults::max_attempts")]
    pub max_attempts: usize,
    #[serde(default = "defaults::operation_timeout")]
    pub operation_timeout_secs: u64,
    #[serde(default = "defaults::attempt_timeout")]
    pub operation_attempt_timeout_secs: u64,
    /// Which write conditions (If-None-Match, If-Match) are sent (`s3_conditions.rs`).
    #[serde(default)]
    pub conditional_writes: ConditionalWrites,
}

/// `conditional_writes`: whether commits on S3 carry conditions the store checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConditionalWrites {
    /// Probe the store at startup and send the conditions it enforces.
    #[default]
    Auto,
    /// Send the conditions AWS documents without probing.
    On,
    /// Send none: locks alone guard commits.
    Off,
}

mod defaults {
    use bytesize::ByteSize;

    pub(super) fn part_size() -> ByteSize {
        ByteSize::mib(50)
    }
    pub(super) fn copy_threshold() -> ByteSize {
        ByteSize::gb(5)
    }
    pub(super) fn copy_chunk() -> ByteSize {
        ByteSize::mb(100)
    }
    pub(super) fn copy_jobs() -> usize {
        4
    }
    pub(super) fn max_attempts() -> usize {
        3
    }
    pub(super) fn operation_timeout() -> u64 {
        900
    }
    pub(super) fn attempt_timeout() -> u64 {
        300
    }
}

/// One store's backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSettings {
    Fs(FsSettings),
    S3(S3Settings),
}

/// The access key an S3 store signs its requests with.
pub(crate) struct AccessKey {
    pub(crate) id: String,
    pub(crate) secret: String,
}

/// Names of the environment variables an access key is taken from when the settings hold none:
/// the AWS tools' own, so a Kubernetes Secret or a CI job's variables can carry it and the
/// configuration file holds no secret.
const ENV_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
const ENV_SECRET: &str = "AWS_SECRET_ACCESS_KEY";

impl S3Settings {
    /// `access_key_id` and `secret_key` when both are set; when neither is,
    /// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` from `env`. None when neither source
    /// holds a whole key (half a key in the file is not completed from the environment).
    pub(crate) fn access_key(&self, env: impl Fn(&str) -> Option<String>) -> Option<AccessKey> {
        let (id, secret) = match (&self.access_key_id, &self.secret_key) {
            (Some(id), Some(secret)) => (id.clone(), secret.clone()),
            (None, None) => (env(ENV_KEY_ID)?, env(ENV_SECRET)?),
            _ => return None,
        };
        Some(AccessKey { id, secret })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(id: Option<&str>, secret: Option<&str>) -> S3Settings {
        let mut table = serde_json::json!({
            "endpoint": "http://127.0.0.1:9000",
            "bucket": "b",
            "region": "us-east-1",
        });
        if let Some(id) = id {
            table["access_key_id"] = id.into();
        }
        if let Some(secret) = secret {
            table["secret_key"] = secret.into();
        }
        serde_json::from_value(table).expect("S3 settings")
    }

    fn env(name: &str) -> Option<String> {
        Some(format!("env-{name}"))
    }

    fn key(
        settings: &S3Settings,
        env: impl Fn(&str) -> Option<String>,
    ) -> Option<(String, String)> {
        settings.access_key(env).map(|k| (k.id, k.secret))
    }

    #[test]
    fn the_access_key_comes_whole_from_the_file_or_whole_from_the_environment() {
        let file = settings(Some("id"), Some("secret"));
        assert_eq!(key(&file, env), Some(("id".into(), "secret".into())));
        let neither = settings(None, None);
        assert_eq!(
            key(&neither, env),
            Some((
                "env-AWS_ACCESS_KEY_ID".into(),
                "env-AWS_SECRET_ACCESS_KEY".into()
            ))
        );
        assert_eq!(key(&neither, |_| None), None);
        let half_env = |name: &str| (name == ENV_KEY_ID).then(|| "id".to_owned());
        assert_eq!(key(&neither, half_env), None);
        assert_eq!(key(&settings(Some("id"), None), env), None);
        assert_eq!(key(&settings(None, Some("secret")), env), None);
    }
}
