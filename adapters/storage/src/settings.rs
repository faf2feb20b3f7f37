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
    pub access_key_id: String,
    pub secret_key: String,
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
